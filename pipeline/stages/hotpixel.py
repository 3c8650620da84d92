"""Hot-pixel masking: an explicit list of pixels and/or automatic detection by event rate.

Automatic detection counts each pixel's events in fixed windows of ``window_us`` µs aligned to the
first event seen after construction/reset (window k covers [t_first + k*window_us, t_first + (k+1)*window_us)).
When a pixel's count inside one window exceeds ``rate_hz * window_us / 1e6`` it is hot: that event and
every later event of the pixel are dropped (the mask is sticky until ``reset()``). Detection is causal,
so the output does not depend on how the stream is split into packets.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from pipeline.core.checks import check_int, check_number
from pipeline.stages._common import (
    Stage,
    event_words,
    new_word_buffer,
    raise_out_of_range,
    word_x,
    word_y,
    words_to_events,
)

#: Count value marking a hot pixel in the automatic-detection state.
HOT = np.iinfo(np.int64).max


@njit(cache=True)
def mask_kernel(words, width, height, mask, out):
    """Drop events of pixels with mask[y, x] != 0 ((height, width) uint8); returns kept or -(i+1) on a bad event."""
    kept = 0
    for i in range(words.shape[0]):
        w = words[i, 1]
        x = word_x(w)
        y = word_y(w)
        if x < 0 or x >= width or y < 0 or y >= height:
            return -(i + 1)
        out[kept, 0] = words[i, 0]
        out[kept, 1] = w
        kept += mask[y, x] == 0
    return kept


@njit(cache=True)
def detect_kernel(words, width, height, limit, window_us, origin, state, out):
    """Drop events of hot pixels, marking pixels whose per-window count exceeds ``limit`` as hot.

    state: (height, width, 2) int64 [window index, event count], count == HOT for a hot pixel (one cache
    line per event). origin: (1,) int64 window origin (µs), set from the first event while it is the sentinel.
    Returns the kept count, or -(i+1) for an event outside the sensor.
    """
    kept = 0
    k = np.int64(0)
    window_start = np.int64(1)
    window_end = np.int64(0)
    for i in range(words.shape[0]):
        t = words[i, 0]
        w = words[i, 1]
        x = word_x(w)
        y = word_y(w)
        if x < 0 or x >= width or y < 0 or y >= height:
            return -(i + 1)
        count = state[y, x, 1]
        if count == HOT:
            continue
        if t < window_start or t >= window_end:  # divide only when the window changes
            if origin[0] == np.iinfo(np.int64).min:
                origin[0] = t
            k = (t - origin[0]) // window_us
            window_start = origin[0] + k * window_us
            window_end = window_start + window_us
        count = count * (state[y, x, 0] == k) + 1  # restart the count in a new window, branch-free
        count = HOT if count > limit else count
        state[y, x, 0] = k
        state[y, x, 1] = count
        out[kept, 0] = t
        out[kept, 1] = w
        kept += count != HOT
    return kept


class HotPixelMask(Stage):
    """Drop events from hot pixels.

    width, height: resolution (px). pixels: explicit hot pixels as [[x, y], ...] (always masked).
    rate_hz: automatic detection threshold (events/s per pixel), None or 0 = off.
    window_us: counting window for automatic detection (µs), 1 .. 10^12.
    """

    name = "hot_pixels"

    def __init__(self, width: int, height: int, pixels=(), rate_hz: float | None = None,
                 window_us: int = 1_000_000):
        super().__init__(width, height)
        self.pixels = self._check_pixels(pixels)
        self.rate_hz = 0.0 if rate_hz is None else check_number(self.name, "rate_hz", rate_hz, 0.0, 1e9)
        self.window_us = check_int(self.name, "window_us", window_us, 1, 10**12)
        self._limit = int(np.floor(self.rate_hz * self.window_us / 1e6))
        if self.rate_hz > 0 and self._limit < 1:
            raise ValueError(f"{self.name}: rate_hz * window_us / 1e6 = {self.rate_hz * self.window_us / 1e6:g} "
                             "events per window; automatic detection needs >= 1 (raise 'rate_hz' or 'window_us')")
        self._mask = np.zeros((self.height, self.width), dtype=np.uint8)
        self._state = np.zeros((self.height, self.width, 2), dtype=np.int64)
        self._origin = np.empty(1, dtype=np.int64)
        self.reset()

    def _check_pixels(self, pixels) -> np.ndarray:
        array = np.asarray(pixels, dtype=object)
        if array.size == 0:
            return np.zeros((0, 2), dtype=np.int64)
        if array.ndim != 2 or array.shape[1] != 2:
            raise ValueError(f"{self.name}: parameter 'pixels' must be a list of [x, y] pairs, got {pixels!r}")
        for row, (x, y) in enumerate(array):
            check_int(self.name, f"pixels[{row}][0] (x)", x, 0, self.width - 1)
            check_int(self.name, f"pixels[{row}][1] (y)", y, 0, self.height - 1)
        return array.astype(np.int64)

    def reset(self) -> None:
        """Only the explicit pixels masked; automatic counts and window origin forgotten."""
        self._mask.fill(0)
        self._mask[self.pixels[:, 1], self.pixels[:, 0]] = 1
        self._state[:, :, 0] = np.iinfo(np.int64).min
        self._state[:, :, 1] = 0
        self._state[self.pixels[:, 1], self.pixels[:, 0], 1] = HOT
        self._origin[0] = np.iinfo(np.int64).min

    @property
    def hot_pixels(self) -> np.ndarray:
        """All masked pixels (explicit and detected) as an (k, 2) int64 array of (x, y), row-major order."""
        hot = self._state[:, :, 1] == HOT if self.rate_hz > 0 else self._mask != 0
        ys, xs = np.nonzero(hot)
        return np.stack([xs, ys], axis=1).astype(np.int64)

    def __call__(self, events):
        words = event_words(events)
        out = new_word_buffer(len(words))
        if self.rate_hz > 0:
            kept = detect_kernel(words, self.width, self.height, self._limit, self.window_us, self._origin,
                                 self._state, out)
        else:
            kept = mask_kernel(words, self.width, self.height, self._mask, out)
        if kept < 0:
            raise_out_of_range(self.name, events, kept, self.width, self.height)
        return words_to_events(out, kept)
