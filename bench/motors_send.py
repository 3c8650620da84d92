"""send() latency of the safety-wrapped motor controllers on a pty, against a raw os.write baseline.

For each protocol an emulated twin runs in a forked child process (so it does not share our GIL, like a
real device); the parent opens it with ``open_motors`` and calls ``send()`` at ``--rate`` Hz. Reported
per protocol, measured in the same run (µs): ``send()`` call duration p50/p99/max (encode + limits +
non-blocking write), the share of sends that were coalesced (returned 0: wire or half-duplex bus busy),
``encode_velocity`` alone, and the floor: a raw ``os.write`` of the same packet to the same pty.

    python bench/motors_send.py [--protocol dynamixel] [--n 3000] [--rate 1000] [--feedback-hz 50] [--json]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devices.motors import open_motors  # noqa: E402
from devices.motors.registry import start_twin  # noqa: E402

CASES = {
    "dynamixel": ([1, 2], {}),
    "roboclaw": ([1, 2], {"counts_per_rev": 2048}),
    "maestro": ([0, 1], {"full_scale_rad_s": 6.0}),
    "odrive": ([0, 1], {}),
    "firmata": ([9, 10], {"full_scale_rad_s": 6.0}),
}


def _serve_twin(protocol: str, ids: list[int], conn) -> None:
    twin = start_twin(protocol, ids)
    conn.send(twin.path)
    conn.recv()
    twin.close()


def _percentiles(ns: np.ndarray) -> dict[str, float]:
    us = ns / 1e3
    return {"p50_us": round(float(np.percentile(us, 50)), 2), "p99_us": round(float(np.percentile(us, 99)), 2),
            "max_us": round(float(us.max()), 1)}


def _paced(n: int, rate_hz: float, call) -> np.ndarray:
    """Call ``call(i)`` n times at ``rate_hz`` (spin-paced); after a stall the schedule restarts from now
    instead of bursting to catch up, as a real-time loop merging late ticks would."""
    period = 1.0 / rate_hz
    durations = np.empty(n, dtype=np.int64)
    next_t = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter_ns()
        call(i)
        durations[i] = time.perf_counter_ns() - t0
        next_t = max(next_t + period, time.perf_counter())
        while time.perf_counter() < next_t:
            pass
    return durations


def bench(protocol: str, n: int, rate_hz: float, feedback_hz: float) -> dict:
    ids, opts = CASES[protocol]
    parent, child = mp.get_context("fork").Pipe()
    proc = mp.get_context("fork").Process(target=_serve_twin, args=(protocol, ids, child), daemon=True)
    proc.start()
    path = parent.recv()
    rng = np.random.default_rng(0)
    commands = rng.uniform(-2.0, 2.0, size=(n, len(ids)))
    try:
        controller = open_motors(protocol, path, ids, baud=1_000_000, feedback_hz=feedback_hz, **opts)
        written = np.zeros(n, dtype=bool)

        def send(i: int) -> None:
            written[i] = controller.send(commands[i]) > 0

        send_ns = _paced(n, rate_hz, send)
        counters = controller.counters
        last_error = controller.link.last_error
        packets = [controller.driver.encode_velocity(c) for c in commands[:200]]
        t0 = time.perf_counter_ns()
        for c in commands[:2000]:
            controller.driver.encode_velocity(c)
        encode_us = (time.perf_counter_ns() - t0) / min(n, 2000) / 1e3
        controller.close()
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)

        def raw_write(i: int) -> None:
            try:
                os.write(fd, packets[i % len(packets)])
            except BlockingIOError:  # the twin process was descheduled and the pty buffer is full
                pass

        try:
            raw_ns = _paced(n, rate_hz, raw_write)
        finally:
            os.close(fd)
    finally:
        parent.send("stop")
        proc.join(timeout=5)
    return {"protocol": protocol, "n": n, "rate_hz": rate_hz, "send": _percentiles(send_ns),
            "written_share": round(float(written.mean()), 4), "encode_us": round(encode_us, 2),
            "raw_os_write": _percentiles(raw_ns), "bytes_per_command": len(packets[0]),
            "counters": counters, "last_error": last_error}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=sorted(CASES), action="append")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--feedback-hz", type=float, default=50.0, help="read-back rate (0 = none)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [bench(p, args.n, args.rate, args.feedback_hz) for p in (args.protocol or sorted(CASES))]
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"{'protocol':10} {'send p50/p99/max us':>24} {'written':>8} {'encode us':>9} "
          f"{'raw os.write p50/p99/max us':>28} {'bytes':>5}")
    for r in results:
        s, w = r["send"], r["raw_os_write"]
        print(f"{r['protocol']:10} {s['p50_us']:>8}/{s['p99_us']:>7}/{s['max_us']:>7} {r['written_share']:>8.1%} "
              f"{r['encode_us']:>9} {w['p50_us']:>10}/{w['p99_us']:>7}/{w['max_us']:>8} {r['bytes_per_command']:>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
