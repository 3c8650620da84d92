"""``spikeloop convert IN OUT.aedat4 [--strict] [--force]``: any supported recording to AEDAT 4.

The output opens in dv-processing (``dv.io.MonoCameraRecording``) with identical events (timestamps,
x, y, polarity). Only DVS events are converted; frames/IMU/triggers of an AEDAT 4 input are not copied.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.app.errors import check_output_path, fail, guarded
from recordings.aedat4_writer import Aedat4Writer
from recordings.detect import open_recording


def sensor_size(reader) -> tuple[int, int]:
    """Header resolution, or (max x + 1, max y + 1) from a pass over the events when it is unknown."""
    width, height = reader.header.width, reader.header.height
    if width > 0 and height > 0:
        return width, height
    max_x = max_y = 0
    for chunk in reader.chunks():
        max_x = max(max_x, int(chunk["x"].max()))
        max_y = max(max_y, int(chunk["y"].max()))
    return max(width, max_x + 1), max(height, max_y + 1)


def convert(source: str | Path, target: str | Path, strict: bool = False) -> int:
    """Write the events of ``source`` to the AEDAT 4 file ``target``; returns the event count."""
    with open_recording(source, strict=strict) as reader:
        width, height = sensor_size(reader)
        with Aedat4Writer(target, width, height, source=f"spikeloop convert {Path(source).name}") as writer:
            for chunk in reader.chunks():
                writer.write(chunk)
        return writer.events_written


def run(args: argparse.Namespace) -> int:
    def body() -> int:
        target = Path(args.output)
        if target.suffix != ".aedat4":
            return fail("convert", f"{target}: output must end in .aedat4", "dv-processing requires it")
        if target.exists() and not args.force:
            return fail("convert", f"{target}: exists", "use --force to overwrite")
        if Path(args.input).resolve() == target.resolve():
            return fail("convert", f"{target}: output is the input file")
        problem = check_output_path(target, "output")
        if problem:
            return fail("convert", problem)
        count = convert(args.input, target, strict=args.strict)
        print(f"{args.input} -> {target}: {count:,} events", file=sys.stderr)
        return 0

    return guarded("convert", body)


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser("convert", help=summary,
                                   description=__doc__.splitlines()[0])
    parser.add_argument("input", help="event recording (any supported format)")
    parser.add_argument("output", help="AEDAT 4 file to write (.aedat4)")
    parser.add_argument("--strict", action="store_true", help="fail on damage instead of warning")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    parser.set_defaults(func=run)
