"""Throughput of the event stages (events/s on one core) next to dv-processing's filters, same run.

Stream: 10 M events at 640x480 over 10 s (1 Mev/s): six moving rectangles whose edges fire (polarity from
the edge's direction of motion, 0.7 px jitter), 8 % uniform background noise and four 2 kHz hot pixels,
cut into packets of 10 k events. Each stage is built from its config as launch files build them (one
stage with ``config.build``, several with one ``Chain``) and runs over all packets ``--repeats`` times
(state reset between runs, kernels compiled before timing); figures are medians. Two clocks: wall time
(perf_counter) and the thread's CPU time (thread_time), which is what one core delivers when the shared
machine is busy (on a loaded box wall time also counts the time other processes held the core).
dv-processing filters get the same packets as EventStores (read back from an AEDAT 4 file written by
recordings.aedat4_writer) and run in the same process, interleaved with ours run by run.

    python bench/stages.py [--events N] [--repeats R] [--json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
import time

import numpy as np

from pipeline.core.events import DVS_EVENT_DTYPE
from pipeline.stages import (
    BackgroundActivityFilter,
    Chain,
    HotPixelMask,
    PolaritySelect,
    RefractoryFilter,
    RoiCrop,
    SpatialPooling,
    StepBinner,
)

WIDTH, HEIGHT = 640, 480
ROI = (80, 60, 480, 360)
GOAL_MEV_S = 50.0


def structured_stream(n_events: int, duration_us: int = 10_000_000, seed: int = 0) -> np.ndarray:
    """Moving-edge events + uniform noise + hot pixels, sorted by time (DVS_EVENT_DTYPE, shape (n_events,))."""
    rng = np.random.default_rng(seed)
    hot = np.array([[17, 23], [300, 200], [512, 77], [639, 479]])
    n_hot_each = int(2000 * duration_us / 1e6)
    n_noise = int(0.08 * n_events)
    n_edge = n_events - n_noise - len(hot) * n_hot_each
    t = rng.integers(0, duration_us, n_edge)
    size = rng.uniform(30, 120, (6, 2))
    start = rng.uniform(0, 1, (6, 2)) * ([WIDTH, HEIGHT] - size)
    velocity = rng.uniform(-300, 300, (6, 2)) / 1e6  # px/µs
    obj = rng.integers(0, 6, n_edge)
    span = np.array([WIDTH, HEIGHT]) - size[obj]
    travelled = start[obj] + velocity[obj] * t[:, None]
    corner = span - np.abs(np.mod(travelled, 2 * span) - span)  # bounce between the walls
    side = rng.integers(0, 4, n_edge)
    along = rng.uniform(0, 1, n_edge)
    horizontal = side < 2
    offset = np.where(horizontal[:, None], np.stack([along, side == 1], 1), np.stack([side == 3, along], 1))
    xy = corner + offset * size[obj] + rng.normal(0, 0.7, (n_edge, 2))
    moving = np.where(horizontal, velocity[obj, 1], velocity[obj, 0])
    polarity = (moving > 0) == np.isin(side, [1, 3])
    columns = [
        np.concatenate([t, rng.integers(0, duration_us, n_noise)]
                       + [np.linspace(0, duration_us - 1, n_hot_each).astype(np.int64)] * len(hot)),
        np.concatenate([np.clip(np.round(xy[:, 0]), 0, WIDTH - 1), rng.integers(0, WIDTH, n_noise)]
                       + [np.full(n_hot_each, x) for x, _ in hot]),
        np.concatenate([np.clip(np.round(xy[:, 1]), 0, HEIGHT - 1), rng.integers(0, HEIGHT, n_noise)]
                       + [np.full(n_hot_each, y) for _, y in hot]),
        np.concatenate([polarity, rng.integers(0, 2, n_noise)] + [np.ones(n_hot_each)] * len(hot)),
    ]
    order = np.argsort(columns[0], kind="stable")
    events = np.empty(len(order), dtype=DVS_EVENT_DTYPE)
    for name, column in zip(DVS_EVENT_DTYPE.names, columns):
        events[name] = column[order]
    return events


def as_event_stores(events: np.ndarray, packet_events: int):
    """dv.EventStore packets of the stream, via an uncompressed AEDAT 4 file (no per-event Python)."""
    import dv_processing as dv

    from recordings.aedat4_writer import write_aedat4

    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "bench.aedat4")
        write_aedat4(path, events, WIDTH, HEIGHT, packet_events=packet_events)
        recording = dv.io.MonoCameraRecording(path)
        stores = []
        while (store := recording.getNextEventBatch()) is not None:
            stores.append(store)
    return stores


def time_run(make_run) -> tuple[float, float, int]:
    """One fresh run: (wall seconds, thread CPU seconds, output size)."""
    run = make_run()
    wall, cpu = time.perf_counter(), time.thread_time()
    out = run()
    return time.perf_counter() - wall, time.thread_time() - cpu, out


def ours(stage_factory, packets):
    def make_run():
        stage = stage_factory()
        stage.warmup()  # compile / load the cached kernel before the clock starts

        def run():
            return sum(len(stage(packet)) for packet in packets)
        return run
    return make_run


def binner_run(packets):
    def make_run():
        binner = StepBinner(1000, WIDTH, HEIGHT, channels_by_polarity=True)
        binner.push(packets[0][:100], int(packets[0]["timestamp"][0]))
        binner.reset()

        def run():
            active = 0
            for packet in packets:
                active += len(binner.push(packet, int(packet["timestamp"][-1])).indices)
            return active + len(binner.flush().indices)
        return run
    return make_run


def dv_run(filter_factory, stores):
    def make_run():
        filt = filter_factory()

        def run():
            kept = 0
            for store in stores:
                filt.accept(store)
                kept += len(filt.generateEvents())
            return kept
        return run
    return make_run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="stream length (default 10 M)")
    parser.add_argument("--packet", type=int, default=10_000, help="events per packet (default 10 k)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per stage (median reported)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)

    events = structured_stream(args.events)
    packets = [events[i:i + args.packet] for i in range(0, len(events), args.packet)]
    n = len(events)
    chain_configs = [
        HotPixelMask(rate_hz=1000.0, window_us=100_000),
        BackgroundActivityFilter(duration_us=2000),
        SpatialPooling(target=(64, 48)),
        RefractoryFilter(refractory_us=1000),
    ]
    cases = {
        "noise_filter (BA 2 ms)": ours(lambda: BackgroundActivityFilter(2000).build(WIDTH, HEIGHT), packets),
        "refractory (1 ms)": ours(lambda: RefractoryFilter(1000).build(WIDTH, HEIGHT), packets),
        "roi": ours(lambda: RoiCrop(*ROI).build(WIDTH, HEIGHT), packets),
        "polarity (on)": ours(lambda: PolaritySelect("on").build(WIDTH, HEIGHT), packets),
        "hot_pixels (auto 1 kHz)": ours(lambda: HotPixelMask(rate_hz=1000.0, window_us=100_000).build(WIDTH, HEIGHT),
                                        packets),
        "pooling (-> 64x48)": ours(lambda: SpatialPooling(target=(64, 48)).build(WIDTH, HEIGHT), packets),
        "binner (1 ms, 2x640x480)": binner_run(packets),
        "chain (hot+BA+pool+refractory)": ours(lambda: Chain(chain_configs, WIDTH, HEIGHT), packets),
    }
    import dv_processing as dv

    stores = as_event_stores(events, args.packet)
    cases.update({
        "dv BackgroundActivityNoiseFilter 2 ms": dv_run(lambda: dv.noise.BackgroundActivityNoiseFilter(
            (WIDTH, HEIGHT), backgroundActivityDuration=datetime.timedelta(microseconds=2000)), stores),
        "dv EventRegionFilter": dv_run(lambda: dv.EventRegionFilter(ROI), stores),
        "dv EventPolarityFilter": dv_run(lambda: dv.EventPolarityFilter(True), stores),
    })
    samples = {name: [] for name in cases}
    for _ in range(args.repeats):  # interleaved, so load changes hit every stage alike
        for name, make_run in cases.items():
            samples[name].append(time_run(make_run))
    results = {}
    for name, runs in samples.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        results[name] = {"mev_per_s_cpu": n / cpu / 1e6, "mev_per_s_wall": n / wall / 1e6,
                         "seconds_cpu": cpu, "seconds_wall": wall, "output": runs[-1][2]}

    pairs = {"noise_filter (BA 2 ms)": "dv BackgroundActivityNoiseFilter 2 ms", "roi": "dv EventRegionFilter",
             "polarity (on)": "dv EventPolarityFilter"}
    agreement = {ours_name: results[ours_name]["output"] == results[dv_name]["output"]
                 for ours_name, dv_name in pairs.items()}
    summary = {
        "events": n, "packet_events": args.packet, "repeats": args.repeats, "resolution": [WIDTH, HEIGHT],
        "goal_mev_per_s": GOAL_MEV_S, "results": results,
        "ratio_vs_dv_cpu": {o: results[o]["mev_per_s_cpu"] / results[d]["mev_per_s_cpu"] for o, d in pairs.items()},
        "same_output_count_as_dv": agreement,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{n:,} events at {WIDTH}x{HEIGHT}, packets of {args.packet:,}, median of {args.repeats} runs, one core")
    print(f"{'stage':40s} {'Mev/s CPU':>10s} {'Mev/s wall':>11s} {'output':>12s}  goal {GOAL_MEV_S:.0f} Mev/s (CPU)")
    for name, row in results.items():
        single = not name.startswith(("dv ", "chain"))
        mark = ("ok" if row["mev_per_s_cpu"] >= GOAL_MEV_S else "BELOW GOAL") if single else ""
        print(f"{name:40s} {row['mev_per_s_cpu']:10.1f} {row['mev_per_s_wall']:11.1f} {row['output']:12,d}  {mark}")
    for o, d in pairs.items():
        print(f"{o} vs {d}: x{summary['ratio_vs_dv_cpu'][o]:.2f} (CPU time), same kept count: {agreement[o]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
