"""AEDAT 4 packet payloads (files and TCP streams): bounded decompression, a flatbuffer verifier for the
four packet types and the file data table, and the event decoder.

A payload is a size-prefixed flatbuffer (``uint32 size``, root offset, 4-byte file identifier), LZ4 or
ZSTD compressed when the IOHeader says so. dv-processing reads the flatbuffers without verifying them: a
flipped byte that survives decompression can make it read outside the packet (a segfault) or loop. So
every packet is verified here, completely, before dv-processing may see it:

* ``EVTS``: table field 0 = vector of 16-byte Event structs (int64 timestamp, int16 x, int16 y, uint8
  polarity, 3 pad; byte-identical to DVS_EVENT_DTYPE), which must lie inside the packet.
* ``IMUS`` / ``TRIG`` / ``FTAB``: field 0 = vector of tables (IMU: int64 timestamp + 10 float32;
  Trigger: int64 timestamp + int8 type; FileDataTable entry: five 8-byte fields); every element's
  table, vtable and fields must lie inside the packet.
* ``FRME``: one Frame table (five int64 timestamps, int8 format, int16 sizeX, sizeY, positionX,
  positionY, then the pixel vector); the pixel vector must hold exactly sizeX * sizeY * channels bytes
  (format 0 gray = 1 channel, 16 BGR = 3, 24 BGRA = 4).

Decompression never allocates more than MAX_DECODED_BYTES.
"""
from __future__ import annotations

import struct

import numpy as np
from numba import njit

from pipeline.core.events import DVS_EVENT_DTYPE
from recordings.aedat4_lz4 import HEAD_BYTES, MAX_DECODED_BYTES, lz4_decode

#: Bytes per event in an EVTS packet's elements vector (the flatbuffer Event struct = DVS_EVENT_DTYPE).
EVENT_BYTES = 16
#: Width in bytes of each field of the tables a packet's element vector points to, by file identifier.
ELEMENT_FIELD_BYTES = {
    b"IMUS": np.array([8] + [4] * 10, dtype=np.int64),
    b"TRIG": np.array([8, 1], dtype=np.int64),
    b"FTAB": np.array([8] * 5, dtype=np.int64),
}
#: A packet's root table: field 0 is the offset of the elements vector.
ROOT_FIELD_BYTES = np.array([4], dtype=np.int64)
#: Frame table field widths (bytes): 5 timestamps, format, sizeX, sizeY, positionX, positionY, pixels.
FRAME_FIELD_BYTES = np.array([8, 8, 8, 8, 8, 1, 2, 2, 2, 2, 4], dtype=np.int64)
#: Frame format code -> channels.
FRAME_CHANNELS = {0: 1, 16: 3, 24: 4}


def table_fields(buf: bytes | np.ndarray, table: int) -> tuple[int, tuple[int, ...]]:
    """(table offset, vtable field offsets) of a flatbuffer table; raises ValueError when out of range."""
    if table < 0 or table + 4 > len(buf):
        raise ValueError("table offset outside the header")
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    if vtable < 0 or vtable + 4 > len(buf):
        raise ValueError("vtable offset outside the header")
    vsize = struct.unpack_from("<H", buf, vtable)[0]
    if vsize < 4 or vsize % 2 or vtable + vsize > len(buf):
        raise ValueError("bad vtable size")
    fields = struct.unpack_from(f"<{(vsize - 4) // 2}H", buf, vtable + 4)
    return table, fields


@njit(cache=True, inline="always")
def _u16(b, i):
    return np.int64(b[i]) | (np.int64(b[i + 1]) << 8)


@njit(cache=True, inline="always")
def _u32(b, i):
    return np.int64(b[i]) | (np.int64(b[i + 1]) << 8) | (np.int64(b[i + 2]) << 16) | (np.int64(b[i + 3]) << 24)


@njit(cache=True)
def verify_table(b, table, widths):
    """True when the flatbuffer table at ``table`` of ``b`` (uint8 (n,)) has its vtable inside ``b``, its
    declared size inside ``b`` and every present field of width ``widths[i]`` (bytes; 1 for fields past
    the schema) inside the table."""
    n = b.shape[0]
    if table < 0 or table + 4 > n:
        return False
    soffset = _u32(b, table)
    if soffset >= np.int64(1) << 31:
        soffset -= np.int64(1) << 32
    vtable = table - soffset
    if vtable < 0 or vtable + 4 > n:
        return False
    vsize = _u16(b, vtable)
    tsize = _u16(b, vtable + 2)
    if vsize < 4 or vsize % 2 or vtable + vsize > n or tsize < 4 or table + tsize > n:
        return False
    for k in range((vsize - 4) // 2):
        offset = _u16(b, vtable + 4 + 2 * k)
        width = widths[k] if k < widths.shape[0] else 1
        if offset and (offset < 4 or offset + width > tsize):
            return False
    return True


@njit(cache=True)
def verify_table_vector(b, vector, count, widths):
    """Index of the first element of the vector of tables at ``vector`` (its length word) of ``b`` that
    fails :func:`verify_table`, or -1 when all ``count`` pass."""
    for i in range(count):
        slot = vector + 4 + 4 * i
        if not verify_table(b, slot + _u32(b, slot), widths):
            return i
    return -1


#: _locate_elements results.
LOCATED, BAD_PREFIX, BAD_IDENTIFIER, BAD_ROOT, BEYOND_HEAD = range(5)


@njit(cache=True)
def _locate_elements(fb, length, identifier):
    """(status, offset of the first element in ``fb``, element count) of a size-prefixed packet
    flatbuffer of ``length`` bytes whose first ``len(fb)`` bytes are ``fb`` (uint8); ``identifier`` is
    the expected file identifier as a little-endian uint32. BEYOND_HEAD: the elements vector's length
    word is not inside ``fb`` (outside the packet when ``fb`` is whole)."""
    n = fb.shape[0]
    if length < 12 or n < 12 or _u32(fb, 0) + 4 != length:
        return BAD_PREFIX, 0, 0
    if _u32(fb, 8) != identifier:
        return BAD_IDENTIFIER, 0, 0
    root = 4 + _u32(fb, 4)
    if not verify_table(fb, root, ROOT_FIELD_BYTES):
        return BAD_ROOT, 0, 0
    vtable = root - (_u32(fb, root) - (np.int64(1) << 32) if _u32(fb, root) >= np.int64(1) << 31 else _u32(fb, root))
    if _u16(fb, vtable) < 6 or _u16(fb, vtable + 4) == 0:
        return LOCATED, 0, 0
    at = root + _u16(fb, vtable + 4)
    if at + 4 > n:
        return BEYOND_HEAD, 0, 0
    vector = at + _u32(fb, at)
    if vector + 4 > n:
        return BEYOND_HEAD, 0, 0
    return LOCATED, vector + 4, _u32(fb, vector)


def _field(body: np.ndarray, table: int, fields: tuple[int, ...], index: int, fmt: str, default: int) -> int:
    if index >= len(fields) or not fields[index]:
        return default
    return struct.unpack_from(fmt, body, table + fields[index])[0]


def verify(flatbuffer: np.ndarray, identifier: bytes, length: int | None = None) -> tuple[str, int]:
    """("", element count) when a decoded packet flatbuffer (uint8 (n,), size prefix included) is safe
    to hand to dv-processing, else (reason, -1). See the module docstring for what is checked. An EVTS
    packet needs only its head (``flatbuffer`` may be the first bytes of a ``length``-byte packet: the
    tables and the vector's length word lie there); other types need all ``length`` bytes."""
    reason, count, _ = _verify(flatbuffer, identifier, len(flatbuffer) if length is None else length)
    return reason, count


def _verify(flatbuffer: np.ndarray, identifier: bytes, length: int) -> tuple[str, int, int]:
    """:func:`verify`, plus the byte offset of the first element (0 when none)."""
    if identifier != b"EVTS" and len(flatbuffer) < length:
        return f"{identifier!r} packets are verified whole, got {len(flatbuffer)} of {length} bytes", -1, 0
    status, first, count = _locate_elements(flatbuffer, length, int.from_bytes(identifier, "little"))
    if status == BAD_PREFIX:
        return "packet flatbuffer size prefix does not match its length", -1, 0
    if status == BAD_IDENTIFIER:
        return f"packet flatbuffer is {bytes(flatbuffer[8:12])!r}, expected {identifier!r}", -1, 0
    if identifier == b"FRME":
        try:
            return (*_verify_frame(flatbuffer[4:], struct.unpack_from("<I", flatbuffer, 4)[0]), 0)
        except (ValueError, struct.error) as exc:
            return f"unreadable frame flatbuffer ({exc})", -1, 0
    if status == BAD_ROOT:
        return "packet root table outside the packet", -1, 0
    if status == BEYOND_HEAD:
        if len(flatbuffer) < length:  # a head too short for the tables: verify the whole packet
            return "", -1, 0
        return "packet elements vector outside the packet", -1, 0
    if identifier == b"EVTS":
        if first + EVENT_BYTES * count > length:
            return f"packet claims {count} events, more than its {length} bytes hold", -1, 0
        return "", count, first
    widths = ELEMENT_FIELD_BYTES.get(identifier)
    if widths is None:
        return f"unknown packet type {identifier!r}", -1, 0
    if first + 4 * count > length:
        return f"packet claims {count} elements, more than its {length} bytes hold", -1, 0
    bad = verify_table_vector(flatbuffer, first - 4, count, widths) if count else -1
    if bad >= 0:
        return f"element {bad} of the {identifier.decode()} packet lies outside it", -1, 0
    return "", count, first


def _verify_frame(body: np.ndarray, root: int) -> tuple[str, int]:
    if not verify_table(body, root, FRAME_FIELD_BYTES):
        return "frame table outside the packet", -1
    table, fields = table_fields(body, root)
    channels = FRAME_CHANNELS.get(_field(body, table, fields, 5, "<b", 0) & 0xFF)
    width, height = _field(body, table, fields, 6, "<h", 0), _field(body, table, fields, 7, "<h", 0)
    if channels is None or width < 0 or height < 0:
        return f"frame format or size impossible ({width}x{height})", -1
    pixels = 0
    if len(fields) > 10 and fields[10]:
        at = table + fields[10]
        vector = at + struct.unpack_from("<I", body, at)[0]
        if vector + 4 > len(body):
            return "frame pixel vector outside the packet", -1
        pixels = struct.unpack_from("<I", body, vector)[0]
        if vector + 4 + pixels > len(body):
            return "frame pixel vector runs past the packet", -1
    if pixels != width * height * channels:
        return f"frame holds {pixels} pixel bytes, {width}x{height}x{channels} expected", -1
    return "", 1


def decompress(payload: bytes | bytearray | memoryview, compression: str) -> tuple[np.ndarray | None, str]:
    """The decoded flatbuffer of one packet payload as uint8 (n,), or (None, reason). At most
    MAX_DECODED_BYTES are allocated; ZSTD needs the optional ``backports.zstd`` package."""
    if compression.startswith("LZ4"):
        data, _, reason = lz4_decode(payload)
        return data, reason
    if compression.startswith("ZSTD"):
        return _zstd_decode(payload)
    return np.frombuffer(payload, dtype=np.uint8), ""


def _zstd_decode(payload) -> tuple[np.ndarray | None, str]:
    """ZSTD-decompress one packet payload, at most MAX_DECODED_BYTES (``compression.zstd`` from Python 3.14,
    else the optional ``backports.zstd``)."""
    try:
        from compression.zstd import ZstdDecompressor, ZstdError  # Python >= 3.14
    except ImportError:
        try:
            from backports.zstd import ZstdDecompressor, ZstdError
        except ImportError:
            return None, "ZSTD-compressed packets need the backports.zstd package (pip install backports.zstd)"
    decompressor = ZstdDecompressor()
    try:
        data = decompressor.decompress(bytes(payload), max_length=MAX_DECODED_BYTES + 1)
    except ZstdError as exc:
        return None, f"bad ZSTD frame ({exc})"
    if len(data) > MAX_DECODED_BYTES:
        return None, f"ZSTD frame decodes to more than {MAX_DECODED_BYTES} bytes"
    if not decompressor.eof:
        return None, "ZSTD frame cut short"
    return np.frombuffer(data, dtype=np.uint8), ""


def check_payload(payload: bytes | bytearray | memoryview, compression: str, identifier: bytes) -> tuple[str, int]:
    """Vet one packet payload before dv-processing decodes it: decompress (bounded) and :func:`verify`.
    An LZ4 event packet is validated to its end but only its head is kept (dv-processing decodes the
    events far faster than a second full decode here). Returns ("", element count) or (reason, -1); the
    count is -1 also when an event packet's head was too short to hold it."""
    if identifier == b"EVTS" and compression.startswith("LZ4"):
        head, length, reason = lz4_decode(payload, keep=HEAD_BYTES)
        if head is None:
            return reason, -1
        reason, count = verify(head, identifier, length)
        if reason or count >= 0 or len(head) == length:
            return reason, count
    data, reason = decompress(payload, compression)
    if data is None:
        return reason, -1
    return verify(data, identifier)


def decode_event_packet(payload: bytes | bytearray | memoryview, compression: str) -> tuple[np.ndarray | None, str]:
    """The events of one EVTS packet payload, decoded here without dv-processing: (DVS_EVENT_DTYPE (n,),
    "") or (None, reason). The array views the decoded bytes (writable unless ``payload`` is read-only
    and uncompressed)."""
    data, reason = decompress(payload, compression)
    if data is None:
        return None, reason
    reason, count, first = _verify(data, b"EVTS", len(data))
    if reason:
        return None, reason
    if not count:
        return np.zeros(0, DVS_EVENT_DTYPE), ""
    return np.frombuffer(data, dtype=DVS_EVENT_DTYPE, count=count, offset=first), ""
