"""Decode throughput of the binary event-format readers (M events/s, one core, median of N runs).

The real sample files are small (2 k - 520 k events), so for each format a larger file of the same
format is built once in a temporary directory from the real data repeated with its time shifted by the
sample's span per repetition (so the decoder sees a valid, time-ordered recording, not damage). AEDAT 3.1
has no real sample: its file is built from the DVS128 walking events in POLARITY packets of 4096 events.
N-MNIST is measured the way it is used: all 1000 small files of ../shared/data/nmnist_small per run.

Each run opens the file and iterates ``reader.chunks()`` to the end (default chunk size), counting
events: header parsing, block reads, the numba kernel and chunk allocation are all inside the timing.

    python bench/formats.py [--repeats 5] [--events 8000000] [--json]

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
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recordings.datasets import shared_data_dir  # noqa: E402
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


def measure_formats(repeats: int = 5, target_events: int = 8_000_000) -> list[dict]:
    """Decode throughput per format, medians of ``repeats`` runs:
    [{format, file, events, mev_per_s (wall clock), cpu_mev_per_s (this process's CPU time, i.e. one
    core's work even when the shared machine is loaded)}]."""
    events_dir = shared_data_dir() / "events"
    results = []
    with tempfile.TemporaryDirectory(prefix="spikeloop_bench_formats_") as tmp:
        for fmt, name, build in CASES:
            source = events_dir / name
            big = Path(tmp) / f"{fmt}_{name}"
            build(source, big, target_events)
            events, wall, cpu = _time_decode([big], repeats)
            results.append(_row(fmt, f"{name} x{events // max(_events_in(source), 1)}", events, wall, cpu))
            big.unlink()
    nmnist = sorted((shared_data_dir() / "nmnist_small").glob("*/*.bs2"))
    results.append(_row("nmnist", f"nmnist_small ({len(nmnist)} files)", *_time_decode(nmnist, repeats)))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per format (median reported)")
    parser.add_argument("--events", type=int, default=8_000_000, help="events per built file")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    args = parser.parse_args()
    results = measure_formats(args.repeats, args.events)
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"medians of {args.repeats} runs; wall = elapsed time, cpu = this process's CPU time (one core)")
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
