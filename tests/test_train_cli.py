"""``spikeloop train``: the config contract (bad input: one line, exit 2, nothing written), outputs
(network file, curves PNG, checkpoint, --json), reproducibility with a fixed seed, and resume."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.snn.network import Network

REPO = Path(__file__).resolve().parents[1]

TINY = """
[train]
method = "bptt"
epochs = 1
batch_size = 8
limit = 16
lr = 1e-3
[data]
train = "nmnist_small/train"
train_labels = "nmnist_small/train_labels.txt"
test = "nmnist_small/test"
test_labels = "nmnist_small/test_labels.txt"
[input]
scale = 2
duration_us = 60000
[network]
hidden = [24]
"""


def train(tmp_path, data_dir, *args, config=TINY, name="tiny.toml"):
    path = tmp_path / name
    path.write_text(config)
    env = {**os.environ, "PYTHONPATH": str(REPO), "SPIKELOOP_DATA": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "pipeline.app.cli", "train", str(path), *args],
                          capture_output=True, text=True, env=env, timeout=600)


def only_config(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


@pytest.mark.parametrize("edit, expected", [
    (lambda c: c.replace("[network]", "[network]\nwidth_mult = 2"), "[network] width_mult: unknown key"),
    (lambda c: c.replace("epochs = 1", "epochs = 'one'"), "[train] epochs: expected an integer in [1, 100000]"),
    (lambda c: c.replace('method = "bptt"', 'method = "magic"'), "[train] method: expected one of"),
    (lambda c: c + "\n[optimizer]\nlr = 1\n", "[optimizer]: unknown section"),
    (lambda c: c.replace('train = "nmnist_small/train"', f'train = "{REPO / "launch"}"'), "no recordings"),
    (lambda c: c.replace('test_labels = "nmnist_small/test_labels.txt"',
                         'test_labels = "nmnist_small/train_labels.txt"'), "no label for"),
    (lambda c: c.replace("hidden = [24]", 'layers = [{type = "conv", channels = 512, kernel = 31, padding = 15}]'),
     ("[network] layers: projection 'conv0': parameter 'kernel' (512, 2, 31, 31) over an output grid (512, 17, 17) "
      "expands to 284,394,496 synapses, more than 33,554,432")),
])
def test_bad_config_is_one_line_exit_2_and_writes_nothing(tmp_path, data_dir, edit, expected):
    result = train(tmp_path, data_dir, "--out", str(tmp_path / "m.npz"), config=edit(TINY))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert only_config(tmp_path)


def test_a_network_silent_for_a_whole_epoch_stops_naming_the_epoch(tmp_path, data_dir):
    result = train(tmp_path, data_dir, "--set", "network.init_gain=1e-6", "--set", "network.vth=131071",
                   "--out", str(tmp_path / "m.npz"))
    assert result.returncode == 2, result.stderr
    assert "epoch 1: every neuron was silent" in result.stderr.strip().splitlines()[-1]
    assert only_config(tmp_path)


def test_shipped_training_config_validates():
    from pipeline.app.commands.train import load_config

    method, _, config = load_config(REPO / "launch" / "train_nmnist.toml", [])
    assert method == "bptt" and config["train"]["mode"] == "loihi" and config["network"]["hidden"] == [256]


def test_bad_set_names_the_key(tmp_path, data_dir):
    result = train(tmp_path, data_dir, "--set", "loss.slope=-1", "--out", str(tmp_path / "m.npz"))
    assert result.returncode == 2 and "[loss] slope" in result.stderr and "tiny.toml" in result.stderr
    assert only_config(tmp_path)


@pytest.mark.parametrize("value, expected", [
    ("", '[train] epochs: expected an integer in [1, 100000], got ""'),
    ("[" * 5000 + "]" * 5000, "--set train.epochs: value nested too deeply"),
    ("2\nlr = 5", "--set train.epochs: expected one value, got more TOML after it: 2\\nlr = 5"),
], ids=["empty", "deep", "two_lines"])
def test_odd_set_values_are_one_short_line_exit_2(tmp_path, data_dir, value, expected):
    result = train(tmp_path, data_dir, "--set", "train.epochs=" + value, "--out", str(tmp_path / "m.npz"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and expected in lines[0] and len(lines[0]) < 300, result.stderr
    assert only_config(tmp_path)


@pytest.mark.slow
def test_train_writes_model_curves_checkpoint_and_is_reproducible(tmp_path, data_dir):
    a = train(tmp_path, data_dir, "--out", str(tmp_path / "a.npz"), "--json")
    assert a.returncode == 0, a.stderr
    metrics = json.loads(a.stdout)
    assert metrics["mode"] == "loihi" and metrics["train_samples"] == 16 and metrics["test_samples"] == 100
    assert metrics["runtime_agreement"] == 1.0            # the loihi runtime classifies as the QAT model
    assert metrics["loihi_test_accuracy"] == metrics["test_accuracy"]
    assert "samples/s" in a.stderr and "loss" in a.stderr and "accuracy" in a.stderr
    network = Network.load(tmp_path / "a.npz")
    assert network.input_spec.scale == 2 and network.readout.kind == "count" and len(network.readout.classes) == 10
    image = cv2.imread(str(tmp_path / "a.png"))
    assert image is not None and image.shape[1] > image.shape[0]
    assert (tmp_path / "a.ckpt.npz").exists()
    b = train(tmp_path, data_dir, "--out", str(tmp_path / "b.npz"))
    assert b.returncode == 0, b.stderr
    first, second = Network.load(tmp_path / "a.npz"), Network.load(tmp_path / "b.npz")
    for p, q in zip(first.projections, second.projections):
        np.testing.assert_array_equal(p.weights, q.weights)


@pytest.mark.slow
def test_resume_continues_exactly_and_refuses_another_shape(tmp_path, data_dir):
    # a constant learning rate: a cosine schedule depends on the total epochs, so a 1-epoch run is not
    # the first epoch of a 2-epoch run
    config = TINY.replace("lr = 1e-3", 'lr = 1e-3\nlr_schedule = "constant"')
    two = train(tmp_path, data_dir, "--set", "train.epochs=2", "--out", str(tmp_path / "two.npz"), config=config)
    assert two.returncode == 0, two.stderr
    one = train(tmp_path, data_dir, "--out", str(tmp_path / "one.npz"), config=config)
    assert one.returncode == 0, one.stderr
    resumed = train(tmp_path, data_dir, "--set", "train.epochs=2", "--resume", str(tmp_path / "one.ckpt.npz"),
                    "--out", str(tmp_path / "resumed.npz"), config=config)
    assert resumed.returncode == 0, resumed.stderr
    for p, q in zip(Network.load(tmp_path / "two.npz").projections, Network.load(tmp_path / "resumed.npz").projections):
        np.testing.assert_array_equal(p.weights, q.weights)
    other = train(tmp_path, data_dir, "--set", "network.hidden=[16]", "--resume", str(tmp_path / "one.ckpt.npz"),
                  "--out", str(tmp_path / "other.npz"), config=config)
    assert other.returncode == 2 and "one.ckpt.npz" in other.stderr and "[network] hidden is [24]" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "other.npz").exists()
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a checkpoint")
    bad = train(tmp_path, data_dir, "--resume", str(garbage), "--out", str(tmp_path / "g.npz"))
    assert bad.returncode == 2 and "garbage.npz" in bad.stderr and not (tmp_path / "g.npz").exists()


def test_grad_clip_scales_the_global_norm_down_to_the_limit():
    from pipeline.train.bptt import clip_grad_norm

    rng = np.random.default_rng(3)
    grads = {"w0": rng.normal(0, 2, (5, 7)).astype(np.float32), "r0": rng.normal(0, 1, (7, 7)).astype(np.float32)}
    before = {k: v.copy() for k, v in grads.items()}
    whole = np.linalg.norm(np.concatenate([g.ravel().astype(np.float64) for g in before.values()]))
    assert clip_grad_norm(grads, 0.0) == pytest.approx(whole, rel=1e-12)          # 0: only measured
    assert clip_grad_norm(grads, whole * 2) == pytest.approx(whole, rel=1e-12)    # under the limit: untouched
    for k, g in grads.items():
        np.testing.assert_array_equal(g, before[k])
    assert clip_grad_norm(grads, 1.5) == pytest.approx(whole, rel=1e-12)
    after = np.linalg.norm(np.concatenate([g.ravel().astype(np.float64) for g in grads.values()]))
    assert after == pytest.approx(1.5, rel=1e-6)
    for k, g in grads.items():                                                     # same direction, one scale
        np.testing.assert_allclose(g, before[k] * (1.5 / whole), rtol=1e-6)
        assert g.dtype == np.float32


def test_warmup_scales_the_schedules_learning_rate_linearly():
    from pipeline.train.bptt import learning_rate

    constant = {"lr": 0.002, "lr_schedule": "constant", "warmup_steps": 4}
    assert [learning_rate(s, 100, constant) for s in range(1, 7)] == pytest.approx(
        [0.0005, 0.001, 0.0015, 0.002, 0.002, 0.002])
    cosine = {"lr": 0.002, "lr_schedule": "cosine", "warmup_steps": 0}
    assert [learning_rate(s, 10, cosine) for s in (1, 6, 11)] == pytest.approx([0.002, 0.001, 0.0])
    warm = dict(cosine, warmup_steps=5)                        # the cosine value at step s, times s / 5
    assert learning_rate(3, 10, warm) == pytest.approx(0.002 * 0.5 * (1 + np.cos(np.pi * 2 / 10)) * 3 / 5)
    assert learning_rate(1, 10, dict(cosine, warmup_steps=1)) == learning_rate(1, 10, cosine)


@pytest.mark.slow
def test_grad_clip_in_training_counts_clipped_batches_and_a_loose_limit_changes_nothing(tmp_path, data_dir):
    def history(name):
        with np.load(tmp_path / f"{name}.ckpt.npz") as state:
            return json.loads(str(state["history"]))

    runs = {"none": [], "loose": ["--set", "train.grad_clip=1e9"], "tight": ["--set", "train.grad_clip=1e-6"]}
    for name, extra in runs.items():
        result = train(tmp_path, data_dir, "--set", "train.epochs=2", *extra, "--out", str(tmp_path / f"{name}.npz"))
        assert result.returncode == 0, result.stderr
    batches = 2                                                                    # limit 16 / batch_size 8
    assert [r["clipped_batches"] for r in history("none")] == [0, 0]
    assert [r["clipped_batches"] for r in history("loose")] == [0, 0]
    assert [r["clipped_batches"] for r in history("tight")] == [batches, batches]
    assert all(r["grad_norm_median"] > 0 for r in history("none"))
    none, loose, tight = (Network.load(tmp_path / f"{n}.npz") for n in runs)
    for p, q, r in zip(none.projections, loose.projections, tight.projections):
        np.testing.assert_array_equal(p.weights, q.weights)
    assert any(not np.array_equal(p.weights, r.weights) for p, r in zip(none.projections, tight.projections))


def test_a_checkpoint_header_declaring_a_huge_array_is_refused_before_allocating(tmp_path, data_dir):
    """A checkpoint's .npy header decides the array size; --resume reads it with pipeline.core.npz's budget, so
    a (10^6, 10^6) float64 header (8 TB) is one line naming the file and member, not a MemoryError traceback."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    checkpoint = tmp_path / "huge.ckpt.npz"
    with zipfile.ZipFile(checkpoint, "w") as archive:
        archive.writestr("run_method.npy", _npy(np.array("bptt")))
        archive.writestr("param_w0.npy", header.getvalue())
    result = train(tmp_path, data_dir, "--resume", str(checkpoint), "--out", str(tmp_path / "m.npz"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "huge.ckpt.npz" in lines[0] and "'param_w0.npy'" in lines[0], result.stderr
    assert not (tmp_path / "m.npz").exists()


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
