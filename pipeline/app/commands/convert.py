"""``spikeloop convert IN OUT [--compression none|lz4|zstd] [--strict] [--force]``: any supported recording to
AEDAT 4 (.aedat4), HDF5 (.h5/.hdf5), NumPy (.npy) or Event Stream (.es); the output's suffix picks the format.

* .aedat4 opens in dv-processing (``dv.io.MonoCameraRecording``) with identical events (timestamps, x, y,
  polarity), the input's camera name, and the frames, IMU samples and triggers of an AEDAT 4 input.
  ``--compression lz4|zstd`` (and the _high levels) writes packets compressed as DV does, through
  dv-processing's writer (also used, uncompressed, when frames/IMU/triggers are carried); otherwise
  spikeloop's own writer.
* .h5/.hdf5: the DSEC layout (``/events/{t,x,y,p}``, ``/t_offset``, ``/ms_to_idx``; recordings.hdf5_writer)
  plus ``/frames``, ``/imu``, ``/triggers`` groups and the sensor size and camera name as attributes.
* .npy: one structured array with tonic's field names t (µs), x, y, p (recordings.npy_writer).
* .es: Event Stream 2.0 DVS (recordings.eventstream_writer); time starts at the first event.

What the output format cannot hold (frames, IMU, triggers, sensor size, camera name, time origin) is named
in one line on stderr. Events are streamed chunk by chunk (memory does not grow with the file); the output
appears only when complete (written beside it, then renamed).
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path
from typing import Iterator

from pipeline.app.errors import EXIT_FAILED, check_output_path, fail, guarded
from recordings.aedat4_writer import Aedat4Writer
from recordings.detect import open_recording
from recordings.invariants import BACKWARD_TOLERANCE_US

#: Output suffix -> format name.
OUTPUTS = {".aedat4": "AEDAT 4", ".h5": "HDF5", ".hdf5": "HDF5", ".npy": "NumPy .npy", ".es": "Event Stream"}
#: AEDAT 4 stream type -> name of the non-event stream convert carries (and the reader's iterator method).
OTHER_STREAMS = {"FRME": "frames", "IMUS": "imu", "TRIG": "triggers"}
#: Output suffixes whose writers can carry non-event streams (see each writer's ``holds``).
CARRIERS = (".aedat4", ".h5", ".hdf5")


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


def other_streams(reader) -> dict[str, object]:
    """Non-event streams of the input: name ("frames", "imu", "triggers") -> its StreamDescription
    (AEDAT 4 inputs; other formats carry none that convert reads)."""
    found = {}
    for stream in getattr(reader, "streams", ()):
        name = OTHER_STREAMS.get(stream.type_identifier)
        if name and name not in found:
            found[name] = stream
    return found


def open_writer(target: Path, tmp: Path, width: int, height: int, camera: str, compression: str, streams: dict,
                earliest_us: int | None = None):
    """The writer for ``target``'s suffix, writing to ``tmp``; carries the ``streams`` it can hold. HDF5 writes
    times relative to ``earliest_us`` (the earliest time of anything written; None: the first item's)."""
    suffix = target.suffix.lower()
    if suffix == ".aedat4":
        if compression == "none" and not streams:
            return Aedat4Writer(tmp, width, height, source=camera)
        from recordings.dv_bridge import CompressedAedat4Writer

        frames = streams.get("frames")
        return CompressedAedat4Writer(tmp, width, height, camera=camera, compression=compression,
                                      frames=(frames.width, frames.height) if frames else None,
                                      imu="imu" in streams, triggers="triggers" in streams)
    if suffix in (".h5", ".hdf5"):
        from recordings.hdf5_writer import Hdf5Writer

        return Hdf5Writer(tmp, width, height, camera=camera, t_offset=earliest_us)
    if suffix == ".npy":
        from recordings.npy_writer import NpyEventWriter

        return NpyEventWriter(tmp)
    from recordings.eventstream_writer import EventStreamWriter

    return EventStreamWriter(tmp, width, height)


def _timestamp(item) -> int:
    """Time (µs) of a Frame, or of the first element of an IMU/trigger packet."""
    return int(item.timestamp) if hasattr(item, "timestamp") else int(item["timestamp"][0])


def _earliest(item) -> int:
    """Earliest time (µs) of a Frame or of an IMU/trigger packet."""
    return int(item.timestamp) if hasattr(item, "timestamp") else int(item["timestamp"].min())


def earliest_time(first_chunk, heads) -> int | None:
    """A lower bound (µs) on every time a conversion writes: the first event chunk's earliest event, or its
    latest minus the reader contract's tolerance (recordings.invariants: a later event is never more than
    BACKWARD_TOLERANCE_US behind the latest before it), and the earliest of the first item of each other
    stream (``heads``; each stream in time order). None when there is nothing to write."""
    times = [_earliest(item) for item in heads]
    if first_chunk is not None and len(first_chunk):
        t = first_chunk["timestamp"]
        times.append(min(int(t.min()), int(t.max()) - BACKWARD_TOLERANCE_US))
    return min(times) if times else None


class _Merge:
    """The carried non-event streams, written in time order between event chunks (one item held per
    stream, so memory stays bounded). ``heads`` are the items held now; ``carry`` binds a writer."""

    def __init__(self, reader, names):
        self._iters: dict[str, Iterator] = {name: iter(getattr(reader, name)()) for name in names}
        self._next: dict[str, object] = {}
        self._writes: dict = {}
        for name in names:
            self._pull(name)

    @property
    def heads(self) -> list:
        return list(self._next.values())

    def carry(self, writer) -> list[str]:
        """Write the streams ``writer`` holds (the others are dropped); their names."""
        methods = {"frames": "write_frame", "imu": "write_imu", "triggers": "write_triggers"}
        self._writes = {name: getattr(writer, methods[name]) for name in self._iters if name in writer.holds}
        self.counts = dict.fromkeys(self._writes, 0)
        self._next = {name: item for name, item in self._next.items() if name in self._writes}
        return list(self._writes)

    def _pull(self, name: str) -> None:
        for item in self._iters[name]:
            if _timestamp_ok(item):
                self._next[name] = item
                return
        self._next.pop(name, None)

    def write_until(self, t_us: float) -> None:
        """Write every held item starting at or before ``t_us``."""
        while self._next:
            name, item = min(self._next.items(), key=lambda pair: _timestamp(pair[1]))
            if _timestamp(item) > t_us:
                return
            self._writes[name](item)
            self.counts[name] += 1 if name == "frames" else len(item)
            self._pull(name)


def _timestamp_ok(item) -> bool:
    """False for an empty IMU/trigger packet (nothing to write)."""
    return hasattr(item, "timestamp") or len(item) > 0


def convert(source: str | Path, target: str | Path, strict: bool = False, compression: str = "none",
            notes: list[str] | None = None) -> int:
    """Write the recording ``source`` to ``target`` in the format its suffix names (OUTPUTS), through a
    temporary file beside it renamed when complete; ``compression`` ("none" or a
    recordings.dv_bridge.COMPRESSIONS name) applies to .aedat4. Returns the event count; appends to
    ``notes`` one line naming what the output cannot hold (if anything) and what was carried."""
    target = Path(target)
    notes = notes if notes is not None else []
    # dv-processing insists on a lower-case .aedat4 name (an upper-case one aborts the process).
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp{target.suffix.lower()}")
    try:
        with open_recording(source, strict=strict) as reader:
            width, height = sensor_size(reader)
            source_camera = reader.header.extra.get("camera") or ""
            camera = source_camera or f"spikeloop convert {Path(source).name}"
            streams = other_streams(reader)
            merge = _Merge(reader, list(streams) if target.suffix.lower() in CARRIERS else [])
            chunks = reader.chunks()
            first = next(chunks, None)
            writer = open_writer(target, tmp, width, height, camera, compression, streams,
                                 earliest_time(first, merge.heads))
            carried = merge.carry(writer)
            with writer:
                for chunk in itertools.chain([] if first is None else [first], chunks):
                    if len(chunk):
                        merge.write_until(int(chunk["timestamp"][-1]))
                    writer.write(chunk)
                merge.write_until(float("inf"))
        os.replace(tmp, target)
        dropped = [name.replace("imu", "IMU") for name in streams if name not in writer.holds]
        suffix = target.suffix.lower()
        if suffix == ".npy":
            dropped.append(f"the {width}x{height} sensor size")
            dropped += [f"camera name {source_camera!r}"] if source_camera else []
        if suffix == ".es":
            dropped += ([f"camera name {source_camera!r}"] if source_camera else [])
            if writer.t_origin_us:
                dropped.append(f"the time origin (times start at the first event, t = {writer.t_origin_us} µs)")
            if writer.events_retimed:
                notes.append(f"{writer.events_retimed:,} events earlier than their predecessor were written "
                             f"at its time")
        if dropped:
            notes.append(f"{OUTPUTS[suffix]} cannot hold these, not written: " + ", ".join(dropped))
        if carried:
            notes.append("carried " + ", ".join(f"{merge.counts[name]:,} {name.replace('imu', 'IMU samples')}"
                                              for name in carried))
        return writer.events_written
    finally:
        if tmp.exists():
            tmp.unlink()


def run(args: argparse.Namespace) -> int:
    def body() -> int:
        target = Path(args.output)
        if target.suffix.lower() not in OUTPUTS:
            return fail("convert", f"{target}: unknown output format", "name it .aedat4, .h5, .hdf5, .npy or .es")
        if args.compression != "none" and target.suffix.lower() != ".aedat4":
            return fail("convert", f"--compression {args.compression}: applies to .aedat4 outputs only")
        if target.exists() and not args.force:
            return fail("convert", f"{target}: exists", "use --force to overwrite")
        if Path(args.input).resolve() == target.resolve():
            return fail("convert", f"{target}: output is the input file")
        problem = check_output_path(target, "output")
        if problem:
            return fail("convert", problem)
        notes: list[str] = []
        try:
            count = convert(args.input, target, strict=args.strict, compression=args.compression, notes=notes)
        except (ValueError, RuntimeError) as exc:  # a writer refusing the data, h5py missing
            return fail("convert", str(exc), status=EXIT_FAILED)
        for note in notes:
            print(f"spikeloop convert: {target}: {note}", file=sys.stderr)
        print(f"{args.input} -> {target}: {count:,} events", file=sys.stderr)
        return 0

    return guarded("convert", body)


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser("convert", help=summary,
                                   description="Convert any supported event recording to AEDAT 4 (.aedat4), HDF5 "
                                               "(.h5/.hdf5, DSEC layout), NumPy (.npy, tonic field names) or Event "
                                               "Stream (.es); the output's suffix picks the format. Frames, IMU and "
                                               "triggers of an AEDAT 4 input are carried into .aedat4 and HDF5; what "
                                               "a format cannot hold is named on stderr.")
    parser.add_argument("input", help="event recording (any supported format)")
    parser.add_argument("output", help="file to write: .aedat4, .h5/.hdf5, .npy or .es")
    parser.add_argument("--strict", action="store_true", help="fail on damage instead of warning")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    parser.add_argument("--compression", choices=("none", "lz4", "lz4_high", "zstd", "zstd_high"), default="none",
                        help="packet compression (lz4/zstd: written by dv-processing, as DV does; default none)")
    parser.set_defaults(func=run)
