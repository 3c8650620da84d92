"""The ``spikeloop`` command.

Each sub-command lives in its own module under ``pipeline.app.commands`` and provides
``register(subparsers, summary)``, which adds its parser and sets ``func`` (called with the parsed args;
its return value is the exit status). Only the chosen sub-command's module is imported, so
``spikeloop --help`` stays fast and a sub-command's heavy imports (numba, dv-processing, zenoh) are paid
only when it runs.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import signal
import sys

from pipeline.app.errors import EXIT_INTERRUPTED

#: Sub-command modules under pipeline.app.commands, in the order ``--help`` lists them, and their one-line help.
COMMANDS: dict[str, str] = {
    "demo": "closed-loop obstacle avoidance in a simulated world (no hardware)",
    "camera": "DVS cameras and AEDAT 4 network streams",
    "audio": "audio cochlea: WAV or microphone -> spike events",
    "conformance": "bit-exactness of the loihi backend against Lava reference files",
    "motor": "send a velocity command to motors and print read-back",
    "info": "show what an event recording holds",
    "replay": "stream a recording in real time, xN or as fast as possible",
    "view": "play a recording as event frames (window, or MP4/PNG headless)",
    "convert": "convert a recording to AEDAT 4, HDF5, .npy or Event Stream (.es)",
    "launch": "run a launch file (source -> stages -> SNN or BCI decoder -> decoder -> motors)",
    "list": "what a launch file can name (sources, stages, networks, decoders, sinks) and their keys",
    "bci": "BCI decoders: fit, cross-validate, replay neural data",
    "echo": "show what flows on a Zenoh key (rate, gaps, latency)",
    "import": "import a NIR graph (.nir) or lava-dl netx model (.net) as a network",
    "simulate": "run a network file and record every population",
    "export": "write a float network as a NIR graph (.nir)",
    "train": "train a spiking network on labelled recordings (surrogate gradients, QAT for loihi, ...)",
    "evaluate": "classify a labelled folder of recordings with a model: accuracy, confusion, decision latency",
}
#: Sub-commands whose module has another name (``import`` is a Python keyword).
MODULES: dict[str, str] = {"import": "import_model"}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every sub-command listed; only ``command``'s module is imported and given its options
    (each module's ``register(subparsers, summary)`` adds its parser and sets ``func``)."""
    parser = argparse.ArgumentParser(
        prog="spikeloop",
        description="Real-time neuromorphic robotics pipeline: event sensors -> spiking network -> motors.",
        epilog="Exit status: 0 ok, 1 runtime failure, 2 bad input or usage, 3 device lost, 130 interrupted "
               "('spikeloop launch' exits 0 when stopped by SIGTERM/SIGINT). 'spikeloop COMMAND --help' for a "
               "command's options.",
    )
    parser.add_argument("--version", action="version", version=f"spikeloop {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in COMMANDS.items():
        if name == command:
            importlib.import_module(f"pipeline.app.commands.{MODULES.get(name, name)}").register(subparsers, summary)
            _plain_help(subparsers.choices[name])
        else:
            subparsers.add_parser(name, help=summary, add_help=False)
    return parser


_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data):`~?([^`]+)`")


def plain(text: str | None) -> str | None:
    """Help text as a terminal shows it: the reStructuredText of docstrings (``literal``, :role:`name`)
    without its markup."""
    if not text:
        return text
    return _ROLE.sub(r"\1", text).replace("``", "")


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """Strip docstring markup from a command's description, epilog and option help, and its sub-commands'."""
    parser.description, parser.epilog = plain(parser.description), plain(parser.epilog)
    for action in parser._actions:
        action.help = plain(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _plain_help(sub)


def version() -> str:
    """The installed distribution's version ("unknown" when run from a tree that is not installed)."""
    from importlib import metadata

    try:
        return metadata.version("spikeloop")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def chosen_command(argv: list[str]) -> str | None:
    """The sub-command named by ``argv`` (its first argument that is not an option), if any."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    # Until a command installs its own handlers (launch, motor), SIGTERM stops the process the way Ctrl-C
    # does, so cleanup runs, instead of killing it: also while the command module imports (~0.4 s).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    argv = sys.argv[1:] if argv is None else argv
    launching = argv[:1] == ["launch"]
    try:
        parser = build_parser(chosen_command(argv))
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader that left shows here, inside the handler below, not at interpreter exit
        return status
    except KeyboardInterrupt:
        return 0 if launching else EXIT_INTERRUPTED  # launch documents exit 0 for SIGTERM/SIGINT
    except BrokenPipeError:
        # The reader of our output left (``spikeloop info FILE | head``): not an error. Point stdout at
        # /dev/null so the interpreter's final flush does not print "Exception ignored ... Broken pipe".
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
