"""Several robots on one compute node: 1 robot vs 4 robots at 1 kHz in the same run, the 4 as threads of one
process (launch/robots_zenoh.toml, key lab/*/dvs: what `spikeloop launch` does) and as 4 processes (one
launch/compute_zenoh.toml each), over Zenoh on loopback.

A publisher process plays the sample recording (recordings/samples/moving_bars.aedat4, looped) in real
time as 1 ms packets on every robot's key (the same packets to each robot, sent by the same clock), and
the compute side runs the shipped launch files (stages -> dvs_steering SNN -> drive decoder -> commands
published on lab/<robot>/cmd) in live mode, dt = 1 ms. Per robot, from the loop's periodic reports after
``--skip`` seconds of warm-up (kernels load and the first packets queue while they do):

* missed steps: bins that waited longer than max_lag_ms (10 ms) and were merged (the live loop's missed
  ticks), and packets dropped by a full queue;
* sensor latency p99: event-to-command latency from the publisher's send time (clock offset corrected),
  the median over 1 s windows of each window's p99, and the worst window.

    python -m bench.robots [--seconds 12] [--skip 4] [--json]      (from the repository root)
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "recordings" / "samples" / "moving_bars.aedat4"
CLI = [sys.executable, "-m", "pipeline.app.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _publish(prefix: str, robots: int, stop) -> None:
    """Child process: the looped sample as 1 ms packets, in real time, on PREFIX/robot<i>/dvs."""
    from devices.transport.zenoh_link import PacketPublisher
    from pipeline.core.clock import wait_until
    from recordings.replay import ReplaySource

    source = ReplaySource(SAMPLE, fast=True, loop=True, chunk_us=1000)
    publishers = [PacketPublisher(f"{prefix}/robot{i}/dvs", source.info) for i in range(robots)]
    for publisher in publishers:
        publisher.wait_for_subscribers(60)
    start = time.perf_counter_ns()
    for k, packet in enumerate(source.packets()):
        if stop.is_set():
            break
        wait_until(start + k * 1_000_000, 300_000)
        for publisher in publishers:
            publisher.send(packet)
    for publisher in publishers:
        publisher.close()
    source.close()


def _sets(**values) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--set", f"{key.replace('__', '.')}={json.dumps(value)}")]


def _common(prefix: str, seconds: float) -> list[str]:
    return ["--headless", *_sets(sinks__robot__spikes_key="", sinks__robot__telemetry_key="",
                                 loop__duration_s=seconds, loop__report_period_s=1.0, source__first_packet_s=60.0)]


def _stats(lines: list[dict], skip_s: float) -> dict:
    """One robot's numbers from its stats/final events (see the module docstring)."""
    windows = [e for e in lines if e["event"] == "stats"]
    final = [e for e in lines if e["event"] == "final"][-1]
    base = windows[int(skip_s) - 1] if len(windows) >= skip_s else {"merged_steps": 0, "dropped_packets": 0,
                                                                     "steps": 0}
    measured = windows[int(skip_s):]
    p99 = [w["sensor_latency_p99_ms"] for w in measured if w.get("sensor_latency_p99_ms") is not None]
    return {
        "steps": final["steps"] - base["steps"],
        "missed_steps": final["merged_steps"] - base["merged_steps"],
        "dropped_packets": final["dropped_packets"] - base["dropped_packets"],
        "sensor_latency_p99_ms": statistics.median(p99) if p99 else float("nan"),
        "sensor_latency_p99_worst_ms": max(p99) if p99 else float("nan"),
        "sensor_latency_p50_ms": statistics.median(w["sensor_latency_p50_ms"] for w in measured
                                                   if w.get("sensor_latency_p50_ms") is not None) if p99 else float("nan"),
    }


def _events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def run_case(robots: int, processes: bool, seconds: float, skip_s: float) -> list[dict]:
    """Robots served by one process (threads) or one process each; per-robot numbers."""
    prefix = f"bench-robots/{uuid.uuid4().hex[:8]}"
    if processes:
        commands = [[*CLI, "launch", str(ROOT / "launch" / "compute_zenoh.toml"), "--source",
                     f"zenoh:{prefix}/robot{i}/dvs", *_common(prefix, seconds),
                     *_sets(sinks__robot__key=f"{prefix}/robot{i}/cmd")] for i in range(robots)]
    else:
        commands = [[*CLI, "launch", str(ROOT / "launch" / "robots_zenoh.toml"), "--source", f"zenoh:{prefix}/*/dvs",
                     *_common(prefix, seconds), *_sets(sinks__robot__key=f"{prefix}/*/cmd")]]
    computes = [subprocess.Popen(c, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                for c in commands]
    stop = mp.get_context("spawn").Event()
    publisher = mp.get_context("spawn").Process(target=_publish, args=(prefix, robots, stop))
    publisher.start()
    try:
        errs = [c.communicate(timeout=seconds * 4 + 120)[1] for c in computes]
    finally:
        stop.set()
        publisher.join(timeout=30)
        if publisher.is_alive():
            publisher.kill()
        for c in computes:
            if c.poll() is None:
                c.kill()
    events = [e for err in errs for e in _events(err)]
    if processes:
        by_robot = {f"robot{i}": _events(err) for i, err in enumerate(errs)}
    else:
        by_robot = {}
        for e in events:
            if "robot" in e and isinstance(e["robot"], str):
                by_robot.setdefault(e["robot"].split("/")[-2], []).append(e)
    out = []
    for name, lines in sorted(by_robot.items()):
        if not any(e["event"] == "final" for e in lines):
            raise RuntimeError(f"{name}: no final report:\n" + "\n".join(errs))
        out.append({"robot": name, **_stats(lines, skip_s)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="sensor seconds per run (default 12)")
    parser.add_argument("--skip", type=float, default=4.0, help="warm-up seconds left out (default 4)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    cases = {"1 robot": (1, False), "4 robots, threads": (4, False), "4 robots, processes": (4, True)}
    results = {name: run_case(n, processes, args.seconds, args.skip) for name, (n, processes) in cases.items()}
    if args.json:
        print(json.dumps(results))
        return
    print(f"{'case':22s} {'robot':7s} {'steps':>6s} {'missed':>7s} {'dropped':>8s} {'p50 ms':>7s} {'p99 ms':>7s} "
          f"{'worst p99':>9s}")
    for name, rows in results.items():
        for row in rows:
            print(f"{name:22s} {row['robot']:7s} {row['steps']:6d} {row['missed_steps']:7d} {row['dropped_packets']:8d} "
                  f"{row['sensor_latency_p50_ms']:7.2f} {row['sensor_latency_p99_ms']:7.2f} "
                  f"{row['sensor_latency_p99_worst_ms']:9.2f}")
    one = results["1 robot"][0]
    for name in ("4 robots, threads", "4 robots, processes"):
        rows = results[name]
        missed = sum(r["missed_steps"] for r in rows) / len(rows)
        p99 = statistics.median(r["sensor_latency_p99_ms"] for r in rows)
        print(f"{name}: missed steps per robot {missed:.1f} vs {one['missed_steps']} for 1 robot; "
              f"median p99 {p99:.2f} ms vs {one['sensor_latency_p99_ms']:.2f} ms "
              f"(x{p99 / one['sensor_latency_p99_ms']:.2f})")


if __name__ == "__main__":
    main()
