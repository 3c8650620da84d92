"""Throughput of ``spikeloop evaluate``'s engine (recordings/s) with one worker process and with two.

The model is the NIR paper's N-MNIST CNN (../shared/interop/nir/cnn_sinabs.nir, imported here; its input
spec and readout are set as the paper used it when the importer did not store them), the data the first N
recordings of ../shared/data/nmnist_small/test. Each timed run is
:func:`pipeline.train.evaluate.evaluate` over those recordings (presentation, stepping, readout; the
runtime build and the loihi conversion included), one and two workers alternating run by run so both see
the same load. Prints medians, the ratio two/one, and checks that both give the same decisions.

    python bench/evaluate.py [--recordings 40] [--repeats 3] [--backend loihi|float] [--json]

On a shared machine the two-worker rate depends on how much of the second core is free; the load average
is printed with the numbers.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))

from pipeline.interop.nir_graph import read_nir
from pipeline.snn.model import InputSpec, Readout
from pipeline.train.evaluate import evaluate
from recordings.datasets import shared_data_dir, shared_dir
from recordings.labelled import open_labelled


def cnn():
    network = read_nir(shared_dir() / "interop" / "nir" / "cnn_sinabs.nir", dt_ms=1.0).network
    if network.input_spec is None or network.readout is None:
        network = dataclasses.replace(network, input_spec=InputSpec(encoding="counts", tail_steps=5),
                                      readout=Readout("count", tuple(str(i) for i in range(10))))
    return network


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recordings", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", choices=["loihi", "float"], default="loihi")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    network = cnn()
    data_root = shared_data_dir() / "nmnist_small"
    data = open_labelled(data_root / "test", data_root / "test_labels.txt", network.readout.classes)
    data = data.subset(range(min(args.recordings, len(data))))
    evaluate(network, data.subset(range(2)), args.backend)  # compile / load the kernels once
    rates = {1: [], 2: []}
    decisions = {}
    for repeat in range(args.repeats):
        for workers in ((1, 2) if repeat % 2 == 0 else (2, 1)):
            started = time.perf_counter()
            result = evaluate(network, data, args.backend, workers=workers)
            rates[workers].append(len(data) / (time.perf_counter() - started))
            decisions[workers] = [(r.early, r.end) for r in result.results]
    report = {
        "backend": args.backend, "recordings": len(data), "repeats": args.repeats,
        "load_average": os.getloadavg()[0],
        "one_worker_per_s": statistics.median(rates[1]), "two_workers_per_s": statistics.median(rates[2]),
        "same_decisions": decisions[1] == decisions[2],
    }
    report["ratio"] = report["two_workers_per_s"] / report["one_worker_per_s"]
    if args.json:
        print(json.dumps(report))
    else:
        print(f"evaluate, {args.backend}, {len(data)} N-MNIST recordings, median of {args.repeats} "
              f"(load average {report['load_average']:.1f}):")
        print(f"  1 worker   {report['one_worker_per_s']:6.2f} recordings/s")
        print(f"  2 workers  {report['two_workers_per_s']:6.2f} recordings/s  (x{report['ratio']:.2f}); "
              f"same decisions: {report['same_decisions']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
