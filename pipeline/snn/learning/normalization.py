"""Synaptic scaling: every post neuron's incoming weights rescaled to one fixed norm (Diehl & Cook 2015).

Competitive learning compares inputs by the dot product with each neuron's weights; without a fixed
weight budget a neuron with large weights everywhere wins every input and learns their average.
Diehl & Cook rescale each excitatory neuron's incoming weights to a constant sum after every
presentation; here on the integer weights a Loihi runtime reads (``Runtime.dense_view``, [pre, post])::

    w = min(round(w * total / |w|), w_max)      for every post neuron with |w| > 0

with |w| the L1 norm (sum over pre, Diehl & Cook's choice) or the L2 norm (order 2: the layer then
compares inputs by cosine similarity, which does not favour neurons with few strong weights; on
N-MNIST's stroke-like event images that matters).

Loihi's learning engine has no such operation (it would run on the host between presentations, as
this does); it is kept apart from the sum-of-products engine, which stays bit-exact with Lava.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit


@dataclass(frozen=True)
class WeightNormalization:
    """Rescale each post neuron's incoming weights to the norm ``total`` (weight-mantissa units) of the
    given ``order`` (1 or 2), capping each weight at ``w_max`` (255 for 8-bit excitatory weights)."""

    total: int
    order: int = 1
    w_max: int = 255

    def __post_init__(self) -> None:
        for name in ("total", "w_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"weight normalization: parameter {name!r} must be an integer >= 1, got {value!r}")
        if self.order not in (1, 2):
            raise ValueError(f"weight normalization: parameter 'order' must be 1 or 2, got {self.order!r}")

    def apply(self, weights: np.ndarray) -> int:
        """Normalise ``weights`` (n_pre, n_post) in place; returns the columns rescaled."""
        return normalize_incoming(weights, self.total, self.order, self.w_max)


@njit(cache=True)
def normalize_incoming(weights, total, order, w_max):
    """weights (n_pre, n_post) integer, non-negative, in place: column j scaled to L1 (order 1) or L2
    (order 2) norm ``total`` (rounded half up, capped at ``w_max``); all-zero columns are left alone.
    Returns the columns rescaled."""
    n_pre, n_post = weights.shape
    norms = np.zeros(n_post, np.float64)
    for i in range(n_pre):
        for j in range(n_post):
            w = np.float64(weights[i, j])
            norms[j] += w if order == 1 else w * w
    changed = 0
    for j in range(n_post):
        if order == 2:
            norms[j] = np.sqrt(norms[j])
        if norms[j] > 0 and norms[j] != total:
            changed += 1
            norms[j] = total / norms[j]
        else:
            norms[j] = 1.0
    if changed == 0:
        return 0
    for i in range(n_pre):
        for j in range(n_post):
            w = np.int64(np.floor(weights[i, j] * norms[j] + 0.5))
            weights[i, j] = min(w_max, w)
    return changed
