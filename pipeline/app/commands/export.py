"""``spikeloop export NET.npz --out MODEL.nir``: a float network as a NIR graph (the nir package's HDF5).

Populations become IF / LIF / CubaLIF nodes by their per-step decays at the network's dt (time
constants in seconds), projections Linear / Conv2d (+ Delay) nodes; ``spikeloop import`` of the result
gives the same network up to float rounding. Exit status 0; 2 with one line naming the file and what NIR
cannot express (refractory periods, per-synapse delays, LoihiLIF networks, an ensemble's vote readout); 1 when
writing fails.
"""
from __future__ import annotations

import sys


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser("export", help=summary,
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("network", help="network file (.npz)")
    parser.add_argument("--out", required=True, help="NIR file to write (.nir)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from pipeline.app.atomic import check_writable, write_atomic
    from pipeline.interop.nir_export import write_nir
    from pipeline.snn.network import Network

    try:
        check_writable(args.out)
        network = Network.load(args.network)  # its errors name the file
    except (OSError, ValueError) as error:
        print(f"spikeloop export: {error}", file=sys.stderr)
        return 2
    try:
        write_atomic(args.out, lambda path: write_nir(network, path))
    except (ValueError, ImportError) as error:  # what NIR cannot express, or no nir package
        print(f"spikeloop export: {args.network}: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the write failed (disk full ...): a runtime failure
        print(f"spikeloop export: {args.out}: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {len(network.populations)} populations, {len(network.projections)} projections")
    return 0
