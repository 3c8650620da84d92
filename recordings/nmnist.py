"""N-MNIST / N-Caltech101 ``.bin`` and SLAYER ``.bs2`` reader (40-bit events, no header).

Each event is 5 bytes, big-endian packed: byte 0 = x, byte 1 = y, byte 2 bit 7 = polarity (1 = ON),
then a 23-bit µs timestamp ((b2 & 0x7F) << 16 | b3 << 8 | b4). A y of 240 marks a timestamp-overflow
event (N-Caltech101): it is dropped and 2^13 µs are added to later timestamps (Orchard's / tonic's
handling). A timestamp that goes back by more than BACKWARD_TOLERANCE_US is damage.

Origin upper-left (ATIS), so no flip. With no header, the resolution is 34x34 (N-MNIST) unless the data
holds larger coordinates (then max x + 1, max y + 1; one pass at open). Detection: the ``.bin``/``.bs2``
extension, or a size that is a multiple of 5 with N-MNIST-sized coordinates; in both cases the first
records must be plausible (time non-decreasing) and the head must not be another format's header.
This format is asked last.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np
from numba import njit

from recordings._blocks import FIRST_DAMAGE, NEED_BYTES, OUT_FULL, BlockReader, file_size, pack_event
from recordings.base import RecordingHeader
from recordings.invariants import BACKWARD_TOLERANCE_US

EVENT_BYTES = 5
DEFAULT_SIZE = 34
OVERFLOW_Y = 240
OVERFLOW_US = 1 << 13
#: Records examined by ``sniff`` (at most the 4 KiB head).
SNIFF_RECORDS = 800

#: Two leading '#'/'%' text lines: a headered format, never N-MNIST (asked last, but its extension
#: would otherwise win the tie-break for a ``.bin`` file).
TEXT_HEADER = re.compile(rb"[#%][^\n]{0,300}\n[#%]")

DAMAGE_BACKWARD = FIRST_DAMAGE
S_LAST, S_OFFSET, S_DETAIL_A, S_DETAIL_B = range(4)


@njit(cache=True)
def decode_nmnist(buf, pos, out, n, state):
    """Decode 5-byte N-MNIST events from ``buf[pos:]`` (kernel contract: recordings._blocks).

    state: [largest output t (-1 = none), µs added by overflow events, detail, detail].
    """
    end = buf.shape[0]
    cap = out.shape[0]
    while pos + 5 <= end:
        y = np.int64(buf[pos + 1])
        if y == OVERFLOW_Y:
            state[S_OFFSET] += OVERFLOW_US
            pos += 5
            continue
        if n >= cap:
            return pos, n, OUT_FULL
        b2 = np.int64(buf[pos + 2])
        t = (((b2 & 0x7F) << 16) | (np.int64(buf[pos + 3]) << 8) | np.int64(buf[pos + 4])) + state[S_OFFSET]
        if t < state[S_LAST] - BACKWARD_TOLERANCE_US:
            state[S_DETAIL_A] = state[S_LAST]
            state[S_DETAIL_B] = t
            return pos, n, DAMAGE_BACKWARD
        if t > state[S_LAST]:
            state[S_LAST] = t
        pack_event(out, n, t, np.int64(buf[pos]), y, b2 >> 7)
        n += 1
        pos += 5
    return pos, n, NEED_BYTES


def _records(data: bytes) -> np.ndarray:
    """The whole 5-byte records of ``data`` as an (n, 5) int64 array."""
    count = len(data) // EVENT_BYTES
    return np.frombuffer(data[: count * EVENT_BYTES], dtype=np.uint8).reshape(count, EVENT_BYTES).astype(np.int64)


def _times(records: np.ndarray) -> np.ndarray:
    return ((records[:, 2] & 0x7F) << 16) | (records[:, 3] << 8) | records[:, 4]


class Reader(BlockReader):
    """Headerless 40-bit N-MNIST / N-Caltech101 / SLAYER bs2 event file."""

    format_name = "nmnist"
    extensions = (".bin", ".bs2")

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        if head.startswith((b"#!AER-DAT", b"Event Stream")) or TEXT_HEADER.match(head):
            return False
        records = _records(head[: SNIFF_RECORDS * EVENT_BYTES])
        records = records[records[:, 1] != OVERFLOW_Y]
        if len(records) == 0 or np.any(np.diff(_times(records)) < 0):
            return False
        if path.suffix.lower() in cls.extensions:
            return True
        size_ok = path.is_file() and file_size(path) % EVENT_BYTES == 0
        small = records[:, 0].max() < DEFAULT_SIZE and records[:, 1].max() < DEFAULT_SIZE
        return size_ok and small and len(records) >= 10

    def _read_header(self) -> RecordingHeader:
        size = file_size(self.path)
        count = size // EVENT_BYTES
        width = height = DEFAULT_SIZE
        if count:
            data = np.memmap(self.path, dtype=np.uint8, mode="r", shape=(count, EVENT_BYTES))
            step = 1 << 20
            for first in range(0, count, step):
                block = np.asarray(data[first : first + step, :2])
                block = block[block[:, 1] != OVERFLOW_Y]
                if len(block):
                    width = max(width, int(block[:, 0].max()) + 1)
                    height = max(height, int(block[:, 1].max()) + 1)
            del data
        return RecordingHeader(self.format_name, width, height, {"bytes": size})

    def _describe(self, status: int, state: np.ndarray) -> str:
        return f"timestamp went back from {state[S_DETAIL_A]} to {state[S_DETAIL_B]} µs"

    def _chunks(self) -> Iterator[np.ndarray]:
        state = np.array([-1, 0, 0, 0], dtype=np.int64)
        yield from self._decode(0, decode_nmnist, state, (), self._describe, "file ends inside a 5-byte event",
                                max_events_per_byte=1 / EVENT_BYTES)
