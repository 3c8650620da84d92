"""Frame-to-event emulator and the webcam/video source built on it."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from devices.dvs_emulator import DvsEmulator, EmulatorConfig, log_table
from devices.webcam import CameraError, WebcamSource
from pipeline.core.events import DVS_EVENT_DTYPE

QUIET = EmulatorConfig(sigma=0.0, leak_rate_hz=0.0, shot_noise_hz=0.0, refractory_us=0)


def bar_frame(x0: int, width: int = 64, height: int = 32, bar: int = 6) -> np.ndarray:
    frame = np.full((height, width), 20, np.uint8)
    frame[:, x0:x0 + bar] = 220
    return frame


def bar_video(path, frames: int):
    """A 25 fps MJPG video of the bar moving 2 px per frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 32), False)
    for k in range(frames):
        writer.write(bar_frame(5 + 2 * k))
    writer.release()
    return path


def test_a_bright_bar_moving_right_gives_on_at_its_front_and_off_at_its_back():
    emulator = DvsEmulator(64, 32, QUIET)
    emulator.emulate(bar_frame(10), 0)
    events = emulator.emulate(bar_frame(13), 10_000)
    assert events.dtype == DVS_EVENT_DTYPE
    on, off = events[events["polarity"] == 1], events[events["polarity"] == 0]
    assert set(np.unique(on["x"])) == {16, 17, 18}
    assert set(np.unique(off["x"])) == {10, 11, 12}
    assert np.all((events["timestamp"] >= 0) & (events["timestamp"] <= 10_000))
    assert np.all(np.diff(events["timestamp"]) >= 0)


def test_event_count_follows_the_log_contrast():
    emulator = DvsEmulator(8, 8, QUIET)
    emulator.emulate(np.full((8, 8), 50, np.uint8), 0)
    events = emulator.emulate(np.full((8, 8), 200, np.uint8), 1_000)
    table = log_table(QUIET)
    expected = int(np.floor((table[200] - table[50]) / 0.2 + 1e-6))
    assert len(events) == 64 * expected
    assert np.all(events["polarity"] == 1)


def test_crossing_times_are_interpolated_between_frames():
    emulator = DvsEmulator(1, 1, QUIET)
    emulator.emulate(np.array([[10]], np.uint8), 0)
    events = emulator.emulate(np.array([[250]], np.uint8), 30_000)
    assert len(events) > 5
    gaps = np.diff(events["timestamp"])
    assert events["timestamp"][0] < 30_000 and events["timestamp"][-1] <= 30_000
    assert np.all(gaps > 0)


def test_refractory_period_drops_close_events():
    emulator = DvsEmulator(1, 1, EmulatorConfig(sigma=0.0, leak_rate_hz=0.0, shot_noise_hz=0.0, refractory_us=5_000))
    emulator.emulate(np.array([[10]], np.uint8), 0)
    events = emulator.emulate(np.array([[250]], np.uint8), 30_000)
    assert np.all(np.diff(events["timestamp"]) > 5_000)


def test_shot_noise_rate_and_determinism():
    config = EmulatorConfig(shot_noise_hz=5.0, leak_rate_hz=0.0, seed=3)
    runs = []
    for _ in range(2):
        emulator = DvsEmulator(100, 100, config)
        static = np.full((100, 100), 128, np.uint8)
        events = [emulator.emulate(static, k * 10_000) for k in range(101)]
        runs.append(np.concatenate(events))
    assert np.array_equal(runs[0], runs[1])
    rate = len(runs[0]) / (100 * 100 * 1.0)
    assert 4.0 < rate < 6.0
    assert 0.4 < runs[0]["polarity"].mean() < 0.6


def test_threshold_mismatch_spreads_counts_across_pixels():
    emulator = DvsEmulator(50, 50, EmulatorConfig(sigma=0.05, leak_rate_hz=0.0, shot_noise_hz=0.0, refractory_us=0))
    emulator.emulate(np.full((50, 50), 30, np.uint8), 0)
    events = emulator.emulate(np.full((50, 50), 250, np.uint8), 1_000)
    per_pixel = np.bincount(events["y"].astype(int) * 50 + events["x"], minlength=2500)
    assert per_pixel.min() < per_pixel.max()


def test_bad_frames_and_parameters_are_rejected():
    emulator = DvsEmulator(8, 8)
    with pytest.raises(ValueError, match="expected uint8"):
        emulator.emulate(np.zeros((4, 4), np.uint8), 0)
    emulator.emulate(np.zeros((8, 8), np.uint8), 100)
    with pytest.raises(ValueError, match="not after"):
        emulator.emulate(np.zeros((8, 8), np.uint8), 100)
    with pytest.raises(ValueError, match="c_on"):
        DvsEmulator(8, 8, EmulatorConfig(c_on=0.0))


def test_video_file_source_streams_events_of_the_moving_bar(tmp_path):
    path = bar_video(tmp_path / "bar.avi", frames=20)
    source = WebcamSource(str(path), config=QUIET, speed=None)
    try:
        packets = list(source.packets())
    finally:
        source.close()
    assert source.info.width == 64 and source.info.height == 32
    assert len(packets) == 19
    times = [p.t_end_us for p in packets]
    assert np.all(np.diff(times) == 40_000)
    events = np.concatenate([p.events for p in packets])
    on = events[events["polarity"] == 1]
    assert len(on) > 100
    early, late = on[on["timestamp"] < times[5]], on[on["timestamp"] > times[-5]]
    assert late["x"].mean() > early["x"].mean() + 20


def test_a_video_file_is_paced_like_a_camera(tmp_path):
    path = bar_video(tmp_path / "bar.avi", frames=11)
    source = WebcamSource(str(path), config=QUIET, speed=2.0)
    started = time.monotonic()
    try:
        assert len(list(source.packets())) == 10
    finally:
        source.close()
    assert time.monotonic() - started >= 0.4 * 0.5 * 0.95


def test_missing_camera_and_file_give_clear_errors(tmp_path):
    with pytest.raises(CameraError, match="does not exist"):
        WebcamSource(str(tmp_path / "nope.mp4"))
    with pytest.raises(CameraError, match="camera 57"):
        WebcamSource(57)
