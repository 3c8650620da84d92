"""Event Stream (.es, neuromorphic-paris) writer, version 2.0.0, DVS type: the layout
:mod:`recordings.eventstream` reads (shared/reference/formats.md §8).

* Header (20 bytes): ``Event Stream``, version bytes 2, 0, 0, type byte 1 (DVS), ``uint16 LE width,
  uint16 LE height``.
* Per event: ``Δt`` µs since the previous event (the first: since the file's time origin); while
  ``Δt >= 127`` an overflow byte 0xFF (t += 127 µs); then the byte ``Δt << 1 | polarity`` (Δt <= 126, so
  it never reads as 0xFF/0xFE), x (uint16 LE) and y (uint16 LE, origin bottom-left: ``height - 1 - y``).

The format starts time at 0 µs and cannot step back: the writer puts the time origin at the first event
(``t_origin_us``; the file cannot store it) and writes an event earlier than its predecessor (sensors may
emit a few µs out of order, see recordings.invariants) at its predecessor's time, counting it in
``events_retimed``. Memory is bounded: bytes are encoded into a fixed buffer, so even a 35-minute gap
(17 M overflow bytes) is written piecewise.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from numba import njit

from recordings.eventstream import DVS_HEADER_BYTES, MAGIC

#: Bytes encoded per write() to the file (the encoder's fixed buffer).
BUFFER_BYTES = 1 << 20
#: Largest Δt one event byte holds (127 << 1 would read as an overflow or reset byte).
MAX_EVENT_DT = 126
OVERFLOW = 0xFF
OVERFLOW_US = 127


def header_bytes(width: int, height: int) -> bytes:
    """The 20-byte ES 2.0.0 DVS header."""
    return MAGIC + bytes((2, 0, 0, 1)) + struct.pack("<HH", width, height)


@njit(cache=True)
def encode_es_dvs(t, x, y, p, start, state, height, out):
    """Encode events ``start:`` of (t µs relative to the origin, x, y upper-left origin, p 0/1), shape (n,)
    each, into ``out`` (uint8, at least 5 bytes) until it is full.

    state (int64): [time written so far µs, events retimed]. Returns (next event index, bytes used).
    """
    n = t.shape[0]
    cap = out.shape[0]
    used = 0
    i = start
    now = state[0]
    while i < n:
        dt = t[i] - now
        if dt < 0:
            state[1] += 1
            dt = 0
        while dt > MAX_EVENT_DT and used < cap:
            out[used] = OVERFLOW
            used += 1
            now += OVERFLOW_US
            dt -= OVERFLOW_US
        if dt > MAX_EVENT_DT or used + 5 > cap:
            break
        yy = height - 1 - np.int64(y[i])
        xx = np.int64(x[i])
        out[used] = (dt << 1) | (np.int64(p[i]) & 1)
        out[used + 1] = xx & 0xFF
        out[used + 2] = xx >> 8
        out[used + 3] = yy & 0xFF
        out[used + 4] = yy >> 8
        used += 5
        now += dt
        i += 1
    state[0] = now
    return i, used


class EventStreamWriter:
    """DVS events (DVS_EVENT_DTYPE fields timestamp µs, x, y, polarity; shape (n,)) to an .es file.

    ``write`` appends events (coordinates must lie inside width x height: ValueError otherwise);
    ``close`` flushes. ``events_written``, ``events_retimed`` and ``t_origin_us`` (None until the first
    event) describe what was written. Holds DVS events only (``holds`` is empty).
    """

    holds: frozenset = frozenset()

    def __init__(self, path: str | Path, width: int, height: int):
        if not (0 < width <= 0xFFFF and 0 < height <= 0xFFFF):
            raise ValueError(f"sensor {width}x{height} does not fit the Event Stream header (1..65535)")
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.events_written = 0
        self.t_origin_us: int | None = None
        self._state = np.zeros(2, dtype=np.int64)
        self._buffer = np.empty(BUFFER_BYTES, dtype=np.uint8)
        self._file = open(self.path, "wb")
        self._file.write(header_bytes(self.width, self.height))
        assert self._file.tell() == DVS_HEADER_BYTES

    @property
    def events_retimed(self) -> int:
        """Events written at their predecessor's time because they came earlier than it."""
        return int(self._state[1])

    def write(self, events: np.ndarray) -> None:
        """Append events (time order; small steps back are retimed, see the module docstring)."""
        if not len(events):
            return
        x, y = events["x"], events["y"]
        if x.min() < 0 or x.max() >= self.width or y.min() < 0 or y.max() >= self.height:
            raise ValueError(f"{self.path}: events outside the declared {self.width}x{self.height} sensor")
        if self.t_origin_us is None:
            self.t_origin_us = int(events["timestamp"][0])
        t = events["timestamp"].astype(np.int64) - self.t_origin_us
        p = events["polarity"]
        start = 0
        while start < len(t):
            start, used = encode_es_dvs(t, x, y, p, start, self._state, self.height, self._buffer)
            self._file.write(self._buffer[:used].tobytes())
        self.events_written += len(t)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> "EventStreamWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
