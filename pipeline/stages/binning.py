"""Binners: a packet stream -> the inputs of the loop's steps, one binner per packet kind.

* :class:`StepBinner`: DVS events (DVS_EVENT_DTYPE) -> per-step active input indices of a (C, H, W) grid;
* :class:`CountingStepBinner`: DVS events -> per-step active input indices with their event counts (graded
  input, for models trained on event-count frames);
* :class:`SpikeStepBinner`: AER spikes (SPIKE_DTYPE: cochlea channels, neural units, network outputs) ->
  per-step active input indices (index = channel);
* :class:`CountBinner`: AER spikes -> per-bin spike counts, the input of bin-level decoders (Kalman, Wiener).

The grid: step k covers sensor time ``[t0 + k*dt, t0 + (k+1)*dt)`` µs. A packet with ``t_end_us`` has
delivered every event before ``t_end_us``, so it completes every step with ``t0 + (k+1)*dt <= t_end_us``;
``push`` returns those steps (empty ones included, so a stepper steps through silence), events of the
unfinished step are carried to the next packet. An event whose step was already returned is late: it is
dropped and counted (``late_events``).

Index steps: an input index is active in a step when at least one event maps to it; each step lists its
active indices once, in order of their first event (CSR: ``indices[indptr[i]:indptr[i+1]]``). DVS layout is
channel-major, like a (C, H, W) image: ``index = c * height * width + y * width + x`` with c = polarity (1 ON,
0 OFF) when ``channels_by_polarity``, else c = 0; so ``n_inputs = (2 if channels_by_polarity else 1) * width *
height``. AER layout: ``index = channel``, ``n_inputs = n_channels``.

Latency cost: a step can only be handed on once it is complete, so binning adds up to ``dt`` of latency to an
event (on average dt/2).

What the loop (pipeline.loop) needs of every binner: ``dt_us``; ``push(events, t_end_us)`` and ``flush()``
returning a batch (``len(batch)``, ``batch.step(i)`` the i-th step's input, ``batch.step_start_us(i)``);
``reset()``; ``late_events``; ``empty()``, an empty event array of its kind; ``warmup()``, which compiles its
kernels without touching its state; ``merges`` and ``merge(inputs)`` (the one input standing for several
overdue steps, when ``merges``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from pipeline.core.checks import check_int, check_resolution
from pipeline.core.events import DVS_EVENT_DTYPE, SPIKE_DTYPE, dvs_events, empty_dvs, empty_spikes, spikes
from pipeline.core.schema import toml_value
from pipeline.stages._common import event_words, word_polarity, word_x, word_y

_NO_STEP = np.iinfo(np.int64).min
#: Largest number of steps one push may complete (10^7 steps = 2.8 h at 1 ms): guards against unit mistakes.
MAX_STEPS_PER_PUSH = 10_000_000


@dataclass(frozen=True)
class _Grid:
    """first_step: global index k of the first step of a batch; t0_us, dt_us: the binner's grid."""

    first_step: int
    t0_us: int
    dt_us: int

    def step_start_us(self, i: int) -> int:
        """Sensor time (µs) at which the i-th step of this batch starts."""
        return self.t0_us + (self.first_step + i) * self.dt_us

    @property
    def end_us(self) -> int:
        """Sensor time (µs) at which the last step of this batch ends."""
        return self.t0_us + (self.first_step + len(self)) * self.dt_us


@dataclass(frozen=True)
class StepBatch(_Grid):
    """Complete steps of active input indices produced by one ``push`` (or ``flush``).

    indptr: (len + 1,) int64; indices: (nnz,) int32 active input indices, step i at indices[indptr[i]:indptr[i+1]].
    """

    indptr: np.ndarray
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def step(self, i: int) -> np.ndarray:
        """Active input indices (int32, unique) of the i-th step in this batch (a view)."""
        return self.indices[self.indptr[i]:self.indptr[i + 1]]


@dataclass(frozen=True)
class CountBatch(_Grid):
    """Complete bins of spike counts produced by one ``push``: counts float64 (len, n_channels)."""

    counts: np.ndarray

    def __len__(self) -> int:
        return len(self.counts)

    def step(self, i: int) -> np.ndarray:
        """Spike counts (float64 (n_channels,)) of the i-th bin in this batch (a view)."""
        return self.counts[i]


@njit(cache=True)
def _input_index(key, aer, width, by_polarity, plane):
    """Input index of one event: the channel (AER) or the DVS word's pixel and polarity channel."""
    if aer:
        return np.int64(key)
    index = word_y(key) * width + word_x(key)
    if by_polarity:
        index += word_polarity(key) * plane
    return index


@njit(cache=True)
def check_kernel(words, aer, width, height, t0, dt, next_step, last_step):
    """Validate a packet before any state changes: 0 if fine, -(i+1) for an event outside the grid (DVS:
    x/y outside width x height; AER: channel outside [0, width)), i+1 for an event whose step precedes an
    earlier (not late) event's step (not time-ordered). words (n, 2) int64: timestamp (µs), then DVS word 1
    (``aer`` False) or the channel (``aer`` True)."""
    k = np.int64(0)
    step_start = np.int64(1)
    step_end = np.int64(0)
    for i in range(words.shape[0]):
        key = words[i, 1]
        if aer:
            if key < 0 or key >= width:
                return -(i + 1)
        else:
            x = word_x(key)
            y = word_y(key)
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
def bin_kernel(words, aer, width, by_polarity, plane, t0, dt, next_step, done_step, last_step,
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
            index = _input_index(words[j - n_old, 1], aer, width, by_polarity, plane)
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


@njit(cache=True)
def graded_bin_kernel(words, width, by_polarity, plane, t0, dt, next_step, done_step, last_step, old_index, old_step,
                      stamp, slot, out_pairs, counts, pend_index, pend_step):
    """:func:`bin_kernel` for DVS words that also counts: each (index, step) pair with step < done_step is
    listed once in its step (out_pairs[0]) with the number of its events (out_pairs[1]; ``slot`` holds
    where an input is listed in the current step). Returns (nnz, n_pending, n_late, last_step)."""
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
            t = words[j - n_old, 0]
            if t < step_start or t >= step_end:
                step = (t - t0) // dt
                step_start = t0 + step * dt
                step_end = step_start + dt
            k = step
            if k < next_step:
                late += 1
                continue
            last_step = k
            index = _input_index(words[j - n_old, 1], False, width, by_polarity, plane)
        if k < done_step:
            if stamp[index] != k:
                stamp[index] = k
                slot[index] = nnz
                out_pairs[0, nnz] = index
                out_pairs[1, nnz] = 1
                counts[k - next_step + 1] += 1
                nnz += 1
            else:
                out_pairs[1, slot[index]] += 1
        else:
            pend_index[n_pend] = index
            pend_step[n_pend] = k
            n_pend += 1
    return nnz, n_pend, late, last_step


@njit(cache=True)
def count_kernel(times, channels, t0, dt, first_step, n_channels, out):
    """Add each event to ``out[step - first_step, channel]``; out (rows, n_channels) float64 starts with the
    carried open bin in row 0. Returns (late, bad): late = events before ``first_step`` (not counted);
    bad = -(i+1) for the first event on a channel outside [0, n_channels), i+1 for the first event after the
    last row (beyond the packet's t_end_us), 0 if none."""
    late = 0
    n_rows = out.shape[0]
    for i in range(times.shape[0]):
        ch = channels[i]
        if ch < 0 or ch >= n_channels:
            return late, -(i + 1)
        row = (times[i] - t0) // dt - first_step
        if row < 0:
            late += 1
            continue
        if row >= n_rows:
            return late, i + 1
        out[row, ch] += 1.0
    return late, 0


def _check_spikes(name: str, events: np.ndarray) -> None:
    if not isinstance(events, np.ndarray) or events.dtype != SPIKE_DTYPE:
        got = getattr(events, "dtype", type(events).__name__)
        raise TypeError(f"{name}: expected an AER spike array of SPIKE_DTYPE {SPIKE_DTYPE}, got {got}")


class _IndexBinner:
    """The grid and carry logic shared by the two index binners; subclasses say how to read their events."""

    name = "binner"
    merges = True
    _aer = False

    def _setup(self, dt_us: int, width: int, height: int, channels_by_polarity: bool, t0_us: int | None) -> None:
        self.dt_us = check_int(self.name, "dt_us", dt_us, 1, 10**9)
        self.width, self.height = width, height
        self.channels_by_polarity = channels_by_polarity
        self.n_inputs = (2 if channels_by_polarity else 1) * width * height
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

    def complete_steps(self, t_end_us: int) -> int:
        """How many steps from ``next_step`` on are complete once sensor time reached ``t_end_us``."""
        if self.t0_us is None:
            return 0
        return max(0, (int(t_end_us) - self.t0_us) // self.dt_us - self.next_step)

    def merge(self, inputs: list[np.ndarray]) -> np.ndarray:
        """The input of one step standing for several overdue steps: the union of their active indices."""
        return np.unique(np.concatenate(inputs)).astype(np.int32)

    def push(self, events: np.ndarray, t_end_us: int) -> StepBatch:
        """Add a packet (time-ordered events of this binner's kind) complete up to ``t_end_us`` (µs).

        Returns the steps that became complete: all k with t0 + (k+1)*dt <= t_end_us not returned before
        (possibly none). Steps without events are included (empty), so the network steps through silence.
        """
        words = self._words(events)
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
        error = check_kernel(words, self._aer, self.width, self.height, self.t0_us, self.dt_us, self.next_step,
                             self._last_step)
        if error:
            self._raise(words, error)
        capacity = len(self._pend_index) + len(words)
        out_indices = np.empty(capacity, dtype=np.int32)
        counts = np.zeros(n_steps + 1, dtype=np.int64)
        pend_index = np.empty(capacity, dtype=np.int32)
        pend_step = np.empty(capacity, dtype=np.int64)
        nnz, n_pend, late, last_step = bin_kernel(
            words, self._aer, self.width, self.channels_by_polarity, self.width * self.height, self.t0_us,
            self.dt_us, self.next_step, done_step, self._last_step, self._pend_index, self._pend_step, self._stamp,
            out_indices, counts, pend_index, pend_step)
        batch = StepBatch(self.next_step, self.t0_us, self.dt_us, np.cumsum(counts), out_indices[:nnz])
        self.next_step = done_step
        self.late_events += late
        self._last_step = last_step
        self._pend_index = pend_index[:n_pend]
        self._pend_step = pend_step[:n_pend]
        return batch

    def _raise(self, words: np.ndarray, error: int) -> None:
        if error < 0:
            raise ValueError(f"{self.name}: event {-error - 1} {self._where(words[-error - 1, 1])}")
        i = error - 1
        raise ValueError(f"{self.name}: event {i} (t={int(words[i, 0])} µs) belongs to an earlier step "
                         f"than an event before it; packets must be time-ordered")

    def warmup(self) -> None:
        """Compile the kernels on a throwaway binner of the same grid (this one's state is untouched)."""
        probe = self._probe()
        probe.push(probe._one_event(), 2 * self.dt_us)
        probe.flush()


class StepBinner(_IndexBinner):
    """Bin a DVS packet stream into steps of ``dt_us`` µs of active input indices.

    dt_us: step length (µs), 1 .. 10^9. width, height: input grid (px) after pooling.
    channels_by_polarity: two input channels (OFF, ON) instead of one. t0_us: start of step 0 (µs); None =
    the timestamp of the first event pushed.

    Counters: ``late_events`` (events whose step was already emitted, dropped), ``next_step`` (first step not
    emitted yet), ``pending_events`` (carried into the next push).
    """

    def __init__(self, dt_us: int, width: int, height: int, channels_by_polarity: bool = True,
                 t0_us: int | None = None):
        width, height = check_resolution(self.name, width, height)
        if not isinstance(channels_by_polarity, bool):
            raise ValueError(f"{self.name}: parameter 'channels_by_polarity' must be true or false, "
                             f"got {toml_value(channels_by_polarity)}")
        self._setup(dt_us, width, height, channels_by_polarity, t0_us)

    def empty(self) -> np.ndarray:
        """An empty packet of this binner's kind (DVS events)."""
        return empty_dvs(0)

    def to_index(self, x, y, polarity) -> np.ndarray:
        """Input index (int64) of pixel(s) (x, y) with polarity 0/1 (array or scalar), see the module doc."""
        index = np.asarray(y, dtype=np.int64) * self.width + np.asarray(x, dtype=np.int64)
        if self.channels_by_polarity:
            index = index + (np.asarray(polarity) != 0).astype(np.int64) * (self.width * self.height)
        return index

    def _words(self, events: np.ndarray) -> np.ndarray:
        """The packet as (n, 2) int64 words (a view): timestamp, packed x/y/polarity."""
        return event_words(events)

    def _where(self, key: int) -> str:
        event = np.array([0, key], dtype=np.int64).view(DVS_EVENT_DTYPE)[0]
        return (f"at (x={int(event['x'])}, y={int(event['y'])}) is outside the {self.width}x{self.height} "
                f"input grid")

    def _probe(self) -> "StepBinner":
        return StepBinner(self.dt_us, self.width, self.height, self.channels_by_polarity)

    def _one_event(self) -> np.ndarray:
        return dvs_events([0], [0], [0], [1])


@dataclass(frozen=True)
class GradedStepBatch(_Grid):
    """Complete steps of a :class:`CountingStepBinner`: pairs (2, nnz) int32, row 0 the active input indices,
    row 1 their event counts; step i at pairs[:, indptr[i]:indptr[i+1]]."""

    indptr: np.ndarray
    pairs: np.ndarray

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def step(self, i: int) -> np.ndarray:
        """int32 (2, k) of the i-th step: active input indices (unique) and their event counts (a view)."""
        return self.pairs[:, self.indptr[i]:self.indptr[i + 1]]


class CountingStepBinner(StepBinner):
    """A :class:`StepBinner` whose steps carry each active input's event count (graded input, as tonic's
    ToFrame event-count frames): ``batch.step(i)`` is int32 (2, k), active indices and counts. Merged
    overdue steps add their counts. Same grid, carry and late-event rules as StepBinner."""

    name = "counting binner"

    def _setup(self, *args) -> None:
        super()._setup(*args)
        self._slot = np.zeros(self.n_inputs, dtype=np.int64)

    def merge(self, inputs: list[np.ndarray]) -> np.ndarray:
        """One step standing for several overdue steps: the union of their inputs, counts added."""
        pairs = np.concatenate(inputs, axis=1)
        index, inverse = np.unique(pairs[0], return_inverse=True)
        return np.stack([index, np.bincount(inverse, weights=pairs[1])]).astype(np.int32)

    def _empty_batch(self) -> GradedStepBatch:
        return GradedStepBatch(self.next_step, self.t0_us or 0, self.dt_us, np.zeros(1, dtype=np.int64),
                               np.zeros((2, 0), dtype=np.int32))

    def _bin(self, words: np.ndarray, done_step: int) -> GradedStepBatch:
        n_steps = max(0, done_step - self.next_step)
        if n_steps > MAX_STEPS_PER_PUSH:
            raise ValueError(f"{self.name}: one packet would complete {n_steps} steps of {self.dt_us} µs "
                             f"(t0 = {self.t0_us} µs); check that t_end_us and event timestamps are both µs")
        done_step = self.next_step + n_steps
        error = check_kernel(words, False, self.width, self.height, self.t0_us, self.dt_us, self.next_step,
                             self._last_step)
        if error:
            self._raise(words, error)
        capacity = len(self._pend_index) + len(words)
        pairs = np.empty((2, capacity), dtype=np.int32)
        counts = np.zeros(n_steps + 1, dtype=np.int64)
        pend_index = np.empty(capacity, dtype=np.int32)
        pend_step = np.empty(capacity, dtype=np.int64)
        nnz, n_pend, late, last_step = graded_bin_kernel(
            words, self.width, self.channels_by_polarity, self.width * self.height, self.t0_us, self.dt_us,
            self.next_step, done_step, self._last_step, self._pend_index, self._pend_step, self._stamp, self._slot,
            pairs, counts, pend_index, pend_step)
        batch = GradedStepBatch(self.next_step, self.t0_us, self.dt_us, np.cumsum(counts),
                                np.ascontiguousarray(pairs[:, :nnz]))
        self.next_step = done_step
        self.late_events += late
        self._last_step = last_step
        self._pend_index = pend_index[:n_pend]
        self._pend_step = pend_step[:n_pend]
        return batch

    def _probe(self) -> "CountingStepBinner":
        return CountingStepBinner(self.dt_us, self.width, self.height, self.channels_by_polarity)


class SpikeStepBinner(_IndexBinner):
    """Bin an AER spike stream (SPIKE_DTYPE) into steps of ``dt_us`` µs of active input indices, the input
    index being the spike's channel (``n_inputs = n_channels``).

    dt_us: step length (µs), 1 .. 10^9. n_channels: channels of the stream (cochlea channels, units).
    t0_us: start of step 0 (µs); None = the timestamp of the first spike pushed.
    """

    name = "spike binner"
    _aer = True

    def __init__(self, dt_us: int, n_channels: int, t0_us: int | None = None):
        self.n_channels = check_int(self.name, "n_channels", n_channels, 1, 2**31 - 1)
        self._setup(dt_us, self.n_channels, 1, False, t0_us)

    def empty(self) -> np.ndarray:
        """An empty packet of this binner's kind (AER spikes)."""
        return empty_spikes(0)

    def _words(self, events: np.ndarray) -> np.ndarray:
        """The packet as (n, 2) int64 words (a copy): timestamp, channel."""
        _check_spikes(self.name, events)
        words = np.empty((len(events), 2), dtype=np.int64)
        words[:, 0] = events["timestamp"]
        words[:, 1] = events["channel"]
        return words

    def _where(self, key: int) -> str:
        return f"on channel {int(key)} is outside the stream's {self.n_channels} channels"

    def _probe(self) -> "SpikeStepBinner":
        return SpikeStepBinner(self.dt_us, self.n_channels)

    def _one_event(self) -> np.ndarray:
        return spikes([0], [0])


class CountBinner:
    """Count an AER spike stream (SPIKE_DTYPE) per channel in bins of ``dt_us`` µs (causal: a bin is returned
    only once complete, so its counts never depend on later events).

    dt_us: bin width (µs). n_channels: units of the stream. t0_us: start of bin 0 (µs); None = the timestamp
    of the first spike pushed. ``flush`` returns nothing: the partial bin at the end of a stream is dropped (a
    bin-level decoder would read its counts as a lower rate). Spikes on a channel outside [0, n_channels), or
    after the packet's ``t_end_us`` beyond the open bin, are an error; late spikes are counted
    (``late_events``) and dropped.
    """

    name = "count binner"
    merges = False

    def __init__(self, dt_us: int, n_channels: int, t0_us: int | None = None):
        self.dt_us = check_int(self.name, "dt_us", dt_us, 1, 10**9)
        self.n_channels = check_int(self.name, "n_channels", n_channels, 1, 2**31 - 1)
        self._initial_t0 = None if t0_us is None else check_int(self.name, "t0_us", t0_us)
        self.reset()

    def reset(self, t0_us: int | None = None) -> None:
        """Forget the open bin and counters; restart the grid at ``t0_us`` (default: the constructor's)."""
        self.t0_us = self._initial_t0 if t0_us is None else check_int(self.name, "t0_us", t0_us)
        self.next_step = 0
        self.late_events = 0
        self._open = np.zeros(self.n_channels, dtype=np.float64)

    def empty(self) -> np.ndarray:
        """An empty packet of this binner's kind (AER spikes)."""
        return empty_spikes(0)

    def push(self, events: np.ndarray, t_end_us: int) -> CountBatch:
        """Add a packet (SPIKE_DTYPE) complete up to ``t_end_us`` (µs); returns the bins it completed:
        counts (k, n_channels) float64 for all bins with t0 + (k+1)*dt <= t_end_us not returned before."""
        _check_spikes(self.name, events)
        if self.t0_us is None:
            if len(events) == 0:
                return self._batch(np.zeros((0, self.n_channels)))
            self.t0_us = int(events["timestamp"][0])
        done = max((int(t_end_us) - self.t0_us) // self.dt_us, self.next_step)
        k = done - self.next_step
        if k > MAX_STEPS_PER_PUSH:
            raise ValueError(f"{self.name}: one packet would complete {k} bins of {self.dt_us} µs "
                             f"(t0 = {self.t0_us} µs); check that t_end_us and spike timestamps are both µs")
        out = np.zeros((k + 1, self.n_channels), dtype=np.float64)
        out[0] = self._open
        late, bad = count_kernel(events["timestamp"], events["channel"], self.t0_us, self.dt_us, self.next_step,
                                 self.n_channels, out)
        if bad < 0:
            i = -bad - 1
            raise ValueError(f"{self.name}: spike {i} on channel {int(events['channel'][i])} is outside the "
                             f"stream's {self.n_channels} channels")
        if bad > 0:
            i = bad - 1
            raise ValueError(f"{self.name}: spike {i} (t={int(events['timestamp'][i])} µs) lies beyond the "
                             f"packet's end t_end_us={int(t_end_us)} µs")
        batch = self._batch(out[:k])
        self._open = out[k].copy()
        self.next_step = done
        self.late_events += late
        return batch

    def flush(self) -> CountBatch:
        """End of stream: nothing (the open, partial bin is dropped)."""
        return self._batch(np.zeros((0, self.n_channels)))

    def _batch(self, counts: np.ndarray) -> CountBatch:
        return CountBatch(self.next_step, self.t0_us or 0, self.dt_us, counts)

    def warmup(self) -> None:
        """Compile the kernel on a throwaway binner (this one's state is untouched)."""
        probe = CountBinner(self.dt_us, self.n_channels)
        probe.push(spikes([0], [0]), 2 * self.dt_us)
