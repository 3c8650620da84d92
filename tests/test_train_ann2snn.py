"""ANN -> SNN conversion (method "ann2snn"): ANN gradients against finite differences (a wrong one must
fail), conversion on real N-MNIST recordings (spike counts follow the ANN's normalized activations; the
SNN classifies like its ANN on the float and loihi backends), the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.snn.network import Network
from pipeline.snn.runtime import build
from pipeline.train import ann2snn as A
from pipeline.train.present import present_file
from recordings.labelled import open_labelled

ROOT = Path(__file__).resolve().parents[1]


def _plain_loss(weights, x, labels, masks):
    """Cross-entropy of the bias-free ReLU net with fixed dropout masks, written out in plain numpy; the
    first layer takes the largest of its inputs over the cumulative windows x (K, n, n_in)."""
    a = np.maximum(np.max([window @ weights[0].T for window in x], axis=0), 0.0) * masks[0]
    for l, w in enumerate(weights[1:], start=1):
        a = a @ w.T
        if l < len(weights) - 1:
            a = np.maximum(a, 0.0) * masks[l]
    a = a - a.max(axis=1, keepdims=True)
    log_p = a - np.log(np.exp(a).sum(axis=1, keepdims=True))
    return -np.mean(log_p[np.arange(len(labels)), labels])


def _numeric(weights, x, labels, masks, eps=1e-6):
    grads = []
    for l, w in enumerate(weights):
        g = np.zeros_like(w)
        for idx in np.ndindex(w.shape):
            plus = [v.copy() for v in weights]
            minus = [v.copy() for v in weights]
            plus[l][idx] += eps
            minus[l][idx] -= eps
            g[idx] = (_plain_loss(plus, x, labels, masks) - _plain_loss(minus, x, labels, masks)) / (2 * eps)
        grads.append(g)
    return grads


def _error(analytic, numeric):
    return max(np.max(np.abs(a - n)) / np.max(np.abs(n)) for a, n in zip(analytic, numeric))


def test_ann_gradients_match_finite_differences_and_a_wrong_one_fails():
    rng = np.random.default_rng(2)
    weights = [rng.normal(0, 0.6, (6, 9)), rng.normal(0, 0.6, (5, 6)), rng.normal(0, 0.6, (3, 5))]
    x = np.cumsum(rng.uniform(-1, 2, (3, 8, 9)), axis=0)  # three cumulative windows
    labels = rng.integers(0, 3, 8)
    masks = [(rng.random((8, h)) < 0.7) / 0.7 for h in (6, 5)]
    numeric = _numeric(weights, x, labels, masks)
    loss, grads, _ = A.ann_loss_and_grads(weights, x, labels, masks)
    assert loss == pytest.approx(_plain_loss(weights, x, labels, masks), rel=1e-12)
    assert _error(grads, numeric) < 1e-6
    _, last_only, _ = A.ann_loss_and_grads(weights, x[-1:], labels, masks)  # ignores the running maximum
    assert _error(last_only, numeric) > 1e-2
    _, unmasked, _ = A.ann_loss_and_grads(weights, x, labels, None)   # the gradient of another network
    assert _error(unmasked, numeric) > 1e-2
    assert _error([grads[0] * 1.02, *grads[1:]], numeric) > 1e-2


@pytest.fixture(scope="module")
def converted(data_dir):
    folder = data_dir / "nmnist_small"
    train = open_labelled(folder / "train", folder / "train_labels.txt").subset(range(300))
    test = open_labelled(folder / "test", folder / "test_labels.txt", train.classes).subset(range(30))
    spec = A.presentation_spec(1, 300_000, 2)
    config = A.AnnConfig(hidden=(64,), epochs=12, dropout=0.0)
    frames = A.count_frames(train.paths, spec) * config.input_scale
    weights = A.train_ann(frames, np.array(train.labels), 10, config, seed=0)
    scales = A.activation_scales(weights, frames, 99.9)
    test_frames = A.count_frames(test.paths, spec) * config.input_scale
    return weights, scales, train.classes, test, test_frames, config


def _run_counts(network, backend, path, population):
    runtime = build(network, backend)
    p = present_file(path, network.input_spec, network.input_shape, network.n_inputs)
    runtime.reset()
    counts = np.zeros(runtime.populations[population].size)
    for k in range(p.n_steps):
        runtime.step(p.index[p.indptr[k]:p.indptr[k + 1]], p.count[p.indptr[k]:p.indptr[k + 1]])
        counts += runtime.spikes_of(population)
    return counts


def test_frame_input_with_reset_by_subtraction_counts_the_quantized_relu(converted):
    """Constant input current + reset by subtraction: a hidden neuron's count over T steps is
    floor(T a / lambda) (at most T), computed here from the ANN's numpy activations: to one spike on the float
    backend; on loihi within the int8 weight rounding and Lava's u decay of 1/4096 per step."""
    weights, scales, classes, test, test_frames, config = converted
    steps = 100
    float_net, loihi_net = A.convert(weights, scales, classes, steps, 300_000, config.input_scale, 128)
    assert float_net.input_spec.encoding == "frame"
    hidden = A.ann_forward(weights, test_frames)[0]
    for i in range(3):
        want = np.minimum(np.floor(steps * hidden[i] / scales[0]), steps)
        for network, backend, slack, rel in ((float_net, "float", 1, 0.0), (loihi_net, "loihi", 2, 0.06)):
            counts = _run_counts(network, backend, test.paths[i], "hidden0")
            assert np.all(np.abs(counts - want) <= slack + rel * want), backend
    # the runtime's plain reset to zero loses the charge above threshold: fewer spikes than the ReLU asks
    zero_net, _ = A.convert(weights, scales, classes, steps, 300_000, config.input_scale, 64, reset="zero")
    counts = _run_counts(zero_net, "float", test.paths[0], "hidden0")
    want = np.minimum(np.floor(steps * hidden[0] / scales[0]), steps)
    assert np.sum(want - counts) > 0.05 * np.sum(want)


def test_streamed_events_follow_normalized_activations(converted):
    weights, scales, classes, test, test_frames, config = converted
    steps = 200
    float_net, _ = A.convert(weights, scales, classes, steps, 300_000, config.input_scale, 1024,
                             input_kind="stream", reset="zero")
    assert float_net.input_spec.encoding == "counts"
    hidden = A.ann_forward(weights, test_frames)[0]
    for i in range(3):
        counts = _run_counts(float_net, "float", test.paths[i], "hidden0")
        want = steps * hidden[i] / scales[0]
        assert np.corrcoef(counts, want)[0, 1] > 0.9
        assert counts.sum() == pytest.approx(want.sum(), rel=0.35)


def test_converted_snn_classifies_like_its_ann(converted):
    weights, scales, classes, test, test_frames, config = converted
    ann = np.argmax(A.ann_forward(weights, test_frames)[-1], axis=1)
    labels = np.array(test.labels)
    float_net, loihi_net = A.convert(weights, scales, classes, 100, 300_000, config.input_scale, 128)
    assert loihi_net.readout.kind == "count" and loihi_net.input_spec.encoding == "frame"
    for network, backend in ((float_net, "float"), (loihi_net, "loihi")):
        runtime = build(network, backend)
        snn = np.array([A.classify(runtime, present_file(p, network.input_spec, network.input_shape, network.n_inputs),
                                   network.readout) for p in test.paths])
        assert np.mean(snn == ann) >= 0.9, backend
        assert np.mean(snn == labels) >= np.mean(ann == labels) - 0.05, backend


def test_spikeloop_train_ann2snn_writes_a_model(tmp_path, data_dir):
    out = tmp_path / "a2s.npz"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPIKELOOP_DATA": str(data_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.app.cli", "train", str(ROOT / "launch/train_nmnist_ann2snn.toml"),
         "--out", str(out), "--json", "--set", "train.epochs=3", "--set", "train.limit=120",
         "--set", "data.test_limit=10", "--set", "network.hidden=[32]", "--set", "convert.eval_steps=[50]"],
        check=False, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["method"] == "ann2snn" and metrics["test_samples"] == 10
    assert set(metrics["snn_test_accuracy"]["50"]) == {"float", "loihi"}
    network = Network.load(out)
    assert network.readout.kind == "count" and network.input_spec.duration_us == 300_000
    assert network.input_spec.encoding == "frame"
    assert [p.size for p in network.populations] == [32, 10]
    assert (tmp_path / "a2s.png").exists()
