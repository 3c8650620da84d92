"""A decoder that is a linear time-invariant system on the lagged bins:

    x_t = M x_{t-1} + sum_k G_k z_{t-lag-k} + c,     output_t = x_t + offset

The Wiener filter is the case M = 0; the steady-state Kalman filter is M = (I - K H) A, G = K.
Per bin this costs d*(d + history*n_kept) multiply-adds in one numba call.
"""
from __future__ import annotations

import numpy as np

from pipeline.decoders.bci import kernels
from pipeline.decoders.bci.base import BinDecoder, weights_shape_check


class LTIDecoder(BinDecoder):
    """Online/offline machinery of an LTI decoder; subclasses fit ``G`` (d, history, n_kept),
    ``M`` (d, d), ``c`` (d,) and ``offset`` (d,) then call ``_set_lti``."""

    kind = "lti"

    def _set_lti(self, G, M, c, offset) -> None:
        self.n_out = int(G.shape[0])
        self.G = np.ascontiguousarray(G, dtype=np.float64)
        self.M = np.ascontiguousarray(M, dtype=np.float64)
        self.c = np.ascontiguousarray(c, dtype=np.float64)
        self.offset = np.ascontiguousarray(offset, dtype=np.float64)
        self._alloc()

    def _set_state(self, x0) -> None:
        self._x[:] = 0.0 if x0 is None else np.asarray(x0, dtype=np.float64) - self.offset

    def _step_bin(self, counts: np.ndarray) -> int:
        s = self.scaler
        return kernels.lti_bin(counts, s.keep, s.mean, s.inv_scale, self._ring, self._pos, self.lag,
                               self.G, self.M, self.c, self._x, self._tmp, self.offset, self._out)

    def _predict_rows(self, counts, first, pos, out) -> int:
        s = self.scaler
        return kernels.lti_run(counts, first, s.keep, s.mean, s.inv_scale, self._ring, pos, self.lag,
                               self.G, self.M, self.c, self._x, self.offset, out)

    def warmup(self) -> None:
        """Compile the step kernel and leave the decoder reset (call before a real-time clock starts)."""
        self.predict(np.zeros((2, self.n_units)), np.zeros(self.n_out))
        self.reset()
        self.step(np.zeros(self.n_units))
        self.reset()

    def to_arrays(self) -> dict:
        arrays = super().to_arrays()
        arrays.update(G=self.G, M=self.M, c=self.c, offset=self.offset)
        return arrays

    def _load_lti(self, arrays) -> None:
        self._load_base(arrays)
        d, nk = self.n_out, len(self.scaler.keep)
        self._set_lti(weights_shape_check("G", arrays["G"], (d, self.history, nk)),
                      weights_shape_check("M", arrays["M"], (d, d)),
                      weights_shape_check("c", arrays["c"], (d,)),
                      weights_shape_check("offset", arrays["offset"], (d,)))
