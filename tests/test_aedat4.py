"""AEDAT 4: the dv-processing-backed reader (events, frames, IMU, triggers, damage), our writer, and the
LZ4 vetting decoder. Facts come from shared/data/README.md; dv-processing itself is the peer."""
from __future__ import annotations

import shutil
import subprocess
import sys
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
