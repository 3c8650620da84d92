"""A stack of CUBA LIF layers trained by surrogate-gradient BPTT (float or loihi-integer forward).

:class:`LifStack` holds the trainable weights in threshold units (a weight of 1 makes a resting neuron
spike from one input event) and runs batches through :mod:`pipeline.train.kernels`:

* ``mode="float"``: the float backend's dynamics (FloatLIF, threshold 1).
* ``mode="loihi"``: quantization-aware training. The forward pass IS the loihi backend: each layer's
  weights are rounded to the int8 mantissas (even values in [-256, 254], weight exponent ``weight_exp``)
  the network file will hold, stored and shifted exactly as the runtime does, and the integer neuron
  dynamics run bit for bit; gradients pass straight through the rounding.

:meth:`LifStack.network` turns the stack into a :class:`pipeline.snn.Network` (populations ``hidden0``,
``hidden1``, ..., ``output``; projections ``fc0``, ``fc1``, ... and ``rec0``, ... for recurrent layers), and
:func:`compile_network` turns such a network (LoihiLIF or FloatLIF, Dense chain) back into kernel
arguments, so evaluating a saved file runs the same code as training did.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.snn.network import INPUT, Dense, FloatLIF, LoihiLIF, Network, Population
from pipeline.snn.weights import truncate_weights
from pipeline.train import kernels as K

MODES = ("float", "loihi")


@dataclass(frozen=True)
class Layer:
    """What the kernels need for one layer. Float: weights float32 (n_in, n) input-major in threshold units,
    recurrent (n, n) or (0, 0). Loihi: weights int32 stored mantissas, shift, u_mult, v_mult, threshold.
    decay_u, decay_v float32 (n,) for the backward (and the float forward); w_eff, r_eff float32 effective
    weights in threshold units (input-major) for the backward."""

    mode: str
    weights: np.ndarray
    shift: int
    recurrent: np.ndarray
    rec_shift: int
    decay_u: np.ndarray
    decay_v: np.ndarray
    u_mult: np.ndarray
    v_mult: np.ndarray
    threshold: np.ndarray
    w_eff: np.ndarray
    r_eff: np.ndarray
    #: the feed-forward projection reads event counts (graded spikes); otherwise a count is one spike
    graded: bool = True

    @property
    def size(self) -> int:
        return self.decay_u.shape[0]


@dataclass
class Trace:
    """One layer's forward over a batch: vnorm float32 (B, T, n) v'/threshold before reset, spikes uint8
    (B, T, n), and the spike events (indptr (B, T + 1), index, count) that feed the next layer."""

    vnorm: np.ndarray
    spikes: np.ndarray
    indptr: np.ndarray
    index: np.ndarray
    count: np.ndarray


def loihi_decays(tau_syn_ms: float, tau_mem_ms: float, dt_ms: float) -> tuple[int, int]:
    """(du, dv): the 12-bit decays closest to the time constants (as pipeline.snn.convert.to_loihi)."""
    du = int(np.clip(round(4095 - 4096 * math.exp(-dt_ms / tau_syn_ms)), 0, 4095)) if tau_syn_ms > 0 else 4095
    dv = int(np.clip(round(4096 * (1 - math.exp(-dt_ms / tau_mem_ms))), 0, 4095)) if math.isfinite(tau_mem_ms) else 0
    return du, dv


def weight_exp_for(max_weight: float, vth: int) -> int:
    """The smallest exponent 0..7 with max_weight <= 256 * 2**e / vth thresholds (the int8 mantissa range;
    weights are then clipped to its even maximum 254 * 2**e / vth). The quantum is 2 * 2**e / vth."""
    return int(np.clip(math.ceil(math.log2(max(max_weight * vth / 256.0, 1e-12)) - 1e-9), 0, 7))


def quantize(weights: np.ndarray, weight_exp: int, vth: int) -> np.ndarray:
    """Threshold-unit weights -> even int64 mantissas in [-256, 254] (Lava keeps these exactly for any
    sign mode at 8 bits): mantissa * 2**weight_exp * 64 = weight * vth * 64 state units."""
    return (np.clip(np.round(weights * vth / 2.0 ** weight_exp / 2.0), -128, 127) * 2).astype(np.int64)


class LifStack:
    """Trainable layers ``sizes = [n_in, h0, ..., n_out]``; see the module docstring.

    tau_syn_ms, tau_mem_ms: time constants (ms) of every layer; dt_ms: step; recurrent: hidden layers get a
    recurrent projection; vth: Loihi threshold mantissa (loihi mode; threshold vth * 64 state units);
    max_weight: per layer, the largest |weight| in thresholds (fixes weight_exp; weights are clipped to it).
    """

    def __init__(self, sizes, mode: str, tau_syn_ms: float, tau_mem_ms: float, dt_ms: float, recurrent: bool,
                 vth: int, max_weight, rng: np.random.Generator, init_gain: float = 1.0,
                 input_rate: float = 0.01):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.sizes = [int(s) for s in sizes]
        self.mode = mode
        self.tau_syn_ms, self.tau_mem_ms, self.dt_ms = float(tau_syn_ms), float(tau_mem_ms), float(dt_ms)
        self.recurrent = bool(recurrent)
        self.vth = int(vth)
        self.max_weight = [float(m) for m in max_weight]
        self.weight_exp = [weight_exp_for(m, self.vth) for m in self.max_weight]
        self.limit = [254 * 2.0 ** e / self.vth for e in self.weight_exp] if mode == "loihi" else self.max_weight
        self.params: dict[str, np.ndarray] = {}
        n_layers = len(self.sizes) - 1
        for li in range(n_layers):
            n_in, n = self.sizes[li], self.sizes[li + 1]
            # Inputs active at rate `input_rate` per step, integrated over tau_syn and tau_mem: a std of about
            # gain / sqrt(active inputs in a membrane time) puts the layer near threshold.
            active = max(n_in * (input_rate if li == 0 else 0.05) * self.tau_mem_ms / self.dt_ms, 1.0)
            std = init_gain / math.sqrt(active) / max(self.tau_syn_ms / self.dt_ms, 1.0)
            self.params[f"w{li}"] = np.clip(rng.normal(0, std, (n_in, n)), -self.limit[li],
                                            self.limit[li]).astype(np.float32)
            if self.recurrent and li < n_layers - 1:
                self.params[f"r{li}"] = np.clip(rng.normal(0, std / 2, (n, n)), -self.limit[li],
                                                self.limit[li]).astype(np.float32)

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def clip(self) -> None:
        """Keep every weight inside its layer's range (in place)."""
        for name, w in self.params.items():
            lim = self.limit[int(name[1:])]
            np.clip(w, -lim, lim, out=w)

    # ------------------------------------------------------------------ network description
    def network(self, input_shape=None, input_spec=None, readout=None) -> Network:
        """The trained stack as a Network (LoihiLIF + int weights in loihi mode; FloatLIF + float weights in
        float mode); the output population is probed (v) for membrane readouts."""
        du, dv = loihi_decays(self.tau_syn_ms, self.tau_mem_ms, self.dt_ms)
        populations, projections = [], []
        names = [f"hidden{i}" for i in range(self.n_layers - 1)] + ["output"]
        for li, name in enumerate(names):
            if self.mode == "loihi":
                neuron = LoihiLIF(du=du, dv=dv, vth=self.vth)
            else:
                neuron = FloatLIF(tau_syn_ms=self.tau_syn_ms, tau_mem_ms=self.tau_mem_ms, threshold=1.0)
            populations.append(Population(name, self.sizes[li + 1], neuron, probe_v=name == "output"))
            source = INPUT if li == 0 else names[li - 1]
            for kind, key, src in (("fc", f"w{li}", source), ("rec", f"r{li}", name)):
                if key not in self.params:
                    continue
                w = self.params[key].T
                # event counts as input (encoding "counts") are graded spikes: payload * weight
                graded = 8 if src == INPUT and input_spec is not None and input_spec.encoding == "counts" else 0
                if self.mode == "loihi":
                    projections.append(Dense(name=f"{kind}{li}", source=src, target=name,
                                             weights=quantize(w, self.weight_exp[li], self.vth).astype(np.int16),
                                             weight_exp=self.weight_exp[li], num_message_bits=graded))
                else:
                    projections.append(Dense(name=f"{kind}{li}", source=src, target=name, weights=w.copy(),
                                             num_message_bits=graded))
        return Network(n_inputs=self.sizes[0], populations=populations, projections=projections, output="output",
                       dt_ms=self.dt_ms, input_shape=input_shape, input_spec=input_spec, readout=readout)

    def layers(self) -> list[Layer]:
        """The kernel arguments of the current weights (quantized in loihi mode); the same as
        ``compile_network(self.network())`` without building the description (once per batch)."""
        du, dv = loihi_decays(self.tau_syn_ms, self.tau_mem_ms, self.dt_ms)
        layers = []
        for li in range(self.n_layers):
            n = self.sizes[li + 1]
            if self.mode == "float":
                decay_u = np.full(n, math.exp(-self.dt_ms / self.tau_syn_ms), np.float32)
                decay_v = np.full(n, math.exp(-self.dt_ms / self.tau_mem_ms), np.float32)
                w = self.params[f"w{li}"]
                r = self.params.get(f"r{li}", np.zeros((0, 0), np.float32))
                empty = np.zeros(0, np.int64)
                layers.append(Layer("float", w, 0, r, 0, decay_u, decay_v, empty, empty, empty, w, r))
                continue
            u_mult = np.full(n, 4095 - du, np.int64)
            v_mult = np.full(n, 4096 - dv, np.int64)
            threshold = np.full(n, self.vth << 6, np.int64)
            e = self.weight_exp[li]

            def stored(weights_io):
                mantissas = np.empty(weights_io.shape, np.int32)
                w_eff = np.empty(weights_io.shape, np.float32)
                if all(K.quantize_mixed(weights_io, self.vth, e, mantissas, w_eff)):  # the usual case, one pass
                    return mantissas, e + 1, w_eff
                effective, bits = truncate_weights(quantize(weights_io, e, self.vth), 8)
                return (effective >> bits).astype(np.int32), e + bits, \
                    (effective * (2.0 ** (e + 6) / (self.vth << 6))).astype(np.float32)
            weights, shift, w_eff = stored(self.params[f"w{li}"])
            if f"r{li}" in self.params:
                recurrent, rec_shift, r_eff = stored(self.params[f"r{li}"])
            else:
                recurrent, rec_shift, r_eff = np.zeros((0, 0), np.int32), 0, np.zeros((0, 0), np.float32)
            layers.append(Layer("loihi", weights, shift, recurrent, rec_shift, (u_mult / 4096).astype(np.float32),
                                (v_mult / 4096).astype(np.float32), u_mult, v_mult, threshold, w_eff, r_eff))
        return layers


def compile_network(network: Network) -> list[Layer]:
    """Kernel arguments of a Dense chain input -> p0 -> p1 -> ... (each population fed by the previous one,
    optionally recurrent, zero bias and refractory). ValueError for any other network."""
    pops = network.populations
    layers = []
    for li, population in enumerate(pops):
        source = INPUT if li == 0 else pops[li - 1].name
        ff = [p for p in network.projections if p.target == population.name and p.source == source]
        rec = [p for p in network.projections if p.target == population.name and p.source == population.name]
        other = [p for p in network.projections if p.target == population.name and p not in ff + rec]
        if len(ff) != 1 or len(rec) > 1 or other or not all(isinstance(p, Dense) and np.ndim(p.delay) == 0
                                                             and p.delay == 0 for p in ff + rec):
            raise ValueError(f"population {population.name!r}: the trainer handles a chain of Dense projections "
                             f"(one from {source!r}, optionally one recurrent, delay 0)")
        a = population.neuron.arrays(f"population {population.name!r}", population.size)
        n = population.size
        if isinstance(population.neuron, LoihiLIF):
            if np.any(a["bias_mant"]) or np.any(a["refractory"]):
                raise ValueError(f"population {population.name!r}: bias and refractory must be 0 for the trainer")
            u_mult = (4095 - a["du"]).astype(np.int64)
            v_mult = (4096 - a["dv"]).astype(np.int64)
            threshold = (a["vth"] << 6).astype(np.int64)
            decay_u, decay_v = (u_mult / 4096).astype(np.float32), (v_mult / 4096).astype(np.float32)

            def stored(projection):
                effective, shift_bits = truncate_weights(projection.weights, projection.num_weight_bits)
                shift = int(projection.weight_exp) + shift_bits
                w_eff = (effective.T * 2.0 ** (projection.weight_exp + 6) / threshold[None, :]).astype(np.float32)
                return np.ascontiguousarray((effective >> shift_bits).T).astype(np.int32), shift, w_eff
            weights, shift, w_eff = stored(ff[0])
            recurrent, rec_shift, r_eff = stored(rec[0]) if rec else (np.zeros((0, 0), np.int32), 0,
                                                                        np.zeros((0, 0), np.float32))
            layers.append(Layer("loihi", weights, shift, recurrent, rec_shift, decay_u, decay_v, u_mult, v_mult,
                                threshold, w_eff, r_eff, bool(ff[0].num_message_bits)))
        else:
            if np.any(a["bias"]) or np.any(a["refractory_ms"]):
                raise ValueError(f"population {population.name!r}: bias and refractory must be 0 for the trainer")
            dt = float(network.dt_ms)
            with np.errstate(divide="ignore"):
                decay_u = np.exp(-dt / a["tau_syn_ms"]).astype(np.float32)
                decay_v = np.exp(-dt / a["tau_mem_ms"]).astype(np.float32)
            th = a["threshold"]
            w = np.ascontiguousarray(ff[0].weights.T / th[None, :]).astype(np.float32)
            r = np.ascontiguousarray(rec[0].weights.T / th[None, :]).astype(np.float32) if rec \
                else np.zeros((0, 0), np.float32)
            empty = np.zeros(0, np.int64)
            layers.append(Layer("float", w, 0, r, 0, decay_u, decay_v, empty, empty, empty, w, r,
                                bool(ff[0].num_message_bits)))
    return layers


def forward(layers: list[Layer], indptr: np.ndarray, index: np.ndarray, count: np.ndarray, n_steps: int
            ) -> list[Trace]:
    """Run a batch (input events CSR, see pipeline.train.kernels) through every layer."""
    traces = []
    n_batch = indptr.shape[0]
    for li, layer in enumerate(layers):
        n = layer.size
        if li == 0 and not layer.graded:
            count = np.ones_like(count)
        vnorm = np.empty((n_batch, n_steps, n), np.float32)
        spikes = np.empty((n_batch, n_steps, n), np.uint8)
        out_indptr = np.empty((n_batch, n_steps + 1), np.int64)
        out_index = np.empty(n_batch * n_steps * n, np.int32)
        if layer.mode == "loihi":
            counts = _ones(count.shape[0], np.int32) if li > 0 else count.astype(np.int32, copy=False)
            K.forward_loihi(indptr, index, counts, _narrow(layer.weights), layer.shift,
                            _narrow(layer.recurrent), layer.rec_shift, layer.u_mult, layer.v_mult, layer.threshold,
                            vnorm, spikes, out_indptr, out_index, K.workers(n_batch))
        else:
            K.forward_float(indptr, index, count.astype(np.float32, copy=False), layer.weights, layer.recurrent,
                            layer.decay_u, layer.decay_v, vnorm, spikes, out_indptr, out_index, K.workers(n_batch))
        count = _ones(out_index.shape[0])
        traces.append(Trace(vnorm, spikes, out_indptr, out_index, count))
        indptr, index = out_indptr, out_index
    return traces


def _narrow(weights: np.ndarray) -> np.ndarray:
    """Integer weights in the narrowest of int8, int16, int32 that holds them (the forward reads a row per
    event: 4x fewer bytes for the int8 mantissas of QAT)."""
    if weights.size == 0:
        return weights.astype(np.int8)
    low, high = weights.min(), weights.max()
    for dtype in (np.int8, np.int16):
        if np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max:
            return weights.astype(dtype)
    return weights


_ONES: dict[type, np.ndarray] = {}


def _ones(n: int, dtype=np.float32) -> np.ndarray:
    """n ones (the counts of spike events), one array shared by all batches: never write to it."""
    ones = _ONES.get(dtype)
    if ones is None or ones.shape[0] < n:
        ones = _ONES[dtype] = np.ones(n, dtype)
    return ones[:n]


def backward(layers: list[Layer], traces: list[Trace], inputs: tuple[np.ndarray, np.ndarray, np.ndarray],
             grad_spikes: np.ndarray, grad_v: np.ndarray | None, kind: int, slope: float,
             has_recurrent: bool) -> dict[str, np.ndarray]:
    """Gradients (input-major, threshold units) of every weight: ``w{l}`` and ``r{l}``. ``grad_spikes``
    (B, T, n_out) and ``grad_v`` (same or None) are the loss gradients w.r.t. the output layer (not modified).
    Each layer's reverse pass reads the gradient of the layer it feeds directly (kernels.backward)."""
    grads = {}
    none3, none2 = np.zeros((0, 0, 0), np.float32), np.zeros((0, 0), np.float32)
    g_s = np.ascontiguousarray(grad_spikes, np.float32)
    g_v = none3 if grad_v is None else np.ascontiguousarray(grad_v, np.float32)
    next_grad_a, next_weights = none3, none2
    for li in range(len(layers) - 1, -1, -1):
        layer, trace = layers[li], traces[li]
        n_batch, n_steps, n = trace.vnorm.shape
        grad_a = np.empty_like(trace.vnorm)
        rec_tm = np.ascontiguousarray(layer.r_eff.T) if layer.r_eff.shape[0] else none2
        K.backward(g_s, g_v, next_grad_a, next_weights, trace.vnorm, trace.spikes, layer.decay_u, layer.decay_v,
                   rec_tm, kind, np.float32(slope), grad_a,
                   K.workers(n_batch))
        if li == 0:
            src = inputs
        else:
            prev = traces[li - 1]
            src = (prev.indptr, prev.index, prev.count)
        flat = grad_a.reshape(n_batch * n_steps, n)
        grads[f"w{li}"] = _weight_grad(src, flat, layer.w_eff.shape[0], n)
        if layer.r_eff.shape[0]:
            grads[f"r{li}"] = _weight_grad((trace.indptr, trace.index, trace.count), flat, n, n)
        g_s, g_v = none3, none3
        if li > 0:
            next_grad_a, next_weights = grad_a, np.ascontiguousarray(layer.w_eff.T)
    return grads


def _weight_grad(events, grad_a_flat: np.ndarray, n_in: int, n: int) -> np.ndarray:
    """dL/dW (n_in, n) float32 of one projection from its source events and the target's grad_a (B * T, n)."""
    ptr, rows, counts = K.by_source(events[0], events[1], events[2].astype(np.float32, copy=False), n_in)
    out = np.empty((n_in, n), np.float32)
    K.weight_grad(ptr, rows, counts, grad_a_flat, out, K.workers(-(-n_in // K.ROWS_PER_ITEM)))
    return out
