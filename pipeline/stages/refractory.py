"""Per-pixel refractory filter: after a kept event, a pixel stays silent for ``refractory_us``.

An event at pixel (x, y) is kept when ``t - last_kept[y, x] >= refractory_us`` (or the pixel has not
fired yet); only kept events restart the refractory period. With ``per_polarity`` ON and OFF events
have separate periods.
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
    word_polarity,
    word_x,
    word_y,
    words_to_events,
)

#: "Never fired": far enough in the past that any real timestamp is out of its refractory period.
_NEVER = np.int64(-(2**62))


@njit(cache=True)
def refractory_kernel(words, width, height, refractory_us, per_polarity, last, out):
    """Keep events outside their pixel's refractory period; returns kept count or -(i+1) on a bad event.

    last: (2 if per_polarity else 1, height, width) int64 time of each pixel's last kept event (µs).
    """
    kept = 0
    for i in range(words.shape[0]):
        t = words[i, 0]
        w = words[i, 1]
        x = word_x(w)
        y = word_y(w)
        if x < 0 or x >= width or y < 0 or y >= height:
            return -(i + 1)
        c = word_polarity(w) if per_polarity else 0
        if t - last[c, y, x] >= refractory_us:
            last[c, y, x] = t
            out[kept, 0] = t
            out[kept, 1] = w
            kept += 1
    return kept


class RefractoryFilter(Stage):
    """Drop events closer than ``refractory_us`` µs to the previous kept event of the same pixel.

    width, height: resolution (px). refractory_us: 1 .. 10^12 µs. per_polarity: separate ON/OFF periods.
    """

    name = "refractory"

    def __init__(self, width: int, height: int, refractory_us: int = 1000, per_polarity: bool = False):
        super().__init__(width, height)
        self.refractory_us = check_int(self.name, "refractory_us", refractory_us, 1, 10**12)
        if not isinstance(per_polarity, bool):
            raise ValueError(f"{self.name}: parameter 'per_polarity' must be true or false, got {per_polarity!r}")
        self.per_polarity = per_polarity
        self._last = np.empty((2 if per_polarity else 1, self.height, self.width), dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Every pixel out of its refractory period."""
        self._last.fill(_NEVER)

    def __call__(self, events: np.ndarray) -> np.ndarray:
        words = event_words(events)
        out = new_word_buffer(len(words))
        kept = refractory_kernel(words, self.width, self.height, self.refractory_us, self.per_polarity,
                                 self._last, out)
        if kept < 0:
            raise_out_of_range(self.name, events, kept, self.width, self.height)
        return words_to_events(out, kept)
