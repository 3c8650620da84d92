"""The ``bci eval`` contract: K contiguous folds, fit on the others, decode the held-out fold, R^2 per axis.

Fold boundaries are ``linspace(0, n, K+1)`` truncated to int. The training rows are the folds before and
after the held-out one, fitted as two segments (history and Kalman transitions never cross the gap).
State-space decoders start each held-out fold from the true kinematics of its first bin (as
Neural_Decoding does); the others first decode the ``decoder.context_bins`` bins before the fold (the
history a running decoder has at the fold's start; counts only, so still causal) and are scored on the
fold alone — with zeros as the history of the fold's first bins, a 10-bin ridge lost ~0.01 R^2 on
chewie and more on short recordings against scikit-learn's lagged design matrix. Units silent (zero variance) in the training folds are dropped and reported.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline.decoders.bci.base import BinDecoder
from pipeline.decoders.bci.kalman import KalmanDecoder
from recordings.neural import BinnedData


def r2_score(y: np.ndarray, y_hat: np.ndarray) -> np.ndarray:
    """R^2 per axis: 1 - sum((y - y_hat)^2) / sum((y - mean y)^2); y, y_hat (T, d) -> (d,)."""
    return 1.0 - ((y - y_hat) ** 2).sum(axis=0) / ((y - y.mean(axis=0)) ** 2).sum(axis=0)


def fold_bounds(n: int, folds: int) -> np.ndarray:
    """Contiguous fold boundaries: linspace(0, n, folds + 1) truncated to int, shape (folds + 1,)."""
    if folds < 2:
        raise ValueError(f"need at least 2 folds, got {folds}")
    bounds = np.linspace(0, n, folds + 1).astype(int)
    if np.any(np.diff(bounds) < 2):
        raise ValueError(f"{n} bins are too few for {folds} folds")
    return bounds


@dataclass(frozen=True)
class FoldResult:
    """One held-out fold: [start, stop) bins, R^2 per axis (d,), units dropped as silent in training,
    decode time per bin (µs), predictions (stop - start, d)."""

    start: int
    stop: int
    r2: np.ndarray
    dropped_units: np.ndarray
    decode_us_per_bin: float
    predicted: np.ndarray


@dataclass(frozen=True)
class EvalResult:
    decoder: str
    folds: tuple[FoldResult, ...]

    @property
    def r2(self) -> np.ndarray:
        """Mean over folds of R^2 per axis, (d,)."""
        return np.mean([f.r2 for f in self.folds], axis=0)

    @property
    def dropped_units(self) -> np.ndarray:
        """Units dropped in at least one fold."""
        return np.unique(np.concatenate([f.dropped_units for f in self.folds]))

    def summary(self) -> dict:
        """The contract's JSON record plus the dropped units. decode_us_per_bin is the median over folds
        of (time to decode the held-out fold) / (its bins), robust to a busy machine."""
        r2 = self.r2
        return {
            "decoder": self.decoder,
            "folds": len(self.folds),
            "r2": [float(v) for v in r2],
            "r2_mean": float(r2.mean()),
            "decode_us_per_bin": float(np.median([f.decode_us_per_bin for f in self.folds])),
            "dropped_units": [int(u) for u in self.dropped_units],
        }


def decode_fold(decoder: BinDecoder, counts: np.ndarray, kinematics: np.ndarray,
                steady_state: bool = False, context: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Decode one held-out block counts (T, n_units) (state-space decoders start from its first true
    kinematics; a Kalman decoder runs the full filter, or its steady-state gain with ``steady_state``);
    context: bins (C, n_units) just before the block, decoded first and not returned. Returns
    predictions (T, d) and the decode time per decoded bin (µs)."""
    x0 = kinematics[0] if decoder.uses_initial_state else None
    skip = 0 if context is None or x0 is not None else len(context)
    if skip:
        counts = np.concatenate([context, counts])
    t0 = time.perf_counter_ns()
    if isinstance(decoder, KalmanDecoder):
        pred = decoder.predict(counts, x0, steady_state=steady_state)
    else:
        pred = decoder.predict(counts, x0)
    return pred[skip:], (time.perf_counter_ns() - t0) / 1e3 / len(counts)


def cross_validate(data: BinnedData, make_decoder: Callable[[], BinDecoder], folds: int, name: str,
                   steady_state: bool = False) -> EvalResult:
    """Contiguous K-fold cross-validation of the decoder built by ``make_decoder`` on ``data``
    (steady_state: score a Kalman decoder's steady-state gain instead of the full filter)."""
    n = len(data)
    bounds = fold_bounds(n, folds)
    results = []
    for i in range(folds):
        a, b = int(bounds[i]), int(bounds[i + 1])
        train = np.r_[0:a, b:n]
        segments = [s for s in ((0, a), (a, a + n - b)) if s[1] > s[0]]
        decoder = make_decoder().fit(data.counts[train], data.kinematics[train], segments)
        decoder.warmup()
        context = data.counts[max(0, a - decoder.context_bins):a]
        pred, us = decode_fold(decoder, data.counts[a:b], data.kinematics[a:b], steady_state, context)
        results.append(FoldResult(a, b, r2_score(data.kinematics[a:b], pred), decoder.scaler.dropped, us, pred))
    return EvalResult(name, tuple(results))
