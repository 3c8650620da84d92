"""A stack of convolutional, pooling and (delayed) Dense CUBA LIF layers trained by surrogate-gradient BPTT.

The ``[network] layers`` list of the bptt method describes the hidden layers in order; a Dense output
layer of one neuron per class follows them::

    layers = [{type = "conv", channels = 8, kernel = 5, stride = 2, padding = 1},
              {type = "sumpool", size = 2},
              {type = "dense", size = 128, delay_max = 4}]

* ``conv``: Conv2D (cross-correlation) over the (C, H, W) grid of its source: channels, kernel (side),
  stride, padding (both sides), max_weight (largest |weight| in thresholds; 0: [network] max_weight_hidden).
* ``sumpool`` / ``avgpool``: a LIF layer fed by a fixed (untrained) Conv2D with groups = channels, kernel =
  stride = size, every weight ``weight`` (sumpool) or ``weight / size**2`` (avgpool) thresholds, as
  lava-dl's pooling blocks; gradients pass through it to the layers below.
* ``dense``: size neurons fed by every source neuron; delay_max > 0 gives each synapse a fixed delay drawn
  uniformly from 0..delay_max steps (seeded; a spike at t arrives at t + 1 + delay, pipeline.snn.network).

Weights are in threshold units (a weight of 1 makes a resting neuron spike from one event); parameter
``w{l}`` is layer l's trainable weights: conv (OC, C, K, K), dense input-major (n_in, n). Modes as
pipeline.train.lif_stack: "float" (FloatLIF, threshold 1) or "loihi" (quantization-aware: the forward is
the loihi backend's integer dynamics on the int8 mantissas the network file holds; straight-through
gradients). :meth:`LayerStack.network` writes populations ``hidden0``.. and ``output`` with projections
``conv{l}`` / ``pool{l}`` (Conv2D) and ``fc{l}`` (Dense, with its delays); :func:`compile_layers` turns
such a network file back into kernel arguments, so evaluating a saved file runs the training code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.core.schema import Key, check_table, toml_value
from pipeline.snn.network import INPUT, MAX_DELAY, Conv2D, Dense, FloatLIF, LoihiLIF, Network, Population
from pipeline.snn.weights import sign_mode, truncate_weights
from pipeline.train import conv_kernels as CK
from pipeline.train.lif_stack import MODES, Trace, loihi_decays, quantize, weight_exp_for

KINDS = ("conv", "sumpool", "avgpool", "dense")
_TYPE = Key("str", choices=KINDS, help="layer type")
_MAX_WEIGHT = Key("number", 0.0, low=0, high=1000, help="largest |weight| (thresholds; 0: the [network] default)")
LAYER_KEYS: dict[str, dict[str, Key]] = {
    "conv": {"channels": Key("int", low=1, high=4096, help="output channels"),
             "kernel": Key("int", low=1, high=64, help="kernel side (px)"),
             "stride": Key("int", 1, low=1, high=64, help="stride (px)"),
             "padding": Key("int", 0, low=0, high=64, help="zero padding on each side (px)"),
             "max_weight": _MAX_WEIGHT},
    "sumpool": {"size": Key("int", low=1, high=64, help="pooling window side = stride (px)"),
                "weight": Key("number", 1.1, low=0, low_open=True, high=100, help="weight of each input (thresholds)")},
    "avgpool": {"size": Key("int", low=1, high=64, help="pooling window side = stride (px)"),
                "weight": Key("number", 1.1, low=0, low_open=True, high=100,
                              help="weight of a full window (thresholds; each input weight / size**2)")},
    "dense": {"size": Key("int", low=1, high=100_000, help="neurons"),
              "delay_max": Key("int", 0, low=0, high=MAX_DELAY, help="per-synapse delays 0..delay_max (steps)"),
              "max_weight": _MAX_WEIGHT},
}


@dataclass(frozen=True)
class LayerSpec:
    """One hidden layer as configured (see the module docstring); unused fields keep their defaults."""

    kind: str
    size: int = 0
    channels: int = 0
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    delay_max: int = 0
    weight: float = 1.1
    max_weight: float = 0.0

    @classmethod
    def from_table(cls, table: dict) -> LayerSpec:
        fields = {k: v for k, v in table.items() if k != "type"}
        if table["type"] in ("sumpool", "avgpool"):
            size = fields.pop("size")
            fields.update(kernel=size, stride=size)
        return cls(kind=table["type"], **fields)


def check_layers(ctx, name: str, tables: list) -> list[LayerSpec]:
    """The ``[network] layers`` value as LayerSpecs; a LaunchError names file, section, ``layers[i].key``."""
    specs = []
    for i, table in enumerate(tables):
        where = f"{name}[{i}]"
        if "type" not in table:
            raise ctx.fail(f"{where}.type", f"missing (expected one of: {', '.join(KINDS)})")
        kind = table["type"]
        if kind not in KINDS:
            raise ctx.fail(f"{where}.type", f"expected one of: {', '.join(KINDS)}, got {toml_value(kind)}")
        keys = {f"{where}.{k}": spec for k, spec in LAYER_KEYS[kind].items()}
        checked = check_table(ctx, {f"{where}.{k}": v for k, v in table.items() if k != "type"}, keys)
        spec = LayerSpec.from_table({"type": kind, **{k[len(where) + 1:]: v for k, v in checked.items()}})
        if kind != "dense" and specs and specs[-1].kind == "dense":
            raise ctx.fail(f"{where}.type", f"a {kind} layer needs a grid: it cannot follow a dense layer")
        specs.append(spec)
    return specs


# ---------------------------------------------------------------------------------------------- compiled
@dataclass(frozen=True)
class StackLayer:
    """What the kernels need for one layer (pipeline.train.conv_kernels). kind "dense": weights (n_in, n),
    delays uint8 (n_in, n) or (0, 0); kind "conv": weights (OC, C / G, KH, KW), geometry int64
    (conv_kernels.GEOMETRY). Float: weights float32 in threshold units; loihi: int32 stored mantissas and
    the delivery shift. decay_u, decay_v float32 (n,); u_mult, v_mult, threshold int64 (n,) (loihi);
    w_eff float32 effective weights in threshold units (the backward's); param: the trainable weights'
    name ("" for a fixed pooling layer); graded: the layer reads event counts (else a count is a spike)."""

    kind: str
    mode: str
    weights: np.ndarray
    shift: int
    delays: np.ndarray
    geometry: np.ndarray
    decay_u: np.ndarray
    decay_v: np.ndarray
    u_mult: np.ndarray
    v_mult: np.ndarray
    threshold: np.ndarray
    w_eff: np.ndarray
    param: str
    graded: bool = True

    @property
    def size(self) -> int:
        return self.decay_u.shape[0]

    @property
    def n_in(self) -> int:
        return int(np.prod(self.geometry[:3])) if self.kind == "conv" else self.weights.shape[0]


def is_stack(layers) -> bool:
    """True for compiled layers of this module (not pipeline.train.lif_stack's)."""
    return bool(layers) and isinstance(layers[0], StackLayer)


def _geometry(in_shape, kernel_shape, stride, padding, groups) -> np.ndarray:
    c, h, w = in_shape
    oc, _, kh, kw = kernel_shape
    oh = (h + 2 * padding[0] - kh) // stride[0] + 1
    ow = (w + 2 * padding[1] - kw) // stride[1] + 1
    return np.array([c, h, w, oc, oh, ow, kh, kw, stride[0], stride[1], padding[0], padding[1], groups], np.int64)


def _loihi_stored(effective_weights: np.ndarray, bits: int, weight_exp: int, threshold: float):
    """(int32 stored mantissas, delivery shift, float32 effective weights in thresholds)."""
    return ((effective_weights >> bits).astype(np.int32), weight_exp + bits,
            (effective_weights * (2.0 ** (weight_exp + 6) / threshold)).astype(np.float32))


class LayerStack:
    """Trainable hidden layers ``specs`` (LayerSpec) on an input grid ``in_shape`` (C, H, W), then a Dense
    output of ``n_out`` neurons. Other arguments as pipeline.train.lif_stack.LifStack; ``max_weight``
    (hidden, output) is the default largest |weight| of trained layers (thresholds)."""

    def __init__(self, specs, in_shape, n_out: int, mode: str, tau_syn_ms: float, tau_mem_ms: float, dt_ms: float,
                 vth: int, max_weight: tuple[float, float], rng: np.random.Generator, init_gain: float = 1.0,
                 input_rate: float = 0.01):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.specs = [*specs, LayerSpec("dense", size=int(n_out), max_weight=float(max_weight[1]))]
        self.in_shape = tuple(int(s) for s in in_shape)
        self.mode = mode
        self.tau_syn_ms, self.tau_mem_ms, self.dt_ms = float(tau_syn_ms), float(tau_mem_ms), float(dt_ms)
        self.vth = int(vth)
        self.params: dict[str, np.ndarray] = {}
        self.delays: dict[int, np.ndarray] = {}
        self.shapes = []          # (source shape, target shape) per layer; a dense shape is (n,)
        self.weight_exp, self.limit, self.fixed = {}, {}, {}
        shape = self.in_shape
        for li, spec in enumerate(self.specs):
            where = f"[network] layers[{li}] ({spec.kind})"
            n_src = int(np.prod(shape))
            if spec.kind == "dense":
                out = (spec.size,)
                fan_in = n_src
                wshape = (n_src, spec.size)
            else:
                if len(shape) != 3:
                    raise ValueError(f"{where}: needs a grid, it cannot follow a dense layer")
                c, h, w = shape
                pad = spec.padding
                oc = spec.channels if spec.kind == "conv" else c
                oh, ow = (h + 2 * pad - spec.kernel) // spec.stride + 1, (w + 2 * pad - spec.kernel) // spec.stride + 1
                if oh < 1 or ow < 1:
                    raise ValueError(f"{where}: kernel {spec.kernel} gives an empty output grid on its input {shape}")
                out = (oc, oh, ow)
                fan_in = (c if spec.kind == "conv" else 1) * spec.kernel ** 2
                wshape = (oc, c, spec.kernel, spec.kernel) if spec.kind == "conv" else (c, 1, spec.kernel, spec.kernel)
            self.shapes.append((shape, out))
            if spec.kind in ("sumpool", "avgpool"):
                value = spec.weight / (spec.kernel ** 2 if spec.kind == "avgpool" else 1)
                self.fixed[li] = np.full(wshape, value, np.float32)
                self.weight_exp[li] = weight_exp_for(value, self.vth)
            else:
                m = spec.max_weight or float(max_weight[0])
                self.weight_exp[li] = weight_exp_for(m, self.vth)
                self.limit[li] = 254 * 2.0 ** self.weight_exp[li] / self.vth if mode == "loihi" else m
                active = max(fan_in * (input_rate if li == 0 else 0.05) * self.tau_mem_ms / self.dt_ms, 1.0)
                std = init_gain / math.sqrt(active) / max(self.tau_syn_ms / self.dt_ms, 1.0)
                self.params[f"w{li}"] = np.clip(rng.normal(0, std, wshape), -self.limit[li],
                                                self.limit[li]).astype(np.float32)
                if spec.kind == "dense" and spec.delay_max:
                    self.delays[li] = rng.integers(0, spec.delay_max + 1, wshape).astype(np.uint8)
            shape = out

    @property
    def n_layers(self) -> int:
        return len(self.specs)

    def clip(self) -> None:
        """Keep every trained weight inside its layer's range (in place)."""
        for name, w in self.params.items():
            lim = self.limit[int(name[1:])]
            np.clip(w, -lim, lim, out=w)

    def _values(self, li: int) -> np.ndarray:
        return self.params[f"w{li}"] if f"w{li}" in self.params else self.fixed[li]

    # ------------------------------------------------------------------ network description
    def network(self, input_shape=None, input_spec=None, readout=None) -> Network:
        """The trained stack as a Network (see the module docstring); the output population is probed (v)."""
        du, dv = loihi_decays(self.tau_syn_ms, self.tau_mem_ms, self.dt_ms)
        names = [f"hidden{i}" for i in range(self.n_layers - 1)] + ["output"]
        populations, projections = [], []
        for li, (spec, name) in enumerate(zip(self.specs, names)):
            neuron = LoihiLIF(du=du, dv=dv, vth=self.vth) if self.mode == "loihi" else \
                FloatLIF(tau_syn_ms=self.tau_syn_ms, tau_mem_ms=self.tau_mem_ms, threshold=1.0)
            populations.append(Population(name, int(np.prod(self.shapes[li][1])), neuron, probe_v=name == "output"))
            source = INPUT if li == 0 else names[li - 1]
            values = self._values(li)
            e = self.weight_exp[li]
            stored = quantize(values, e, self.vth).astype(np.int16) if self.mode == "loihi" else values.copy()
            graded = source == INPUT and input_spec is not None and input_spec.encoding == "counts"
            common = {"source": source, "target": name, "weight_exp": e if self.mode == "loihi" else 0,
                      "num_message_bits": 8 if graded else 0}
            if spec.kind == "dense":
                delay = self.delays[li].T.astype(np.int64) if li in self.delays else 0
                projections.append(Dense(name=f"fc{li}", weights=stored.T.copy(), delay=delay, **common))
            else:
                projections.append(Conv2D(name=f"{'conv' if spec.kind == 'conv' else 'pool'}{li}", kernel=stored,
                                          in_shape=self.shapes[li][0], stride=(spec.stride, spec.stride),
                                          padding=(spec.padding, spec.padding),
                                          groups=1 if spec.kind == "conv" else self.shapes[li][0][0], **common))
        return Network(n_inputs=int(np.prod(self.in_shape)), populations=populations, projections=projections,
                       output="output", dt_ms=self.dt_ms, input_shape=input_shape, input_spec=input_spec,
                       readout=readout)

    def layers(self) -> list[StackLayer]:
        """Kernel arguments of the current weights (quantized in loihi mode), as
        ``compile_layers(self.network())`` gives them, without building the description."""
        du, dv = loihi_decays(self.tau_syn_ms, self.tau_mem_ms, self.dt_ms)
        out = []
        for li, spec in enumerate(self.specs):
            n = int(np.prod(self.shapes[li][1]))
            values = self._values(li)
            conv = spec.kind != "dense"
            geometry = _geometry(self.shapes[li][0], values.shape, (spec.stride,) * 2, (spec.padding,) * 2,
                                 1 if spec.kind in ("conv", "dense") else self.shapes[li][0][0]) if conv \
                else np.zeros(0, np.int64)
            delays = self.delays.get(li, np.zeros((0, 0), np.uint8))
            param = f"w{li}" if f"w{li}" in self.params else ""
            if self.mode == "float":
                decay_u = np.full(n, math.exp(-self.dt_ms / self.tau_syn_ms), np.float32)
                decay_v = np.full(n, math.exp(-self.dt_ms / self.tau_mem_ms), np.float32)
                empty = np.zeros(0, np.int64)
                w = np.ascontiguousarray(values, np.float32)
                out.append(StackLayer("conv" if conv else "dense", "float", w, 0, delays, geometry, decay_u, decay_v,
                                      empty, empty, empty, w, param))
                continue
            u_mult = np.full(n, 4095 - du, np.int64)
            v_mult = np.full(n, 4096 - dv, np.int64)
            threshold = np.full(n, self.vth << 6, np.int64)
            effective, bits = truncate_weights(quantize(values, self.weight_exp[li], self.vth), 8)
            weights, shift, w_eff = _loihi_stored(effective, bits, self.weight_exp[li], self.vth << 6)
            out.append(StackLayer("conv" if conv else "dense", "loihi", weights, shift, delays, geometry,
                                  (u_mult / 4096).astype(np.float32), (v_mult / 4096).astype(np.float32),
                                  u_mult, v_mult, threshold, w_eff, param))
        return out


def compile_layers(network: Network) -> list[StackLayer]:
    """Kernel arguments of a chain input -> p0 -> p1 -> ... where each population is fed by one Dense (any
    delays) or Conv2D (dilation 1, delay 0) projection from the previous one (zero bias and refractory).
    ValueError naming the population for anything else."""
    pops = network.populations
    layers = []
    for li, population in enumerate(pops):
        source = INPUT if li == 0 else pops[li - 1].name
        into = [p for p in network.projections if p.target == population.name]
        owner = f"population {population.name!r}"
        if len(into) != 1 or into[0].source != source:
            raise ValueError(f"{owner}: the trainer handles a chain of layers, each fed by one projection from "
                             f"the previous ({source!r})")
        projection = into[0]
        conv = isinstance(projection, Conv2D)
        if conv and (projection.dilation != (1, 1) or projection.delay != 0):
            raise ValueError(f"{owner}: the trainer's Conv2D has dilation 1 and delay 0")
        if not conv and not isinstance(projection, Dense):
            raise ValueError(f"{owner}: the trainer handles Dense and Conv2D projections, got "
                             f"{type(projection).__name__}")
        n = population.size
        n_pre = network.source_size(source)
        values = projection.kernel if conv else np.ascontiguousarray(projection.weights.T)
        geometry = _geometry(projection.in_shape, values.shape, projection.stride, projection.padding,
                             projection.groups) if conv else np.zeros(0, np.int64)
        delays = np.zeros((0, 0), np.uint8)
        if not conv and np.ndim(projection.delay):
            delays = np.ascontiguousarray(np.asarray(projection.delay).T).astype(np.uint8)
        elif not conv and projection.delay:
            delays = np.full((n_pre, n), int(projection.delay), np.uint8)
        a = population.neuron.arrays(owner, n)
        loihi = isinstance(population.neuron, LoihiLIF)
        if np.any(a["bias_mant" if loihi else "bias"]) or np.any(a["refractory" if loihi else "refractory_ms"]):
            raise ValueError(f"{owner}: bias and refractory must be 0 for the trainer")
        th = (a["vth"] << 6).astype(np.int64) if loihi else a["threshold"]
        if conv and np.any(th != th[0]):
            raise ValueError(f"{owner}: a Conv2D target needs one threshold for all its neurons")
        scale = th[0] if conv else th[None, :]
        if loihi:
            u_mult = (4095 - a["du"]).astype(np.int64)
            v_mult = (4096 - a["dv"]).astype(np.int64)
            effective, bits = truncate_weights(values, projection.num_weight_bits)
            if conv and sign_mode(projection.synapses(n_pre, n)[2]) != sign_mode(values):
                raise ValueError(f"{owner}: the kernel taps that reach the grid change its sign mode")
            shift = int(projection.weight_exp) + bits
            if delays.size and shift < 0 and np.unique(delays).size > 1:
                raise ValueError(f"{owner}: the trainer needs a delivery shift >= 0 with per-synapse delays")
            w_eff = (effective * 2.0 ** (projection.weight_exp + 6) / scale).astype(np.float32)
            layers.append(StackLayer("conv" if conv else "dense", "loihi", (effective >> bits).astype(np.int32),
                                     shift, delays, geometry, (u_mult / 4096).astype(np.float32),
                                     (v_mult / 4096).astype(np.float32), u_mult, v_mult, th, w_eff, "",
                                     bool(projection.num_message_bits)))
        else:
            dt = float(network.dt_ms)
            with np.errstate(divide="ignore"):
                decay_u = np.exp(-dt / a["tau_syn_ms"]).astype(np.float32)
                decay_v = np.exp(-dt / a["tau_mem_ms"]).astype(np.float32)
            w = np.ascontiguousarray(values / scale, np.float32)
            empty = np.zeros(0, np.int64)
            layers.append(StackLayer("conv" if conv else "dense", "float", w, 0, delays, geometry, decay_u, decay_v,
                                     empty, empty, empty, w, "", bool(projection.num_message_bits)))
    return layers


def is_stack_network(network: Network) -> bool:
    """True when a network needs this module's trainer (a Conv2D or a delayed projection)."""
    return any(isinstance(p, Conv2D) or np.any(np.asarray(p.delay)) for p in network.projections)


# ---------------------------------------------------------------------------------------------- passes
def forward(layers: list[StackLayer], indptr: np.ndarray, index: np.ndarray, count: np.ndarray, n_steps: int
            ) -> list[Trace]:
    """Run a batch (input events CSR, see pipeline.train.kernels) through every layer."""
    traces = []
    n_batch = indptr.shape[0]
    for li, layer in enumerate(layers):
        n = layer.size
        if li == 0 and not layer.graded:
            count = np.ones_like(count)
        dtype = np.float32 if layer.mode == "float" else np.int32
        current = np.zeros((n_batch, n_steps, n), dtype)
        c = count.astype(dtype, copy=False)
        if layer.kind == "conv":
            CK.conv_current(indptr, index, c, layer.weights, layer.geometry, current)
        else:
            CK.dense_current(indptr, index, c, layer.weights, layer.delays, current)
        vnorm = np.empty((n_batch, n_steps, n), np.float32)
        spikes = np.empty((n_batch, n_steps, n), np.uint8)
        out_indptr = np.empty((n_batch, n_steps + 1), np.int64)
        out_index = np.empty(n_batch * n_steps * n, np.int32)
        if layer.mode == "loihi":
            CK.lif_loihi(current, layer.shift, layer.u_mult, layer.v_mult, layer.threshold, vnorm, spikes,
                         out_indptr, out_index)
        else:
            CK.lif_float(current, layer.decay_u, layer.decay_v, vnorm, spikes, out_indptr, out_index)
        del current
        count = np.ones(out_index.shape[0], np.float32)
        traces.append(Trace(vnorm, spikes, out_indptr, out_index, count))
        indptr, index = out_indptr, out_index
    return traces


def backward(layers: list[StackLayer], traces: list[Trace], inputs: tuple[np.ndarray, np.ndarray, np.ndarray],
             grad_spikes: np.ndarray, grad_v: np.ndarray | None, kind: int, slope: float,
             has_recurrent: bool = False) -> dict[str, np.ndarray]:
    """Gradients (threshold units) of every trained weight ``w{l}``, same contract as
    pipeline.train.lif_stack.backward (``has_recurrent`` is unused: these layers have none)."""
    grads = {}
    g_s = np.ascontiguousarray(grad_spikes, np.float32)
    g_v = np.zeros((0, 0, 0), np.float32) if grad_v is None else np.ascontiguousarray(grad_v, np.float32)
    for li in range(len(layers) - 1, -1, -1):
        layer, trace = layers[li], traces[li]
        n_batch, n_steps, n = trace.vnorm.shape
        grad_a = np.empty_like(trace.vnorm)
        CK.lif_backward(g_s, g_v, trace.vnorm, trace.spikes, layer.decay_u, layer.decay_v, kind, float(slope), grad_a)
        if li == 0:
            src = inputs
            if not layer.graded:
                src = (src[0], src[1], np.ones(src[1].shape[0], np.float32))
        else:
            prev = traces[li - 1]
            src = (prev.indptr, prev.index, prev.count)
        slots = max(1, min(CK.GRAD_SLOTS, n_batch))
        if layer.param:
            count = src[2].astype(np.float32, copy=False)
            if layer.kind == "conv":
                grads[layer.param] = CK.conv_weight_grad(src[0], src[1], count, layer.geometry, grad_a,
                                                         np.empty((slots, *layer.weights.shape), np.float32))
            else:
                grads[layer.param] = CK.dense_weight_grad(src[0], src[1], count, layer.delays, grad_a,
                                                          np.empty((slots, *layer.weights.shape), np.float32))
        if li == 0:
            break
        g_s = np.empty((n_batch, n_steps, layer.n_in), np.float32)
        if layer.kind == "conv":
            CK.conv_source_grad(layer.w_eff, layer.geometry, grad_a, g_s)
        elif layer.delays.size:
            CK.dense_source_grad(layer.w_eff, layer.delays, grad_a, g_s)
        else:
            back = (grad_a.reshape(n_batch * n_steps, n) @ layer.w_eff.T).reshape(n_batch, n_steps, layer.n_in)
            g_s[:, :-1, :] = back[:, 1:, :]
            g_s[:, -1, :] = 0
        g_v = np.zeros((0, 0, 0), np.float32)
    return grads
