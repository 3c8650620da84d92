"""The closed-loop demo's goal: arenas x simulated seconds, collisions, speed, real-time factor.

    python bench/demo.py [--seeds 10] [--duration 60] [--json]

Goal (issue 5): over 10 random arenas of the default size, 60 simulated seconds each, at most one
collision in total, mean forward speed >= 30 % of the robot's top speed, and every run faster than real
time when unpaced. Measured beside it in the same run: the same arenas with the network's weights zeroed
(the robot drives blind), which shows what the network is worth.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.app.demo import DemoConfig, DemoRun  # noqa: E402


def run(seeds: int, duration_s: float, zero_weights: bool) -> list[dict]:
    rows = []
    for seed in range(seeds):
        result = DemoRun(DemoConfig(seed=seed, duration_s=duration_s, zero_weights=zero_weights)).run()
        rows.append(result.summary())
        print(f"  {'ablation' if zero_weights else 'network '} arena {seed}: {rows[-1]['collisions']} collisions, "
              f"{rows[-1]['mean_speed_fraction'] * 100:4.0f} % of top speed, {rows[-1]['realtime_factor']:.2f}x real time",
              file=sys.stderr)
    return rows


def totals(rows: list[dict]) -> dict:
    return {
        "collisions": sum(r["collisions"] for r in rows),
        "mean_speed_fraction": sum(r["mean_speed_fraction"] for r in rows) / len(rows),
        "min_realtime_factor": min(r["realtime_factor"] for r in rows),
        "latency_p99_us_max": max(r["latency_p99_us"] for r in rows),
        "distance_m": sum(r["distance_m"] for r in rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="arenas 0..N-1 (default 10)")
    parser.add_argument("--duration", type=float, default=60.0, help="simulated seconds per arena (default 60)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    network = run(args.seeds, args.duration, zero_weights=False)
    blind = run(args.seeds, args.duration, zero_weights=True)
    result = {"network": totals(network), "zero_weights": totals(blind), "runs": network,
              "goal": {"collisions_max": 1, "mean_speed_fraction_min": 0.3, "realtime_factor_min": 1.0}}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    n, b = result["network"], result["zero_weights"]
    print(f"{args.seeds} arenas x {args.duration:g} s    network        weights zeroed   goal")
    print(f"collisions                 {n['collisions']:8d}        {b['collisions']:8d}        <= 1")
    print(f"mean speed / top speed     {n['mean_speed_fraction']:8.2f}        {b['mean_speed_fraction']:8.2f}        >= 0.30")
    print(f"slowest real-time factor   {n['min_realtime_factor']:8.2f}        {b['min_realtime_factor']:8.2f}        > 1")
    print(f"distance driven (m)        {n['distance_m']:8.1f}        {b['distance_m']:8.1f}")
    print(f"worst latency p99 (us)     {n['latency_p99_us_max']:8.0f}        {b['latency_p99_us_max']:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
