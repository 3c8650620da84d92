"""A spiking implementation of a fitted linear (Wiener, current-bin) decoder on the SNN runtime.

Per bin of ``steps`` SNN steps (dt = 1 ms network time each):

* inputs: one input axon per unit; a unit's c spikes in the bin are spread evenly over the bin's steps
  (rate code; the same placement as the replayed AER stream);
* output: for every kinematic axis i two populations of ``neurons`` non-leaky integrate-and-fire
  neurons (Loihi CUBA LIF with du = 4095: no synaptic filter, dv = 0: no leak), "pos" and "neg".
  A spike of unit j adds +w_ij to every pos neuron of axis i and -w_ij to every neg neuron; a bias
  (beta ± b_i) / steps per step keeps both populations firing, so over a bin the pos neurons integrate
  beta + y_i and the neg ones beta - y_i, where y = b + w c is the linear decoder's output.
  Neuron k of a population has threshold q * (1 + k / neurons) (heterogeneous thresholds spread the
  spike phases), so its spike count over a bin is about (beta ± y_i) / q_k;
* readout: the bin-summed spike counts, y_i ~= (n_pos - n_neg) / (2 * sum_k 1 / q_k) in theory; since a
  Loihi neuron resets to 0 and drops the overshoot above threshold (and fires at most once per step), the
  realised gain is lower, so the readout y_i = a_i n_pos + c_i n_neg + e_i is fitted by least squares on
  the training bins run through the network (a trained readout, 3 numbers per axis).

Weights are quantised to Loihi's 8-bit mantissa and shared exponent, biases to 13-bit mantissas
(pipeline.snn.convert.quantize_weights). The same network runs on the ``loihi`` backend (integer,
bit-exact) and on its ``float`` twin.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from pipeline.decoders.bci.base import BinDecoder, weights_shape_check
from pipeline.decoders.bci.features import BCIInputError, UnitScaler, check_counts, check_segments
from pipeline.decoders.bci.wiener import WienerDecoder
from pipeline.snn import Dense, LoihiLIF, Network, Population, build
from pipeline.snn.convert import quantize_weights

#: Threshold mantissa of the largest-threshold output neuron (state threshold = VTH << 6).
VTH = 1 << 13


@njit(cache=True)
def schedule(counts, steps, units, ptr):
    """Spread each unit's spike count over ``steps`` steps: the active units of step s are
    units[ptr[s]:ptr[s+1]]. counts (n,) float64 (rounded; at most one spike per step per unit);
    units (n * steps,) int32 and ptr (steps + 1,) int64 are preallocated. Returns the spikes dropped
    because a unit had more than ``steps`` spikes (or a negative count)."""
    n = counts.shape[0]
    dropped = 0
    for s in range(steps + 1):
        ptr[s] = 0
    for j in range(n):
        c = int(np.round(counts[j]))
        if c > steps:
            dropped += c - steps
            c = steps
        if c < 0:
            dropped += -c
            c = 0
        for k in range(c):
            ptr[((2 * k + 1) * steps) // (2 * c) + 1] += 1
    for s in range(steps):
        ptr[s + 1] += ptr[s]
    fill = ptr[:steps].copy()
    for j in range(n):
        c = int(np.round(counts[j]))
        c = min(max(c, 0), steps)
        for k in range(c):
            s = ((2 * k + 1) * steps) // (2 * c)
            units[fill[s]] = j
            fill[s] += 1
    return dropped


class SNNDecoder(BinDecoder):
    """Linear decoder as a spiking network. steps: SNN steps per bin; neurons: neurons per sign and
    axis; backend: "loihi" or "float" (the twin); ridge: the Wiener fit's ridge (see WienerDecoder);
    headroom: beta = headroom * max |y| on the training data; duty: the highest output rate as a
    fraction of one spike per step (sets the quantum q)."""

    kind = "snn"

    def __init__(self, steps: int = 50, neurons: int = 4, backend: str = "loihi", ridge: float | str = 0.0,
                 headroom: float = 1.25, duty: float = 0.5, bin_us: int = 0):
        super().__init__(1, 0, bin_us)
        if steps < 1 or neurons < 1:
            raise ValueError(f"steps and neurons must be >= 1, got {steps}, {neurons}")
        if backend not in ("loihi", "float"):
            raise ValueError(f"backend must be 'loihi' or 'float', got {backend!r}")
        if not (headroom > 1 and 0 < duty <= 1):
            raise ValueError(f"need headroom > 1 and 0 < duty <= 1, got {headroom}, {duty}")
        self.steps, self.neurons, self.backend = int(steps), int(neurons), backend
        self.ridge, self.headroom, self.duty = ridge, float(headroom), float(duty)
        self.dropped_spikes = 0

    def fit(self, counts, kinematics, segments=None) -> "SNNDecoder":
        """Fit the current-bin Wiener filter, then build the spiking network that implements it."""
        wiener = WienerDecoder(history=1, ridge=self.ridge).fit(counts, kinematics, segments)
        s = wiener.scaler
        d = wiener.n_out
        w = np.zeros((d, s.n_units))
        w[:, s.keep] = wiener.G[:, 0, :] * s.inv_scale
        b = wiener.c - w[:, s.keep] @ s.mean
        y_max = float(np.max(np.abs(wiener.predict(counts))))
        self.scaler = UnitScaler(s.n_units, s.keep, np.zeros(len(s.keep)), np.ones(len(s.keep)))
        self.n_out = d
        self._configure(w, b, self.headroom * max(y_max, 1e-9), np.zeros((d, 3)))
        y = np.asarray(kinematics, dtype=np.float64)
        pos_neg = np.concatenate([self._run_counts(counts[a:b]) for a, b in check_segments(segments, len(counts))])
        for i in range(d):
            design = np.column_stack([pos_neg[:, i, 0], pos_neg[:, i, 1], np.ones(len(y))])
            self.readout[i] = np.linalg.lstsq(design, y[:, i], rcond=None)[0]
        return self

    def _run_counts(self, counts: np.ndarray) -> np.ndarray:
        """Spike counts per bin of the pos and neg populations, (T, d, 2), from a reset network."""
        self.reset()
        out = np.zeros((len(counts), self.n_out, 2))
        for t, row in enumerate(counts):
            self._run_bin(row)
            out[t] = self._acc.reshape(self.n_out, 2, self.neurons).sum(axis=2)
        return out

    def _run_bin(self, counts: np.ndarray) -> None:
        """Drive the network through one bin; self._acc holds each output neuron's spike count."""
        self.dropped_spikes += schedule(counts, self.steps, self._units, self._ptr)
        acc, units, ptr, run = self._acc, self._units, self._ptr, self.runtime.step
        acc[:] = 0
        for s in range(self.steps):
            acc += run(units[ptr[s]:ptr[s + 1]])

    def _configure(self, w: np.ndarray, b: np.ndarray, beta: float, readout: np.ndarray) -> None:
        self.w, self.b, self.beta, self.readout = w, b, float(beta), readout
        d, n_units, N = w.shape[0], w.shape[1], self.neurons
        # the fastest neuron (k = 0, threshold q) at |y| = beta fires duty * steps times per bin
        self.q = 2.0 * self.beta / (self.duty * self.steps)
        q_k = self.q * (1.0 + np.arange(N) / N)
        scale = (VTH << 6) / q_k.max()
        sign = np.repeat([1.0, -1.0], N)                                   # pos block, then neg block
        out_w = np.concatenate([np.outer(sign, w[i]) for i in range(d)])     # (d * 2N, n_units)
        out_bias = np.concatenate([(self.beta + sign * b[i]) / self.steps for i in range(d)])
        mantissa, weight_exp, self.weight_report = quantize_weights(out_w, scale, "units->out")
        bias_state = out_bias * scale
        bias_exp = np.ceil(np.log2(np.maximum(np.abs(bias_state), 1.0) / 4095)).clip(0, 7).astype(np.int64)
        bias_mant = np.round(bias_state / 2.0 ** bias_exp).astype(np.int64)
        vth = np.round(np.tile(q_k, 2 * d) * scale / 64).astype(np.int64)
        neuron = LoihiLIF(du=4095, dv=0, vth=vth, bias_mant=bias_mant, bias_exp=bias_exp, refractory=0)
        self.network = Network(
            n_inputs=n_units,
            populations=[Population("out", 2 * N * d, neuron)],
            projections=[Dense(name="units->out", source="input", target="out", weights=mantissa,
                               weight_exp=weight_exp)],
            output="out",
        )
        self.runtime = build(self.network, self.backend)
        self._units = np.zeros(n_units * self.steps, dtype=np.int32)
        self._ptr = np.zeros(self.steps + 1, dtype=np.int64)
        self._acc = np.zeros(2 * N * d, dtype=np.int64)
        self._out = np.zeros(d)

    def _require_fit(self) -> None:
        if getattr(self, "runtime", None) is None:
            raise RuntimeError("SNNDecoder is not fitted: call fit() or load a model first")

    def warmup(self) -> None:
        """Compile the runtime's step kernel and the spike scheduler, then reset."""
        self._require_fit()
        self.runtime.warmup()
        self.step(np.zeros(self.n_units))
        self.reset()

    def reset(self, x0=None, first_counts=None) -> None:
        """Zero the network state (x0 and first_counts are ignored: the decoder has no kinematic state)."""
        self._require_fit()
        self.runtime.reset()
        self.dropped_spikes = 0

    def step(self, counts) -> np.ndarray:
        """Run one bin (``steps`` SNN steps) driven by counts (n_units,) -> kinematics (d,) (a view)."""
        counts = self._check_bin(counts)
        if not np.all(np.isfinite(counts)):
            raise BCIInputError("bin: non-finite count (NaN/inf)")
        self._run_bin(counts)
        pos_neg = self._acc.reshape(self.n_out, 2, self.neurons).sum(axis=2)
        r = self.readout
        self._out[:] = r[:, 0] * pos_neg[:, 0] + r[:, 1] * pos_neg[:, 1] + r[:, 2]
        return self._out

    def predict(self, counts, x0=None) -> np.ndarray:
        """Decode a block (T, n_units) -> (T, d) from a reset network."""
        self._require_fit()
        counts = check_counts(counts, self.scaler.n_units)
        self.reset()
        return np.array([self.step(row).copy() for row in counts]).reshape(len(counts), self.n_out)

    def float_twin(self) -> "SNNDecoder":
        """The same network on the float backend."""
        return self.with_backend("float")

    def with_backend(self, backend: str) -> "SNNDecoder":
        """A copy of this decoder running on ``backend``."""
        arrays = self.to_arrays()
        arrays["backend"] = np.array(backend)
        return SNNDecoder.from_arrays(arrays)

    def to_arrays(self) -> dict:
        arrays = super().to_arrays()
        arrays.update(w=self.w, b=self.b, beta=np.float64(self.beta), steps=np.int64(self.steps),
                      neurons=np.int64(self.neurons), backend=np.array(self.backend),
                      headroom=np.float64(self.headroom), duty=np.float64(self.duty), readout=self.readout)
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> "SNNDecoder":
        dec = cls(steps=int(arrays["steps"]), neurons=int(arrays["neurons"]), backend=str(arrays["backend"]),
                  headroom=float(arrays["headroom"]), duty=float(arrays["duty"]))
        dec._load_base(arrays)
        w = weights_shape_check("w", arrays["w"], (dec.n_out, dec.scaler.n_units))
        dec._configure(w, weights_shape_check("b", arrays["b"], (dec.n_out,)), float(arrays["beta"]),
                       weights_shape_check("readout", arrays["readout"], (dec.n_out, 3)))
        return dec
