"""The closed-loop demo's goal on arenas never used for tuning: the network beside a non-spiking baseline
and the zero-weight ablation, in the same run.

    python bench/demo.py [--arenas 10] [--duration 60] [--draw N] [--jobs 2] [--json]

Arenas 0-15 were used to tune the network (git log, README) and the baseline; this benchmark draws
``--arenas`` seeds from [1000, 10^6) with the generator seed ``--draw`` (printed; random when not given),
so a run can be repeated exactly: every run is the lockstep closed loop (launch/demo.toml through the
emulated Dynamixel bus), the same for a seed on any machine under any load. Obstacles move on their own
paths and never dodge the robot. Three controllers per arena:

* network: the obstacle-avoidance SNN on the loihi backend (launch/demo.toml);
* baseline: a Braitenberg vehicle on the same pooled ON/OFF cue, plain numpy, same motors
  (pipeline/app/braitenberg.py);
* ablation: the network with every synaptic weight zeroed (the robot drives blind).

Goal (issue 9): over 10 arenas x 60 s, at most 1 collision in total, mean speed >= 0.6 of top speed, and the
network ahead of the baseline on collisions or on speed.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.app.demo import TUNING_SEEDS, DemoConfig, DemoRun  # noqa: E402

CONTROLLERS = {"network": dict(controller="snn"), "baseline": dict(controller="braitenberg"),
               "ablation": dict(controller="snn", zero_weights=True)}
GOAL = {"collisions_max": 1, "mean_speed_fraction_min": 0.6}


def draw_arenas(n: int, draw: int) -> list[int]:
    """``n`` distinct arena seeds from [1000, 10^6) (never a tuning arena), from generator seed ``draw``."""
    seeds = np.random.default_rng(draw).choice(np.arange(1000, 10**6), n, replace=False).tolist()
    assert not set(seeds) & set(TUNING_SEEDS)
    return seeds


def one_run(job: tuple[str, int, float]) -> dict:
    name, seed, duration_s = job
    summary = DemoRun(DemoConfig(seed=seed, duration_s=duration_s, **CONTROLLERS[name])).run().summary()
    summary["run"] = name
    return summary


def totals(rows: list[dict]) -> dict:
    return {
        "collisions": sum(r["collisions"] for r in rows),
        "mean_speed_fraction": float(np.mean([r["mean_speed_fraction"] for r in rows])),
        "distance_m": sum(r["distance_m"] for r in rows),
        "sync_timeouts": sum(r["sync_timeouts"] for r in rows),
        "resends": sum(r["resends"] for r in rows),
        "min_realtime_factor": min(r["realtime_factor"] for r in rows),
        "sensor_latency_p99_us_max": max(r["sensor_latency_p99_us"] for r in rows),
        "latency_p99_us_max": max(r["latency_p99_us"] for r in rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arenas", type=int, default=10, help="arenas to draw (default 10)")
    parser.add_argument("--duration", type=float, default=60.0, help="simulated seconds per arena (default 60)")
    parser.add_argument("--draw", type=int, default=None, help="generator seed of the arena draw (default: random)")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (default 1)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    draw = args.draw if args.draw is not None else int(np.random.default_rng().integers(0, 2**31))
    seeds = draw_arenas(args.arenas, draw)
    print(f"arena draw {draw}: seeds {seeds} (repeat with --draw {draw}); tuning arenas were "
          f"{TUNING_SEEDS.start}-{TUNING_SEEDS.stop - 1}", file=sys.stderr)
    jobs = [(name, seed, args.duration) for seed in seeds for name in CONTROLLERS]
    started = time.perf_counter()
    rows: dict[str, list[dict]] = {name: [] for name in CONTROLLERS}
    with ProcessPoolExecutor(max(1, args.jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        for summary in pool.map(one_run, jobs):
            rows[summary["run"]].append(summary)
            print(f"  {summary['run']:8s} arena {summary['seed']:6d}: {summary['collisions']} collisions, "
                  f"{summary['mean_speed_fraction']:.2f} of top speed, {summary['realtime_factor']:.2f}x real time, "
                  f"{summary['sync_timeouts']} sync timeouts, {summary['resends']} resends",
                  file=sys.stderr, flush=True)
    result = {"draw": draw, "seeds": seeds, "duration_s": args.duration, "goal": GOAL,
              "totals": {name: totals(r) for name, r in rows.items()}, "runs": rows,
              "wall_s": time.perf_counter() - started}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{args.arenas} arenas x {args.duration:g} s (draw {draw}), collisions / mean speed as a fraction of top speed")
    print(f"{'arena':>8}  {'network':>12}  {'baseline':>12}  {'ablation':>12}")
    for i, seed in enumerate(seeds):
        cells = [f"{rows[n][i]['collisions']:3d} / {rows[n][i]['mean_speed_fraction']:.2f}" for n in CONTROLLERS]
        print(f"{seed:>8}  " + "  ".join(f"{c:>12}" for c in cells))
    t = result["totals"]
    print(f"{'total':>8}  " + "  ".join(f"{t[n]['collisions']:3d} / {t[n]['mean_speed_fraction']:.2f}".rjust(12)
                                      for n in CONTROLLERS))
    net, base = t["network"], t["baseline"]
    ahead = net["collisions"] < base["collisions"] or net["mean_speed_fraction"] > base["mean_speed_fraction"]
    print(f"goal: collisions {net['collisions']} <= {GOAL['collisions_max']}: "
          f"{'yes' if net['collisions'] <= GOAL['collisions_max'] else 'NO'}; speed {net['mean_speed_fraction']:.2f} "
          f">= {GOAL['mean_speed_fraction_min']}: {'yes' if net['mean_speed_fraction'] >= GOAL['mean_speed_fraction_min'] else 'NO'}; "
          f"ahead of the baseline: {'yes' if ahead else 'NO'}")
    print(f"sync timeouts {sum(t[n]['sync_timeouts'] for n in CONTROLLERS)}, resends "
          f"{sum(t[n]['resends'] for n in CONTROLLERS)}, slowest run "
          f"{min(t[n]['min_realtime_factor'] for n in CONTROLLERS):.2f}x real time, worst sensor-time latency p99 "
          f"{max(t[n]['sensor_latency_p99_us_max'] for n in CONTROLLERS) / 1000:.1f} ms, {result['wall_s']:.0f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
