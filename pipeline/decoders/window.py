"""Sliding-window spike counts: the shared memory of the rate-based decoders.

``SpikeWindow.update(spikes, t_us)`` records one network step's output spikes at sensor time ``t_us`` and
returns the per-output spike counts over the last ``window_us`` µs, i.e. over the updates with
``t_us - window_us < t <= t_us``. Preallocated ring buffer: no allocation per step once warm.
"""
from __future__ import annotations

import numpy as np

from pipeline.core.checks import MAX_VOTE, check_int
from pipeline.core.schema import toml_value


def check_spikes(owner: str, spikes, n_outputs: int) -> np.ndarray:
    """Validate one step's output spikes: shape (n_outputs,), integer/bool 0/1 values."""
    spikes = np.asarray(spikes)
    if spikes.shape != (n_outputs,):
        raise ValueError(f"{owner}: expected spikes of shape ({n_outputs},), got {spikes.shape}")
    if spikes.dtype.kind not in "biu":
        raise ValueError(f"{owner}: expected integer or bool spikes (uint8 0/1), got dtype {spikes.dtype}")
    return spikes


def check_votes(owner: str, votes, n_outputs: int) -> np.ndarray:
    """Validate a vote table (a "vote" readout: output neuron -> its share of each class): float64
    (n_outputs, n_classes >= 1), each in [0, MAX_VOTE]."""
    table = np.asarray(votes, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] != n_outputs or table.shape[1] < 1 or not np.all(np.isfinite(table)) \
            or table.min(initial=0.0) < 0:
        raise ValueError(f"{owner}: parameter 'votes' must be a finite ({n_outputs}, n_classes) array >= 0, "
                         f"got shape {table.shape}")
    if table.max(initial=0.0) > MAX_VOTE:
        raise ValueError(f"{owner}: parameter 'votes' must be at most {MAX_VOTE:g}, got {table.max():g}")
    return table


def check_indices(owner: str, name: str, indices, n_outputs: int) -> np.ndarray:
    """Validate a non-empty list of distinct output indices 0 <= i < n_outputs (int64 array)."""
    values = list(indices) if isinstance(indices, (list, tuple, np.ndarray, range)) else None
    if not values:
        raise ValueError(f"{owner}: parameter '{name}' must be a non-empty list of output indices, got {toml_value(indices)}")
    for position, value in enumerate(values):
        check_int(owner, f"{name}[{position}]", value, 0, n_outputs - 1)
    array = np.asarray(values, dtype=np.int64)
    if len(np.unique(array)) != len(array):
        raise ValueError(f"{owner}: parameter '{name}' lists an output index twice: {values}")
    return array


class SpikeWindow:
    """Per-output spike counts over a sliding window of ``window_us`` µs (n_outputs outputs)."""

    def __init__(self, owner: str, n_outputs: int, window_us: int):
        self.owner = owner
        self.n_outputs = check_int(owner, "n_outputs", n_outputs, 1, 10**7)
        self.window_us = check_int(owner, "window_us", window_us, 1, 10**10)
        self._capacity = 64
        self._times = np.zeros(self._capacity, dtype=np.int64)
        self._ring = np.zeros((self._capacity, self.n_outputs), dtype=np.int32)
        self.counts = np.zeros(self.n_outputs, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Empty window."""
        self._head = 0
        self._size = 0
        self._last_t = None
        self.counts.fill(0)

    @property
    def window_s(self) -> float:
        """Window length in seconds."""
        return self.window_us * 1e-6

    def update(self, spikes, t_us: int) -> np.ndarray:
        """Add one step's spikes (shape (n_outputs,)) at ``t_us`` µs; returns counts (int64 (n_outputs,), a view)."""
        spikes = check_spikes(self.owner, spikes, self.n_outputs)
        t_us = int(t_us)
        if self._last_t is not None and t_us < self._last_t:
            raise ValueError(f"{self.owner}: time went backwards ({t_us} µs after {self._last_t} µs)")
        self._last_t = t_us
        oldest = t_us - self.window_us
        while self._size and self._times[self._head] <= oldest:
            self.counts -= self._ring[self._head]
            self._head = (self._head + 1) % self._capacity
            self._size -= 1
        if self._size == self._capacity:
            self._grow()
        slot = (self._head + self._size) % self._capacity
        self._times[slot] = t_us
        self._ring[slot] = spikes
        self.counts += self._ring[slot]
        self._size += 1
        return self.counts

    def rates_hz(self) -> np.ndarray:
        """Per-output firing rate over the window (Hz = spikes / window_s), float64 (n_outputs,)."""
        return self.counts / self.window_s

    def _grow(self) -> None:
        order = (self._head + np.arange(self._size)) % self._capacity
        self._times = np.concatenate([self._times[order], np.zeros(self._capacity, dtype=np.int64)])
        self._ring = np.concatenate([self._ring[order], np.zeros((self._capacity, self.n_outputs), np.int32)])
        self._capacity *= 2
        self._head = 0
