"""Import speed and the per-step cost of imported networks against native networks of the same shape.

* ``import``: ``read_netx`` of the shipped oxford (428 KB) and MNIST (460 KB) files and of a 1.5 MB netx
  file written here in the same layout (784 -> 400 -> 200 -> 10 CUBA dense, integer float32 weights,
  README section 7.1 of ../shared/interop), and ``read_nir`` of the NIR paper's CNN: median wall time
  of ``--repeats`` reads in this process (h5py/nir already imported), plus one ``spikeloop import``
  subprocess per netx file (Python start-up and every import included).
* ``step``: the 1 kHz loop's step (``runtime.step``), back to back, median per-step time in µs, for
  - the MNIST netx import against the native ``Network`` a user writes by hand from the file's arrays
    (784 -> 128 -> 64 -> 10 LoihiLIF, Dense), loihi backend, the same 2 %-Poisson input for both;
  - the NIR CNN import (float backend, and loihi through ``to_loihi``) against the native network a
    user writes from the graph's arrays (:func:`native_cnn`), fed the same N-MNIST recordings as
    graded 1 ms counts (../shared/data/nmnist_small).
  Both sides carry the same trained weights, so they do the same synaptic work; the ratio shows what
  the importer's choices (projection kinds, graded input, probes) cost.
  Import and native alternate ``--repeats`` times; the ratio imported / native is printed per pair.

    python bench/interop.py [--json] [--repeats R] [--steps N]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.interop.netx import read_netx
from pipeline.interop.nir_graph import read_nir
from pipeline.snn import INPUT, Conv2D, Dense, LoihiLIF, Network, Population, build
from pipeline.snn.convert import to_loihi
from pipeline.snn.network import FloatLIF
from recordings.datasets import shared_data_dir, shared_dir

INPUT_RATE = 0.02


def write_big_netx(path: Path, sizes=(784, 400, 200, 10), seed: int = 0) -> None:
    """A netx dense CUBA network in lava-dl's hdf5 layout (README 7.1), float32 integer weights."""
    import h5py

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            base = f"layer/{i}"
            f[f"{base}/type"] = np.array([b"dense"])
            f[f"{base}/shape"] = np.array([n_out])
            f[f"{base}/inFeatures"] = n_in
            f[f"{base}/outFeatures"] = n_out
            f[f"{base}/weight"] = rng.integers(-128, 128, (n_out, n_in)).astype(np.float32)
            for key, value in (("iDecay", 410), ("vDecay", 410), ("vThMant", 64), ("refDelay", 1)):
                f[f"{base}/neuron/{key}"] = value
            f[f"{base}/neuron/type"] = b"CUBA"
            f[f"{base}/neuron/gradedSpike"] = False


def time_reads(reader, path: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        reader(path)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def cli_import_seconds(path: Path, out: Path) -> tuple[float, float]:
    """(wall s, CPU s) of one ``spikeloop import`` subprocess; CPU time is what the machine's load does not inflate."""
    import resource

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.app.cli", "import", str(path), "--out", str(out)], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def per_step_us(network: Network, backend: str, inputs: list[tuple[np.ndarray, np.ndarray | None]]) -> float:
    """Median per-step time (µs) of ``runtime.step`` over ``inputs``, after a warm-up."""
    runtime = build(network, backend)
    runtime.warmup()
    clock = time.perf_counter_ns
    times = np.empty(len(inputs), np.int64)
    for t, (active, payload) in enumerate(inputs):
        start = clock()
        runtime.step(active, payload)
        times[t] = clock() - start
    return float(np.median(times)) / 1000.0


def poisson(n_inputs: int, steps: int, seed: int = 1) -> list[tuple[np.ndarray, None]]:
    rng = np.random.default_rng(seed)
    return [(np.flatnonzero(rng.random(n_inputs) < INPUT_RATE).astype(np.int32), None) for _ in range(steps)]


def native_mlp(path: Path) -> Network:
    """What a user writes by hand from the netx file's arrays (h5py, no importer): LoihiLIF Dense layers."""
    import h5py

    populations, projections, source = [], [], INPUT
    with h5py.File(path, "r") as f:
        for i in range(len(f["layer"])):
            layer = f[f"layer/{i}"]
            weights = layer["weight"][()].astype(np.int64)
            neuron = LoihiLIF(du=int(layer["neuron/iDecay"][()]) - 1, dv=int(layer["neuron/vDecay"][()]),
                              vth=int(layer["neuron/vThMant"][()]), bias_exp=6)
            populations.append(Population(f"p{i}", weights.shape[0], neuron))
            projections.append(Dense(name=f"d{i}", source=source, target=f"p{i}", weights=weights, prepare_weights=False))
            source = f"p{i}"
    return Network(n_inputs=projections[0].weights.shape[1], populations=populations, projections=projections)


def native_cnn(path: Path) -> Network:
    """The NIR paper's CNN written by hand from the graph's arrays (nir.read, no importer): IF neurons,
    Conv2D for the convolutions, the 2x2 sum pool before conv 5 folded into its kernel (6x6, stride 2,
    padding 2), the pool + flatten + affine 9 as one Dense 256x512, Dense 10x256."""
    import nir

    g = nir.read(str(path)).nodes
    neuron = FloatLIF(tau_syn_ms=0.0, tau_mem_ms=np.inf, threshold=1.0)
    shapes = {"c0": 16 * 16 * 16, "c1": 16 * 16 * 16, "c2": 8 * 8 * 8, "d0": 256, "d1": 10}
    populations = [Population(name, size, neuron) for name, size in shapes.items()]
    pooled_kernel = np.repeat(np.repeat(g["5"].weight, 2, axis=2), 2, axis=3)
    pool = np.zeros((128, 512))  # (8, 4, 4) <- (8, 8, 8) sum over 2x2, C order
    for c in range(8):
        for y in range(8):
            for x in range(8):
                pool[(c * 4 + y // 2) * 4 + x // 2, (c * 8 + y) * 8 + x] = 1.0
    projections = [
        Conv2D(name="k0", source=INPUT, target="c0", kernel=g["0"].weight, in_shape=(2, 34, 34), stride=(2, 2),
               padding=(1, 1), num_message_bits=24),
        Conv2D(name="k1", source="c0", target="c1", kernel=g["2"].weight, in_shape=(16, 16, 16), padding=(1, 1)),
        Conv2D(name="k2", source="c1", target="c2", kernel=pooled_kernel, in_shape=(16, 16, 16), stride=(2, 2),
               padding=(2, 2)),
        Dense(name="w0", source="c2", target="d0", weights=g["9"].weight @ pool),
        Dense(name="w1", source="d0", target="d1", weights=g["11"].weight),
    ]
    return Network(n_inputs=2 * 34 * 34, populations=populations, projections=projections, input_shape=(2, 34, 34))


def nmnist_inputs(network: Network, steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first N-MNIST test recordings as graded 1 ms counts, concatenated to ``steps`` steps."""
    from pipeline.train.present import present_file

    folder = shared_data_dir() / "nmnist_small" / "test"
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for path in sorted(folder.glob("*.bs2")):
        shown = present_file(path, network.input_spec, network.input_shape, network.n_inputs)
        for t in range(shown.n_steps):
            lo, hi = shown.indptr[t], shown.indptr[t + 1]
            out.append((shown.index[lo:hi].astype(np.int32), shown.count[lo:hi].astype(np.float64)))
            if len(out) == steps:
                return out
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    interop = shared_dir() / "interop"
    results: dict = {"import_s": {}, "cli_import_s": {}, "step_us": {}}
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.net"
        write_big_netx(big)
        files = {"oxford": interop / "lava-dl" / "oxford" / "network.net",
                 "mnist": interop / "lava-dl" / "mnist" / "trained_mnist_network.net", "big": big}
        for name, path in files.items():
            results["import_s"][name] = {"bytes": path.stat().st_size, "seconds": time_reads(read_netx, path, args.repeats)}
            results["cli_import_s"][name] = cli_import_seconds(path, Path(tmp) / f"{name}.npz")
        cnn_path = interop / "nir" / "cnn_sinabs.nir"
        results["import_s"]["cnn_nir"] = {"bytes": cnn_path.stat().st_size,
                                          "seconds": time_reads(read_nir, cnn_path, args.repeats)}
    from pipeline.interop.classifier import with_classifier

    mnist_path, cnn_path = interop / "lava-dl" / "mnist" / "trained_mnist_network.net", interop / "nir" / "cnn_sinabs.nir"
    mnist = read_netx(mnist_path).network
    cnn = with_classifier(read_nir(cnn_path).network)
    pairs = {
        "mnist_netx/loihi": (mnist, native_mlp(mnist_path), "loihi", poisson(mnist.n_inputs, args.steps)),
        "cnn_nir/float": (cnn, native_cnn(cnn_path), "float", nmnist_inputs(cnn, args.steps)),
    }
    cnn_loihi, _ = to_loihi(cnn)
    native_loihi, _ = to_loihi(native_cnn(cnn_path))
    pairs["cnn_nir/loihi"] = (cnn_loihi, native_loihi, "loihi", pairs["cnn_nir/float"][3])
    for key, (imported, native, backend, inputs) in pairs.items():
        runs = {"imported": [], "native": []}
        for _ in range(args.repeats):
            runs["imported"].append(per_step_us(imported, backend, inputs))
            runs["native"].append(per_step_us(native, backend, inputs))
        imp, nat = float(np.median(runs["imported"])), float(np.median(runs["native"]))
        results["step_us"][key] = {"imported": imp, "native": nat, "ratio": imp / nat}
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"load average {os.getloadavg()[0]:.1f}; medians of {args.repeats}")
    print("import (read in process / spikeloop import subprocess incl. Python start-up):")
    for name, row in results["import_s"].items():
        cli = results["cli_import_s"].get(name)
        print(f"  {name:<8} {row['bytes'] / 1e6:5.2f} MB  {row['seconds'] * 1e3:7.1f} ms"
              + (f"   CLI wall {cli[0]:5.2f} s, CPU {cli[1]:5.2f} s" if cli is not None else ""))
    print(f"per-step time, {args.steps} steps back to back (µs, median):")
    for key, row in results["step_us"].items():
        print(f"  {key:<16} imported {row['imported']:8.1f}   native {row['native']:8.1f}   ratio {row['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
