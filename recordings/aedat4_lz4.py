"""Bounds-checked LZ4 frame decoding (numba) used to vet AEDAT 4 packets before dv-processing sees them.

dv-processing 2.0.4 loops forever inside ``getNextEventBatch`` on some corrupted LZ4 packets (one
flipped byte in the compressed data is enough). Every LZ4 packet is therefore run through this decoder
first: every literal run, match offset and length is checked against the input and the output produced
so far, header/block/content checksums (xxHash32) are verified when the frame has them, and only the
first bytes of the output are materialised (the flatbuffer head, whose size prefix and file identifier
the reader compares with what the stream should hold). Only packets that pass go to dv-processing.

Frame layout (LZ4 frame format v1.6): magic 0x184D2204, FLG, BD, [content size u64], [dict id u32],
HC (header checksum), then blocks ``u32 size`` (bit 31 = stored uncompressed; 0 = end mark) + data
[+ u32 block checksum], then [u32 content checksum].
"""
from __future__ import annotations

import numpy as np
from numba import njit

LZ4_MAGIC = 0x184D2204
#: Error codes returned (negated) by the kernels.
ERR_HEADER, ERR_CHECKSUM, ERR_BLOCK, ERR_TRUNCATED = 1, 2, 3, 4
ERROR_TEXT = {
    ERR_HEADER: "bad LZ4 frame header",
    ERR_CHECKSUM: "LZ4 checksum mismatch",
    ERR_BLOCK: "malformed LZ4 block",
    ERR_TRUNCATED: "LZ4 frame cut short",
}

_P1, _P2, _P3 = np.uint64(2654435761), np.uint64(2246822519), np.uint64(3266489917)
_P4, _P5 = np.uint64(668265263), np.uint64(374761393)
_M32 = np.uint64(0xFFFFFFFF)


@njit(cache=True)
def _rotl(x, r):
    """32-bit rotate left of a uint64 holding a uint32 (r: 1..31)."""
    return ((x << np.uint64(r)) | (x >> np.uint64(32 - r))) & _M32


@njit(cache=True)
def _u32(buf, i):
    """Little-endian uint32 at ``buf[i]`` as uint64."""
    return np.uint64(buf[i]) | (np.uint64(buf[i + 1]) << np.uint64(8)) | (
        np.uint64(buf[i + 2]) << np.uint64(16)) | (np.uint64(buf[i + 3]) << np.uint64(24))


@njit(cache=True)
def _lane(v, lane):
    return (_rotl((v + lane * _P2) & _M32, 13) * _P1) & _M32


@njit(cache=True)
def xxh32(buf, start, length):
    """xxHash32 (seed 0) of ``buf[start:start+length]`` (uint8 array) as a uint64."""
    i = start
    end = start + length
    if length >= 16:
        v1 = (_P1 + _P2) & _M32
        v2 = _P2
        v3 = np.uint64(0)
        v4 = (np.uint64(1 << 32) - _P1) & _M32
        while i + 16 <= end:
            v1 = _lane(v1, _u32(buf, i))
            v2 = _lane(v2, _u32(buf, i + 4))
            v3 = _lane(v3, _u32(buf, i + 8))
            v4 = _lane(v4, _u32(buf, i + 12))
            i += 16
        h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _M32
    else:
        h = _P5
    h = (h + np.uint64(length)) & _M32
    while i + 4 <= end:
        h = (_rotl((h + _u32(buf, i) * _P3) & _M32, 17) * _P4) & _M32
        i += 4
    while i < end:
        h = (_rotl((h + np.uint64(buf[i]) * _P5) & _M32, 11) * _P1) & _M32
        i += 1
    h ^= h >> np.uint64(15)
    h = (h * _P2) & _M32
    h ^= h >> np.uint64(13)
    h = (h * _P3) & _M32
    h ^= h >> np.uint64(16)
    return h


@njit(cache=True)
def _frame_header(src):
    """(data start, flags, max block size) or (-error, 0, 0)."""
    n = src.shape[0]
    if n < 7 or _u32(src, 0) != LZ4_MAGIC:
        return -ERR_HEADER, 0, 0
    flg = src[4]
    bd = src[5]
    if (flg >> 6) != 1 or (flg & 0x02) or (bd & 0x8F) or ((bd >> 4) & 7) < 4:
        return -ERR_HEADER, 0, 0
    pos = 6
    if flg & 0x08:
        pos += 8
    if flg & 0x01:
        pos += 4
    if pos + 1 > n:
        return -ERR_TRUNCATED, 0, 0
    if ((xxh32(src, 4, pos - 4) >> np.uint64(8)) & np.uint64(0xFF)) != src[pos]:
        return -ERR_CHECKSUM, 0, 0
    return pos + 1, flg, 1 << (8 + 2 * ((bd >> 4) & 7))


#: Most bytes one compressed LZ4 byte can decode to (a match-length extension byte adds 255).
MAX_EXPANSION = 255


@njit(cache=True)
def lz4_frame_capacity(src):
    """Upper bound on the decoded size of an LZ4 frame (uint8 array), or a negative error code: per block
    its stored size, or for a compressed block ``min(block maximum, 255 * size + 64)`` (the block's
    bytes decide the bound, not a length field)."""
    pos, flg, block_max = _frame_header(src)
    if pos < 0:
        return pos
    n = src.shape[0]
    capacity = 0
    while True:
        if pos + 4 > n:
            return -ERR_TRUNCATED
        raw = _u32(src, pos)
        pos += 4
        if raw == 0:
            break
        size = np.int64(raw & np.uint64(0x7FFFFFFF))
        if size > block_max:
            return -ERR_BLOCK
        if (raw >> np.uint64(31)) != 0:
            capacity += size
        else:
            capacity += min(block_max, MAX_EXPANSION * size + 64)
        pos += size + (4 if flg & 0x10 else 0)
    return capacity


@njit(cache=True, inline="never")
def _copy_block(dst, at, src, start, count):
    """dst[at:at + count] = src[start:start + count] for long, non-overlapping runs (a memory copy)."""
    dst[at:at + count] = src[start:start + count]


@njit(cache=True)
def lz4_frame_decode(src, out):
    """Decode an LZ4 frame (uint8 array) keeping the first ``len(out)`` decoded bytes in ``out``.

    Returns the full decoded length (which may exceed ``len(out)``: the rest is validated - every
    literal run, match offset and length checked against the input and the bytes produced so far - but
    not stored), or a negative error code (ERR_*). A frame with a content checksum needs ``out`` of at
    least ``lz4_frame_capacity`` bytes. Never reads or writes out of bounds.
    """
    pos, flg, block_max = _frame_header(src)
    if pos < 0:
        return pos
    n = src.shape[0]
    cap = out.shape[0]
    op = 0
    while True:
        if pos + 4 > n:
            return -ERR_TRUNCATED
        raw = _u32(src, pos)
        pos += 4
        if raw == 0:
            break
        stored = (raw >> np.uint64(31)) != 0
        size = np.int64(raw & np.uint64(0x7FFFFFFF))
        if size > block_max:
            return -ERR_BLOCK
        end = pos + size
        if end > n:
            return -ERR_TRUNCATED
        if flg & 0x10:
            if end + 4 > n:
                return -ERR_TRUNCATED
            if xxh32(src, pos, size) != _u32(src, end):
                return -ERR_CHECKSUM
        block_start = op
        if stored:
            k = min(size, max(cap - op, 0))
            if k:
                _copy_block(out, op, src, pos, k)
            op += size
        else:
            ip = pos
            while True:
                if ip >= end:
                    return -ERR_BLOCK
                token = src[ip]
                ip += 1
                lit = np.int64(token >> 4)
                if lit == 15:
                    while True:
                        if ip >= end:
                            return -ERR_BLOCK
                        b = src[ip]
                        ip += 1
                        lit += b
                        if b != 255:
                            break
                if ip + lit > end:
                    return -ERR_BLOCK
                k = min(lit, max(cap - op, 0))
                if k > 32:
                    _copy_block(out, op, src, ip, k)
                else:
                    for j in range(k):
                        out[op + j] = src[ip + j]
                ip += lit
                op += lit
                if ip == end:
                    break
                if ip + 2 > end:
                    return -ERR_BLOCK
                offset = np.int64(src[ip]) | (np.int64(src[ip + 1]) << 8)
                ip += 2
                low = block_start if flg & 0x20 else 0
                if offset == 0 or op - offset < low:
                    return -ERR_BLOCK
                length = np.int64(token & 15)
                if length == 15:
                    while True:
                        if ip >= end:
                            return -ERR_BLOCK
                        b = src[ip]
                        ip += 1
                        length += b
                        if b != 255:
                            break
                length += 4
                back = op - offset
                k = min(length, max(cap - op, 0))
                if offset >= k and k > 32:  # long and not overlapping: one block copy
                    _copy_block(out, op, out, back, k)
                else:  # short, or overlapping (a repeated pattern): byte by byte, in order
                    for j in range(k):
                        out[op + j] = out[back + j]
                op += length
                if op - block_start > block_max:
                    return -ERR_BLOCK
            if op - block_start > block_max:
                return -ERR_BLOCK
        pos = end + (4 if flg & 0x10 else 0)
    if flg & 0x04:
        if pos + 4 > n:
            return -ERR_TRUNCATED
        if op > cap or xxh32(out, 0, op) != _u32(src, pos):
            return -ERR_CHECKSUM
        pos += 4
    if pos != n:
        return -ERR_BLOCK
    return op


#: Decoded bytes kept when only vetting a frame (enough for a packet's flatbuffer head).
HEAD_BYTES = 256


#: Largest decoded frame :func:`lz4_decode` allocates by default (bytes); larger frames are refused.
MAX_DECODED_BYTES = 1 << 28


def lz4_decode(data: bytes | np.ndarray, keep: int | None = None,
               max_bytes: int = MAX_DECODED_BYTES) -> tuple[np.ndarray | None, int, str]:
    """Decode and validate one complete LZ4 frame.

    Returns (first decoded bytes as a uint8 array, full decoded length, "") or (None, -1, reason).
    ``keep=None`` keeps everything; otherwise at least ``keep`` leading bytes are kept (everything
    when the frame carries a content checksum, which needs the whole output). A frame whose output
    would have to be held and may exceed ``max_bytes`` is refused before anything is allocated.
    """
    src = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    capacity = lz4_frame_capacity(src)
    if capacity < 0:
        return None, -1, ERROR_TEXT[-capacity]
    if keep is not None and not (len(src) > 4 and src[4] & 0x04):
        capacity = min(capacity, keep)
    if capacity > max_bytes:
        return None, -1, f"LZ4 frame may decode to {capacity} bytes, more than the {max_bytes} allowed"
    out = np.empty(capacity, dtype=np.uint8)
    length = lz4_frame_decode(src, out)
    if length < 0:
        return None, -1, ERROR_TEXT[-length]
    return out[:min(length, capacity)], length, ""
