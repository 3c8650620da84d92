"""``spikeloop import MODEL.nir|MODEL.net --out NET.npz [--dt-us 1000] [--backend-check]``: a model from the field.

Reads a NIR graph (``.nir``: float-backend network; NIR stores no dt, ``--dt-us`` sets the step and
the table says how each time constant became a per-step factor) or a lava-dl netx ``.net`` file
(loihi-exact), prints the layer table (type, shape, population, neuron
parameters, what was approximated or ignored and why) and writes a spikeloop network that ``simulate``,
``evaluate`` and ``launch`` use. The classifier spec is stored with it (pipeline.interop.classifier): a
(2, H, W) input is an event camera binned at the step (NIR: event counts), read out by output spike
counts with classes "0".."n-1"; ``--encoding``, ``--classes``, ``--tail-steps`` override,
``--no-classifier`` stores none. ``--backend-check`` builds and steps the network on every backend it
runs on; for a float (NIR) network that includes the loihi backend through pipeline.snn.convert.to_loihi,
and a weight or bias that does not fit Loihi's ranges is named with its layer and by how much.
Exit status 0 on success, 2 on a bad file or flag (one line naming the file and node or HDF5 path).
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
    parser.add_argument("--encoding", choices=["spikes", "counts"], default=None,
                        help="input per step: binary spikes or event counts (default: counts for NIR, spikes for netx)")
    parser.add_argument("--classes", default=None, metavar="A,B,C",
                        help="class names of the output neurons, comma-separated (default 0..n-1)")
    parser.add_argument("--tail-steps", type=int, default=None,
                        help="steps without input after a recording (default: one hop per projection to the output)")
    parser.add_argument("--no-classifier", action="store_true", help="store no input spec and readout")
    parser.set_defaults(func=run)


def run(args) -> int:
    from pipeline.app.atomic import check_writable, write_atomic
    from pipeline.interop.classifier import describe, with_classifier
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
    if args.no_classifier and (args.encoding or args.classes or args.tail_steps is not None):
        print("spikeloop import: --no-classifier excludes --encoding, --classes and --tail-steps", file=sys.stderr)
        return 2
    classes = None
    if args.classes is not None:
        classes = tuple(c.strip() for c in args.classes.split(","))
        if not all(classes):
            print(f"spikeloop import: --classes: empty class name in {args.classes!r}", file=sys.stderr)
            return 2
    if args.tail_steps is not None and args.tail_steps < 0:
        print(f"spikeloop import: --tail-steps must be >= 0, got {args.tail_steps}", file=sys.stderr)
        return 2
    try:
        check_writable(args.out)
    except ValueError as error:
        print(f"spikeloop import: --out {error}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        imported = readers[model.suffix](model, dt_ms=args.dt_us / 1000.0)
    except ValueError as error:
        print(f"spikeloop import: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    network = imported.network
    if not args.no_classifier:
        try:
            network = with_classifier(network, encoding=args.encoding, classes=classes, tail_steps=args.tail_steps)
        except ValueError as error:
            print(f"spikeloop import: {model}: {error}", file=sys.stderr)
            return 2
    print(imported.table())
    print(describe(network))
    print(f"{model}: {len(network.populations)} populations, {sum(p.size for p in network.populations)} neurons, "
          f"{network.n_inputs} inputs, dt {args.dt_us:g} µs, layout {network.layout}; read in {seconds * 1e3:.0f} ms")
    if args.backend_check:
        import numpy as np

        from pipeline.interop.fit import loihi_misfits
        from pipeline.snn.runtime import build

        loihi, problems = loihi_misfits(network)
        for problem in problems:
            print(f"spikeloop import: {model}: does not fit the loihi backend: {problem}", file=sys.stderr)
        if problems:
            return 2
        for backend, runnable in (("loihi", loihi), ("float", network)):
            runtime = build(runnable, backend)
            runtime.step(np.zeros(0, dtype=np.int32))
            print(f"backend {backend}: built and stepped" + (" (through to_loihi)" if runnable is not network else ""))
    try:
        write_atomic(args.out, network.save)
    except ValueError as error:
        print(f"spikeloop import: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0
