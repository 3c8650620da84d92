"""Shared machinery of the binary event-format readers: text headers and block-wise kernel decoding.

Every binary reader decodes its event bytes with one numba kernel of this shape::

    kernel(buf uint8 (nb,), pos int, out int64 (chunk, 2), n int, state int64 (k,), *params)
        -> (pos, n, status)

It decodes whole records from ``buf[pos:]`` into ``out[n:]`` (see :func:`pack_event`) and stops when
the next record does not fit in ``buf`` (status ``NEED_BYTES``), when ``out`` is full (``OUT_FULL``) or
at a damaged record (a status >= ``FIRST_DAMAGE``, with ``pos`` at the damaged record's first byte).
``state`` carries the decoder state (time base, wraps, current row ...) from one block to the next, so
a file of any length streams through a fixed-size byte block and a fixed-size output chunk.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable, Iterator

import numpy as np
from numba import njit

from pipeline.core.events import DVS_EVENT_DTYPE
from recordings.base import RecordingError, RecordingReader

#: Bytes read from the file per block (the decoder's working set, besides the output chunk).
BLOCK_BYTES = 8 << 20
#: Longest header accepted, bytes (a jAER preferences dump is ~200 kB).
MAX_HEADER_BYTES = 16 << 20

NEED_BYTES = 0
OUT_FULL = 1
FIRST_DAMAGE = 2


class DroppedEventsWarning(UserWarning):
    """Events were dropped for a documented reason (e.g. no time base yet); the file is not damaged."""


@njit(cache=True, inline="always")
def pack_event(out, n, t, x, y, p):
    """Write one DVS event into row ``n`` of ``out`` (a DVS_EVENT_DTYPE array viewed as int64 (N, 2)).

    t: µs; x, y: pixels (0..32767, origin upper-left); p: 1 = ON, 0 = OFF.
    """
    out[n, 0] = t
    out[n, 1] = (x & 0xFFFF) | ((y & 0xFFFF) << 16) | ((p & 0xFF) << 32)


@njit(cache=True, inline="always")
def be_u32(buf, i):
    """The big-endian uint32 at ``buf[i:i + 4]`` as int64."""
    return (np.int64(buf[i]) << 24) | (np.int64(buf[i + 1]) << 16) | (np.int64(buf[i + 2]) << 8) | np.int64(buf[i + 3])


@njit(cache=True, inline="always")
def le_u32(buf, i):
    """The little-endian uint32 at ``buf[i:i + 4]`` as int64."""
    return np.int64(buf[i]) | (np.int64(buf[i + 1]) << 8) | (np.int64(buf[i + 2]) << 16) | (np.int64(buf[i + 3]) << 24)


def read_text_header(path, marker: bytes, end_line: bytes | None = None) -> tuple[list[str], int]:
    """Read the leading run of lines that start with ``marker`` (b"#" or b"%").

    Returns (lines without marker and line ending, byte offset where binary data starts). A line equal
    to ``end_line`` (e.g. b"% end") also ends the header, including that line.
    Raises RecordingError when the header is unterminated or longer than MAX_HEADER_BYTES.
    """
    lines: list[str] = []
    offset = 0
    with open(path, "rb") as f:
        while True:
            if f.peek(1)[:1] != marker:
                return lines, offset
            raw = f.readline(MAX_HEADER_BYTES)
            if not raw.endswith(b"\n"):
                raise RecordingError(path, f"header line starting with {marker!r} is not terminated", offset)
            offset += len(raw)
            if offset > MAX_HEADER_BYTES:
                raise RecordingError(path, f"header longer than {MAX_HEADER_BYTES} bytes", offset)
            stripped = raw.rstrip(b"\r\n")
            lines.append(stripped[len(marker) :].decode("latin-1").strip())
            if end_line is not None and stripped.strip() == end_line:
                return lines, offset


def file_size(path) -> int:
    """Size of a file in bytes."""
    return os.stat(path).st_size


def decode_blocks(
    reader: RecordingReader,
    start: int,
    kernel: Callable,
    state: np.ndarray,
    params: tuple,
    describe: Callable[[int, np.ndarray], str],
    truncated: str,
    *,
    block_bytes: int = BLOCK_BYTES,
    max_events_per_byte: float = 1.0,
    after_call: Callable[[np.ndarray], None] | None = None,
    incomplete: Callable[[np.ndarray], str | None] | None = None,
) -> Iterator[np.ndarray]:
    """Run ``kernel`` over the file from byte ``start`` in blocks; yield DVS chunks of <= chunk_events.

    describe(status, state) -> message for a damage status. truncated: message for a file that ends
    inside a record. max_events_per_byte: the format's densest encoding (sizes the output buffer of
    small files). after_call(state) runs after every kernel call (e.g. to emit a notice once).
    incomplete(state) -> message when the file ends in the middle of a multi-record unit (a packet),
    else None.
    On damage the events before it are yielded, then ``reader.report_damage`` names the byte offset.
    """
    remaining = max(file_size(reader.path) - start, 0)
    chunk = max(1, min(reader.chunk_events, int(remaining * max_events_per_byte) + 1))
    block_bytes = max(1, min(block_bytes, remaining))
    out = np.empty(chunk, dtype=DVS_EVENT_DTYPE)
    words = out.view(np.int64).reshape(-1, 2)
    n = 0
    carry_room = 64
    buf = np.empty(block_bytes + carry_room, dtype=np.uint8)
    kept = 0
    base = start
    with open(reader.path, "rb") as f:
        f.seek(start)
        while True:
            got = f.readinto(memoryview(buf)[kept : kept + block_bytes])
            end_of_file = got == 0
            filled = kept + got
            view = buf[:filled]
            pos = 0
            while True:
                pos, n, status = kernel(view, pos, words, n, state, *params)
                if after_call is not None:
                    after_call(state)
                if status == OUT_FULL:
                    yield out
                    out = np.empty(chunk, dtype=DVS_EVENT_DTYPE)
                    words = out.view(np.int64).reshape(-1, 2)
                    n = 0
                    continue
                if status >= FIRST_DAMAGE:
                    if n:
                        yield out[:n]
                    reader.report_damage(base + pos, describe(status, state))
                    return
                break
            rest = filled - pos
            if end_of_file:
                if n:
                    yield out[:n]
                if rest:
                    reader.report_damage(base + pos, f"{truncated} ({rest} trailing bytes)")
                elif incomplete is not None and (message := incomplete(state)):
                    reader.report_damage(base + pos, message)
                return
            if rest > carry_room:
                raise AssertionError(f"kernel left {rest} unconsumed bytes (> {carry_room})")
            buf[:rest] = buf[pos:filled]
            kept = rest
            base += pos


class BlockReader(RecordingReader):
    """A RecordingReader whose events come from one numba kernel run over fixed-size byte blocks.

    ``block_bytes`` (class default BLOCK_BYTES) may be lowered per instance, e.g. to test that decoder
    state carries correctly across block boundaries.
    """

    block_bytes: int = BLOCK_BYTES

    def _decode(self, start: int, kernel: Callable, state: np.ndarray, params: tuple,
                describe: Callable[[int, np.ndarray], str], truncated: str,
                max_events_per_byte: float = 1.0,
                after_call: Callable[[np.ndarray], None] | None = None,
                incomplete: Callable[[np.ndarray], str | None] | None = None) -> Iterator[np.ndarray]:
        """decode_blocks over this reader's file with its block size."""
        return decode_blocks(self, start, kernel, state, params, describe, truncated,
                             block_bytes=self.block_bytes, max_events_per_byte=max_events_per_byte,
                             after_call=after_call, incomplete=incomplete)

    def warn_dropped(self, count: int, why: str) -> None:
        """Say once that ``count`` events were dropped (not damage: a documented property of the format)."""
        warnings.warn(f"{self.path}: dropped {count} events {why}", DroppedEventsWarning, stacklevel=4)
