"""End-to-end loop latency: event arrival -> command bytes written on an emulated Dynamixel pty.

Workload: a 1 M events/s recording (64 x 64 sensor, moving bars + uniform noise, written to AEDAT 4 and
replayed by recordings.replay.ReplaySource) feeding the SNN benchmark's network shape (4,096 inputs ->
1,024 LIF dense -> 10 LIF, loihi backend, pipeline.snn.builders.random_lif), a drive decoder (10 outputs ->
two wheel speeds) and the real Dynamixel driver + safety layer on an emulated bus (``emulated:dynamixel``:
the twin serves a pty from a thread of this process, exactly as in the launch files), with the loop paced
at 1 kHz (dt = 1 ms, real time). Each configuration runs in its own process (scheduling policy is per
thread and inherited, so it must be chosen before any thread starts):

* ``1 ms packets``, normal scheduling and SCHED_FIFO (when permitted): the goal rows.
* ``4 ms`` and ``33 ms`` packets (SCHED_FIFO when permitted): the same loop fed the way Metavision
  (~4 ms) and ROS dvs drivers (~33 ms) batch events, measured here side by side.

Two latencies per run, both from the loop's own report (pipeline.loop.LoopReport): ``arrival`` = packet
released by the (emulated) sensor -> bytes written (the goal: p50 <= 0.5 ms, p99 <= 2 ms), and ``sensor`` =
the moment the newest event of a step could have happened (its step's end, on the paced clock) -> bytes
written, which adds the batching a driver imposes.

    python bench/loop.py [--json] [--seconds S] [--rate EV_PER_S] [--repeat N] [--realtime PRIORITY]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.app.launch import make_decode  # noqa: E402  (after the repository is on the path)
from pipeline.core.events import dvs_events  # noqa: E402
from pipeline.decoders import DriveDecoder  # noqa: E402
from pipeline.loop import Loop, LoopConfig  # noqa: E402
from pipeline.sinks import MotorSink  # noqa: E402
from pipeline.snn import build  # noqa: E402
from pipeline.snn.builders import random_lif  # noqa: E402
from pipeline.stages import StepBinner  # noqa: E402
from recordings.aedat4_writer import Aedat4Writer  # noqa: E402
from recordings.replay import ReplaySource  # noqa: E402

SIZE = 64
ANCHORS = {
    "ROS dvs drivers (default packet batching)": "~33 ms",
    "Metavision SDK (packet interval)": "~4 ms",
}
GOAL = {"latency_p50_ms": 0.5, "latency_p99_ms": 2.0}


def write_recording(path: Path, seconds: float, rate: float, seed: int = 7) -> int:
    """A SIZE x SIZE AEDAT 4 recording at ``rate`` events/s: 70 % on two moving bars, 30 % uniform noise."""
    rng = np.random.default_rng(seed)
    per_ms = int(rate / 1000)
    total = 0
    # 4,000-event packets (4 ms at 1 M ev/s, like a DV camera's packets): dv-processing decodes one packet
    # per call holding the GIL, so huge packets would stall the loop thread while the reader decodes.
    with Aedat4Writer(path, SIZE, SIZE, source="bench/loop.py synthetic 1 Mev/s", packet_events=4000) as writer:
        for block in range(int(seconds * 10)):  # 100 ms blocks
            t = np.sort(rng.integers(block * 100_000, (block + 1) * 100_000, per_ms * 100))
            bar = rng.random(len(t)) < 0.7
            x = rng.integers(0, SIZE, len(t))
            y = rng.integers(0, SIZE, len(t))
            x[bar] = ((t[bar] // 8000) + rng.integers(0, 3, bar.sum())) % SIZE
            horizontal = bar & (rng.random(len(t)) < 0.4)
            y[horizontal] = ((t[horizontal] // 12000) + rng.integers(0, 3, horizontal.sum())) % SIZE
            writer.write(dvs_events(t, x, y, rng.integers(0, 2, len(t))))
            total += len(t)
    return total


def child(config: dict) -> dict:
    """One run in this process; returns the loop's final report (with its sensor-age percentiles)."""
    realtime = "refused" if config["realtime"] else "off"
    if config["realtime"]:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(config["realtime"]))
            realtime = f"SCHED_FIFO {config['realtime']}"
        except (PermissionError, OSError) as exc:
            realtime = f"refused ({exc})"
    source = ReplaySource(config["path"], fast=True, chunk_us=config["packet_us"])
    network = random_lif(SIZE, SIZE, 1)
    runtime = build(network, backend="loihi")
    binner = StepBinner(1000, SIZE, SIZE, channels_by_polarity=False)
    decoder = DriveDecoder(10, forward=[0, 1, 2, 3, 4], left=[5, 6, 7], right=[8, 9], wheel_radius_m=0.033,
                           track_m=0.16, max_wheel_radps=6.0, window_us=50_000)
    sink = MotorSink("dynamixel", "emulated:dynamixel", [1, 2])
    loop = Loop(source, None, binner, runtime, make_decode(decoder), [sink],
                LoopConfig(mode="paced", dt_us=1000, max_lag_ms=50, report_period_s=0,
                           duration_s=config["seconds"] - 0.05))
    loop.warmup()
    report = loop.run()
    sink.close()
    out = report.as_dict()
    out.update(realtime=realtime, packet_ms=config["packet_us"] / 1000,
               sensor_p50_ms=report.sensor_latency_p50_ms if report.commands else None,
               sensor_p99_ms=report.sensor_latency_p99_ms if report.commands else None,
               missed_tick_pct=100.0 * report.missed_ticks / max(report.ticks, 1),
               events_per_s=report.events_in / max(report.wall_s, 1e-9))
    return out


def run_child(config: dict) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", json.dumps(config)], capture_output=True,
                            text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"bench child failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def median_of(results: list[dict]) -> dict:
    """Per-key median over repeated runs (numbers); other values from the first run."""
    out = dict(results[0])
    for key, value in results[0].items():
        values = [r[key] for r in results]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and all(v is not None for v in values):
            out[key] = float(np.median(values)) if isinstance(value, float) else int(np.median(values))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=3.0, help="recording length (s)")
    parser.add_argument("--rate", type=float, default=1e6, help="events per second")
    parser.add_argument("--realtime", type=int, default=10, help="SCHED_FIFO priority to try (0 = never)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration (medians are printed)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench_1mevs.aedat4"
        events = write_recording(path, args.seconds, args.rate)
        runs = []
        plan = [(1000, 0, "1 ms packets, normal scheduling"),
                (1000, args.realtime, "1 ms packets, SCHED_FIFO"),
                (4000, args.realtime, "4 ms packets (Metavision-like)"),
                (33000, args.realtime, "33 ms packets (ROS-driver-like)")]
        for packet_us, realtime, label in plan:
            if realtime == 0 and label.endswith("SCHED_FIFO"):
                continue
            repeats = [run_child({"path": str(path), "packet_us": packet_us, "realtime": realtime,
                                  "seconds": args.seconds}) for _ in range(args.repeat)]
            result = median_of(repeats)
            result.update(label=label, repeats=args.repeat)
            runs.append(result)
    summary = {
        "workload": {"events": events, "seconds": args.seconds, "rate_ev_per_s": args.rate,
                     "network": "4096 -> 1024 LIF (dense) -> 10 LIF, loihi backend",
                     "sink": "dynamixel driver + safety layer -> emulated bus on a pty", "dt_ms": 1.0,
                     "paced": "1 kHz, real time", "load_average": os.getloadavg()[0]},
        "goal": GOAL,
        "runs": runs,
        "anchors_reference_not_measured": ANCHORS,
    }
    if args.json:
        print(json.dumps(summary, default=str))
        return 0
    print(f"bench/loop.py: {events:,} events over {args.seconds:g} s ({args.rate / 1e6:g} M ev/s), "
          f"64x64 -> 4096 -> 1024 LIF -> 10, paced 1 kHz, emulated Dynamixel pty "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"goal: arrival->bytes p50 <= {GOAL['latency_p50_ms']} ms, p99 <= {GOAL['latency_p99_ms']} ms; "
          f"< 0.1 % missed ticks (medians of {args.repeat} runs per row)")
    header = (f"{'run':34s} {'sched':16s} {'arrival p50/p99/max ms':>24s} {'sensor p50/p99 ms':>18s} "
              f"{'missed ticks':>12s} {'tick late p99':>13s} {'merged':>7s} {'steps/s':>8s} {'unwritten':>9s}")
    print(header)
    for r in runs:
        arrival = f"{r['latency_p50_ms']:.3f}/{r['latency_p99_ms']:.3f}/{r['latency_max_ms']:.2f}"
        sensor = f"{r['sensor_p50_ms']:.2f}/{r['sensor_p99_ms']:.2f}" if r["sensor_p50_ms"] is not None else "-"
        print(f"{r['label']:34s} {r['realtime'][:16]:16s} {arrival:>24s} {sensor:>18s} "
              f"{r['missed_tick_pct']:>11.3f}% {r['tick_late_p99_us']:>10.0f} us {r['merged_steps']:>7d} "
              f"{r['steps_per_s']:>8.0f} "
              f"{r['commands_unwritten']:>9d}")
    print("reference anchors (published defaults, not measured here): "
          + "; ".join(f"{k}: {v}" for k, v in ANCHORS.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
