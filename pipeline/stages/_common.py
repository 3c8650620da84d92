"""Shared plumbing for the event stages: the zero-copy word view of DVS events and its error report.

A DVS event (``pipeline.core.events.DVS_EVENT_DTYPE``, 16 bytes) is viewed as two little-endian int64 words:
word 0 is the timestamp (µs), word 1 packs x (bits 0-15, int16), y (bits 16-31, int16) and polarity
(bits 32-39, int8). Kernels read coordinates from word 1 and copy kept events as two words, which is
the cheapest way to move 16-byte records in numba.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from pipeline.core.events import DVS_EVENT_DTYPE


def event_words(events: np.ndarray) -> np.ndarray:
    """View DVS events (shape (n,), DVS_EVENT_DTYPE) as an (n, 2) int64 array without copying.

    Non-contiguous inputs are copied once, and so are arrays with the same fields but without the
    3 padding bytes (numpy 2's ``np.concatenate`` of DVS arrays returns such a packed 13-byte dtype).
    Raises TypeError for any other dtype.
    """
    if not isinstance(events, np.ndarray) or events.dtype.names != DVS_EVENT_DTYPE.names:
        got = events.dtype if isinstance(events, np.ndarray) else type(events).__name__
        raise TypeError(f"expected a DVS_EVENT_DTYPE array (pipeline.core.events), got {got}")
    if events.ndim != 1:
        raise ValueError(f"expected a 1-D event array, got shape {events.shape}")
    if events.dtype != DVS_EVENT_DTYPE:
        if any(events.dtype.fields[name][0] != DVS_EVENT_DTYPE.fields[name][0] for name in DVS_EVENT_DTYPE.names):
            raise TypeError(f"expected a DVS_EVENT_DTYPE array (pipeline.core.events), got {events.dtype}")
        events = events.astype(DVS_EVENT_DTYPE)
    events = np.ascontiguousarray(events)
    return events.view(np.int64).reshape(-1, 2)


def words_to_events(words: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` rows of an (n, 2) int64 word buffer as DVS events (a view)."""
    return words[:count].reshape(-1).view(DVS_EVENT_DTYPE)


def new_word_buffer(n: int) -> np.ndarray:
    """An uninitialised (n, 2) int64 output buffer for ``n`` events."""
    return np.empty((n, 2), dtype=np.int64)


def raise_out_of_range(stage: str, events: np.ndarray, code: int, width: int, height: int) -> None:
    """Turn a kernel's negative return code into a ValueError naming the offending event."""
    index = -code - 1
    event = np.ascontiguousarray(events)[index]
    raise ValueError(
        f"{stage}: event {index} at (x={int(event['x'])}, y={int(event['y'])}, t={int(event['timestamp'])} µs) "
        f"is outside the {width}x{height} sensor (expected 0 <= x < {width}, 0 <= y < {height})"
    )


@njit(cache=True, inline="always")
def word_x(word: np.int64) -> np.int64:
    """x (px) from event word 1."""
    return ((word & 0xFFFF) ^ 0x8000) - 0x8000


@njit(cache=True, inline="always")
def word_y(word: np.int64) -> np.int64:
    """y (px) from event word 1."""
    return (((word >> 16) & 0xFFFF) ^ 0x8000) - 0x8000


@njit(cache=True, inline="always")
def word_polarity(word: np.int64) -> np.int64:
    """Polarity from event word 1: 1 for ON (any non-zero byte), 0 for OFF."""
    return np.int64(((word >> 32) & 0xFF) != 0)


@njit(cache=True, inline="always")
def with_xy(word: np.int64, x: np.int64, y: np.int64) -> np.int64:
    """Event word 1 with its x and y replaced (polarity and padding kept)."""
    return (word & ~np.int64(0xFFFFFFFF)) | (x & 0xFFFF) | ((y & 0xFFFF) << 16)

