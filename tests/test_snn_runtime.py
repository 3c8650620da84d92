"""Runtime hooks: a learning projection drives pipeline.snn.learning.engine's engine with the runtime's spikes."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.snn import INPUT, Dense, LoihiLIF, Network, Population, build
from pipeline.snn.learning.engine import LearningEngine, learning_dense_weights, stdp_loihi


def plastic_network(w0: np.ndarray) -> Network:
    rule = stdp_loihi(1, 2, -2, 10, 8, t_epoch=2, rng_seed=42)
    return Network(n_inputs=w0.shape[1],
                   populations=[Population("p", w0.shape[0], LoihiLIF(du=2000, dv=1000, vth=30, bias_mant=1, bias_exp=5))],
                   projections=[Dense(name="plastic", source=INPUT, target="p", weights=w0, learning=rule)])


def test_learning_projection_matches_a_standalone_engine_fed_the_same_spikes():
    rng = np.random.default_rng(4)
    w0 = rng.integers(-60, 120, (6, 12))
    runtime = build(plastic_network(w0), "loihi")
    reference = LearningEngine(stdp_loihi(1, 2, -2, 10, 8, t_epoch=2, rng_seed=42),
                               learning_dense_weights(w0.T.copy(), "mixed").astype(np.int32), "mixed")
    updates = 0
    for t in range(120):
        active = np.flatnonzero(rng.random(12) < 0.2).astype(np.int32)
        pre = np.zeros(12, np.uint8)
        pre[active] = 1
        post = runtime.step(active).copy()
        updates += reference.step_masks(pre, post)
    weights = runtime.weights.reshape(12, 6)
    assert updates > 0 and runtime.counters.total()["learning_updates"] == updates
    np.testing.assert_array_equal(weights, reference.weights)
    assert not np.array_equal(weights, learning_dense_weights(w0.T, "mixed"))  # the weights did learn


def test_learning_runs_on_the_float_backend_and_needs_a_rule():
    rng = np.random.default_rng(4)
    w0 = rng.integers(-60, 120, (6, 12))
    runtime = build(plastic_network(w0), "float")
    before = runtime.weights.copy()
    for _ in range(120):
        runtime.step(np.flatnonzero(rng.random(12) < 0.2).astype(np.int32))
    assert runtime.counters.total()["learning_updates"] > 0 and not np.array_equal(runtime.weights, before)
    network = plastic_network(w0).with_projection("plastic", learning="stdp")
    with pytest.raises(ValueError, match=r"projection 'plastic': learning must be"):
        build(network, "loihi")


def test_learning_rule_survives_save_and_load(tmp_path):
    rng = np.random.default_rng(9)
    network = plastic_network(rng.integers(-60, 120, (6, 12)))
    network.save(tmp_path / "plastic.npz")
    loaded = Network.load(tmp_path / "plastic.npz")
    assert type(loaded.projections[0].learning) is type(network.projections[0].learning)
    runs = []
    for net in (network, loaded):
        runtime = build(net, "loihi")
        inputs = np.random.default_rng(1)
        for _ in range(60):
            runtime.step(np.flatnonzero(inputs.random(12) < 0.3).astype(np.int32))
        runs.append(runtime.weights.copy())
    np.testing.assert_array_equal(*runs)
