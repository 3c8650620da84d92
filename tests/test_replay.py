"""ReplaySource: re-chunking into fixed sensor-time windows, determinism, looping, seeking, pacing."""
from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from pipeline.core.events import DVS_EVENT_DTYPE
from recordings.aedat4_writer import write_aedat4
from recordings.detect import open_recording
from recordings.replay import ReplaySource

DVX = "dvxplorer_tonic.aedat4"


def all_events(path) -> np.ndarray:
    with open_recording(path) as reader:
        return np.concatenate(list(reader.chunks()), dtype=DVS_EVENT_DTYPE)


def assert_same(a, b):
    assert len(a) == len(b)
    for name in DVS_EVENT_DTYPE.names:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("name,chunk_us", [(DVX, 1000), ("dvs128_walking_a.aedat", 5000),
                                           ("evt2_faery.raw", 250)])
def test_windows_cover_the_recording_exactly(data_dir, name, chunk_us):
    path = data_dir / "events" / name
    expected = all_events(path)
    with ReplaySource(path, fast=True, chunk_us=chunk_us) as source:
        assert source.info.kind == "dvs" and callable(source.close)
        packets = list(source.packets())
        t0 = source.t0_us
    assert t0 == expected["timestamp"][0]
    ends = np.array([p.t_end_us for p in packets])
    np.testing.assert_array_equal(ends, t0 + chunk_us * np.arange(1, len(packets) + 1))
    assert ends[-1] > expected["timestamp"][-1] >= ends[-1] - chunk_us
    for packet in packets:
        t = packet.events["timestamp"]
        assert packet.events.dtype == DVS_EVENT_DTYPE
        assert np.all((t >= packet.t_end_us - chunk_us) & (t < packet.t_end_us))
    assert_same(np.concatenate([p.events for p in packets], dtype=DVS_EVENT_DTYPE), expected)


def test_silence_gives_empty_packets(data_dir):
    """The DVS128 walking scene has gaps longer than 1 ms: empty packets keep sensor time moving."""
    with ReplaySource(data_dir / "events" / "dvs128_walking_a.aedat", fast=True) as source:
        lengths = np.array([len(p) for p in source.packets()])
    assert (lengths == 0).sum() > 100
    assert lengths.sum() == 19_182


def test_deterministic(data_dir):
    def run():
        with ReplaySource(data_dir / "events" / DVX, fast=True, chunk_us=700) as source:
            return [(p.t_end_us, *(p.events[name].tobytes() for name in DVS_EVENT_DTYPE.names))
                    for p in source.packets()]

    assert run() == run()


def test_loop_keeps_time_increasing(data_dir):
    path = data_dir / "events" / "nmnist_tonic.bin"
    once = all_events(path)
    with ReplaySource(path, fast=True, loop=True, chunk_us=1000) as source:
        packets = []
        for packet in source.packets():
            packets.append(packet)
            if source.loops_completed >= 3:
                break
    ends = np.array([p.t_end_us for p in packets])
    assert np.all(np.diff(ends) == 1000)
    events = np.concatenate([p.events for p in packets], dtype=DVS_EVENT_DTYPE)
    assert np.all(np.diff(events["timestamp"]) >= 0)
    n = len(once)
    assert len(events) >= 3 * n
    span = int(events["timestamp"][n] - once["timestamp"][0])
    assert span % 1000 == 0 and span > once["timestamp"][-1] - once["timestamp"][0]
    for k in range(3):
        part = events[k * n:(k + 1) * n]
        np.testing.assert_array_equal(part["timestamp"] - k * span, once["timestamp"])
        np.testing.assert_array_equal(part["x"], once["x"])


def test_start_offset(data_dir):
    path = data_dir / "events" / DVX
    expected = all_events(path)
    begin = expected["timestamp"][0] + 250_000
    with ReplaySource(path, fast=True, start_us=250_000) as source:
        packets = list(source.packets())
        assert source.t0_us >= begin
    events = np.concatenate([p.events for p in packets], dtype=DVS_EVENT_DTYPE)
    assert_same(events, expected[expected["timestamp"] >= begin])
    with ReplaySource(path, fast=True, start_us=10**9) as source:
        assert list(source.packets()) == []


def test_paced_never_early_and_speed_scales(data_dir):
    """speed=10 on the 0.31 s N-MNIST sample takes >= 0.031 s wall; no packet is released before its
    schedule; fast mode ignores the clock."""
    path = data_dir / "events" / "nmnist_tonic.bin"
    with ReplaySource(path, speed=10.0) as source:
        start = time.perf_counter()
        packets = list(source.packets())
        elapsed = time.perf_counter() - start
        assert all(p.arrival_ns >= source.scheduled_ns(p.t_end_us) for p in packets)
    duration_s = (packets[-1].t_end_us - source.t0_us) / 1e6
    assert elapsed >= duration_s / 10 * 0.95
    assert np.all(np.diff([p.arrival_ns for p in packets]) >= 0)


def test_bounded_memory(tmp_path):
    """Replaying a 2 M event recording (32 MB of events) never holds more than a few chunks."""
    n = 2_000_000
    events = np.zeros(n, dtype=DVS_EVENT_DTYPE)
    events["timestamp"] = np.arange(n) // 4
    events["x"] = np.arange(n) % 640
    path = tmp_path / "long.aedat4"
    write_aedat4(path, events, 640, 480)
    with ReplaySource(path, fast=True, chunk_us=10_000) as source:
        tracemalloc.start()
        count = sum(len(p) for p in source.packets())
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert count == n
    assert peak < n * 16 / 4


def test_bad_arguments(data_dir, tmp_path):
    path = data_dir / "events" / DVX
    for kwargs in ({"speed": 0}, {"chunk_us": 0}, {"start_us": -1}):
        with pytest.raises(ValueError):
            ReplaySource(path, **kwargs)
    from recordings.base import RecordingError

    with pytest.raises(RecordingError, match="no such file"):
        ReplaySource(tmp_path / "missing.aedat4")
