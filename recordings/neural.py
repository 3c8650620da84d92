"""Binned neural data with its kinematics — what the BCI decoders fit on and are evaluated on."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.core.events import SPIKE_DTYPE


@dataclass(frozen=True)
class BinnedData:
    """counts: float64 (T, n_units) spike counts (or rates) per bin; kinematics: float64 (T, d), e.g.
    hand velocity; bin_us: bin width (µs); source: "file:variables" for messages; axes: kinematic
    names (d,); targets: int64 (T,) target per bin or None."""

    counts: np.ndarray
    kinematics: np.ndarray
    bin_us: int
    source: str
    axes: tuple[str, ...]
    targets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def n_units(self) -> int:
        return self.counts.shape[1]


def counts_to_spikes(counts: np.ndarray, bin_us: int, t_start_us: int = 0) -> np.ndarray:
    """AER spikes (SPIKE_DTYPE, time-sorted) whose re-binning at ``bin_us`` gives ``counts`` (T, n_units)
    back: the c spikes of a unit in a bin are spread evenly inside it (at (k + 0.5) * bin_us / c)."""
    counts = np.asarray(counts)
    if np.any(counts < 0) or np.any(counts != np.round(counts)):
        raise ValueError("counts must be non-negative integers to become spikes (these look like rates)")
    c = counts.astype(np.int64).ravel()
    total = int(c.sum())
    cell = np.repeat(np.arange(c.size), c)
    first = np.repeat(np.cumsum(c) - c, c)
    k = np.arange(total) - first
    rows, units = np.divmod(cell, counts.shape[1])
    ts = t_start_us + rows * bin_us + ((2 * k + 1) * bin_us) // (2 * c[cell])
    order = np.argsort(ts, kind="stable")
    out = np.empty(total, dtype=SPIKE_DTYPE)
    out["timestamp"] = ts[order]
    out["channel"] = units[order]
    return out
