"""Spike-time learning (method "spiketime"): exact spike times against an independent root search of the
membrane equation, exact gradients against finite differences of the spike-time function (a wrong
gradient must fail the same check), the generated Yin-Yang set, deployment on the runtime, the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.snn.network import Network
from pipeline.train import spiketime as S
from pipeline.train import yinyang

ROOT = Path(__file__).resolve().parents[1]
TAU = 5.0
CODING = S.Coding(t_min=0.0, t_max=10.0, t_bias=0.0, t_cap=40.0, xi=1.0)


def membrane(t, t_in, w, tau):
    """V(t) of a non-leaky IF neuron with exponential synapses, straight from the definition."""
    active = t_in < t
    return float(np.sum(w[active] * (1.0 - np.exp(-(t - t_in[active]) / tau))))


def first_crossing(t_in, w, tau, t_end=200.0, grid=20000):
    """First t with V(t) >= 1 by a fine grid then bisection (independent of the closed form); inf if none."""
    ts = np.linspace(0.0, t_end, grid)
    values = np.array([membrane(t, t_in, w, tau) for t in ts])
    above = np.flatnonzero(values >= 1.0)
    if not above.size:
        return np.inf
    lo, hi = ts[above[0] - 1], ts[above[0]]
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if membrane(mid, t_in, w, tau) >= 1.0:
            hi = mid
        else:
            lo = mid
    return hi


def test_spike_times_match_an_independent_root_search():
    rng = np.random.default_rng(3)
    t_in = rng.uniform(0.0, 10.0, (6, 7))
    t_in[0, 2] = np.inf          # a silent input
    t_in[1, 3] = t_in[1, 4]      # two inputs at the same time
    w = rng.normal(0.35, 0.5, (5, 7))
    t_out, _, _ = S.layer_forward(t_in, w, TAU)
    spiking = 0
    for s in range(t_in.shape[0]):
        for j in range(w.shape[0]):
            want = first_crossing(t_in[s], w[j], TAU)
            if np.isinf(want):
                assert np.isinf(t_out[s, j]), (s, j)
            else:
                spiking += 1
                assert t_out[s, j] == pytest.approx(want, abs=1e-6), (s, j)
    assert 5 <= spiking < t_in.shape[0] * w.shape[0]  # both cases covered


def _loss(w_hidden, w_out, t_in, labels, gamma):
    trace = S.forward(w_hidden, w_out, t_in, TAU)
    loss, _, _ = S.loss_and_grad(trace.t_out, labels, CODING)
    return loss + S.penalty(w_hidden, w_out, trace, gamma), trace


def _same_structure(a, b):
    pairs = ((a.t_hidden, b.t_hidden), (a.t_out, b.t_out))
    return all(np.array_equal(np.isfinite(x), np.isfinite(y)) for x, y in pairs) \
        and np.array_equal(a.causal_hidden, b.causal_hidden) and np.array_equal(a.causal_out, b.causal_out)


def _numeric(w_hidden, w_out, t_in, labels, gamma, eps=1e-6):
    """Central differences of the exact loss, only where the spiking/causal structure stays put."""
    _, base = _loss(w_hidden, w_out, t_in, labels, gamma)
    out = []
    for which in (0, 1):
        w = (w_hidden, w_out)[which]
        grad = np.full(w.shape, np.nan)
        for idx in np.ndindex(w.shape):
            plus = [w_hidden.copy(), w_out.copy()]
            minus = [w_hidden.copy(), w_out.copy()]
            plus[which][idx] += eps
            minus[which][idx] -= eps
            lp, tp = _loss(*plus, t_in, labels, gamma)
            lm, tm = _loss(*minus, t_in, labels, gamma)
            if _same_structure(tp, base) and _same_structure(tm, base):
                grad[idx] = (lp - lm) / (2 * eps)
        out.append(grad)
    return out


def _gradient_error(analytic, numeric):
    """Largest |analytic - numeric| over the checked entries, relative to the largest numeric entry."""
    errors = []
    for a, n in zip(analytic, numeric):
        ok = np.isfinite(n)
        assert ok.mean() > 0.9
        errors.append(np.max(np.abs(a[ok] - n[ok])) / max(np.max(np.abs(n[ok])), 1e-12))
    return max(errors)


@pytest.fixture(scope="module")
def small_problem():
    rng = np.random.default_rng(7)
    features, labels = yinyang.generate(12, seed=5)
    t_in = S.encode(features, CODING)
    config = S.SpikeTimeConfig(hidden=6, init_mean=2.0, init_std=1.5)
    w_hidden, w_out = S.init_weights(t_in.shape[1], 6, 3, config, rng)
    w_out[0, :] -= 0.2  # make one output silent for some samples: the penalty branch is checked too
    return w_hidden, w_out, t_in, labels


def test_exact_gradients_match_finite_differences(small_problem):
    w_hidden, w_out, t_in, labels = small_problem
    gamma = 0.5
    trace = S.forward(w_hidden, w_out, t_in, TAU)
    assert np.isfinite(trace.t_out).any() and np.isinf(trace.t_hidden).sum() + np.isinf(trace.t_out).sum() > 0
    _, g_hidden, g_out, _ = S.gradients(w_hidden, w_out, t_in, labels, CODING, TAU, gamma)
    numeric = _numeric(w_hidden, w_out, t_in, labels, gamma)
    assert np.abs(numeric[0][np.isfinite(numeric[0])]).max() > 1e-3  # the hidden layer gets gradient
    assert _gradient_error([g_hidden, g_out], numeric) < 1e-4


def test_a_wrong_gradient_fails_the_check(small_problem, monkeypatch):
    w_hidden, w_out, t_in, labels = small_problem
    numeric = _numeric(w_hidden, w_out, t_in, labels, 0.5)
    right = S.layer_backward

    def wrong_tau(t_in, w, t_out, n_causal, order, grad_t_out, tau, gamma):
        return right(t_in, w, t_out, n_causal, order, grad_t_out, tau * 1.05, gamma)

    def no_chain(*args):
        grad_w, grad_t_in = right(*args)
        return grad_w, np.zeros_like(grad_t_in)

    for wrong in (wrong_tau, no_chain):
        monkeypatch.setattr(S, "layer_backward", wrong)
        _, g_hidden, g_out, _ = S.gradients(w_hidden, w_out, t_in, labels, CODING, TAU, 0.5)
        assert _gradient_error([g_hidden, g_out], numeric) > 1e-2, wrong.__name__
    monkeypatch.setattr(S, "layer_backward", right)


def test_yinyang_is_the_published_formula_and_reproducible():
    assert yinyang.classify(np.array([0.25, 0.75, 0.5, 0.5]), np.array([0.5, 0.5, 0.9, 0.1])).tolist() == [2, 2, 0, 1]
    x1, y1 = yinyang.generate(3000, seed=42)
    x2, y2 = yinyang.generate(3000, seed=42)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(yinyang.generate(50, seed=43)[0], x1[:50])
    assert np.allclose(x1.sum(axis=1), 2.0) and x1.min() >= 0 and x1.max() <= 1
    assert np.hypot(x1[:, 0] - 0.5, x1[:, 1] - 0.5).max() <= 0.5
    assert np.array_equal(yinyang.classify(x1[:, 0], x1[:, 1]), y1)
    assert np.all(np.abs(np.bincount(y1) / len(y1) - 1 / 3) < 0.04)
    # The data set's own anchor: a linear classifier gets ~64 % (Kriener et al. 2021).
    design = np.concatenate([x1[:, :2], np.ones((len(x1), 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.eye(3)[y1], rcond=None)
    xt, yt = yinyang.generate(1000, seed=43)
    linear = np.mean(np.argmax(np.concatenate([xt[:, :2], np.ones((1000, 1))], axis=1) @ coef, axis=1) == yt)
    assert 0.5 < linear < 0.72


def test_deployed_network_follows_the_exact_spike_times(tmp_path):
    rng = np.random.default_rng(11)
    config = S.SpikeTimeConfig(hidden=20)
    features, _ = yinyang.generate(40, seed=9)
    t_in = S.encode(features, CODING)
    w_hidden, w_out = S.init_weights(t_in.shape[1], 20, 3, config, rng)
    exact = S.forward(w_hidden, w_out, t_in, TAU).t_out
    dt = 0.05
    network = S.to_network(w_hidden, w_out, TAU, dt, 40.0)
    network.save(tmp_path / "yy.npz")
    network = Network.load(tmp_path / "yy.npz")
    assert network.readout.kind == "first_spike"
    deployed, decided = S.run_deployed(network, "float", t_in, int(40.0 / dt))
    both = np.isfinite(exact) & np.isfinite(deployed)
    assert both.sum() > 30
    lag = (deployed[both] - exact[both]) / dt
    # Input times are rounded to the nearest step and each layer's crossing to the next step: about one step
    # late. A late spike (summed weight just above threshold) amplifies timing errors, hence the tail.
    assert 0.5 < np.median(lag) < 1.5
    assert np.percentile(lag, 90) < 3.0 and np.percentile(lag, 5) > -1.0
    assert np.mean(decided == S.predict(exact)) >= 0.9
    clear = np.isfinite(deployed.min(axis=1)) & (np.sum(deployed == deployed.min(axis=1, keepdims=True), axis=1) == 1)
    assert np.array_equal(decided[clear], S.predict(deployed)[clear])  # no tie: the earliest spike decides


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_spikeloop_train_spiketime_writes_a_model(tmp_path):
    out = tmp_path / "yy.npz"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.app.cli", "train", str(ROOT / "launch/train_yinyang.toml"), "--out", str(out),
         "--json", "--set", "train.epochs=3", "--set", "data.train_size=1000", "--set", "data.test_size=100",
         "--set", "deploy.duration_ms=30", "--set", "deploy.dt_ms=0.2"],
        check=False, capture_output=True, text=True, timeout=900, env=_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["method"] == "spiketime" and metrics["test_samples"] == 100
    assert metrics["test_accuracy"] > 0.6  # three epochs on 1000 samples: well above chance (1/3)
    assert set(metrics["deployed"]) == {"float", "loihi"}
    assert metrics["deployed"]["float"]["same_class_as_exact"] > 0.8
    network = Network.load(out)
    assert network.readout.classes == yinyang.CLASSES and network.n_inputs == 5


def test_spikeloop_train_spiketime_rejects_a_bad_key(tmp_path):
    out = tmp_path / "yy.npz"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.app.cli", "train", str(ROOT / "launch/train_yinyang.toml"), "--out", str(out),
         "--set", "coding.t_late=3"],
        check=False, capture_output=True, text=True, timeout=300, env=_env(), cwd=tmp_path)
    assert result.returncode == 2 and "t_late" in result.stderr and not out.exists()


@pytest.mark.slow
def test_spikeloop_train_spiketime_resumes_exactly(tmp_path):
    small = ["--set", "data.train_size=150", "--set", "data.test_size=50", "--set", "deploy.duration_ms=20",
             "--set", "deploy.dt_ms=0.5", "--set", "deploy.backends='float'"]

    def train(out, epochs, *extra):
        result = subprocess.run(
            [sys.executable, "-m", "pipeline.app.cli", "train", str(ROOT / "launch/train_yinyang.toml"),
             "--out", str(tmp_path / out), "--set", f"train.epochs={epochs}", *small, *extra],
            check=False, capture_output=True, text=True, timeout=900, env=_env(), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return Network.load(tmp_path / out)

    first = train("first.npz", 2)
    resumed = train("resumed.npz", 3, "--resume", str(tmp_path / "first.ckpt.npz"))
    straight = train("straight.npz", 3)
    for a, b in zip(resumed.projections, straight.projections):
        assert np.array_equal(a.weights, b.weights), a.name
    # The checkpoint is what a resumed run starts from: one that claims all 3 epochs are done trains no more.
    with np.load(tmp_path / "first.ckpt.npz") as data:
        state = {key: data[key] for key in data.files}
    state["epoch"] = np.array(3)
    np.savez(tmp_path / "done.ckpt.npz", **state)
    done = train("done.npz", 3, "--resume", str(tmp_path / "done.ckpt.npz"))
    for a, b, c in zip(done.projections, first.projections, straight.projections):
        assert np.array_equal(a.weights, b.weights) and not np.array_equal(a.weights, c.weights), a.name


def test_first_spike_times_of_a_recording_are_its_first_events(data_dir):
    """first_spike_times against the events read straight from the file (independent of the binning code)."""
    from pipeline.snn.model import InputSpec
    from pipeline.train.present import present_file, read_events

    path = sorted((data_dir / "nmnist_small" / "test").iterdir())[0]
    spec = InputSpec(sensor="dvs", bin_us=1000, encoding="spikes", duration_us=100_000, scale=2)
    times = S.first_spike_times(present_file(path, spec, (2, 17, 17), 578), 578, 1.0)
    events = read_events(path)
    t = events["timestamp"].astype(np.int64) - int(events["timestamp"][0])
    want = np.full(578, np.inf)
    inside = t < 100_000
    index = (events["polarity"].astype(np.int64) * 17 + events["y"] // 2) * 17 + events["x"] // 2
    np.minimum.at(want, index[inside], (t[inside] // 1000).astype(np.float64))
    assert np.array_equal(times[:-1], want) and times[-1] == 0.0
    assert 50 < np.isfinite(want).sum() < 578


def test_spikeloop_train_spiketime_on_nmnist_deploys_and_evaluates(tmp_path, data_dir):
    """Short training on real N-MNIST; the written network is evaluated by spikeloop evaluate on the loihi backend
    with the accuracy the trainer measured on its runtime, and the runtime follows the exact spike times."""
    out = tmp_path / "st.npz"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPIKELOOP_DATA": str(data_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.app.cli", "train", str(ROOT / "launch/train_nmnist_spiketime.toml"),
         "--out", str(out), "--json", "--set", "train.epochs=6", "--set", "data.limit=600",
         "--set", "network.hidden=60"],
        check=False, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["dataset"] == "nmnist" and metrics["test_samples"] == 100
    assert metrics["test_accuracy"] > 0.3                      # chance is 0.1
    assert 0 < metrics["mean_decision_ms"] < 200
    assert metrics["deployed"]["float"]["same_class_as_exact"] >= 0.9
    network = Network.load(out)
    assert network.readout.kind == "first_spike" and network.input_spec.encoding == "spikes"
    folder = data_dir / "nmnist_small"
    evaluated = subprocess.run(
        [sys.executable, "-m", "pipeline.app.cli", "evaluate", str(out), str(folder / "test"), "--labels",
         str(folder / "test_labels.txt"), "--backend", "loihi", "--json", "--workers", "1"],
        check=False, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["n"] == 100 and report["accuracy"] == pytest.approx(metrics["deployed"]["loihi"]["accuracy"])
