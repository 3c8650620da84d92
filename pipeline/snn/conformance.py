"""Differential test against Lava's bit-accurate outputs (files laid out like lava_reference.npz).

One-layer scenario ``X`` (found by its ``X_weights`` key): RingBuffer(``X_spikes_in`` (n_in, T)) ->
Dense(``X_weights`` (n_out, n_in), optional ``X_param_dense_weight_exp``, ``X_param_dense_num_weight_bits``)
-> LIF(``X_param_du``, ``_dv``, ``_vth``, ``_bias_mant``, ``_bias_exp``), recorded ``X_spikes``, ``X_v``,
``X_u`` (T, n_out). Two-layer scenario ``D`` (found by ``D_W1``): ``D_W1``, ``D_W2``, ``D_spikes_in``,
per-layer ``D_l1_*``/``D_l2_*``, recorded ``D_s1``, ``D_s2``, ``D_v2``. Sizes and T come from the arrays.

A file with a ``scenarios`` key (lava_structures_reference.npz) lists its scenarios; each is dispatched on
its ``<P>_kind`` text (:data:`STRUCTURE_KINDS`): Sparse, recurrent Dense, DelayDense, DelaySparse, Conv
(Lava's true convolution on (X, Y, C), lowered to a Conv2D in (C, H=Y, W=X) order with the kernel
flipped; traces compared in (T, X, Y, C)), graded spikes, or the plain one-layer layout. A kind that
none of them describes is an error, never skipped.

A file laid out like lava_learning_reference.npz (``pre``, ``post``, ``W0``, ``weights``, ``x1``, ``y1``,
``a_out``, ``params`` naming the STDPLoihi rule) is checked as scenario ``learning``: Dense + the Loihi
learning engine (pipeline.snn.learning.engine) with the spikes injected, every weight and trace every step.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.npz import load_npz
from pipeline.snn.network import INPUT, Conv2D, Dense, LoihiLIF, Network, Population, Sparse
from pipeline.snn.runtime import build


@dataclass
class Mismatch:
    """First differing value of one recorded array: step, position within the step (neuron, or
    (post, pre) for weights), Lava's value and ours. step = -1 when the shapes differ."""

    step: int
    where: tuple[int, ...]
    expected: int
    got: int

    def describe(self) -> str:
        if self.step < 0:
            return f"shape differs: expected {self.expected} values, got {self.got}"
        if len(self.where) == 1:
            place = f"neuron {self.where[0]}"
        elif len(self.where) == 2:
            place = f"synapse (post, pre) {self.where}"
        else:
            place = f"neuron (x, y, c) {self.where}"
        return f"step {self.step}, {place}: expected {self.expected}, got {self.got}"


@dataclass
class Check:
    scenario: str
    quantity: str
    shape: tuple[int, ...]
    mismatch: Mismatch | None

    @property
    def ok(self) -> bool:
        return self.mismatch is None


class _Arrays:
    def __init__(self, data, path: Path):
        self.data, self.path = data, path

    def __call__(self, key: str) -> np.ndarray:
        if key not in self.data:
            raise ValueError(f"{self.path}: missing key {key!r}")
        return self.data[key]

    def optional(self, key: str, default: int) -> int:
        return int(self.data[key]) if key in self.data else default


def _xyc_to_flat(values: np.ndarray) -> np.ndarray:
    """A Lava (X, Y, C[, T]) array in our (C, H=Y, W=X) neuron order: (n[, T])."""
    moved = np.moveaxis(np.asarray(values), (0, 1, 2), (2, 1, 0))
    return moved.reshape((-1,) + moved.shape[3:])


def _lif(arrays: _Arrays, prefix: str, size: int) -> LoihiLIF:
    """LIF parameters of a scenario; (X, Y, C) arrays (conv LIFs) are put in our neuron order."""
    values = {}
    for name in ("du", "dv", "vth", "bias_mant", "bias_exp"):
        value = arrays(prefix + name)
        values[name] = _xyc_to_flat(value) if value.ndim == 3 else value
    return LoihiLIF(**values)


def _spike_lists(spikes_in: np.ndarray) -> list[np.ndarray]:
    """Per step the active input indices of a (n_in, T) 0/1 array."""
    return [np.flatnonzero(spikes_in[:, t]).astype(np.int32) for t in range(spikes_in.shape[1])]


def _first_mismatch(expected: np.ndarray, got: np.ndarray) -> Mismatch | None:
    if expected.shape != got.shape:
        return Mismatch(-1, (), int(np.prod(expected.shape)), int(np.prod(got.shape)))
    diff = np.argwhere(expected.astype(np.int64) != got.astype(np.int64))
    if diff.size == 0:
        return None
    index = tuple(int(x) for x in diff[0])
    return Mismatch(index[0], index[1:], int(expected[index]), int(got[index]))


def one_layer_network(arrays: _Arrays, name: str) -> Network:
    weights = arrays(f"{name}_weights")
    n_out, n_in = weights.shape
    prefix = f"{name}_param_"
    lif = Population("lif", n_out, _lif(arrays, prefix, n_out), probe_u=True, probe_v=True)
    dense = Dense(name="dense", source=INPUT, target="lif", weights=weights,
                  weight_exp=arrays.optional(prefix + "dense_weight_exp", 0),
                  num_weight_bits=arrays.optional(prefix + "dense_num_weight_bits", 8))
    return Network(n_inputs=n_in, populations=[lif], projections=[dense])


def two_layer_network(arrays: _Arrays, name: str) -> Network:
    w1, w2 = arrays(f"{name}_W1"), arrays(f"{name}_W2")
    l1 = Population("l1", w1.shape[0], _lif(arrays, f"{name}_l1_", w1.shape[0]))
    l2 = Population("l2", w2.shape[0], _lif(arrays, f"{name}_l2_", w2.shape[0]), probe_v=True)
    projections = [
        Dense(name="w1", source=INPUT, target="l1", weights=w1,
              weight_exp=arrays.optional(f"{name}_l1_dense_weight_exp", 0),
              num_weight_bits=arrays.optional(f"{name}_l1_dense_num_weight_bits", 8)),
        Dense(name="w2", source="l1", target="l2", weights=w2,
              weight_exp=arrays.optional(f"{name}_l2_dense_weight_exp", 0),
              num_weight_bits=arrays.optional(f"{name}_l2_dense_num_weight_bits", 8)),
    ]
    return Network(n_inputs=w1.shape[1], populations=[l1, l2], projections=projections)


def _run(network: Network, spikes_in: np.ndarray, record: dict[str, tuple[str, str]],
         graded: bool = False) -> dict[str, np.ndarray]:
    """Run on the loihi backend; record[quantity] = (population, "spikes"|"u"|"v") -> (T, size) int64.
    ``graded``: the nonzero values of ``spikes_in`` are spike payloads."""
    runtime = build(network, "loihi")
    steps = _spike_lists(spikes_in)
    out = {q: np.zeros((len(steps), network.population(pop).size), dtype=np.int64) for q, (pop, _) in record.items()}
    readers = {}
    for quantity, (pop, what) in record.items():
        readers[quantity] = {"spikes": runtime.spikes_of, "u": runtime.u, "v": runtime.v}[what](pop)
    for t, active in enumerate(steps):
        runtime.step(active, spikes_in[active, t] if graded else None)
        for quantity, view in readers.items():
            out[quantity][t] = view
    return out


def _lava_csr(arrays: _Arrays, prefix: str, delays_key: str | None = None, **fields) -> Sparse:
    """A Sparse projection from scipy CSR keys over post rows (``<prefix>_data/_indices/_indptr/_shape``)."""
    data, indices, indptr = (arrays(f"{prefix}_{k}") for k in ("data", "indices", "indptr"))
    n_out, n_in = (int(x) for x in arrays(f"{prefix}_shape"))
    if indptr.shape != (n_out + 1,) or indices.shape != data.shape:
        raise ValueError(f"{arrays.path}: keys {prefix}_* are not a CSR matrix of shape {(n_out, n_in)}")
    post = np.repeat(np.arange(n_out), np.diff(indptr))
    order = np.lexsort((post, indices))
    ours = np.zeros(n_in + 1, dtype=np.int64)
    np.cumsum(np.bincount(indices, minlength=n_in), out=ours[1:])
    if delays_key is not None:
        fields["delay"] = arrays(delays_key).astype(np.int64)[order]
    return Sparse(indptr=ours, indices=post[order].astype(np.int32), weights=data[order], **fields)


def _dense_fields(arrays: _Arrays, prefix: str) -> dict:
    return dict(weight_exp=arrays.optional(prefix + "weight_exp", 0),
                num_weight_bits=arrays.optional(prefix + "num_weight_bits", 8))


def _lif_network(arrays: _Arrays, name: str, n_in: int, size: int, projections) -> Network:
    lif = Population("lif", size, _lif(arrays, f"{name}_param_", size), probe_u=True, probe_v=True)
    return Network(n_inputs=n_in, populations=[lif], projections=projections)


def sparse_network(arrays: _Arrays, name: str) -> Network:
    sparse = _lava_csr(arrays, f"{name}_weights", name="sparse", source=INPUT, target="lif",
                       **_dense_fields(arrays, f"{name}_param_dense_"))
    n_out, n_in = (int(x) for x in arrays(f"{name}_weights_shape"))
    return _lif_network(arrays, name, n_in, n_out, [sparse])


def recurrent_network(arrays: _Arrays, name: str) -> Network:
    w_in, w_rec = arrays(f"{name}_W_in"), arrays(f"{name}_W_rec")
    projections = [Dense(name="in", source=INPUT, target="lif", weights=w_in,
                         **_dense_fields(arrays, f"{name}_param_dense_in_")),
                   Dense(name="rec", source="lif", target="lif", weights=w_rec,
                         **_dense_fields(arrays, f"{name}_param_dense_rec_"))]
    return _lif_network(arrays, name, w_in.shape[1], w_in.shape[0], projections)


def delay_dense_network(arrays: _Arrays, name: str) -> Network:
    weights = arrays(f"{name}_W")
    dense = Dense(name="delay_dense", source=INPUT, target="lif", weights=weights,
                  delay=arrays(f"{name}_delays").astype(np.int64), **_dense_fields(arrays, f"{name}_param_dense_"))
    return _lif_network(arrays, name, weights.shape[1], weights.shape[0], [dense])


def delay_sparse_network(arrays: _Arrays, name: str) -> Network:
    sparse = _lava_csr(arrays, f"{name}_weights", f"{name}_delays_data", name="delay_sparse", source=INPUT,
                       target="lif", **_dense_fields(arrays, f"{name}_param_dense_"))
    n_out, n_in = (int(x) for x in arrays(f"{name}_weights_shape"))
    return _lif_network(arrays, name, n_in, n_out, [sparse])


def lava_conv(weight: np.ndarray, input_xyc, stride_xy, padding_xy, dilation_xy, groups: int, **fields) -> Conv2D:
    """Lava's Conv (true convolution on (X, Y, C), weight (C_out, Kx, Ky, C_in / groups), geometry (x, y),
    weights used as given) as a Conv2D on (C, H=Y, W=X): the kernel flipped in both axes."""
    kernel = np.asarray(weight)[:, ::-1, ::-1, :].transpose(0, 3, 2, 1)
    x, y, c = (int(v) for v in input_xyc)
    return Conv2D(kernel=kernel, in_shape=(c, y, x), stride=tuple(int(v) for v in stride_xy[::-1]),
                  padding=tuple(int(v) for v in padding_xy[::-1]), dilation=tuple(int(v) for v in dilation_xy[::-1]),
                  groups=int(groups), prepare_weights=False, **fields)


def conv_network(arrays: _Arrays, name: str) -> Network:
    conv = lava_conv(arrays(f"{name}_weight"), arrays(f"{name}_input_shape"), arrays(f"{name}_stride"),
                     arrays(f"{name}_padding"), arrays(f"{name}_dilation"), int(arrays(f"{name}_groups")),
                     name="conv", source=INPUT, target="lif")
    out_xyc = tuple(int(v) for v in arrays(f"{name}_output_shape"))
    if conv.out_shape() != (out_xyc[2], out_xyc[1], out_xyc[0]):
        raise ValueError(f"{arrays.path}: key {name}_output_shape is {out_xyc}, the geometry gives (X, Y, C) "
                         f"{conv.out_shape()[::-1]}")
    return _lif_network(arrays, name, int(np.prod(conv.in_shape)), int(np.prod(out_xyc)), [conv])


def graded_network(arrays: _Arrays, name: str) -> Network:
    weights = arrays(f"{name}_W")
    prefix = f"{name}_param_dense_"
    dense = Dense(name="graded", source=INPUT, target="lif", weights=weights,
                  num_message_bits=arrays.optional(prefix + "num_message_bits", 0), **_dense_fields(arrays, prefix))
    return _lif_network(arrays, name, weights.shape[1], weights.shape[0], [dense])


#: ``<P>_kind`` text -> how the scenario is built, tried in order (the first fragment found wins).
STRUCTURE_KINDS = (
    ("graded spikes", graded_network),
    ("DelayDense(", delay_dense_network),
    ("DelaySparse(", delay_sparse_network),
    ("Conv(", conv_network),
    ("Sparse(", sparse_network),
    ("LIF.s_out -> Dense(W_rec) -> same LIF.a_in", recurrent_network),
    ("RingBuffer -> Dense -> LIF", one_layer_network),
)


def structure_scenario(arrays: _Arrays, name: str) -> list[Check]:
    """Build, run and compare one scenario of a structures file (spikes, v, u)."""
    kind = str(arrays(f"{name}_kind"))
    builder = next((b for fragment, b in STRUCTURE_KINDS if fragment in kind), None)
    if builder is None:
        raise ValueError(f"{arrays.path}: scenario {name}: unknown kind {kind!r} (known: "
                         f"{[fragment for fragment, _ in STRUCTURE_KINDS]})")
    network = builder(arrays, name)
    spikes_in = arrays(f"{name}_spikes_in")
    conv = builder is conv_network
    if conv:
        spikes_in = _xyc_to_flat(spikes_in)
    got = _run(network, spikes_in, {"spikes": ("lif", "spikes"), "v": ("lif", "v"), "u": ("lif", "u")},
               graded=builder is graded_network)
    checks = []
    for quantity in ("spikes", "v", "u"):
        expected = arrays(f"{name}_{quantity}")
        values = got[quantity]
        if conv:
            x, y, c = expected.shape[1:]
            values = values.reshape(-1, c, y, x).transpose(0, 3, 2, 1)
        checks.append(Check(name, quantity, expected.shape, _first_mismatch(expected, values)))
    return checks


LEARNING_KEYS = ("pre", "post", "W0", "weights", "x1", "y1", "a_out", "params")


def stdp_from_params(text: str, path: Path):
    """The STDPLoihi rule named by a learning file's ``params`` string."""
    from pipeline.snn.learning.engine import stdp_loihi

    values = dict(re.findall(r"(\w+)=(-?[\d.]+)", text))
    needed = ("learning_rate", "A_plus", "A_minus", "tau_plus", "tau_minus", "t_epoch", "rng_seed")
    if not text.startswith("STDPLoihi(") or any(k not in values for k in needed):
        raise ValueError(f"{path}: key 'params' must name STDPLoihi({', '.join(k + '=...' for k in needed)}), got {text!r}")
    if "MIXED" not in text.upper():
        raise ValueError(f"{path}: key 'params' must state sign_mode=MIXED (the only mode these files use), got {text!r}")
    impulses = {k: float(values.get(k, 16)) for k in ("x1_impulse", "y1_impulse")}
    return stdp_loihi(float(values["learning_rate"]), float(values["A_plus"]), float(values["A_minus"]),
                      float(values["tau_plus"]), float(values["tau_minus"]), t_epoch=int(float(values["t_epoch"])),
                      rng_seed=int(float(values["rng_seed"])), **impulses)


def run_learning(arrays: _Arrays) -> list[Check]:
    """Dense with spikes ``pre`` (n_pre, T) and the learning engine with post spikes ``post`` (n_post, T)."""
    from pipeline.snn.learning.engine import LearningEngine, learning_dense_weights

    rule = stdp_from_params(str(arrays("params").ravel()[0]), arrays.path)
    weights = learning_dense_weights(arrays("W0"), "mixed").astype(np.int32)  # [post, pre]
    engine = LearningEngine(rule, weights.T, "mixed")
    pre, post = arrays("pre").astype(np.uint8), arrays("post").astype(np.uint8)
    steps = pre.shape[1]
    got = {"weights": np.zeros((steps,) + weights.shape, np.int64), "x1": np.zeros((steps, pre.shape[0]), np.int64),
           "y1": np.zeros((steps, post.shape[0]), np.int64), "a_out": np.zeros((steps, weights.shape[0]), np.int64)}
    a_next = np.zeros(weights.shape[0], np.int64)
    for t in range(steps):
        got["a_out"][t] = a_next  # Dense sends the previous step's sum
        a_next = weights[:, pre[:, t].astype(bool)].sum(axis=1)
        engine.step_masks(pre[:, t], post[:, t])
        got["weights"][t], got["x1"][t], got["y1"][t] = weights, engine.x1, engine.y1
    return [Check("learning", quantity, arrays(quantity).shape, _first_mismatch(arrays(quantity), values))
            for quantity, values in got.items()]


def scenario_names(data) -> tuple[list[str], list[str]]:
    """(one-layer names, two-layer names) present in an opened npz."""
    one = sorted(k[: -len("_weights")] for k in data if k.endswith("_weights"))
    two = sorted(k[: -len("_W1")] for k in data if k.endswith("_W1"))
    return one, two


# Recorded quantity -> (population, state variable) of the Dense scenarios, in the files' order.
ONE_LAYER_PROBES = {"spikes": ("lif", "spikes"), "v": ("lif", "v"), "u": ("lif", "u")}
TWO_LAYER_PROBES = {"s1": ("l1", "spikes"), "s2": ("l2", "spikes"), "v2": ("l2", "v")}


def run_file(path: str | Path) -> list[Check]:
    """Run every scenario of ``path``; one Check per recorded quantity, in file order."""
    path = Path(path)
    checks: list[Check] = []
    data = load_npz(path)
    arrays = _Arrays(data, path)
    if "scenarios" in data:
        for name in (str(n) for n in data["scenarios"]):
            try:
                checks.extend(structure_scenario(arrays, name))
            except ValueError as error:
                if str(path) in str(error):
                    raise
                raise ValueError(f"{path}: scenario {name}: {error}") from error
        return checks
    one, two = scenario_names(data)
    learning = all(k in data for k in LEARNING_KEYS)
    if not one and not two and not learning:
        raise ValueError(f"{path}: no scenario found (expected keys '<name>_weights', '<name>_W1' or "
                         f"{', '.join(LEARNING_KEYS)})")
    scenarios = [(name, one_layer_network, ONE_LAYER_PROBES) for name in one]
    scenarios += [(name, two_layer_network, TWO_LAYER_PROBES) for name in two]
    for name, build, probes in scenarios:
        try:
            got = _run(build(arrays, name), arrays(f"{name}_spikes_in"), probes)
        except ValueError as error:
            raise ValueError(f"{path}: scenario {name}: {error}") from error
        for quantity in probes:
            expected = arrays(f"{name}_{quantity}")
            checks.append(Check(name, quantity, expected.shape, _first_mismatch(expected, got[quantity])))
    if learning:
        checks.extend(run_learning(arrays))
    return checks


def summary(checks: list[Check]) -> dict[str, dict[str, bool]]:
    """{"A": {"spikes": True, "v": True, "u": True}, ..., "D": {"s1": ..., "s2": ..., "v2": ...}}."""
    result: dict[str, dict[str, bool]] = {}
    for check in checks:
        result.setdefault(check.scenario, {})[check.quantity] = check.ok
    return result
