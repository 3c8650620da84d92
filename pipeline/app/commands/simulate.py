"""``spikeloop simulate NET.npz (--input-spikes X.npy | --input-bias B.npy) --steps T --out trace.npz``.

Runs a network file for T steps and records every population: ``<name>_s``, ``<name>_u``, ``<name>_v``
of shape (neurons in the network's layout..., T) (netx imports: populations layer0, layer1, ...; conv
layers as (X, Y, C)). ``--input-spikes``: (n_inputs, T_in) or the input grid plus T_in, nonzero = spike
(the value is the payload of graded projections). ``--input-bias``: bias mantissas of the first
population (lava-dl's bias-driven input layer). ``--reset-interval N``: netx's staggered LIF resets.
Exit status 0, or 2 on a bad file or argument.
"""
from __future__ import annotations

import sys


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser("simulate", help=summary,
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("network", help="network file (.npz, from spikeloop import or Network.save)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input-spikes", metavar="X.npy", help="input spikes, time last")
    source.add_argument("--input-bias", metavar="B.npy", help="bias mantissas of the first population")
    parser.add_argument("--steps", type=int, required=True, help="steps to run")
    parser.add_argument("--reset-interval", type=int, default=None,
                        help="zero population i's u and v at step t when (t + 1) %% N == (1 + i) %% N (netx)")
    parser.add_argument("--backend", choices=["loihi", "float"], default="loihi", help="backend (default loihi)")
    parser.add_argument("--out", required=True, help="trace file to write (.npz)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from pipeline.app.atomic import check_writable, write_atomic
    from pipeline.interop.trace import simulate, with_input_bias
    from pipeline.snn.network import Network

    if args.steps < 1 or (args.reset_interval is not None and args.reset_interval < 1):
        print("spikeloop simulate: --steps and --reset-interval must be positive", file=sys.stderr)
        return 2
    try:
        check_writable(args.out)
        network = Network.load(args.network)
        spikes = None
        if args.input_bias:
            network = with_input_bias(network, _load(args.input_bias))
        else:
            spikes = _load(args.input_spikes)
        trace = simulate(network, args.steps, spikes, args.reset_interval, args.backend)
    except (OSError, ValueError) as error:
        print(f"spikeloop simulate: {error}", file=sys.stderr)
        return 2
    def write(path):
        with open(path, "wb") as handle:  # a handle: numpy appends no .npz
            np.savez_compressed(handle, **trace)

    try:
        write_atomic(args.out, write)
    except ValueError as error:
        print(f"spikeloop simulate: {error}", file=sys.stderr)
        return 2
    totals = ", ".join(f"{k[:-2]} {int(v.sum())}" for k, v in trace.items() if k.endswith("_s"))
    print(f"{args.steps} steps; spikes: {totals}; wrote {args.out}")
    return 0


def _load(path: str):
    from pipeline.core.npz import load_npy

    try:
        return load_npy(path)
    except OSError as error:
        raise ValueError(f"{path}: cannot read ({error.strerror or error})") from None
