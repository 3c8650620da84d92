"""Windowed firing rate -> one continuous value (a speed, a turn rate, a setpoint).

value = scale * (mean rate of the ``positive`` outputs - mean rate of the ``negative`` outputs) + offset,
rates in Hz over the last ``window_us`` µs. With scale = 1 and offset = 0 the value is in Hz; e.g.
scale = 0.002 (m/s per Hz) gives m/s. During the first window the rate ramps up (always / window length).
"""
from __future__ import annotations

import numpy as np

from pipeline.core.checks import check_number
from pipeline.core.schema import toml_value
from pipeline.decoders.window import SpikeWindow, check_indices


class RateDecoder:
    """Continuous value from windowed rates.

    n_outputs: network outputs
    window_us: rate window (µs)
    positive: output indices whose rate adds to the value (left out: all outputs)
    negative: output indices whose rate subtracts from it (left out: none)
    scale: value units per Hz of rate
    offset: the value at zero rate (value units)
    unit: label of the value's unit in logs
    """

    name = "rate"

    def __init__(self, n_outputs: int, window_us: int = 100_000, positive: list[int] | None = None,
                 negative: list[int] | None = None,
                 scale: float = 1.0, offset: float = 0.0, unit: str = "Hz"):
        self.window = SpikeWindow(self.name, n_outputs, window_us)
        n = self.window.n_outputs
        self.positive = np.arange(n) if positive is None else check_indices(self.name, "positive", positive, n)
        self.negative = (np.zeros(0, dtype=np.int64) if negative is None or len(negative) == 0
                         else check_indices(self.name, "negative", negative, n))
        if np.intersect1d(self.positive, self.negative).size:
            raise ValueError(f"{self.name}: outputs {np.intersect1d(self.positive, self.negative).tolist()} are "
                             "in both 'positive' and 'negative'")
        self.scale = check_number(self.name, "scale", scale)
        self.offset = check_number(self.name, "offset", offset)
        if not isinstance(unit, str):
            raise ValueError(f"{self.name}: parameter 'unit' must be a string, got {toml_value(unit)}")
        self.unit = unit
        self.value = self.offset

    def reset(self) -> None:
        self.window.reset()
        self.value = self.offset

    def update(self, spikes, t_us: int) -> float:
        """Add one step's spikes (uint8 (n_outputs,)) at ``t_us`` µs; returns the value in ``unit``."""
        counts = self.window.update(spikes, t_us)
        rate = counts[self.positive].mean()
        if len(self.negative):
            rate -= counts[self.negative].mean()
        self.value = self.scale * rate / self.window.window_s + self.offset
        return self.value
