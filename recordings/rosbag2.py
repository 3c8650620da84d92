"""ROS 2 bags (rosbag2, sqlite3 ``.db3`` or MCAP ``.mcap`` storage) holding event camera messages.

``rosbags`` opens the container (give it the ``.db3`` / ``.mcap`` file of the bag); the messages' CDR
bytes are decoded here, the events in numba. The first topic (by name) of one of these types is read:

* ``dvs_msgs/msg/EventArray`` (rpg_dvs_ros): header, height, width, ``Event[] events`` with
  ``uint16 x, uint16 y, builtin_interfaces/Time ts, bool polarity``. CDR aligns each field from the
  stream start, so the records are 14 or 16 bytes apart (the kernel follows the alignment per field).
  Event time = ts (ns) // 1000 µs.
* ``event_camera_msgs/msg/EventPacket`` (ros-event-camera): header, height, width, ``uint64 seq``,
  ``uint64 time_base``, ``string encoding``, ``bool is_bigendian``, ``uint8[] events``. Encodings:

  - ``mono``: 64 bits per event, bit 63 polarity (1 = ON), bits 48-62 y, 32-47 x, 0-31 dt (ns);
    event time = (time_base + dt) // 1000 µs (ROS time base).
  - ``evt3``: Prophesee EVT 3.0 words as the camera sent them (decoded with recordings.evt3's
    kernel, state carried from one message to the next); event time is the camera's µs clock.

  Other encodings (``libcaer_cmp``, ``libcaer``, ``trigger``) are refused with a RecordingError naming
  the encoding; their layouts are not documented well enough to decode without the vendor's code.

Only little-endian CDR (encapsulation ``00 01``) is read: ROS 2 writes it on every common platform.
A message that ends inside a field, claims more events than its bytes hold, or has coordinates
outside its width x height is damage: the events before it are kept and the reader warns (or raises
with ``strict=True``), naming the message index and its bag time.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterator

import numpy as np
from numba import njit

from pipeline.core.events import DVS_EVENT_DTYPE
from recordings._blocks import FIRST_DAMAGE, NEED_BYTES, OUT_FULL, pack_event
from recordings.base import RecordingError, RecordingHeader, RecordingReader
from recordings.evt3 import S_TIME_HIGH, S_Y, STATE_SIZE, decode_evt3

EVENT_ARRAY = "dvs_msgs/msg/EventArray"
EVENT_PACKET = "event_camera_msgs/msg/EventPacket"
MESSAGE_TYPES = (EVENT_ARRAY, EVENT_PACKET)
ENCODINGS = ("mono", "evt3")
SQLITE_MAGIC = b"SQLite format 3\x00"
MCAP_MAGIC = b"\x89MCAP0\r\n"

#: Kernel status codes (besides the ok status 0).
TRUNCATED = FIRST_DAMAGE
OUTSIDE = FIRST_DAMAGE + 1


class _Truncated(Exception):
    """A CDR message ends inside a field."""


def _cdr_fields(raw: bytes) -> tuple[int, int, int]:
    """(offset after width, height, width) of a CDR message that starts with std_msgs/Header, height,
    width. Offsets count from byte 0 of ``raw``; CDR alignment counts from byte 4 (after encapsulation)."""
    if len(raw) < 4 or raw[0:2] != b"\x00\x01":
        raise _Truncated(f"encapsulation {bytes(raw[:2]).hex()} is not little-endian CDR (0001)")
    try:
        name_len = struct.unpack_from("<I", raw, 4 + 8)[0]
        pos = _align(8 + 4 + name_len, 4)
        height, width = struct.unpack_from("<II", raw, 4 + pos)
    except struct.error:
        raise _Truncated("message ends inside its header") from None
    return 4 + pos + 8, height, width


def _align(pos: int, size: int) -> int:
    return (pos + size - 1) & ~(size - 1)


def _packet_fields(raw: bytes, pos: int) -> tuple[int, str, bool, int, int]:
    """EventPacket after width: (time_base ns, encoding, is_bigendian, events offset, events length)."""
    try:
        rel = _align(pos - 4, 8)
        _seq, time_base = struct.unpack_from("<QQ", raw, 4 + rel)
        rel += 16
        length = struct.unpack_from("<I", raw, 4 + rel)[0]
        encoding = bytes(raw[4 + rel + 4:4 + rel + 4 + length]).rstrip(b"\0").decode("ascii", "replace")
        rel += 4 + length
        bigendian = bool(raw[4 + rel])
        rel = _align(rel + 1, 4)
        count = struct.unpack_from("<I", raw, 4 + rel)[0]
    except (struct.error, IndexError):
        raise _Truncated("message ends inside its fields") from None
    start = 4 + rel + 4
    if start + count > len(raw):
        raise _Truncated(f"claims {count} event bytes, {len(raw) - start} are there")
    return time_base, encoding, bigendian, start, count


@njit(cache=True)
def decode_event_array(buf, pos, out, width, height):
    """dvs_msgs Event records of a CDR message (buf uint8, the whole message; pos: the sequence length
    field) into ``out`` (int64 (cap, 2) view of DVS_EVENT_DTYPE). Returns (events, status)."""
    end = buf.shape[0]
    if pos + 4 > end:
        return 0, TRUNCATED
    count = np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8) | (np.int64(buf[pos + 2]) << 16) | (
        np.int64(buf[pos + 3]) << 24)
    rel = pos  # past the count (pos + 4), relative to the alignment origin (byte 4)
    for i in range(count):
        if i >= out.shape[0]:
            return i, TRUNCATED
        rel = (rel + 1) & ~1
        if 4 + rel + 4 > end:
            return i, TRUNCATED
        p = 4 + rel
        x = np.int64(buf[p]) | (np.int64(buf[p + 1]) << 8)
        y = np.int64(buf[p + 2]) | (np.int64(buf[p + 3]) << 8)
        rel = (rel + 4 + 3) & ~3
        if 4 + rel + 9 > end:
            return i, TRUNCATED
        p = 4 + rel
        sec = np.int64(np.int32(np.int64(buf[p]) | (np.int64(buf[p + 1]) << 8) | (np.int64(buf[p + 2]) << 16) | (
            np.int64(buf[p + 3]) << 24)))
        nsec = np.int64(buf[p + 4]) | (np.int64(buf[p + 5]) << 8) | (np.int64(buf[p + 6]) << 16) | (
            np.int64(buf[p + 7]) << 24)
        polarity = buf[p + 8]
        rel += 9
        if (width > 0 and x >= width) or (height > 0 and y >= height):
            return i, OUTSIDE
        pack_event(out, i, sec * 1_000_000 + nsec // 1000, x, y, 1 if polarity else 0)
    return count, 0


@njit(cache=True)
def decode_mono(buf, bigendian, time_base_ns, out, width, height):
    """``mono`` EventPacket bytes (8 per event) into ``out``; returns (events, status)."""
    count = buf.shape[0] // 8
    for i in range(count):
        word = np.uint64(0)
        for b in range(8):
            byte = np.uint64(buf[8 * i + (7 - b if bigendian else b)])
            word |= byte << np.uint64(8 * b)
        dt = np.int64(word & np.uint64(0xFFFFFFFF))
        x = np.int64((word >> np.uint64(32)) & np.uint64(0xFFFF))
        y = np.int64((word >> np.uint64(48)) & np.uint64(0x7FFF))
        p = np.int64(word >> np.uint64(63))
        if (width > 0 and x >= width) or (height > 0 and y >= height):
            return i, OUTSIDE
        pack_event(out, i, (time_base_ns + dt) // 1000, x, y, p)
    return count, 0


class Reader(RecordingReader):
    """A rosbag2 storage file with dvs_msgs/EventArray or event_camera_msgs/EventPacket messages."""

    format_name = "rosbag2"
    extensions = (".db3", ".mcap")

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        return head.startswith(MCAP_MAGIC) or (head.startswith(SQLITE_MAGIC) and path.suffix.lower() == ".db3")

    def _open(self):
        from rosbags.rosbag2 import Reader as BagReader

        try:
            bag = BagReader(self.path)
            bag.open()
        except Exception as error:  # rosbags raises ReaderError, sqlite/mcap errors, KeyError on bad metadata
            raise RecordingError(self.path, f"not a readable rosbag2 storage file ({error})") from None
        return bag

    def _read_header(self) -> RecordingHeader:
        bag = self._open()
        try:
            topics = {c.topic: c.msgtype for c in bag.connections}
            events = sorted(t for t, msgtype in topics.items() if msgtype in MESSAGE_TYPES)
            if not events:
                listed = ", ".join(f"{t} ({m})" for t, m in sorted(topics.items())) or "none"
                raise RecordingError(self.path, f"no {' or '.join(MESSAGE_TYPES)} topic (topics: {listed})")
            self.topic, self.msgtype = events[0], topics[events[0]]
            self._connections = [c for c in bag.connections if c.topic == self.topic]
            count = sum(c.msgcount for c in self._connections)
            width = height = 0
            extra = {"topic": self.topic, "message_type": self.msgtype, "messages": count}
            if len(events) > 1:
                extra["other_event_topics"] = events[1:]
            for _conn, _t, raw in bag.messages(self._connections):
                try:
                    pos, height, width = _cdr_fields(raw)
                    if self.msgtype == EVENT_PACKET:
                        extra["encoding"] = _packet_fields(raw, pos)[1]
                except _Truncated as error:
                    raise RecordingError(self.path, f"first {self.msgtype} message on {self.topic}: {error}") from None
                break
        finally:
            bag.close()
        if extra.get("encoding", "mono") not in ENCODINGS:
            raise RecordingError(self.path, f"{self.topic}: event encoding {extra['encoding']!r} is not supported "
                                            f"(supported: {', '.join(ENCODINGS)})")
        return RecordingHeader(self.format_name, int(width), int(height), extra)

    def _decode(self, raw: bytes, evt3_state: np.ndarray) -> np.ndarray:
        """The events of one message (DVS_EVENT_DTYPE); raises _Truncated / RecordingError on damage."""
        width, height = self.header.width, self.header.height
        pos, _h, _w = _cdr_fields(raw)
        buf = np.frombuffer(raw, dtype=np.uint8)
        if self.msgtype == EVENT_ARRAY:
            capacity = max(0, (len(raw) - pos - 4) // 13 + 1)
            out = np.empty(capacity, dtype=DVS_EVENT_DTYPE)
            n, status = decode_event_array(buf, pos, out.view(np.int64).reshape(-1, 2), width, height)
        else:
            time_base, encoding, bigendian, start, length = _packet_fields(raw, pos)
            if encoding not in ENCODINGS:
                raise _Truncated(f"event encoding {encoding!r} is not supported (supported: {', '.join(ENCODINGS)})")
            events = buf[start:start + length]
            if encoding == "mono":
                out = np.empty(length // 8, dtype=DVS_EVENT_DTYPE)
                n, status = decode_mono(events, bigendian, time_base, out.view(np.int64).reshape(-1, 2), width, height)
                if length % 8 and not status:
                    status = TRUNCATED
            else:
                return self._decode_evt3(events, evt3_state)
        if status == TRUNCATED:
            raise _Truncated("message ends inside an event (or claims more events than it holds)")
        if status == OUTSIDE:
            raise _Truncated(f"event {n} is outside the {width}x{height} sensor")
        return out[:n]

    def _decode_evt3(self, events: np.ndarray, state: np.ndarray) -> np.ndarray:
        parts = []
        pos = 0
        while True:
            out = np.empty(max(1, min(self.chunk_events, 6 * len(events) + 12)), dtype=DVS_EVENT_DTYPE)
            pos, n, status = decode_evt3(events, pos, out.view(np.int64).reshape(-1, 2), 0, state,
                                         self.header.width, self.header.height)
            parts.append(out[:n])
            if status == NEED_BYTES:
                break
            if status != OUT_FULL:
                raise _Truncated(f"EVT 3.0 word at byte {pos} of the packet is damaged (status {status})")
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _chunks(self) -> Iterator[np.ndarray]:
        evt3_state = np.zeros(STATE_SIZE, dtype=np.int64)
        evt3_state[S_Y] = -1
        evt3_state[S_TIME_HIGH] = -1
        bag = self._open()
        try:
            for index, (_conn, t_ns, raw) in enumerate(bag.messages(self._connections)):
                try:
                    events = self._decode(raw, evt3_state)
                except _Truncated as error:
                    self.report_damage(None, f"{self.msgtype} message {index} on {self.topic} (bag time {t_ns} ns): "
                                             f"{error}")
                    return
                for start in range(0, len(events), self.chunk_events):
                    yield events[start:start + self.chunk_events]
        finally:
            bag.close()
