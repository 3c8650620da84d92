"""Prophesee DAT reader (CD events; N-CARS, Gen1/Gen4 automotive datasets).

File: ``%`` header lines (``% Data file containing Event2D events``, ``% Version 2``, optional
``% Width N`` / ``% Height N`` or ``% geometry WxH``), then two bytes: event type (0 or 12 = CD) and
event size (8), then 8-byte little-endian events ``uint32 t_us; uint32 w`` with x = w & 0x3FFF,
y = (w >> 14) & 0x3FFF, p = w >> 28 (0 or 1; anything else is damage).

Time: t wraps every 2^32 µs; a backward jump larger than 2^31 adds 2^32, any other backward jump of more
than BACKWARD_TOLERANCE_US, or a jump ahead of more than 2^31 µs, is damage. When the header does not
give the resolution it is taken from the data (max x + 1, max y + 1; one pass at open).
Origin upper-left, p = 1 ON: no flip is applied.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np
from numba import njit

from recordings._blocks import (
    FIRST_DAMAGE,
    NEED_BYTES,
    OUT_FULL,
    BlockReader,
    file_size,
    le_u32,
    pack_event,
    read_text_header,
)
from recordings.base import RecordingError, RecordingHeader
from recordings.invariants import BACKWARD_TOLERANCE_US

CD_TYPES = (0x00, 0x0C)
EVENT_SIZE = 8

DAMAGE_POLARITY = FIRST_DAMAGE
DAMAGE_BACKWARD = FIRST_DAMAGE + 1
DAMAGE_COORDINATE = FIRST_DAMAGE + 2
DAMAGE_FORWARD = FIRST_DAMAGE + 3

S_LAST_RAW, S_OFFSET, S_DETAIL_A, S_DETAIL_B = range(4)


@njit(cache=True)
def decode_dat(buf, pos, out, n, state, width, height):
    """Decode 8-byte DAT CD events from ``buf[pos:]`` (kernel contract: recordings._blocks).

    state: [largest raw t since the last wrap (-1 = none), µs added for wraps, detail, detail].
    """
    end = buf.shape[0]
    cap = out.shape[0]
    while pos + 8 <= end:
        if n >= cap:
            return pos, n, OUT_FULL
        raw = le_u32(buf, pos)
        w = le_u32(buf, pos + 4)
        p = w >> 28
        if p > 1:
            state[S_DETAIL_A] = p
            return pos, n, DAMAGE_POLARITY
        x = w & 0x3FFF
        y = (w >> 14) & 0x3FFF
        if x >= width or y >= height:
            state[S_DETAIL_A] = x
            state[S_DETAIL_B] = y
            return pos, n, DAMAGE_COORDINATE
        last = state[S_LAST_RAW]
        if last >= 0 and raw - last > (np.int64(1) << 31):
            state[S_DETAIL_A] = last
            state[S_DETAIL_B] = raw
            return pos, n, DAMAGE_FORWARD
        if raw < last:
            if last - raw > (np.int64(1) << 31):
                state[S_OFFSET] += np.int64(1) << 32
                state[S_LAST_RAW] = raw
            elif last - raw > BACKWARD_TOLERANCE_US:
                state[S_DETAIL_A] = last
                state[S_DETAIL_B] = raw
                return pos, n, DAMAGE_BACKWARD
        else:
            state[S_LAST_RAW] = raw
        pack_event(out, n, raw + state[S_OFFSET], x, y, p)
        n += 1
        pos += 8
    return pos, n, NEED_BYTES


def _geometry_from_data(path: Path, start: int) -> tuple[int, int]:
    """(max x + 1, max y + 1) over the whole-record part of the data, read in bounded blocks."""
    count = (file_size(path) - start) // EVENT_SIZE
    if count <= 0:
        return 0, 0
    words = np.memmap(path, dtype="<u4", mode="r", offset=start, shape=(count, 2))
    width = height = 0
    step = 1 << 20
    for first in range(0, count, step):
        w = np.asarray(words[first : first + step, 1])
        width = max(width, int((w & 0x3FFF).max()) + 1)
        height = max(height, int(((w >> 14) & 0x3FFF).max()) + 1)
    del words
    return width, height


class Reader(BlockReader):
    """Prophesee .dat file of 2D CD events."""

    format_name = "prophesee_dat"
    extensions = (".dat",)

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        if not head.startswith(b"%") or re.search(rb"^% (evt|format) ", head, re.MULTILINE):
            return False
        return b"Event2D" in head or b"EventCD" in head or re.search(rb"^% Version \d", head, re.MULTILINE) is not None

    def _read_header(self) -> RecordingHeader:
        lines, offset = read_text_header(self.path, b"%", end_line=b"% end")
        with open(self.path, "rb") as f:
            f.seek(offset)
            type_size = f.read(2)
        if len(type_size) < 2:
            raise RecordingError(self.path, "file ends before the event type/size bytes after the header", offset)
        event_type, event_size = type_size
        if event_type not in CD_TYPES:
            raise RecordingError(self.path, f"event type {event_type} is not a CD event type {CD_TYPES}", offset)
        if event_size != EVENT_SIZE:
            raise RecordingError(self.path, f"event size {event_size} bytes, expected {EVENT_SIZE}", offset + 1)
        self._data_offset = offset + 2
        fields = {}
        for line in lines:
            key, _, value = line.partition(" ")
            fields[key.lower()] = value.strip()
        width = int(fields["width"]) if fields.get("width", "").isdigit() else 0
        height = int(fields["height"]) if fields.get("height", "").isdigit() else 0
        match = re.fullmatch(r"(\d+)x(\d+)", fields.get("geometry", ""))
        if match and not (width and height):
            width, height = int(match.group(1)), int(match.group(2))
        source = "header"
        if not (width and height):
            width, height = _geometry_from_data(self.path, self._data_offset)
            source = "data (max x/y + 1)"
        extra = {"header": lines, "geometry_from": source, "data_offset": self._data_offset}
        return RecordingHeader(self.format_name, width, height, extra)

    def _describe(self, status: int, state: np.ndarray) -> str:
        if status == DAMAGE_POLARITY:
            return f"polarity field {state[S_DETAIL_A]} (bits 31-28) is not 0 or 1"
        if status == DAMAGE_FORWARD:
            return f"timestamp jumped from {state[S_DETAIL_A]} to {state[S_DETAIL_B]} µs (more than 2^31 µs ahead)"
        if status == DAMAGE_BACKWARD:
            return f"timestamp went back from {state[S_DETAIL_A]} to {state[S_DETAIL_B]} µs (not a 32-bit wrap)"
        return (f"event at x={state[S_DETAIL_A]}, y={state[S_DETAIL_B]} is outside the "
                f"{self.header.width}x{self.header.height} sensor")

    def _chunks(self) -> Iterator[np.ndarray]:
        state = np.array([-1, 0, 0, 0], dtype=np.int64)
        params = (self.header.width, self.header.height)
        yield from self._decode(self._data_offset, decode_dat, state, params, self._describe,
                                "file ends inside an 8-byte DAT event", max_events_per_byte=1 / EVENT_SIZE)
