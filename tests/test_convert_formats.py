"""``spikeloop convert`` to AEDAT 4, HDF5, .npy and .es, each output read back by an independent reader:
dv-processing for AEDAT 4, h5py on the raw datasets, numpy.load for .npy, the ``event_stream`` package
(neuromorphic-paris, test peer) and a decoder written here from shared/reference/formats.md §8 for .es.
The expected values come from dv-processing reading the input directly (not from spikeloop's readers).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dv_processing as dv
import h5py
import numpy as np
import pytest

from pipeline.app.commands.convert import convert
from pipeline.core.events import DVS_EVENT_DTYPE
from recordings import eventstream_writer
from recordings.eventstream_writer import EventStreamWriter
from recordings.hdf5_writer import Hdf5Writer
from recordings.npy_writer import NpyEventWriter, npy_header

ROOT = Path(__file__).resolve().parent.parent


def cli(*args) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "SPIKELOOP_DATA": os.environ.get("SPIKELOOP_DATA", "")}
    return subprocess.run([sys.executable, "-m", "pipeline.app.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env)


def dv_contents(path: Path) -> dict:
    """Everything dv-processing reads from an AEDAT 4 file: events (t, x, y, p), frames, IMU, triggers."""
    rec = dv.io.MonoCameraRecording(str(path))
    events = []
    while (batch := rec.getNextEventBatch()) is not None:
        events.append(batch.numpy())
    events = np.concatenate(events)
    out = {"camera": rec.getCameraName(), "resolution": rec.getEventResolution(),
           "t": events["timestamp"].astype(np.int64), "x": events["x"].astype(np.int64),
           "y": events["y"].astype(np.int64), "p": events["polarity"].astype(np.int64),
           "frames": [], "imu": [], "triggers": []}
    if rec.isFrameStreamAvailable():
        while (frame := rec.getNextFrame()) is not None:
            out["frames"].append((frame.timestamp, int(frame.exposure.total_seconds() * 1e6 + 0.5),
                                  np.array(frame.image)))
    if rec.isImuStreamAvailable():
        while (batch := rec.getNextImuBatch()) is not None:
            out["imu"] += [(s.timestamp, s.temperature, s.accelerometerX, s.accelerometerY, s.accelerometerZ,
                            s.gyroscopeX, s.gyroscopeY, s.gyroscopeZ) for s in batch]
    if rec.isTriggerStreamAvailable():
        while (batch := rec.getNextTriggerBatch()) is not None:
            out["triggers"] += [(t.timestamp, int(t.type.value)) for t in batch]
    return out


@pytest.fixture(scope="module")
def davis(data_dir) -> tuple[Path, dict]:
    """The DAVIS346 recording with events, 3 frames, IMU and triggers, and what dv-processing reads in it."""
    path = data_dir / "events" / "davis346_aestream.aedat4"
    return path, dv_contents(path)


def decode_es(data: bytes) -> tuple[int, int, np.ndarray]:
    """Independent Event Stream 2.x DVS decoder, per formats.md §8: (width, height, rows (t, x, y_file, p))."""
    assert data[:12] == b"Event Stream" and data[12] == 2 and data[15] == 1
    width, height = int.from_bytes(data[16:18], "little"), int.from_bytes(data[18:20], "little")
    rows, t, i = [], 0, 20
    while i < len(data):
        byte = data[i]
        if byte == 0xFF:
            t += 127
            i += 1
        elif byte == 0xFE:
            i += 1
        else:
            t += byte >> 1
            rows.append((t, int.from_bytes(data[i + 1:i + 3], "little"), int.from_bytes(data[i + 3:i + 5], "little"),
                         byte & 1))
            i += 5
    return width, height, np.array(rows, dtype=np.int64).reshape(-1, 4)


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_aedat4_carries_frames_imu_and_triggers(davis, tmp_path, compression):
    source, want = davis
    out = tmp_path / "out.aedat4"
    notes: list[str] = []
    count = convert(source, out, compression=compression, notes=notes)
    got = dv_contents(out)
    assert count == len(want["t"]) == 117_667
    for key in ("t", "x", "y", "p"):
        np.testing.assert_array_equal(got[key], want[key])
    assert got["camera"] == want["camera"] == "DAVIS346_00000104"
    assert len(got["frames"]) == len(want["frames"]) == 3
    for (t1, e1, image1), (t2, e2, image2) in zip(got["frames"], want["frames"]):
        assert (t1, e1) == (t2, e2)
        np.testing.assert_array_equal(image1, image2)
    assert len(want["imu"]) == 130 and len(want["triggers"]) == 15
    np.testing.assert_allclose(np.array(got["imu"]), np.array(want["imu"]), rtol=0, atol=0)
    assert got["triggers"] == want["triggers"]
    assert notes == ["carried 3 frames, 130 IMU samples, 15 triggers"]


def test_hdf5_dsec_layout_read_with_h5py(davis, tmp_path):
    source, want = davis
    out = tmp_path / "out.h5"
    convert(source, out)
    with h5py.File(out, "r") as f:
        offset = int(f["t_offset"][()])
        t = f["events/t"][:] + offset
        np.testing.assert_array_equal(t, want["t"])
        for key in ("x", "y", "p"):
            np.testing.assert_array_equal(f[f"events/{key}"][:].astype(np.int64), want[key])
        assert (f["events/x"].dtype, f["events/y"].dtype, f["events/p"].dtype) == (np.uint16, np.uint16, np.uint8)
        assert (f.attrs["width"], f.attrs["height"], f.attrs["camera"]) == (346, 260, "DAVIS346_00000104")
        # ms_to_idx[i]: first event at or after i ms (relative to t_offset), computed independently here.
        relative = want["t"] - offset
        expect = np.searchsorted(relative, np.arange(len(f["ms_to_idx"])) * 1000, side="left")
        np.testing.assert_array_equal(f["ms_to_idx"][:], expect)
        assert len(f["ms_to_idx"]) == relative[-1] // 1000 + 1
        np.testing.assert_array_equal(f["frames/t"][:] + offset, [fr[0] for fr in want["frames"]])
        np.testing.assert_array_equal(f["frames/exposure_us"][:], [fr[1] for fr in want["frames"]])
        for image, frame in zip(f["frames/images"][:], want["frames"]):
            np.testing.assert_array_equal(image, frame[2])
        imu = np.array(want["imu"])
        np.testing.assert_array_equal(f["imu/t"][:] + offset, imu[:, 0])
        np.testing.assert_allclose(f["imu/temperature"][:], imu[:, 1], rtol=1e-6)
        np.testing.assert_allclose(f["imu/accelerometer"][:], imu[:, 2:5], rtol=1e-6)
        np.testing.assert_allclose(f["imu/gyroscope"][:], imu[:, 5:8], rtol=1e-6)
        np.testing.assert_array_equal(np.stack([f["triggers/t"][:] + offset, f["triggers/type"][:]], 1),
                                      np.array(want["triggers"]))
        # t_offset is the earliest time of any kind (here an event 568 µs before the first frame), so every
        # time written is >= 0 as the DSEC tools assume.
        firsts = [want["t"].min(), want["frames"][0][0], imu[:, 0].min(), min(t for t, _ in want["triggers"])]
        assert offset == min(firsts) == want["t"].min() == want["frames"][0][0] - 568
        assert all(f[name][:].min() >= 0 for name in ("events/t", "frames/t", "imu/t", "triggers/t"))


def test_hdf5_writer_refuses_a_time_before_t_offset(tmp_path):
    """Never a negative time: an item earlier than the given t_offset, or than the first item, is an error."""
    def events(*times):
        out = np.zeros(len(times), dtype=DVS_EVENT_DTYPE)
        out["timestamp"] = times
        return out

    with Hdf5Writer(tmp_path / "given.h5", 4, 4, t_offset=100) as writer:
        writer.write(events(100, 150))
        with pytest.raises(ValueError, match="an event at 99 µs is earlier than t_offset 100 µs"):
            writer.write(events(99))
    with Hdf5Writer(tmp_path / "first.h5", 4, 4) as writer:
        writer.write(events(500, 400))
        assert writer.t_offset == 400
        with pytest.raises(ValueError, match="earlier than t_offset 400"):
            writer.write(events(399))
    with h5py.File(tmp_path / "first.h5", "r") as f:
        assert f["events/t"][:].tolist() == [100, 0] and f["t_offset"][()] == 400


def test_npy_loads_with_numpy(davis, tmp_path):
    source, want = davis
    out = tmp_path / "out.npy"
    notes: list[str] = []
    convert(source, out, notes=notes)
    events = np.load(out)
    assert events.dtype.names == ("t", "x", "y", "p") and events.shape == (117_667,)
    for key in ("t", "x", "y", "p"):
        np.testing.assert_array_equal(events[key].astype(np.int64), want[key])
    assert "not written: frames, IMU, triggers, the 346x260 sensor size" in notes[0]


def test_npy_header_keeps_its_length_for_any_count():
    assert len(npy_header(0)) == len(npy_header(2**63 - 1)) == 192


def test_npy_of_an_empty_recording_loads(tmp_path):
    with NpyEventWriter(tmp_path / "e.npy"):
        pass
    assert np.load(tmp_path / "e.npy").shape == (0,)


def test_es_decodes_as_the_reference_says(davis, tmp_path):
    source, want = davis
    out = tmp_path / "out.es"
    notes: list[str] = []
    convert(source, out, notes=notes)
    width, height, rows = decode_es(out.read_bytes())
    assert (width, height) == (346, 260)
    np.testing.assert_array_equal(rows[:, 0], want["t"] - want["t"][0])
    np.testing.assert_array_equal(rows[:, 1], want["x"])
    np.testing.assert_array_equal(rows[:, 2], height - 1 - want["y"])  # file origin bottom-left
    np.testing.assert_array_equal(rows[:, 3], want["p"])
    assert f"t = {want['t'][0]} µs" in notes[0] and "frames, IMU, triggers" in notes[0]


def test_es_writer_matches_the_event_stream_package_and_the_published_file(data_dir, tmp_path, monkeypatch):
    """Bytes identical to faery's published .es (read and rewritten by spikeloop) and to the encoder of
    the event_stream package, with a tiny encode buffer so overflow runs split across buffers."""
    es = pytest.importorskip("event_stream")
    monkeypatch.setattr(eventstream_writer, "BUFFER_BYTES", 4099)
    source = data_dir / "events" / "dvs_faery.es"
    out = tmp_path / "copy.es"
    convert(source, out)
    assert out.read_bytes() == source.read_bytes()
    # A synthetic stream with long gaps (overflow runs) and both polarities, against the peer's encoder.
    rng = np.random.default_rng(3)
    n = 5000
    t = np.cumsum(rng.choice([0, 1, 126, 127, 128, 254, 100_000], size=n))
    x, y, p = rng.integers(0, 640, n), rng.integers(0, 480, n), rng.integers(0, 2, n)
    ours = np.zeros(n, dtype=[("timestamp", "<i8"), ("x", "<i2"), ("y", "<i2"), ("polarity", "i1")])
    ours["timestamp"], ours["x"], ours["y"], ours["polarity"] = t + 5_000_000, x, y, p
    with EventStreamWriter(tmp_path / "ours.es", 640, 480) as writer:
        writer.write(ours[:1234])
        writer.write(ours[1234:])
    peer = np.zeros(n, dtype=es.dvs_dtype)
    peer["t"], peer["x"], peer["y"], peer["on"] = t - t[0], x, 479 - y, p == 1
    with es.Encoder(str(tmp_path / "peer.es"), "dvs", 640, 480) as encoder:
        encoder.write(peer)
    assert (tmp_path / "ours.es").read_bytes() == (tmp_path / "peer.es").read_bytes()
    decoded = np.concatenate(list(es.Decoder(str(tmp_path / "ours.es"))))
    np.testing.assert_array_equal(decoded["t"], t - t[0])


def test_es_writer_retimes_a_step_back_and_counts_it(tmp_path):
    events = np.zeros(3, dtype=[("timestamp", "<i8"), ("x", "<i2"), ("y", "<i2"), ("polarity", "i1")])
    events["timestamp"] = [100, 90, 300]
    with EventStreamWriter(tmp_path / "r.es", 4, 4) as writer:
        writer.write(events)
    _, _, rows = decode_es((tmp_path / "r.es").read_bytes())
    np.testing.assert_array_equal(rows[:, 0], [0, 0, 200])
    assert writer.events_retimed == 1


def test_cli_names_what_each_format_drops_and_refuses_misuse(davis, tmp_path):
    source, _ = davis
    run = cli("convert", source, tmp_path / "x.npy")
    assert run.returncode == 0, run.stderr
    assert "not written: frames, IMU, triggers" in run.stderr and "117,667 events" in run.stderr
    run = cli("convert", source, tmp_path / "x.es", "--compression", "lz4")
    assert run.returncode == 2 and "applies to .aedat4 outputs only" in run.stderr
    assert not (tmp_path / "x.es").exists()
    run = cli("convert", source, tmp_path / "x.txt")
    assert run.returncode == 2 and "name it .aedat4, .h5, .hdf5, .npy or .es" in run.stderr
    run = cli("convert", source, tmp_path / "X.AEDAT4")  # dv-processing aborts on an upper-case temporary name
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.AEDAT4", "x.npy"]  # no temporary left behind


def test_hdf5_without_h5py_is_a_one_line_hint(davis, tmp_path, monkeypatch, capsys):
    from pipeline.app.cli import main

    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py -> ImportError
    assert main(["convert", str(davis[0]), str(tmp_path / "x.h5")]) == 1
    assert capsys.readouterr().err.strip() == "spikeloop convert: HDF5 output needs h5py: python3 -m pip install h5py"
    assert list(tmp_path.iterdir()) == []
