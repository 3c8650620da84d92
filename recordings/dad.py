"""DAD-layout binned neural data (KordingLab/DAD .mat files, MATLAB v5 via scipy.io.loadmat).

Variables: ``Ytr``/``Yte`` spike counts or rates [time bins x units], ``Xtr``/``Xte`` 2-D hand velocity
[time bins x 2], optionally ``Ttr``/``Tte`` target index per bin. Which block is the "training" one is
documented inconsistently upstream, so blocks are addressed by their variable suffix ("tr", "te").
The files do not record their bin width; ``bin_ms`` (default 50 ms, Glaser et al.'s M1 setting) only
sets the time base of the replayed spike stream.

``DadSource`` replays a block as AER spikes (SPIKE_DTYPE, channel = unit column) through the pipeline
Source interface: the c spikes of a unit in a bin are spread evenly over the bin, so binning the stream at
the same width gives back exactly the stored counts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.packet import StreamInfo
from recordings.base import RecordingError, not_a_file
from recordings.neural import BinnedData, counts_to_spikes, rates_to_counts
from recordings.spike_array import SpikeArraySource

#: Bin width assumed when the caller does not give one (ms).
DEFAULT_BIN_MS = 50.0
#: Largest value a Y variable may hold (a count or a rate per bin): beyond it the file is damaged.
MAX_Y_VALUE = 1e6
BLOCKS = ("tr", "te")


def _variable(path: Path, mat: dict, name: str) -> np.ndarray:
    if name not in mat:
        present = sorted(k for k in mat if not k.startswith("__"))
        raise RecordingError(path, f"missing variable '{name}' (DAD layout needs Y{{tr,te}} [time x units] "
                                   f"and X{{tr,te}} [time x 2]; the file has {present})")
    arr = np.asarray(mat[name])
    if arr.dtype.kind not in "biuf":
        raise RecordingError(path, f"variable '{name}' is not numeric (dtype {arr.dtype})")
    return arr


def _check_finite(path: Path, name: str, arr: np.ndarray) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise RecordingError(path, f"variable '{name}' has {int(bad.sum())} NaN/inf values (first at row {r}, column {c})")


def load_dad(path: str | Path, block: str = "te", bin_ms: float = DEFAULT_BIN_MS, rates: bool = False) -> BinnedData:
    """One block (``"tr"`` or ``"te"``) of a DAD .mat file as BinnedData (counts (T, n_units),
    kinematics = hand velocity (T, 2), targets (T,) if the file has them). ``rates``: Y holds firing
    rates (spikes/s) over ``bin_ms`` bins, turned into whole counts by
    :func:`recordings.neural.rates_to_counts` (a DAD file stored as rates can then be replayed as spikes)."""
    from scipy.io import loadmat  # a third-party import paid only when a .mat file is read

    path = Path(path)
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
    if not path.is_file():
        raise RecordingError(path, not_a_file(path))
    if not bin_ms > 0:
        raise ValueError(f"bin width must be > 0 ms, got {bin_ms}")
    try:
        mat = loadmat(str(path))
    except Exception as exc:  # scipy raises several types for non-MATLAB input
        raise RecordingError(path, f"not a readable MATLAB .mat file ({exc})", 0) from None
    y_name, x_name, t_name = f"Y{block}", f"X{block}", f"T{block}"
    Y, X = _variable(path, mat, y_name), _variable(path, mat, x_name)
    if Y.ndim == 2 and Y.shape[0] == 1 and X.ndim == 2 and X.shape[0] > 1:
        raise RecordingError(path, f"variable '{y_name}' is a single row of {Y.shape[1]} values: expected [time x "
                                   f"units], one row per bin of '{x_name}' ({X.shape[0]} rows)")
    if Y.ndim != 2 or Y.shape[0] == 0 or Y.shape[1] == 0:
        raise RecordingError(path, f"variable '{y_name}' must be a non-empty 2-D [time x units] array, got shape {Y.shape}")
    if X.ndim != 2 or X.shape != (Y.shape[0], 2):
        raise RecordingError(path, f"variable '{x_name}' must be [time x 2] hand velocity with {Y.shape[0]} rows "
                                   f"like '{y_name}', got shape {X.shape}")
    _check_finite(path, y_name, Y.astype(np.float64))
    _check_finite(path, x_name, X.astype(np.float64))
    if np.any(Y < 0):
        raise RecordingError(path, f"variable '{y_name}' has negative spike counts")
    if Y.max() > MAX_Y_VALUE:
        row, unit = np.unravel_index(int(np.argmax(Y)), Y.shape)
        raise RecordingError(path, f"variable '{y_name}' row {row}, unit {unit}: {float(Y[row, unit]):.4g} is not a "
                                   f"spike count or rate (above {MAX_Y_VALUE:g} per bin)")
    targets = None
    if t_name in mat:
        T = _variable(path, mat, t_name).ravel()
        if T.shape != (Y.shape[0],):
            raise RecordingError(path, f"variable '{t_name}' must have one target per bin ({Y.shape[0]}), got shape {np.shape(mat[t_name])}")
        bad = ~np.isfinite(T.astype(np.float64)) | (T != np.round(T)) | (np.abs(T) > 2**31)
        if bad.any():
            raise RecordingError(path, f"variable '{t_name}' has {int(bad.sum())} values that are not target indices "
                                       f"(first at bin {int(np.argmax(bad))}: {T[np.argmax(bad)]!r})")
        targets = T.astype(np.int64)
    bin_us = int(round(bin_ms * 1000))
    counts = Y.astype(np.float64)
    if rates:
        counts = rates_to_counts(counts, bin_us)
    return BinnedData(counts, X.astype(np.float64), bin_us, f"{path}:{y_name}/{x_name}", ("vel_x", "vel_y"), targets)


class DadSource(SpikeArraySource):
    """Replays one DAD block as AER spikes from sensor time 0 (``t_start_us``). path, block ("tr"/"te"),
    bin_ms: see ``load_dad``; speed/fast/loop/chunk_us: see SpikeArraySource. ``data`` holds the binned block
    (its kinematics are the truth a decoder of the replay is scored against)."""

    def __init__(self, path: str | Path, block: str = "te", bin_ms: float = DEFAULT_BIN_MS, *,
                 speed: float = 1.0, fast: bool = False, loop: bool = False, chunk_us: int = 1000,
                 rates: bool = False):
        self.data = load_dad(path, block, bin_ms, rates=rates)
        try:
            events = counts_to_spikes(self.data.counts, self.data.bin_us)
        except ValueError as exc:
            raise RecordingError(path, f"variable 'Y{block}': {exc}") from None
        info = StreamInfo(kind="spikes", channels=self.data.n_units, name=f"{Path(path).name}:Y{block}")
        super().__init__(events, info, t_start_us=0, t_end_us=len(self.data) * self.data.bin_us,
                         speed=speed, fast=fast, loop=loop, chunk_us=chunk_us)
