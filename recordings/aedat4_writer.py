"""AEDAT 4 writer: DVS events to a file that dv-processing's ``MonoCameraRecording`` reads back unchanged.

Layout written (all little-endian, see shared/reference/formats.md §3):

* ``#!AER-DAT4.0\\r\\n``, ``int32 size`` and an IOHeader flatbuffer (file id ``IOHE``): compression NONE,
  ``dataTablePosition`` and an infoNode XML describing one ``EVTS`` stream ``events`` (sizeX/sizeY).
* One packet per :meth:`Aedat4Writer.write` slice of at most ``packet_events`` events:
  ``int32 streamId, int32 size`` + a size-prefixed ``EVTS`` flatbuffer whose event vector is the raw
  DVS_EVENT_DTYPE bytes (the dtype is byte-identical to the flatbuffer ``Event`` struct), so writing
  costs one memory copy per event.
* At :meth:`close`, a size-prefixed ``FTAB`` FileDataTable (byte offset, stream/size, element count and
  first/last timestamp of every packet) whose position is patched into the header, so dv-processing can
  seek by time (``getEventsTimeRange``) without scanning the file.

The flatbuffers are built by hand with fixed layouts whose int64 fields sit on 8-byte boundaries,
mirroring what dv-processing's own writer emits.
"""
from __future__ import annotations

import struct
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from pipeline.core.events import DVS_EVENT_DTYPE

MAGIC = b"#!AER-DAT4.0\r\n"
#: IOHeader compression enum values (dv-processing's CompressionType).
COMPRESSION_NONE = 0
#: Bytes before the events inside an uncompressed EVTS packet (packet header + flatbuffer head).
EVTS_HEAD_BYTES = 40
#: Default events per packet (16 B each -> 4 MiB packets).
DEFAULT_PACKET_EVENTS = 1 << 18
#: Largest event count one packet can hold (the packet size field is an int32).
MAX_PACKET_EVENTS = (2**31 - 1 - EVTS_HEAD_BYTES) // 16

_IOHEADER_FIXED = struct.Struct("<II4s6xHHHHHiiIq")
_FTAB_ENTRY = struct.Struct("<iiiqqqq4x")


def info_xml(width: int, height: int, source: str, compression: str = "NONE") -> str:
    """The infoNode XML of an AEDAT 4 file with a single EVTS stream (id 0, named ``events``)."""
    source = escape(source)
    return (
        '<dv version="2.0">\n'
        '    <node name="outInfo" path="/outInfo/">\n'
        '        <node name="0" path="/outInfo/0/">\n'
        f'            <attr key="compression" type="string">{compression}</attr>\n'
        '            <attr key="originalModuleName" type="string">spikeloop</attr>\n'
        '            <attr key="originalOutputName" type="string">events</attr>\n'
        '            <attr key="typeDescription" type="string">Array of events (polarity ON/OFF).</attr>\n'
        '            <attr key="typeIdentifier" type="string">EVTS</attr>\n'
        '            <node name="info" path="/outInfo/0/info/">\n'
        f'                <attr key="sizeX" type="int">{int(width)}</attr>\n'
        f'                <attr key="sizeY" type="int">{int(height)}</attr>\n'
        f'                <attr key="source" type="string">{source}</attr>\n'
        '            </node>\n'
        '        </node>\n'
        '    </node>\n'
        '</dv>\n'
    )


def ioheader(info: str, data_table_position: int = -1, compression: int = COMPRESSION_NONE) -> bytes:
    """``int32 size`` + IOHeader flatbuffer (``IOHE``): compression enum, dataTablePosition (byte offset of
    the FileDataTable, -1 = none) and the infoNode XML string.

    Layout from the size prefix S: root offset -> table at S+28; vtable at S+18 (fields: compression @4,
    infoNode @8, dataTablePosition @12 so the int64 lands on S+40); the string at S+48.
    """
    text = info.encode("utf-8")
    body = _IOHEADER_FIXED.pack(
        0, 24, b"IOHE", 10, 20, 4, 12, 8, 10, compression, 12, data_table_position
    )
    string = struct.pack("<I", len(text)) + text + b"\0"
    string += b"\0" * (-len(string) % 4)
    buf = bytearray(body + string)
    struct.pack_into("<I", buf, 0, len(buf) - 4)
    return bytes(buf)


#: Byte offset of the int64 dataTablePosition inside ``ioheader()`` output.
IOHEADER_TABLE_POSITION_OFFSET = 40


def evts_packet_head(n_events: int, stream_id: int = 0) -> bytes:
    """The 40 bytes that precede ``n_events`` raw 16-byte events in an uncompressed EVTS packet:
    ``int32 streamId, int32 payload size`` + size prefix, root offset, ``EVTS``, vtable and the vector
    length (formats.md §3 table)."""
    if not 0 <= n_events <= MAX_PACKET_EVENTS:
        raise ValueError(f"an EVTS packet holds 0..{MAX_PACKET_EVENTS} events, got {n_events}")
    return struct.pack(
        "<iiII4s2xHHHiII", stream_id, 32 + 16 * n_events, 28 + 16 * n_events, 16, b"EVTS", 6, 8, 4, 6, 4,
        n_events,
    )


def file_data_table(entries: np.ndarray) -> bytes:
    """Size-prefixed ``FTAB`` flatbuffer for packets described by ``entries`` (FTAB_ENTRY_DTYPE, (n,)).

    Layout from the size prefix S: root -> table at S+20 (vtable at S+14), vector of n offsets at S+28,
    one shared 14-byte element vtable, then n 48-byte element tables starting at S ≡ 4 (mod 8) so their
    int64 fields are 8-byte aligned.
    """
    n = len(entries)
    vtable_pos = 32 + 4 * n
    first = vtable_pos + 14
    first += (4 - first) % 8
    head = struct.pack("<II4s2xHHHiII", 0, 16, b"FTAB", 6, 8, 4, 6, 4, n)
    offsets = (first + 48 * np.arange(n, dtype=np.int64)) - (32 + 4 * np.arange(n, dtype=np.int64))
    vtable = struct.pack("<7H", 14, 44, 12, 4, 20, 28, 36)
    gap = b"\0" * (first - vtable_pos - 14)
    tables = np.zeros(n, dtype=_FTAB_TABLE_DTYPE)
    tables["soffset"] = first + 48 * np.arange(n) - vtable_pos
    for name in FTAB_ENTRY_DTYPE.names:
        tables[name] = entries[name]
    buf = bytearray(head + offsets.astype("<u4").tobytes() + vtable + gap + tables.tobytes())
    struct.pack_into("<I", buf, 0, len(buf) - 4)
    return bytes(buf)


#: One FileDataTable row: where a packet's flatbuffer starts (byte offset in the file), its packet
#: header (stream id, size), element count and first/last timestamp (µs).
FTAB_ENTRY_DTYPE = np.dtype(
    [("byte_offset", "<i8"), ("stream_id", "<i4"), ("size", "<i4"), ("elements", "<i8"),
     ("t_first", "<i8"), ("t_last", "<i8")]
)
_FTAB_TABLE_DTYPE = np.dtype(
    {
        "names": ["soffset", "stream_id", "size", "byte_offset", "elements", "t_first", "t_last"],
        "formats": ["<i4", "<i4", "<i4", "<i8", "<i8", "<i8", "<i8"],
        "offsets": [0, 4, 8, 12, 20, 28, 36],
        "itemsize": 48,
    }
)


def dvs_layout(events: np.ndarray) -> np.ndarray:
    """``events`` in the exact DVS_EVENT_DTYPE layout (16 B). Arrays with the same fields in another
    layout (numpy >= 1.23 drops the padding when concatenating) are converted; others raise TypeError."""
    if events.dtype == DVS_EVENT_DTYPE:
        return events
    if events.dtype.names == DVS_EVENT_DTYPE.names:
        return events.astype(DVS_EVENT_DTYPE)
    raise TypeError(f"expected DVS_EVENT_DTYPE events (timestamp, x, y, polarity), got dtype {events.dtype}")


class Aedat4Writer:
    """Write DVS events (DVS_EVENT_DTYPE, sorted by timestamp in µs) to an uncompressed AEDAT 4 file.

    ``Aedat4Writer(path, width, height)`` is a context manager; ``write(events)`` appends events (any
    length; split into packets of at most ``packet_events``); ``close()`` writes the data table and
    patches the header. The file opens in dv-processing's ``MonoCameraRecording`` with identical events.
    Timestamps must not decrease across calls (dv-processing requires monotonic packets); events must lie
    inside the declared sensor and have polarity 0/1 (ValueError otherwise: readers would refuse them).
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        *,
        source: str = "spikeloop",
        packet_events: int = DEFAULT_PACKET_EVENTS,
    ):
        if width <= 0 or height <= 0:
            raise ValueError(f"sensor resolution must be positive, got {width}x{height}")
        if not 1 <= packet_events <= MAX_PACKET_EVENTS:
            raise ValueError(f"packet_events must be 1..{MAX_PACKET_EVENTS}, got {packet_events}")
        self.path = Path(path)
        self.width = int(width)
        self.height = int(height)
        self.packet_events = int(packet_events)
        self.events_written = 0
        self._last_t: int | None = None
        self._entries: list[tuple[int, int, int, int, int, int]] = []
        self._file = open(self.path, "wb")
        self._header_at = len(MAGIC)
        self._file.write(MAGIC + ioheader(info_xml(width, height, source)))
        self._position = self._file.tell()

    def write(self, events: np.ndarray) -> None:
        """Append time-ordered events (DVS_EVENT_DTYPE, shape (n,)); an empty array is a no-op."""
        if self._file is None:
            raise ValueError(f"{self.path}: writer is closed")
        events = dvs_layout(events)
        if len(events) == 0:
            return
        t = events["timestamp"]
        if (self._last_t is not None and t[0] < self._last_t) or np.any(np.diff(t) < 0):
            raise ValueError(f"{self.path}: event timestamps must not decrease")
        x, y, p = events["x"], events["y"], events["polarity"]
        if x.min() < 0 or x.max() >= self.width or y.min() < 0 or y.max() >= self.height:
            raise ValueError(f"{self.path}: events at x {x.min()}..{x.max()}, y {y.min()}..{y.max()} do not fit "
                             f"the declared {self.width}x{self.height} sensor")
        if p.min() < 0 or p.max() > 1:
            raise ValueError(f"{self.path}: event polarity must be 0 or 1, got {p.min()}..{p.max()}")
        self._last_t = int(t[-1])
        for start in range(0, len(events), self.packet_events):
            part = np.ascontiguousarray(events[start:start + self.packet_events])
            n = len(part)
            self._file.write(evts_packet_head(n))
            self._file.write(memoryview(part).cast("B"))
            self._entries.append(
                (self._position + 8, 0, 32 + 16 * n, n, int(part["timestamp"][0]), int(part["timestamp"][-1]))
            )
            self._position += EVTS_HEAD_BYTES + 16 * n
        self.events_written += len(events)

    def close(self) -> None:
        """Write the FileDataTable, patch its position into the header and close the file. Idempotent."""
        if self._file is None:
            return
        try:
            entries = np.array(self._entries, dtype=FTAB_ENTRY_DTYPE)
            table_at = self._position
            self._file.write(file_data_table(entries))
            self._file.seek(self._header_at + IOHEADER_TABLE_POSITION_OFFSET)
            self._file.write(struct.pack("<q", table_at))
        finally:
            self._file.close()
            self._file = None

    def __enter__(self) -> "Aedat4Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_aedat4(path: str | Path, events: np.ndarray, width: int, height: int, **kwargs) -> None:
    """Write one event array (DVS_EVENT_DTYPE) to an AEDAT 4 file in a single call."""
    with Aedat4Writer(path, width, height, **kwargs) as writer:
        writer.write(events)


def stream_bytes(events: np.ndarray, width: int, height: int, packet_events: int = DEFAULT_PACKET_EVENTS):
    """The byte pieces of a complete AEDAT 4 file holding ``events`` (for in-memory use): the magic
    line, the header, for each packet its 40-byte head and a memoryview of the event bytes, then the
    data table (which spares dv-processing a scan of the packets when it opens the file)."""
    events = np.ascontiguousarray(dvs_layout(events))
    starts = np.arange(0, len(events), packet_events)
    counts = np.minimum(packet_events, len(events) - starts)
    header = ioheader(info_xml(width, height, "spikeloop"))
    first = len(MAGIC) + len(header)
    ends = first + np.cumsum(EVTS_HEAD_BYTES + 16 * counts)
    entries = np.zeros(len(starts), dtype=FTAB_ENTRY_DTYPE)
    entries["byte_offset"] = ends - 16 * counts - EVTS_HEAD_BYTES + 8
    entries["size"] = 32 + 16 * counts
    entries["elements"] = counts
    entries["t_first"] = events["timestamp"][starts]
    entries["t_last"] = events["timestamp"][starts + counts - 1]
    yield MAGIC
    yield ioheader(info_xml(width, height, "spikeloop"), int(ends[-1]) if len(ends) else first)
    for start, count in zip(starts.tolist(), counts.tolist()):
        yield evts_packet_head(count)
        yield memoryview(events[start:start + count]).cast("B")
    yield file_data_table(entries)


__all__ = ["Aedat4Writer", "dvs_layout", "write_aedat4", "stream_bytes", "ioheader", "evts_packet_head", "info_xml",
           "file_data_table", "FTAB_ENTRY_DTYPE"]
