"""`spikeloop` sub-commands, one module each (see pipeline.cli.COMMANDS)."""
