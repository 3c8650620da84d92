"""Wiener filter: kinematics as a linear function of the lagged binned counts (least squares or ridge).

    y_t = b + sum_{k=0}^{h-1} W_k z_{t-lag-k}

z are z-scored counts of the units active in training (z-scoring does not change the least-squares
predictions; it makes the ridge penalty treat units alike). With ridge = 0 this is ordinary least squares
with an intercept, the model of Neural_Decoding's WienerFilterRegression (sklearn LinearRegression).
"""
from __future__ import annotations

import numpy as np

from pipeline.decoders.bci.features import (
    BCIInputError, UnitScaler, check_counts, check_kinematics, lagged,
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


class WienerDecoder(LTIDecoder):
    """Wiener filter. history: bins per prediction (1 = current only); lag: bins back from the
    predicted one; ridge: L2 penalty on the weights of the z-scored features (0 = least squares)."""

    kind = "wiener"

    def __init__(self, history: int = 1, lag: int = 0, ridge: float = 0.0, bin_us: int = 0):
        super().__init__(history, lag, bin_us)
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        self.ridge = float(ridge)

    def fit(self, counts, kinematics, segments=None) -> "WienerDecoder":
        """Fit on counts (T, n_units) and kinematics (T, d); segments: contiguous [start, stop) ranges
        of the rows (history never reaches across a segment boundary)."""
        counts = check_counts(counts, what="training neural data")
        y = check_kinematics(kinematics, len(counts), "training kinematics")
        if len(counts) <= 1:
            raise BCIInputError(f"training data: need more than one bin, got {len(counts)}")
        self.scaler = UnitScaler.fit(counts, zscore=True)
        F = lagged(self.scaler.transform(counts), self.history, self.lag, segments)
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
