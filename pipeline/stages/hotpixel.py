"""Hot-pixel masking: an explicit list of pixels and/or automatic detection by event rate.

Automatic detection counts each pixel's events in fixed windows of ``window_us`` µs aligned to the
first event seen after construction/reset (window k covers [t_first + k*window_us, t_first + (k+1)*window_us)).
When a pixel's count inside one window exceeds ``rate_hz * window_us / 1e6`` it is hot: that event and
every later event of the pixel are dropped (the mask is sticky until ``reset()``). Detection is causal,
so the output does not depend on how the stream is split into packets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit

from pipeline.core.checks import check_int, check_number
from pipeline.core.schema import toml_value
from pipeline.stages._common import word_x, word_y
from pipeline.stages.stage import StageConfig, param

#: Count value marking a hot pixel in the automatic-detection state.
HOT = np.iinfo(np.int64).max
#: Window index / origin meaning "no event seen yet".
_UNSET = np.iinfo(np.int64).min


class HotPixelParams(NamedTuple):
    width: int      #: input width (px)
    height: int     #: input height (px)
    limit: int      #: events per window above which a pixel is hot; 0 = automatic detection off
    window_us: int  #: counting window (µs)


class HotPixelState(NamedTuple):
    #: (height, width) uint8: 1 for every masked pixel, explicit or detected.
    mask: np.ndarray
    #: (height, width, 2) int64 [window index, event count] per pixel (one cache line per event), count
    #: == HOT for a hot pixel; shape (0, 0, 2) when automatic detection is off.
    counts: np.ndarray
    #: (1,) int64 window origin (µs), taken from the first event while it is ``_UNSET``.
    origin_us: np.ndarray


@njit(cache=True)
def _drop_masked(words, state, params, out):
    kept = 0
    mask = state.mask
    for i in range(words.shape[0]):
        w = words[i, 1]
        x = word_x(w)
        y = word_y(w)
        if x < 0 or x >= params.width or y < 0 or y >= params.height:
            return -(i + 1)
        out[kept, 0] = words[i, 0]
        out[kept, 1] = w
        kept += mask[y, x] == 0
    return kept


@njit(cache=True)
def _detect(words, state, params, out):
    counts = state.counts
    origin = state.origin_us
    window_us = params.window_us
    kept = 0
    k = np.int64(0)
    window_start = np.int64(1)
    window_end = np.int64(0)
    for i in range(words.shape[0]):
        t = words[i, 0]
        w = words[i, 1]
        x = word_x(w)
        y = word_y(w)
        if x < 0 or x >= params.width or y < 0 or y >= params.height:
            return -(i + 1)
        count = counts[y, x, 1]
        if count == HOT:
            continue
        if t < window_start or t >= window_end:  # divide only when the window changes
            if origin[0] == _UNSET:
                origin[0] = t
            k = (t - origin[0]) // window_us
            window_start = origin[0] + k * window_us
            window_end = window_start + window_us
        count = count * (counts[y, x, 0] == k) + 1  # restart the count in a new window, branch-free
        if count > params.limit:
            count = HOT
            state.mask[y, x] = 1
        counts[y, x, 0] = k
        counts[y, x, 1] = count
        out[kept, 0] = t
        out[kept, 1] = w
        kept += count != HOT
    return kept


@njit(cache=True)
def hot_pixels(words, state, params, out):
    """Drop events (words (n, 2) int64) of masked pixels, detecting hot pixels when ``params.limit > 0``.

    Kept events go to ``out``; detection updates ``state`` (counts, origin, and the mask of a pixel that
    turns hot). Returns the kept count, or -(i+1) when event i lies outside the width x height input.
    """
    if params.limit > 0:
        return _detect(words, state, params, out)
    return _drop_masked(words, state, params, out)


@njit(cache=True)
def _entry(words, state, params, out):
    return hot_pixels(words, HotPixelState(*state), HotPixelParams(*params), out)


def masked_pixels(state: HotPixelState) -> np.ndarray:
    """Every masked pixel (explicit and detected) as a (k, 2) int64 array of (x, y), row-major order."""
    ys, xs = np.nonzero(state.mask)
    return np.stack([xs, ys], axis=1).astype(np.int64)


@dataclass(frozen=True)
class HotPixelMask(StageConfig):
    """Drop events from hot pixels: listed ones, and (with rate_hz > 0) any firing faster than rate_hz."""

    name = "hot_pixels"
    entry = staticmethod(_entry)

    pixels: tuple[tuple[int, int], ...] = param((), help="pixels always masked, as [[x, y], ...]", unit="px")
    rate_hz: float = param(0.0, help="automatic detection: a pixel firing faster than this within one window "
                                     "is masked for good (0 = off)", unit="Hz")
    window_us: int = param(1_000_000, help="counting window of automatic detection (1 .. 10^12)", unit="µs")

    def __post_init__(self):
        object.__setattr__(self, "pixels", self._checked_pixels())
        object.__setattr__(self, "rate_hz", check_number(self.name, "rate_hz", self.rate_hz, 0.0, 1e9))
        object.__setattr__(self, "window_us", check_int(self.name, "window_us", self.window_us, 1, 10**12))
        if self.rate_hz > 0 and self.limit < 1:
            raise ValueError(f"{self.name}: parameter 'rate_hz' = {self.rate_hz:g} gives "
                             f"{self.rate_hz * self.window_us / 1e6:g} events per {self.window_us} µs window; "
                             "automatic detection needs >= 1 (raise rate_hz or window_us)")

    def _checked_pixels(self) -> tuple[tuple[int, int], ...]:
        pixels = self.pixels
        if not isinstance(pixels, (list, tuple)) or not all(
                isinstance(p, (list, tuple)) and len(p) == 2 for p in pixels):
            raise ValueError(f"{self.name}: parameter 'pixels' must be a list of [x, y] pairs, got {toml_value(pixels)}")
        return tuple((check_int(self.name, f"pixels[{row}][0]", x, 0, 32766),
                      check_int(self.name, f"pixels[{row}][1]", y, 0, 32766)) for row, (x, y) in enumerate(pixels))

    @property
    def limit(self) -> int:
        """Events per window above which a pixel is hot (0 when automatic detection is off)."""
        return int(np.floor(self.rate_hz * self.window_us / 1e6))

    def kernel_params(self, width: int, height: int) -> HotPixelParams:
        """Checks every listed pixel lies inside the width x height sensor."""
        for row, (x, y) in enumerate(self.pixels):
            check_int(self.name, f"pixels[{row}][0]", x, 0, width - 1)
            check_int(self.name, f"pixels[{row}][1]", y, 0, height - 1)
        return HotPixelParams(width, height, self.limit, self.window_us)

    def initial_state(self, params: HotPixelParams) -> HotPixelState:
        """Only the listed pixels masked; no counts, no window origin."""
        xs = np.array([x for x, _ in self.pixels], dtype=np.int64)
        ys = np.array([y for _, y in self.pixels], dtype=np.int64)
        mask = np.zeros((params.height, params.width), dtype=np.uint8)
        mask[ys, xs] = 1
        shape = (params.height, params.width, 2) if params.limit > 0 else (0, 0, 2)
        counts = np.zeros(shape, dtype=np.int64)
        if params.limit > 0:
            counts[:, :, 0] = _UNSET
            counts[ys, xs, 1] = HOT
        return HotPixelState(mask, counts, np.full(1, _UNSET, dtype=np.int64))
