"""What every event reader guarantees about the DVS events it yields, and the check that enforces it on
events decoded outside our own kernels (AEDAT 4 through dv-processing, AEDAT 4 TCP streams).

Every yielded event e satisfies, against the largest timestamp ``t_max`` yielded before it:

* ``0 <= e.x < width`` and ``0 <= e.y < height`` when the header gives the sensor size (``x, y >= 0``
  otherwise); ``e.polarity`` is 0 or 1; ``e.timestamp >= 0`` µs;
* ``e.timestamp >= t_max - BACKWARD_TOLERANCE_US``: sensors and their encoders may emit events a few µs
  out of order (EVT 3.0 TIME_LOW glitches, per-row readout), never a millisecond;
* ``e.timestamp <= t_max + MAX_FORWARD_GAP_US``: a longer jump ahead than a 32-bit µs counter can make
  in one step (~35.8 min) is a flipped high bit, not silence.

The first event of a stream has no ``t_max``; it is refused when the event after it is more than the
tolerance behind it (a garbage first timestamp would otherwise pass and make every later event look
late). The formats decoded by our numba kernels (recordings._blocks) check these rules inside the
kernel, at the byte offset of the offending record; :func:`first_invalid` serves the others.
"""
from __future__ import annotations

import numpy as np
from numba import njit

#: Largest step back in time (µs) below the latest timestamp yielded so far that is still accepted.
BACKWARD_TOLERANCE_US = 1000
#: Largest step ahead (µs) beyond the latest timestamp yielded so far (2^31 µs, about 35.8 minutes).
MAX_FORWARD_GAP_US = 1 << 31
#: Largest sensor side a header may declare (event coordinates are int16).
MAX_SENSOR_SIDE = 32767

OK = 0
BAD_X = 1
BAD_Y = 2
BAD_POLARITY = 3
NEGATIVE_TIME = 4
TIME_BACKWARD = 5
TIME_FORWARD = 6
FIRST_AHEAD = 7


@njit(cache=True)
def _reason(t, x, y, p, t_max, width, height, state):
    """The reason code of an event the fast loop of ``_first_invalid`` refused (details into state)."""
    if x < 0 or (width > 0 and x >= width):
        state[1] = x
        state[2] = y
        return BAD_X
    if y < 0 or (height > 0 and y >= height):
        state[1] = x
        state[2] = y
        return BAD_Y
    if p != 0 and p != 1:
        state[1] = p
        return BAD_POLARITY
    if t < 0:
        state[1] = t
        return NEGATIVE_TIME
    state[1] = t_max
    state[2] = t
    return TIME_BACKWARD if t < t_max else TIME_FORWARD


@njit(cache=True)
def _sorted_and_inside(words, x_limit, y_limit):
    """True when every event is inside the limits with polarity 0/1 and time never decreases nor jumps
    more than MAX_FORWARD_GAP_US from one event to the next (the common case: one pass without an early
    exit or a loop-carried branch, which the compiler can vectorise)."""
    bad = False
    for i in range(words.shape[0]):
        w = words[i, 1]
        gap = words[i, 0] - words[i - 1, 0] if i else 0
        bad |= ((np.uint64((w << 48) >> 48) >= x_limit) | (np.uint64((w << 32) >> 48) >= y_limit)
                | (np.uint64((w << 24) >> 56) > 1) | (np.uint64(gap) > MAX_FORWARD_GAP_US))
    return not bad


@njit(cache=True)
def _first_invalid(words, width, height, state):
    """Kernel of :func:`first_invalid` on events viewed as int64 (n, 2) (DVS_EVENT_DTYPE words: t, then
    x | y << 16 | polarity << 32). state: int64 [t_max (-1 = no event yet), detail a, detail b].

    One branch per event in the common case: each field is sign-extended by shifts and range-checked
    with one unsigned comparison (a negative value wraps to a huge one)."""
    n = words.shape[0]
    if n == 0:
        return 0, OK
    t_max = state[0]
    x_limit = np.uint64(width if width > 0 else 1 << 15)
    y_limit = np.uint64(height if height > 0 else 1 << 15)
    if t_max < 0:  # the stream's first event: its time must not be ahead of the next one's
        t = words[0, 0]
        if t >= 0 and n > 1 and words[1, 0] < t - BACKWARD_TOLERANCE_US:
            state[1] = t
            state[2] = words[1, 0]
            return 0, FIRST_AHEAD
        t_max = max(t, 0)
    low = max(t_max - BACKWARD_TOLERANCE_US, 0)
    span = np.uint64(t_max + MAX_FORWARD_GAP_US - low)
    if np.uint64(words[0, 0] - low) <= span and _sorted_and_inside(words, x_limit, y_limit):
        state[0] = max(t_max, words[n - 1, 0])  # sorted: the first event decides against t_max
        return n, OK
    for i in range(n):
        t = words[i, 0]
        w = words[i, 1]
        x = (w << 48) >> 48
        y = (w << 32) >> 48
        p = (w << 24) >> 56
        if (np.uint64(x) >= x_limit) | (np.uint64(y) >= y_limit) | (np.uint64(p) > 1) | (np.uint64(t - low) > span):
            state[0] = t_max
            return i, _reason(t, x, y, p, t_max, width, height, state)
        if t > t_max:
            t_max = t
            low = max(t_max - BACKWARD_TOLERANCE_US, 0)
            span = np.uint64(t_max + MAX_FORWARD_GAP_US - low)
    state[0] = t_max
    return n, OK


def new_state() -> np.ndarray:
    """Checker state for a new stream: int64 [t_max = -1 (none yet), detail, detail]."""
    return np.array([-1, 0, 0], dtype=np.int64)


def first_invalid(events: np.ndarray, width: int, height: int, state: np.ndarray) -> tuple[int, int]:
    """(index of the first event of ``events`` (DVS_EVENT_DTYPE, shape (n,)) that breaks the rules above, or
    n; its reason code, OK when all pass). ``width``/``height``: sensor size in pixels, 0 = unknown.
    ``state`` (from :func:`new_state`) carries the latest accepted timestamp from chunk to chunk of one
    stream and, after a failure, the details that :func:`describe` prints. One pass, ~1 ns per event."""
    if len(events) == 0:
        return 0, OK
    if not events.flags.c_contiguous:
        events = np.ascontiguousarray(events)
    index, reason = _first_invalid(events.view(np.int64).reshape(-1, 2), width, height, state)
    return int(index), int(reason)


def describe(reason: int, state: np.ndarray, width: int, height: int) -> str:
    """One sentence naming what was wrong with the event :func:`first_invalid` stopped at."""
    a, b = int(state[1]), int(state[2])
    if reason in (BAD_X, BAD_Y):
        size = f"the {width}x{height} sensor" if width and height else "the sensor (negative coordinate)"
        return f"event at x={a}, y={b} is outside {size}"
    if reason == BAD_POLARITY:
        return f"event polarity {a} is not 0 or 1"
    if reason == NEGATIVE_TIME:
        return f"event timestamp {a} µs is negative"
    if reason == TIME_BACKWARD:
        return f"timestamp went back from {a} to {b} µs (more than {BACKWARD_TOLERANCE_US} µs)"
    if reason == TIME_FORWARD:
        return f"timestamp jumped from {a} to {b} µs (more than 2^31 µs ahead)"
    if reason == FIRST_AHEAD:
        return f"first timestamp {a} µs is ahead of the next event's {b} µs (more than {BACKWARD_TOLERANCE_US} µs)"
    raise ValueError(f"no such reason code {reason}")
