"""What every fitted BCI decoder shares: its unit scaler, history/lag, the ring buffer of recent bins
and the online API (``reset`` / ``step``), plus conversion to and from plain arrays for .npz files."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from pipeline.decoders.bci import kernels
from pipeline.decoders.bci.features import BCIInputError, UnitScaler, check_counts

#: Largest history, lag, output count or unit count a model file may declare (its online buffers are
#: (history + lag) x units): a hostile file's 633,113,842-bin lag asked for 23.6 GiB.
MAX_MODEL_SIZE = 10_000


class BinDecoder:
    """Base of the bin-by-bin decoders. Subclasses implement ``fit``, ``_predict_rows`` and ``_step``.

    history: bins used per prediction (1 = current bin only); lag: bins between the newest bin used
    and the predicted one (0 = causal, current bin); bin_us: the bin width (µs) the model expects,
    recorded for replay (0 if unknown). After ``fit``: ``scaler`` (units used, normalisation) and
    ``n_out`` (kinematic dimensions d).
    """

    kind: ClassVar[str] = ""

    def __init__(self, history: int = 1, lag: int = 0, bin_us: int = 0):
        if history < 1:
            raise ValueError(f"history must be >= 1 bin, got {history}")
        if lag < 0:
            raise ValueError(f"lag must be >= 0 bins (a negative lag would use future bins), got {lag}")
        self.history = int(history)
        self.lag = int(lag)
        self.bin_us = int(bin_us)
        self.scaler: UnitScaler | None = None
        self.n_out = 0

    # -- fitted state -----------------------------------------------------------------------------
    @property
    def n_units(self) -> int:
        """Units per input bin the fitted model expects."""
        self._require_fit()
        return self.scaler.n_units

    def _require_fit(self) -> None:
        if self.scaler is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() or load a model first")

    def _alloc(self) -> None:
        """Allocate the online buffers once the model's sizes are known."""
        self._ring = np.zeros((self.history + self.lag, len(self.scaler.keep)))
        self._pos = np.int64(0)
        self._x = np.zeros(self.n_out)
        self._out = np.zeros(self.n_out)
        self._tmp = np.zeros(self.n_out)

    # -- online API ---------------------------------------------------------------------------------
    def reset(self, x0=None, first_counts=None) -> None:
        """Start a new stream. x0: initial kinematics (d,) for state-space decoders (default: the training
        mean). first_counts: a bin (n_units,) to load into the history without producing an output (the
        bin whose true kinematics are x0)."""
        self._require_fit()
        self._ring[:] = 0.0
        self._pos = np.int64(0)
        self._set_state(x0)
        if first_counts is not None:
            counts = self._check_bin(first_counts)
            pos = kernels.push_bin(counts, self.scaler.keep, self.scaler.mean, self.scaler.inv_scale,
                                   self._ring, self._pos)
            if pos < 0:
                raise BCIInputError("first bin: non-finite count (NaN/inf)")
            self._pos = pos

    def step(self, counts: np.ndarray) -> np.ndarray:
        """Decode one bin: counts (n_units,) float64 -> kinematics (d,) (a view, valid until the next step)."""
        pos = self._step_bin(self._check_bin(counts))
        if pos < 0:
            if pos == -1:
                raise BCIInputError("bin: non-finite count (NaN/inf) in a unit the model uses")
            raise BCIInputError("Kalman filter: singular covariance during the update (degenerate fit)")
        self._pos = pos
        return self._out

    def _check_bin(self, counts) -> np.ndarray:
        if not isinstance(counts, np.ndarray) or counts.dtype != np.float64:
            counts = np.asarray(counts, dtype=np.float64)
        if counts.shape != (self.scaler.n_units,):
            raise BCIInputError(
                f"bin: units mismatch: the model expects counts of shape ({self.scaler.n_units},), got {counts.shape}"
            )
        return counts

    def predict(self, counts, x0=None) -> np.ndarray:
        """Decode a block of bins (T, n_units) causally from a fresh state -> (T, d).

        With x0 (state-space decoders): the first output is x0 and bin 0 only fills the history, as
        Neural_Decoding's Kalman filter does; otherwise every bin is decoded from the default state.
        """
        self._require_fit()
        counts = check_counts(counts, self.scaler.n_units)
        out = np.zeros((len(counts), self.n_out))
        if len(counts) == 0:
            return out
        self._ring[:] = 0.0
        self._set_state(x0)
        first = 0
        pos = np.int64(0)
        if x0 is not None and self.uses_initial_state:
            pos = kernels.push_bin(counts[0], self.scaler.keep, self.scaler.mean, self.scaler.inv_scale,
                                   self._ring, pos)
            out[0] = np.asarray(x0, dtype=np.float64)
            first = 1
        status = self._predict_rows(counts, first, pos, out)
        if status <= -2:
            raise BCIInputError(f"neural data: non-finite value (NaN/inf) at bin {-2 - status}")
        if status == -1:
            raise BCIInputError("Kalman filter: singular covariance during the update (degenerate fit)")
        self._pos = np.int64(status)
        return out

    # -- subclass hooks -----------------------------------------------------------------------------
    uses_initial_state: ClassVar[bool] = False

    @property
    def context_bins(self) -> int:
        """Bins before a block that a decoder already running would have seen and that its output on the
        block's first bin depends on (history + lag - 1 for the lagged filters; 0 for state-space
        decoders, which start from true kinematics instead). ``bci eval`` decodes them before each
        held-out fold (neural counts only, never kinematics: still causal) and scores only the fold."""
        return 0 if self.uses_initial_state else self.history + self.lag - 1

    def _set_state(self, x0) -> None:
        self._x[:] = 0.0

    def _step_bin(self, counts: np.ndarray) -> int:
        """Push one checked bin and update; returns the new ring position or a negative error code."""
        raise NotImplementedError

    def _predict_rows(self, counts, first, pos, out) -> int:
        raise NotImplementedError

    # -- persistence --------------------------------------------------------------------------------
    def to_arrays(self) -> dict:
        """Everything needed to rebuild the fitted decoder, as plain numpy arrays (no objects)."""
        self._require_fit()
        s = self.scaler
        return {
            "kind": np.array(self.kind), "history": np.int64(self.history), "lag": np.int64(self.lag),
            "bin_us": np.int64(self.bin_us), "n_out": np.int64(self.n_out), "n_units": np.int64(s.n_units),
            "keep": s.keep, "mean": s.mean, "inv_scale": s.inv_scale,
        }

    def _load_base(self, arrays) -> None:
        sizes = {key: int(arrays[key]) for key in ("history", "lag", "n_out", "n_units")}
        for key, value in sizes.items():  # a file's sizes decide the online buffers: bound them first
            if not 0 <= value <= MAX_MODEL_SIZE:
                raise BCIInputError(f"array '{key}' is {value}, expected 0 .. {MAX_MODEL_SIZE:,}")
        self.history = sizes["history"]
        self.lag = sizes["lag"]
        self.bin_us = int(arrays["bin_us"])
        self.n_out = sizes["n_out"]
        self.scaler = UnitScaler(int(arrays["n_units"]), np.asarray(arrays["keep"], dtype=np.int64),
                                 np.asarray(arrays["mean"], dtype=np.float64),
                                 np.asarray(arrays["inv_scale"], dtype=np.float64))


def weights_shape_check(name: str, arr: np.ndarray, shape: tuple) -> np.ndarray:
    """A stored weight array as float64 with the expected shape, or a BCIInputError naming it."""
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape != shape:
        raise BCIInputError(f"model array '{name}': expected shape {shape}, got {arr.shape}")
    return arr
