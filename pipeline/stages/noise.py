"""Background-activity noise filter with dv-processing's semantics.

An event is kept when one of its 8 neighbours (the pixel itself excluded) fired less than
``duration_us`` before it: ``t - T[neighbour] < duration_us``, neighbours outside the sensor ignored.
Every event, kept or not, then writes its timestamp into the per-pixel time surface ``T``. ``T`` starts at
0 µs for every pixel, exactly like ``dv.noise.BackgroundActivityNoiseFilter`` (so on a stream whose
timestamps start near 0, events in the first ``duration_us`` are all kept). Polarity is ignored.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from pipeline.core.checks import check_int
from pipeline.stages._common import (
    Stage,
    event_words,
    new_word_buffer,
    raise_out_of_range,
    word_x,
    word_y,
    words_to_events,
)

#: Time-surface value of the one-pixel frame around the sensor: never within any duration of a real event.
_NEVER = np.int64(-(2**62))


@njit(cache=True)
def background_activity_kernel(words, width, height, duration_us, surface, out):
    """Filter events (words (n, 2) int64) into ``out``; returns the kept count or -(i+1) on a bad event.

    surface: (height + 2, width + 2) int64 time surface (µs) with a frame of ``_NEVER``.
    """
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


class BackgroundActivityFilter(Stage):
    """Drop events with no neighbour activity in the last ``duration_us`` µs (dv-processing semantics).

    width, height: sensor resolution (px). duration_us: support window (µs), 1 .. 10^12.
    """

    name = "noise_filter"

    def __init__(self, width: int, height: int, duration_us: int = 2000):
        super().__init__(width, height)
        self.duration_us = check_int(self.name, "duration_us", duration_us, 1, 10**12)
        self._surface = np.empty((self.height + 2, self.width + 2), dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Time surface back to 0 µs inside the sensor (dv-processing's initial state)."""
        self._surface.fill(_NEVER)
        self._surface[1:-1, 1:-1] = 0

    def __call__(self, events: np.ndarray) -> np.ndarray:
        words = event_words(events)
        out = new_word_buffer(len(words))
        kept = background_activity_kernel(words, self.width, self.height, self.duration_us, self._surface, out)
        if kept < 0:
            raise_out_of_range(self.name, events, kept, self.width, self.height)
        return words_to_events(out, kept)
