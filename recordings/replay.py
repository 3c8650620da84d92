"""Replay any supported recording as a :class:`pipeline.core.packet.Source`.

The recording is re-chunked into packets covering ``chunk_us`` of sensor time each (aligned to the
start time; silent intervals give empty packets so sensor time keeps advancing). Packet k covers
``[t0 + k*chunk_us, t0 + (k+1)*chunk_us)`` and carries ``t_end_us = t0 + (k+1)*chunk_us``: every event
with a timestamp below ``t_end_us`` has been delivered.

Pacing: packet k is released when its window has elapsed on a monotonic clock
(``started_ns + (t_end_us - t0) * 1000 / speed``), by sleeping until shortly before the deadline and
spinning the rest, so releases land within ~0.1 ms of schedule on an idle core. A consumer that falls
behind gets the late packets at once (the schedule never drifts). ``fast=True`` releases immediately.

Looping replays the file again with timestamps shifted by whole windows so they keep increasing.
Memory is bounded by one reader chunk plus one window of events.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.core.clock import wait_until
from pipeline.core.events import DVS_EVENT_DTYPE
from pipeline.core.packet import Packet, StreamInfo
from recordings.aedat4_writer import dvs_layout
from recordings.detect import open_recording

#: Events per reader chunk during replay (1 MiB): keeps decode bursts between packets short.
REPLAY_CHUNK_EVENTS = 1 << 16


class ReplaySource:
    """A recording streamed as packets of ``chunk_us`` sensor time (µs).

    speed: sensor seconds per wall second (paced mode). fast: ignore the clock.
    loop: start again at the end, timestamps keep increasing (the stream never ends).
    start_us: skip to this offset (µs) after the recording's first event. strict: raise on damage.
    """

    def __init__(
        self,
        path: str | Path,
        speed: float = 1.0,
        fast: bool = False,
        loop: bool = False,
        start_us: int | None = None,
        chunk_us: int = 1000,
        strict: bool = False,
    ):
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        if chunk_us < 1:
            raise ValueError(f"chunk_us must be >= 1 µs, got {chunk_us}")
        if start_us is not None and start_us < 0:
            raise ValueError(f"start_us must be >= 0, got {start_us}")
        self.path = Path(path)
        self.speed = float(speed)
        self.fast = bool(fast)
        self.loop = bool(loop)
        self.start_us = int(start_us or 0)
        self.chunk_us = int(chunk_us)
        self.reader = open_recording(self.path, strict=strict, chunk_events=REPLAY_CHUNK_EVENTS)
        header = self.reader.header
        self.info = StreamInfo("dvs", header.width, header.height, name=self.path.name)
        #: Sensor time (µs) of the first window's start; set when the first event is seen.
        self.t0_us: int | None = None
        #: perf_counter_ns() at which sensor time t0_us was "now"; set when streaming starts.
        self.started_ns: int | None = None
        self.loops_completed = 0

    def scheduled_ns(self, t_end_us: int) -> int:
        """Wall time (perf_counter_ns) at which the packet ending at ``t_end_us`` is due (paced mode)."""
        return self.started_ns + round((t_end_us - self.t0_us) * 1000 / self.speed)

    def _pass_chunks(self) -> Iterator[np.ndarray]:
        """One pass over the file: event chunks at or after the start offset (original timestamps)."""
        first: int | None = None
        for chunk in self.reader.chunks():
            if first is None:
                first = int(chunk["timestamp"][0])
            begin = first + self.start_us
            if chunk["timestamp"][-1] < begin:
                continue
            if chunk["timestamp"][0] < begin:
                chunk = chunk[np.searchsorted(chunk["timestamp"], begin):]
            yield dvs_layout(chunk)

    def _windows(self) -> Iterator[tuple[np.ndarray, int]]:
        """(events, t_end_us) per window, across loops. Pass i is shifted so that its first event
        opens the window right after the previous pass's last window."""
        window_end: int | None = None
        while True:
            offset: int | None = None
            pending = np.zeros(0, dtype=DVS_EVENT_DTYPE)
            for chunk in self._pass_chunks():
                if offset is None:
                    first = int(chunk["timestamp"][0])
                    if window_end is None:
                        self.t0_us = first
                        window_end = first + self.chunk_us
                    offset = window_end - self.chunk_us - first
                if offset:
                    chunk = chunk.copy()
                    chunk["timestamp"] += offset
                pending = np.concatenate((pending, chunk), dtype=DVS_EVENT_DTYPE) if len(pending) else chunk
                last = int(pending["timestamp"][-1])
                if window_end > last:
                    continue
                ends = np.arange(window_end, last + 1, self.chunk_us, dtype=np.int64)
                cuts = np.searchsorted(pending["timestamp"], ends)
                begin = 0
                for end, cut in zip(ends.tolist(), cuts.tolist()):
                    yield pending[begin:cut], end
                    begin = cut
                pending = pending[begin:]
                window_end = int(ends[-1]) + self.chunk_us
            if offset is None:
                return
            yield pending, window_end
            window_end += self.chunk_us
            if not self.loop:
                return
            self.loops_completed += 1

    def packets(self) -> Iterator[Packet]:
        """Yield packets in sensor-time order, released on schedule (or at once with ``fast``)."""
        for events, t_end_us in self._windows():
            if self.started_ns is None:
                self.started_ns = time.perf_counter_ns()
            if not self.fast:
                wait_until(self.scheduled_ns(t_end_us))
            yield Packet(events, t_end_us)

    def close(self) -> None:
        """Close the underlying reader. Safe to call twice."""
        self.reader.close()

    def __enter__(self) -> "ReplaySource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
