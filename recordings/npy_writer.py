"""DVS events to a NumPy ``.npy`` file, streamed: one structured array of shape (n,) whose fields are named
as tonic names them (``t`` µs int64, ``x`` int16, ``y`` int16, ``p`` int8 0/1), so
``numpy.load(path)`` gives what ``tonic`` transforms take.

The .npy header states the shape before the data, but the count is known only at the end: the header is
written with a fixed length (``HEADER_BYTES``, padded with spaces as NumPy pads its own headers) and
rewritten with the final count on :meth:`NpyEventWriter.close`. Memory stays bounded by the chunk written.
A .npy file holds no sensor size, camera name, frames, IMU or triggers (``holds`` is empty).
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from numpy.lib.format import dtype_to_descr

#: tonic's field names, packed (15 bytes per event).
NPY_EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "i1")])
#: Total bytes of magic, version, length field and header dict (a multiple of 64, as NumPy aligns it).
HEADER_BYTES = 192
_MAGIC_V1 = b"\x93NUMPY\x01\x00"


def npy_header(count: int) -> bytes:
    """The format 1.0 header of a (count,) NPY_EVENT_DTYPE array, padded to ``HEADER_BYTES``."""
    text = f"{{'descr': {dtype_to_descr(NPY_EVENT_DTYPE)!r}, 'fortran_order': False, 'shape': ({count},), }}"
    room = HEADER_BYTES - len(_MAGIC_V1) - 2 - len(text) - 1
    if room < 0:
        raise ValueError(f"event count {count} does not fit the fixed .npy header")
    body = (text + " " * room + "\n").encode("latin1")
    return _MAGIC_V1 + struct.pack("<H", len(body)) + body


class NpyEventWriter:
    """``write`` appends DVS_EVENT_DTYPE events (shape (n,)); ``close`` writes the final count into the header.
    The file is only valid after ``close`` (convert writes it beside the target and renames it then)."""

    holds: frozenset = frozenset()

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.events_written = 0
        self._file = open(self.path, "wb")
        self._file.write(npy_header(0))

    def write(self, events: np.ndarray) -> None:
        if not len(events):
            return
        out = np.empty(len(events), dtype=NPY_EVENT_DTYPE)
        out["t"] = events["timestamp"]
        out["x"] = events["x"]
        out["y"] = events["y"]
        out["p"] = events["polarity"]
        self._file.write(out.tobytes())
        self.events_written += len(out)

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.seek(0)
        self._file.write(npy_header(self.events_written))
        self._file.close()

    def __enter__(self) -> "NpyEventWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
