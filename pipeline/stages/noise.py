"""Background-activity noise filter with dv-processing's semantics.

An event is kept when one of its 8 neighbours (the pixel itself excluded) fired less than
``duration_us`` before it: ``t - T[neighbour] < duration_us``, neighbours outside the sensor ignored.
Every event, kept or not, then writes its timestamp into the per-pixel time surface ``T``. ``T`` starts at
0 µs for every pixel, exactly like ``dv.noise.BackgroundActivityNoiseFilter`` (so on a stream whose
timestamps start near 0, events in the first ``duration_us`` are all kept). Polarity is ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit

from pipeline.core.checks import check_int
from pipeline.stages._common import word_x, word_y
from pipeline.stages.stage import StageConfig, param

#: Time-surface value of the one-pixel frame around the sensor: never within any duration of a real event.
_NEVER = np.int64(-(2**62))


class BackgroundActivityParams(NamedTuple):
    width: int        #: input width (px)
    height: int       #: input height (px)
    duration_us: int  #: support window (µs)


class BackgroundActivityState(NamedTuple):
    #: (height + 2, width + 2) int64: last event time of each pixel (µs), inside a frame of ``_NEVER``
    #: so the neighbourhood of a border pixel needs no bounds checks.
    surface_us: np.ndarray


@njit(cache=True)
def background_activity(words, state, params, out):
    """Keep events (words (n, 2) int64) with a neighbour that fired less than ``duration_us`` before them.

    Copies kept events to ``out`` ((n, 2) int64), stamps every event into ``state.surface_us``; returns the
    kept count, or -(i+1) when event i lies outside the width x height input.
    """
    surface = state.surface_us
    width, height, duration_us = params.width, params.height, params.duration_us
    kept = 0
    for i in range(words.shape[0]):
        t = words[i, 0]
        w = words[i, 1]
        x = word_x(w)
        y = word_y(w)
        if x < 0 or x >= width or y < 0 or y >= height:
            return -(i + 1)
        x += 1
        y += 1
        limit = t - duration_us
        above = surface[y - 1]
        row = surface[y]
        below = surface[y + 1]
        supported = ((above[x - 1] > limit) | (above[x] > limit) | (above[x + 1] > limit)
                     | (row[x - 1] > limit) | (row[x + 1] > limit)
                     | (below[x - 1] > limit) | (below[x] > limit) | (below[x + 1] > limit))
        row[x] = t
        out[kept, 0] = t
        out[kept, 1] = w
        kept += supported
    return kept


@njit(cache=True)
def _entry(words, state, params, out):
    return background_activity(words, BackgroundActivityState(*state), BackgroundActivityParams(*params), out)


@dataclass(frozen=True)
class BackgroundActivityFilter(StageConfig):
    """Drop events with no neighbour activity in the last duration_us (dv-processing's noise filter)."""

    name = "noise_filter"
    entry = staticmethod(_entry)

    duration_us: int = param(2000, help="a neighbour must have fired this recently (1 .. 10^12)", unit="µs")

    def __post_init__(self):
        object.__setattr__(self, "duration_us", check_int(self.name, "duration_us", self.duration_us, 1, 10**12))

    def kernel_params(self, width: int, height: int) -> BackgroundActivityParams:
        return BackgroundActivityParams(width, height, self.duration_us)

    def initial_state(self, params: BackgroundActivityParams) -> BackgroundActivityState:
        """Time surface at 0 µs inside the sensor (dv-processing's initial state)."""
        surface = np.full((params.height + 2, params.width + 2), _NEVER, dtype=np.int64)
        surface[1:-1, 1:-1] = 0
        return BackgroundActivityState(surface)
