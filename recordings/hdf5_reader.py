"""HDF5 event files in the DSEC layout (Gehrig et al. 2021, dsec.ifi.uzh.ch ``events.h5``), as DSEC ships
them and as ``spikeloop convert IN OUT.h5`` writes them (recordings.hdf5_writer):

* ``/events/t`` integer µs relative to ``/t_offset`` (DSEC: uint32; spikeloop: int64), ``/events/x``,
  ``/events/y`` integer pixels (origin top-left), ``/events/p`` integer or bool (1 = ON), all of shape (n,);
* ``/t_offset`` integer µs (absent: 0); absolute time = t + t_offset;
* optional root attributes ``width``, ``height`` (pixels) and ``camera`` (spikeloop adds them; DSEC has
  none: the sensor size is then the largest x and y + 1, one pass over the file at open, and ``info`` says
  so); ``/ms_to_idx`` is not needed for streaming and is not read;
* ``/frames``, ``/imu``, ``/triggers`` groups are counted for ``info`` (their contents are not replayed).

Before libhdf5 parses the metadata in this process, it walks the same metadata (the groups, dataset shapes
and dtypes, chunk indexes of the event columns, ``/t_offset`` and the attributes read here) in a forked child
(recordings.contained) bounded by ``metadata_timeout_s``: libhdf5 can loop forever or crash on damaged
metadata (seen while fuzzing: a loop reading the ``camera`` attribute from a damaged global heap), and a
child that hangs or crashes makes the file refused in one line instead.

Refused at open with one line: damaged metadata that hangs or crashes libhdf5, not HDF5, no ``/events``
group, a missing or non-integer column, columns of different lengths or not one-dimensional, more than 2^40
events, a sensor size outside 1..32767. Events are read in chunks of ``chunk_events`` from each dataset (memory does not grow with the file); an
unreadable chunk (a damaged file, a compression filter that is not installed) is damage naming the
dataset index. DSEC's own files are Blosc-compressed: reading them needs ``hdf5plugin``, imported when
installed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from recordings import invariants
from recordings._columns import FIELDS, MAX_EVENTS, column_problem, largest_coordinates, validated_chunks
from recordings.base import RecordingError, RecordingHeader, RecordingReader
from recordings.contained import run_contained

MAGIC = b"\x89HDF\r\n\x1a\n"
#: What ``info`` shows when the file has no width/height attributes.
SIZE_NOTE = "largest x, y + 1 (no width/height attributes in the file)"
#: What h5py raises on a damaged or unreadable file, group or dataset.
H5_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError)
#: The datasets and root attributes the reader looks at (walked first in a child process).
DATASETS_READ = tuple(f"events/{name}" for name in FIELDS) + ("t_offset", "frames/t", "imu/t", "triggers/t")
ATTRIBUTES_READ = ("camera", "width", "height")


def _import_h5py():
    """h5py, plus hdf5plugin's filters (Blosc, used by DSEC) when installed; RuntimeError with a hint if
    h5py is missing."""
    try:
        import h5py
    except ImportError as exc:
        raise RuntimeError("reading HDF5 needs h5py: python3 -m pip install h5py") from exc
    try:
        import hdf5plugin  # noqa: F401  (registers the Blosc/LZ4/Zstd filters with HDF5)
    except ImportError:
        pass
    return h5py


def walk_metadata(h5py, path: Path) -> None:
    """Touch every piece of metadata the reader uses: the objects of DATASETS_READ (type, shape, dtype, the
    chunk index of a chunked one, the value of /t_offset) and the root ATTRIBUTES_READ. Meant for a child
    process (it may hang or crash on a damaged file); exceptions are caught per item so the walk goes on."""
    with h5py.File(path, "r") as f:
        for name in DATASETS_READ:
            try:
                dataset = f.get(name)
                if isinstance(dataset, h5py.Dataset):
                    _ = dataset.shape, dataset.dtype
                    if dataset.chunks:
                        dataset.id.chunk_iter(lambda chunk: None)
                    if name == "t_offset" and dataset.size == 1:
                        dataset[()]
            except H5_ERRORS:
                pass
        for name in ATTRIBUTES_READ:
            try:
                f.attrs.get(name)
            except H5_ERRORS:
                pass


def _hint(error: BaseException) -> str:
    """The error text, with how to get a missing compression filter."""
    text = " ".join(str(error).split())
    if "filter" in text.lower():
        text += "; DSEC files are Blosc-compressed: python3 -m pip install hdf5plugin"
    return text


class Reader(RecordingReader):
    """DSEC-layout HDF5 events (``/events/{t,x,y,p}``, ``/t_offset``)."""

    format_name = "hdf5"
    extensions = (".h5", ".hdf5")
    #: Bound (s) on the child's walk of the metadata; a healthy file takes milliseconds.
    metadata_timeout_s: float = 30.0

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        return head.startswith(MAGIC)

    def _open(self):
        h5py = _import_h5py()
        try:
            return h5py.File(self.path, "r")
        except H5_ERRORS as error:
            raise RecordingError(self.path, f"not a readable HDF5 file ({_hint(error)})") from None

    def _read_header(self) -> RecordingHeader:
        try:
            self._h5py = _import_h5py()
        except RuntimeError as error:
            raise RecordingError(self.path, str(error)) from None
        failure = run_contained(lambda: walk_metadata(self._h5py, self.path), self.metadata_timeout_s)
        if failure:
            raise RecordingError(self.path, f"damaged HDF5 metadata: libhdf5 {failure} reading it in a child "
                                            f"process (not opened here)")
        with self._open() as f:
            try:
                return self._check(f)
            except H5_ERRORS as error:
                raise RecordingError(self.path, f"unreadable HDF5 structure ({_hint(error)})") from None

    def _check(self, f) -> RecordingHeader:
        h5py = self._h5py
        group = f.get("events")
        if not isinstance(group, h5py.Group):
            raise RecordingError(self.path, "no /events group (expected the DSEC layout /events/{t,x,y,p})")
        columns = {}
        for name in FIELDS:
            dataset = group.get(name)
            if not isinstance(dataset, h5py.Dataset):
                raise RecordingError(self.path, f"no dataset /events/{name} (expected /events/{{t,x,y,p}})")
            problem = column_problem(name, dataset.dtype)
            if problem:
                raise RecordingError(self.path, f"/events/{name}: {problem}")
            if dataset.ndim != 1:
                raise RecordingError(self.path, f"/events/{name}: shape {dataset.shape}, expected (n,)")
            columns[name] = dataset
        lengths = {name: dataset.shape[0] for name, dataset in columns.items()}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"/events/{name} {length:,}" for name, length in lengths.items())
            raise RecordingError(self.path, f"event datasets differ in length ({listed})")
        self._count = int(lengths["t"])
        if self._count > MAX_EVENTS:
            raise RecordingError(self.path, f"/events/t holds {self._count:,} events (more than 2^40)")
        self._t_offset = 0
        if "t_offset" in f:
            offset = f["t_offset"]
            if not isinstance(offset, h5py.Dataset) or offset.size != 1 or offset.dtype.kind not in "iu":
                raise RecordingError(self.path, "/t_offset: expected one integer (µs)")
            self._t_offset = int(offset[()].reshape(-1)[0]) if offset.shape else int(offset[()])
        extra = {"t_offset_us": self._t_offset}
        camera = f.attrs.get("camera")
        if camera is not None and len(camera):
            extra["camera"] = camera.decode("utf-8", "replace") if isinstance(camera, bytes) else str(camera)
        if "width" in f.attrs and "height" in f.attrs:
            width, height = self._size_attrs(f.attrs["width"], f.attrs["height"])
        else:
            width, height = largest_coordinates(lambda a, b: (columns["x"][a:b], columns["y"][a:b]), self._count,
                                                self.chunk_events)
            extra["sensor_size"] = SIZE_NOTE
        for name, key in (("frames", "frames"), ("imu", "imu_samples"), ("triggers", "triggers")):
            times = f.get(f"{name}/t")
            if isinstance(times, h5py.Dataset) and times.ndim == 1:
                extra[key] = int(times.shape[0])
        return RecordingHeader(self.format_name, width, height, extra)

    def _size_attrs(self, width, height) -> tuple[int, int]:
        """The width/height attributes as pixels, refused outside 1..MAX_SENSOR_SIDE or when not integers."""
        values = []
        for name, value in (("width", width), ("height", height)):
            array = np.asarray(value)
            if array.size != 1 or array.dtype.kind not in "iu":
                raise RecordingError(self.path, f"attribute {name} = {value!r}: expected an integer (pixels)")
            values.append(int(array.reshape(-1)[0]))
        if not all(0 < side <= invariants.MAX_SENSOR_SIDE for side in values):
            raise RecordingError(self.path, f"attributes width x height = {values[0]}x{values[1]} are outside "
                                            f"1..{invariants.MAX_SENSOR_SIDE}")
        return values[0], values[1]

    def _chunks(self) -> Iterator[np.ndarray]:
        with self._open() as f:
            columns = [f["events"][name] for name in FIELDS]

            def read(start: int, stop: int):
                try:
                    t, x, y, p = (np.asarray(dataset[start:stop], dtype=np.int64) for dataset in columns)
                except H5_ERRORS as error:
                    raise OSError(_hint(error)) from None
                return t + self._t_offset, x, y, p

            yield from validated_chunks(self, self._count, read, lambda index: (None, f"/events index {index}"),
                                        read_errors=(OSError,))
