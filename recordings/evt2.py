"""Prophesee RAW EVT 2.0 reader (Gen3 / GenX320 cameras).

After the ``%`` header the data is 32-bit little-endian words; the type is bits 31-28:
0x0 CD_OFF / 0x1 CD_ON (bits 27-22 = low 6 bits of t, 21-11 = x, 10-0 = y), 0x8 EVT_TIME_HIGH
(bits 27-0 = bits 33-6 of t), 0xA EXT_TRIGGER, 0xE OTHERS, 0xF CONTINUED (skipped). Any other type is
damage. t = (TIME_HIGH << 6) | low6 is a 34-bit µs time. A TIME_HIGH that advances time by at most
MAX_FORWARD_GAP_US (recordings.invariants), counted modulo 2^34 µs, is accepted (a lower value is a wrap,
+2^34 µs); any other change is damage: a drop is "went back", a rise "jumped".

CD events before the first TIME_HIGH have no time base: they are dropped and a
DroppedEventsWarning says how many, once. Conventions: the sensor's origin is upper-left and type 1
is ON, so no flip is applied.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
from numba import njit

from recordings._blocks import FIRST_DAMAGE, NEED_BYTES, OUT_FULL, BlockReader, le_u32, pack_event
from recordings._prophesee_raw import read_raw_header, sniff_encoding
from recordings.base import RecordingHeader
from recordings.invariants import MAX_FORWARD_GAP_US

TIME_HIGH_BITS = 28
#: Largest TIME_HIGH step accepted (one TIME_HIGH unit is 64 µs).
MAX_TIME_HIGH_STEP = MAX_FORWARD_GAP_US >> 6
DAMAGE_TYPE = FIRST_DAMAGE
DAMAGE_BACKWARD = FIRST_DAMAGE + 1
DAMAGE_COORDINATE = FIRST_DAMAGE + 2
DAMAGE_FORWARD = FIRST_DAMAGE + 3

# state slots
S_TIME_HIGH, S_OFFSET, S_DROPPED, S_DETAIL_A, S_DETAIL_B, S_WARNED = range(6)


@njit(cache=True)
def decode_evt2(buf, pos, out, n, state, width, height):
    """Decode EVT 2.0 words from ``buf[pos:]`` (kernel contract: recordings._blocks).

    state: [TIME_HIGH (-1 = none yet), µs added for wraps, CD events dropped before the first TIME_HIGH,
    detail, detail, notice given]. width/height 0 = unknown (no bounds check).
    """
    end = buf.shape[0]
    cap = out.shape[0]
    wrap = np.int64(1) << TIME_HIGH_BITS
    while pos + 4 <= end:
        w = le_u32(buf, pos)
        kind = w >> 28
        if kind <= 1:
            if n >= cap:
                return pos, n, OUT_FULL
            x = (w >> 11) & 0x7FF
            y = w & 0x7FF
            if width > 0 and (x >= width or y >= height):
                state[S_DETAIL_A] = x
                state[S_DETAIL_B] = y
                return pos, n, DAMAGE_COORDINATE
            th = state[S_TIME_HIGH]
            if th < 0:
                state[S_DROPPED] += 1
            else:
                pack_event(out, n, state[S_OFFSET] + ((th << 6) | ((w >> 22) & 0x3F)), x, y, kind)
                n += 1
        elif kind == 8:
            th = w & 0xFFFFFFF
            last = state[S_TIME_HIGH]
            if last >= 0:
                step = th - last if th >= last else th + wrap - last
                if step > MAX_TIME_HIGH_STEP:
                    state[S_DETAIL_A] = last
                    state[S_DETAIL_B] = th
                    return pos, n, DAMAGE_BACKWARD if th < last else DAMAGE_FORWARD
                if th < last:
                    state[S_OFFSET] += np.int64(1) << 34
            state[S_TIME_HIGH] = th
        elif kind != 0xA and kind != 0xE and kind != 0xF:
            state[S_DETAIL_A] = kind
            return pos, n, DAMAGE_TYPE
        pos += 4
    return pos, n, NEED_BYTES


class Reader(BlockReader):
    """Prophesee RAW file in EVT 2.0 encoding; CD events only."""

    format_name = "evt2"
    extensions = (".raw",)

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        return sniff_encoding(head) == "evt2"

    def _read_header(self) -> RecordingHeader:
        header, self._data_offset = read_raw_header(self.path, self.format_name, "evt2")
        return header

    def _describe(self, status: int, state: np.ndarray) -> str:
        if status == DAMAGE_TYPE:
            return f"word type 0x{state[S_DETAIL_A]:x} is not an EVT 2.0 type (0, 1, 8, A, E, F)"
        if status == DAMAGE_FORWARD:
            return (f"TIME_HIGH jumped from {state[S_DETAIL_A]} to {state[S_DETAIL_B]} "
                    f"(more than 2^31 µs ahead)")
        if status == DAMAGE_BACKWARD:
            return (f"TIME_HIGH went back from {state[S_DETAIL_A]} to {state[S_DETAIL_B]} "
                    f"(not a 34-bit wrap: that would be more than 2^31 µs ahead)")
        return (f"CD event at x={state[S_DETAIL_A]}, y={state[S_DETAIL_B]} is outside the "
                f"{self.header.width}x{self.header.height} sensor")

    def _notice(self, state: np.ndarray) -> None:
        if state[S_DROPPED] and not state[S_WARNED] and state[S_TIME_HIGH] >= 0:
            state[S_WARNED] = 1
            self.warn_dropped(int(state[S_DROPPED]), "that came before the first TIME_HIGH (no time base)")

    def _chunks(self) -> Iterator[np.ndarray]:
        state = np.array([-1, 0, 0, 0, 0, 0], dtype=np.int64)
        params = (self.header.width, self.header.height)
        yield from self._decode(self._data_offset, decode_evt2, state, params, self._describe,
                                "file ends inside a 4-byte EVT 2.0 word", after_call=self._notice)
        if state[S_DROPPED] and not state[S_WARNED]:
            state[S_WARNED] = 1
            self.warn_dropped(int(state[S_DROPPED]), "because the file has no TIME_HIGH word (no time base)")
