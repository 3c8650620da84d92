"""Causal binning of AER spike events (SPIKE_DTYPE, timestamps in µs) into per-bin spike counts.

A bin ``i`` covers sensor time ``[t_start_us + i*bin_us, t_start_us + (i+1)*bin_us)``. A bin is emitted
only once sensor time has passed its end, so the counts of bin ``i`` never depend on later events.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from pipeline.core.events import SPIKE_DTYPE


@njit(cache=True)
def _accumulate(timestamps, channels, t_start_us, bin_us, first_bin, n_channels, out):
    """Add each event to ``out[bin - first_bin, channel]``; events outside ``out`` or with a channel
    outside [0, n_channels) are skipped and counted. Returns the number of skipped events."""
    skipped = 0
    n_rows = out.shape[0]
    for i in range(timestamps.shape[0]):
        row = (timestamps[i] - t_start_us) // bin_us - first_bin
        ch = channels[i]
        if row < 0 or row >= n_rows or ch < 0 or ch >= n_channels:
            skipped += 1
            continue
        out[row, ch] += 1.0
    return skipped


def _check_spikes(events: np.ndarray) -> None:
    if not isinstance(events, np.ndarray) or events.dtype != SPIKE_DTYPE:
        got = getattr(events, "dtype", type(events).__name__)
        raise TypeError(f"expected an AER spike array of SPIKE_DTYPE {SPIKE_DTYPE}, got {got}")


def bin_spikes(events: np.ndarray, n_channels: int, bin_us: int, t_start_us: int, n_bins: int) -> np.ndarray:
    """Spike counts per bin: float64 array (n_bins, n_channels).

    events: SPIKE_DTYPE array (timestamp µs, channel); bin_us: bin width in µs; events before
    ``t_start_us``, after the last bin or on a channel >= n_channels are ignored.
    """
    _check_spikes(events)
    if bin_us <= 0:
        raise ValueError(f"bin width must be > 0 µs, got {bin_us}")
    out = np.zeros((int(n_bins), int(n_channels)), dtype=np.float64)
    _accumulate(events["timestamp"], events["channel"], int(t_start_us), int(bin_us), 0, int(n_channels), out)
    return out


class OnlineBinner:
    """Turns a stream of spike packets into completed bins, one call per packet.

    n_channels: number of units; bin_us: bin width (µs); t_start_us: start of bin 0 (µs).
    ``push(events, t_end_us)`` returns the bins completed by this packet, shape (k, n_channels) float64
    (k may be 0): a bin is complete once sensor time ``t_end_us`` (inclusive) reaches its last µs.
    ``skipped`` counts events that arrived too late for their bin (or on an unknown channel).
    """

    def __init__(self, n_channels: int, bin_us: int, t_start_us: int = 0):
        if bin_us <= 0:
            raise ValueError(f"bin width must be > 0 µs, got {bin_us}")
        if n_channels <= 0:
            raise ValueError(f"need at least one channel, got {n_channels}")
        self.n_channels = int(n_channels)
        self.bin_us = int(bin_us)
        self.t_start_us = int(t_start_us)
        self.next_bin = 0
        self.skipped = 0
        self._open = np.zeros(self.n_channels, dtype=np.float64)

    def bin_start_us(self, index: int) -> int:
        """Sensor time (µs) at which bin ``index`` starts."""
        return self.t_start_us + index * self.bin_us

    def push(self, events: np.ndarray, t_end_us: int) -> np.ndarray:
        """Add one packet (SPIKE_DTYPE, sorted) complete up to ``t_end_us`` (µs, inclusive)."""
        _check_spikes(events)
        n_done = max((int(t_end_us) + 1 - self.t_start_us) // self.bin_us, self.next_bin)
        k = n_done - self.next_bin
        out = np.zeros((k + 1, self.n_channels), dtype=np.float64)
        out[0] = self._open
        self.skipped += int(
            _accumulate(events["timestamp"], events["channel"], self.t_start_us, self.bin_us,
                        self.next_bin, self.n_channels, out)
        )
        self._open = out[k].copy()
        self.next_bin = n_done
        return out[:k]
