"""spikeloop's wire format for events, spikes, commands and telemetry (version 1).

One sample (a Zenoh payload, or any datagram) is a 48-byte little-endian header followed by the payload::

    offset size type   field
         0    4 bytes  magic        b"SPKL"
         4    1 u8     version      1
         5    1 u8     kind         1 dvs, 2 spikes, 3 command, 4 telemetry
         6    2 u16    flags        bit 0 END: the publisher's last sample (payload empty); other bits 0
         8    2 u16    width        dvs: sensor width in pixels (0 = unknown); else 0
        10    2 u16    height       dvs: sensor height in pixels (0 = unknown); else 0
        12    4 u32    channels     spikes: channel count (0 = unknown); command: values per command
        16    8 i64    t_end_us     sensor time (µs) up to which this sample is complete
        24    8 u64    sequence     per-stream counter, 0, 1, 2, ... (gaps and reorders are detected)
        32    4 u32    stream_id    random per publisher run (a restart is told apart from a reorder)
        36    4 u32    payload_len  payload bytes after the header
        40    8 i64    sent_ns      publisher's wall clock (time.time_ns(), ns since the UNIX epoch) at send
        48    -        payload

Payloads are the raw bytes of the pipeline's own arrays, so encoding and decoding copy memory only:

* dvs: DVS_EVENT_DTYPE records (16 B: timestamp i64 µs, x i16, y i16, polarity i8, 3 pad), time-ordered.
* spikes: SPIKE_DTYPE records (12 B: timestamp i64 µs, channel i32), time-ordered.
* command: ``channels`` float64 values (one command vector, e.g. wheel speeds in rad/s), sensor time
  ``t_end_us`` = the sensor time the command answers.
* telemetry: a UTF-8 JSON object (a loop report).

Decoding trusts nothing: every header field is checked (magic, version, kind, flags, payload length
against the bytes actually received and against :data:`MAX_PAYLOAD_BYTES`, the only allocation a
peer controls), then the payload (events sorted and at or before ``t_end_us``, polarity 0/1, x/y inside
the resolution when it is known, channels inside the count, finite commands, a JSON object). A bad
sample raises :class:`WireError` with a short ``reason`` that receivers count by.

:class:`SequenceTracker` follows the sequence numbers per (key, stream): a jump forward counts the
missing samples as ``gaps``, an old number counts as ``reordered`` (the sample is refused, so packets
stay time-ordered), a new stream id on a key counts as a ``restart``. It remembers at most
:data:`MAX_STREAMS` streams (the least recently seen is forgotten), so a peer inventing stream ids
cannot grow it.
"""
from __future__ import annotations

import json
import struct
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from numba import njit

from pipeline.core.events import DVS_EVENT_DTYPE, SPIKE_DTYPE

MAGIC = b"SPKL"
VERSION = 1
HEADER = struct.Struct("<4sBBHHHIqQIIq")
HEADER_BYTES = HEADER.size  # 48

KIND_DVS, KIND_SPIKES, KIND_COMMAND, KIND_TELEMETRY = 1, 2, 3, 4
KIND_NAMES = {KIND_DVS: "dvs", KIND_SPIKES: "spikes", KIND_COMMAND: "command", KIND_TELEMETRY: "telemetry"}
KIND_CODES = {name: code for code, name in KIND_NAMES.items()}
FLAG_END = 1

#: Largest payload accepted (64 MiB = 4 Mi DVS events); a sample claiming more is refused unread.
MAX_PAYLOAD_BYTES = 64 << 20
#: Largest command vector (values) and telemetry document (bytes) accepted.
MAX_COMMAND_VALUES = 4096
MAX_TELEMETRY_BYTES = 1 << 20
#: Streams a SequenceTracker remembers.
MAX_STREAMS = 1024

_ITEMSIZE = {KIND_DVS: DVS_EVENT_DTYPE.itemsize, KIND_SPIKES: SPIKE_DTYPE.itemsize, KIND_COMMAND: 8,
             KIND_TELEMETRY: 1}


class WireError(ValueError):
    """A sample that is not valid spikeloop wire format; ``reason`` is a short tag receivers count by."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(f"{reason}: {message}")


@dataclass(frozen=True)
class Header:
    """A decoded header (field meanings and units: see the module docstring)."""

    kind: int
    flags: int
    width: int
    height: int
    channels: int
    t_end_us: int
    sequence: int
    stream_id: int
    payload_len: int
    sent_ns: int

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    @property
    def end(self) -> bool:
        return bool(self.flags & FLAG_END)


@dataclass(frozen=True)
class Message:
    """A decoded sample: header and payload (events array, float64 (channels,) command, dict, or None
    for an END marker)."""

    header: Header
    payload: object


def encode(kind: int, payload: bytes | bytearray | memoryview, *, t_end_us: int, sequence: int, stream_id: int,
           sent_ns: int, width: int = 0, height: int = 0, channels: int = 0, flags: int = 0) -> bytes:
    """One sample: the header followed by ``payload`` (already in the kind's layout); one copy."""
    header = HEADER.pack(MAGIC, VERSION, kind, flags, width, height, channels, t_end_us, sequence, stream_id,
                         len(payload), sent_ns)
    return b"".join((header, payload))


def encode_events(events: np.ndarray, kind: int, **header) -> bytes:
    """A dvs or spikes sample from an event array (DVS_EVENT_DTYPE or SPIKE_DTYPE, shape (n,))."""
    dtype = DVS_EVENT_DTYPE if kind == KIND_DVS else SPIKE_DTYPE
    if events.dtype != dtype:
        raise TypeError(f"{KIND_NAMES[kind]} payload must be {dtype}, got {events.dtype}")
    return encode(kind, np.ascontiguousarray(events).data.cast("B"), **header)


def encode_command(values, **header) -> bytes:
    """A command sample from a 1-D float vector (shape (channels,), e.g. rad/s)."""
    array = np.ascontiguousarray(values, dtype="<f8").reshape(-1)
    return encode(KIND_COMMAND, array.data.cast("B"), channels=len(array), **header)


def encode_telemetry(report: dict, **header) -> bytes:
    """A telemetry sample from a JSON-ready dict (a loop report)."""
    return encode(KIND_TELEMETRY, json.dumps(report, separators=(",", ":")).encode(), **header)


def encode_end(kind: int, **header) -> bytes:
    """The END marker a publisher sends last (empty payload)."""
    return encode(kind, b"", flags=FLAG_END, **header)


def decode_header(data: bytes | memoryview) -> Header:
    """Check and decode the header of a received sample (``len(data)`` = bytes actually received)."""
    if len(data) < HEADER_BYTES:
        raise WireError("short", f"{len(data)} bytes, a header needs {HEADER_BYTES}")
    (magic, version, kind, flags, width, height, channels, t_end_us, sequence, stream_id, payload_len,
     sent_ns) = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireError("magic", f"starts with {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise WireError("version", f"wire version {version}, this build reads {VERSION}")
    if kind not in KIND_NAMES:
        raise WireError("kind", f"kind {kind} (known: {KIND_NAMES})")
    if flags & ~FLAG_END:
        raise WireError("flags", f"unknown flag bits 0x{flags:04x}")
    if payload_len > MAX_PAYLOAD_BYTES:
        raise WireError("too_large", f"payload of {payload_len} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")
    if payload_len != len(data) - HEADER_BYTES:
        raise WireError("length", f"header says {payload_len} payload bytes, {len(data) - HEADER_BYTES} arrived")
    if payload_len % _ITEMSIZE[kind]:
        raise WireError("length", f"{payload_len} bytes is not a whole number of {KIND_NAMES[kind]} records")
    if flags & FLAG_END and payload_len:
        raise WireError("flags", "END marker with a payload")
    if kind == KIND_COMMAND and not flags & FLAG_END and payload_len != 8 * channels:
        raise WireError("length", f"command of {channels} values needs {8 * channels} bytes, got {payload_len}")
    if kind == KIND_COMMAND and channels > MAX_COMMAND_VALUES:
        raise WireError("too_large", f"{channels} command values exceeds {MAX_COMMAND_VALUES}")
    if kind == KIND_TELEMETRY and payload_len > MAX_TELEMETRY_BYTES:
        raise WireError("too_large", f"telemetry of {payload_len} bytes exceeds {MAX_TELEMETRY_BYTES}")
    if kind != KIND_DVS and (width or height):
        raise WireError("header", f"{KIND_NAMES[kind]} sample with a resolution {width}x{height}")
    return Header(kind, flags, width, height, channels, t_end_us, sequence, stream_id, payload_len, sent_ns)


@njit(cache=True)
def _check_dvs(words, width, height, t_end_us):
    """0 if DVS records (int64 view, shape (n, 2)) are sorted, <= t_end_us, in range; else 1 + index."""
    previous = np.int64(-(1 << 62))
    for i in range(words.shape[0]):
        t = words[i, 0]
        packed = words[i, 1]
        x = np.int16(packed & 0xFFFF)
        y = np.int16((packed >> 16) & 0xFFFF)
        p = (packed >> 32) & 0xFF
        if t < previous or t > t_end_us or x < 0 or y < 0 or p > 1:
            return i + 1
        if (width > 0 and x >= width) or (height > 0 and y >= height):
            return i + 1
        previous = t
    return 0


@njit(cache=True)
def _check_spikes(timestamps, channels, count, t_end_us):
    """0 if spikes are sorted, <= t_end_us, channel in [0, count) (count 0 = unknown); else 1 + index."""
    previous = np.int64(-(1 << 62))
    for i in range(timestamps.shape[0]):
        t = timestamps[i]
        c = channels[i]
        if t < previous or t > t_end_us or c < 0 or (count > 0 and c >= count):
            return i + 1
        previous = t
    return 0


def decode(data: bytes) -> Message:
    """Check and decode one received sample; raises :class:`WireError`. Event and command arrays are
    read-only views of ``data`` (no copy, no allocation a peer controls)."""
    header = decode_header(data)
    body = memoryview(data)[HEADER_BYTES:]
    if header.end:
        return Message(header, None)
    if header.kind == KIND_DVS:
        events = np.frombuffer(body, dtype=DVS_EVENT_DTYPE)
        bad = _check_dvs(events.view(np.int64).reshape(-1, 2), header.width, header.height, header.t_end_us)
        if bad:
            e = events[bad - 1]
            raise WireError("events", f"dvs event {bad - 1} (t={e['timestamp']} µs, x={e['x']}, y={e['y']}, "
                                      f"p={e['polarity']}) is out of order, after t_end, or outside "
                                      f"{header.width}x{header.height}")
        return Message(header, events)
    if header.kind == KIND_SPIKES:
        spikes = np.frombuffer(body, dtype=SPIKE_DTYPE)
        bad = _check_spikes(spikes["timestamp"], spikes["channel"], header.channels, header.t_end_us)
        if bad:
            s = spikes[bad - 1]
            raise WireError("events", f"spike {bad - 1} (t={s['timestamp']} µs, channel {s['channel']}) is out of "
                                      f"order, after t_end, or outside {header.channels} channels")
        return Message(header, spikes)
    if header.kind == KIND_COMMAND:
        values = np.frombuffer(body, dtype="<f8")
        if not np.isfinite(values).all():
            raise WireError("command", "command holds NaN or infinity")
        return Message(header, values)
    try:
        report = json.loads(bytes(body).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise WireError("telemetry", f"not UTF-8 JSON ({error})") from None
    if not isinstance(report, dict):
        raise WireError("telemetry", f"JSON {type(report).__name__}, expected an object")
    return Message(header, report)


def warm() -> None:
    """Compile (or load from cache) the numba checks by decoding one sample of each event kind, so the
    first real sample is not delayed by compilation."""
    fields = dict(t_end_us=0, sequence=0, stream_id=0, sent_ns=0)
    for data in (encode_events(np.zeros(1, DVS_EVENT_DTYPE), KIND_DVS, width=1, height=1, **fields),
                 encode_events(np.zeros(1, SPIKE_DTYPE), KIND_SPIKES, channels=1, **fields)):
        decode(data)  # bytes, as samples arrive: the read-only array specialisations
        decode(bytearray(data))


class SequenceTracker:
    """Sequence bookkeeping per (key, stream_id); see the module docstring.

    ``accept(key, header)`` returns False for a sample to refuse (an old sequence number).
    Counters: ``gaps`` (missing samples), ``reordered`` (old or repeated numbers), ``restarts``
    (a new stream on a key already seen), ``ended`` (END markers), ``streams`` (streams remembered).
    """

    def __init__(self, max_streams: int = MAX_STREAMS):
        self.max_streams = int(max_streams)
        self._next: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._keys: OrderedDict[str, int] = OrderedDict()
        self.gaps = self.reordered = self.restarts = self.ended = 0

    @property
    def streams(self) -> int:
        return len(self._next)

    @property
    def open_streams(self) -> int:
        """Streams seen whose END has not arrived (and that are still remembered)."""
        return sum(1 for v in self._next.values() if v >= 0)

    def has_ended(self, key: str, stream_id: int) -> bool:
        """Whether the END marker of ``stream_id`` on ``key`` has been accepted."""
        return self._next.get((key, stream_id)) == -1

    def accept(self, key: str, header: Header) -> bool:
        stream = (key, header.stream_id)
        expected = self._next.get(stream)
        if expected is None:
            if self._keys.get(key, header.stream_id) != header.stream_id:
                self.restarts += 1
            self._keys[key] = header.stream_id
            self._keys.move_to_end(key)
            expected = header.sequence
        elif expected < 0:  # the stream has ended: anything after END is out of order
            self.reordered += 1
            return False
        if header.sequence < expected:
            self.reordered += 1
            return False
        self.gaps += header.sequence - expected
        self._next[stream] = -1 if header.end else header.sequence + 1
        self._next.move_to_end(stream)
        for table in (self._next, self._keys):
            if len(table) > self.max_streams:
                table.popitem(last=False)
        if header.end:
            self.ended += 1
        return True

