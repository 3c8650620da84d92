"""MC_Maze trial CSVs (Neural Latents Benchmark, DANDI 000128): spike-level motor-cortex data.

Layout: a header row, then one row per 1 ms: ``timestamp`` [s], kinematic columns (cursor_pos_x/y,
eye_pos_x/y, hand_pos_x/y, hand_vel_x/y) and one 0/1 spike column per unit named ``unit_XXXX``.
``load_mc_maze`` parses a file into an :class:`McMazeTrial` (timestamps in µs, kinematics as a structured
array, spikes as uint8 (T, n_units)); ``McMazeSource`` replays its spikes as AER events
(SPIKE_DTYPE, channel = unit column index) through the pipeline Source interface.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.events import SPIKE_DTYPE
from pipeline.core.packet import StreamInfo
from recordings.base import RecordingError, not_a_file
from recordings.neural import BinnedData
from recordings.spike_array import SpikeArraySource

#: Row spacing of the format (µs) and the tolerance on it (µs) when checking timestamps.
ROW_US = 1000
ROW_TOLERANCE_US = 5
#: Default decoder bin width (ms).
DEFAULT_BIN_MS = 20.0
#: Kinematic columns every file must have (others, such as eye position, are kept if present).
REQUIRED_KINEMATICS = ("hand_vel_x", "hand_vel_y")


@dataclass(frozen=True)
class McMazeTrial:
    """path; t_us: int64 (T,) row timestamps (µs); kinematics: structured float64 array (T,) with one
    field per kinematic column; units: unit column names (n_units,); spikes: uint8 (T, n_units)."""

    path: Path
    t_us: np.ndarray
    kinematics: np.ndarray
    units: tuple[str, ...]
    spikes: np.ndarray

    @property
    def duration_s(self) -> float:
        """Length of the trial: rows x 1 ms (s)."""
        return len(self.t_us) * ROW_US / 1e6

    @property
    def n_units(self) -> int:
        return len(self.units)

    def spike_events(self) -> np.ndarray:
        """All spikes as an AER array (SPIKE_DTYPE), sorted by time; a row with count c gives c spikes."""
        rows, units = np.nonzero(self.spikes)
        reps = self.spikes[rows, units].astype(np.int64)
        out = np.empty(int(reps.sum()), dtype=SPIKE_DTYPE)
        out["timestamp"] = np.repeat(self.t_us[rows], reps)
        out["channel"] = np.repeat(units, reps)
        return out

    def binned(self, bin_ms: float = DEFAULT_BIN_MS, axes: tuple[str, ...] = REQUIRED_KINEMATICS) -> BinnedData:
        """Spike counts per bin (sum of rows) and the mean of the ``axes`` kinematic columns per bin;
        a trailing partial bin is dropped."""
        rows = int(round(bin_ms * 1000 / ROW_US))
        if rows < 1 or abs(rows * ROW_US - bin_ms * 1000) > 1e-6:
            raise ValueError(f"bin width must be a whole number of 1 ms rows, got {bin_ms} ms")
        n = len(self.t_us) // rows
        if n == 0:
            raise RecordingError(self.path, f"trial shorter ({len(self.t_us)} ms) than one {bin_ms} ms bin")
        for name in axes:
            if name not in self.kinematics.dtype.names:
                raise RecordingError(self.path, f"no kinematic column '{name}' (has {self.kinematics.dtype.names})")
        counts = self.spikes[:n * rows].reshape(n, rows, -1).sum(axis=1).astype(np.float64)
        kin = np.stack([self.kinematics[a][:n * rows].reshape(n, rows).mean(axis=1) for a in axes], axis=1)
        return BinnedData(counts, kin, rows * ROW_US, f"{self.path}:{'/'.join(axes)}", tuple(axes))


def _header(path: Path) -> list[str]:
    with open(path, "r", newline="") as f:
        line = f.readline()
    if not line:
        raise RecordingError(path, "file is empty", 0)
    return [c.strip() for c in line.strip().split(",")]


def load_mc_maze(path: str | Path) -> McMazeTrial:
    """Parse one MC_Maze trial CSV; errors name the file, column and row."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(path, not_a_file(path))
    names = _header(path)
    if not names or names[0] != "timestamp":
        raise RecordingError(path, f"first column must be 'timestamp' [s], got {names[:1]}", 0)
    unit_cols = [i for i, n in enumerate(names) if n.startswith("unit_")]
    kin_cols = [i for i, n in enumerate(names) if i > 0 and not n.startswith("unit_")]
    if not unit_cols:
        raise RecordingError(path, "no 'unit_XXXX' spike columns in the header", 0)
    for req in REQUIRED_KINEMATICS:
        if req not in names:
            raise RecordingError(path, f"missing column '{req}' (expected {REQUIRED_KINEMATICS} in the header)", 0)
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except ValueError as exc:
        raise RecordingError(path, f"unreadable row: {exc}") from None
    if table.shape[1] != len(names):
        raise RecordingError(path, f"rows have {table.shape[1]} columns, the header names {len(names)}")
    if len(table) == 0:
        raise RecordingError(path, "no data rows after the header")
    for i in [0] + unit_cols + [names.index(r) for r in REQUIRED_KINEMATICS]:
        bad = np.flatnonzero(~np.isfinite(table[:, i]))
        if len(bad):
            raise RecordingError(path, f"column '{names[i]}' has {len(bad)} NaN/inf values (first at data row {bad[0] + 1})")
    t_us = np.round(table[:, 0] * 1e6).astype(np.int64)
    steps = np.diff(t_us)
    off = np.flatnonzero(np.abs(steps - ROW_US) > ROW_TOLERANCE_US)
    if len(off):
        raise RecordingError(path, f"rows must be {ROW_US} µs apart; data row {off[0] + 2} is "
                                   f"{steps[off[0]]} µs after the previous one")
    spikes = table[:, unit_cols]
    if np.any(spikes < 0) or np.any(spikes != np.round(spikes)) or np.any(spikes > 255):
        r, c = np.argwhere((spikes < 0) | (spikes != np.round(spikes)) | (spikes > 255))[0]
        raise RecordingError(path, f"column '{names[unit_cols[c]]}' data row {r + 1}: spike counts must be "
                                   f"integers 0..255, got {spikes[r, c]}")
    kin = np.zeros(len(table), dtype=[(names[i], np.float64) for i in kin_cols])
    for i in kin_cols:
        kin[names[i]] = table[:, i]
    return McMazeTrial(path, t_us, kin, tuple(names[i] for i in unit_cols), spikes.astype(np.uint8))


class McMazeSource(SpikeArraySource):
    """Replays one MC_Maze trial's spikes as AER events in sensor time (the file's timestamps, µs; the first
    row at ``t_start_us``). speed/fast/loop/chunk_us: see SpikeArraySource. ``trial`` holds the parsed file,
    ``data`` the trial binned at ``bin_ms`` (hand velocity: the truth a decoder of the replay is scored against)."""

    def __init__(self, path: str | Path, *, bin_ms: float = DEFAULT_BIN_MS, speed: float = 1.0, fast: bool = False,
                 loop: bool = False, chunk_us: int = 1000):
        self.trial = load_mc_maze(path)
        self.data = self.trial.binned(bin_ms)
        info = StreamInfo(kind="spikes", channels=self.trial.n_units, name=Path(path).name)
        t0 = int(self.trial.t_us[0])
        super().__init__(self.trial.spike_events(), info, t_start_us=t0, t_end_us=t0 + len(self.trial.t_us) * ROW_US,
                         speed=speed, fast=fast, loop=loop, chunk_us=chunk_us)
