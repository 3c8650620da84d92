"""Intracortical recordings with kinematics as binned data: one opener for every BCI file format.

DAD .mat files (recordings.dad) and MC_Maze trial CSVs (recordings.mc_maze) both become a
:class:`recordings.neural.BinnedData` (counts (T, n_units), kinematics (T, d), bin width in µs).
"""
from __future__ import annotations

from pathlib import Path

from recordings import dad, mc_maze
from recordings.dad import load_dad
from recordings.mc_maze import load_mc_maze
from recordings.neural import BinnedData


def open_binned(path: str | Path, *, block: str = "te", bin_ms: float | None = None,
                rates: bool = False) -> BinnedData:
    """Binned data from a DAD .mat file (``block`` "te" = Yte/Xte, "tr" = Ytr/Xtr) or an MC_Maze CSV
    (binned at ``bin_ms``, hand velocity). bin_ms None: the format's default. ``rates``
    (DAD): Y holds firing rates (spikes/s), turned into whole counts per bin (recordings.neural.rates_to_counts)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return load_mc_maze(path).binned(bin_ms or mc_maze.DEFAULT_BIN_MS)
    return load_dad(path, block, bin_ms=bin_ms or dad.DEFAULT_BIN_MS, rates=rates)
