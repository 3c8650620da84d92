"""Event Stream (.es, neuromorphic-paris) reader, version 2.x, DVS type.

Header (20 bytes for DVS): ``Event Stream``, version bytes major/minor/patch, type byte (1 = DVS), then
``uint16 LE width, uint16 LE height``. Events are byte-coded:

* 0xFF: overflow, t += 127 µs, no event; 0xFE: reset marker, no event;
* any other first byte b: t += b >> 1 µs, polarity = b & 1, then x (uint16 LE), y (uint16 LE): 5 bytes.

The y origin is bottom-left in the file: y = height - 1 - y gives the upper-left origin. Coordinates
outside the header's width/height are damage. Polarity 1 = ON. Time starts at 0 µs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
from numba import njit

from recordings._blocks import FIRST_DAMAGE, NEED_BYTES, OUT_FULL, BlockReader, pack_event
from recordings.base import RecordingError, RecordingHeader

MAGIC = b"Event Stream"
TYPE_NAMES = {0: "generic", 1: "DVS", 2: "ATIS", 4: "color"}
DVS_HEADER_BYTES = 20
#: Largest width/height: event coordinates are int16.
MAX_SIDE = 32767

DAMAGE_COORDINATE = FIRST_DAMAGE
S_T, S_DETAIL_A, S_DETAIL_B = range(3)


@njit(cache=True)
def decode_es_dvs(buf, pos, out, n, state, width, height):
    """Decode ES 2.x DVS bytes from ``buf[pos:]`` (kernel contract: recordings._blocks).

    state: [current t in µs, detail, detail].
    """
    end = buf.shape[0]
    cap = out.shape[0]
    t = state[S_T]
    while pos < end:
        b = np.int64(buf[pos])
        if b == 0xFF:
            t += 127
            pos += 1
            continue
        if b == 0xFE:
            pos += 1
            continue
        if pos + 5 > end:
            break
        if n >= cap:
            state[S_T] = t
            return pos, n, OUT_FULL
        x = np.int64(buf[pos + 1]) | (np.int64(buf[pos + 2]) << 8)
        y = np.int64(buf[pos + 3]) | (np.int64(buf[pos + 4]) << 8)
        if x >= width or y >= height:
            state[S_T] = t
            state[S_DETAIL_A] = x
            state[S_DETAIL_B] = y
            return pos, n, DAMAGE_COORDINATE
        t += b >> 1
        pack_event(out, n, t, x, height - 1 - y, b & 1)
        n += 1
        pos += 5
    state[S_T] = t
    return pos, n, NEED_BYTES


class Reader(BlockReader):
    """Event Stream 2.x file of DVS events."""

    format_name = "eventstream"
    extensions = (".es",)

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        return head.startswith(MAGIC)

    def _read_header(self) -> RecordingHeader:
        with open(self.path, "rb") as f:
            head = f.read(DVS_HEADER_BYTES)
        if not head.startswith(MAGIC):
            raise RecordingError(self.path, f"does not start with {MAGIC!r}", 0)
        if len(head) < 16:
            raise RecordingError(self.path, "file ends inside the version/type bytes", len(head))
        major, minor, patch, kind = head[12], head[13], head[14], head[15]
        if major != 2:
            raise RecordingError(self.path, f"Event Stream version {major}.{minor}.{patch}: only 2.x is supported", 12)
        if kind != 1:
            name = TYPE_NAMES.get(kind, f"unknown type {kind}")
            raise RecordingError(self.path, f"Event Stream type {name}: only DVS (type 1) is supported", 15)
        if len(head) < DVS_HEADER_BYTES:
            raise RecordingError(self.path, "file ends inside the width/height fields", len(head))
        width = int.from_bytes(head[16:18], "little")
        height = int.from_bytes(head[18:20], "little")
        if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
            raise RecordingError(self.path, f"header resolution {width}x{height} is outside 1..{MAX_SIDE}", 16)
        return RecordingHeader(self.format_name, width, height, {"version": f"{major}.{minor}.{patch}", "type": "DVS"})

    def _describe(self, status: int, state: np.ndarray) -> str:
        return (f"event at x={state[S_DETAIL_A]}, y={state[S_DETAIL_B]} (file origin bottom-left) is outside "
                f"the {self.header.width}x{self.header.height} sensor")

    def _chunks(self) -> Iterator[np.ndarray]:
        state = np.zeros(3, dtype=np.int64)
        params = (self.header.width, self.header.height)
        yield from self._decode(DVS_HEADER_BYTES, decode_es_dvs, state, params, self._describe,
                                "file ends inside a 5-byte event", max_events_per_byte=0.2)
