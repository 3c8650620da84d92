"""``spikeloop conformance loihi FILE.npz [--json]``: check the loihi backend against Lava's outputs.

Runs every scenario in a file laid out like ../shared/conformance/loihi/lava_reference.npz,
lava_learning_reference.npz or lava_structures_reference.npz (Sparse, recurrence, delays, Conv, per-neuron
parameters, graded spikes; an unknown scenario kind is an error) and compares every recorded integer. Exit status 0 only if everything matches, 1 on a mismatch, 2 on a bad file.
"""
from __future__ import annotations

import json
import sys


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser("conformance", help=summary,
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("backend", choices=["loihi"], help="backend to check (loihi)")
    parser.add_argument("file", help="reference .npz (lava_reference.npz layout)")
    parser.add_argument("--json", action="store_true",
                        help='print {"A": {"spikes": true, "v": true, "u": true}, ...} only')
    parser.set_defaults(func=run)


def run(args) -> int:
    from pipeline.snn.conformance import run_file, summary

    try:
        checks = run_file(args.file)
    except (OSError, ValueError) as error:
        print(f"spikeloop conformance: {error}", file=sys.stderr)
        return 2
    except (TypeError, KeyError, IndexError) as error:  # arrays of the wrong kind in a readable archive
        print(f"spikeloop conformance: {args.file}: not a Lava reference file ({type(error).__name__}: {error})",
              file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary(checks)))
    else:
        print(f"{'scenario':<9}{'quantity':<9}{'shape (T, n)':<14}{'result':<7}first mismatch")
        for check in checks:
            detail = "" if check.mismatch is None else check.mismatch.describe()
            shape = "x".join(str(s) for s in check.shape)
            print(f"{check.scenario:<9}{check.quantity:<9}{shape:<14}{'ok' if check.ok else 'FAIL':<7}{detail}")
        failed = sum(not c.ok for c in checks)
        print(f"{len(checks) - failed} of {len(checks)} recorded arrays match exactly")
    return 0 if all(c.ok for c in checks) else 1
