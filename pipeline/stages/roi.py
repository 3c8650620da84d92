"""Region-of-interest crop: keep events inside a rectangle and re-base their coordinates to it."""
from __future__ import annotations

from numba import njit

from pipeline.core.checks import check_int
from pipeline.stages._common import Stage, event_words, new_word_buffer, with_xy, word_x, word_y, words_to_events


@njit(cache=True)
def roi_kernel(words, x0, y0, roi_width, roi_height, out):
    """Copy events with x0 <= x < x0+w, y0 <= y < y0+h to ``out`` as (x-x0, y-y0); returns the count."""
    kept = 0
    for i in range(words.shape[0]):
        w = words[i, 1]
        x = word_x(w) - x0
        y = word_y(w) - y0
        out[kept, 0] = words[i, 0]
        out[kept, 1] = with_xy(w, x, y)
        kept += (0 <= x) & (x < roi_width) & (0 <= y) & (y < roi_height)
    return kept


class RoiCrop(Stage):
    """Keep the (x, y, w, h) rectangle (px, origin top-left) of a width x height sensor; output is w x h.

    The rectangle must lie inside the sensor. Coordinates are re-based: (x, y) -> (x - roi_x, y - roi_y).
    Events outside the sensor are simply outside the rectangle (dropped).
    """

    name = "roi"

    def __init__(self, width: int, height: int, x: int, y: int, w: int, h: int):
        super().__init__(width, height)
        self.x = check_int(self.name, "x", x, 0, self.width - 1)
        self.y = check_int(self.name, "y", y, 0, self.height - 1)
        self.w = check_int(self.name, "w", w, 1, self.width - self.x)
        self.h = check_int(self.name, "h", h, 1, self.height - self.y)

    @property
    def output_resolution(self) -> tuple[int, int]:
        return self.w, self.h

    def __call__(self, events):
        words = event_words(events)
        out = new_word_buffer(len(words))
        return words_to_events(out, roi_kernel(words, self.x, self.y, self.w, self.h, out))
