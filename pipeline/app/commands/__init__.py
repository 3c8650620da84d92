"""`spikeloop` sub-commands, one module each (see pipeline.app.cli.COMMANDS)."""
