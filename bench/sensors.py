"""Sensor front ends: frame-to-event emulator, world renderer, audio cochlea. One core, medians.

    python bench/sensors.py [--json] [--repeats N]

Goals (issue 5): emulator 640x480 >= 200 frames/s; world renderer >= 500 frames/s; cochlea >= 50x real
time for 64 channels. Each number is printed next to what it is compared with, measured in this run:
the emulator against a plain numpy implementation of the same pixel model, the cochlea against scipy's
``sosfilt`` filterbank with the same coefficients.
"""
from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
import time
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devices.audio import Cochlea, rms_gain  # noqa: E402
from devices.dvs_emulator import DvsEmulator, EmulatorConfig, log_table  # noqa: E402
from devices.world import World  # noqa: E402
from recordings.datasets import shared_data_dir  # noqa: E402


def scene(kind: str, k: int, width: int = 640, height: int = 480) -> np.ndarray:
    """Synthetic 8-bit frames: 'static', 'typical' (an object moving over a still background: ~5 % of
    pixels change) or 'busy' (a full-frame moving texture: every pixel changes)."""
    yy, xx = np.mgrid[0:height, 0:width]
    if kind == "static":
        return np.full((height, width), 110, np.uint8)
    if kind == "typical":
        frame = (90 + 40 * ((xx // 40 + yy // 40) % 2)).astype(np.uint8)
        cx, cy = 100 + 6 * k, 240
        frame[(xx - cx) ** 2 + (yy - cy) ** 2 < 70 ** 2] = 230
        return frame
    return (127 + 100 * np.sin((xx + 3 * k) / 15.0) * np.cos(yy / 20.0)).astype(np.uint8)


def numpy_emulator_frame(l_prev, l_ref, table, frame, c):
    """Reference: the same log/threshold model in vectorised numpy (event counts only, no timestamps)."""
    new = table[frame.ravel()]
    diff = new - l_ref
    n_on = np.floor(np.maximum(diff, 0) / c).astype(np.int64)
    n_off = np.floor(np.maximum(-diff, 0) / c).astype(np.int64)
    l_ref += (n_on - n_off) * c
    l_prev[:] = new
    return int(n_on.sum() + n_off.sum())


def bench_emulator(repeats: int) -> list[dict]:
    results = []
    config = EmulatorConfig()
    DvsEmulator(8, 8, config).warmup()
    for kind in ("static", "typical", "busy"):
        frames = [scene(kind, k) for k in range(40)]
        runs, events = [], 0
        for _ in range(repeats):
            emulator = DvsEmulator(640, 480, config)
            emulator.emulate(frames[0], 0)
            start = time.perf_counter()
            for k, frame in enumerate(frames[1:], 1):
                events = len(emulator.emulate(frame, k * 5_000))
            runs.append((len(frames) - 1) / (time.perf_counter() - start))
        table = log_table(config)
        ref_runs = []
        for _ in range(repeats):
            l_prev = table[frames[0].ravel()].copy()
            l_ref = l_prev.copy()
            start = time.perf_counter()
            for frame in frames[1:]:
                numpy_emulator_frame(l_prev, l_ref, table, frame, np.float32(0.2))
            ref_runs.append((len(frames) - 1) / (time.perf_counter() - start))
        results.append({"stage": f"emulator 640x480 {kind}", "fps": statistics.median(runs),
                        "numpy_reference_fps": statistics.median(ref_runs), "events_last_frame": events,
                        "goal_fps": 200})
    return results


def bench_world(repeats: int) -> dict:
    world = World(seed=0)
    world.render()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(1000):
            world.step(5.0, 5.5, 0.002)
            world.render()
        runs.append(1000 / (time.perf_counter() - start))
    return {"stage": f"world step+render {world.camera.width}x{world.camera.height}", "fps": statistics.median(runs),
            "goal_fps": 500}


def bench_cochlea(repeats: int) -> dict:
    from scipy.signal import sosfilt

    files = sorted(glob.glob(str(shared_data_dir() / "audio" / "fsdd" / "*_0.wav")))[:30]
    clips = []
    for name in files:
        with wave.open(name) as w:
            clips.append(np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32768.0)
    if not clips:
        raise SystemExit(f"no FSDD clips under {shared_data_dir()} (set SPIKELOOP_DATA)")
    audio_s = sum(len(c) for c in clips) / 8000.0
    cochlea = Cochlea(8000.0)
    cochlea.process(np.zeros(64))
    ours, scipy_runs, spikes = [], [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        spikes = 0
        for clip in clips:
            cochlea.reset()
            cochlea.input_gain = rms_gain(clip, 0.3)
            spikes += len(cochlea.process(clip))
        ours.append(audio_s / (time.perf_counter() - start))
        start = time.perf_counter()
        for clip in clips:
            for sos in np.array(cochlea.sos):
                np.maximum(sosfilt(sos, clip * 3.0), 0.0)
        scipy_runs.append(audio_s / (time.perf_counter() - start))
    return {"stage": "cochlea 64 ch (filterbank + LIF)", "realtime_x": statistics.median(ours),
            "scipy_sosfilt_filterbank_only_realtime_x": statistics.median(scipy_runs),
            "spikes_per_s": spikes / audio_s, "audio_s": audio_s, "goal_realtime_x": 50}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = {"emulator": bench_emulator(args.repeats), "world": bench_world(args.repeats),
               "cochlea": bench_cochlea(args.repeats)}
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for row in results["emulator"]:
        print(f"{row['stage']:32s} {row['fps']:8.0f} frames/s (goal >= {row['goal_fps']}); "
              f"numpy same model, counts only: {row['numpy_reference_fps']:.0f} frames/s; "
              f"{row['events_last_frame']:,} events/frame")
    w = results["world"]
    print(f"{w['stage']:32s} {w['fps']:8.0f} frames/s (goal >= {w['goal_fps']})")
    c = results["cochlea"]
    print(f"{c['stage']:32s} {c['realtime_x']:8.0f} x real time (goal >= {c['goal_realtime_x']}); "
          f"scipy sosfilt filterbank alone: {c['scipy_sosfilt_filterbank_only_realtime_x']:.0f} x; "
          f"{c['spikes_per_s']:.0f} spikes/s on {c['audio_s']:.1f} s of FSDD speech")
    return 0


if __name__ == "__main__":
    sys.exit(main())
