"""Replay a labelled folder (or one recording) sample by sample, on one timeline, as a classifier sees it.

Each recording becomes one *sample slot* on a continuous sensor-time axis whose origin is 0: slot k starts
at ``start_us`` (a multiple of ``bin_us``) with the recording's first event, holds the events of its full
``bin_us`` steps only (as tonic's ToFrame and :func:`pipeline.train.present.present_file`: the partial last
bin is dropped; with ``duration_us`` exactly ``duration_us // bin_us`` steps), then ``tail_steps`` empty
steps, and ends at ``end_us`` where slot k + 1 starts. A recording without a full step still gets one
(empty) step, so every sample is decided. Timestamps are shifted by ``start_us - first event``.

Packets cover ``chunk_us`` of sensor time inside a slot (the last one of a slot ends at ``end_us``, so a
binner with t0 = 0 completes exactly the slot's steps before the next slot's first event arrives). The
:class:`SampleSlot` of a recording is appended to :attr:`SampleReplaySource.slots` before its first packet
is yielded, so a consumer stepping the binned stream always finds the slot of the step it runs.

Recordings are read whole, one at a time (at most ``MAX_EVENTS`` events each); damage is an error naming
the file (strict readers). Pacing as :class:`recordings.replay.ReplaySource`: ``fast`` releases packets at
once, otherwise each when its window has elapsed at ``speed``.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.clock import wait_until
from pipeline.core.events import DVS_EVENT_DTYPE
from pipeline.core.packet import Packet, StreamInfo
from recordings.aedat4_writer import dvs_layout
from recordings.base import RecordingError
from recordings.detect import open_recording

#: A recording with more events than this is not replayed as one sample (bounds memory per sample).
MAX_EVENTS = 50_000_000


@dataclass(frozen=True)
class SampleSlot:
    """Where sample ``index`` (recording ``path``, class index ``label``, -1 unknown) lies on the timeline:
    its steps are ``[start_us, end_us)`` in ``n_steps`` steps of the source's ``bin_us``."""

    index: int
    path: Path
    label: int
    start_us: int
    end_us: int
    n_steps: int

    @property
    def name(self) -> str:
        return self.path.stem


class SampleReplaySource:
    """Recordings ``paths`` (with class indices ``labels``, or None) replayed one after another as DVS events.

    bin_us: the step the slots align to (µs, the model's). duration_us: present this much of each recording
    (0 = its full steps). tail_steps: empty steps after each. chunk_us: packet length (µs). speed, fast:
    pacing. Sensor size: the first recording's; every recording must have it.
    """

    def __init__(self, paths: Sequence[str | Path], labels: Sequence[int] | None = None, *, bin_us: int = 1000,
                 duration_us: int = 0, tail_steps: int = 0, chunk_us: int = 1000, speed: float = 1.0,
                 fast: bool = False):
        if not paths:
            raise ValueError("no recordings to replay")
        if labels is not None and len(labels) != len(paths):
            raise ValueError(f"{len(labels)} labels for {len(paths)} recordings")
        if bin_us < 1 or chunk_us < 1 or duration_us < 0 or tail_steps < 0 or not speed > 0:
            raise ValueError("bin_us and chunk_us must be >= 1 µs, duration_us and tail_steps >= 0, speed > 0")
        self.paths = tuple(Path(p) for p in paths)
        self.labels = tuple(int(x) for x in labels) if labels is not None else (-1,) * len(self.paths)
        self.bin_us, self.duration_us, self.tail_steps = int(bin_us), int(duration_us), int(tail_steps)
        self.chunk_us, self.speed, self.fast = int(chunk_us), float(speed), bool(fast)
        try:
            with open_recording(self.paths[0], strict=True) as reader:
                header = reader.header
        except RecordingError as error:
            raise ValueError(f"{self.paths[0]}: {error}") from None
        self.info = StreamInfo("dvs", header.width, header.height, name=self.paths[0].parent.name)
        #: Slots of the samples streamed so far (appended before a sample's first packet).
        self.slots: list[SampleSlot] = []
        self._closed = False

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, path: Path) -> np.ndarray:
        chunks, total = [], 0
        try:
            with open_recording(path, strict=True) as reader:
                if (reader.header.width, reader.header.height) != (self.info.width, self.info.height):
                    raise ValueError(f"{path}: sensor {reader.header.width}x{reader.header.height}, the first "
                                     f"recording's is {self.info.width}x{self.info.height}")
                for chunk in reader.chunks():
                    total += len(chunk)
                    if total > MAX_EVENTS:
                        raise ValueError(f"{path}: more than {MAX_EVENTS} events; too long to replay as one sample")
                    chunks.append(dvs_layout(chunk))
        except RecordingError as error:
            raise ValueError(f"{path}: {error}") from None
        return np.concatenate(chunks, dtype=DVS_EVENT_DTYPE) if chunks else np.zeros(0, DVS_EVENT_DTYPE)

    def _slot(self, index: int, start_us: int, events: np.ndarray) -> tuple[SampleSlot, np.ndarray]:
        """The slot of a recording starting at ``start_us`` and its events shifted onto it (full steps only)."""
        if len(events):
            first = int(events["timestamp"][0])
            span = int(events["timestamp"][-1]) - first
            full = self.duration_us // self.bin_us if self.duration_us else span // self.bin_us
            events = events[events["timestamp"] - first < full * self.bin_us].copy()
            events["timestamp"] += start_us - first
        else:
            full = self.duration_us // self.bin_us
        n_steps = max(1, full + self.tail_steps)
        end_us = start_us + n_steps * self.bin_us
        return SampleSlot(index, self.paths[index], self.labels[index], start_us, end_us, n_steps), events

    def packets(self) -> Iterator[Packet]:
        """Every sample's packets in order (see the module docstring)."""
        started_ns = None
        start_us = 0
        for index, path in enumerate(self.paths):
            if self._closed:
                return
            slot, events = self._slot(index, start_us, self._read(path))
            self.slots.append(slot)
            ends = np.arange(slot.start_us + self.chunk_us, slot.end_us, self.chunk_us, dtype=np.int64)
            ends = np.append(ends, slot.end_us)
            cuts = np.searchsorted(events["timestamp"], ends)
            begin = 0
            for end, cut in zip(ends.tolist(), cuts.tolist()):
                if started_ns is None:
                    started_ns = time.perf_counter_ns()
                if not self.fast:
                    wait_until(started_ns + round(end * 1000 / self.speed))
                yield Packet(events[begin:cut], end)
                begin = cut
            start_us = slot.end_us

    def close(self) -> None:
        """Stop after the current sample. Safe to call twice."""
        self._closed = True
