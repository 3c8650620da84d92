"""The ``spikeloop`` command.

Each sub-command lives in its own module under ``pipeline.app.commands`` and provides
``register(subparsers)``, which adds its parser and sets ``func`` (called with the parsed args; its
return value is the exit status). Modules are imported lazily so ``spikeloop --help`` stays fast and a
sub-command's heavy imports (numba, dv-processing) are paid only when it runs.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys

#: Sub-command modules under pipeline.app.commands, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = (
    "demo",
    "camera",
    "audio",
    "conformance",
    "motor",
    "info",
    "replay",
    "convert",
    "launch",
    "bci",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikeloop",
        description="Real-time neuromorphic robotics pipeline: event sensors -> spiking network -> motors.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"pipeline.app.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Until a command installs its own handlers (launch, motor), SIGTERM stops the process the way Ctrl-C
    # does, so cleanup runs, instead of killing it: also while the command modules import (~0.4 s).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    launching = (sys.argv[1:] if argv is None else argv)[:1] == ["launch"]
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 0 if launching else 130  # launch documents exit 0 for SIGTERM/SIGINT (nothing opened yet)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
