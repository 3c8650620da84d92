"""Synaptic scaling: every post neuron's incoming weights rescaled to one fixed sum (Diehl & Cook 2015).

Competitive learning compares inputs by the dot product with each neuron's weights; without a fixed
weight budget a neuron with large weights everywhere wins every input and learns their average.
Diehl & Cook rescale each excitatory neuron's incoming weights to a constant sum after every
presentation; here on the integer weights a Loihi runtime reads (``Runtime.dense_view``, [pre, post])::

    w = min(round(w * total / sum(w over pre)), w_max)      for every post neuron with sum(w) > 0

Loihi's learning engine has no such operation (it would run on the host between presentations, as
this does); it is kept apart from the sum-of-products engine, which stays bit-exact with Lava.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit


@dataclass(frozen=True)
class WeightNormalization:
    """Rescale each post neuron's incoming weights to sum to ``total`` (weight-mantissa units), capping
    each weight at ``w_max`` (255 for 8-bit excitatory weights)."""

    total: int
    w_max: int = 255

    def __post_init__(self) -> None:
        for name in ("total", "w_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"weight normalization: parameter {name!r} must be an integer >= 1, got {value!r}")


@njit(cache=True)
def normalize_incoming(weights, total, w_max):
    """weights (n_pre, n_post) integer, non-negative, in place: column j scaled to sum ``total`` (rounded
    half up, capped at ``w_max``); all-zero columns are left alone. Returns the columns rescaled."""
    n_pre, n_post = weights.shape
    sums = np.zeros(n_post, np.int64)
    for i in range(n_pre):
        for j in range(n_post):
            sums[j] += weights[i, j]
    changed = 0
    for j in range(n_post):
        if sums[j] > 0 and sums[j] != total:
            changed += 1
    if changed == 0:
        return 0
    for i in range(n_pre):
        for j in range(n_post):
            s = sums[j]
            if s > 0 and s != total:
                w = (np.int64(weights[i, j]) * total + s // 2) // s
                weights[i, j] = w if w < w_max else w_max
    return changed
