"""Region-of-interest crop: keep events inside a rectangle and re-base their coordinates to it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from numba import njit

from pipeline.core.checks import check_int
from pipeline.stages._common import with_xy, word_x, word_y
from pipeline.stages.stage import StageConfig, param


class RoiParams(NamedTuple):
    x: int  #: left edge of the rectangle (px)
    y: int  #: top edge (px)
    w: int  #: width (px)
    h: int  #: height (px)


class RoiState(NamedTuple):
    """A crop keeps no state."""


@njit(cache=True)
def roi(words, state, params, out):
    """Copy events (words (n, 2) int64) with x <= ex < x+w, y <= ey < y+h to ``out`` as (ex-x, ey-y).

    Returns the count; events outside the sensor are outside the rectangle, hence dropped.
    """
    kept = 0
    for i in range(words.shape[0]):
        w = words[i, 1]
        x = word_x(w) - params.x
        y = word_y(w) - params.y
        out[kept, 0] = words[i, 0]
        out[kept, 1] = with_xy(w, x, y)
        kept += (0 <= x) & (x < params.w) & (0 <= y) & (y < params.h)
    return kept


@njit(cache=True)
def _entry(words, state, params, out):
    return roi(words, RoiState(*state), RoiParams(*params), out)


@dataclass(frozen=True)
class RoiCrop(StageConfig):
    """Keep the rectangle (x, y, w, h) of the sensor and re-base coordinates to it; output is w x h."""

    name = "roi"
    entry = staticmethod(_entry)

    x: int = param(help="left edge of the rectangle, from the sensor's left (must lie inside it)", unit="px")
    y: int = param(help="top edge of the rectangle, from the sensor's top (must lie inside it)", unit="px")
    w: int = param(help="rectangle width, at most the sensor width minus x", unit="px")
    h: int = param(help="rectangle height, at most the sensor height minus y", unit="px")

    def __post_init__(self):
        for key, low in (("x", 0), ("y", 0), ("w", 1), ("h", 1)):
            object.__setattr__(self, key, check_int(self.name, key, getattr(self, key), low, 32767))

    def kernel_params(self, width: int, height: int) -> RoiParams:
        """The rectangle, checked to lie inside the width x height sensor."""
        return RoiParams(check_int(self.name, "x", self.x, 0, width - 1),
                         check_int(self.name, "y", self.y, 0, height - 1),
                         check_int(self.name, "w", self.w, 1, width - self.x),
                         check_int(self.name, "h", self.h, 1, height - self.y))

    def initial_state(self, params: RoiParams) -> RoiState:
        return RoiState()

    def output_resolution(self, width: int, height: int) -> tuple[int, int]:
        return self.w, self.h
