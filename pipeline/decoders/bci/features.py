"""Input checks, unit selection/z-scoring and lagged (history) design matrices for the BCI decoders.

Shapes: binned counts are (T, n_units) — T bins, one column per unit; kinematics are (T, d).
A decoder with ``history`` h and ``lag`` L predicts bin t from the bins t-L, t-L-1, ..., t-L-h+1
(causal); bins before the start of a segment are taken as the training mean (0 after z-scoring).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class BCIInputError(ValueError):
    """Binned data or kinematics that a decoder cannot use (shape, NaN, unit count)."""


#: Largest design matrix (values, float64) a history may ask for: 2^27 values = 1 GiB.
MAX_DESIGN_VALUES = 1 << 27


def check_counts(counts, n_units: int | None = None, what: str = "neural data") -> np.ndarray:
    """``counts`` as a float64 (T, n_units) array; raises BCIInputError naming ``what`` otherwise."""
    arr = np.asarray(counts)
    if arr.ndim != 2:
        raise BCIInputError(f"{what}: expected a 2-D array [time bins x units], got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise BCIInputError(f"{what}: expected numeric spike counts or rates, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise BCIInputError(f"{what}: non-finite value (NaN/inf) at bin {bad[0]}, unit {bad[1]}")
    if n_units is not None and arr.shape[1] != n_units:
        raise BCIInputError(
            f"{what}: units mismatch: the model was fitted on {n_units} units, the data has {arr.shape[1]}"
        )
    return arr


def check_kinematics(kin, n_bins: int, what: str = "kinematics") -> np.ndarray:
    """``kin`` as a float64 (n_bins, d) array (a 1-D array is one axis); raises BCIInputError otherwise."""
    arr = np.asarray(kin)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n_bins:
        raise BCIInputError(f"{what}: expected shape ({n_bins}, d) to match the neural bins, got {np.shape(kin)}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise BCIInputError(f"{what}: non-finite value (NaN/inf) at bin {bad[0]}, axis {bad[1]}")
    return arr


def check_segments(segments, n_bins: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) bin ranges covering the data; None means one segment (0, n_bins)."""
    if segments is None:
        return [(0, n_bins)]
    out = []
    for start, stop in segments:
        if not 0 <= start < stop <= n_bins:
            raise BCIInputError(f"segment [{start}, {stop}) is not a non-empty range inside 0..{n_bins}")
        out.append((int(start), int(stop)))
    return out


@dataclass
class UnitScaler:
    """Which input units a model uses and how they are normalised.

    n_units: units the model expects per bin; keep: int64 (n_kept,) indices of the used units (units
    silent in training are dropped); mean, inv_scale: float64 (n_kept,), z = (count - mean) * inv_scale.
    """

    n_units: int
    keep: np.ndarray
    mean: np.ndarray
    inv_scale: np.ndarray

    @classmethod
    def fit(cls, counts: np.ndarray, zscore: bool = True) -> "UnitScaler":
        """Drop zero-variance units of ``counts`` (T, n_units); z-score the rest when ``zscore``."""
        std = counts.std(axis=0)
        keep = np.flatnonzero(std > 0).astype(np.int64)
        if len(keep) == 0:
            raise BCIInputError("every unit is silent (zero variance) in the training bins")
        if zscore:
            mean, inv = counts[:, keep].mean(axis=0), 1.0 / std[keep]
        else:
            mean, inv = np.zeros(len(keep)), np.ones(len(keep))
        return cls(counts.shape[1], keep, mean, inv)

    @property
    def dropped(self) -> np.ndarray:
        """Indices of the units the model ignores (silent during training)."""
        return np.setdiff1d(np.arange(self.n_units), self.keep)

    def transform(self, counts: np.ndarray) -> np.ndarray:
        """(T, n_units) counts -> (T, n_kept) normalised features."""
        return (counts[:, self.keep] - self.mean) * self.inv_scale


def lagged(z: np.ndarray, history: int, lag: int, segments=None) -> np.ndarray:
    """Design matrix (T, history * n) from features z (T, n): block k holds z[t - lag - k].

    Bins before the start of each segment read as 0 (the training mean after z-scoring), so no
    segment sees another one's data and nothing from the future is used.
    """
    T, n = z.shape
    if T * history * n > MAX_DESIGN_VALUES:
        raise BCIInputError(f"history {history} bins x {n} units x {T} bins is a {T * history * n * 8 / 2**30:.1f} GiB "
                            f"design matrix, more than {MAX_DESIGN_VALUES * 8 / 2**30:g} GiB (use a shorter history)")
    out = np.zeros((T, history * n), dtype=np.float64)
    for start, stop in check_segments(segments, T):
        for k in range(history):
            shift = lag + k
            if shift < stop - start:
                out[start + shift:stop, k * n:(k + 1) * n] = z[start:stop - shift]
    return out
