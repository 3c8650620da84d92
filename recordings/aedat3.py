"""AEDAT 3.1 (cAER / DV 1.x; e.g. DVS128 Gesture) reader: POLARITY packets, other packet types skipped.

File: ``#`` header lines from ``#!AER-DAT3.1`` to ``#!END-HEADER`` (``#Format: RAW`` required;
``#Source N: <camera>`` names the sensor, which gives the resolution), then little-endian packets:
a 28-byte header (int16 eventType, int16 eventSource, int32 eventSize, eventTSOffset, eventTSOverflow,
eventCapacity, eventNumber, eventValid) and eventCapacity x eventSize bytes of events.

POLARITY events (type 1, 8 B): uint32 data (bit 0 valid, bit 1 polarity 1 = ON, bits 2-16 y,
bits 17-31 x), int32 timestamp; t = eventTSOverflow << 31 | timestamp. Invalid events are skipped.
Origin upper-left: no flip. The decoder streams packets of any size (it keeps the position inside the
current packet as state). An impossible packet header, a coordinate outside the sensor, a timestamp
more than BACKWARD_TOLERANCE_US behind the latest one or more than MAX_FORWARD_GAP_US ahead of it
(recordings.invariants) is damage; so is a file ending mid-packet.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np
from numba import njit

from recordings._blocks import FIRST_DAMAGE, NEED_BYTES, OUT_FULL, BlockReader, le_u32, pack_event, read_text_header
from recordings.base import RecordingError, RecordingHeader
from recordings.invariants import BACKWARD_TOLERANCE_US, MAX_FORWARD_GAP_US

PACKET_HEADER_BYTES = 28
POLARITY_TYPE = 1
MAX_EVENT_TYPE = 12
MAX_PACKET_BYTES = 1 << 30

#: Source (camera) name fragments, lower case, most specific first -> (width, height).
SOURCES: tuple[tuple[str, int, int], ...] = (
    ("dvs128", 128, 128),
    ("davis240", 240, 180),
    ("davis346", 346, 260),
    ("davis640", 640, 480),
    ("davis208", 208, 192),
    ("davis128", 128, 128),
    ("dvxplorer lite", 320, 240),
    ("dvxplorer", 640, 480),
)

DAMAGE_PACKET = FIRST_DAMAGE
DAMAGE_COORDINATE = FIRST_DAMAGE + 1
DAMAGE_BACKWARD = FIRST_DAMAGE + 2
DAMAGE_FORWARD = FIRST_DAMAGE + 3

S_REMAINING, S_TYPE, S_SIZE, S_OVERFLOW, S_LAST, S_DETAIL_A, S_DETAIL_B = range(7)


@njit(cache=True, inline="always")
def _le32(buf, i):
    """The little-endian int32 at ``buf[i:i + 4]`` as int64."""
    v = le_u32(buf, i)
    return v - (np.int64(1) << 32) if v >= (np.int64(1) << 31) else v


@njit(cache=True)
def decode_aedat3(buf, pos, out, n, state, width, height):
    """Decode AEDAT 3.1 packets from ``buf[pos:]`` (kernel contract: recordings._blocks).

    state: [payload bytes left in the current packet (0 = a packet header is next), its event type,
    its event size, its timestamp overflow, largest event t so far (-1 = none), detail, detail].
    width/height 0 = unknown (no bounds check).
    """
    end = buf.shape[0]
    cap = out.shape[0]
    while True:
        remaining = state[S_REMAINING]
        if remaining == 0:
            if pos + PACKET_HEADER_BYTES > end:
                return pos, n, NEED_BYTES
            kind = np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8)
            size = _le32(buf, pos + 4)
            ts_offset = _le32(buf, pos + 8)
            overflow = _le32(buf, pos + 12)
            capacity = _le32(buf, pos + 16)
            number = _le32(buf, pos + 20)
            valid = _le32(buf, pos + 24)
            bad = kind > MAX_EVENT_TYPE or size < 1 or ts_offset < 0 or ts_offset + 4 > size
            bad = bad or overflow < 0 or capacity < 0 or number < 0 or number > capacity
            bad = bad or valid < 0 or valid > number or capacity * size > MAX_PACKET_BYTES
            bad = bad or (kind == POLARITY_TYPE and (size != 8 or ts_offset != 4))
            if bad:
                state[S_DETAIL_A] = kind
                state[S_DETAIL_B] = size
                return pos, n, DAMAGE_PACKET
            state[S_REMAINING] = capacity * size
            state[S_TYPE] = kind
            state[S_SIZE] = size
            state[S_OVERFLOW] = overflow
            pos += PACKET_HEADER_BYTES
            continue
        if state[S_TYPE] != POLARITY_TYPE:
            step = min(remaining, end - pos)
            if step == 0:
                return pos, n, NEED_BYTES
            state[S_REMAINING] = remaining - step
            pos += step
            continue
        base = state[S_OVERFLOW] << 31
        last = state[S_LAST]
        # accepted times: low <= t <= low + span, i.e. no more than the tolerance behind the latest time
        # and no more than the largest gap ahead of it (any time >= 0 while there is none yet)
        low = last - BACKWARD_TOLERANCE_US if last >= 0 else np.int64(0)
        span = np.uint64(BACKWARD_TOLERANCE_US + MAX_FORWARD_GAP_US) if last >= 0 else np.uint64(1) << np.uint64(62)
        status = NEED_BYTES
        while remaining > 0 and pos + 8 <= end:
            data = le_u32(buf, pos)
            if data & 1:
                if n >= cap:
                    status = OUT_FULL
                    break
                x = (data >> 17) & 0x7FFF
                y = (data >> 2) & 0x7FFF
                if width > 0 and (x >= width or y >= height):
                    state[S_DETAIL_A] = x
                    state[S_DETAIL_B] = y
                    status = DAMAGE_COORDINATE
                    break
                t = base | _le32(buf, pos + 4)
                if np.uint64(t - low) > span:
                    state[S_DETAIL_A] = last
                    state[S_DETAIL_B] = t
                    status = DAMAGE_BACKWARD if t < last else DAMAGE_FORWARD
                    break
                if t > last:
                    last = t
                    low = last - BACKWARD_TOLERANCE_US
                    span = np.uint64(BACKWARD_TOLERANCE_US + MAX_FORWARD_GAP_US)
                pack_event(out, n, t, x, y, (data >> 1) & 1)
                n += 1
            remaining -= 8
            pos += 8
        state[S_REMAINING] = remaining
        state[S_LAST] = last
        if status != NEED_BYTES:
            return pos, n, status
        if remaining > 0:
            return pos, n, NEED_BYTES


class Reader(BlockReader):
    """AEDAT 3.1 file; DVS events from POLARITY packets."""

    format_name = "aedat3"
    extensions = (".aedat", ".aedat3")

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        return head.startswith(b"#!AER-DAT3.")

    def _read_header(self) -> RecordingHeader:
        lines, self._data_offset = read_text_header(self.path, b"#", end_line=b"#!END-HEADER")
        if not lines or not lines[0].startswith("!AER-DAT3."):
            raise RecordingError(self.path, "first line is not '#!AER-DAT3.x'", 0)
        if lines[-1] != "!END-HEADER":
            raise RecordingError(self.path, "header has no '#!END-HEADER' line", self._data_offset)
        fields = {}
        for line in lines[1:-1]:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        layout = fields.get("Format", "RAW")
        if layout != "RAW":
            raise RecordingError(self.path, f"#Format: {layout} (compressed) is not supported, expected RAW", 0)
        sources = {key: value for key, value in fields.items() if re.fullmatch(r"Source \d+", key)}
        width = height = 0
        for name in sources.values():
            match = next((s for s in SOURCES if s[0] in name.lower()), None)
            if match:
                width, height = match[1], match[2]
                break
        extra = {"version": lines[0][1:], "sources": sources, "data_offset": self._data_offset}
        return RecordingHeader(self.format_name, width, height, extra)

    def _describe(self, status: int, state: np.ndarray) -> str:
        if status == DAMAGE_PACKET:
            return (f"impossible packet header (eventType {state[S_DETAIL_A]}, eventSize {state[S_DETAIL_B]}, "
                    f"or offsets/counts out of range)")
        if status == DAMAGE_BACKWARD:
            return f"timestamp went back from {state[S_DETAIL_A]} to {state[S_DETAIL_B]} µs"
        if status == DAMAGE_FORWARD:
            return f"timestamp jumped from {state[S_DETAIL_A]} to {state[S_DETAIL_B]} µs (more than 2^31 µs ahead)"
        return (f"event at x={state[S_DETAIL_A]}, y={state[S_DETAIL_B]} is outside the "
                f"{self.header.width}x{self.header.height} sensor")

    @staticmethod
    def _incomplete(state: np.ndarray) -> str | None:
        if state[S_REMAINING]:
            return f"file ends inside a packet ({state[S_REMAINING]} payload bytes missing)"
        return None

    def _chunks(self) -> Iterator[np.ndarray]:
        state = np.array([0, 0, 0, 0, -1, 0, 0], dtype=np.int64)
        params = (self.header.width, self.header.height)
        yield from self._decode(self._data_offset, decode_aedat3, state, params, self._describe,
                                "file ends inside a packet", max_events_per_byte=1 / 8,
                                incomplete=self._incomplete)
