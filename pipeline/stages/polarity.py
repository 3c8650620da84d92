"""Polarity selection: keep only ON or only OFF events."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from numba import njit

from pipeline.core.schema import toml_value
from pipeline.stages._common import word_polarity
from pipeline.stages.stage import StageConfig, param

#: Accepted spellings of ``keep``, normalised to "on" / "off".
_KEEP = {"on": "on", "off": "off", 1: "on", 0: "off"}


class PolarityParams(NamedTuple):
    keep: int  #: 1 keeps ON events (polarity != 0), 0 keeps OFF events


class PolarityState(NamedTuple):
    """Polarity selection keeps no state."""


@njit(cache=True)
def polarity(words, state, params, out):
    """Copy events (words (n, 2) int64) whose polarity (1 ON, 0 OFF) equals ``params.keep`` to ``out``;
    returns the count."""
    kept = 0
    for i in range(words.shape[0]):
        w = words[i, 1]
        out[kept, 0] = words[i, 0]
        out[kept, 1] = w
        kept += word_polarity(w) == params.keep
    return kept


@njit(cache=True)
def _entry(words, state, params, out):
    return polarity(words, PolarityState(*state), PolarityParams(*params), out)


@dataclass(frozen=True)
class PolaritySelect(StageConfig):
    """Keep events of one polarity: "on" (polarity != 0) or "off" (polarity == 0)."""

    name = "polarity"
    entry = staticmethod(_entry)

    keep: str = param("on", help='"on" or "off" (case-insensitive; 1 and 0 are read as "on" and "off")')

    def __post_init__(self):
        keep = self.keep.lower() if isinstance(self.keep, str) else self.keep
        if isinstance(keep, bool) or not isinstance(keep, (str, int)) or keep not in _KEEP:
            raise ValueError(f"{self.name}: parameter 'keep' must be \"on\" or \"off\", got {toml_value(self.keep)}")
        object.__setattr__(self, "keep", _KEEP[keep])

    def kernel_params(self, width: int, height: int) -> PolarityParams:
        return PolarityParams(1 if self.keep == "on" else 0)

    def initial_state(self, params: PolarityParams) -> PolarityState:
        return PolarityState()
