"""Shared machinery of the column-stored event formats (.npy structured arrays, HDF5 ``/events/{t,x,y,p}``):
field dtype checks, the sensor size from the largest coordinates, and chunked validated streaming.

A column reader reads events ``[start, stop)`` as four integer arrays (t in µs, absolute; x, y pixels; p)
and :func:`validated_chunks` packs them into DVS_EVENT_DTYPE chunks that keep the reader contract of
recordings.invariants; the first event that breaks it ends the stream with damage naming its index and
where it is stored.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from pipeline.core.events import DVS_EVENT_DTYPE
from recordings import invariants
from recordings.base import RecordingReader

#: Most events a column file may declare (2^40, ~16 TiB of packed events): beyond is a corrupt header.
MAX_EVENTS = 1 << 40
#: The four columns, tonic's and DSEC's names: t µs, x and y pixels (origin top-left), p 1 = ON / 0 = OFF.
FIELDS = ("t", "x", "y", "p")


def column_problem(name: str, dtype: np.dtype) -> str | None:
    """Why a column of this dtype cannot hold events (None when integers, or booleans for p)."""
    if dtype.kind in "iu" or (name == "p" and dtype.kind == "b"):
        return None
    return f"field {name} has dtype {dtype}, expected integers" + (" (µs)" if name == "t" else "")


def largest_coordinates(read_xy: Callable[[int, int], tuple[np.ndarray, np.ndarray]], count: int,
                        step: int) -> tuple[int, int]:
    """(max x + 1, max y + 1) over ``count`` events read ``step`` at a time by ``read_xy(start, stop)``;
    (0, 0) when there are no events or when a side falls outside 1..MAX_SENSOR_SIDE (the size is then
    unknown and the out-of-range coordinate is reported as damage while streaming)."""
    max_x = max_y = -1
    for start in range(0, count, step):
        x, y = read_xy(start, min(count, start + step))
        max_x = max(max_x, int(x.max()))
        max_y = max(max_y, int(y.max()))
    width, height = max_x + 1, max_y + 1
    if not (0 < width <= invariants.MAX_SENSOR_SIDE and 0 < height <= invariants.MAX_SENSOR_SIDE):
        return 0, 0
    return width, height


def _first_unrepresentable(x: np.ndarray, y: np.ndarray, p: np.ndarray) -> int:
    """Index of the first event whose x or y is outside 0..32767 or whose p is not 0/1 (len when none):
    values the packed DVS event cannot hold, checked before packing so the message shows the stored value."""
    limit = invariants.MAX_SENSOR_SIDE
    bad = (x < 0) | (x > limit) | (y < 0) | (y > limit) | (p < 0) | (p > 1)
    index = int(np.argmax(bad)) if len(bad) else 0
    return index if len(bad) and bad[index] else len(bad)


def validated_chunks(reader: RecordingReader, count: int,
                     read: Callable[[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                     where: Callable[[int], tuple[int | None, str]],
                     read_errors: tuple[type[BaseException], ...] = ()) -> Iterator[np.ndarray]:
    """DVS_EVENT_DTYPE chunks of at most ``reader.chunk_events`` events out of ``count`` stored ones.

    read(start, stop): int64 arrays t (µs, absolute), x, y, p of events [start, stop).
    where(index): (byte offset or None, text naming where event ``index`` is stored) for damage reports.
    read_errors: exceptions of ``read`` that mean unreadable storage (reported as damage at that chunk).
    """
    width, height = reader.header.width, reader.header.height
    state = invariants.new_state()
    for start in range(0, count, reader.chunk_events):
        try:
            t, x, y, p = read(start, min(count, start + reader.chunk_events))
        except read_errors as error:
            offset, place = where(start)
            reader.report_damage(offset, f"{place}: cannot be read ({error})")
            return
        stop = _first_unrepresentable(x, y, p)
        events = np.empty(stop, dtype=DVS_EVENT_DTYPE)
        events["timestamp"] = t[:stop]
        events["x"] = x[:stop]
        events["y"] = y[:stop]
        events["polarity"] = p[:stop]
        good, reason = invariants.first_invalid(events, width, height, state)
        if good:
            yield events[:good]
        if good < stop:
            offset, place = where(start + good)
            reader.report_damage(offset, f"{place}: {invariants.describe(reason, state, width, height)}")
            return
        if stop < len(t):
            offset, place = where(start + stop)
            if not (0 <= p[stop] <= 1):
                what = f"event polarity {int(p[stop])} is not 0 or 1"
            else:
                size = f"the {width}x{height} sensor" if width and height else "0..32767"
                what = f"event at x={int(x[stop])}, y={int(y[stop])} is outside {size}"
            reader.report_damage(offset, f"{place}: {what}")
            return
