"""spikeloop info / replay / convert on the real recordings, the AEDAT 4 round trip of every format,
error handling (one line on stderr, status 1), and the shipped sample recording."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dv_processing as dv
import numpy as np
import pytest

from pipeline.app.cli import main
from pipeline.core.events import DVS_EVENT_DTYPE
from recordings.base import RecordingError
from recordings.detect import detect_format, open_recording

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "recordings" / "samples" / "moving_bars.aedat4"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def event_files(data_dir) -> list[Path]:
    """Every file in shared/data/events that some registered reader accepts."""
    files = []
    for path in sorted((data_dir / "events").iterdir()):
        try:
            detect_format(path)
        except RecordingError:
            continue
        files.append(path)
    return files


@pytest.mark.parametrize("name,events,width,height,duration", [
    ("davis346_aestream.aedat4", 117_667, 346, 260, 0.130),
    ("dvxplorer_tonic.aedat4", 111_954, 320, 240, 0.590),
])
def test_info_json_aedat4(data_dir, capsys, name, events, width, height, duration):
    code, out, err = run_cli(capsys, "info", data_dir / "events" / name, "--json")
    assert code == 0, err
    facts = json.loads(out)
    assert facts["format"] == "aedat4"
    assert (facts["width"], facts["height"], facts["events"]) == (width, height, events)
    assert round((facts["t_end_us"] - facts["t_start_us"]) / 1e6, 3) == duration
    assert facts["rate_ev_s"] == pytest.approx(events / facts["duration_s"])
    if name.startswith("davis"):
        assert (facts["frames"], facts["imu_samples"], facts["triggers"]) == (3, 130, 15)
    else:
        assert (facts["frames"], facts["imu_samples"]) == (0, 475)


def test_info_text(capsys):
    code, out, _ = run_cli(capsys, "info", SAMPLE)
    assert code == 0
    assert "format:      aedat4" in out and "128 x 128" in out and "events:      26,411" in out


def test_convert_round_trip_every_format(data_dir, tmp_path, capsys):
    """AEDAT 4 round trip: every readable recording converts to a file dv-processing reopens with
    identical timestamps, x, y and polarity."""
    files = event_files(data_dir)
    assert len(files) >= 2
    for path in files:
        target = tmp_path / f"{path.name}.aedat4"
        code, _, err = run_cli(capsys, "convert", path, target)
        assert code == 0, err
        with open_recording(path) as reader:
            parts = list(reader.chunks())
            width, height = reader.header.width, reader.header.height
        expected = np.concatenate(parts, dtype=DVS_EVENT_DTYPE) if parts else np.zeros(0, DVS_EVENT_DTYPE)
        recording = dv.io.MonoCameraRecording(str(target))
        if width and height:
            assert recording.getEventResolution() == (width, height), path.name
        got = []
        while (batch := recording.getNextEventBatch()) is not None:
            got.append(batch.numpy())
        got = np.concatenate(got, dtype=DVS_EVENT_DTYPE) if got else np.zeros(0, DVS_EVENT_DTYPE)
        assert len(got) == len(expected), path.name
        for field in DVS_EVENT_DTYPE.names:
            np.testing.assert_array_equal(got[field], expected[field], err_msg=f"{path.name} {field}")


def test_convert_refuses_bad_targets(data_dir, tmp_path, capsys):
    source = data_dir / "events" / "nmnist_tonic.bin"
    code, _, err = run_cli(capsys, "convert", source, tmp_path / "out.dat")
    assert code == 2 and ".aedat4" in err
    existing = tmp_path / "exists.aedat4"
    existing.write_bytes(b"x")
    code, _, err = run_cli(capsys, "convert", source, existing)
    assert code == 2 and "--force" in err
    code, _, err = run_cli(capsys, "convert", source, existing, "--force")
    assert code == 0, err


def test_replay_sample_speed_4(capsys):
    code, _, err = run_cli(capsys, "replay", SAMPLE, "--speed", "4")
    assert code == 0, err
    assert "replayed 26,411 events in 2,994 packets" in err
    assert "packet release vs schedule" in err


def test_replay_fast_start_and_loop_flags(data_dir, capsys):
    path = data_dir / "events" / "dvxplorer_tonic.aedat4"
    code, _, err = run_cli(capsys, "replay", path, "--fast", "--start", "0.3", "--chunk-ms", "5")
    assert code == 0, err
    summary = [line for line in err.splitlines() if line.startswith("replayed")][0]
    count = int(summary.split()[1].replace(",", ""))
    with open_recording(path) as reader:
        t = np.concatenate([c["timestamp"] for c in reader.chunks()])
    assert count == int((t >= t[0] + 300_000).sum())
    code, _, err = run_cli(capsys, "replay", path, "--speed", "0")
    assert code == 2 and "--speed" in err


@pytest.mark.parametrize("make,needle", [
    (lambda d, t: t / "missing.aedat4", "no such file"),
    (lambda d, t: d / "audio" / "fsdd" / "0_george_0.wav", "not a recording format"),
    (lambda d, t: t / "empty.aedat4", "empty"),
])
def test_errors_one_line_status_2(data_dir, tmp_path, capsys, make, needle):
    (tmp_path / "empty.aedat4").write_bytes(b"")
    for command in ("info", "replay", "convert"):
        extra = [tmp_path / "o.aedat4"] if command == "convert" else []
        code, out, err = run_cli(capsys, command, make(data_dir, tmp_path), *extra)
        assert code == 2
        assert needle in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1


def test_strict_damage_and_lenient_warning(data_dir, tmp_path, capsys):
    data = (data_dir / "events" / "dvxplorer_tonic.aedat4").read_bytes()
    cut = tmp_path / "cut.aedat4"
    cut.write_bytes(data[:500_000])
    code, out, err = run_cli(capsys, "info", cut, "--json")
    assert code == 0 and "warning:" in err and "at byte 494090" in err
    assert json.loads(out)["events"] == 59_065
    code, _, err = run_cli(capsys, "info", cut, "--strict")
    assert code == 2 and err.startswith("spikeloop info: ") and "at byte 494090" in err
    code, _, err = run_cli(capsys, "replay", cut, "--fast", "--strict")
    assert code == 2 and "at byte" in err


def test_info_reports_garbage_that_decompresses(data_dir, tmp_path, capsys):
    """A flipped bit in an LZ4 event payload (no checksum in DV files) gave x = 463 on the 346x260 sensor
    with no warning from info, while launch failed on the same file later."""
    data = bytearray((data_dir / "events" / "davis346_aestream.aedat4").read_bytes())
    data[439991] ^= 1 << 7
    flipped = tmp_path / "flipped.aedat4"
    flipped.write_bytes(bytes(data))
    code, out, err = run_cli(capsys, "info", flipped, "--json")
    assert code == 0 and "warning:" in err and "is outside the 346x260 sensor" in err
    assert json.loads(out)["events"] < 117_667 and "damage" in json.loads(out)
    code, _, err = run_cli(capsys, "info", flipped, "--strict")
    assert code == 2 and err.startswith("spikeloop info: ") and "is outside the 346x260 sensor" in err


def test_console_script_error_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "info", str(tmp_path / "nope.raw")],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("spikeloop info: ") and "Traceback" not in result.stderr


def test_sample_is_generated_deterministically(tmp_path):
    from recordings.samples.generate import generate

    target = tmp_path / "bars.aedat4"
    assert generate(target) == 26_411
    assert target.read_bytes() == SAMPLE.read_bytes()
    assert 200_000 < SAMPLE.stat().st_size < 600_000


def test_sample_polarity_conventions():
    """The bright bar moving right has ON events on its right (leading) edge and OFF on its left."""
    with open_recording(SAMPLE) as reader:
        events = np.concatenate(list(reader.chunks()), dtype=DVS_EVENT_DTYPE)
    window = events[(events["timestamp"] >= 1_000_000) & (events["timestamp"] < 1_050_000)]
    bar = window[(window["y"] >= 40) & (window["y"] < 88) & (window["x"] >= 25) & (window["x"] < 50)]
    on, off = bar[bar["polarity"] == 1], bar[bar["polarity"] == 0]
    assert len(on) > 50 and len(off) > 50
    assert np.median(on["x"]) > np.median(off["x"])
