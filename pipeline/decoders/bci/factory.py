"""BCI decoders by name: the one place ``spikeloop bci fit/eval`` and launch files (``[decoder] type = ...``)
make a fresh, unfitted decoder.

    wiener  least squares on the current bin (history 1 by default)
    kalman  Kalman filter in the Wu et al. / Neural_Decoding form, stepping with its steady-state gain
    ridge   Wiener over 10 bins of history, ridge penalty chosen by inner cross-validation ("auto")
    snn     a trained recurrent spiking network + linear readout filter on the SNN runtime (loihi or float
            backend); trained by the ``trainer`` the caller passes (pipeline.train.bci.fit_decoder)
"""
from __future__ import annotations

from typing import Callable

from pipeline.decoders.bci.base import BinDecoder
from pipeline.decoders.bci.kalman import KalmanDecoder
from pipeline.decoders.bci.snn import SNNDecoder
from pipeline.decoders.bci.wiener import WienerDecoder

DECODER_KINDS = ("wiener", "kalman", "ridge", "snn")
#: Bins per prediction when none is given.
DEFAULT_HISTORY = {"wiener": 1, "kalman": 1, "ridge": 10, "snn": 1}
#: Ridge penalty (z-scored units) when none is given; "auto": chosen by inner cross-validation.
DEFAULT_RIDGE = {"wiener": 0.0, "kalman": 0.0, "ridge": "auto", "snn": 0.0}


def make_decoder(kind: str, bin_us: int, *, history: int | None = None, lag: int = 0,
                 ridge: float | str | None = None, C: float = 1.0, backend: str = "loihi",
                 steps: int | None = None, trainer: Callable | None = None) -> BinDecoder:
    """A fresh (unfitted) decoder of ``kind`` (one of DECODER_KINDS) for bins of ``bin_us`` µs.

    history: bins per prediction (None: DEFAULT_HISTORY); lag: bins between the newest bin used and the
    predicted one; ridge: penalty >= 0 or "auto" (None: DEFAULT_RIDGE); C: Kalman process-noise scale;
    snn only: backend ("loihi" | "float"), steps (SNN steps per bin: the decoder runs 1), trainer
    (see pipeline.decoders.bci.snn.SNNDecoder). Raises ValueError for an unknown kind or impossible options.
    """
    if kind not in DECODER_KINDS:
        raise ValueError(f"decoder: expected one of {', '.join(DECODER_KINDS)}, got {kind!r}")
    history = DEFAULT_HISTORY[kind] if history is None else history
    ridge = DEFAULT_RIDGE[kind] if ridge is None else ridge
    if kind == "kalman":
        return KalmanDecoder(history=history, lag=lag, C=C, steady_state=True, bin_us=bin_us)
    if kind == "snn":
        if history != 1 or lag:
            raise ValueError("the snn decoder keeps its own memory (recurrence, readout filter): no history or lag")
        if steps not in (None, 1):
            raise ValueError(f"the snn decoder runs one SNN step per bin, got steps {steps}")
        return SNNDecoder(backend=backend, trainer=trainer, bin_us=bin_us)
    return WienerDecoder(history=history, lag=lag, ridge=ridge, bin_us=bin_us)
