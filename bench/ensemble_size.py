"""How accuracy grows with the size of an ensemble of spiking classifiers, on an FSDD split.

    python bench/ensemble_size.py NETWORK.npz [NETWORK.npz ...] [--split official_validation] [--json]

Each network (a count readout, e.g. ``spikeloop train launch/train_fsdd.toml --set
data.split='"official_validation"' --set train.members=1 --set train.member_min_accuracy=0 --set
train.seed=S --out S.npz``; an ensemble file counts as its members, pipeline.snn.ensemble.member) is run
once on the split's test recordings with the trainer's forward, which classifies as the loihi runtime
(``runtime_agreement`` 1.0 in training); then for every K the output spike counts of K of the networks are
summed per class, as the ensemble's vote readout does, and scored: mean, min and max accuracy over every
choice of K networks (a seeded random 2,000 choices where there are more). K = 1 is the single-network
baseline, measured in the same run. The data folder is $SPIKELOOP_DATA/audio/fsdd.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.snn.ensemble import member, member_indices
from pipeline.snn.network import Network
from pipeline.train import bptt
from recordings.datasets import shared_data_dir
from recordings.labelled import open_labelled

MAX_CHOICES = 2000


def members_of(path: Path) -> list[Network]:
    """The networks a file holds: itself, or an ensemble's members."""
    network = Network.load(path)
    return [member(network, k) for k in member_indices(network)] or [network]


def choices(n: int, k: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Every k-subset of range(n), or MAX_CHOICES distinct random ones when there are more."""
    if math.comb(n, k) <= MAX_CHOICES:
        return list(itertools.combinations(range(n), k))
    seen: set[tuple[int, ...]] = set()
    while len(seen) < MAX_CHOICES:
        seen.add(tuple(sorted(rng.choice(n, k, replace=False).tolist())))
    return sorted(seen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("networks", nargs="+", type=Path)
    parser.add_argument("--split", default="official_validation", help="FSDD split whose test set is scored")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    networks = [n for path in args.networks for n in members_of(path)]
    specs = {n.input_spec for n in networks}
    if len(specs) != 1:
        print("the networks were trained on different inputs (input_spec)", file=sys.stderr)
        return 2
    spec = specs.pop()
    _, test_set = open_labelled(shared_data_dir() / "audio" / "fsdd", None).fsdd_split(args.split)
    presentations, labels, _ = bptt.load_set(test_set, None, spec, (1, 1, spec.channels))
    counts = np.array([bptt.output_counts(bptt.compile_any(n), presentations)[0] for n in networks])
    rng = np.random.default_rng(0)
    rows = []
    for k in range(1, len(networks) + 1):
        subsets = choices(len(networks), k, rng)
        accuracy = np.array([np.mean(np.argmax(counts[list(s)].sum(axis=0), axis=1) == labels) for s in subsets])
        rows.append({"members": k, "mean": float(accuracy.mean()), "min": float(accuracy.min()),
                     "max": float(accuracy.max()), "choices": len(subsets)})
    if args.json:
        print(json.dumps({"split": args.split, "clips": len(labels), "networks": len(networks), "sizes": rows}))
        return 0
    print(f"{len(networks)} networks, {args.split} split, {len(labels)} test clips; accuracy of K summed")
    print(f"{'K':>3} {'mean':>7} {'min':>7} {'max':>7} {'choices':>8}  vs one network")
    single = rows[0]["mean"]
    for r in rows:
        print(f"{r['members']:>3} {100 * r['mean']:6.1f}% {100 * r['min']:6.1f}% {100 * r['max']:6.1f}% "
              f"{r['choices']:>8}  {100 * (r['mean'] - single):+5.1f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
