"""Differential test against Lava's bit-accurate outputs (files laid out like lava_reference.npz).

One-layer scenario ``X`` (found by its ``X_weights`` key): RingBuffer(``X_spikes_in`` (n_in, T)) ->
Dense(``X_weights`` (n_out, n_in), optional ``X_param_dense_weight_exp``, ``X_param_dense_num_weight_bits``)
-> LIF(``X_param_du``, ``_dv``, ``_vth``, ``_bias_mant``, ``_bias_exp``), recorded ``X_spikes``, ``X_v``,
``X_u`` (T, n_out). Two-layer scenario ``D`` (found by ``D_W1``): ``D_W1``, ``D_W2``, ``D_spikes_in``,
per-layer ``D_l1_*``/``D_l2_*``, recorded ``D_s1``, ``D_s2``, ``D_v2``. Sizes and T come from the arrays.

A file laid out like lava_learning_reference.npz (``pre``, ``post``, ``W0``, ``weights``, ``x1``, ``y1``,
``a_out``, ``params`` naming the STDPLoihi rule) is checked as scenario ``learning``: Dense + the Loihi
learning engine (pipeline.snn.learning.engine) with the spikes injected, every weight and trace every step.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.snn.network import INPUT, Dense, LoihiLIF, Network, Population
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
        place = f"neuron {self.where[0]}" if len(self.where) == 1 else f"synapse (post, pre) {self.where}"
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
        if key not in self.data.files:
            raise ValueError(f"{self.path}: missing key {key!r}")
        return self.data[key]

    def optional(self, key: str, default: int) -> int:
        return int(self.data[key]) if key in self.data.files else default


def _lif(arrays: _Arrays, prefix: str, size: int) -> LoihiLIF:
    return LoihiLIF(du=arrays(prefix + "du"), dv=arrays(prefix + "dv"), vth=arrays(prefix + "vth"),
                    bias_mant=arrays(prefix + "bias_mant"), bias_exp=arrays(prefix + "bias_exp"))


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


def _run(network: Network, spikes_in: np.ndarray, record: dict[str, tuple[str, str]]) -> dict[str, np.ndarray]:
    """Run on the loihi backend; record[quantity] = (population, "spikes"|"u"|"v") -> (T, size) int64."""
    runtime = build(network, "loihi")
    steps = _spike_lists(spikes_in)
    out = {q: np.zeros((len(steps), network.population(pop).size), dtype=np.int64) for q, (pop, _) in record.items()}
    readers = {}
    for quantity, (pop, what) in record.items():
        readers[quantity] = {"spikes": runtime.spikes_of, "u": runtime.u, "v": runtime.v}[what](pop)
    for t, active in enumerate(steps):
        runtime.step(active)
        for quantity, view in readers.items():
            out[quantity][t] = view
    return out


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
    one = sorted(k[: -len("_weights")] for k in data.files if k.endswith("_weights"))
    two = sorted(k[: -len("_W1")] for k in data.files if k.endswith("_W1"))
    return one, two


def run_file(path: str | Path) -> list[Check]:
    """Run every scenario of ``path``; one Check per recorded quantity, in file order."""
    path = Path(path)
    checks: list[Check] = []
    with np.load(path, allow_pickle=False) as data:
        arrays = _Arrays(data, path)
        one, two = scenario_names(data)
        learning = all(k in data.files for k in LEARNING_KEYS)
        if not one and not two and not learning:
            raise ValueError(f"{path}: no scenario found (expected keys '<name>_weights', '<name>_W1' or "
                             f"{', '.join(LEARNING_KEYS)})")
        for name in one:
            try:
                network = one_layer_network(arrays, name)
                got = _run(network, arrays(f"{name}_spikes_in"),
                           {"spikes": ("lif", "spikes"), "v": ("lif", "v"), "u": ("lif", "u")})
            except ValueError as error:
                raise ValueError(f"{path}: scenario {name}: {error}") from error
            for quantity in ("spikes", "v", "u"):
                expected = arrays(f"{name}_{quantity}")
                checks.append(Check(name, quantity, expected.shape, _first_mismatch(expected, got[quantity])))
        for name in two:
            try:
                network = two_layer_network(arrays, name)
                got = _run(network, arrays(f"{name}_spikes_in"),
                           {"s1": ("l1", "spikes"), "s2": ("l2", "spikes"), "v2": ("l2", "v")})
            except ValueError as error:
                raise ValueError(f"{path}: scenario {name}: {error}") from error
            for quantity in ("s1", "s2", "v2"):
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
