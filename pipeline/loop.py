"""The real-time loop: source packets -> stage chain -> binner -> stepper -> decode -> command sinks.

One :class:`Loop` runs one graph, whatever the packet kind: DVS events, AER spikes from the cochlea or a
neural recording. The source's I/O runs in a reader thread that feeds a bounded queue, so file reads,
decompression and driver waits stay off the hot path. The loop passes each packet through the stage chain
(DVS filters; none for spikes), lets the binner (pipeline.stages.binning, one per packet kind) cut it into
steps of ``dt_us``, runs the stepper once per step and decodes its output into a command for every sink.
The stepper is either a network runtime (``step(active input indices) -> output spikes``) or a bin-level
decoder (``step(spike counts of one bin) -> kinematics``, e.g. a Kalman filter); the decode step turns that
output into the command (a spike decoder, or a mapping of decoded velocity to wheel speeds).

Modes (:attr:`LoopConfig.mode`):

* ``"live"``  — packets are processed as they arrive (the source sets ``arrival_ns``). A complete bin that
  has waited more than ``max_lag_ms`` since its packet arrived means the loop is behind: all such overdue
  bins are merged into one step (union of their active inputs, for binners that can merge) and counted in
  ``merged_steps``. A full source queue drops the packet and counts it. Bins that arrive together in one
  big packet are not late by themselves; they run one by one as long as the loop keeps up.
* ``"paced"`` — replay in real time (``speed`` = 1) or ×N. The reader runs ahead; the loop's clock ticks
  every ``tick_us / speed`` (hybrid sleep/spin) and releases the packets whose sensor end time is due, like a
  sensor delivering them; a packet's arrival is the moment it was due on that clock (so a late tick shows
  in the latency). Late ticks are counted; a loop that falls behind merges bins exactly as in live mode.
* ``"fast"``  — replay as fast as possible, never merging; the reader blocks on a full queue
  (backpressure, bounded memory). Latency counts from the moment the loop takes the packet.

Binning uses sensor timestamps only, so a replay that never merges (fast, or paced/live while keeping
up) produces the same command stream every time.

Latency of a command, two ways (both end at ``perf_counter_ns`` when the sinks report its bytes written,
the latest over the sinks):

* from arrival (``latency_*``): minus the arrival of the packet that completed its step (the earliest one,
  for merged steps): the loop's own delay (queueing, binning of that packet, stepping, decoding, writing);
* from sensor time (``sensor_latency_*``): minus the wall time at which the sensor time of the step's end
  was due, i.e. the age of the command relative to the newest event it could include (events earlier in
  the step are older by up to ``dt_us``; for a merged step, the end of the earliest step merged). This adds
  what happens before a packet reaches the loop: the packet length a driver batches events into, and the
  wait for the step to complete. Sensor time t is due at ``clock[0] + (t - clock[1]) * 1000 / speed`` ns:
  in paced mode ``clock`` is the loop's own clock; in live mode it is estimated from the packets, as the
  one whose arrival came earliest relative to its end time (so a constant transport delay before the
  fastest packet is not counted), or, for packets from another host whose send time is known on our clock
  (``Packet.origin_ns``: the sender's wall clock corrected by the estimated clock offset), the one sent
  earliest relative to its end time (so the transport delay is counted). In fast mode sensor time has no
  wall-clock meaning: nan.

:meth:`Loop.pause` stops the stepping (the sinks get a zero command every 50 ms instead) until
:meth:`Loop.resume`: a paced replay's clock resumes where it stopped, a fast one simply waits, and a live
source's packets that arrive meanwhile are dropped and counted (``paused_events``); the binner then restarts
at the first packet after the pause, so the network does not step through the paused time.
"""
from __future__ import annotations

import math
import os
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from pipeline.core.clock import wait_until
from pipeline.core.packet import Packet, Source

MODES = ("live", "paced", "fast")

#: Signature of the step that turns the stepper's output into a command: ``(output, t_us) -> command
#: float64 (n,)`` or ``None`` for "no command this step". output: uint8 (n_out,) spikes of a network, or the
#: float64 (d,) kinematics of a bin-level decoder (a view, valid until the next step).
Decode = Callable[[np.ndarray, int], "np.ndarray | None"]

#: The stage chain: ``chain(events) -> events`` (a pipeline.stages.Chain), or None to pass packets unchanged.
ChainLike = Callable[[np.ndarray], np.ndarray]

_END = object()


class Stepper(Protocol):
    """What the loop steps once per bin: a network runtime (``pipeline.snn.build(...)``; input: active input
    indices int32, output: spikes uint8 (n_out,)) or a bin-level decoder (pipeline.decoders.bci; input: spike
    counts float64 (n_units,), output: kinematics float64 (d,)). ``warmup`` compiles and leaves it reset."""

    def warmup(self) -> None: ...

    def step(self, step_input: np.ndarray) -> np.ndarray: ...


class Binner(Protocol):
    """A binner of pipeline.stages.binning, as the loop uses it (see that module's docstring)."""

    dt_us: int
    late_events: int
    merges: bool

    def push(self, events: np.ndarray, t_end_us: int) -> Any: ...

    def flush(self) -> Any: ...

    def reset(self) -> None: ...

    def empty(self) -> np.ndarray: ...

    def warmup(self) -> None: ...


class Sink(Protocol):
    """Where commands go (``pipeline.sinks``): ``write`` returns ``perf_counter_ns`` when written."""

    name: str

    def write(self, command: np.ndarray, t_us: int) -> int: ...

    def close(self) -> None: ...


class SinkFatalError(RuntimeError):
    """A sink lost its device for good (e.g. a motor port that will not come back): the loop must stop."""


@dataclass(frozen=True)
class LoopConfig:
    """How the loop runs.

    mode: "live", "paced" or "fast" (see the module docstring).
    dt_us: step length in sensor µs (the binner's: a network step, or a decoder's bin).
    speed: sensor time per wall time (1.0 = real time, 10.0 = ten times faster) of a paced replay, and of a
        live source when it is a replay (used to advance sensor time while the source is silent).
    max_lag_ms: live/paced, a complete bin that waited longer than this (ms of wall time since its packet
        arrived) is merged with the other overdue bins into one step.
    queue_packets: capacity of the reader -> loop queue, in packets.
    report_period_s: wall seconds between periodic reports (0 = only the final report).
    duration_s: stop after this much sensor time has been stepped (0 = run until the source ends).
    command_every_steps: write a command to the sinks every N steps.
    spin_us: pacing, the last µs before a tick are spun (yielding the GIL) rather than slept.
    idle_ms: live mode, after this long without a packet the sensor counts as silent and the network
        keeps stepping on the wall clock (empty bins; 0 = wait for packets).
    switch_interval_us: while running, the interpreter's GIL switch interval (Python's default is 5,000 µs,
        which lets the reader, motor I/O or twin threads hold the loop off for milliseconds).
    tick_us: paced mode, the clock's period in sensor µs (0 = dt_us). Steps can only complete when a packet
        does, so a replay whose packets are shorter or longer than a step ticks once per packet length.
    """

    mode: str = "fast"
    dt_us: int = 1000
    speed: float = 1.0
    max_lag_ms: float = 10.0
    queue_packets: int = 64
    report_period_s: float = 1.0
    duration_s: float = 0.0
    command_every_steps: int = 1
    spin_us: int = 800
    switch_interval_us: int = 200
    idle_ms: float = 50.0
    tick_us: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {self.mode!r}")
        if self.dt_us <= 0:
            raise ValueError(f"dt_us: expected a positive integer, got {self.dt_us}")
        if not self.speed > 0:
            raise ValueError(f"speed: expected a positive number, got {self.speed}")
        if self.idle_ms < 0:
            raise ValueError(f"idle_ms: expected a number >= 0, got {self.idle_ms}")
        if not self.max_lag_ms > 0:
            raise ValueError(f"max_lag_ms: expected a positive number, got {self.max_lag_ms}")
        if self.tick_us < 0:
            raise ValueError(f"tick_us: expected an integer >= 0, got {self.tick_us}")
        if self.queue_packets < 1 or self.command_every_steps < 1 or self.spin_us < 0 or self.switch_interval_us < 1:
            raise ValueError("queue_packets, command_every_steps, switch_interval_us must be >= 1 and spin_us >= 0")

    @property
    def period_us(self) -> int:
        """Paced mode: the clock's period in sensor µs."""
        return self.tick_us or self.dt_us


@dataclass(frozen=True)
class LoopReport:
    """Loop statistics. Periodic reports give rates and latency over the window since the previous report
    and cumulative counters; the final report (``final=True``) covers the whole run.

    Latencies in ms (nan when no command was written): ``latency_*`` from the arrival of the packet that
    completed the step, ``sensor_latency_*`` from the wall time the step's end was due in sensor time (see
    the module docstring; nan in fast mode). ``step_time_*_us``: wall time of one step, the stepper plus the
    decode (µs). ``real_time_factor`` = sensor time stepped / wall time (1.0 = keeping pace with real time,
    > 1 faster); ``tick_late_p99_us``: paced-mode lateness of tick starts (µs); a tick counts as missed when
    it starts more than half a period late, and ticks the clock skipped because the loop was a whole period
    or more late count as ticks and as missed.
    ``idle_steps``: live-mode steps the wall clock advanced while the sensor was silent; ``late_events``:
    events whose step had already run (dropped by the binner).
    ``commands_unwritten``: commands no sink reported as written (a motor controller that queued the
    command behind a busy wire, or dropped it while its link was down). ``paused_events``: live-mode events
    that arrived while the loop was paused (dropped).
    """

    final: bool
    mode: str
    wall_s: float
    stream_s: float
    steps: int
    steps_per_s: float
    real_time_factor: float
    commands: int
    commands_unwritten: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    merged_steps: int
    idle_steps: int
    late_events: int
    dropped_packets: int
    dropped_events: int
    ticks: int
    missed_ticks: int
    tick_late_p99_us: float
    sink_errors: int
    events_in: int
    events_used: int
    fatal: str = ""
    paused_events: int = 0
    sensor_latency_p50_ms: float = math.nan
    sensor_latency_p99_ms: float = math.nan
    sensor_latency_max_ms: float = math.nan
    step_time_p50_us: float = math.nan
    step_time_p99_us: float = math.nan
    step_time_max_us: float = math.nan

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """One ``key=value`` log line."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float):
                value = f"{value:.4g}"
            elif isinstance(value, str):
                value = repr(value) if (not value or " " in value) else value
            parts.append(f"{f.name}={value}")
        return " ".join(parts)


class LatencyHistogram:
    """Latencies at 1 µs resolution up to ``max_us`` (longer ones land in the last bin; max is exact)."""

    def __init__(self, max_us: int = 100_000) -> None:
        self.counts = np.zeros(max_us + 1, dtype=np.int64)
        self.n = 0
        self.max_ns = 0
        self._last = max_us

    def add(self, latency_ns: int) -> None:
        """Count one latency (ns; a negative one, from clocks a few µs apart, counts as 0)."""
        us = latency_ns // 1000
        self.counts[0 if us < 0 else us if us < self._last else self._last] += 1
        self.n += 1
        if latency_ns > self.max_ns:
            self.max_ns = latency_ns

    def clear(self) -> None:
        if self.n:  # fresh zeroed pages (calloc) cost less than writing zeros over the old ones
            self.counts = np.zeros(len(self.counts), dtype=np.int64)
        self.n = 0
        self.max_ns = 0

    def absorb(self, other: "LatencyHistogram") -> None:
        """Add ``other``'s latencies to these (same ``max_us``)."""
        if other.n:
            self.counts += other.counts
            self.n += other.n
            self.max_ns = max(self.max_ns, other.max_ns)

    def percentile_ms(self, q: float) -> float:
        """The q-th percentile (0..100) in ms, at the centre of its 1 µs bin; nan when empty."""
        if self.n == 0:
            return math.nan
        rank = max(1, math.ceil(q / 100.0 * self.n))
        us = int(np.searchsorted(np.cumsum(self.counts), rank))
        return min((us + 0.5) / 1000.0, self.max_ns / 1e6)

    @property
    def max_ms(self) -> float:
        return self.max_ns / 1e6 if self.n else math.nan


def steps_of(batch) -> Iterator[tuple[int, np.ndarray]]:
    """``(step_end_us, step input)`` for every step of a binner's batch (pipeline.stages.binning: active
    indices int32 or counts float64; views into the batch's own arrays, so they stay valid while the bins
    wait to run)."""
    for i in range(len(batch)):
        yield batch.step_start_us(i) + batch.dt_us, batch.step(i)


def _raise_realtime_priority() -> Callable[[], None]:
    """If this thread runs under SCHED_FIFO/SCHED_RR (the controller's ``realtime_priority``), lift it one
    priority above the threads it shares the process with (source reader, motor I/O, twins: they inherit
    the base priority). A same-priority FIFO thread that gets the CPU keeps it until it blocks, which
    would make the loop miss ticks. Returns a function that restores the previous setting."""
    try:
        policy = os.sched_getscheduler(0)
        if policy not in (os.SCHED_FIFO, os.SCHED_RR):
            return lambda: None
        base = os.sched_getparam(0).sched_priority
        os.sched_setscheduler(0, policy, os.sched_param(min(base + 1, os.sched_get_priority_max(policy))))
    except (AttributeError, OSError):
        return lambda: None
    return lambda: os.sched_setscheduler(0, policy, os.sched_param(base))


class _Reader(threading.Thread):
    """Iterates ``source.packets()`` into a bounded queue. ``drop_when_full`` (live): a full queue drops the
    packet and counts it instead of stalling the driver; otherwise the reader waits (backpressure)."""

    def __init__(self, source: Source, capacity: int, drop_when_full: bool, stop: threading.Event) -> None:
        super().__init__(name="spikeloop-source", daemon=True)
        self.source = source
        self.queue: queue.Queue = queue.Queue(maxsize=capacity)
        self.drop_when_full = drop_when_full
        self.stop_event = stop
        self.error: BaseException | None = None
        self.dropped_packets = 0
        self.dropped_events = 0

    def run(self) -> None:
        try:
            for packet in self.source.packets():
                if self.stop_event.is_set():
                    break
                if self.drop_when_full:
                    try:
                        self.queue.put_nowait(packet)
                    except queue.Full:
                        self.dropped_packets += 1
                        self.dropped_events += len(packet.events)
                    continue
                while not self.stop_event.is_set():
                    try:
                        self.queue.put(packet, timeout=0.05)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # handed to the loop thread, which re-raises it
            self.error = exc
        finally:
            while True:
                try:
                    self.queue.put(_END, timeout=0.05)
                    return
                except queue.Full:
                    if self.stop_event.is_set():
                        return


class Loop:
    """Runs one graph: ``source -> chain -> binner -> stepper.step -> decode -> sinks``.

    source: a :class:`pipeline.core.packet.Source` (DVS events or AER spikes).
    chain: the stage chain ``chain(events) -> events`` applied to every packet (a pipeline.stages.Chain),
        or None (packets go to the binner unchanged).
    binner: a binner of pipeline.stages.binning for the source's packet kind, with ``dt_us == config.dt_us``
        (``push`` returns the complete steps).
    stepper: a network runtime (``step(indices int32) -> spikes uint8 (n_out,)``) or a bin-level decoder
        (``step(counts float64 (n_units,)) -> kinematics float64 (d,)``), see :class:`Stepper`.
    decode: ``(output, t_us) -> command`` (float64 (n,), e.g. wheel rad/s) or None.
    sinks: objects with ``write(command, t_us) -> ns`` and ``close()``.
    on_report: called with every :class:`LoopReport` (periodic and final).
    on_packet: called in the loop thread with every packet the loop takes, as the source delivered it
        (before the chain), e.g. to show or record the events.
    """

    def __init__(
        self,
        source: Source,
        chain: ChainLike | None,
        binner: Binner,
        stepper: Stepper,
        decode: Decode,
        sinks: Sequence[Sink],
        config: LoopConfig = LoopConfig(),
        on_report: Callable[[LoopReport], None] | None = None,
        on_packet: Callable[[Packet], None] | None = None,
    ) -> None:
        if binner.dt_us != config.dt_us:
            raise ValueError(f"loop: the binner steps every {binner.dt_us} µs but config.dt_us is {config.dt_us} µs")
        self.source = source
        self.chain = chain
        self.binner = binner
        self.stepper = stepper
        self.decode = decode
        self.sinks = list(sinks)
        self.config = config
        self.on_report = on_report
        self.on_packet = on_packet
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._command_len = 0
        #: (perf_counter_ns, sensor µs): sensor time t is due at ``clock[0] + (t - clock[1]) * 1000 / speed`` ns.
        #: Paced mode: the loop's own clock; live mode: estimated from the packets (see the module docstring);
        #: None until known (and always in fast mode).
        self.clock: tuple[int, int] | None = None
        #: Complete steps waiting to run: (step end µs, step input, arrival ns, end µs of the earliest step in it).
        self._pending: deque[tuple[int, np.ndarray, int, int]] = deque()
        # Latency (from arrival, from sensor time) and step-time histograms: each step adds to the window's,
        # which are folded into the whole run's at every report.
        self._window = LatencyHistogram()
        self._sensor_window = LatencyHistogram()
        self._step_window = LatencyHistogram()
        self._total = LatencyHistogram()
        self._sensor_total = LatencyHistogram()
        self._step_total = LatencyHistogram()
        self._tick_late = LatencyHistogram()
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.steps = 0
        self.commands = 0
        self.commands_unwritten = 0
        self.idle_steps = 0
        self._flushed = False
        self.merged_steps = 0
        self.ticks = 0
        self.missed_ticks = 0
        self.sink_errors = 0
        self.events_in = 0
        self.events_used = 0
        self.paused_events = 0
        self.first_step_us: int | None = None
        self.last_step_us: int | None = None
        self._end_us = math.inf  # sensor time at which duration_s is reached (set at the first step)
        self.fatal = ""

    def stop(self) -> None:
        """Ask the loop to finish (thread- and signal-safe); ``run`` returns after the current step."""
        self._stop.set()

    def pause(self) -> None:
        """Stop stepping after the current packet (thread-safe); the sinks get zero commands while paused."""
        self._running.clear()

    def resume(self) -> None:
        """Continue after :meth:`pause` (thread-safe)."""
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def warmup(self) -> None:
        """Compile (or load from cache) every numba kernel before the clock starts: the stepper, the chain
        (its ``warmup()``, else a call on an empty packet, which changes no state) and the binner (on a
        throwaway copy)."""
        self.stepper.warmup()
        chain = self.chain
        if chain is not None:
            warm = getattr(chain, "warmup", None)
            if warm is not None:
                warm()
            else:
                chain(self.binner.empty())
        self.binner.warmup()

    # -- the hot path -------------------------------------------------------------------------------------

    def _ingest(self, packet: Packet, arrival_ns: int) -> None:
        events = packet.events
        if self.on_packet is not None:
            self.on_packet(packet)
        self.events_in += len(events)
        if self.chain is not None:
            events = self.chain(events)
        self.events_used += len(events)
        for t_us, step_input in steps_of(self.binner.push(events, packet.t_end_us)):
            self._pending.append((t_us, step_input, arrival_ns, t_us))

    def _sense_clock(self, packet: Packet) -> None:
        """Live mode: keep as the sensor clock the packet that arrived earliest relative to its end time
        (its ``origin_ns`` when a network source knows when the sender handed it over)."""
        origin_ns = packet.origin_ns or packet.arrival_ns
        clock = self.clock
        if clock is None or (origin_ns - clock[0]) * self.config.speed < (packet.t_end_us - clock[1]) * 1000:
            self.clock = (origin_ns, packet.t_end_us)

    def _idle(self, last: tuple[int, int], idle_ns: int) -> None:
        """Live mode, no packet for ``idle_ms``: the sensor is silent, so sensor time is taken to have
        advanced with the wall clock (times ``speed``) since the last packet; the bins up to there complete
        (empty) and the stepper keeps stepping. Events that still arrive for that time are late: the binner
        drops and counts them (``late_events``)."""
        now = time.perf_counter_ns()
        arrival_ns, t_end_us = last
        if now - arrival_ns < idle_ns:
            return
        before = len(self._pending)
        sensor_now_us = t_end_us + int((now - arrival_ns) / 1000 * self.config.speed)
        for t_us, step_input in steps_of(self.binner.push(self.binner.empty(), sensor_now_us)):
            self._pending.append((t_us, step_input, now, t_us))
        self.idle_steps += len(self._pending) - before

    def _flush(self, arrival_ns: int) -> None:
        """End of stream: the binner's last (partial) step joins the pending steps."""
        if not self._flushed:
            self._flushed = True
            for t_us, step_input in steps_of(self.binner.flush()):
                self._pending.append((t_us, step_input, arrival_ns, t_us))

    def _run_pending(self, merge: bool) -> None:
        pending = self._pending
        max_lag_ns = int(self.config.max_lag_ms * 1e6)
        merge = merge and self.binner.merges
        while pending and not self._stop.is_set():
            if merge and len(pending) > 1:
                overdue_before = time.perf_counter_ns() - max_lag_ns
                limit_us = self._limit_us(pending[0][3])
                overdue = 0
                for t_us, _, arrival_ns, _ in pending:
                    if arrival_ns >= overdue_before:
                        break
                    overdue += 1
                    if t_us >= limit_us:  # a merge never runs past the duration
                        break
                if overdue > 1:
                    group = [pending.popleft() for _ in range(overdue)]
                    merged = self.binner.merge([g[1] for g in group])
                    pending.appendleft((group[-1][0], merged, group[0][2], group[0][3]))
                    self.merged_steps += overdue - 1
            t_us, step_input, arrival_ns, sensor_us = pending.popleft()
            self._step(t_us, step_input, arrival_ns, sensor_us)
            if t_us >= self._end_us:
                self._stop.set()

    def _step(self, t_us: int, step_input: np.ndarray, arrival_ns: int, sensor_us: int) -> None:
        started = time.perf_counter_ns()
        output = self.stepper.step(step_input)
        command = self.decode(output, t_us)
        took = time.perf_counter_ns() - started
        self.steps += 1
        if self.first_step_us is None:  # the start of the earliest bin in this step (merged or not)
            self.first_step_us = sensor_us - self.config.dt_us
            self._end_us = self._limit_us(sensor_us)
        self.last_step_us = t_us
        if command is None or self.steps % self.config.command_every_steps:
            self._step_window.add(took)
            return
        self._command_len = len(command)
        written_ns = self._write(command, t_us)
        self._step_window.add(took)  # after the write: the bookkeeping stays out of the command's latency
        if not written_ns:
            self.commands_unwritten += 1
            return
        self.commands += 1
        self._window.add(written_ns - arrival_ns)
        clock = self.clock
        if clock is not None:
            self._sensor_window.add(written_ns - clock[0] - int((sensor_us - clock[1]) * 1000 / self.config.speed))

    def _write(self, command: np.ndarray, t_us: int) -> int:
        """Write ``command`` to every sink; returns the latest write time (ns), 0 if no sink wrote it."""
        return write_to_sinks(self, command, t_us)

    def _hold(self, reader: _Reader) -> int:
        """Paused: send a zero command (as long as the last one) every 50 ms and, in live mode, drop and
        count the packets that arrive, until resumed or stopped. Returns the wall time paused (ns)."""
        start = time.perf_counter_ns()
        zero = np.zeros(self._command_len)
        live = self.config.mode == "live"
        while not self._running.is_set() and not self._stop.is_set():
            if len(zero):
                self._write(zero, self.last_step_us or 0)
            self._running.wait(0.05)
            while live:
                try:
                    item = reader.queue.get_nowait()
                except queue.Empty:
                    break
                if item is _END:  # the reader puts nothing after it, so there is room to put it back
                    reader.queue.put(item)
                    break
                self.paused_events += len(item.events)
            self._maybe_report()
        if live:  # restart the step grid at the first packet after the pause, keeping the late-event count
            late_events = self.binner.late_events
            self.binner.reset()
            self.binner.late_events = late_events
        return time.perf_counter_ns() - start

    def _limit_us(self, next_end_us: int) -> float:
        """Sensor time (µs) at which ``duration_s`` is reached (inf: no limit); before the first step, counted
        from the start of the step ending at ``next_end_us``."""
        limit = self.config.duration_s
        if limit <= 0:
            return math.inf
        first = self.first_step_us if self.first_step_us is not None else next_end_us - self.config.dt_us
        return first + limit * 1e6


    # -- scheduling ---------------------------------------------------------------------------------------

    def run(self) -> LoopReport:
        """Run until the source ends, ``stop()`` is called, the duration is reached or a sink fails for
        good. Returns the final report (also passed to ``on_report``). Call :meth:`warmup` first."""
        self._reset_counters()
        for hist in self._histograms(window=False) + self._histograms(window=True):
            hist.clear()
        self._tick_late.clear()
        self._stop.clear()
        self.clock = None
        mode = self.config.mode
        reader = _Reader(self.source, self.config.queue_packets, mode == "live", self._stop)
        self._reader = reader
        self._t_start_ns = time.perf_counter_ns()
        self._window_start = (self._t_start_ns, 0, 0)
        self._next_report_ns = self._t_start_ns + int(self.config.report_period_s * 1e9)
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(self.config.switch_interval_us / 1e6)
        reader.start()
        restore_priority = _raise_realtime_priority()
        try:
            if mode == "paced":
                self._run_paced(reader)
            else:
                self._run_unpaced(reader, merge=(mode == "live"))
        finally:
            self._stop.set()
            restore_priority()
            sys.setswitchinterval(switch_interval)
            self.source.close()
            reader.join(timeout=2.0)
        if reader.error is not None and not self.fatal:
            raise reader.error
        report = self._report(final=True)
        if self.on_report is not None:
            self.on_report(report)
        return report

    def _run_unpaced(self, reader: _Reader, merge: bool) -> None:
        live = self.config.mode == "live"
        idle_ns = int(self.config.idle_ms * 1e6) if live else 0
        wait_s = min(0.05, self.config.dt_us / 1e6 / self.config.speed) if idle_ns else 0.05
        q = reader.queue
        last = None  # live: (arrival_ns, t_end_us) of the latest packet, for idle steps
        while not self._stop.is_set():
            if not self._running.is_set():
                self._hold(reader)
                last = None
                continue
            try:
                item = q.get(timeout=wait_s)
            except queue.Empty:
                if idle_ns and last is not None:
                    self._idle(last, idle_ns)
                    self._run_pending(merge)
                self._maybe_report()
                continue
            ended = False
            while True:
                if item is _END:
                    ended = True
                    break
                if live:
                    last = (item.arrival_ns, item.t_end_us)
                    self._sense_clock(item)
                self._ingest(item, item.arrival_ns if live else time.perf_counter_ns())
                if not merge:
                    self._run_pending(merge=False)
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
            if ended:
                self._flush(time.perf_counter_ns())
            self._run_pending(merge)
            self._maybe_report()
            if ended:
                return

    def _run_paced(self, reader: _Reader) -> None:
        q = reader.queue
        held: deque[Packet] = deque()
        first = None
        while first is None and not self._stop.is_set():
            try:
                first = q.get(timeout=0.05)
            except queue.Empty:
                continue
        if first is None or first is _END:
            return
        held.append(first)
        origin_us = first.t_end_us
        tick_us = self.config.period_us
        period_ns = tick_us * 1000 / self.config.speed
        t0 = time.perf_counter_ns()
        self.clock = (t0, origin_us)
        k = 0
        ended = False
        while not self._stop.is_set():
            if not self._running.is_set():
                t0 += self._hold(reader)
                self.clock = (t0, origin_us)
            deadline = t0 + int(k * period_ns)
            wait_until(deadline, self.config.spin_us * 1000)
            now = time.perf_counter_ns()
            late = now - deadline
            self.ticks += 1
            self._tick_late.add(late)
            if late > period_ns / 2:
                self.missed_ticks += 1
            if late >= period_ns:
                skipped = int(late // period_ns)
                k += skipped
                self.ticks += skipped
                self.missed_ticks += skipped
            due_us = origin_us + k * tick_us
            # Take packets only up to the first one not due yet: the reader stays blocked on the bounded
            # queue (backpressure) instead of being drained into memory ahead of the clock.
            while not ended and (not held or held[-1].t_end_us <= due_us):
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
                if item is _END:
                    ended = True
                else:
                    held.append(item)
            while held and held[0].t_end_us <= due_us:
                packet = held.popleft()
                self._ingest(packet, t0 + int((packet.t_end_us - origin_us) * 1000 / self.config.speed))
            if ended and not held:
                self._flush(now)
            self._run_pending(merge=True)
            self._maybe_report()
            if ended and not held and not self._pending:
                return
            k += 1

    # -- driven from outside: one thread steps several loops (pipeline.app.robots' scheduler) ------------

    def begin(self, counters) -> None:
        """Start a live loop that the caller drives instead of :meth:`run` (no reader thread): it hands
        each packet to :meth:`offer` and calls :meth:`service` after each batch (and at least every
        ``idle_ms``); :meth:`finish` gives the final report. Steps, merges (``max_lag_ms`` from each packet's
        ``arrival_ns``), idle steps, latency and reports are counted exactly as :meth:`run` counts them.
        counters: where the packets the loop never got are counted (``dropped_packets``, ``dropped_events``
        attributes; e.g. a Zenoh subscription's oldest-dropped count). Pausing is not supported here."""
        if self.config.mode != "live":
            raise ValueError(f"loop: only a live loop can be driven from outside, not {self.config.mode!r}")
        self._reset_counters()
        for hist in self._histograms(window=False) + self._histograms(window=True):
            hist.clear()
        self._tick_late.clear()
        self._stop.clear()
        self.clock = None
        self._reader = counters
        self._last_packet: tuple[int, int] | None = None
        self._offered = False
        self._t_start_ns = time.perf_counter_ns()
        self._window_start = (self._t_start_ns, 0, 0)
        self._next_report_ns = self._t_start_ns + int(self.config.report_period_s * 1e9)

    def offer(self, packet: Packet) -> None:
        """Driven loop: take one packet (its ``arrival_ns`` set by the source)."""
        self._last_packet = (packet.arrival_ns, packet.t_end_us)
        self._offered = True
        self._sense_clock(packet)
        self._ingest(packet, packet.arrival_ns)

    def service(self, ended: bool = False) -> bool:
        """Driven loop: run the complete steps (merging overdue ones), the idle steps of a silent sensor, and
        a periodic report when due; ``ended``: the stream has ended (its last partial step runs). Returns
        True when the loop is done (stopped, duration reached, a sink failed for good, or ended)."""
        if ended:
            self._flush(time.perf_counter_ns())
        elif not self._offered and self._last_packet is not None and self.config.idle_ms > 0:
            self._idle(self._last_packet, int(self.config.idle_ms * 1e6))  # as run(): only when no packet came
        self._offered = False
        self._run_pending(merge=True)
        self._maybe_report()
        return ended or self._stop.is_set()

    def finish(self) -> LoopReport:
        """Driven loop: the final report (also passed to ``on_report``)."""
        self._stop.set()
        report = self._report(final=True)
        if self.on_report is not None:
            self.on_report(report)
        return report

    # -- reports ------------------------------------------------------------------------------------------

    def _maybe_report(self) -> None:
        if self.config.report_period_s <= 0 or self.on_report is None:
            return
        now = time.perf_counter_ns()
        if now < self._next_report_ns:
            return
        self.on_report(self._report(final=False))
        self._fold_window()
        self._window_start = (now, self.steps, self._stream_us())
        self._next_report_ns = now + int(self.config.report_period_s * 1e9)

    def _histograms(self, window: bool) -> list[LatencyHistogram]:
        """The latency (from arrival, from sensor time) and step-time histograms: the window's (since the
        last report) or the whole run's before the window (folded in at each report)."""
        if window:
            return [self._window, self._sensor_window, self._step_window]
        return [self._total, self._sensor_total, self._step_total]

    def _fold_window(self) -> None:
        """Add the window's histograms to the whole run's and start a new window."""
        for total, window in zip(self._histograms(window=False), self._histograms(window=True)):
            total.absorb(window)
            window.clear()

    def _stream_us(self) -> int:
        if self.first_step_us is None:
            return 0
        return self.last_step_us - self.first_step_us

    def _report(self, final: bool) -> LoopReport:
        now = time.perf_counter_ns()
        if final:
            since_ns, since_steps, since_stream = self._t_start_ns, 0, 0
            self._fold_window()
        else:
            since_ns, since_steps, since_stream = self._window_start
        hist, sensor, step = self._histograms(window=not final)
        wall_s = max(now - since_ns, 1) / 1e9
        stream_s = (self._stream_us() - since_stream) / 1e6
        reader = self._reader
        return LoopReport(
            final=final,
            mode=self.config.mode,
            wall_s=wall_s,
            stream_s=stream_s,
            steps=self.steps,
            steps_per_s=(self.steps - since_steps) / wall_s,
            real_time_factor=stream_s / wall_s,
            commands=self.commands,
            commands_unwritten=self.commands_unwritten,
            latency_p50_ms=hist.percentile_ms(50),
            latency_p99_ms=hist.percentile_ms(99),
            latency_max_ms=hist.max_ms,
            merged_steps=self.merged_steps,
            idle_steps=self.idle_steps,
            late_events=self.binner.late_events,
            dropped_packets=reader.dropped_packets,
            dropped_events=reader.dropped_events,
            ticks=self.ticks,
            missed_ticks=self.missed_ticks,
            tick_late_p99_us=self._tick_late.percentile_ms(99) * 1000,
            sink_errors=self.sink_errors,
            events_in=self.events_in,
            events_used=self.events_used,
            fatal=self.fatal,
            paused_events=self.paused_events,
            sensor_latency_p50_ms=sensor.percentile_ms(50),
            sensor_latency_p99_ms=sensor.percentile_ms(99),
            sensor_latency_max_ms=sensor.max_ms,
            step_time_p50_us=step.percentile_ms(50) * 1000,
            step_time_p99_us=step.percentile_ms(99) * 1000,
            step_time_max_us=step.max_ms * 1000,
        )


def write_to_sinks(owner, command: np.ndarray, t_us: int) -> int:
    """Write ``command`` to every sink of ``owner`` (a Loop or a CommandRelay: ``sinks``, ``sink_errors``,
    ``fatal``, ``_stop``); returns the latest write time (ns), 0 if no sink wrote it. A failing sink is counted
    and reported; a SinkFatalError also sets ``fatal`` and stops the owner (the motor layer's own watchdog
    keeps the robot safe either way)."""
    written_ns = 0
    for sink in owner.sinks:
        try:
            written_ns = max(written_ns, sink.write(command, t_us))
        except SinkFatalError as exc:
            owner.sink_errors += 1
            owner.fatal = f"{sink.name}: {exc}"
            owner._stop.set()
        except Exception:
            owner.sink_errors += 1
    return written_ns
