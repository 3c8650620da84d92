"""Prophesee RAW EVT 3.0 reader (Gen4 / IMX636 cameras).

After the ``%`` header the data is 16-bit little-endian words, type in bits 15-12, decoded with state:

* 0x0 EVT_ADDR_Y: y = bits 10-0 (kept); 0x2 EVT_ADDR_X: one event at x = bits 10-0, polarity bit 11;
* 0x3 VECT_BASE_X: base x and polarity for 0x4 VECT_12 / 0x5 VECT_8 (bit k of the 12/8-bit mask ->
  event at base x + k; base x then advances by 12/8);
* 0x6 EVT_TIME_LOW / 0x8 EVT_TIME_HIGH: low / high 12 bits of a 24-bit µs time;
* 0x7, 0xF CONTINUED, 0xA EXT_TRIGGER, 0xE OTHERS: skipped; other types are damage.

t = (wraps << 24) | (TIME_HIGH << 12) | TIME_LOW. A wrap is counted only when a TIME_HIGH is lower than
the previous one by more than half its range (2048); a smaller drop is damage. Wraps are never
inferred from TIME_LOW, which can step back a few µs on its own: those glitches are kept as recorded.
An event more than BACKWARD_TOLERANCE_US (recordings.invariants) behind the latest event time is damage
(a flipped TIME_LOW). Events before the first TIME_HIGH or EVT_ADDR_Y have no time/row: they are dropped
and a DroppedEventsWarning says how many, once. Origin upper-left, bit 11 = 1 is ON: no flip is applied.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
from numba import njit

from recordings._blocks import FIRST_DAMAGE, NEED_BYTES, OUT_FULL, BlockReader, pack_event
from recordings._prophesee_raw import read_raw_header, sniff_encoding
from recordings.base import RecordingHeader
from recordings.invariants import BACKWARD_TOLERANCE_US

DAMAGE_TYPE = FIRST_DAMAGE
DAMAGE_BACKWARD = FIRST_DAMAGE + 1
DAMAGE_COORDINATE = FIRST_DAMAGE + 2
DAMAGE_EVENT_BACKWARD = FIRST_DAMAGE + 3

# state slots
(S_Y, S_BASE_X, S_POL, S_TIME_LOW, S_TIME_HIGH, S_WRAPS, S_DROPPED, S_DETAIL_A, S_DETAIL_B, S_WARNED,
 S_MASK, S_MASK_X, S_T_MAX) = range(13)
STATE_SIZE = 13


@njit(cache=True)
def decode_evt3(buf, pos, out, n, state, width, height):
    """Decode EVT 3.0 words from ``buf[pos:]`` (kernel contract: recordings._blocks).

    state: [y (-1 = none yet), vector base x, vector polarity, TIME_LOW, TIME_HIGH (-1 = none yet),
    wraps, events dropped for lack of time/row, detail, detail, notice given, pending vector mask,
    x of the pending mask's bit 0, latest event time (-1 = none)]. width/height 0 = unknown (no bounds
    check).
    """
    end = buf.shape[0]
    cap = out.shape[0]
    y = state[S_Y]
    bx = state[S_BASE_X]
    pol = state[S_POL]
    time_low = state[S_TIME_LOW]
    time_high = state[S_TIME_HIGH]
    wraps = state[S_WRAPS]
    dropped = state[S_DROPPED]
    mask = state[S_MASK]
    mask_x = state[S_MASK_X]
    t_max = state[S_T_MAX]
    checked = False  # the current t was already compared with t_max (t changes only at TIME words)
    t = (wraps << 24) | (time_high << 12) | time_low
    ready = time_high >= 0 and y >= 0
    status = NEED_BYTES
    while True:
        while mask:
            if n >= cap:
                break
            if mask & 1:
                pack_event(out, n, t, mask_x, y, pol)
                n += 1
            mask >>= 1
            mask_x += 1
        if mask:
            status = OUT_FULL
            break
        if pos + 2 > end:
            break
        w = np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8)
        kind = w >> 12
        if kind == 2:
            if n >= cap:
                status = OUT_FULL
                break
            x = w & 0x7FF
            if width > 0 and x >= width:
                state[S_DETAIL_A] = x
                state[S_DETAIL_B] = y
                status = DAMAGE_COORDINATE
                break
            if ready:
                if not checked:
                    if t < t_max - BACKWARD_TOLERANCE_US:
                        state[S_DETAIL_A] = t_max
                        state[S_DETAIL_B] = t
                        status = DAMAGE_EVENT_BACKWARD
                        break
                    t_max = max(t_max, t)
                    checked = True
                pack_event(out, n, t, x, y, (w >> 11) & 1)
                n += 1
            else:
                dropped += 1
        elif kind == 0:
            row = w & 0x7FF
            if height > 0 and row >= height:
                state[S_DETAIL_A] = -1
                state[S_DETAIL_B] = row
                status = DAMAGE_COORDINATE
                break
            y = row
            ready = time_high >= 0
        elif kind == 6:
            time_low = w & 0xFFF
            t = (wraps << 24) | (time_high << 12) | time_low
            checked = False
        elif kind == 4 or kind == 5:
            bits = w & (0xFFF if kind == 4 else 0xFF)
            if bits:
                top = 11
                while not (bits >> top) & 1:
                    top -= 1
                if width > 0 and bx + top >= width:
                    state[S_DETAIL_A] = bx + top
                    state[S_DETAIL_B] = y
                    status = DAMAGE_COORDINATE
                    break
                if ready:
                    if not checked:
                        if t < t_max - BACKWARD_TOLERANCE_US:
                            state[S_DETAIL_A] = t_max
                            state[S_DETAIL_B] = t
                            status = DAMAGE_EVENT_BACKWARD
                            break
                        t_max = max(t_max, t)
                        checked = True
                    mask = bits
                    mask_x = bx
                else:
                    while bits:
                        dropped += bits & 1
                        bits >>= 1
            bx += 12 if kind == 4 else 8
        elif kind == 3:
            bx = w & 0x7FF
            pol = (w >> 11) & 1
        elif kind == 8:
            high = w & 0xFFF
            if high < time_high:
                if time_high - high > 2048:
                    wraps += 1
                else:
                    state[S_DETAIL_A] = time_high
                    state[S_DETAIL_B] = high
                    status = DAMAGE_BACKWARD
                    break
            time_high = high
            t = (wraps << 24) | (time_high << 12) | time_low
            checked = False
            ready = y >= 0
        elif kind != 7 and kind != 0xA and kind != 0xE and kind != 0xF:
            state[S_DETAIL_A] = kind
            status = DAMAGE_TYPE
            break
        pos += 2
    state[S_Y] = y
    state[S_BASE_X] = bx
    state[S_POL] = pol
    state[S_TIME_LOW] = time_low
    state[S_TIME_HIGH] = time_high
    state[S_WRAPS] = wraps
    state[S_DROPPED] = dropped
    state[S_MASK] = mask
    state[S_MASK_X] = mask_x
    state[S_T_MAX] = t_max
    return pos, n, status


class Reader(BlockReader):
    """Prophesee RAW file in EVT 3.0 encoding; CD events only."""

    format_name = "evt3"
    extensions = (".raw",)

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        return sniff_encoding(head) == "evt3"

    def _read_header(self) -> RecordingHeader:
        header, self._data_offset = read_raw_header(self.path, self.format_name, "evt3")
        return header

    def _describe(self, status: int, state: np.ndarray) -> str:
        if status == DAMAGE_TYPE:
            return f"word type 0x{state[S_DETAIL_A]:x} is not an EVT 3.0 type (0, 2-8, A, E, F)"
        if status == DAMAGE_BACKWARD:
            return (f"TIME_HIGH went back from {state[S_DETAIL_A]} to {state[S_DETAIL_B]} "
                    f"(too small a drop to be a 24-bit wrap)")
        if status == DAMAGE_EVENT_BACKWARD:
            return (f"event time went back from {state[S_DETAIL_A]} to {state[S_DETAIL_B]} µs "
                    f"(more than {BACKWARD_TOLERANCE_US} µs)")
        return (f"event at x={state[S_DETAIL_A]}, y={state[S_DETAIL_B]} is outside the "
                f"{self.header.width}x{self.header.height} sensor (-1: not the bad field)")

    def _notice(self, state: np.ndarray) -> None:
        if state[S_DROPPED] and not state[S_WARNED] and state[S_TIME_HIGH] >= 0 and state[S_Y] >= 0:
            state[S_WARNED] = 1
            self.warn_dropped(int(state[S_DROPPED]), "that came before the first TIME_HIGH / EVT_ADDR_Y")

    def _chunks(self) -> Iterator[np.ndarray]:
        state = np.zeros(STATE_SIZE, dtype=np.int64)
        state[S_Y] = -1
        state[S_TIME_HIGH] = -1
        state[S_T_MAX] = -1
        params = (self.header.width, self.header.height)
        yield from self._decode(self._data_offset, decode_evt3, state, params, self._describe,
                                "file ends inside a 2-byte EVT 3.0 word", max_events_per_byte=6.0,
                                after_call=self._notice)
        if state[S_DROPPED] and not state[S_WARNED]:
            state[S_WARNED] = 1
            self.warn_dropped(int(state[S_DROPPED]), "because the file lacks a TIME_HIGH or EVT_ADDR_Y word")
