"""NumPy ``.npy`` event files: one structured array of shape (n,) with tonic's fields ``t`` (µs), ``x``,
``y`` (pixels, origin top-left) and ``p`` (1 = ON, 0 = OFF), any integer dtypes (bool for p), as
``spikeloop convert IN OUT.npy`` (recordings.npy_writer) and tonic write them.

The header is parsed with NumPy's own header reader (format 1.0 and 2.0; a literal, never unpickled);
an object dtype, a plain (unstructured) array, a missing field, a non-integer field or a shape other than
(n,) is refused at open. Events stream through a read-only memory map of the data (``np.memmap``, what
``np.load(mmap_mode="r")`` builds), one chunk at a time, so memory does not grow with the file. A file
shorter than its header's count yields the whole events it holds and reports damage at the byte where the
data ends. A .npy holds no sensor size: it is the largest x and y + 1 (one pass over the file at open),
and ``info`` says so.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
from numpy.lib import format as npy_format

from recordings._columns import FIELDS, MAX_EVENTS, column_problem, largest_coordinates, validated_chunks
from recordings.base import RecordingError, RecordingHeader, RecordingReader

MAGIC = b"\x93NUMPY"
#: Longest header dict accepted (bytes); NumPy's own default limit.
MAX_HEADER_BYTES = 10000
#: What ``info`` shows for the sensor size of a .npy file.
SIZE_NOTE = "largest x, y + 1 (a .npy file records no sensor size)"


class Reader(RecordingReader):
    """A .npy structured array of events (fields t, x, y, p)."""

    format_name = "npy"
    extensions = (".npy",)

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        return head.startswith(MAGIC)

    def _parse(self) -> tuple[np.dtype, int, int]:
        """(dtype, declared event count, byte offset of the data), or RecordingError."""
        with open(self.path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the header literal's own SyntaxWarnings (a garbage header is refused)
            try:
                version = npy_format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = npy_format.read_array_header_1_0(f, max_header_size=MAX_HEADER_BYTES)
                elif version == (2, 0):
                    shape, fortran, dtype = npy_format.read_array_header_2_0(f, max_header_size=MAX_HEADER_BYTES)
                else:
                    raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported (1.0, 2.0)")
            except Exception as error:  # noqa: BLE001 (garbage: ValueError, SyntaxError, TokenError...)
                message = " ".join(str(error).split())
                raise RecordingError(self.path, f"not a readable .npy header ({message[:200]})", 0) from None
            data_offset = f.tell()
        if dtype.hasobject:
            raise RecordingError(self.path, f"array of dtype {dtype} holds Python objects: not read "
                                            f"(allow_pickle=False; expected a structured array t, x, y, p)", 0)
        if dtype.names is None:
            raise RecordingError(self.path, f"not a structured array (dtype {dtype}); expected fields "
                                            f"{', '.join(FIELDS)} (tonic's event layout)", 0)
        missing = [name for name in FIELDS if name not in dtype.names]
        if missing:
            raise RecordingError(self.path, f"structured array without field(s) {', '.join(missing)} "
                                            f"(has {', '.join(dtype.names)}; expected {', '.join(FIELDS)})", 0)
        for name in FIELDS:
            problem = column_problem(name, dtype.fields[name][0])
            if problem:
                raise RecordingError(self.path, problem, 0)
        if len(shape) != 1:
            raise RecordingError(self.path, f"array of shape {shape}, expected one dimension (n,)", 0)
        count = int(shape[0])
        if count > MAX_EVENTS:
            raise RecordingError(self.path, f"header declares {count:,} events (more than 2^40): corrupt header", 0)
        del fortran  # one dimension: C and Fortran order are the same
        return dtype, count, data_offset

    def _map(self) -> np.ndarray:
        """Read-only memory map of the whole events present in the file (shape (available,))."""
        if self._available == 0:
            return np.zeros(0, dtype=self._dtype)
        return np.memmap(self.path, dtype=self._dtype, mode="r", offset=self._data_offset, shape=(self._available,))

    def _read_header(self) -> RecordingHeader:
        self._dtype, self._count, self._data_offset = self._parse()
        data_bytes = self.path.stat().st_size - self._data_offset
        self._available = min(self._count, max(data_bytes, 0) // self._dtype.itemsize)
        events = self._map()
        width, height = largest_coordinates(lambda a, b: (events["x"][a:b], events["y"][a:b]), self._available,
                                            self.chunk_events)
        fields = ", ".join(f"{name} {self._dtype.fields[name][0]}" for name in FIELDS)
        extra = {"sensor_size": SIZE_NOTE, "fields": fields}
        if self._available < self._count:
            extra["declared_events"] = self._count
        return RecordingHeader(self.format_name, width, height, extra)

    def _where(self, index: int) -> tuple[int, str]:
        return self._data_offset + index * self._dtype.itemsize, f"event {index}"

    def _chunks(self) -> Iterator[np.ndarray]:
        events = self._map()

        def read(start: int, stop: int):
            rows = events[start:stop]
            return tuple(np.asarray(rows[name], dtype=np.int64) for name in FIELDS)

        yield from validated_chunks(self, self._available, read, self._where)
        if self._available < self._count and self.damage is None:
            end = self._data_offset + self._available * self._dtype.itemsize
            self.report_damage(end, f"file ends after {self._available:,} of the {self._count:,} events its "
                                    f"header declares ({self._dtype.itemsize} bytes each)")
