"""AEDAT 4 reader (DV / dv-processing files): events via ``dv.io.MonoCameraRecording``, plus frames, IMU
samples and triggers, which are exposed rather than dropped.

The header (``#!AER-DAT4.0``, IOHeader flatbuffer, infoNode XML; formats.md §3) is parsed here, so a
bad header is reported with its byte offset before dv-processing is involved. Events are decoded by
dv-processing (LZ4/ZSTD packets in C++).

Damage: dv-processing refuses a whole file whose data table is missing or cut (every truncated copy of a
DV recording). The reader then walks the packet headers itself to find the first incomplete or
implausible packet (the damage offset), opens a repaired temporary copy without the data table (dv
then reads the complete packets and ignores a partial tail) and yields the events before the damage,
with a RecordingDamageWarning naming the file and offset (RecordingError in strict mode).
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

from pipeline.dv_bridge import to_numpy
from recordings.base import RecordingError, RecordingHeader, RecordingReader

MAGIC = b"#!AER-DAT4.0\r\n"
COMPRESSIONS = ("NONE", "LZ4", "LZ4_HIGH", "ZSTD", "ZSTD_HIGH")
#: Largest IOHeader accepted (the infoNode XML of a multi-camera recording is a few kB).
MAX_HEADER_BYTES = 1 << 24
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


def _table_fields(buf: bytes, table: int) -> tuple[int, tuple[int, ...]]:
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


def parse_ioheader(buf: bytes) -> tuple[int, int, str]:
    """(compression enum, dataTablePosition, infoNode XML) from an IOHeader flatbuffer (no size prefix)."""
    if len(buf) < 8 or buf[4:8] != b"IOHE":
        raise ValueError("IOHeader flatbuffer lacks its 'IOHE' identifier")
    table, fields = _table_fields(buf, struct.unpack_from("<I", buf, 0)[0])

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
    except (ValueError, struct.error, ET.ParseError) as exc:
        raise RecordingError(path, f"unreadable IOHeader: {exc}", IOHEADER_START) from None
    if not 0 <= compression < len(COMPRESSIONS):
        raise RecordingError(path, f"unknown compression code {compression}", IOHEADER_START)
    return IOHeader(COMPRESSIONS[compression], position, streams, IOHEADER_START + size)


def find_damage(path: Path, header: IOHeader) -> tuple[int | None, str]:
    """Walk the ``int32 streamId, int32 size`` packet headers; return (byte offset, reason) of the
    first packet that is incomplete or implausible, or (None, "") when all packets are whole."""
    end = os.path.getsize(path)
    limit = end
    if header.data_table_position >= 0:
        if header.data_table_position > end:
            limit = end
        else:
            limit = header.data_table_position
    ids = {s.stream_id for s in header.streams}
    pos = header.data_start
    with open(path, "rb", buffering=1 << 16) as f:
        f.seek(pos)
        while pos < limit:
            raw = f.read(8)
            if len(raw) < 8:
                return pos, "file ends inside a packet header"
            stream_id, size = struct.unpack("<ii", raw)
            if stream_id not in ids:
                return pos, f"packet names unknown stream id {stream_id}"
            if size <= 0 or pos + 8 + size > limit:
                if pos + 8 + size > end:
                    return pos, f"file ends inside a {size}-byte packet"
                return pos, f"implausible packet size {size}"
            pos += 8 + size
            f.seek(pos)
    if header.data_table_position > end or (header.data_table_position < 0 and pos != end):
        return limit, "data table missing (file cut)"
    if header.data_table_position >= 0:
        return header.data_table_position, "file data table damaged or cut"
    return None, ""


class Reader(RecordingReader):
    """AEDAT 4 via dv-processing. ``chunks()`` yields DVS events; ``frames()``, ``imu()`` and
    ``triggers()`` stream the other recorded data; ``streams`` lists what the file holds."""

    format_name = "aedat4"
    extensions = (".aedat4",)

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        return head.startswith(MAGIC)

    def _read_header(self) -> RecordingHeader:
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._damage_at: tuple[int | None, str] = (None, "")
        self.ioheader = read_ioheader(self.path)
        self.streams = self.ioheader.streams
        self._dv_path = self._openable_path()
        events = [s for s in self.streams if s.type_identifier == "EVTS"]
        width, height = (events[0].width, events[0].height) if events else (0, 0)
        recording = self._open_dv()
        camera = recording.getCameraName() if recording is not None else ""
        extra = {
            "camera": camera,
            "compression": self.ioheader.compression,
            "streams": [f"{s.name}:{s.type_identifier}" for s in self.streams],
        }
        return RecordingHeader(self.format_name, width, height, extra)

    def _scratch_dir(self) -> Path:
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="spikeloop-aedat4-")
        return Path(self._scratch.name)

    def _openable_path(self) -> str:
        """dv-processing insists on the .aedat4 extension: link other names under one."""
        if self.path.suffix == ".aedat4":
            return str(self.path)
        link = self._scratch_dir() / "recording.aedat4"
        link.symlink_to(self.path.resolve())
        return str(link)

    def _repaired_copy(self, offset: int | None) -> str:
        """A copy without the data table (dataTablePosition = -1), cut at ``offset`` when given."""
        copy = self._scratch_dir() / "repaired.aedat4"
        with open(self.path, "rb") as src, open(copy, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        size = os.path.getsize(copy)
        with open(copy, "r+b") as f:
            if offset is not None and offset < size:
                f.truncate(offset)
            f.seek(IOHEADER_START)
            buf = f.read(self.ioheader.data_start - IOHEADER_START)
            table, fields = _table_fields(buf, struct.unpack_from("<I", buf, 0)[0])
            if len(fields) > 1 and fields[1]:
                f.seek(IOHEADER_START + table + fields[1])
                f.write(struct.pack("<q", -1))
        return str(copy)

    def _open_dv(self) -> dv.io.MonoCameraRecording | None:
        """Open with dv-processing; on refusal locate the damage, warn/raise, and open a repaired copy."""
        try:
            return dv.io.MonoCameraRecording(self._dv_path)
        except RuntimeError as exc:
            first_error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        offset, reason = find_damage(self.path, self.ioheader)
        self._damage_at = (offset if offset is not None else self.ioheader.data_start,
                           reason or f"dv-processing refused the file ({first_error})")
        if self.strict:
            raise RecordingError(self.path, self._damage_at[1], self._damage_at[0])
        self._dv_path = self._repaired_copy(offset)
        try:
            return dv.io.MonoCameraRecording(self._dv_path)
        except RuntimeError:
            return None

    def _recording(self) -> dv.io.MonoCameraRecording | None:
        try:
            return dv.io.MonoCameraRecording(self._dv_path)
        except RuntimeError as exc:
            self._damage_at = (self.ioheader.data_start, f"dv-processing cannot read the packets ({exc})")
            return None

    def _batches(self, getter: str) -> Iterator:
        """Yield non-empty batches from one dv reader method; damage while reading is reported once."""
        recording = self._recording()
        if recording is None:
            return
        index = 0
        while True:
            try:
                batch = getattr(recording, getter)()
            except RuntimeError as exc:
                offset, _ = find_damage(self.path, self.ioheader)
                self._damage_at = (offset, f"dv-processing failed reading packet {index} of the stream: "
                                   f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}")
                return
            if batch is None:
                return
            index += 1
            yield batch

    def _chunks(self) -> Iterator[np.ndarray]:
        refused = self._damage_at
        if any(s.type_identifier == "EVTS" for s in self.streams):
            for batch in self._batches("getNextEventBatch"):
                events = to_numpy(batch)
                for start in range(0, len(events), self.chunk_events):
                    yield events[start:start + self.chunk_events]
        if self._damage_at[0] is not None or self._damage_at[1]:
            self.report_damage(*self._damage_at)
        self._damage_at = refused

    def frames(self) -> Iterator[Frame]:
        """Yield the APS frames in time order (none when the file has no frame stream)."""
        if not any(s.type_identifier == "FRME" for s in self.streams):
            return
        recording = self._recording()
        while recording is not None:
            try:
                frame = recording.getNextFrame()
            except RuntimeError:
                return
            if frame is None:
                return
            yield Frame(int(frame.timestamp), int(frame.exposure.total_seconds() * 1e6 + 0.5),
                        np.array(frame.image, copy=True))

    def imu(self) -> Iterator[np.ndarray]:
        """Yield IMU samples as IMU_DTYPE arrays (one per stored packet)."""
        if not any(s.type_identifier == "IMUS" for s in self.streams):
            return
        for batch in self._batches("getNextImuBatch"):
            rows = [(s.timestamp, s.temperature, s.accelerometerX, s.accelerometerY, s.accelerometerZ,
                     s.gyroscopeX, s.gyroscopeY, s.gyroscopeZ, s.magnetometerX, s.magnetometerY,
                     s.magnetometerZ) for s in batch]
            yield np.array(rows, dtype=IMU_DTYPE)

    def triggers(self) -> Iterator[np.ndarray]:
        """Yield triggers as TRIGGER_DTYPE arrays (one per stored packet)."""
        if not any(s.type_identifier == "TRIG" for s in self.streams):
            return
        for batch in self._batches("getNextTriggerBatch"):
            yield np.array([(t.timestamp, int(t.type.value)) for t in batch], dtype=TRIGGER_DTYPE)

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
