"""Binned neural data with its kinematics — what the BCI decoders fit on and are evaluated on."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.core.events import SPIKE_DTYPE

#: Most spikes one replayed block may hold: the stream and its sort take ~80 bytes per spike (0.8 GB here);
#: a damaged or hostile count (1e12 in one bin asked for 7.28 TiB) is refused before anything is allocated.
MAX_SPIKES = 10_000_000


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
        raise ValueError("counts must be non-negative integers to become spikes (these look like rates: "
                         "see --rates-to-spikes)")
    total = float(counts.sum(dtype=np.float64))
    if total > MAX_SPIKES:
        row, unit = np.unravel_index(int(np.argmax(counts)), counts.shape)
        raise ValueError(f"{total:.4g} spikes, more than {MAX_SPIKES:,} in one replay (largest count: "
                         f"{counts[row, unit]:.4g} at row {row}, unit {unit})")
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


def rates_to_counts(rates: np.ndarray, bin_us: int) -> np.ndarray:
    """Spike counts (float64 (T, n_units), whole numbers) for firing rates (spikes/s, (T, n_units)) over
    bins of ``bin_us``: each unit's expected count rate x bin width is accumulated and rounded down along
    time, so no fraction is lost (a unit at 5 Hz in 50 ms bins spikes every 4th bin) and the same file
    always gives the same spikes. Negative rates raise ValueError."""
    rates = np.asarray(rates, dtype=np.float64)
    if np.any(rates < 0):
        row, unit = np.argwhere(rates < 0)[0]
        raise ValueError(f"row {row}, unit {unit}: negative rate {rates[row, unit]:g}")
    cumulative = np.floor(np.cumsum(rates * (bin_us / 1e6), axis=0) + 1e-9)
    return np.diff(cumulative, axis=0, prepend=0.0)
