"""Decode throughput of the binary event-format readers (M events/s, one core, median of N runs).

The real sample files are small (2 k - 520 k events), so for each format a larger file of the same
format is built once in a temporary directory from the real data repeated with its time shifted by the
sample's span per repetition (so the decoder sees a valid, time-ordered recording, not damage). AEDAT 3.1
has no real sample: its file is built from the DVS128 walking events in POLARITY packets of 4096 events.
AEDAT 4 files are written by dv-processing's MonoCameraWriter (LZ4, as DV records) with the camera's own
packets. N-MNIST is measured the way it is used: all 1000 small files of ../shared/data/nmnist_small.

Each run opens the file and iterates ``reader.chunks()`` to the end (default chunk size), counting
events: header parsing, block reads, the decoder, the event checks and chunk allocation are all inside
the timing.

``--baseline DIR`` also measures the readers of another checkout (e.g. /work/wt/before) on the same
files in the same run: each timed run is a worker process (``--worker``: one warm-up run, one timed
run) importing one tree's readers, the two trees alternating run by run (which goes first alternates
too), so both see the same load; the table shows medians side by side with the change in CPU rate.

    python bench/formats.py [--repeats 5] [--events 8000000] [--json] [--baseline DIR]

Goal (issue #2): EVT 2.0, EVT 3.0 and AEDAT 2.0 >= 50 M events/s on one core. Both the wall-clock rate
and the rate per CPU second of this process are printed: on a shared, loaded machine the wall rate
falls with the share of the core the process gets, the CPU rate does not.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
#: The checkout whose readers this process measures: ``--tree DIR`` (worker processes), else this one.
TREE = Path(sys.argv[sys.argv.index("--tree") + 1]).resolve() if "--tree" in sys.argv else HERE
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(TREE))

from recordings.detect import open_recording  # noqa: E402

GOAL_MEV_S = {"evt2": 50.0, "evt3": 50.0, "aedat2": 50.0}


def _split(path: Path) -> tuple[bytes, np.ndarray]:
    """(header bytes, data bytes as uint8) of a real sample, split at the reader's data offset."""
    reader = open_recording(path)
    offset = reader.header.extra.get("data_offset", 0)
    raw = np.fromfile(path, dtype=np.uint8)
    return raw[:offset].tobytes(), raw[offset:]


def _repeats_for(events_per_copy: int, target_events: int) -> int:
    return max(1, -(-target_events // events_per_copy))


def _events_in(path: Path) -> int:
    return sum(len(chunk) for chunk in open_recording(path).chunks())


def build_aedat2(source: Path, out: Path, target_events: int) -> None:
    """jAER AEDAT 2.0 (big-endian int32 address, int32 t): timestamps shifted by the span per copy."""
    header, data = _split(source)
    words = data.view(">u4").reshape(-1, 2).astype(np.int64)
    span = int(words[-1, 1] - words[0, 1]) + 1
    copies = _repeats_for(_events_in(source), target_events)
    with open(out, "wb") as f:
        f.write(header)
        for k in range(copies):
            shifted = words.copy()
            shifted[:, 1] = (shifted[:, 1] + k * span) & 0xFFFFFFFF
            f.write(shifted.astype(">u4").tobytes())


def build_evt2(source: Path, out: Path, target_events: int) -> None:
    """EVT 2.0: every TIME_HIGH word shifted by the sample's TIME_HIGH span per copy."""
    header, data = _split(source)
    words = data.view("<u4").astype(np.int64)
    high = (words >> 28) == 8
    span = int((words[high] & 0xFFFFFFF).max() - (words[high] & 0xFFFFFFF).min()) + 1
    copies = _repeats_for(_events_in(source), target_events)
    with open(out, "wb") as f:
        f.write(header)
        for k in range(copies):
            shifted = words.copy()
            shifted[high] = (8 << 28) | ((shifted[high] & 0xFFFFFFF) + k * span)
            f.write(shifted.astype("<u4").tobytes())


def build_evt3(source: Path, out: Path, target_events: int) -> None:
    """EVT 3.0: every TIME_HIGH word shifted (mod 2^12, so real wraps occur) by the span per copy."""
    header, data = _split(source)
    words = data.view("<u2").astype(np.int64)
    high = (words >> 12) == 8
    span = int((words[high] & 0xFFF).max() - (words[high] & 0xFFF).min()) + 1
    copies = _repeats_for(_events_in(source), target_events)
    with open(out, "wb") as f:
        f.write(header)
        for k in range(copies):
            shifted = words.copy()
            shifted[high] = 0x8000 | ((shifted[high] + k * span) & 0xFFF)
            f.write(shifted.astype("<u2").tobytes())


def build_dat(source: Path, out: Path, target_events: int) -> None:
    """Prophesee DAT: t shifted by the span per copy (mod 2^32)."""
    header, data = _split(source)
    words = data.view("<u4").reshape(-1, 2).astype(np.int64)
    span = int(words[-1, 0] - words[0, 0]) + 1
    copies = _repeats_for(len(words), target_events)
    with open(out, "wb") as f:
        f.write(header)
        for k in range(copies):
            shifted = words.copy()
            shifted[:, 0] = (shifted[:, 0] + k * span) & 0xFFFFFFFF
            f.write(shifted.astype("<u4").tobytes())


def build_eventstream(source: Path, out: Path, target_events: int) -> None:
    """Event Stream: time is delta-coded, so the data bytes simply repeat."""
    raw = np.fromfile(source, dtype=np.uint8)
    copies = _repeats_for(_events_in(source), target_events)
    with open(out, "wb") as f:
        f.write(raw[:20].tobytes())
        for _ in range(copies):
            f.write(raw[20:].tobytes())


def build_aedat4(source: Path, out: Path, target_events: int) -> None:
    """AEDAT 4, LZ4, written by dv-processing: the source's own event packets, time shifted per copy."""
    import dv_processing as dv

    recording = dv.io.MonoCameraRecording(str(source))
    packets = [batch.numpy().copy() for batch in iter(recording.getNextEventBatch, None)]
    first, last = int(packets[0]["timestamp"][0]), int(packets[-1]["timestamp"][-1])
    copies = _repeats_for(sum(len(p) for p in packets), target_events)
    config = dv.io.MonoCameraWriter.Config("bench", dv.CompressionType.LZ4)
    config.addEventStream(recording.getEventResolution())
    writer = dv.io.MonoCameraWriter(str(out), config)
    for k in range(copies):
        for events in packets:
            store = dv.EventStore()
            shifted = events["timestamp"] + k * (last - first + 1)
            for t, x, y, p in zip(shifted.tolist(), events["x"].tolist(), events["y"].tolist(),
                                  events["polarity"].tolist()):
                store.push_back(t, x, y, bool(p))
            writer.writeEvents(store)
    del writer


def build_aedat3(source: Path, out: Path, target_events: int, per_packet: int = 4096) -> None:
    """AEDAT 3.1 POLARITY packets holding the DVS128 walking events, time shifted per copy."""
    events = np.concatenate(list(open_recording(source).chunks()))
    span = int(events["timestamp"][-1] - events["timestamp"][0]) + 1
    copies = _repeats_for(len(events), target_events)
    data = ((events["x"].astype(np.uint32) << 17) | (events["y"].astype(np.uint32) << 2)
            | (events["polarity"].astype(np.uint32) << 1) | 1)
    with open(out, "wb") as f:
        f.write(b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n")
        for k in range(copies):
            t = events["timestamp"] + k * span
            for first in range(0, len(events), per_packet):
                sel = slice(first, first + per_packet)
                count = len(t[sel])
                overflow = int(t[sel][0] >> 31)
                f.write(struct.pack("<hhiiiiii", 1, 1, 8, 4, overflow, count, count, count))
                body = np.empty((count, 2), dtype="<u4")
                body[:, 0] = data[sel]
                body[:, 1] = t[sel] & 0x7FFFFFFF
                f.write(body.tobytes())


#: (format, real sample in ../shared/data/events, builder of the large file).
CASES = (
    ("aedat2", "dvs128_walking_b.aedat", build_aedat2),
    ("aedat2", "davis240_boxes.aedat", build_aedat2),
    ("aedat3", "dvs128_walking_b.aedat", build_aedat3),
    ("evt2", "evt2_faery.raw", build_evt2),
    ("evt3", "evt3_expelliarmus.raw", build_evt3),
    ("prophesee_dat", "ncars_tonic.dat", build_dat),
    ("eventstream", "dvs_faery.es", build_eventstream),
    ("aedat4", "davis346_aestream.aedat4", build_aedat4),
    ("aedat4", "dvxplorer_tonic.aedat4", build_aedat4),
)


def _time_decode(paths: list[Path], repeats: int) -> tuple[int, float, float]:
    """(events per run, median wall seconds, median CPU seconds of this process) per run of decoding
    all ``paths``, after one warm-up run."""
    def once() -> int:
        total = 0
        for path in paths:
            for chunk in open_recording(path).chunks():
                total += len(chunk)
        return total

    events = once()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        once()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return events, statistics.median(wall), statistics.median(cpu)


def _row(fmt: str, label: str, events: int, wall: float, cpu: float) -> dict:
    return {"format": fmt, "file": label, "events": events, "mev_per_s": events / wall / 1e6,
            "cpu_mev_per_s": events / cpu / 1e6}


def _time_in(tree: Path, paths: list[Path], repeats: int) -> tuple[int, float, float]:
    """``_time_decode`` run by a worker process that imports the readers of checkout ``tree``."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.write("\n".join(str(p) for p in paths))
    try:
        result = subprocess.run([sys.executable, __file__, "--worker", listing.name, "--tree", str(tree),
                                 "--repeats", str(repeats)], capture_output=True, text=True, check=True)
    finally:
        os.unlink(listing.name)
    events, wall, cpu = json.loads(result.stdout.strip().splitlines()[-1])
    return events, wall, cpu


def _shared_data_dir() -> Path:
    """$SPIKELOOP_DATA, else ../shared/data (recordings.datasets' rule, which a baseline checkout may lack)."""
    return Path(os.environ.get("SPIKELOOP_DATA", HERE.parent / "shared" / "data")).resolve()


def measure_formats(repeats: int = 5, target_events: int = 8_000_000, baseline: Path | None = None) -> list[dict]:
    """Decode throughput per format, medians of ``repeats`` runs:
    [{format, file, events, mev_per_s (wall clock), cpu_mev_per_s (this process's CPU time, i.e. one
    core's work even when the shared machine is loaded)}], plus ``baseline_mev_per_s`` and
    ``baseline_cpu_mev_per_s`` for the checkout ``baseline`` when given (then both trees are timed in
    worker processes, baseline first, case by case)."""
    events_dir = _shared_data_dir() / "events"
    results = []

    def measure(fmt: str, label: str, paths: list[Path]) -> None:
        if baseline is None:
            results.append(_row(fmt, label, *_time_decode(paths, repeats)))
            return
        runs: dict[Path, list[tuple[int, float, float]]] = {baseline: [], TREE: []}
        for k in range(repeats):
            for tree in ((baseline, TREE) if k % 2 == 0 else (TREE, baseline)):
                runs[tree].append(_time_in(tree, paths, 1))

        def medians(tree: Path) -> tuple[int, float, float]:
            events = runs[tree][0][0]
            return events, statistics.median(r[1] for r in runs[tree]), statistics.median(r[2] for r in runs[tree])

        base, row = _row(fmt, label, *medians(baseline)), _row(fmt, label, *medians(TREE))
        row.update(baseline_mev_per_s=base["mev_per_s"], baseline_cpu_mev_per_s=base["cpu_mev_per_s"],
                   baseline_events=base["events"])
        results.append(row)

    with tempfile.TemporaryDirectory(prefix="spikeloop_bench_formats_") as tmp:
        for fmt, name, build in CASES:
            source = events_dir / name
            big = Path(tmp) / f"{fmt}_{name}"
            build(source, big, target_events)
            measure(fmt, f"{name} x{_events_in(big) // max(_events_in(source), 1)}", [big])
            big.unlink()
    nmnist = sorted((_shared_data_dir() / "nmnist_small").glob("*/*.bs2"))
    measure("nmnist", f"nmnist_small ({len(nmnist)} files)", nmnist)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per format (median reported)")
    parser.add_argument("--events", type=int, default=8_000_000, help="events per built file")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="also measure the readers of this checkout, side by side (e.g. /work/wt/before)")
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker", metavar="LISTING", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # time the files listed in LISTING with TREE's readers; one JSON line
        paths = [Path(line) for line in Path(args.worker).read_text().splitlines()]
        print(json.dumps(_time_decode(paths, args.repeats)))
        return 0
    results = measure_formats(args.repeats, args.events, args.baseline)
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"medians of {args.repeats} runs; wall = elapsed time, cpu = this process's CPU time (one core)")
    if args.baseline:
        print(f"baseline: {args.baseline}; this tree: {TREE}")
        print(f"{'format':<14} {'file':<34} {'events':>11} {'base cpu Mev/s':>15} {'cpu Mev/s':>10} {'change':>8}"
              f" {'base wall':>10} {'wall':>8}")
        for row in results:
            change = row["cpu_mev_per_s"] / row["baseline_cpu_mev_per_s"] - 1
            print(f"{row['format']:<14} {row['file']:<34} {row['events']:>11,} {row['baseline_cpu_mev_per_s']:>15.1f} "
                  f"{row['cpu_mev_per_s']:>10.1f} {change:>+8.1%} {row['baseline_mev_per_s']:>10.1f} "
                  f"{row['mev_per_s']:>8.1f}")
    else:
        print(f"{'format':<14} {'file':<34} {'events':>11} {'wall Mev/s':>11} {'cpu Mev/s':>10}  goal (cpu)")
        for row in results:
            goal = GOAL_MEV_S.get(row["format"])
            verdict = "" if goal is None else f">= {goal:.0f}: {'met' if row['cpu_mev_per_s'] >= goal else 'NOT met'}"
            print(f"{row['format']:<14} {row['file']:<34} {row['events']:>11,} {row['mev_per_s']:>11.1f} "
                  f"{row['cpu_mev_per_s']:>10.1f}  {verdict}")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
