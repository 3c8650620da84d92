"""Time binning: DVS events -> per-step active input indices for the SNN (the last stage before the network).

Step k covers sensor time [t0 + k*dt, t0 + (k+1)*dt) µs. An input index is active in a step when at least
one event maps to it; each step lists its active indices once, in order of their first event (CSR:
``indices[indptr[i]:indptr[i+1]]``). Input layout is channel-major, like a (C, H, W) image:
``index = c * height * width + y * width + x`` with c = polarity (1 ON, 0 OFF) when ``channels_by_polarity``,
else c = 0. So ``n_inputs = (2 if channels_by_polarity else 1) * width * height``.

Latency cost: a step can only be handed to the network once it is complete, i.e. when a packet's
``t_end_us >= t0 + (k+1)*dt``; events of the unfinished step are carried to the next packet. So binning adds
up to ``dt`` of latency to an event (on average dt/2).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from pipeline.core.checks import check_int, check_resolution
from pipeline.core.events import DVS_EVENT_DTYPE
from pipeline.stages._common import event_words, word_polarity, word_x, word_y

_NO_STEP = np.iinfo(np.int64).min
#: Largest number of steps one push may complete (10^7 steps = 2.8 h at 1 ms): guards against unit mistakes.
MAX_STEPS_PER_PUSH = 10_000_000


@dataclass(frozen=True)
class StepBatch:
    """Complete SNN steps produced by one ``push`` (or ``flush``).

    first_step: global index k of the first step here; steps are first_step .. first_step + len - 1.
    t0_us, dt_us: the binner's grid (step k starts at t0_us + k * dt_us).
    indptr: (len + 1,) int64; indices: (nnz,) int32 active input indices, step i at indices[indptr[i]:indptr[i+1]].
    """

    first_step: int
    t0_us: int
    dt_us: int
    indptr: np.ndarray
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def step(self, i: int) -> np.ndarray:
        """Active input indices (int32, unique) of the i-th step in this batch (a view)."""
        return self.indices[self.indptr[i]:self.indptr[i + 1]]

    def step_start_us(self, i: int) -> int:
        """Sensor time (µs) at which the i-th step of this batch starts."""
        return self.t0_us + (self.first_step + i) * self.dt_us

    @property
    def end_us(self) -> int:
        """Sensor time (µs) at which the last step of this batch ends."""
        return self.t0_us + (self.first_step + len(self)) * self.dt_us


@njit(cache=True)
def check_kernel(words, width, height, t0, dt, next_step, last_step):
    """Validate a packet before any state changes: 0 if fine, -(i+1) for an event outside the grid,
    i+1 for an event whose step precedes an earlier (not late) event's step (not time-ordered)."""
    k = np.int64(0)
    step_start = np.int64(1)
    step_end = np.int64(0)
    for i in range(words.shape[0]):
        w = words[i, 1]
        x = word_x(w)
        y = word_y(w)
        if x < 0 or x >= width or y < 0 or y >= height:
            return -(i + 1)
        t = words[i, 0]
        if t < step_start or t >= step_end:  # divide only when the step changes
            k = (t - t0) // dt
            step_start = t0 + k * dt
            step_end = step_start + dt
        if k >= next_step:
            if k < last_step:
                return i + 1
            last_step = k
    return 0


@njit(cache=True)
def bin_kernel(words, width, by_polarity, plane, t0, dt, next_step, done_step, last_step,
               old_index, old_step, stamp, out_indices, counts, pend_index, pend_step):
    """Bin carried-over (old_index, old_step) pairs, then new (checked) events, into [next_step, done_step).

    Each (index, step) pair with step < done_step goes into its step once (``stamp`` holds the last step
    an input was listed in); later ones go to (pend_index, pend_step). counts: (done_step - next_step + 1,)
    int64 zeros, becomes per-step counts at [1:]. Returns (nnz, n_pending, n_late, last_step).
    """
    nnz = 0
    n_pend = 0
    late = 0
    n_old = old_index.shape[0]
    step = np.int64(0)
    step_start = np.int64(1)
    step_end = np.int64(0)
    for j in range(n_old + words.shape[0]):
        if j < n_old:
            index = np.int64(old_index[j])
            k = old_step[j]
        else:
            w = words[j - n_old, 1]
            t = words[j - n_old, 0]
            if t < step_start or t >= step_end:  # divide only when the step changes
                step = (t - t0) // dt
                step_start = t0 + step * dt
                step_end = step_start + dt
            k = step
            if k < next_step:
                late += 1
                continue
            last_step = k
            index = word_y(w) * width + word_x(w)
            if by_polarity:
                index += word_polarity(w) * plane
        if k < done_step:
            if stamp[index] != k:
                stamp[index] = k
                out_indices[nnz] = index
                counts[k - next_step + 1] += 1
                nnz += 1
        else:
            pend_index[n_pend] = index
            pend_step[n_pend] = k
            n_pend += 1
    return nnz, n_pend, late, last_step


class StepBinner:
    """Bin a packet stream into SNN steps of ``dt_us`` µs of active input indices.

    dt_us: step length (µs), 1 .. 10^9. width, height: input grid (px) after pooling.
    channels_by_polarity: two input channels (OFF, ON) instead of one. t0_us: start of step 0 (µs); None =
    the timestamp of the first event pushed.

    Counters: ``late_events`` (events whose step was already emitted, dropped), ``next_step`` (first step not
    emitted yet), ``pending_events`` (carried into the next push).
    """

    name = "binner"

    def __init__(self, dt_us: int, width: int, height: int, channels_by_polarity: bool = True,
                 t0_us: int | None = None):
        self.dt_us = check_int(self.name, "dt_us", dt_us, 1, 10**9)
        self.width, self.height = check_resolution(self.name, width, height)
        if not isinstance(channels_by_polarity, bool):
            raise ValueError(f"{self.name}: parameter 'channels_by_polarity' must be true or false, "
                             f"got {channels_by_polarity!r}")
        self.channels_by_polarity = channels_by_polarity
        self.n_inputs = (2 if channels_by_polarity else 1) * self.width * self.height
        self._initial_t0 = None if t0_us is None else check_int(self.name, "t0_us", t0_us)
        self._stamp = np.empty(self.n_inputs, dtype=np.int64)
        self.reset()

    def reset(self, t0_us: int | None = None) -> None:
        """Forget carried events and counters; restart the grid at ``t0_us`` (default: the constructor's)."""
        self.t0_us = self._initial_t0 if t0_us is None else check_int(self.name, "t0_us", t0_us)
        self.next_step = 0
        self.late_events = 0
        self._last_step = _NO_STEP
        self._stamp.fill(_NO_STEP)
        self._pend_index = np.zeros(0, dtype=np.int32)
        self._pend_step = np.zeros(0, dtype=np.int64)

    @property
    def pending_events(self) -> int:
        """Events carried over into steps that are not complete yet."""
        return len(self._pend_index)

    def to_index(self, x, y, polarity) -> np.ndarray:
        """Input index (int64) of pixel(s) (x, y) with polarity 0/1 (array or scalar), see the module doc."""
        index = np.asarray(y, dtype=np.int64) * self.width + np.asarray(x, dtype=np.int64)
        if self.channels_by_polarity:
            index = index + (np.asarray(polarity) != 0).astype(np.int64) * (self.width * self.height)
        return index

    def complete_steps(self, t_end_us: int) -> int:
        """How many steps from ``next_step`` on are complete once sensor time reached ``t_end_us``."""
        if self.t0_us is None:
            return 0
        return max(0, (int(t_end_us) - self.t0_us) // self.dt_us - self.next_step)

    def push(self, events: np.ndarray, t_end_us: int) -> StepBatch:
        """Add a packet (time-ordered events, DVS_EVENT_DTYPE) complete up to ``t_end_us`` (µs).

        Returns the steps that became complete: all k with t0 + (k+1)*dt <= t_end_us not returned before
        (possibly none). Steps without events are included (empty), so the network steps through silence.
        """
        words = event_words(events)
        if self.t0_us is None:
            if len(words) == 0:
                return self._empty_batch()
            self.t0_us = int(words[0, 0])
        return self._bin(words, self.next_step + self.complete_steps(t_end_us))

    def flush(self) -> StepBatch:
        """End of stream: emit every carried step, the last one possibly partial."""
        if self.t0_us is None or self.pending_events == 0:
            return self._empty_batch()
        return self._bin(np.zeros((0, 2), dtype=np.int64), int(self._pend_step[-1]) + 1)

    def _empty_batch(self) -> StepBatch:
        return StepBatch(self.next_step, self.t0_us or 0, self.dt_us, np.zeros(1, dtype=np.int64),
                         np.zeros(0, dtype=np.int32))

    def _bin(self, words: np.ndarray, done_step: int) -> StepBatch:
        n_steps = max(0, done_step - self.next_step)
        if n_steps > MAX_STEPS_PER_PUSH:
            raise ValueError(f"{self.name}: one packet would complete {n_steps} steps of {self.dt_us} µs "
                             f"(t0 = {self.t0_us} µs); check that t_end_us and event timestamps are both µs")
        done_step = self.next_step + n_steps
        error = check_kernel(words, self.width, self.height, self.t0_us, self.dt_us, self.next_step, self._last_step)
        if error:
            self._raise(words, error)
        capacity = len(self._pend_index) + len(words)
        out_indices = np.empty(capacity, dtype=np.int32)
        counts = np.zeros(n_steps + 1, dtype=np.int64)
        pend_index = np.empty(capacity, dtype=np.int32)
        pend_step = np.empty(capacity, dtype=np.int64)
        nnz, n_pend, late, last_step = bin_kernel(
            words, self.width, self.channels_by_polarity, self.width * self.height, self.t0_us, self.dt_us,
            self.next_step, done_step, self._last_step, self._pend_index, self._pend_step, self._stamp,
            out_indices, counts, pend_index, pend_step)
        batch = StepBatch(self.next_step, self.t0_us, self.dt_us, np.cumsum(counts), out_indices[:nnz])
        self.next_step = done_step
        self.late_events += late
        self._last_step = last_step
        self._pend_index = pend_index[:n_pend]
        self._pend_step = pend_step[:n_pend]
        return batch

    def _raise(self, words: np.ndarray, error: int) -> None:
        events = words.reshape(-1).view(DVS_EVENT_DTYPE)
        if error < 0:
            i = -error - 1
            raise ValueError(f"{self.name}: event {i} at (x={int(events[i]['x'])}, y={int(events[i]['y'])}) is "
                             f"outside the {self.width}x{self.height} input grid")
        i = error - 1
        raise ValueError(f"{self.name}: event {i} (t={int(events[i]['timestamp'])} µs) belongs to an earlier step "
                         f"than an event before it; packets must be time-ordered")
