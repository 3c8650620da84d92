"""Several robots on one compute node: 1 robot vs 4 robots at 1 kHz in the same run, for each way of running
them (``[controller] robots`` = "scheduler": one thread steps all; "threads": a loop thread each;
"processes": a process each; launch/robots_zenoh.toml, key lab/*/dvs), over Zenoh on loopback. The cases
alternate (1 robot, 4 robots, next mode, ..., ``--repeats`` rounds), so load from other jobs hits both alike;
the load average and ``uptime`` are printed with the medians and the 4-vs-1 ratios.

A publisher process plays the sample recording (recordings/samples/moving_bars.aedat4, looped) in real
time as 1 ms packets on every robot's key (the same packets to each robot, sent by the same clock), and
the compute side runs the shipped launch files (stages -> dvs_steering SNN -> drive decoder -> commands
published on lab/<robot>/cmd) in live mode, dt = 1 ms. Per robot, from the loop's periodic reports after
``--skip`` seconds of warm-up (kernels load and the first packets queue while they do):

* missed steps: bins that waited longer than max_lag_ms (10 ms) and were merged (the live loop's missed
  ticks, counted by the same Loop code for 1 and 4 robots in every mode), and packets dropped by a full queue;
* CPU per tick: user+sys of the compute process and its children (/proc) over the measured window, per
  robot per 1 ms of sensor time;
* sensor latency p99: event-to-command latency from the publisher's send time (clock offset corrected),
  the median over 1 s windows of each window's p99, and the worst window.

    python -m bench.robots [--seconds 12] [--skip 4] [--repeats 3] [--modes scheduler,threads,processes] [--json]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "recordings" / "samples" / "moving_bars.aedat4"
CLI = [sys.executable, "-m", "pipeline.app.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _publish(prefix: str, robots: int, stop, cpu) -> None:
    """Child process: the looped sample as 1 ms packets, in real time, on PREFIX/robot<i>/dvs; puts its
    own CPU seconds on ``cpu`` at the end."""
    from devices.transport.zenoh_link import PacketPublisher
    from pipeline.core.clock import wait_until
    from recordings.replay import ReplaySource

    source = ReplaySource(SAMPLE, fast=True, loop=True, chunk_us=1000)
    publishers = [PacketPublisher(f"{prefix}/robot{i}/dvs", source.info, shared=True) for i in range(robots)]
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
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu.put(usage.ru_utime + usage.ru_stime)


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


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + sys) used so far by process ``pid`` and its live descendants (/proc)."""
    total, todo = 0.0, [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def run_case(robots: int, mode: str, seconds: float, skip_s: float) -> tuple[list[dict], float]:
    """Robots served by the compute launch in ``mode`` (threads | processes | scheduler): per-robot numbers,
    and the compute side's steady-state CPU per robot per 1 ms tick: its process tree's CPU over the
    measured window (from ``skip_s`` after the last robot started until 1 s before the end) divided by
    robots x 1,000 ticks per second of that window."""
    prefix = f"bench-robots/{uuid.uuid4().hex[:8]}"
    command = [*CLI, "launch", str(ROOT / "launch" / "robots_zenoh.toml"), "--source", f"zenoh:{prefix}/*/dvs",
               *_common(prefix, seconds), *_sets(sinks__robot__key=f"{prefix}/*/cmd", controller__robots=mode)]
    compute = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    started: list[float] = []

    def read() -> None:
        for line in compute.stderr:
            lines.append(line)
            if not started and '"stats"' in line:
                started.append(time.monotonic())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    context = mp.get_context("spawn")
    stop, cpu = context.Event(), context.Queue()
    publisher = context.Process(target=_publish, args=(prefix, robots, stop, cpu))
    publisher.start()
    cpu_s = float("nan")
    try:
        deadline = time.monotonic() + 180
        while not started and time.monotonic() < deadline and compute.poll() is None:
            time.sleep(0.05)
        if started:  # the first robot's first report; the others started within a few ms (same publisher)
            window = seconds - skip_s - 1.0
            time.sleep(max(0.0, started[0] + skip_s - 1.0 - time.monotonic()))
            before = _tree_cpu_s(compute.pid)
            time.sleep(window)
            cpu_s = (_tree_cpu_s(compute.pid) - before) / (robots * window * 1000)
        compute.wait(timeout=seconds * 4 + 120)
        reader.join(timeout=30)
    finally:
        stop.set()
        cpu.get(timeout=60)
        publisher.join(timeout=30)
        if publisher.is_alive():
            publisher.kill()
        if compute.poll() is None:
            compute.kill()
    err = "".join(lines)
    by_robot: dict[str, list[dict]] = {}
    for e in _events(err):
        if isinstance(e.get("robot"), str):
            by_robot.setdefault(e["robot"].split("/")[-2], []).append(e)
    out = []
    for name, robot_lines in sorted(by_robot.items()):
        if not any(e["event"] == "final" for e in robot_lines):
            raise RuntimeError(f"{name}: no final report:\n{err}")
        out.append({"robot": name, **_stats(robot_lines, skip_s)})
    if len(out) != robots:
        raise RuntimeError(f"{len(out)} of {robots} robots reported:\n{err}")
    return out, cpu_s


def _summary(rows: list[dict]) -> dict:
    """Per-robot means of one run: missed steps, dropped packets, median p50/p99 sensor latency."""
    return {"missed_steps": statistics.mean(r["missed_steps"] for r in rows),
            "dropped_packets": statistics.mean(r["dropped_packets"] for r in rows),
            "p50_ms": statistics.median(r["sensor_latency_p50_ms"] for r in rows),
            "p99_ms": statistics.median(r["sensor_latency_p99_ms"] for r in rows)}


def _ratio(a: float, b: float) -> str:
    return f"x{a / b:.2f}" if b else ("x1.00" if a == b else "inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="sensor seconds per run (default 12)")
    parser.add_argument("--skip", type=float, default=4.0, help="warm-up seconds left out (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="A/B rounds per mode: 1 robot, then 4 (default 3)")
    parser.add_argument("--modes", default="scheduler,threads,processes",
                        help="[controller] robots values to measure, comma-separated (default all three)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("scheduler", "threads", "processes")]
    if bad:
        parser.error(f"--modes: unknown {', '.join(bad)} (scheduler, threads, processes)")
    cases = {f"{n} robot{'s' if n > 1 else ''}, {mode}": (n, mode) for mode in modes for n in (1, 4)}
    loads = [os.getloadavg()[0]]
    uptimes = [subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()]
    runs: dict[str, list] = {name: [] for name in cases}
    for _ in range(args.repeats):  # A/B/A/B: a burst of load elsewhere hits 1 and 4 robots alike
        for name, (n, mode) in cases.items():
            rows, cpu = run_case(n, mode, args.seconds, args.skip)
            runs[name].append({"rows": rows, "cpu_us_per_tick": cpu * 1e6, **_summary(rows)})
            loads.append(os.getloadavg()[0])
    uptimes.append(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    keys = ("missed_steps", "dropped_packets", "p50_ms", "p99_ms", "cpu_us_per_tick")
    medians = {name: {key: statistics.median(run[key] for run in per_case) for key in keys}
               for name, per_case in runs.items()}
    if args.json:
        print(json.dumps({"runs": runs, "medians": medians, "load_average": loads, "uptime": uptimes}))
        return
    print(f"load average (1 min) during the runs: {min(loads):.1f} .. {max(loads):.1f} on {os.cpu_count()} CPUs")
    print("\n".join(f"  uptime: {u}" for u in uptimes))
    print(f"{'case':24s} {'missed/robot':>12s} {'dropped/robot':>13s} {'p50 ms':>7s} {'p99 ms':>7s} "
          f"{'CPU us/tick':>11s}   (medians of {args.repeats} runs, {args.seconds - args.skip:g} s measured each;"
          f" CPU per robot per 1 ms tick)")
    for name, m in medians.items():
        print(f"{name:24s} {m['missed_steps']:12.1f} {m['dropped_packets']:13.1f} {m['p50_ms']:7.2f} "
              f"{m['p99_ms']:7.2f} {m['cpu_us_per_tick']:11.0f}")
    for mode in modes:
        one, four = medians[f"1 robot, {mode}"], medians[f"4 robots, {mode}"]
        print(f"{mode}: 4 robots vs 1 in the same run: missed steps per robot {four['missed_steps']:.1f} vs "
              f"{one['missed_steps']:.1f} ({_ratio(four['missed_steps'], one['missed_steps'])}), "
              f"p99 {_ratio(four['p99_ms'], one['p99_ms'])}, "
              f"CPU per tick {_ratio(four['cpu_us_per_tick'], one['cpu_us_per_tick'])}"
              f"; per-run missed 1 robot {[round(r['missed_steps']) for r in runs[f'1 robot, {mode}']]}, "
              f"4 robots {[round(r['missed_steps']) for r in runs[f'4 robots, {mode}']]}")


if __name__ == "__main__":
    main()
