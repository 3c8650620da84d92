"""``spikeloop convert IN OUT.aedat4 [--compression none|lz4|zstd] [--strict] [--force]``: any supported
recording to AEDAT 4.

The output opens in dv-processing (``dv.io.MonoCameraRecording``) with identical events (timestamps,
x, y, polarity) and the input's camera name (AEDAT 4 inputs). ``--compression lz4|zstd`` (and the _high
levels) writes packets compressed as DV does, through dv-processing's writer; the default writes them
uncompressed with spikeloop's own writer. The output appears only when complete (written beside it, then
renamed). Only DVS events are converted; frames/IMU/triggers of an AEDAT 4 input are not copied.
"""
from __future__ import annotations

import argparse
import os
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


def convert(source: str | Path, target: str | Path, strict: bool = False, compression: str = "none") -> int:
    """Write the events of ``source`` to the AEDAT 4 file ``target`` (a temporary file beside it, renamed
    when complete; ``compression`` "none" or a recordings.dv_bridge.COMPRESSIONS name); returns the event
    count. The camera name of an AEDAT 4 source is kept."""
    target = Path(target)
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.aedat4")
    try:
        with open_recording(source, strict=strict) as reader:
            width, height = sensor_size(reader)
            camera = reader.header.extra.get("camera") or f"spikeloop convert {Path(source).name}"
            if compression == "none":
                writer = Aedat4Writer(tmp, width, height, source=camera)
            else:
                from recordings.dv_bridge import CompressedAedat4Writer

                writer = CompressedAedat4Writer(tmp, width, height, camera=camera, compression=compression)
            with writer:
                for chunk in reader.chunks():
                    writer.write(chunk)
        os.replace(tmp, target)
        return writer.events_written
    finally:
        if tmp.exists():
            tmp.unlink()


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
        count = convert(args.input, target, strict=args.strict, compression=args.compression)
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
    parser.add_argument("--compression", choices=("none", "lz4", "lz4_high", "zstd", "zstd_high"), default="none",
                        help="packet compression (lz4/zstd: written by dv-processing, as DV does; default none)")
    parser.set_defaults(func=run)
