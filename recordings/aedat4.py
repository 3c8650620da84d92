"""AEDAT 4 reader (DV / dv-processing files): events via ``dv.io.MonoCameraRecording``, plus frames, IMU
samples and triggers, which are exposed rather than dropped.

The header (``#!AER-DAT4.0``, IOHeader flatbuffer, infoNode XML; formats.md §3) is parsed here, so a
bad header is reported with its byte offset before dv-processing is involved, and the reader indexes
the packet headers itself at open (finding the first incomplete or implausible packet).

dv-processing reads flatbuffers unverified (a flipped byte that survives decompression can crash it or
make it loop forever) and refuses a whole file whose data table is missing or cut (every truncated copy
of a DV recording). So every packet is verified before dv-processing sees it (recordings.aedat4_packets:
bounded LZ4/ZSTD decompression, flatbuffer tables and vectors inside the packet): lazily, just ahead of
each read, on an intact file with a data table; all at the first read otherwise, when dv-processing
scans every packet at open (a damaged file is handed over as a repaired temporary copy, cut at the
damage, without the data table). LZ4 frames carry no checksum in DV files, so a flipped bit can still
decode to other events: every decoded event is checked against recordings.invariants (coordinates
inside the header's sizeX/sizeY, polarity 0/1, time monotonic within the tolerance).

On damage the reader yields what came before it, with a RecordingDamageWarning naming the file and byte
offset (of the packet, for a bad event: the events are compressed), or RecordingError in strict mode.
Bounds: IOHeader <= MAX_HEADER_BYTES, packets and the data table <= MAX_PACKET_BYTES, decoded packets
<= aedat4_lz4.MAX_DECODED_BYTES; anything larger is damage, refused before it is allocated.
"""
from __future__ import annotations

import os
import shutil
import struct
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import dv_processing as dv
import numpy as np

from recordings import invariants
from recordings.aedat4_packets import check_payload, table_fields
from recordings.base import RecordingError, RecordingHeader, RecordingReader
from recordings.dv_bridge import to_numpy

MAGIC = b"#!AER-DAT4.0\r\n"
COMPRESSIONS = ("NONE", "LZ4", "LZ4_HIGH", "ZSTD", "ZSTD_HIGH")
#: Largest IOHeader accepted (the infoNode XML of a multi-camera recording is a few kB).
MAX_HEADER_BYTES = 1 << 24
#: Largest packet (compressed payload) and file data table accepted, bytes. A DV event packet holds a
#: few ms of events (kB to a few MB); a 1280x720 BGR frame is 2.7 MB. Larger sizes are damage.
MAX_PACKET_BYTES = 1 << 28
#: Offset of the first IOHeader byte (after the magic line and the int32 size).
IOHEADER_START = len(MAGIC) + 4

#: IMU sample: time (µs), temperature (°C), accelerometer (g), gyroscope (deg/s), magnetometer (µT).
IMU_DTYPE = np.dtype(
    [("timestamp", "<i8"), ("temperature", "<f4"),
     ("accel_x", "<f4"), ("accel_y", "<f4"), ("accel_z", "<f4"),
     ("gyro_x", "<f4"), ("gyro_y", "<f4"), ("gyro_z", "<f4"),
     ("mag_x", "<f4"), ("mag_y", "<f4"), ("mag_z", "<f4")]
)
#: Trigger: time (µs) and dv-processing's TriggerType value (e.g. 8 = APS_EXPOSURE_START).
TRIGGER_DTYPE = np.dtype([("timestamp", "<i8"), ("type", "i1")])


@dataclass(frozen=True)
class Frame:
    """One APS frame: ``image`` uint8 (H, W) or (H, W, 3) BGR; start time and exposure in µs."""

    timestamp: int
    exposure_us: int
    image: np.ndarray


@dataclass(frozen=True)
class StreamDescription:
    """One stream of the infoNode: id, output name, type identifier (EVTS, FRME, IMUS, TRIG), size."""

    stream_id: int
    name: str
    type_identifier: str
    width: int
    height: int
    source: str


@dataclass(frozen=True)
class IOHeader:
    """The parsed IOHeader: compression name, data-table byte offset (-1 = none), stream list, and the
    file offset where packets start."""

    compression: str
    data_table_position: int
    streams: tuple[StreamDescription, ...]
    data_start: int


def parse_ioheader(buf: bytes) -> tuple[int, int, str]:
    """(compression enum, dataTablePosition, infoNode XML) from an IOHeader flatbuffer (no size prefix)."""
    if len(buf) < 8 or buf[4:8] != b"IOHE":
        raise ValueError("IOHeader flatbuffer lacks its 'IOHE' identifier")
    table, fields = table_fields(buf, struct.unpack_from("<I", buf, 0)[0])

    def field(i: int) -> int:
        return table + fields[i] if i < len(fields) and fields[i] else -1

    at = field(0)
    compression = struct.unpack_from("<i", buf, at)[0] if at >= 0 else 0
    at = field(1)
    position = struct.unpack_from("<q", buf, at)[0] if at >= 0 else -1
    at = field(2)
    if at < 0:
        raise ValueError("IOHeader has no infoNode")
    string = at + struct.unpack_from("<I", buf, at)[0]
    if string + 4 > len(buf):
        raise ValueError("infoNode string outside the header")
    length = struct.unpack_from("<I", buf, string)[0]
    if string + 4 + length > len(buf):
        raise ValueError("infoNode string runs past the header")
    return compression, position, buf[string + 4:string + 4 + length].decode("utf-8", "replace")


def parse_info_node(xml: str) -> tuple[StreamDescription, ...]:
    """The streams described by the infoNode XML (``/outInfo/<id>/``)."""
    root = ET.fromstring(xml)
    streams = []
    side = invariants.MAX_SENSOR_SIDE
    for out in root.iter("node"):
        if out.get("name") != "outInfo":
            continue
        for node in out.findall("node"):
            attrs = {a.get("key"): (a.text or "") for a in node.findall("attr")}
            info = node.find("node[@name='info']")
            info_attrs = {a.get("key"): (a.text or "") for a in info.findall("attr")} if info is not None else {}
            streams.append(
                StreamDescription(
                    stream_id=int(node.get("name", "-1")),
                    name=attrs.get("originalOutputName", ""),
                    type_identifier=attrs.get("typeIdentifier", ""),
                    width=int(info_attrs.get("sizeX", "0") or 0),
                    height=int(info_attrs.get("sizeY", "0") or 0),
                    source=info_attrs.get("source", ""),
                )
            )
            width, height = streams[-1].width, streams[-1].height
            if not (0 <= width <= side and 0 <= height <= side) or (width == 0) != (height == 0):
                raise ValueError(f"stream {streams[-1].stream_id} declares sizeX={width}, sizeY={height} "
                                 f"(expected both 1..{side}, or both 0 when it has no image size)")
    return tuple(streams)


def read_ioheader(path: Path) -> IOHeader:
    """Parse the magic line and IOHeader of an AEDAT 4 file; RecordingError names the byte offset."""
    with open(path, "rb") as f:
        head = f.read(IOHEADER_START)
        if not head.startswith(MAGIC[: len(head)]) or len(head) < len(MAGIC):
            raise RecordingError(path, "not AEDAT 4 (expected the line '#!AER-DAT4.0')", 0)
        if len(head) < IOHEADER_START:
            raise RecordingError(path, "file ends inside the header size field", len(head))
        size = struct.unpack_from("<i", head, len(MAGIC))[0]
        if not 8 <= size <= MAX_HEADER_BYTES:
            raise RecordingError(path, f"implausible IOHeader size {size} bytes", len(MAGIC))
        buf = f.read(size)
    if len(buf) < size:
        raise RecordingError(path, f"file ends inside the {size}-byte IOHeader", IOHEADER_START + len(buf))
    try:
        compression, position, xml = parse_ioheader(buf)
        streams = parse_info_node(xml)
    except (ValueError, struct.error, ET.ParseError, RecursionError) as exc:
        raise RecordingError(path, f"unreadable IOHeader: {exc}", IOHEADER_START) from None
    if not 0 <= compression < len(COMPRESSIONS):
        raise RecordingError(path, f"unknown compression code {compression}", IOHEADER_START)
    return IOHeader(COMPRESSIONS[compression], position, streams, IOHEADER_START + size)


#: One packet of the file: byte offset of its ``int32 streamId, int32 size`` header, stream id, size.
PACKET_DTYPE = np.dtype([("offset", "<i8"), ("stream_id", "<i4"), ("size", "<i4")])


def index_packets(path: Path, header: IOHeader) -> tuple[np.ndarray, int | None, str]:
    """Walk the packet headers (no payload reads). Returns (PACKET_DTYPE array of the whole packets,
    byte offset of the first incomplete or implausible packet or None, reason). Packets run up to the
    data table, or to the end of the file when the header's table position is absent or impossible."""
    end = os.path.getsize(path)
    table = header.data_table_position
    limit = table if header.data_start <= table <= end else end
    ids = {s.stream_id for s in header.streams}
    rows = []
    pos = header.data_start
    damage: tuple[int | None, str] = (None, "")
    with open(path, "rb", buffering=1 << 16) as f:
        f.seek(pos)
        while pos < limit:
            raw = f.read(8)
            if len(raw) < 8:
                damage = (pos, "file ends inside a packet header")
                break
            stream_id, size = struct.unpack("<ii", raw)
            if stream_id not in ids:
                damage = (pos, f"packet names unknown stream id {stream_id}")
                break
            if size <= 0 or size > MAX_PACKET_BYTES or pos + 8 + size > limit:
                reason = "file ends inside" if 0 < size <= MAX_PACKET_BYTES and pos + 8 + size > end else \
                    "implausible size of"
                damage = (pos, f"{reason} a {size}-byte packet (sizes 1..{MAX_PACKET_BYTES} accepted)")
                break
            rows.append((pos, stream_id, size))
            pos += 8 + size
            f.seek(pos)
    if damage[0] is None and table > end:
        damage = (end, f"file cut before its data table (expected at byte {table})")
    return np.array(rows, dtype=PACKET_DTYPE), damage[0], damage[1]


#: What dv-processing raises for a file or packet it cannot read (pybind11 maps std::invalid_argument and
#: std::length_error to ValueError, std::out_of_range to IndexError, std::bad_alloc to MemoryError).
DV_ERRORS = (RuntimeError, ValueError, IndexError, MemoryError, OverflowError)
#: Flatbuffer file identifier of each stream type.
IDENTIFIERS = {"EVTS": b"EVTS", "FRME": b"FRME", "IMUS": b"IMUS", "TRIG": b"TRIG"}


class Reader(RecordingReader):
    """AEDAT 4 file through dv-processing. ``chunks()`` yields DVS events; ``frames()``, ``imu()`` and
    ``triggers()`` stream the other recorded data; ``streams`` lists what the file holds.

    Every packet dv-processing reads is verified first (recordings.aedat4_packets): lazily, just ahead of
    each read, on an intact file with a data table; all at the first read otherwise (dv-processing then
    scans every packet at open; a damaged file is handed over as a repaired copy).
    """

    format_name = "aedat4"
    extensions = (".aedat4",)

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        return head.startswith(MAGIC)

    def _read_header(self) -> RecordingHeader:
        self._scratch: tempfile.TemporaryDirectory | None = None
        self.ioheader = read_ioheader(self.path)
        self.streams = self.ioheader.streams
        self.packets, offset, reason = index_packets(self.path, self.ioheader)
        #: Per stream id: how many of its packets (in file order) were verified for dv-processing.
        self._vetted = {s.stream_id: 0 for s in self.streams}
        #: Damage found at open: (byte offset, reason) or (None, ""); the header's, else the packets'.
        self.open_damage: tuple[int | None, str] = self._check_table_position()
        if self.open_damage[0] is None:
            self.open_damage = (offset, reason) if offset is not None else self._check_data_table()
        if self.strict and self.open_damage[0] is not None:
            raise RecordingError(self.path, self.open_damage[1], self.open_damage[0])
        #: The file dv-processing reads (None until frames/IMU/triggers are first asked for).
        self._dv_path: str | None = None
        events = [s for s in self.streams if s.type_identifier == "EVTS"]
        width, height = (events[0].width, events[0].height) if events else (0, 0)
        extra = {
            "camera": next((s.source for s in self.streams if s.source), ""),
            "compression": self.ioheader.compression,
            "streams": [f"{s.name}:{s.type_identifier}" for s in self.streams],
        }
        return RecordingHeader(self.format_name, width, height, extra)

    def _check_table_position(self) -> tuple[int | None, str]:
        """(IOHeader offset, reason) when dataTablePosition is neither -1 (no table) nor after the header,
        else (None, ""). A position past the end of the file is a cut file (index_packets says so)."""
        position, start = self.ioheader.data_table_position, self.ioheader.data_start
        if position == -1 or position >= start:
            return None, ""
        return IOHEADER_START, (f"IOHeader dataTablePosition {position} is neither -1 (no table) nor after "
                                f"the header (packets start at byte {start})")

    def _check_data_table(self) -> tuple[int | None, str]:
        """(byte offset, reason) when the FileDataTable is unusable, (None, "") when fine or absent;
        dv-processing decodes the table at open."""
        position = self.ioheader.data_table_position
        if not self.ioheader.data_start <= position:
            return None, ""
        size = os.path.getsize(self.path) - position
        if size > MAX_PACKET_BYTES:
            return position, f"file data table of {size} bytes (more than {MAX_PACKET_BYTES})"
        with open(self.path, "rb") as f:
            f.seek(position)
            payload = f.read(size)
        if not payload:
            return position, "file data table missing"
        reason, _ = check_payload(payload, self.ioheader.compression, b"FTAB")
        return (position, f"file data table damaged ({reason})") if reason else (None, "")

    def _scratch_dir(self) -> Path:
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="spikeloop-aedat4-")
        return Path(self._scratch.name)

    def _check(self, f, row) -> tuple[str, int]:
        """check_payload for one PACKET_DTYPE row, reading its payload from the open file ``f``."""
        stream = next(s for s in self.streams if s.stream_id == int(row["stream_id"]))
        identifier = IDENTIFIERS.get(stream.type_identifier, stream.type_identifier.encode()[:4])
        f.seek(int(row["offset"]) + 8)
        return check_payload(f.read(int(row["size"])), self.ioheader.compression, identifier)

    def _vet_all(self) -> tuple[int | None, str]:
        """Verify every indexed packet, in file order: (byte offset, reason) of the first bad one, else
        (None, ""). Counts the packets before it as vetted."""
        with open(self.path, "rb") as f:
            for row in self.packets:
                reason, _ = self._check(f, row)
                if reason:
                    return int(row["offset"]), reason
                self._vetted[int(row["stream_id"])] += 1
        return None, ""

    def _dv_file(self) -> str:
        """The path dv-processing may open: the file itself when it is intact and has a data table (its
        packets are then vetted lazily), else a verified copy (see ``_write_repaired``)."""
        if self._dv_path is not None:
            return self._dv_path
        if self.open_damage[0] is None and self.ioheader.data_table_position >= 0:
            self._dv_path = self._openable_path()
            try:
                dv.io.MonoCameraRecording(self._dv_path)
                return self._dv_path
            except DV_ERRORS as exc:
                self.open_damage = (self.ioheader.data_start, f"dv-processing refused the file ({_first_line(exc)})")
        self._dv_path = self._write_repaired()
        return self._dv_path

    def _openable_path(self) -> str:
        """dv-processing insists on the .aedat4 extension: link other names under one."""
        if self.path.suffix == ".aedat4":
            return str(self.path)
        link = self._scratch_dir() / "recording.aedat4"
        link.symlink_to(self.path.resolve())
        return str(link)

    def _write_repaired(self) -> str:
        """Verify every indexed packet and write a copy holding the header and the packets before the first
        bad one (it ends where they do), without a data table: what dv-processing may scan at open."""
        for stream_id in self._vetted:
            self._vetted[stream_id] = 0
        last = self.packets[-1] if len(self.packets) else None
        cut = int(last["offset"]) + 8 + int(last["size"]) if last is not None else self.ioheader.data_start
        bad, reason = self._vet_all()
        if bad is not None:
            cut = bad
            if self.open_damage[0] is None or bad < self.open_damage[0]:
                self.open_damage = (bad, reason)
        copy = self._scratch_dir() / "repaired.aedat4"
        with open(self.path, "rb") as src, open(copy, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        with open(copy, "r+b") as f:
            f.truncate(cut)
            f.seek(IOHEADER_START)
            buf = f.read(self.ioheader.data_start - IOHEADER_START)
            table, fields = table_fields(buf, struct.unpack_from("<I", buf, 0)[0])
            if len(fields) > 1 and fields[1]:
                f.seek(IOHEADER_START + table + fields[1])
                f.write(struct.pack("<q", -1))
        return str(copy)

    def _stream_batches(self, type_identifier: str, getter: str, damage: list) -> Iterator:
        """(byte offset of the packet, batch) of the first stream of a type through dv-processing, each
        packet verified first.

        Before each read, the next packets of the stream are checked up to and including the next one
        holding elements (dv may skip empty packets). A damaged packet ends the stream; its
        (byte offset, reason) is appended to ``damage``.
        """
        stream = next((s for s in self.streams if s.type_identifier == type_identifier), None)
        if stream is None:
            return
        rows = self.packets[self.packets["stream_id"] == stream.stream_id]
        path = self._dv_file()
        try:
            recording = dv.io.MonoCameraRecording(path)
        except DV_ERRORS as exc:
            damage.append((self.ioheader.data_start, f"dv-processing cannot open the file ({_first_line(exc)})"))
            return
        vetted = self._vetted[stream.stream_id]
        index = 0
        with open(self.path, "rb") as f:
            while True:
                while index < len(rows):
                    if index >= vetted:
                        reason, count = self._check(f, rows[index])
                        if reason:
                            damage.append((int(rows[index]["offset"]), reason))
                            return
                        vetted = index + 1
                        self._vetted[stream.stream_id] = vetted
                    else:
                        count = -1
                    index += 1
                    if count != 0:
                        break
                try:
                    batch = getattr(recording, getter)()
                except DV_ERRORS as exc:
                    damage.append((int(rows[max(index - 1, 0)]["offset"]) if len(rows) else None,
                                   f"dv-processing failed to decode a packet ({_first_line(exc)})"))
                    return
                if batch is None:
                    return
                yield int(rows[index - 1]["offset"]) if index else self.ioheader.data_start, batch

    def _chunks(self) -> Iterator[np.ndarray]:
        """Events of the first EVTS stream, packet by packet (verified, then decoded by dv-processing) and
        checked against recordings.invariants: the first bad packet or event ends the stream, with damage
        at that packet's byte offset (its events are compressed: no finer offset exists)."""
        damage: list = []
        width, height = self.header.width, self.header.height
        state = invariants.new_state()
        for offset, batch in self._stream_batches("EVTS", "getNextEventBatch", damage):
            events = to_numpy(batch)
            good, bad = invariants.first_invalid(events, width, height, state)
            for start in range(0, good, self.chunk_events):
                yield events[start:min(start + self.chunk_events, good)]
            if bad != invariants.OK:
                damage.append((offset, f"event {good} of the packet: {invariants.describe(bad, state, width, height)}"))
                break
        self._report(damage)

    def _report(self, damage: list) -> None:
        """Report the first damage met while streaming, else the damage found at open (if any)."""
        where = damage[0] if damage else self.open_damage
        if where[1]:
            self.report_damage(*where)

    def frames(self) -> Iterator[Frame]:
        """Yield the APS frames in time order (none when the file has no frame stream)."""
        damage: list = []
        for _, frame in self._stream_batches("FRME", "getNextFrame", damage):
            yield Frame(int(frame.timestamp), int(frame.exposure.total_seconds() * 1e6 + 0.5),
                        np.array(frame.image, copy=True))
        self._report(damage)

    def imu(self) -> Iterator[np.ndarray]:
        """Yield IMU samples as IMU_DTYPE arrays (one per stored packet)."""
        damage: list = []
        for _, batch in self._stream_batches("IMUS", "getNextImuBatch", damage):
            rows = [(s.timestamp, s.temperature, s.accelerometerX, s.accelerometerY, s.accelerometerZ,
                     s.gyroscopeX, s.gyroscopeY, s.gyroscopeZ, s.magnetometerX, s.magnetometerY,
                     s.magnetometerZ) for s in batch]
            yield np.array(rows, dtype=IMU_DTYPE)
        self._report(damage)

    def triggers(self) -> Iterator[np.ndarray]:
        """Yield triggers as TRIGGER_DTYPE arrays (one per stored packet)."""
        damage: list = []
        for _, batch in self._stream_batches("TRIG", "getNextTriggerBatch", damage):
            yield np.array([(t.timestamp, int(t.type.value)) for t in batch], dtype=TRIGGER_DTYPE)
        self._report(damage)

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
