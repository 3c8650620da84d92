"""Kalman filter decoder in the Wu et al. (2003) form used by Neural_Decoding's KalmanFilterRegression.

State x = kinematics (d,) (centred on the training mean when ``zscore``), observation f = the lagged
bins (history * n_kept,), z-scored when ``zscore``. Fit by least squares (X: d x T states, Z: observations):

    A = X2 X1' (X1 X1')^-1        W = (X2 - A X1)(X2 - A X1)' / (T - 1) / C
    H = Z X' (X X')^-1            Q = (Z - H X)(Z - H X)' / T

C scales the process noise (larger C: trust the dynamics more). Transitions X1 -> X2 are taken inside
each training segment only. ``predict`` runs the full filter (P starts at 0; with x0 the first output is
x0, as in Neural_Decoding). ``step`` runs the steady-state filter by default — the gain K converges
within a few bins, after which the filter is the LTI system x_t = (I - K H) A x_{t-1} + K f_t — or the
full covariance recursion with ``steady_state=False``.
"""
from __future__ import annotations

import numpy as np

from pipeline.decoders.bci import kernels
from pipeline.decoders.bci.base import weights_shape_check
from pipeline.decoders.bci.features import (
    BCIInputError,
    UnitScaler,
    check_counts,
    check_kinematics,
    check_segments,
    lagged,
)
from pipeline.decoders.bci.linear import LTIDecoder


def fit_kalman(X: np.ndarray, F: np.ndarray, segments, C: float):
    """A, W, H, Q of the Wu et al. model from states X (T, d) and observations F (T, p)."""
    pairs = [(X[a:b - 1], X[a + 1:b]) for a, b in segments if b - a >= 2]
    if not pairs:
        raise BCIInputError("training kinematics: need at least two consecutive bins in a segment")
    X1 = np.concatenate([p[0] for p in pairs]).T
    X2 = np.concatenate([p[1] for p in pairs]).T
    Xs, Z = X.T, F.T
    try:
        A = X2 @ X1.T @ np.linalg.inv(X1 @ X1.T)
        H = Z @ Xs.T @ np.linalg.inv(Xs @ Xs.T)
    except np.linalg.LinAlgError as exc:
        raise BCIInputError(f"training kinematics are degenerate (constant or collinear axes): {exc}") from None
    R = X2 - A @ X1
    W = R @ R.T / X1.shape[1] / C
    E = Z - H @ Xs
    Q = E @ E.T / Z.shape[1]
    return A, W, H, Q


def information_terms(H: np.ndarray, Q: np.ndarray):
    """H'Q^-1 (d, p) and H'Q^-1 H (d, d); raises BCIInputError if Q is singular."""
    try:
        HtQi = np.linalg.solve(Q, H).T
    except np.linalg.LinAlgError:
        raise BCIInputError(
            f"the observation noise Q ({Q.shape[0]} x {Q.shape[0]}) is singular: too few training bins for "
            "this many units x history, or duplicated units"
        ) from None
    return HtQi, HtQi @ H


def steady_state_gain(A, W, HtQi, HtQiH, tol: float = 1e-12, max_iter: int = 100_000):
    """Iterate the covariance recursion from P = 0 to convergence; returns (K (d, p), P (d, d), iters)."""
    d = A.shape[0]
    P = np.zeros((d, d))
    for it in range(1, max_iter + 1):
        Pm = A @ P @ A.T + W
        P_new = np.linalg.inv(np.linalg.inv(Pm) + HtQiH)
        if np.max(np.abs(P_new - P)) <= tol * max(1.0, np.max(np.abs(P_new))):
            return P_new @ HtQi, P_new, it
        P = P_new
    raise BCIInputError(f"Kalman covariance did not converge in {max_iter} iterations (unstable dynamics A?)")


class KalmanDecoder(LTIDecoder):
    """Kalman filter. C: process-noise scale (Neural_Decoding's C, default 1); zscore: z-score the
    units and centre the kinematics (False: raw counts and raw kinematics, exactly Neural_Decoding's
    inputs); steady_state: use the precomputed steady-state gain in ``step`` (the real-time fast path)."""

    kind = "kalman"
    uses_initial_state = True

    def __init__(self, history: int = 1, lag: int = 0, C: float = 1.0, zscore: bool = True,
                 steady_state: bool = True, bin_us: int = 0):
        super().__init__(history, lag, bin_us)
        if not C > 0:
            raise ValueError(f"C must be > 0, got {C}")
        self.C = float(C)
        self.zscore = bool(zscore)
        self.steady_state = bool(steady_state)

    def fit(self, counts, kinematics, segments=None) -> "KalmanDecoder":
        """Fit on counts (T, n_units) and kinematics (T, d); segments: contiguous [start, stop) row ranges."""
        counts = check_counts(counts, what="training neural data")
        y = check_kinematics(kinematics, len(counts), "training kinematics")
        segments = check_segments(segments, len(counts))
        self.scaler = UnitScaler.fit(counts, zscore=self.zscore)
        F = lagged(self.scaler.transform(counts), self.history, self.lag, segments)
        y_mean = y.mean(axis=0) if self.zscore else np.zeros(y.shape[1])
        self.A, self.W, self.H, self.Q = fit_kalman(y - y_mean, F, segments, self.C)
        self._finish(y_mean)
        return self

    def _finish(self, y_mean: np.ndarray) -> None:
        d, nk = self.A.shape[0], len(self.scaler.keep)
        HtQi, self.HtQiH = information_terms(self.H, self.Q)
        self.HtQi = np.ascontiguousarray(HtQi.reshape(d, self.history, nk))
        K, self.P_inf, self.iterations = steady_state_gain(self.A, self.W, HtQi, self.HtQiH)
        M = (np.eye(d) - K @ self.H) @ self.A
        self._set_lti(K.reshape(d, self.history, nk), M, np.zeros(d), y_mean)
        self._P = np.zeros((d, d))
        self._work = (np.zeros(d), np.zeros((d, d)), np.zeros((d, d)), np.zeros((d, d)), np.zeros((d, 2 * d)))

    @property
    def gain(self) -> np.ndarray:
        """The steady-state Kalman gain K (d, history * n_kept)."""
        return self.G.reshape(self.n_out, -1)

    def _set_state(self, x0) -> None:
        super()._set_state(x0)
        self._P[:] = 0.0

    def _step_bin(self, counts: np.ndarray) -> int:
        if self.steady_state:
            return super()._step_bin(counts)
        s = self.scaler
        xm, Pm, S, Pm_inv, work = self._work
        return kernels.kalman_bin(counts, s.keep, s.mean, s.inv_scale, self._ring, self._pos, self.lag,
                                  self.A, self.W, self.HtQiH, self.HtQi, self._x, self._P, xm, Pm, S, Pm_inv,
                                  work, self.offset, self._out)

    def predict(self, counts, x0=None, steady_state: bool = False) -> np.ndarray:
        """Decode (T, n_units) -> (T, d) with the full filter (default) or the steady-state gain."""
        saved, self.steady_state = self.steady_state, steady_state
        try:
            return super().predict(counts, x0)
        finally:
            self.steady_state = saved

    def _predict_rows(self, counts, first, pos, out) -> int:
        if self.steady_state:
            return super()._predict_rows(counts, first, pos, out)
        s = self.scaler
        return kernels.kalman_run(counts, first, s.keep, s.mean, s.inv_scale, self._ring, pos, self.lag,
                                  self.A, self.W, self.HtQiH, self.HtQi, self._x, self._P, self.offset, out)

    def warmup(self) -> None:
        """Compile both step kernels (steady-state and full) and leave the decoder reset."""
        saved = self.steady_state
        for mode in (True, False):
            self.steady_state = mode
            super().warmup()
        self.steady_state = saved

    def to_arrays(self) -> dict:
        arrays = super().to_arrays()
        arrays.update(A=self.A, W=self.W, H=self.H, Q=self.Q, C=np.float64(self.C),
                      zscore=np.bool_(self.zscore), steady_state=np.bool_(self.steady_state))
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> "KalmanDecoder":
        dec = cls(C=float(arrays["C"]), zscore=bool(arrays["zscore"]), steady_state=bool(arrays["steady_state"]))
        dec._load_base(arrays)
        d, p = dec.n_out, dec.history * len(dec.scaler.keep)
        dec.A = weights_shape_check("A", arrays["A"], (d, d))
        dec.W = weights_shape_check("W", arrays["W"], (d, d))
        dec.H = weights_shape_check("H", arrays["H"], (p, d))
        dec.Q = weights_shape_check("Q", arrays["Q"], (p, p))
        dec._finish(weights_shape_check("offset", arrays["offset"], (d,)))
        return dec
