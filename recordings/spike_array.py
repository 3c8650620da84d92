"""An in-memory AER spike array replayed as a :class:`pipeline.core.packet.Source`, paced or as fast as possible.

Used by the neural recordings (recordings.dad, recordings.mc_maze): they decode their file into a
SPIKE_DTYPE array once (these files are small: minutes of binned data, seconds of 1 ms rows) and replay it.
"""
from __future__ import annotations

import time
from typing import Iterator

import numpy as np

from pipeline.core.events import SPIKE_DTYPE
from pipeline.core.packet import Packet, StreamInfo


class SpikeArraySource:
    """Replay ``events`` (SPIKE_DTYPE, sorted by timestamp, µs) in packets of ``chunk_us`` sensor time.

    t_start_us / t_end_us: the span of the stream (t_end_us exclusive; packets keep advancing sensor time
    through silence up to it); speed: sensor-time / wall-time ratio when paced; fast: no pacing;
    loop: start over at the end (sensor time keeps increasing by the span each pass).
    """

    def __init__(self, events: np.ndarray, info: StreamInfo, *, t_start_us: int, t_end_us: int,
                 speed: float = 1.0, fast: bool = False, loop: bool = False, chunk_us: int = 1000):
        if events.dtype != SPIKE_DTYPE:
            raise TypeError(f"expected SPIKE_DTYPE events, got {events.dtype}")
        if len(events) and np.any(np.diff(events["timestamp"]) < 0):
            raise ValueError(f"{info.name}: spike timestamps are not sorted")
        if chunk_us <= 0:
            raise ValueError(f"chunk_us must be > 0, got {chunk_us}")
        if not fast and not speed > 0:
            raise ValueError(f"speed must be > 0 when paced, got {speed}")
        if t_end_us <= t_start_us:
            raise ValueError(f"{info.name}: empty time span [{t_start_us}, {t_end_us}) µs")
        self.events = events
        self.info = info
        self.t_start_us = int(t_start_us)
        self.t_end_us = int(t_end_us)
        self.speed = float(speed)
        self.fast = bool(fast)
        self.loop = bool(loop)
        self.chunk_us = int(chunk_us)
        self._closed = False

    def packets(self) -> Iterator[Packet]:
        """Packets covering [t, t + chunk_us) each (the last one up to the span's end), released when their
        window has elapsed (paced); ``t_end_us`` = t + chunk_us: every spike before it has been delivered."""
        span = self.t_end_us - self.t_start_us
        bounds = np.append(np.arange(self.t_start_us, self.t_end_us, self.chunk_us), self.t_end_us)
        cuts = np.searchsorted(self.events["timestamp"], bounds, side="left")
        wall0 = time.perf_counter_ns()
        shift = 0
        while not self._closed:
            for i in range(len(bounds) - 1):
                if self._closed:
                    return
                t_end = int(bounds[i + 1]) + shift
                if not self.fast:
                    due = wall0 + int((t_end - self.t_start_us) * 1000 / self.speed)
                    delay = due - time.perf_counter_ns()
                    if delay > 0:
                        time.sleep(delay / 1e9)
                chunk = self.events[cuts[i]:cuts[i + 1]]
                if shift:
                    chunk = chunk.copy()
                    chunk["timestamp"] += shift
                yield Packet(chunk, t_end)
            if not self.loop:
                return
            shift += span

    def close(self) -> None:
        """Stop the replay (a running ``packets()`` generator ends at its next packet)."""
        self._closed = True
