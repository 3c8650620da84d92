"""The source interface shared by recording replayers and live drivers.

A source is an iterator of :class:`Packet` objects: time-ordered chunks of events that carry the sensor
time they cover and the wall-clock time they were handed over (``arrival_ns``), so the loop can measure
event-to-command latency. Replayers (``recordings.replay``) and drivers (``devices``) both produce them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator, Protocol

import numpy as np


@dataclass(frozen=True)
class StreamInfo:
    """What a consumer needs to know about a stream before the first packet.

    kind: "dvs" (DVS_EVENT_DTYPE events) or "spikes" (SPIKE_DTYPE events).
    width, height: sensor resolution in pixels (DVS); channels: channel count (spikes); 0 if unknown.
    """

    kind: str
    width: int = 0
    height: int = 0
    channels: int = 0
    name: str = ""


@dataclass(frozen=True)
class Packet:
    """A time-ordered chunk of events.

    events: structured array (DVS_EVENT_DTYPE or SPIKE_DTYPE), shape (n,), timestamps in µs, sorted.
    t_end_us: sensor time up to which this packet is complete (µs); >= the last event's timestamp.
        A packet with no events still advances sensor time (the loop can step the network through silence).
    arrival_ns: ``time.perf_counter_ns()`` when the source released the packet.
    origin_ns: for a packet that crossed a network, when its sender handed it over, on this process's
        ``perf_counter_ns`` clock (the sender's wall clock corrected by the estimated clock offset between
        the hosts); 0 when unknown (then the packet's origin is its arrival).
    """

    events: np.ndarray
    t_end_us: int
    arrival_ns: int = field(default_factory=time.perf_counter_ns)
    origin_ns: int = 0

    def __len__(self) -> int:
        return len(self.events)


class Source(Protocol):
    """Anything that streams packets: a replayed recording, a camera, a simulated world."""

    info: StreamInfo

    def packets(self) -> Iterator[Packet]:
        """Yield packets in sensor-time order until the stream ends (or forever, for live sources)."""
        ...

    def close(self) -> None:
        """Release files, devices and threads. Safe to call twice."""
        ...


def concat_events(arrays: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    """Concatenate event arrays of one dtype; an empty list gives an empty array of ``dtype``."""
    if not arrays:
        return np.zeros(0, dtype=dtype)
    return np.concatenate(arrays, dtype=dtype)
