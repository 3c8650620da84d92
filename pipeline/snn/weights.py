"""Lava's bit-accurate weight preparation (Dense ``num_weight_bits`` truncation), done once at build.

Sign mode: excitatory if min(W) >= 0, inhibitory if max(W) <= 0, else mixed. Weights are clipped to
[-256 * mixed, 255] (inhibitory: negated, clipped, negated back), then their low
``n = 8 - num_weight_bits + mixed`` bits are zeroed with arithmetic shifts (-3 -> -4, 3 -> 2).
"""
from __future__ import annotations

import numpy as np

EXCITATORY, INHIBITORY, MIXED = 1, 2, 3


def sign_mode(weights: np.ndarray) -> int:
    """EXCITATORY, INHIBITORY or MIXED for a set of integer weights (all zero counts as excitatory)."""
    if weights.size == 0 or weights.min() >= 0:
        return EXCITATORY
    if weights.max() <= 0:
        return INHIBITORY
    return MIXED


def truncate_weights(weights: np.ndarray, num_weight_bits: int) -> tuple[np.ndarray, int]:
    """Loihi weights (int64, same shape) and the number ``n`` of zeroed low bits (each is a multiple of 2**n)."""
    weights = np.asarray(weights).astype(np.int64)
    mode = sign_mode(weights)
    mixed = int(mode == MIXED)
    if mode == INHIBITORY:
        clipped = -np.clip(-weights, 0, 255)
    else:
        clipped = np.clip(weights, -256 * mixed, 255)
    n = 8 - int(num_weight_bits) + mixed
    return (clipped >> n) << n, n
