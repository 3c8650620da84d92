"""Spatial pooling: map sensor pixels onto a coarser grid (the network's input grid) by integer division.

Two ways to say the grid: ``factor`` (fx, fy) gives x' = x // fx, y' = y // fy and an output of
ceil(width / fx) x ceil(height / fy); ``target`` (tw, th) gives x' = x * tw // width, y' = y * th // height,
an exact tw x th output even when the sizes do not divide. Events keep their timestamp and polarity;
several sensor events may land on one output pixel (follow with a refractory filter to thin them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit

from pipeline.core.checks import check_int
from pipeline.core.schema import toml_value
from pipeline.stages._common import with_xy, word_x, word_y
from pipeline.stages.stage import StageConfig, param


class PoolingParams(NamedTuple):
    x_map: np.ndarray  #: (width,) int64: output column (px) of each input column
    y_map: np.ndarray  #: (height,) int64: output row (px) of each input row


class PoolingState(NamedTuple):
    """Pooling keeps no state."""


@njit(cache=True)
def pooling(words, state, params, out):
    """out = events (words (n, 2) int64) with x' = x_map[x], y' = y_map[y]; returns n, or -(i+1) when
    event i lies outside the maps (the input resolution)."""
    x_map, y_map = params.x_map, params.y_map
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


@njit(cache=True)
def _entry(words, state, params, out):
    return pooling(words, PoolingState(*state), PoolingParams(*params), out)


def _pair(stage: str, key: str, value, scalar_ok: bool) -> tuple[int, int] | None:
    """None, or ``value`` as a pair of integers >= 1 (with ``scalar_ok`` one integer stands for both)."""
    if value is None:
        return None
    if scalar_ok and not isinstance(value, (list, tuple)):
        value = check_int(stage, key, value, 1, 32767)
        return value, value
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        expected = "one integer or [x, y]" if scalar_ok else "[width, height]"
        raise ValueError(f"{stage}: parameter '{key}' must be {expected}, got {toml_value(value)}")
    return check_int(stage, f"{key}[0]", value[0], 1, 32767), check_int(stage, f"{key}[1]", value[1], 1, 32767)


@dataclass(frozen=True)
class SpatialPooling(StageConfig):
    """Downsample coordinates to a coarser grid; give exactly one of factor or target."""

    name = "pooling"
    entry = staticmethod(_entry)

    factor: int | tuple[int, int] | None = param(None, unit="px",
                                                 help="input pixels per output pixel: one integer or [fx, fy]")
    target: tuple[int, int] | None = param(None, help="output grid [width, height], at most the input's",
                                           unit="px")

    def __post_init__(self):
        if (self.factor is None) == (self.target is None):
            raise ValueError(f"{self.name}: give exactly one of 'factor' (int or [fx, fy]) or 'target' ([w, h])")
        object.__setattr__(self, "factor", _pair(self.name, "factor", self.factor, scalar_ok=True))
        object.__setattr__(self, "target", _pair(self.name, "target", self.target, scalar_ok=False))

    def kernel_params(self, width: int, height: int) -> PoolingParams:
        """Column and row maps; the factor or target must not exceed the width x height input."""
        if self.factor is not None:
            fx = check_int(self.name, "factor[0]", self.factor[0], 1, width)
            fy = check_int(self.name, "factor[1]", self.factor[1], 1, height)
            return PoolingParams(np.arange(width, dtype=np.int64) // fx, np.arange(height, dtype=np.int64) // fy)
        tw = check_int(self.name, "target[0]", self.target[0], 1, width)
        th = check_int(self.name, "target[1]", self.target[1], 1, height)
        return PoolingParams(np.arange(width, dtype=np.int64) * tw // width,
                             np.arange(height, dtype=np.int64) * th // height)

    def initial_state(self, params: PoolingParams) -> PoolingState:
        return PoolingState()

    def output_resolution(self, width: int, height: int) -> tuple[int, int]:
        if self.factor is not None:
            return -(-width // self.factor[0]), -(-height // self.factor[1])
        return self.target
