"""Wiener filter: kinematics as a linear function of the lagged binned counts (least squares or ridge).

    y_t = b + sum_{k=0}^{h-1} W_k z_{t-lag-k}

z are z-scored counts of the units active in training (z-scoring does not change the least-squares
predictions; it makes the ridge penalty treat units alike). With ridge = 0 this is ordinary least squares
with an intercept, the model of Neural_Decoding's WienerFilterRegression (sklearn LinearRegression).
"""
from __future__ import annotations

import numpy as np

try:  # optional: OpenBLAS threads fight each other on a loaded 2-core machine (eigh 10x slower)
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - only without scikit-learn's dependency installed
    threadpool_limits = None

from pipeline.decoders.bci.features import (
    BCIInputError,
    UnitScaler,
    check_counts,
    check_kinematics,
    lagged,
)
from pipeline.decoders.bci.linear import LTIDecoder


def fit_linear(F: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Least squares (ridge >= 0 on the centred problem) of y (T, d) on features F (T, p) with an
    intercept; returns coef (p, d) and intercept (d,)."""
    f_mean, y_mean = F.mean(axis=0), y.mean(axis=0)
    Fc, yc = F - f_mean, y - y_mean
    if ridge > 0:
        coef = np.linalg.solve(Fc.T @ Fc + ridge * np.eye(F.shape[1]), Fc.T @ yc)
    else:
        coef = np.linalg.lstsq(Fc, yc, rcond=None)[0]
    return coef, y_mean - f_mean @ coef


#: Ridge penalties tried by ``ridge="auto"`` (z-scored features, so the scale is data-independent);
#: 10^-2..10^6, four per decade (short, sparse recordings such as an MC_Maze trial choose 10^6).
RIDGE_GRID = tuple(float(v) for v in np.logspace(-2, 6, 33))


def choose_ridge(F: np.ndarray, y: np.ndarray, grid, folds: int = 4) -> tuple[float, np.ndarray]:
    """The ridge penalty from ``grid`` with the best mean R^2 over ``folds`` contiguous inner folds of
    the training rows (F (T, p), y (T, d)); returns (ridge, mean R^2 per grid value). One eigen-
    decomposition of the centred Gram matrix per inner fold serves every grid value."""
    bounds = np.linspace(0, len(F), folds + 1).astype(int)
    scores = np.zeros(len(grid))
    for i in range(folds):
        a, b = bounds[i], bounds[i + 1]
        train = np.r_[0:a, b:len(F)]
        f_mean, y_mean = F[train].mean(axis=0), y[train].mean(axis=0)
        Fc = F[train] - f_mean
        evals, evecs = np.linalg.eigh(Fc.T @ Fc)
        proj = evecs.T @ (Fc.T @ (y[train] - y_mean))
        Fv = (F[a:b] - f_mean) @ evecs
        ss = ((y[a:b] - y[a:b].mean(axis=0)) ** 2).sum(axis=0)
        for g, ridge in enumerate(grid):
            pred = Fv @ (proj / (evals + ridge)[:, None]) + y_mean
            scores[g] += np.mean(1 - ((y[a:b] - pred) ** 2).sum(axis=0) / ss) / folds
    return float(grid[int(np.argmax(scores))]), scores


class WienerDecoder(LTIDecoder):
    """Wiener filter. history: bins per prediction (1 = current only); lag: bins back from the
    predicted one; ridge: L2 penalty on the weights of the z-scored features (0 = least squares), or
    "auto": chosen from RIDGE_GRID by contiguous 4-fold cross-validation inside the training data
    (the chosen value is then in ``ridge``)."""

    kind = "wiener"

    def __init__(self, history: int = 1, lag: int = 0, ridge: float | str = 0.0, bin_us: int = 0):
        super().__init__(history, lag, bin_us)
        self.auto_ridge = ridge == "auto"
        if not self.auto_ridge and not (isinstance(ridge, (int, float)) and ridge >= 0):
            raise ValueError(f"ridge must be a number >= 0 or 'auto', got {ridge!r}")
        self.ridge = 0.0 if self.auto_ridge else float(ridge)

    def fit(self, counts, kinematics, segments=None) -> "WienerDecoder":
        """Fit on counts (T, n_units) and kinematics (T, d); segments: contiguous [start, stop) ranges
        of the rows (history never reaches across a segment boundary)."""
        counts = check_counts(counts, what="training neural data")
        y = check_kinematics(kinematics, len(counts), "training kinematics")
        if len(counts) <= 1:
            raise BCIInputError(f"training data: need more than one bin, got {len(counts)}")
        self.scaler = UnitScaler.fit(counts, zscore=True)
        F = lagged(self.scaler.transform(counts), self.history, self.lag, segments)
        if self.auto_ridge:
            if threadpool_limits is None:
                self.ridge, _ = choose_ridge(F, y, RIDGE_GRID)
            else:
                with threadpool_limits(1, user_api="blas"):
                    self.ridge, _ = choose_ridge(F, y, RIDGE_GRID)
        coef, intercept = fit_linear(F, y, self.ridge)
        d = y.shape[1]
        G = coef.T.reshape(d, self.history, len(self.scaler.keep))
        self._set_lti(G, np.zeros((d, d)), intercept, np.zeros(d))
        return self

    def to_arrays(self) -> dict:
        arrays = super().to_arrays()
        arrays["ridge"] = np.float64(self.ridge)
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> "WienerDecoder":
        dec = cls(ridge=float(arrays["ridge"]))
        dec._load_lti(arrays)
        return dec
