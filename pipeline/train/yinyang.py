"""The Yin-Yang data set (Kriener, Göltz and Petrovici 2021), generated from its defining formula.

A point (x, y) is drawn uniformly in the square [0, 2 r_big]^2 and kept when it lies inside the big
circle of radius r_big around (r_big, r_big). Its class: "dot" (2) inside either small circle of radius
r_small around the left (0.5 r_big, r_big) or right (1.5 r_big, r_big) centre; else "yin" (0) when it is
in the right small circle's region (d_right <= r_small), or d_left in (r_small, r_big / 2], or in the
upper half with d_right > r_big / 2; else "yang" (1). As in the original generator, each sample first
draws its goal class uniformly and then draws points until one has that class, so classes are
balanced in expectation. With r_big = 0.5 the coordinates lie in [0, 1]; the features are
(x, y, 1 - x, 1 - y), so every sample has the same sum of features (no information in their total).
"""
from __future__ import annotations

import numpy as np

CLASSES = ("yin", "yang", "dot")
#: Most points the rejection sampler draws for one data set (bounds the time a bad seed can take).
MAX_DRAWS_PER_SAMPLE = 1000


def classify(x: np.ndarray, y: np.ndarray, r_small: float = 0.1, r_big: float = 0.5) -> np.ndarray:
    """Class index (int64, shape of x) of points inside the big circle."""
    d_right = np.hypot(x - 1.5 * r_big, y - r_big)
    d_left = np.hypot(x - 0.5 * r_big, y - r_big)
    yin = (d_right <= r_small) | ((d_left > r_small) & (d_left <= 0.5 * r_big)) \
        | ((y > r_big) & (d_right > 0.5 * r_big))
    dot = (d_right < r_small) | (d_left < r_small)
    return np.where(dot, 2, np.where(yin, 0, 1)).astype(np.int64)


def generate(n: int, seed: int, r_small: float = 0.1, r_big: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples: features (n, 4) float64 (x, y, 1 - x, 1 - y) and labels (n,) int64, reproducible from ``seed``."""
    if n < 1:
        raise ValueError(f"yin-yang: n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    goals = rng.integers(0, 3, n)
    points = np.zeros((n, 2))
    missing = np.arange(n)
    draws = 0
    while missing.size:
        draws += 1
        if draws > MAX_DRAWS_PER_SAMPLE:
            raise RuntimeError("yin-yang: rejection sampling did not finish")
        xy = rng.uniform(0.0, 2 * r_big, (missing.size, 2))
        inside = np.hypot(xy[:, 0] - r_big, xy[:, 1] - r_big) <= r_big
        ok = inside & (classify(xy[:, 0], xy[:, 1], r_small, r_big) == goals[missing])
        points[missing[ok]] = xy[ok]
        missing = missing[~ok]
    x, y = points[:, 0] / (2 * r_big), points[:, 1] / (2 * r_big)
    return np.stack([x, y, 1 - x, 1 - y], axis=1), goals.astype(np.int64)
