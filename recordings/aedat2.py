"""AEDAT 2.0 / 1.0 (jAER) reader: DVS128 and DAVIS (240/346/...) recordings.

File: ``#`` header lines (``#!AER-DAT2.0``; absent -> 1.0), ``# AEChip: <java class>`` names the sensor.
Records are big-endian: 2.0 ``int32 address, int32 timestamp_us`` (8 B); 1.0 ``int16 address, int32
timestamp_us`` (6 B). Timestamps are a 32-bit µs counter: a backward jump of more than 2^31 is a wrap
(+2^32 µs); a jump back to near zero (< RESET_WINDOW_US) is a timestamp reset (time continues from the
last event); any other jump back of more than BACKWARD_TOLERANCE_US, or a jump ahead of more than 2^31
µs, is damage.

Conventions applied (output: origin upper-left, polarity 1 = ON):

* DVS128 (``a & 0x8000`` set = special event, skipped): jAER x = 127 - ((a >> 1) & 0x7F) (jAER mirrors
  the raw column), jAER y = (a >> 8) & 0x7F with origin lower-left, so y = 127 - jAER y; raw bit 0 = 0
  means ON (jAER type = 1 - bit0).
* DAVIS: words with bit 31 set (APS samples, IMU) and external-input words (bits 11-10 = 01/11) are
  skipped. jAER x = sizeX - 1 - raw x (bits 21-12), jAER y = raw y (bits 30-22) with origin lower-left,
  so y = sizeY - 1 - raw y; polarity = bit 11.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
from numba import njit

from recordings._blocks import FIRST_DAMAGE, NEED_BYTES, OUT_FULL, BlockReader, be_u32, pack_event, read_text_header
from recordings.base import RecordingError, RecordingHeader
from recordings.invariants import BACKWARD_TOLERANCE_US

#: A backward step that lands below this raw timestamp (µs) is a timestamp reset.
RESET_WINDOW_US = 100_000

LAYOUT_DVS128 = 0
LAYOUT_DAVIS = 1

#: AEChip class-name fragments (lower case) -> (address layout, width, height).
CHIPS: tuple[tuple[str, int, int, int], ...] = (
    ("dvs128", LAYOUT_DVS128, 128, 128),
    ("tmpdiff128", LAYOUT_DVS128, 128, 128),
    ("davis240", LAYOUT_DAVIS, 240, 180),
    ("davis346", LAYOUT_DAVIS, 346, 260),
    ("davis640", LAYOUT_DAVIS, 640, 480),
    ("davis208", LAYOUT_DAVIS, 208, 192),
    ("davis128", LAYOUT_DAVIS, 128, 128),
)

DAMAGE_BACKWARD = FIRST_DAMAGE
DAMAGE_ADDRESS = FIRST_DAMAGE + 1
DAMAGE_COORDINATE = FIRST_DAMAGE + 2
DAMAGE_FORWARD = FIRST_DAMAGE + 3

# state slots
S_LAST_RAW, S_OFFSET, S_DETAIL_A, S_DETAIL_B = range(4)


@njit(cache=True)
def decode_aedat2(buf, pos, out, n, state, record_size, layout, width, height):
    """Decode jAER records from ``buf[pos:]`` (see recordings._blocks for the kernel contract).

    state: [largest raw timestamp since the last wrap or reset (-1 = none), µs added to raw timestamps,
    detail, detail]. A tolerated step back keeps the largest raw time, so steps cannot accumulate.
    """
    end = buf.shape[0]
    cap = out.shape[0]
    addr_bytes = record_size - 4
    last = state[S_LAST_RAW]
    offset = state[S_OFFSET]
    status = NEED_BYTES
    while pos + record_size <= end:
        if n >= cap:
            status = OUT_FULL
            break
        if addr_bytes == 4:
            addr = be_u32(buf, pos)
        else:
            addr = (np.int64(buf[pos]) << 8) | np.int64(buf[pos + 1])
        raw = be_u32(buf, pos + addr_bytes)
        new_last = raw
        if raw < last:
            back = last - raw
            if back > (np.int64(1) << 31):
                offset += np.int64(1) << 32
            elif raw < RESET_WINDOW_US and back > BACKWARD_TOLERANCE_US:
                offset += back
            elif back > BACKWARD_TOLERANCE_US:
                state[S_DETAIL_A] = last
                state[S_DETAIL_B] = raw
                status = DAMAGE_BACKWARD
                break
            else:
                new_last = last
        elif last >= 0 and raw - last > (np.int64(1) << 31):
            state[S_DETAIL_A] = last
            state[S_DETAIL_B] = raw
            status = DAMAGE_FORWARD
            break
        if layout == LAYOUT_DVS128:
            if addr_bytes == 4 and (addr >> 16) != 0:
                state[S_DETAIL_A] = addr
                status = DAMAGE_ADDRESS
                break
            last = new_last
            pos += record_size
            if addr & 0x8000:
                continue
            x = 127 - ((addr >> 1) & 0x7F)
            y = 127 - ((addr >> 8) & 0x7F)
            p = 1 - (addr & 1)
        else:
            if ((addr >> 31) & 1) == 0 and ((addr >> 10) & 1) == 0:
                rx = (addr >> 12) & 0x3FF
                ry = (addr >> 22) & 0x1FF
                if rx >= width or ry >= height:
                    state[S_DETAIL_A] = rx
                    state[S_DETAIL_B] = ry
                    status = DAMAGE_COORDINATE
                    break
            last = new_last
            pos += record_size
            if (addr >> 31) & 1 or (addr >> 10) & 1:
                continue
            x = width - 1 - ((addr >> 12) & 0x3FF)
            y = height - 1 - ((addr >> 22) & 0x1FF)
            p = (addr >> 11) & 1
        pack_event(out, n, raw + offset, x, y, p)
        n += 1
    state[S_LAST_RAW] = last
    state[S_OFFSET] = offset
    return pos, n, status


class Reader(BlockReader):
    """jAER AEDAT 2.0 / 1.0 file (DVS128 or DAVIS); DVS events only."""

    format_name = "aedat2"
    extensions = (".aedat", ".dat")

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        if head.startswith(b"#!AER-DAT2.0") or head.startswith(b"#!AER-DAT1.0"):
            return True
        return head.startswith(b"#") and not head.startswith(b"#!") and (b"AEChip:" in head or b"raw AE data" in head)

    def _read_header(self) -> RecordingHeader:
        lines, self._data_offset = read_text_header(self.path, b"#")
        if not lines:
            raise RecordingError(self.path, "no '#' header lines: not a jAER AEDAT 2.0/1.0 file", 0)
        version = "2.0" if lines[0].startswith("!AER-DAT2.0") else "1.0"
        if lines[0].startswith("!AER-DAT") and version == "1.0" and not lines[0].startswith("!AER-DAT1.0"):
            raise RecordingError(self.path, f"version line {lines[0]!r} is not AEDAT 2.0 or 1.0", 0)
        self._record_size = 8 if version == "2.0" else 6
        chip = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("AEChip:")), "")
        if chip:
            name = chip.rsplit(".", 1)[-1].lower()
            match = next((c for c in CHIPS if c[0] in name), None)
            if match is None:
                known = ", ".join(c[0] for c in CHIPS)
                raise RecordingError(self.path, f"AEChip {chip!r} is not supported (known chips: {known})", 0)
            _, self._layout, width, height = match
        else:
            self._layout, width, height = LAYOUT_DVS128, 128, 128
        extra = {"version": version, "chip": chip or "(none; DVS128 assumed)", "data_offset": self._data_offset}
        return RecordingHeader(self.format_name, width, height, extra)

    def _describe(self, status: int, state: np.ndarray) -> str:
        if status == DAMAGE_BACKWARD:
            return (f"timestamp went back from {state[S_DETAIL_A]} to {state[S_DETAIL_B]} µs "
                    f"(neither a 32-bit wrap nor a reset)")
        if status == DAMAGE_FORWARD:
            return f"timestamp jumped from {state[S_DETAIL_A]} to {state[S_DETAIL_B]} µs (more than 2^31 µs ahead)"
        if status == DAMAGE_ADDRESS:
            return f"DVS128 address 0x{state[S_DETAIL_A]:08x} has bits above bit 15 set"
        return (f"DVS event at raw x={state[S_DETAIL_A]}, y={state[S_DETAIL_B]} is outside the "
                f"{self.header.width}x{self.header.height} sensor")

    def _chunks(self) -> Iterator[np.ndarray]:
        state = np.array([-1, 0, 0, 0], dtype=np.int64)
        params = (self._record_size, self._layout, self.header.width, self.header.height)
        yield from self._decode(self._data_offset, decode_aedat2, state, params, self._describe,
                                f"file ends inside a {self._record_size}-byte event record")
