"""Per-pixel refractory filter: after a kept event, a pixel stays silent for ``refractory_us``.

An event at pixel (x, y) is kept when ``t - last_kept[y, x] >= refractory_us`` (or the pixel has not
fired yet); only kept events restart the refractory period. With ``per_polarity`` ON and OFF events
have separate periods.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit

from pipeline.core.checks import check_int
from pipeline.core.schema import toml_value
from pipeline.stages._common import word_polarity, word_x, word_y
from pipeline.stages.stage import StageConfig, param

#: "Never fired": far enough in the past that any real timestamp is out of its refractory period.
_NEVER = np.int64(-(2**62))


class RefractoryParams(NamedTuple):
    width: int           #: input width (px)
    height: int          #: input height (px)
    refractory_us: int   #: silence after a kept event (µs)
    per_polarity: bool   #: ON and OFF events have separate periods


class RefractoryState(NamedTuple):
    #: (2 if per_polarity else 1, height, width) int64: time of each pixel's last kept event (µs).
    last_us: np.ndarray


@njit(cache=True)
def refractory(words, state, params, out):
    """Keep events (words (n, 2) int64) outside their pixel's refractory period, copying them to ``out``.

    Kept events restart the period in ``state.last_us``. Returns the kept count, or -(i+1) when event i
    lies outside the width x height input.
    """
    last = state.last_us
    width, height = params.width, params.height
    kept = 0
    for i in range(words.shape[0]):
        t = words[i, 0]
        w = words[i, 1]
        x = word_x(w)
        y = word_y(w)
        if x < 0 or x >= width or y < 0 or y >= height:
            return -(i + 1)
        c = word_polarity(w) if params.per_polarity else 0
        if t - last[c, y, x] >= params.refractory_us:
            last[c, y, x] = t
            out[kept, 0] = t
            out[kept, 1] = w
            kept += 1
    return kept


@njit(cache=True)
def _entry(words, state, params, out):
    return refractory(words, RefractoryState(*state), RefractoryParams(*params), out)


@dataclass(frozen=True)
class RefractoryFilter(StageConfig):
    """Drop events closer than refractory_us to the previous kept event of the same pixel."""

    name = "refractory"
    entry = staticmethod(_entry)

    refractory_us: int = param(1000, help="a pixel stays silent this long after a kept event (1 .. 10^12)",
                               unit="µs")
    per_polarity: bool = param(False, help="ON and OFF events have separate refractory periods")

    def __post_init__(self):
        object.__setattr__(self, "refractory_us",
                           check_int(self.name, "refractory_us", self.refractory_us, 1, 10**12))
        if not isinstance(self.per_polarity, bool):
            raise ValueError(f"{self.name}: parameter 'per_polarity' must be true or false, got {toml_value(self.per_polarity)}")

    def kernel_params(self, width: int, height: int) -> RefractoryParams:
        return RefractoryParams(width, height, self.refractory_us, self.per_polarity)

    def initial_state(self, params: RefractoryParams) -> RefractoryState:
        """Every pixel out of its refractory period."""
        channels = 2 if params.per_polarity else 1
        return RefractoryState(np.full((channels, params.height, params.width), _NEVER, dtype=np.int64))
