"""The robot side of a loop on another host: commands received over the network -> sinks (motors).

A :class:`CommandRelay` takes every command a subscription delivers (in order; a slow relay drops the
oldest, counted) and writes it to its sinks at once; motor sinks keep their full safety layer (limits,
acceleration, watchdog, e-stop, stop on close). A silent link is a stale command: when nothing has
arrived for ``stale_ms`` (the compute host died, the network broke, the publisher was killed), or the
publisher said END, the relay writes zero velocity every 50 ms until commands come back, and logs
``command_stale`` / ``command_resumed``. The motor controller's own watchdog
(``timeout_ms``) stops the motors too if this process itself stalls.

Latency reported: transport, from the publisher's send time (its wall clock, corrected by the estimated
clock offset between the hosts when the publisher answers clock queries) to the moment the command was
written to the sinks (``latency_*_ms``).
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, fields
from typing import Callable, Sequence

import numpy as np

from devices.transport.clock_sync import estimate_offset
from pipeline.loop import LatencyHistogram, Sink, write_to_sinks

#: While stale, zero velocity is re-written this often (s).
HOLD_PERIOD_S = 0.05


@dataclass(frozen=True)
class RelayReport:
    """Relay statistics (cumulative; latencies over the whole run, ms, nan before the first command).

    received: commands taken from the subscription; written: commands some sink reported written;
    stale_events: times the command went stale (or the publisher ended); stale_s: wall time spent stale
    (zero velocity held); gaps / dropped_oldest / invalid: samples lost on the way, dropped by a slow
    relay, refused as invalid; clock_offset_us / clock_uncertainty_us: the publisher's wall clock minus
    ours (nan when it did not answer); fatal: why a sink gave up ("" while fine).
    """

    final: bool
    wall_s: float
    received: int
    written: int
    stale_events: int
    stale_s: float
    ended: int
    gaps: int
    dropped_oldest: int
    invalid: int
    sink_errors: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    clock_offset_us: float = math.nan
    clock_uncertainty_us: float = math.nan
    fatal: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """One ``key=value`` log line."""
        return " ".join(f"{f.name}={getattr(self, f.name):.4g}" if isinstance(getattr(self, f.name), float)
                        else f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))


class CommandRelay:
    """Commands of ``subscription`` (a devices.transport.zenoh_link.Subscription of command samples) ->
    ``sinks`` (objects with ``write(command float64 (n,), t_us) -> ns`` and ``close()``).

    stale_ms: a command older than this is stale: zero velocity (``zero_length`` values until a command
    has given the length) is written every 50 ms. on_report: called with a periodic (every
    ``report_period_s``, 0 = off) and a final :class:`RelayReport`; on_event(name, **fields): stale /
    resumed / ended transitions. ``run`` returns when ``stop()`` is called, a sink fails for good, or
    ``duration_s`` (wall s, 0 = none) has passed.
    """

    def __init__(self, subscription, sinks: Sequence[Sink], *, stale_ms: float = 100.0, zero_length: int = 0,
                 report_period_s: float = 1.0, duration_s: float = 0.0,
                 on_report: Callable[[RelayReport], None] | None = None,
                 on_event: Callable[..., None] | None = None, sync_clock: bool = True) -> None:
        if not stale_ms > 0:
            raise ValueError(f"stale_ms: expected a positive number, got {stale_ms}")
        self.subscription = subscription
        self.sinks = list(sinks)
        self.stale_ns = int(stale_ms * 1e6)
        self.report_period_s = report_period_s
        self.duration_s = duration_s
        self.on_report = on_report
        self.on_event = on_event or (lambda name, **fields: None)
        self.sync_clock = sync_clock
        self._zero = np.zeros(zero_length)
        self._stop = threading.Event()
        self._latency = LatencyHistogram()
        self.clock_offset = None
        self.received = self.written = self.stale_events = self.sink_errors = 0
        self.stale_ns_total = 0
        self.fatal = ""

    def warmup(self) -> None:
        """Nothing to compile (the launch command calls it on every graph)."""

    def stop(self) -> None:
        """Ask ``run`` to return (thread- and signal-safe)."""
        self._stop.set()

    def _write(self, command: np.ndarray, t_us: int) -> int:
        return write_to_sinks(self, command, t_us)

    def run(self) -> RelayReport:
        """Relay until stopped; returns the final report (also passed to ``on_report``)."""
        start = time.perf_counter_ns()
        end_ns = start + int(self.duration_s * 1e9) if self.duration_s > 0 else None
        next_report = start + int(self.report_period_s * 1e9)
        poll_s = min(self.stale_ns / 4e9, 0.01)
        last_ns = None          # arrival (perf ns) of the newest command; None: none yet, or ended
        stale_since = None      # perf ns when the command went stale; None: fresh (or none yet)
        last_hold = 0
        last_t_us = 0
        offset_ns = None
        while not self._stop.is_set():
            item = self.subscription.take(poll_s)
            now = time.perf_counter_ns()
            if item is not None:
                key, message, arrival_ns, wall_ns = item
                if message.payload is None:  # END: the compute side stopped on purpose
                    self.on_event("command_ended", key=key)
                    last_ns = None
                    if stale_since is None:
                        stale_since = now
                        self.stale_events += 1
                        last_hold = 0
                else:
                    if self.sync_clock and self.clock_offset is None and self.received == 0:
                        self.clock_offset = estimate_offset(self.subscription.session, key)
                        offset_ns = self.clock_offset.offset_ns if self.clock_offset is not None else None
                    self.received += 1
                    command = np.asarray(message.payload, dtype=np.float64)
                    last_t_us = message.header.t_end_us
                    if len(self._zero) != len(command):
                        self._zero = np.zeros(len(command))
                    written_ns = self._write(command, last_t_us)
                    if written_ns:
                        self.written += 1
                        if offset_ns is not None:
                            sent_local_wall = message.header.sent_ns - offset_ns
                            self._latency.add(wall_ns - sent_local_wall + (written_ns - arrival_ns))
                        else:
                            self._latency.add(wall_ns - message.header.sent_ns + (written_ns - arrival_ns))
                    last_ns = arrival_ns
                    if stale_since is not None:
                        self.stale_ns_total += now - stale_since
                        self.on_event("command_resumed", key=key, after_ms=(now - stale_since) / 1e6)
                        stale_since = None
            # Stale: nothing queued and nothing arrived for stale_ms (a relay catching up on a backlog
            # is not stale: the link is alive, the commands are in order).
            silent_ns = now - (self.subscription.last_sample_ns or now)
            if item is None and last_ns is not None and stale_since is None and silent_ns > self.stale_ns:
                stale_since = now
                self.stale_events += 1
                last_hold = 0
                self.on_event("command_stale", age_ms=silent_ns / 1e6, stale_ms=self.stale_ns / 1e6)
            if stale_since is not None and len(self._zero) and now - last_hold >= HOLD_PERIOD_S * 1e9:
                self._write(self._zero, last_t_us)
                last_hold = now
            if self.report_period_s > 0 and self.on_report is not None and now >= next_report:
                self.on_report(self._report(False, start, now, stale_since))
                next_report = now + int(self.report_period_s * 1e9)
            if end_ns is not None and now >= end_ns:
                break
        now = time.perf_counter_ns()
        report = self._report(True, start, now, stale_since)
        if self.on_report is not None:
            self.on_report(report)
        return report

    def _report(self, final: bool, start: int, now: int, stale_since: int | None) -> RelayReport:
        stats = self.subscription.stats()
        offset = self.clock_offset
        stale_ns = self.stale_ns_total + (now - stale_since if stale_since is not None else 0)
        return RelayReport(
            final=final, wall_s=(now - start) / 1e9, received=self.received, written=self.written,
            stale_events=self.stale_events, stale_s=stale_ns / 1e9, ended=stats["ended"], gaps=stats["gaps"],
            dropped_oldest=stats["dropped_oldest"], invalid=stats["errors"], sink_errors=self.sink_errors,
            latency_p50_ms=self._latency.percentile_ms(50), latency_p99_ms=self._latency.percentile_ms(99),
            latency_max_ms=self._latency.max_ms,
            clock_offset_us=offset.offset_ns / 1e3 if offset is not None else math.nan,
            clock_uncertainty_us=offset.rtt_ns / 2e3 if offset is not None else math.nan,
            fatal=self.fatal)
