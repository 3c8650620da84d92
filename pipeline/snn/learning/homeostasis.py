"""Homeostasis: adaptive firing thresholds (Diehl & Cook 2015) for one population of a runtime.

Unsupervised competitive learning needs every neuron to take part: a neuron that wins often grows
its threshold and lets others win. Per step, after the runtime's step has emitted spikes::

    theta = theta * decay + increment * spike        (decay = exp(-1 / tau_steps); 1 when tau_steps = 0)
    theta = min(theta, limit)
    threshold = (vth + floor(theta)) << 6            (Loihi state units, as LoihiParams.threshold)

``theta`` is in threshold-mantissa units (vth units) and kept in float64 between steps; the threshold
the neuron sees is whole vth units, so a trained network folds theta into its population's per-neuron
``vth`` (:meth:`ThresholdAdapter.vth`) and runs with exactly the thresholds it learned with, with no
adaptation at deployment (Diehl & Cook freeze theta for testing). Loihi itself has no threshold
adaptation in its learning engine; this is the training-time half of the method, kept apart from the
synaptic rule engine so that engine stays bit-exact with Lava.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit

#: Threshold mantissas are 17-bit (LoihiLIF.vth).
VTH_MAX = 2 ** 17 - 1
#: Thresholds enter the compartment 6 bits up (LoihiParams.threshold = vth << 6).
THRESHOLD_SHIFT = 6


@dataclass(frozen=True)
class AdaptiveThreshold:
    """Diehl & Cook's theta: ``increment`` vth units added per spike, decaying with ``tau_steps`` (steps;
    0 = no decay), at most ``limit`` vth units above the neuron's base vth."""

    increment: float
    tau_steps: float = 0.0
    limit: float = 65536.0

    def __post_init__(self) -> None:
        for name in ("increment", "tau_steps", "limit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"adaptive threshold: parameter {name!r} must be a finite number >= 0, got {value!r}")
        if self.increment == 0:
            raise ValueError("adaptive threshold: parameter 'increment' must be > 0 (0 is no homeostasis)")

    @property
    def decay(self) -> float:
        """Per-step factor of theta."""
        return math.exp(-1.0 / self.tau_steps) if self.tau_steps else 1.0


class ThresholdParams(NamedTuple):
    """Per-neuron constants (n,): base vth int64, increment / decay / limit float64 (vth units)."""

    base: np.ndarray
    increment: np.ndarray
    decay: np.ndarray
    limit: np.ndarray


class ThresholdState(NamedTuple):
    """theta (n,) float64: the neurons' threshold offsets in vth units."""

    theta: np.ndarray


@njit(cache=True)
def adapt_thresholds(spikes, state, params, threshold):
    """One step of homeostasis: decay theta, add the increment where ``spikes`` (n,) uint8 is set, cap
    at the limit, and write ``threshold`` (n,) = (base + floor(theta)) << 6 (the runtime's view)."""
    theta = state.theta
    for i in range(theta.shape[0]):
        value = theta[i] * params.decay[i]
        if spikes[i]:
            value += params.increment[i]
        value = min(value, params.limit[i])
        theta[i] = value
        vth = params.base[i] + np.int64(value)
        vth = min(vth, VTH_MAX)
        threshold[i] = vth << THRESHOLD_SHIFT


class ThresholdAdapter:
    """Adaptive thresholds on a runtime population: ``step()`` after every ``runtime.step``.

    ``spikes`` is the population's spike view and ``threshold`` its writable threshold view (see
    ``Runtime.spikes_of`` and ``Runtime.thresholds``); ``base_vth`` (n,) the neurons' vth without theta.
    ``theta`` survives ``Runtime.reset`` (it is learned state, not per-presentation state).
    """

    def __init__(self, config: AdaptiveThreshold, base_vth: np.ndarray, spikes: np.ndarray,
                 threshold: np.ndarray, theta: np.ndarray | None = None) -> None:
        n = spikes.shape[0]
        base = np.asarray(base_vth, np.int64)
        if base.shape != (n,) or threshold.shape != (n,):
            raise ValueError(f"base_vth {base.shape} and threshold {threshold.shape} must match the {n} spikes")
        self.config = config
        self.params = ThresholdParams(base.copy(), np.full(n, float(config.increment)), np.full(n, config.decay),
                                      np.full(n, float(config.limit)))
        start = np.zeros(n) if theta is None else np.asarray(theta, np.float64)
        if start.shape != (n,) or not np.all(np.isfinite(start)) or start.min() < 0:
            raise ValueError(f"theta must be a finite, non-negative ({n},) array")
        self.state = ThresholdState(start.copy())
        self.spikes = spikes
        self.threshold = threshold
        self.apply()

    def apply(self) -> None:
        """Write the thresholds theta implies without stepping (after construction or a changed theta)."""
        vth = np.minimum(self.params.base + self.state.theta.astype(np.int64), VTH_MAX)
        self.threshold[:] = vth << THRESHOLD_SHIFT

    def step(self) -> None:
        adapt_thresholds(self.spikes, self.state, self.params, self.threshold)

    def recentre(self) -> None:
        """Subtract the smallest theta from every theta (the least used neuron back at its base vth).

        Competition depends only on the differences of thresholds; without this, thresholds that only
        grow silence the whole layer (Diehl & Cook then re-present the input at a higher rate)."""
        theta = self.state.theta
        theta -= theta.min()
        self.apply()

    @property
    def theta(self) -> np.ndarray:
        """(n,) float64 threshold offsets, vth units (a view)."""
        return self.state.theta

    def vth(self) -> np.ndarray:
        """(n,) int64 per-neuron vth to deploy: base + floor(theta), the thresholds the runtime saw."""
        return np.minimum(self.params.base + self.state.theta.astype(np.int64), VTH_MAX)
