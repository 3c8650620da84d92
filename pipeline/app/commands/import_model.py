"""``spikeloop import MODEL.nir|MODEL.net --out NET.npz [--dt-us 1000] [--backend-check]``: a model from the field.

Reads a NIR graph (``.nir``: float-backend network; NIR stores no dt, ``--dt-us`` sets the step and
the table says how each time constant became a per-step factor) or a lava-dl netx ``.net`` file
(loihi-exact), prints the layer table (type, shape, population, neuron
parameters, what was approximated or ignored and why) and writes a spikeloop network that ``simulate``
and ``launch`` use. Exit status 0 on success, 2 on a bad file (one line naming the file and HDF5 path).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser("import", help=summary,
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model file (.nir: NIR graph; .net: lava-dl netx HDF5)")
    parser.add_argument("--out", required=True, help="network file to write (.npz)")
    parser.add_argument("--dt-us", type=float, default=1000.0, help="network step in µs (default 1000)")
    parser.add_argument("--backend-check", action="store_true",
                        help="also build the network on the loihi and float backends and run one step")
    parser.set_defaults(func=run)


def run(args) -> int:
    from pipeline.interop.netx import read_netx
    from pipeline.interop.nir_graph import read_nir

    model = Path(args.model)
    readers = {".net": read_netx, ".nir": read_nir}
    if model.suffix not in readers:
        print(f"spikeloop import: {model}: expected a .nir (NIR) or .net (lava-dl netx) file", file=sys.stderr)
        return 2
    if not args.dt_us > 0:
        print(f"spikeloop import: --dt-us must be > 0, got {args.dt_us}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        imported = readers[model.suffix](model, dt_ms=args.dt_us / 1000.0)
    except ValueError as error:
        print(f"spikeloop import: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    network = imported.network
    print(imported.table())
    print(f"{model}: {len(network.populations)} populations, {sum(p.size for p in network.populations)} neurons, "
          f"{network.n_inputs} inputs, dt {args.dt_us:g} µs, layout {network.layout}; read in {seconds * 1e3:.0f} ms")
    if args.backend_check:
        import numpy as np

        from pipeline.snn.runtime import build

        for backend in ("float",) if network.is_float else ("loihi", "float"):
            runtime = build(network, backend)
            runtime.step(np.zeros(0, dtype=np.int32))
            print(f"backend {backend}: built and stepped")
    network.save(args.out)
    print(f"wrote {args.out}")
    return 0
