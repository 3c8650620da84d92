"""The spiking BCI decoder: a trained recurrent spiking network on the SNN runtime plus a linear readout filter.

One SNN step per bin (dt = the bin width). Each unit's spike count of the bin is a graded spike (payload =
count) into one recurrent population of CUBA LIF neurons (synaptic current and membrane leak; Loihi
integers on the ``loihi`` backend, their float twin on ``float``). As on the runtime, an input reaches the
population one step later, so the output of bin t depends on the counts of bins up to t - 1 (causal, lag 1).
The kinematics are a linear filter of the population::

    y_t = b + sum_{k=0}^{taps-1} R_k s_{t-k} + R_v v_t      s: spikes (n,), v: post-reset v / threshold (n,)

The weights are learned by surrogate-gradient BPTT with the loihi forward in the loop (quantization-aware;
pipeline.train.bci). This layer cannot import the trainer: ``fit`` calls the ``trainer`` it was given
(the app passes pipeline.train.bci.fit_decoder), which returns a :class:`TrainedSNN`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline.decoders.bci import kernels
from pipeline.decoders.bci.base import BinDecoder, weights_shape_check
from pipeline.decoders.bci.features import BCIInputError, UnitScaler, check_counts, check_kinematics, check_segments
from pipeline.snn import Dense, FloatLIF, LoihiLIF, Network, Population, build


@dataclass(frozen=True)
class TrainedSNN:
    """What training produces. w_in (n, n_units), w_rec (n, n): float weights in thresholds; mant_in,
    mant_rec int16 and weight_exp: the Loihi mantissas (weight = mant * 2**weight_exp * 64 state units);
    du, dv, vth: Loihi decays and threshold mantissa; tau_syn_ms, tau_mem_ms, dt_ms: the float twin's
    constants; taps: readout filter length (bins); readout (taps * n + n, d) and bias (d,): y in the
    training kinematics' units."""

    w_in: np.ndarray
    w_rec: np.ndarray
    mant_in: np.ndarray
    mant_rec: np.ndarray
    weight_exp: int
    du: int
    dv: int
    vth: int
    tau_syn_ms: float
    tau_mem_ms: float
    dt_ms: float
    taps: int
    readout: np.ndarray
    bias: np.ndarray


def _network(t: TrainedSNN, backend: str) -> Network:
    n, n_units = t.w_rec.shape[0], t.w_in.shape[1]
    if backend == "loihi":
        neuron = LoihiLIF(du=t.du, dv=t.dv, vth=t.vth)
        proj = [Dense(name="fc0", source="input", target="output", weights=t.mant_in, weight_exp=t.weight_exp,
                      num_message_bits=8),
                Dense(name="rec0", source="output", target="output", weights=t.mant_rec, weight_exp=t.weight_exp)]
    else:
        neuron = FloatLIF(tau_syn_ms=t.tau_syn_ms, tau_mem_ms=t.tau_mem_ms, threshold=1.0)
        proj = [Dense(name="fc0", source="input", target="output", weights=t.w_in, num_message_bits=8),
                Dense(name="rec0", source="output", target="output", weights=t.w_rec)]
    return Network(n_inputs=n_units, populations=[Population("output", n, neuron, probe_v=True)],
                   projections=proj, output="output", dt_ms=t.dt_ms)


class SNNDecoder(BinDecoder):
    """Recurrent spiking decoder. backend: "loihi" or "float"; trainer: callable (counts (T, n_units),
    kinematics (T, d), segments, bin_ms) -> TrainedSNN, needed by ``fit`` only; context: bins a running
    decoder has seen before a block that ``bci eval`` decodes first (the network's memory)."""

    kind = "snn"

    def __init__(self, backend: str = "loihi", trainer: Callable | None = None, context: int = 20, bin_us: int = 0):
        super().__init__(1, 0, bin_us)
        if backend not in ("loihi", "float"):
            raise ValueError(f"backend must be 'loihi' or 'float', got {backend!r}")
        self.backend, self.trainer, self.context = backend, trainer, int(context)
        self.trained: TrainedSNN | None = None

    @property
    def context_bins(self) -> int:
        return self.context

    def fit(self, counts, kinematics, segments=None) -> "SNNDecoder":
        """Train the network (the trainer given at construction) on counts (T, n_units), kinematics (T, d)."""
        if self.trainer is None:
            raise ValueError("the snn decoder is trained by pipeline.train.bci.fit_decoder: pass it as trainer")
        counts = check_counts(counts, what="training neural data")
        y = check_kinematics(kinematics, len(counts), "training kinematics")
        segments = check_segments(segments, len(counts))
        bin_ms = (self.bin_us or 50_000) / 1000
        self._configure(self.trainer(counts, y, segments, bin_ms), counts.shape[1])
        return self

    def _configure(self, trained: TrainedSNN, n_units: int) -> None:
        self.trained = trained
        n, self.n_out = trained.w_rec.shape[0], trained.readout.shape[1]
        self.scaler = UnitScaler(n_units, np.arange(n_units, dtype=np.int64), np.zeros(n_units), np.ones(n_units))
        self.runtime = build(_network(trained, self.backend), self.backend)
        self._v_scale = 1.0 / (trained.vth << 6) if self.backend == "loihi" else 1.0
        self._ring = np.zeros((trained.taps, n), np.int32)  # indices of the last taps bins' spikes, newest at _pos
        self._ring_counts = np.zeros(trained.taps, np.int64)  # how many each slot holds
        self._pos = np.int64(0)
        self._R = np.ascontiguousarray(trained.readout[:trained.taps * n].reshape(trained.taps, n, self.n_out))
        self._Rv = np.ascontiguousarray(trained.readout[trained.taps * n:]) * self._v_scale
        self._out = np.zeros(self.n_out)
        self._bias = np.asarray(trained.bias, dtype=np.float64)
        self._index = np.zeros(n_units, np.int32)
        self._payload = np.zeros(n_units, np.int64)
        self._v = self.runtime.v("output")              # a view of the runtime's state

    def _require_fit(self) -> None:
        if self.trained is None:
            raise RuntimeError("SNNDecoder is not fitted: call fit() or load a model first")

    def warmup(self) -> None:
        """Compile the runtime's step kernel, then reset."""
        self._require_fit()
        self.runtime.warmup()
        self.step(np.zeros(self.n_units))
        self.reset()

    def reset(self, x0=None, first_counts=None) -> None:
        """Zero the network and the readout filter (x0 and first_counts are ignored: no kinematic state)."""
        self._require_fit()
        self.runtime.reset()
        self._ring_counts[:] = 0
        self._pos = np.int64(0)

    def step(self, counts) -> np.ndarray:
        """One SNN step driven by the bin counts (n_units,) -> kinematics (d,) (a view)."""
        k = kernels.graded_inputs(self._check_bin(counts), self._index, self._payload)
        if k < 0:
            raise BCIInputError("bin: counts must be finite and >= 0")
        spikes = self.runtime.step(self._index[:k], self._payload[:k])
        self._pos = kernels.readout_filter(spikes, self._v, self._ring, self._ring_counts, self._pos, self._R,
                                           self._Rv, self._bias, self._out)
        return self._out

    def predict(self, counts, x0=None) -> np.ndarray:
        """Decode a block (T, n_units) -> (T, d) from a reset network."""
        self._require_fit()
        counts = check_counts(counts, self.scaler.n_units)
        self.reset()
        return np.array([self.step(row).copy() for row in counts]).reshape(len(counts), self.n_out)

    def with_backend(self, backend: str) -> "SNNDecoder":
        """The same trained network and readout on ``backend``."""
        dec = SNNDecoder(backend, self.trainer, self.context, self.bin_us)
        dec._configure(self.trained, self.scaler.n_units)
        return dec

    _FIELDS = ("w_in", "w_rec", "mant_in", "mant_rec", "weight_exp", "du", "dv", "vth", "tau_syn_ms", "tau_mem_ms",
               "dt_ms", "taps", "readout", "bias")

    def to_arrays(self) -> dict:
        arrays = super().to_arrays()
        arrays.update({f: np.asarray(getattr(self.trained, f)) for f in self._FIELDS})
        arrays.update(backend=np.array(self.backend), context=np.int64(self.context))
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> "SNNDecoder":
        dec = cls(backend=str(arrays["backend"]), context=int(arrays["context"]))
        dec._load_base(arrays)
        n, nu, d = np.shape(arrays["w_rec"])[0], dec.scaler.n_units, dec.n_out
        taps = int(arrays["taps"])
        for name, value in (("taps", taps), ("vth", int(arrays["vth"]))):   # ring length; the readout divides by vth
            if value < 1:
                raise BCIInputError(f"model array '{name}': expected at least 1, got {value}")
        trained = TrainedSNN(
            weights_shape_check("w_in", arrays["w_in"], (n, nu)), weights_shape_check("w_rec", arrays["w_rec"], (n, n)),
            weights_shape_check("mant_in", arrays["mant_in"], (n, nu)).astype(np.int16),
            weights_shape_check("mant_rec", arrays["mant_rec"], (n, n)).astype(np.int16),
            int(arrays["weight_exp"]), int(arrays["du"]), int(arrays["dv"]), int(arrays["vth"]),
            float(arrays["tau_syn_ms"]), float(arrays["tau_mem_ms"]), float(arrays["dt_ms"]), taps,
            weights_shape_check("readout", arrays["readout"], ((taps + 1) * n, d)),
            weights_shape_check("bias", arrays["bias"], (d,)))
        dec._configure(trained, nu)
        return dec
