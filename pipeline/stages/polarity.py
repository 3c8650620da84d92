"""Polarity selection: keep only ON or only OFF events."""
from __future__ import annotations

from numba import njit

from pipeline.stages._common import Stage, event_words, new_word_buffer, word_polarity, words_to_events

_KEEP = {"on": 1, "off": 0, 1: 1, 0: 0}


@njit(cache=True)
def polarity_kernel(words, keep, out):
    """Copy events whose polarity (1 ON, 0 OFF) equals ``keep`` to ``out``; returns the count."""
    kept = 0
    for i in range(words.shape[0]):
        w = words[i, 1]
        out[kept, 0] = words[i, 0]
        out[kept, 1] = w
        kept += word_polarity(w) == keep
    return kept


class PolaritySelect(Stage):
    """Keep events of one polarity: ``keep = "on"`` (polarity != 0) or ``"off"`` (polarity == 0)."""

    name = "polarity"

    def __init__(self, width: int, height: int, keep: str = "on"):
        super().__init__(width, height)
        key = keep.lower() if isinstance(keep, str) else keep
        if isinstance(key, bool) or key not in _KEEP:
            raise ValueError(f"{self.name}: parameter 'keep' must be \"on\" or \"off\", got {keep!r}")
        self.keep = "on" if _KEEP[key] else "off"
        self._keep_value = _KEEP[key]

    def __call__(self, events):
        words = event_words(events)
        out = new_word_buffer(len(words))
        return words_to_events(out, polarity_kernel(words, self._keep_value, out))
