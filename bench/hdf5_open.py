"""What the HDF5 reader's contained metadata walk (recordings.contained, a forked child) adds to opening a
file: ``open_recording(path).header`` with the walk and with it switched off, taken alternately in the same
run, medians of ``--repeats`` (wall and CPU of this process; the child's CPU is not counted by process_time
and is reported separately from the children's rusage).

The file: the DAVIS346 recording's events (117,667) written by recordings.hdf5_writer. The process first
imports the CLI and the DVS pipeline (numba, OpenCV, dv-processing), so a fork copies a CLI-sized process.

    python bench/hdf5_open.py [--repeats 40] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pipeline.app.cli  # noqa: E402,F401  (a CLI-sized process: what `spikeloop info` forks from)
import pipeline.stages  # noqa: E402,F401
from recordings import hdf5_reader  # noqa: E402
from recordings.datasets import shared_data_dir  # noqa: E402
from recordings.detect import open_recording  # noqa: E402
from recordings.hdf5_writer import Hdf5Writer  # noqa: E402


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    source = shared_data_dir() / "events" / "davis346_aestream.aedat4"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "davis346.h5"
        with open_recording(source) as reader, Hdf5Writer(path, reader.header.width, reader.header.height,
                                                          camera="bench") as writer:
            for chunk in reader.chunks():
                writer.write(chunk)
        contained = hdf5_reader.run_contained
        times = {"with": ([], []), "without": ([], [])}
        child_cpu = []
        for repeat in range(args.repeats + 1):
            for mode in ("with", "without"):
                hdf5_reader.run_contained = contained if mode == "with" else (lambda work, timeout_s: None)
                before_children = children_cpu_s()
                start, start_cpu = time.perf_counter(), time.process_time()
                open_recording(path).close()
                wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
                if repeat:  # the first round warms the caches
                    times[mode][0].append(wall)
                    times[mode][1].append(cpu)
                    if mode == "with":
                        child_cpu.append(children_cpu_s() - before_children)
        hdf5_reader.run_contained = contained
    ms = {mode: (statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3) for mode, (wall, cpu) in times.items()}
    result = {
        "open_ms_with_walk": round(ms["with"][0], 2), "open_ms_without_walk": round(ms["without"][0], 2),
        "added_ms": round(ms["with"][0] - ms["without"][0], 2), "ratio": round(ms["with"][0] / ms["without"][0], 2),
        "cpu_ms_with_walk": round(ms["with"][1], 2), "cpu_ms_without_walk": round(ms["without"][1], 2),
        "child_cpu_ms": round(statistics.median(child_cpu) * 1e3, 2),
        "process_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "repeats": args.repeats, "load_average": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"open_recording(.h5).header, medians of {args.repeats} alternating opens "
          f"(load average {result['load_average']:.1f} on {os.cpu_count()} cores, "
          f"process {result['process_rss_mb']} MB RSS):")
    print(f"  with the contained walk   {result['open_ms_with_walk']:8.2f} ms wall  "
          f"{result['cpu_ms_with_walk']:6.2f} ms CPU here + {result['child_cpu_ms']:.2f} ms in the child")
    print(f"  without                   {result['open_ms_without_walk']:8.2f} ms wall  "
          f"{result['cpu_ms_without_walk']:6.2f} ms CPU")
    print(f"  added {result['added_ms']:.2f} ms per open (x{result['ratio']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
