"""AEDAT 4: the reader (events decoded here; frames, IMU, triggers through dv-processing; damage), our
writer, the LZ4 decoder and the packet verifier. Facts come from shared/data/README.md; dv-processing
itself is the peer."""
from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import tracemalloc
import warnings
from pathlib import Path

import dv_processing as dv
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.events import DVS_EVENT_DTYPE
from recordings.aedat4 import IMU_DTYPE, TRIGGER_DTYPE, Reader, check_payload, index_packets, read_ioheader
from recordings.aedat4_lz4 import lz4_decode, xxh32
from recordings.aedat4_writer import Aedat4Writer, write_aedat4
from recordings.base import RecordingDamageWarning, RecordingError
from recordings.detect import detect_format

DAVIS = "davis346_aestream.aedat4"
DVX = "dvxplorer_tonic.aedat4"
#: file -> (events, width, height, duration s) from shared/data/README.md
FACTS = {DAVIS: (117_667, 346, 260, 0.130), DVX: (111_954, 320, 240, 0.590)}


def dv_events(path) -> np.ndarray:
    """All events as dv-processing itself reads them (the peer)."""
    recording = dv.io.MonoCameraRecording(str(path))
    parts = []
    while (batch := recording.getNextEventBatch()) is not None:
        parts.append(batch.numpy())
    return np.concatenate(parts, dtype=DVS_EVENT_DTYPE) if parts else np.zeros(0, DVS_EVENT_DTYPE)


def read_all(reader) -> np.ndarray:
    parts = list(reader.chunks())
    return np.concatenate(parts, dtype=DVS_EVENT_DTYPE) if parts else np.zeros(0, DVS_EVENT_DTYPE)


def assert_same(a, b):
    assert len(a) == len(b)
    for name in DVS_EVENT_DTYPE.names:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="module")
def reference(data_dir):
    return {name: dv_events(data_dir / "events" / name) for name in FACTS}


@pytest.mark.parametrize("name", sorted(FACTS))
def test_real_files_match_readme_and_dv(data_dir, reference, name):
    count, width, height, duration = FACTS[name]
    path = data_dir / "events" / name
    assert detect_format(path) is Reader
    with Reader(path, chunk_events=5000) as reader:
        assert (reader.header.width, reader.header.height) == (width, height)
        chunks = list(reader.chunks())
    assert max(len(c) for c in chunks) <= 5000
    events = np.concatenate(chunks, dtype=DVS_EVENT_DTYPE)
    assert len(events) == count
    assert round((events["timestamp"][-1] - events["timestamp"][0]) / 1e6, 3) == duration
    assert np.all(np.diff(events["timestamp"]) >= 0)
    assert events["x"].min() >= 0 and events["x"].max() < width
    assert events["y"].min() >= 0 and events["y"].max() < height
    assert set(np.unique(events["polarity"])) == {0, 1}
    assert_same(events, reference[name])


def test_davis_frames_imu_triggers(data_dir):
    path = data_dir / "events" / DAVIS
    with Reader(path) as reader:
        assert reader.header.extra["camera"] == "DAVIS346_00000104"
        assert reader.header.extra["compression"] == "LZ4"
        frames = list(reader.frames())
        imu = np.concatenate(list(reader.imu()))
        triggers = np.concatenate(list(reader.triggers()))
    peer = dv.io.MonoCameraRecording(str(path))
    assert len(frames) == 3
    for frame in frames:
        expected = peer.getNextFrame()
        assert frame.timestamp == expected.timestamp
        assert frame.image.shape == (260, 346) and frame.image.dtype == np.uint8
        np.testing.assert_array_equal(frame.image, expected.image)
        assert frame.exposure_us == 4773
    assert imu.dtype == IMU_DTYPE and len(imu) == 130
    assert np.all(np.diff(imu["timestamp"]) > 0)
    gravity = np.sqrt(imu["accel_x"] ** 2 + imu["accel_y"] ** 2 + imu["accel_z"] ** 2)
    assert 0.9 < np.median(gravity) < 1.1  # at rest the accelerometer reads 1 g
    assert triggers.dtype == TRIGGER_DTYPE and len(triggers) == 15
    assert int(triggers["type"][0]) == dv.TriggerType.APS_EXPOSURE_START.value


def test_dvxplorer_has_imu_but_no_frames(data_dir):
    with Reader(data_dir / "events" / DVX) as reader:
        assert list(reader.frames()) == []
        assert sum(len(b) for b in reader.imu()) == 475
        assert list(reader.triggers()) == []


def test_wrong_extension_still_reads(data_dir, tmp_path, reference):
    copy = tmp_path / "recording.bin"
    shutil.copy(data_dir / "events" / DVX, copy)
    assert detect_format(copy) is Reader
    with Reader(copy) as reader:
        assert_same(read_all(reader), reference[DVX])


def random_events(n, seed=0, t0=1_000):
    rng = np.random.default_rng(seed)
    events = np.zeros(n, dtype=DVS_EVENT_DTYPE)
    events["timestamp"] = t0 + np.sort(rng.integers(0, 5 * n + 1, n))
    events["x"] = rng.integers(0, 640, n)
    events["y"] = rng.integers(0, 480, n)
    events["polarity"] = rng.integers(0, 2, n)
    return events


def test_writer_round_trip_with_data_table(tmp_path):
    events = random_events(200_000, seed=1)
    path = tmp_path / "out.aedat4"
    with Aedat4Writer(path, 640, 480, packet_events=7000) as writer:
        for part in np.array_split(events, 13):
            writer.write(part)
        writer.write(events[:0])
    assert writer.events_written == len(events)
    recording = dv.io.MonoCameraRecording(str(path))
    assert recording.getEventResolution() == (640, 480)
    assert recording.getTimeRange() == (events["timestamp"][0], events["timestamp"][-1])
    assert_same(dv_events(path), events)
    # the data table lets dv-processing seek by time
    t0, t1 = int(events["timestamp"][50_000]), int(events["timestamp"][120_000])
    window = recording.getEventsTimeRange(t0, t1).numpy()
    assert_same(window, events[(events["timestamp"] >= t0) & (events["timestamp"] < t1)])
    header = read_ioheader(path)
    assert header.compression == "NONE" and header.data_table_position > 0
    assert [(s.type_identifier, s.width, s.height) for s in header.streams] == [("EVTS", 640, 480)]


def test_writer_empty_file_and_errors(tmp_path):
    path = tmp_path / "empty.aedat4"
    write_aedat4(path, np.zeros(0, DVS_EVENT_DTYPE), 128, 128)
    assert len(dv_events(path)) == 0
    with Reader(path) as reader:
        assert len(read_all(reader)) == 0
    events = random_events(100)
    with Aedat4Writer(tmp_path / "bad.aedat4", 640, 480) as writer:
        writer.write(events[50:])
        with pytest.raises(ValueError, match="decrease"):
            writer.write(events[:50])
        with pytest.raises(TypeError):
            writer.write(np.zeros(3, dtype=[("t", "<i8")]))
        late = events[99:].copy()
        late["x"] = 640
        with pytest.raises(ValueError, match="x 640..640, y .* do not fit the declared 640x480 sensor"):
            writer.write(late)
        late["x"], late["polarity"] = 0, 2
        with pytest.raises(ValueError, match="polarity must be 0 or 1"):
            writer.write(late)
    with pytest.raises(ValueError):
        Aedat4Writer(tmp_path / "zero.aedat4", 0, 128)


def test_xxh32_reference_values():
    def h(data: bytes) -> int:
        return int(xxh32(np.frombuffer(data, np.uint8) if data else np.zeros(1, np.uint8), 0, len(data)))

    assert h(b"") == 0x02CC5D05
    assert h(b"abc") == 0x32D153FF
    # LZ4 frame header checksum of FLG=0x40, BD=0x40 (the byte dv-processing writes)
    assert (h(b"\x40\x40") >> 8) & 0xFF == 0xC0


@pytest.mark.parametrize("name", sorted(FACTS))
def test_lz4_decoder_matches_dv_processing(data_dir, name):
    """Our LZ4 decode of every event packet gives exactly the events dv-processing decodes from it."""
    path = data_dir / "events" / name
    header = read_ioheader(path)
    packets, damage, _ = index_packets(path, header)
    assert damage is None
    events_id = next(s.stream_id for s in header.streams if s.type_identifier == "EVTS")
    data = path.read_bytes()
    peer = dv.io.MonoCameraRecording(str(path))
    for offset, stream_id, size in packets.tolist():
        head, length, reason = lz4_decode(data[offset + 8:offset + 8 + size], keep=64)
        full, full_length, _ = lz4_decode(data[offset + 8:offset + 8 + size])
        assert not reason and length == full_length == len(full)
        np.testing.assert_array_equal(head, full[:64])
        if stream_id != events_id:
            continue
        reason, count = check_payload(data[offset + 8:offset + 8 + size], "LZ4", b"EVTS")
        expected = peer.getNextEventBatch().numpy()
        assert not reason and count == len(expected)
        ours = np.frombuffer(full[len(full) - 16 * count:].tobytes(), dtype=DVS_EVENT_DTYPE)
        for field in DVS_EVENT_DTYPE.names:
            np.testing.assert_array_equal(ours[field], expected[field])
    assert peer.getNextEventBatch() is None


@settings(deadline=None, max_examples=200)
@given(st.binary(max_size=300))
def test_lz4_decoder_never_fails_on_garbage(data):
    for keep in (None, 16):
        out, length, reason = lz4_decode(b"\x04\x22\x4d\x18\x40\x40\xc0" + data, keep=keep)
        assert (out is None) == bool(reason) == (length < 0)


def cut_copy(src: Path, dst: Path, cut: int, flips=()) -> Path:
    data = bytearray(src.read_bytes()[:cut])
    for position, mask in flips:
        if position < len(data):
            data[position] ^= mask
    dst.write_bytes(bytes(data))
    return dst


def read_damaged(path: Path) -> tuple[np.ndarray | None, list[str]]:
    """(events, warning texts); events None when the header itself is unreadable (RecordingError)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Reader(path) as reader:
                events = read_all(reader)
                list(reader.frames())
                list(reader.imu())
                list(reader.triggers())
        except RecordingError as exc:
            assert str(path) in str(exc)
            return None, []
    texts = [str(w.message) for w in caught if issubclass(w.category, RecordingDamageWarning)]
    return events, texts


@pytest.mark.parametrize("name", sorted(FACTS))
def test_truncated_copies_yield_a_prefix_with_a_warning(data_dir, tmp_path, reference, name):
    src = data_dir / "events" / name
    size = src.stat().st_size
    full = reference[name]
    for cut in [0, 10, 100, 2000, 3200, 10_000, 200_000, 600_000, size - 4000, size - 100, size - 1]:
        events, texts = read_damaged(cut_copy(src, tmp_path / "cut.aedat4", cut))
        if events is None:
            assert cut < 3300  # only a cut inside the magic line / IOHeader is fatal
            continue
        assert_same(events, full[: len(events)])
        assert texts and "at byte" in texts[0] and "cut.aedat4" in texts[0]
    cut_copy(src, tmp_path / "cut.aedat4", size // 2)
    with pytest.raises(RecordingError, match="at byte"):
        with Reader(tmp_path / "cut.aedat4", strict=True) as reader:
            read_all(reader)


def test_corrupt_lz4_packet_that_hangs_dv_processing(data_dir, tmp_path):
    """One flipped byte in an LZ4 event packet makes dv-processing 2.0.4 loop forever in
    getNextEventBatch. Our reader must stop at that packet with a warning (run in a subprocess with a
    timeout so a regression fails instead of hanging the suite)."""
    bad = cut_copy(data_dir / "events" / DAVIS, tmp_path / "flipped.aedat4", 10**9, [(1132449, 85)])
    code = (
        "import warnings, numpy as np\n"
        "from recordings.aedat4 import Reader\n"
        "warnings.simplefilter('error')\n"
        f"r = Reader({str(bad)!r})\n"
        "n = 0\n"
        "try:\n"
        "    for c in r.chunks(): n += len(c)\n"
        "except Warning as w: print('WARN', n, w)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
    assert "WARN 107568" in result.stdout and "at byte 1111472" in result.stdout


@settings(deadline=None, max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.0, 1.0), flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)),
                                                 max_size=4))
def test_damaged_copies_never_crash(data_dir, tmp_path, reference, cut, flips):
    src = data_dir / "events" / DVX
    size = src.stat().st_size
    position = int(cut * size)
    path = cut_copy(src, tmp_path / "damaged.aedat4", position,
                    [(int(f * size), mask) for f, mask in flips])
    events, texts = read_damaged(path)
    if events is not None and not flips:
        assert_same(events, reference[DVX][: len(events)])
        assert texts or position == size


# -- hardening: what a damaged or lying file may not do (issue 14) --------------------------------
def contract_holds(events: np.ndarray, width: int, height: int) -> bool:
    """The reader contract (recordings.invariants), computed with plain numpy."""
    if not len(events):
        return True
    t = events["timestamp"]
    latest = np.maximum.accumulate(t)
    return bool(events["x"].min() >= 0 and events["x"].max() < width and events["y"].min() >= 0
                and events["y"].max() < height and set(np.unique(events["polarity"]).tolist()) <= {0, 1}
                and t.min() >= 0 and np.all(t[1:] >= latest[:-1] - 1000) and np.all(np.diff(latest) <= 2**31))


#: Single bit flips inside LZ4 event payloads of the DAVIS file that the reader used to pass silently,
#: yielding x = -9984 / 463 / 16583, polarity 8 or timestamps jumping up to 9e18 µs (byte, bit).
SILENT_FLIPS = [(4526, 1), (1013461, 0), (439991, 7), (535011, 1), (467909, 2), (9720, 3), (425585, 6),
                (1040688, 0)]


@pytest.mark.parametrize("position, bit", SILENT_FLIPS)
def test_lz4_bit_flips_are_damage_not_garbage(data_dir, tmp_path, position, bit):
    path = cut_copy(data_dir / "events" / DAVIS, tmp_path / "flip.aedat4", 10**9, [(position, 1 << bit)])
    events, texts = read_damaged(path)
    assert contract_holds(events, 346, 260)
    assert texts and " at byte " in texts[0]
    offset = int(texts[0].split(" at byte ")[1].split(":")[0])
    packets, _, _ = index_packets(path, read_ioheader(path))
    holding = packets[(packets["offset"] <= position) & (position < packets["offset"] + 8 + packets["size"])]
    assert offset == int(holding["offset"][0])  # the packet that holds the flipped byte
    with pytest.raises(RecordingError, match="at byte"):
        with Reader(path, strict=True) as reader:
            read_all(reader)


def test_header_size_that_does_not_match_the_data_is_reported(tmp_path):
    events = random_events(5000, seed=4)  # x < 640, y < 480
    path = tmp_path / "lying.aedat4"
    write_aedat4(path, events, 640, 480)
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b'key="sizeX" type="int">640<', b'key="sizeX" type="int">320<', 1))
    first_outside = int(np.argmax(events["x"] >= 320))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Reader(path) as reader:
            assert reader.header.width == 320
            got = read_all(reader)
    texts = [str(w.message) for w in caught if issubclass(w.category, RecordingDamageWarning)]
    assert len(texts) == 1 and f"event {first_outside} of the packet" in texts[0]
    assert "is outside the 320x480 sensor" in texts[0]
    assert_same(got, events[:first_outside])


@pytest.mark.parametrize("position", [0, 5, 18, -7])
def test_data_table_position_inside_the_header_is_damage_not_a_traceback(data_dir, tmp_path, position):
    src = data_dir / "events" / DVX
    header = read_ioheader(src)
    raw = bytearray(src.read_bytes())
    field = raw.find(struct.pack("<q", header.data_table_position), 18, header.data_start)
    raw[field:field + 8] = struct.pack("<q", position)
    path = tmp_path / "table.aedat4"
    path.write_bytes(bytes(raw))
    events, texts = read_damaged(path)
    assert len(events) == FACTS[DVX][0]  # every packet is still read
    assert texts and "at byte 18: IOHeader dataTablePosition" in texts[0]
    with pytest.raises(RecordingError, match="dataTablePosition"):
        Reader(path, strict=True)


def test_a_2_31_packet_size_is_refused_without_allocating_it(data_dir, tmp_path):
    src = data_dir / "events" / DVX
    packets, _, _ = index_packets(src, read_ioheader(src))
    victim = int(packets["offset"][10])
    raw = bytearray(src.read_bytes())
    raw[victim + 4:victim + 8] = struct.pack("<i", 2**31 - 1)
    path = tmp_path / "huge.aedat4"
    path.write_bytes(bytes(raw))
    tracemalloc.start()
    try:
        events, texts = read_damaged(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert texts and f"at byte {victim}: implausible size of a 2147483647-byte packet" in texts[0]
    assert 0 < len(events) < FACTS[DVX][0] and peak < 64 << 20


def test_lz4_output_bound_comes_from_the_frame_not_from_its_length_fields():
    """100 k one-byte compressed blocks used to be sized as 100 k x 4 MiB (400 GB) before decoding."""
    header = b"\x04\x22\x4d\x18" + bytes([0x60, 0x70])  # FLG: v1, independent blocks; BD: 4 MiB blocks
    header += bytes([(xxh32(np.frombuffer(header[4:6], np.uint8), 0, 2) >> 8) & 0xFF])
    block = struct.pack("<I", 1) + b"\x00"  # one token: no literal, no match, end of block
    frame = header + block * 100_000 + struct.pack("<I", 0)
    from recordings.aedat4_lz4 import lz4_frame_capacity

    capacity = lz4_frame_capacity(np.frombuffer(frame, np.uint8))
    assert 0 <= capacity <= 100_000 * (255 + 64)
    out, length, reason = lz4_decode(frame)
    assert reason == "" and length == 0
    out, length, reason = lz4_decode(frame, max_bytes=1000)
    assert out is None and "more than the 1000 allowed" in reason


def test_unverifiable_packets_never_reach_dv_processing(data_dir, tmp_path):
    """A table-less DAVIS file whose IMU packet claims 14.8 M elements: dv-processing segfaulted when it
    scanned the packets at open. Run in a child process so a regression fails instead of killing pytest."""
    src = data_dir / "events" / DAVIS
    header = read_ioheader(src)
    packets, _, _ = index_packets(src, header)
    raw = bytearray(src.read_bytes()[:int(packets["offset"][4])])
    field = raw.find(struct.pack("<q", header.data_table_position), 18, header.data_start)
    raw[field:field + 8] = struct.pack("<q", -1)
    for position, value in [(80279, 226), (77251, 142)]:
        raw[position] = value
    path = tmp_path / "imu.aedat4"
    path.write_bytes(bytes(raw))
    code = (
        "import warnings\n"
        "from recordings.aedat4 import Reader\n"
        "warnings.simplefilter('ignore')\n"
        f"with Reader({str(path)!r}) as r:\n"
        "    print(sum(len(c) for c in r.chunks()), len(list(r.frames())), sum(len(b) for b in r.imu()),"
        " sum(len(b) for b in r.triggers()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["9546", "0", "0", "2"]  # events up to the bad one; no IMU; triggers before


def test_frames_of_every_format_are_verified_and_read(tmp_path):
    """dv-processing writes a BGR and a gray frame (with IMU and trigger streams); we verify and read both,
    and a frame whose pixel vector is shorter than sizeX * sizeY * channels is damage."""
    config = dv.io.MonoCameraWriter.Config("cam", dv.CompressionType.LZ4)
    config.addFrameStream((8, 4))
    path = tmp_path / "frames.aedat4"
    writer = dv.io.MonoCameraWriter(str(path), config)
    bgr = np.arange(8 * 4 * 3, dtype=np.uint8).reshape(4, 8, 3)
    writer.writeFrame(dv.Frame(1000, bgr))
    writer.writeFrame(dv.Frame(2000, np.full((4, 8), 7, np.uint8)))
    del writer
    with Reader(path) as reader:
        frames = list(reader.frames())
    assert [f.timestamp for f in frames] == [1000, 2000]
    np.testing.assert_array_equal(frames[0].image, bgr)
    np.testing.assert_array_equal(frames[1].image, np.full((4, 8), 7, np.uint8))
    from recordings.aedat4_packets import verify

    header = read_ioheader(path)
    packets, _, _ = index_packets(path, header)
    data = path.read_bytes()
    offset, _, size = packets.tolist()[0]
    flatbuffer, _, _ = lz4_decode(data[offset + 8:offset + 8 + size])
    assert verify(flatbuffer, b"FRME") == ("", 1)
    short = flatbuffer.copy()
    body = short[4:]  # a view: edits land in ``short``
    table = int.from_bytes(bytes(body[:4]), "little")
    vtable = table - int.from_bytes(bytes(body[table:table + 4]), "little", signed=True)
    sizex_at = table + int.from_bytes(bytes(body[vtable + 4 + 2 * 6:vtable + 6 + 2 * 6]), "little")  # field 6
    body[sizex_at:sizex_at + 2] = np.frombuffer(struct.pack("<h", 9), np.uint8)  # claims 9 columns, holds 8
    reason, _ = verify(short, b"FRME")
    assert "frame holds 96 pixel bytes, 9x4x3 expected" in reason
