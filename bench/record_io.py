"""Recording layer benchmark: decode throughput per format next to dv-processing's own AEDAT 4 read,
numpy <-> dv EventStore conversion, AEDAT 4 writing, and paced-replay release error.

All measured in the same run on the same (shared, noisy) machine; medians of ``--repeats`` runs.

* Per-format decode (M events/s): ``bench/formats.py``'s ``measure_formats`` (large files built from the
  real samples), or, when that module is missing, ``open_recording(...).chunks()`` over the real files.
* dv-processing AEDAT 4 read: a 10 M event LZ4 file written by dv-processing's ``MonoCameraWriter``
  from the DVXplorer recording repeated (time shifted), read with ``MonoCameraRecording.getNextEventBatch``
  + ``.numpy()`` — the reference for issue #2's ">= 0.5x dv-processing" goal — and through our
  ``recordings.aedat4.Reader`` (which vets every LZ4 packet before dv-processing decodes it).
* Conversion: ``recordings.dv_bridge.to_event_store`` / ``to_numpy`` vs per-event ``push_back``.
* Writing: our uncompressed ``Aedat4Writer`` vs dv-processing's LZ4 ``MonoCameraWriter``.
* Pacing: ``ReplaySource`` at real time; release error = ``arrival_ns`` - schedule (µs), p50/p99/max.

    python bench/record_io.py [--repeats 3] [--events 10000000] [--json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# This script is named like the ``recordings`` package: drop its own folder from the import path.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import dv_processing as dv  # noqa: E402

from pipeline.core.events import DVS_EVENT_DTYPE  # noqa: E402
from recordings.aedat4 import Reader  # noqa: E402
from recordings.aedat4_writer import Aedat4Writer  # noqa: E402
from recordings.datasets import REPO_ROOT, shared_data_dir  # noqa: E402
from recordings.detect import open_recording  # noqa: E402
from recordings.dv_bridge import to_event_store, to_numpy  # noqa: E402
from recordings.replay import ReplaySource  # noqa: E402

SAMPLE = REPO_ROOT / "recordings" / "samples" / "moving_bars.aedat4"


def median_time(fn, repeats: int) -> tuple[float, float]:
    """(median wall s, median CPU s) of ``fn()`` over ``repeats`` runs after one warm-up run."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def synthetic_events(target: int) -> np.ndarray:
    """The DVXplorer recording repeated (each copy shifted by its span) up to ``target`` events."""
    with open_recording(shared_data_dir() / "events" / "dvxplorer_tonic.aedat4") as reader:
        base = np.concatenate(list(reader.chunks()), dtype=DVS_EVENT_DTYPE)
    span = int(base["timestamp"][-1] - base["timestamp"][0]) + 1
    copies = -(-target // len(base))
    out = np.zeros(copies * len(base), dtype=DVS_EVENT_DTYPE)
    for k in range(copies):
        part = out[k * len(base):(k + 1) * len(base)]
        for name in DVS_EVENT_DTYPE.names:
            part[name] = base[name]
        part["timestamp"] += k * span
    return out[:target]


def measure_format_decoders(repeats: int, events: int) -> list[dict]:
    """Per-format decode throughput via bench/formats.py, or over the real files when it is absent."""
    spec = importlib.util.spec_from_file_location("bench_formats", HERE / "formats.py")
    if spec is None or not (HERE / "formats.py").exists():
        rows = []
        for path in sorted((shared_data_dir() / "events").iterdir()):
            def decode(path=path) -> None:
                for _ in open_recording(path).chunks():
                    pass
            count = sum(len(c) for c in open_recording(path).chunks())
            if not count:
                continue
            wall, cpu = median_time(decode, repeats)
            rows.append({"format": open_recording(path).header.format, "file": path.name, "events": count,
                         "mev_per_s": count / wall / 1e6, "cpu_mev_per_s": count / cpu / 1e6})
        return rows
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.measure_formats(repeats, min(events, 8_000_000))


def measure_aedat4(events: np.ndarray, tmp: Path, repeats: int) -> dict:
    """dv-processing's LZ4 write/read vs our writer and reader, same events, same run."""
    n = len(events)
    lz4 = tmp / "dv_lz4.aedat4"
    packets = [to_event_store(part) for part in np.array_split(events, max(1, n // 10_000))]

    def dv_write() -> None:
        config = dv.io.MonoCameraWriter.Config("bench", dv.CompressionType.LZ4)
        config.addEventStream((320, 240))
        writer = dv.io.MonoCameraWriter(str(lz4), config)
        for store in packets:
            writer.writeEvents(store)
        del writer

    ours = tmp / "ours.aedat4"

    def our_write() -> None:
        with Aedat4Writer(ours, 320, 240) as writer:
            for part in np.array_split(events, max(1, n // 10_000)):
                writer.write(part)

    def dv_read(path: Path):
        def run() -> None:
            recording = dv.io.MonoCameraRecording(str(path))
            total = 0
            while (batch := recording.getNextEventBatch()) is not None:
                total += len(batch.numpy())
            assert total == n
        return run

    def our_read(path: Path):
        def run() -> None:
            with Reader(path) as reader:
                assert sum(len(c) for c in reader.chunks()) == n
        return run

    results = {"events": n}
    for key, fn in (("dv_write_lz4", dv_write), ("our_write_none", our_write),
                    ("dv_read_lz4", dv_read(lz4)), ("our_reader_lz4", our_read(lz4)),
                    ("dv_read_none", dv_read(ours)), ("our_reader_none", our_read(ours))):
        wall, cpu = median_time(fn, repeats)
        results[key] = {"mev_per_s": n / wall / 1e6, "cpu_mev_per_s": n / cpu / 1e6}
    results["lz4_bytes_per_event"] = lz4.stat().st_size / n
    return results


def measure_bridge(events: np.ndarray, repeats: int) -> dict:
    """numpy -> EventStore (bridge vs push_back) and EventStore -> numpy, M events/s."""
    n = len(events)
    store = to_event_store(events)
    small = events[:200_000]

    def push_back() -> None:
        s = dv.EventStore()
        for t, x, y, p in small.tolist():
            s.push_back(t, x, y, bool(p))

    rows = {}
    for key, fn, count in (("numpy_to_store", lambda: to_event_store(events), n),
                           ("store_to_numpy", lambda: to_numpy(store), n),
                           ("push_back_loop", push_back, len(small))):
        wall, cpu = median_time(fn, repeats)
        rows[key] = {"events": count, "mev_per_s": count / wall / 1e6, "cpu_mev_per_s": count / cpu / 1e6}
    return rows


def measure_pacing(path: Path, speed: float) -> dict:
    """Release error (µs) of every packet vs its schedule, ReplaySource at ``speed``, 1 ms packets."""
    with ReplaySource(path, speed=speed) as source:
        errors = np.array([p.arrival_ns - source.scheduled_ns(p.t_end_us) for p in source.packets()]) / 1e3
    p50, p99 = np.percentile(errors, [50, 99])
    return {"file": path.name, "speed": speed, "packets": len(errors), "p50_us": float(p50),
            "p99_us": float(p99), "max_us": float(errors.max()),
            "late_over_1ms": float((errors > 1000).mean())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--events", type=int, default=10_000_000, help="events in the synthetic AEDAT 4 file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    events = synthetic_events(args.events)
    with tempfile.TemporaryDirectory(prefix="spikeloop_bench_recordings_") as tmp:
        aedat4 = measure_aedat4(events, Path(tmp), args.repeats)
    bridge = measure_bridge(events, args.repeats)
    del events
    formats = measure_format_decoders(args.repeats, args.events)
    pacing = [measure_pacing(SAMPLE, 1.0),
              measure_pacing(shared_data_dir() / "events" / "dvxplorer_tonic.aedat4", 1.0)]
    result = {"formats": formats, "aedat4": aedat4, "bridge": bridge, "pacing": pacing}
    if args.json:
        print(json.dumps(result))
        return 0

    reference = aedat4["dv_read_lz4"]
    print(f"medians of {args.repeats} runs; wall M events/s (cpu = per CPU second of this process)")
    print(f"\ndv-processing AEDAT 4 LZ4 read (getNextEventBatch + numpy), {aedat4['events']:,} events "
          f"({aedat4['lz4_bytes_per_event']:.1f} B/event): {reference['mev_per_s']:.1f} wall, "
          f"{reference['cpu_mev_per_s']:.1f} cpu")
    print(f"\n{'format':<14} {'file':<34} {'events':>11} {'wall':>8} {'cpu':>8}  x dv LZ4 (cpu)")
    for row in formats:
        ratio = row["cpu_mev_per_s"] / reference["cpu_mev_per_s"]
        print(f"{row['format']:<14} {row['file']:<34} {row['events']:>11,} {row['mev_per_s']:>8.1f} "
              f"{row['cpu_mev_per_s']:>8.1f}  {ratio:5.2f}")
    print("\nAEDAT 4 (same events)              wall      cpu")
    for key in ("dv_read_lz4", "our_reader_lz4", "dv_read_none", "our_reader_none", "dv_write_lz4",
                "our_write_none"):
        print(f"  {key:<30} {aedat4[key]['mev_per_s']:>8.1f} {aedat4[key]['cpu_mev_per_s']:>8.1f}")
    print("\nnumpy <-> dv.EventStore             wall      cpu")
    for key, row in bridge.items():
        print(f"  {key:<30} {row['mev_per_s']:>8.1f} {row['cpu_mev_per_s']:>8.1f}   ({row['events']:,} events)")
    print("\npaced replay, 1 ms packets: release error vs schedule (µs)")
    for row in pacing:
        print(f"  {row['file']:<28} x{row['speed']:<4g} {row['packets']:>6} packets  p50 {row['p50_us']:7.1f}  "
              f"p99 {row['p99_us']:8.1f}  max {row['max_us']:8.1f}  late > 1 ms {100 * row['late_over_1ms']:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
