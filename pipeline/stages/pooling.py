"""Spatial pooling: map sensor pixels onto a coarser grid (the network's input grid) by integer division.

Two ways to say the grid: ``factor`` (fx, fy) gives x' = x // fx, y' = y // fy and an output of
ceil(width / fx) x ceil(height / fy); ``target`` (tw, th) gives x' = x * tw // width, y' = y * th // height,
an exact tw x th output even when the sizes do not divide. Events keep their timestamp and polarity;
several sensor events may land on one output pixel (follow with a refractory filter to thin them).
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
    with_xy,
    word_x,
    word_y,
    words_to_events,
)


@njit(cache=True)
def pooling_kernel(words, x_map, y_map, out):
    """out = events with x' = x_map[x], y' = y_map[y]; returns n, or -(i+1) for an event outside the maps."""
    n = words.shape[0]
    width = x_map.shape[0]
    height = y_map.shape[0]
    for i in range(n):
        w = words[i, 1]
        x = word_x(w)
        y = word_y(w)
        if x < 0 or x >= width or y < 0 or y >= height:
            return -(i + 1)
        out[i, 0] = words[i, 0]
        out[i, 1] = with_xy(w, x_map[x], y_map[y])
    return n


def _pair(stage: str, name: str, value) -> tuple:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{stage}: parameter '{name}' must be one integer or [x, y], got {value!r}")
        return value[0], value[1]
    return value, value


class SpatialPooling(Stage):
    """Downsample coordinates to a coarser grid; give exactly one of ``factor`` or ``target``.

    width, height: input resolution (px). factor: int or [fx, fy] >= 1 (pixels per output pixel).
    target: [tw, th] output size (px), 1 <= tw <= width, 1 <= th <= height.
    """

    name = "pooling"

    def __init__(self, width: int, height: int, factor=None, target=None):
        super().__init__(width, height)
        if (factor is None) == (target is None):
            raise ValueError(f"{self.name}: give exactly one of 'factor' (int or [fx, fy]) or 'target' ([w, h])")
        if factor is not None:
            fx, fy = _pair(self.name, "factor", factor)
            fx = check_int(self.name, "factor[0]", fx, 1, self.width)
            fy = check_int(self.name, "factor[1]", fy, 1, self.height)
            self._x_map = np.arange(self.width) // fx
            self._y_map = np.arange(self.height) // fy
            self._out = (-(-self.width // fx), -(-self.height // fy))
        else:
            if not isinstance(target, (list, tuple)) or len(target) != 2:
                raise ValueError(f"{self.name}: parameter 'target' must be [width, height], got {target!r}")
            tw = check_int(self.name, "target[0]", target[0], 1, self.width)
            th = check_int(self.name, "target[1]", target[1], 1, self.height)
            self._x_map = np.arange(self.width) * tw // self.width
            self._y_map = np.arange(self.height) * th // self.height
            self._out = (tw, th)

    @property
    def output_resolution(self) -> tuple[int, int]:
        return self._out

    def __call__(self, events):
        words = event_words(events)
        out = new_word_buffer(len(words))
        count = pooling_kernel(words, self._x_map, self._y_map, out)
        if count < 0:
            raise_out_of_range(self.name, events, count, self.width, self.height)
        return words_to_events(out, count)
