"""Population vector: outputs with preferred directions -> an angle (rad).

angle = atan2(sum_i c_i sin(theta_i), sum_i c_i cos(theta_i)) with c_i the spike count of output i over the
last ``window_us`` µs and theta_i its preferred direction (default: evenly spaced, theta_i = 2*pi*i/n).
Result in (-pi, pi] rad. When fewer than ``min_spikes`` spikes are in the window, or the vector cancels
out, the previous angle is held (initially 0 rad) and ``valid`` is False.
"""
from __future__ import annotations

import numpy as np

from pipeline.core.checks import check_int, check_number
from pipeline.decoders.window import SpikeWindow


class PopulationVector:
    """Angle (rad) from the population vector of windowed spike counts.

    n_outputs: network outputs
    window_us: spike-count window (µs)
    preferred_rad: each output's preferred direction, one per output (rad; left out: evenly spaced from 0)
    min_spikes: spikes needed in the window for a fresh angle (>= 1)
    """

    name = "population_vector"

    def __init__(self, n_outputs: int, window_us: int = 50_000, preferred_rad: list[float] | None = None,
                 min_spikes: int = 1):
        self.window = SpikeWindow(self.name, n_outputs, window_us)
        n = self.window.n_outputs
        if preferred_rad is None:
            preferred = 2.0 * np.pi * np.arange(n) / n
        else:
            preferred = np.asarray([check_number(self.name, f"preferred_rad[{i}]", value)
                                    for i, value in enumerate(preferred_rad)], dtype=np.float64)
            if preferred.shape != (n,):
                raise ValueError(f"{self.name}: parameter 'preferred_rad' needs {n} angles, got {len(preferred)}")
        self.preferred_rad = preferred
        self._cos = np.cos(preferred)
        self._sin = np.sin(preferred)
        self.min_spikes = check_int(self.name, "min_spikes", min_spikes, 1)
        self.reset()

    def reset(self) -> None:
        self.window.reset()
        self.angle = 0.0
        self.strength = 0.0
        self.valid = False

    def update(self, spikes, t_us: int) -> float:
        """Add one step's spikes (uint8 (n_outputs,)) at ``t_us`` µs; returns the angle in rad, (-pi, pi].

        ``strength`` becomes |vector| / spike count (0 = no preferred direction, 1 = all agree).
        """
        counts = self.window.update(spikes, t_us)
        total = int(counts.sum())
        x = float(counts @ self._cos)
        y = float(counts @ self._sin)
        norm = float(np.hypot(x, y))
        self.strength = norm / total if total else 0.0
        self.valid = total >= self.min_spikes and self.strength > 1e-9
        if self.valid:
            self.angle = float(np.arctan2(y, x))
        return self.angle
