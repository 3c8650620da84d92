"""Unsupervised STDP (Diehl & Cook) on the Loihi learning engine: homeostasis, synaptic scaling, winner-only
learning, the direction of learning on real N-MNIST recordings, the assignment readout, `spikeloop train`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.snn.learning.competitive import winner_mask
from pipeline.snn.learning.homeostasis import (
    AdaptiveThreshold,
    ThresholdAdapter,
    ThresholdParams,
    ThresholdState,
    adapt_thresholds,
)
from pipeline.snn.learning.normalization import WeightNormalization
from pipeline.snn.network import Network
from pipeline.train import stdp as S
from pipeline.train.present import present_file, read_events
from recordings.labelled import open_labelled

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def nmnist(data_dir):
    folder = data_dir / "nmnist_small"
    return (open_labelled(folder / "train", folder / "train_labels.txt"),
            open_labelled(folder / "test", folder / "test_labels.txt"))


# ------------------------------------------------------------------------------------- kernels, known answers

def test_adaptive_threshold_known_answers():
    params = ThresholdParams(np.array([100, 100, 100]), np.full(3, 2.5), np.full(3, 0.5), np.array([1e9, 1e9, 3.0]))
    state = ThresholdState(np.array([0.0, 8.0, 0.0]))
    threshold = np.zeros(3, np.int64)
    adapt_thresholds(np.array([1, 0, 1], np.uint8), state, params, threshold)
    # 0 * 0.5 + 2.5; 8 * 0.5 = 4; 0 + 2.5 (limit 3 not reached)
    assert state.theta.tolist() == [2.5, 4.0, 2.5]
    assert threshold.tolist() == [102 << 6, 104 << 6, 102 << 6]
    adapt_thresholds(np.array([1, 0, 1], np.uint8), state, params, threshold)
    assert state.theta.tolist() == [3.75, 2.0, 3.0]          # 1.25 + 2.5; 4 * 0.5; capped at 3
    with pytest.raises(ValueError, match="'increment' must be > 0"):
        AdaptiveThreshold(0)


def test_threshold_adapter_recentres_and_deploys():
    spikes = np.zeros(3, np.uint8)
    threshold = np.zeros(3, np.int64)
    adapter = ThresholdAdapter(AdaptiveThreshold(10.0), np.array([50, 60, 70]), spikes, threshold,
                               theta=np.array([5.0, 25.0, 7.5]))
    assert threshold.tolist() == [55 << 6, 85 << 6, 77 << 6]
    adapter.recentre()
    assert adapter.theta.tolist() == [0.0, 20.0, 2.5]
    assert adapter.vth().tolist() == [50, 80, 72] and threshold.tolist() == [50 << 6, 80 << 6, 72 << 6]


def test_weight_normalization_l1_l2_against_numpy():
    rng = np.random.default_rng(3)
    w = rng.integers(0, 40, size=(50, 6)).astype(np.int16)
    w[:, 5] = 0
    for order, norm in ((1, lambda c: c.sum(0)), (2, lambda c: np.sqrt((c.astype(float) ** 2).sum(0)))):
        got = w.copy()
        changed = WeightNormalization(200, order).apply(got)
        expected = np.minimum(np.floor(w[:, :5] * (200 / norm(w[:, :5])) + 0.5), 255)
        assert changed == 5 and np.array_equal(got[:, :5], expected) and not got[:, 5].any()
        assert np.allclose(norm(got[:, :5]), 200, rtol=0.05)
    with pytest.raises(ValueError, match="'order' must be 1 or 2"):
        WeightNormalization(10, 3)


def test_winner_is_the_spiking_neuron_with_the_largest_drive():
    weights = np.array([[1, 9, 5, 9], [1, 0, 5, 9], [1, 0, 5, 9]], np.int16)   # [pre, post]
    out = np.zeros(4, np.uint8)
    # post 3 has the largest drive but did not spike; 2 (drive 10) beats 1 (drive 9)
    assert winner_mask(np.array([1, 1, 0], np.uint8), np.array([1, 1, 1, 0], np.uint8), weights, out) == 2
    assert out.tolist() == [0, 0, 1, 0]
    assert winner_mask(np.array([1, 1, 0], np.uint8), np.zeros(4, np.uint8), weights, out) == -1 and not out.any()


def test_assignment_and_vote_known_answers():
    counts = np.array([[5, 0, 1, 0], [4, 1, 0, 0], [0, 3, 0, 0], [1, 2, 0, 0]])
    labels = np.array([0, 0, 1, 1])
    assignment = S.assign_classes(counts, labels, 3)
    assert assignment.tolist() == [0, 1, 0, -1]          # neuron 3 never spiked
    # class 0 neurons {0, 2}: means 3.0/2.0/0/0.5; class 1 neuron {1}: 0/1/3/2; class 2: no neurons
    assert S.predict(counts, assignment, 3).tolist() == [0, 0, 1, 1]
    # the vote readout: per neuron its class means (0: 4.5/0.5, 1: 0.5/2.5, 2: 0.5/0, 3: none), normalised
    votes = S.class_votes(counts, labels, 3)
    np.testing.assert_allclose(votes, [[0.9, 0.1, 0], [1 / 6, 5 / 6, 0], [1, 0, 0], [0, 0, 0]])
    # sample 3 [1, 2, 0, 0]: class 0 gets 0.9 + 2/6, class 1 gets 0.1 + 10/6
    assert S.predict_votes(counts, votes).tolist() == [0, 0, 1, 1]


def test_ridge_votes_against_an_augmented_least_squares_solve():
    """The ridge readout = numpy's lstsq on the augmented system [X; sqrt(l) I] W = [Y; 0] (an independent
    formulation), shifted per row to >= 0 without changing any decision; on XOR-like counts, where a neuron
    that fires for two classes misleads the vote readout, it separates what the vote table cannot."""
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 6, size=(60, 7))
    labels = rng.integers(0, 3, size=60)
    penalty = 2.5
    targets = np.eye(3)[labels]
    augmented = np.vstack([counts.astype(float), np.sqrt(penalty) * np.eye(7)])
    plain = np.linalg.lstsq(augmented, np.vstack([targets, np.zeros((7, 3))]), rcond=None)[0]
    votes = S.ridge_votes(counts, labels, 3, penalty)
    assert votes.min() == 0 and np.all(votes.min(axis=1) == 0)
    spread = (plain.max(axis=1) - plain.min(axis=1)).mean()    # rows' ranges average 1
    np.testing.assert_allclose((votes - votes[:, :1]) * spread, plain - plain[:, :1], atol=1e-9)
    assert np.isclose((votes.max(axis=1) - votes.min(axis=1)).mean(), 1.0)
    assert np.array_equal(S.predict_votes(counts, votes), (counts @ plain).argmax(axis=1))
    # neuron 0 fires for class 0 and more for class 1, neuron 1 a little for class 1 only, neuron 2 for class 2:
    # the vote table sends class 0 to class 1 (neuron 0 votes 0.4 / 0.6); the linear readout weighs neuron 1
    counts = np.array([[4, 0, 0], [6, 1, 0], [0, 0, 4], [4, 0, 0], [6, 1, 0], [0, 0, 4]])
    labels = np.array([0, 1, 2, 0, 1, 2])
    assert S.predict_votes(counts, S.class_votes(counts, labels, 3)).tolist() == [1, 1, 2, 1, 1, 2]
    assert S.predict_votes(counts, S.ridge_votes(counts, labels, 3, 0.01)).tolist() == labels.tolist()
    with pytest.raises(ValueError, match="'ridge_penalty' must be a finite number > 0"):
        S.StdpConfig(readout="ridge", ridge_penalty=0)
    with pytest.raises(ValueError, match="'readout' must be one of vote, assignment, ridge"):
        S.StdpConfig(readout="knn")


# ------------------------------------------------------------------------------------- learning on real data

def test_stdp_strengthens_inputs_active_before_post_spikes(nmnist):
    """One pass over 3 real recordings, no scaling or homeostasis side effects on the check: a neuron that
    fired moved its weights up on pixels that had events and down on pixels that never did (dw = y0*(x1 - 8)/2:
    x1 = 0 on a silent pixel); a neuron that never fired kept its weights."""
    train, _ = nmnist
    config = S.StdpConfig(n_neurons=6, epochs=1, norm_total=0, winner_only=False, theta_recentre=False, min_wins=0,
                          weight_exp=-3, vth=300, refractory=0, rule="2^-1*y0*(x1 - 8)", init_weight=60)
    paths = train.paths[:3]
    presentations = S.present_all(paths, config)
    rng = np.random.default_rng(config.seed)
    w0 = rng.integers(0, config.init_weight + 1, size=(config.n_neurons, config.n_inputs))
    result = S.train(config, presentations, train.labels[:3], train.classes)
    w1 = np.asarray(result.network.projection(S.FEEDFORWARD).weights, np.int64)
    seen = np.zeros(config.n_inputs, bool)                     # pixels with events, from the raw files
    for path in paths:
        events = read_events(path)
        seen[events["y"].astype(np.int64) * 34 + events["x"]] = True
    dw = w1 - w0
    fired = np.abs(dw).sum(axis=1) > 0
    assert fired.any(), "the test needs at least one neuron that learned"
    for n in np.flatnonzero(fired):
        assert dw[n, seen].mean() > 0 > dw[n, ~seen].mean(), f"neuron {n}: {dw[n, seen].mean()} {dw[n, ~seen].mean()}"
        assert (dw[n, ~seen] <= 0).all()
    assert result.history[0]["spikes_per_sample"] > 0


@pytest.mark.parametrize("readout", ["assignment", "vote", "ridge"])
def test_readout_round_trips(nmnist, tmp_path, readout):
    train, test = nmnist
    config = S.StdpConfig(n_neurons=20, epochs=1, weight_exp=-3, vth=300, refractory=0, theta_increment=300,
                          rule="2^-1*y0*(x1 - 8)", deploy_vth=20000, deploy_dv=0, readout=readout)
    subset = train.subset(range(40))
    result = S.train(config, S.present_all(subset.paths, config), subset.labels, subset.classes)
    network = result.network
    assert network.readout.kind == ("vote" if readout == "ridge" else readout)
    assert network.readout.classes == tuple(str(d) for d in range(10))
    kept = result.metrics["neurons"]
    assert kept + result.metrics["neurons_dropped_unlearned"] == 20 and 0 < kept == network.n_outputs
    table = network.readout.assignment if readout == "assignment" else network.readout.votes
    assert network.input_spec == config.input_spec() and len(table) == kept
    assert all(p.learning is None for p in network.projections)
    network.save(tmp_path / "stdp.npz")
    loaded = Network.load(tmp_path / "stdp.npz")
    loaded_table = loaded.readout.assignment if readout == "assignment" else loaded.readout.votes
    assert np.array_equal(loaded_table, table)
    assert loaded.input_spec == network.input_spec
    assert np.array_equal(loaded.projection(S.FEEDFORWARD).weights, network.projection(S.FEEDFORWARD).weights)
    paths, labels = test.paths[:10], test.labels[:10]
    counts = S.responses(loaded, S.present_all(paths, config))
    if readout == "assignment":
        expected = np.mean(S.predict(counts, network.readout.assignment, 10) == np.asarray(labels))
    else:                                   # an independent reading: each neuron's count times its votes
        expected = np.mean([np.argmax(sum(c[i] * network.readout.votes[i] for i in range(kept))) == y
                            for c, y in zip(counts, labels)])
    assert S.evaluate(loaded, paths, labels) == expected
    png = S.receptive_fields_png(loaded, tmp_path / "fields.png")
    import cv2
    image = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    assert image.shape == ((1 * 35 + 1) * 3, (kept * 35 + 1) * 3)


# ------------------------------------------------------------------------------------- spikeloop train

def _train_cli(tmp_path, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pipeline.app.cli", "train", *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=900, check=False)


def test_spikeloop_train_stdp_small_run_and_errors(tmp_path):
    config = ROOT / "launch" / "train_nmnist_stdp.toml"
    out = tmp_path / "m.npz"
    small = ["--set", "train.limit=30", "--set", "network.neurons=16", "--set", "train.epochs=1",
             "--set", 'data.test=""']
    done = _train_cli(tmp_path, str(config), *small, "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert 0 <= metrics["train_accuracy"] <= 1 and Path(metrics["fields_png"]).is_file()
    assert Network.load(out).readout.kind == "vote"
    bad = _train_cli(tmp_path, str(config), "--set", "stdp.rule=\"x1*y1\"", "--out", str(tmp_path / "b.npz"))
    assert bad.returncode == 2 and "no dependency" in bad.stderr and not (tmp_path / "b.npz").exists()
    silent = _train_cli(tmp_path, str(config), *small, "--set", "network.vth=131071", "--set",
                        "homeostasis.theta_recentre=false", "--out", str(tmp_path / "s.npz"))
    assert silent.returncode == 2 and "epoch 1: no excitatory neuron spiked" in silent.stderr
    assert not (tmp_path / "s.npz").exists()


def test_holdout_scores_the_last_training_recordings(tmp_path, nmnist):
    """[data] holdout = 8 of 28: the model learns from and is read out on recordings 0-19 only (its readout
    is fitted on their counts), and validation_accuracy is its accuracy on recordings 20-27 (recomputed here
    from the saved model's counts and its vote table)."""
    train, _ = nmnist
    config = ROOT / "launch" / "train_nmnist_stdp.toml"
    out = tmp_path / "h.npz"
    small = ["--set", "train.limit=28", "--set", "network.neurons=16", "--set", 'data.test=""']
    done = _train_cli(tmp_path, str(config), *small, "--set", "data.holdout=8", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    network = Network.load(out)
    spec = network.input_spec
    counts = S.responses(network, [present_file(p, spec, network.input_shape, network.n_inputs)
                                   for p in train.paths[20:28]])
    expected = np.mean((counts @ network.readout.votes).argmax(axis=1) == np.asarray(train.labels[20:28]))
    assert metrics["validation_samples"] == 8 and metrics["validation_accuracy"] == expected
    fitted = S.responses(network, [present_file(p, spec, network.input_shape, network.n_inputs)
                                   for p in train.paths[:20]])
    assert np.allclose(network.readout.votes, S.ridge_votes(fitted, train.labels[:20], 10, 200))
    bad = _train_cli(tmp_path, str(config), *small, "--set", "data.holdout=28", "--out", str(tmp_path / "b.npz"))
    assert bad.returncode == 2 and "holdout = 28 leaves none of the 28" in bad.stderr
    assert not (tmp_path / "b.npz").exists()


def test_checkpoint_resumes_where_it_stopped(nmnist):
    train, _ = nmnist
    subset = train.subset(range(12))
    config = S.StdpConfig(n_neurons=8, epochs=2, min_wins=0)
    presentations = S.present_all(subset.paths, config)
    states = []
    whole = S.train(config, presentations, subset.labels, subset.classes, checkpoint=states.append)
    assert [int(s["epoch"]) for s in states] == [1, 2]
    resumed = S.train(config, presentations, subset.labels, subset.classes, resume=states[0])
    assert [h["epoch"] for h in resumed.history] == [1, 2] and resumed.history[0] == whole.history[0]
    assert resumed.network.projection(S.FEEDFORWARD).weights.shape == (8, config.n_inputs)
