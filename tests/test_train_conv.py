"""Conv2D (stride, padding), sum/avg pooling and delayed Dense layers of the BPTT trainer
(pipeline.train.layer_stack, pipeline.train.conv_kernels).

* Gradients against JAX autodiff of the same model and surrogate, written independently of the kernels:
  jax.lax.conv_general_dilated for the convolutions and pools over dense (B, T, C, H, W) spike tensors, and
  one masked matrix product per delay value for the delayed Dense layer; a deliberately wrong kernel (a
  transposed conv tap, a delay off by one step, a wrong decay) must fail the same comparison.
* Quantization-aware forward == the loihi runtime (pipeline.snn.build) step for step, every population,
  on real N-MNIST recordings (and the float forward == the float backend), for a conv + pool + delayed
  Dense network written by the stack itself.
* The config: ``[network] layers`` errors name file, section and key (exit 2); a short training run
  through ``spikeloop train`` writes a network the loihi runtime classifies as the trainer did.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.snn import build
from pipeline.snn.model import InputSpec, Readout
from pipeline.snn.network import Network
from pipeline.train import kernels as K
from pipeline.train import layer_stack as LS
from pipeline.train.bptt import batch_events
from pipeline.train.present import present_file
from recordings.labelled import open_labelled

ROOT = Path(__file__).resolve().parents[1]


def conv(channels, kernel, stride=1, padding=0, max_weight=1.0):
    return LS.LayerSpec("conv", channels=channels, kernel=kernel, stride=stride, padding=padding, max_weight=max_weight)


def pool(kind, size, weight=1.1):
    return LS.LayerSpec(kind, kernel=size, stride=size, weight=weight)


def dense(size, delay_max=0, max_weight=1.0):
    return LS.LayerSpec("dense", size=size, delay_max=delay_max, max_weight=max_weight)


# ---------------------------------------------------------------------------------------------- JAX reference
jax = pytest.importorskip("jax", reason="JAX (the test extra) is the independent autodiff")
import jax.numpy as jnp
from jax_reference import jax_surrogate


def events_of(x):
    """Dense counts (B, T, n) -> the kernels' CSR batch (indptr, index, count)."""
    b, steps, _ = x.shape
    indptr = np.zeros((b, steps + 1), np.int64)
    index, count = [], []
    for i in range(b):
        indptr[i, 0] = len(index)
        for t in range(steps):
            nz = np.nonzero(x[i, t])[0]
            index.extend(nz)
            count.extend(x[i, t, nz])
            indptr[i, t + 1] = len(index)
    return indptr, np.array(index, np.int32), np.array(count, np.float32)


def jax_model(stack: LS.LayerStack, params, x, spike):
    """x (B, T, n_in) -> (output spikes, output v') (B, T, n_out); every layer from the stack's specs."""
    inputs = x
    b, steps = x.shape[:2]
    decay_u = np.float32(np.exp(-stack.dt_ms / stack.tau_syn_ms))
    decay_v = np.float32(np.exp(-stack.dt_ms / stack.tau_mem_ms))
    for li, spec in enumerate(stack.specs):
        src, out = stack.shapes[li]
        w = params.get(f"w{li}", None)
        if spec.kind == "dense":
            w = w if w is not None else stack.fixed[li]
            delays = stack.delays.get(li, np.zeros(w.shape, np.int64))
            flat = inputs.reshape(b, steps, -1)
            # a[t] = sum over delay values dv of x[t - 1 - dv] @ (W where delay == dv)
            a = jnp.zeros((b, steps, out[0]), jnp.float32)
            for dv in range(int(delays.max()) + 1):
                part = flat @ (w * (delays == dv))
                shift = 1 + dv
                if shift < steps:
                    a = a.at[:, shift:].add(part[:, :steps - shift])
        else:
            kernel = w if w is not None else jnp.asarray(stack.fixed[li])
            groups = 1 if spec.kind == "conv" else src[0]
            grid = inputs.reshape(b * steps, *src)
            y = jax.lax.conv_general_dilated(grid, kernel, (spec.stride, spec.stride),
                                             [(spec.padding, spec.padding)] * 2, feature_group_count=groups,
                                             dimension_numbers=("NCHW", "OIHW", "NCHW"))
            y = y.reshape(b, steps, -1)
            a = jnp.concatenate([jnp.zeros_like(y[:, :1]), y[:, :-1]], axis=1)
        u = jnp.zeros(a.shape[::2], jnp.float32)
        v = jnp.zeros_like(u)
        spikes, vs = [], []
        for t in range(steps):
            u = u * decay_u + a[:, t]
            vp = v * decay_v + u
            s = spike(vp - 1.0)
            v = vp * (1.0 - jax.lax.stop_gradient(s))
            spikes.append(s)
            vs.append(vp)
        inputs = jnp.stack(spikes, 1)
        v_out = jnp.stack(vs, 1)
    return inputs, v_out


CASES = {
    # conv with stride and padding -> sum pool -> dense -> output
    "conv_sumpool": ((2, 9, 9), [conv(3, 3, stride=2, padding=1), pool("sumpool", 2), dense(6)]),
    # two convs (the second gets a source gradient) -> average pool -> output
    "conv_conv_avgpool": ((1, 8, 8), [conv(3, 3, padding=1), conv(4, 2, stride=2), pool("avgpool", 2, 3.0)]),
    # delayed dense -> delayed dense -> output
    "delayed_dense": ((1, 1, 10), [dense(8, delay_max=4), dense(7, delay_max=3)]),
}


def case(name, kind="fast_sigmoid", seed=0, steps=24, batch=3):
    in_shape, specs = CASES[name]
    rng = np.random.default_rng(seed)
    stack = LS.LayerStack(specs, in_shape, 4, "float", 4.0, 10.0, 1.0, 1024, (3.0, 3.0), rng)
    for w in stack.params.values():  # strong enough that every layer spikes
        w[...] = rng.normal(0.1, 0.5, w.shape)
    n_in = int(np.prod(in_shape))
    x = (rng.random((batch, steps, n_in)) < 0.3).astype(np.float32) * rng.integers(1, 3, (batch, steps, n_in))
    layers = stack.layers()
    inputs = events_of(x)
    traces = LS.forward(layers, *inputs, steps)
    g_s = rng.normal(size=traces[-1].spikes.shape).astype(np.float32)
    g_v = rng.normal(size=traces[-1].spikes.shape).astype(np.float32)
    spike = jax_surrogate(kind, 2.0)
    params = {k: jnp.asarray(v) for k, v in stack.params.items()}

    def loss(p):
        s, vp = jax_model(stack, p, jnp.asarray(x), spike)
        return jnp.sum(s * g_s) + jnp.sum(vp * g_v), s
    (_, s_ref), ref = jax.value_and_grad(loss, has_aux=True)(params)
    return layers, traces, inputs, g_s, g_v, np.asarray(s_ref), {k: np.asarray(v) for k, v in ref.items()}


def close(ours, ref):
    return all(np.allclose(ours[k], ref[k], rtol=2e-3, atol=2e-4 * np.abs(ref[k]).max()) for k in ref)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("kind", ["fast_sigmoid", "arctan", "triangle"])
def test_gradients_match_jax(name, kind):
    layers, traces, inputs, g_s, g_v, s_ref, ref = case(name, kind)
    np.testing.assert_array_equal(traces[-1].spikes, s_ref)          # same forward
    for trace in traces:                                               # every layer is active, none saturated
        assert 0 < trace.spikes.mean() < 0.9
    ours = LS.backward(layers, traces, inputs, g_s.copy(), g_v, K.SURROGATES[kind], 2.0)
    assert set(ours) == set(ref)
    for key in ref:
        assert np.abs(ref[key]).max() > 0
        np.testing.assert_allclose(ours[key], ref[key], rtol=2e-3, atol=2e-4 * np.abs(ref[key]).max(),
                                   err_msg=f"{name} {kind} {key}")


def test_a_wrong_kernel_fails_the_check():
    """The same comparison rejects a backward with a flipped conv kernel (the second conv's source
    gradient), a conv geometry without its padding (the weight gradient), a 5 % wrong synaptic decay, and
    delays one step late."""
    def backward(layers):
        return LS.backward(layers, traces, inputs, g_s.copy(), g_v, K.FAST_SIGMOID, 2.0)

    layers, traces, inputs, g_s, g_v, _, ref = case("conv_conv_avgpool")
    assert close(backward(layers), ref)
    flipped = [dataclasses.replace(la, w_eff=np.ascontiguousarray(la.w_eff[:, :, ::-1, ::-1]))
               if la.kind == "conv" else la for la in layers]
    assert not close(backward(flipped), ref)
    layers, traces, inputs, g_s, g_v, _, ref = case("conv_sumpool")
    assert close(backward(layers), ref)
    unpadded = [dataclasses.replace(la, geometry=np.where(np.isin(np.arange(13), (10, 11)), 0, la.geometry))
                if la.kind == "conv" else la for la in layers]
    assert not close(backward(unpadded), ref)
    slow = [dataclasses.replace(la, decay_u=la.decay_u * np.float32(0.95)) for la in layers]
    assert not close(backward(slow), ref)
    layers, traces, inputs, g_s, g_v, _, ref = case("delayed_dense")
    assert close(backward(layers), ref)
    late = [dataclasses.replace(la, delays=(la.delays + 1).astype(np.uint8)) if la.delays.size else la
            for la in layers]
    assert not close(backward(late), ref)


# ---------------------------------------------------------------------------------------------- the runtime
def recordings(data_dir, spec, shape, n):
    folder = data_dir / "nmnist_small"
    labelled = open_labelled(folder / "test", folder / "test_labels.txt")
    return [present_file(p, spec, shape, int(np.prod(shape))) for p in labelled.paths[:n]]


@pytest.mark.parametrize("mode", ["loihi", "float"])
@pytest.mark.parametrize("encoding", ["spikes", "counts"])
def test_forward_is_the_runtime_step_for_step(data_dir, mode, encoding):
    """conv (stride 2, padding 1) -> sum pool -> delayed dense -> output on 34x34x2 N-MNIST: every
    population's spikes, and the output's membrane voltage, equal the runtime's at every step."""
    spec = InputSpec(encoding=encoding, duration_us=80_000, tail_steps=2)
    shape = (2, 34, 34)
    presentations = recordings(data_dir, spec, shape, 4)
    specs = [conv(4, 5, stride=2, padding=1), pool("sumpool", 2), dense(24, delay_max=6)]
    stack = LS.LayerStack(specs, shape, 10, mode, 5.0, 20.0, 1.0, 1024, (0.5, 2.0), np.random.default_rng(1),
                          init_gain=3.0, input_rate=0.005)
    network = stack.network(shape, spec, Readout(classes=tuple("0123456789")))
    kinds = [type(p).__name__ for p in network.projections]
    assert kinds == ["Conv2D", "Conv2D", "Dense", "Dense"] and np.ndim(network.projections[2].delay) == 2
    layers = LS.compile_layers(network)
    for a, b in zip(stack.layers(), layers):          # the stack's kernel arguments are its file's
        np.testing.assert_array_equal(a.weights, b.weights)
        assert a.shift == b.shift
    traces = LS.forward(layers, *batch_events(presentations))
    for trace in traces:
        assert trace.spikes.any()
    names = [p.name for p in network.populations]
    threshold = 1024 * 64 if mode == "loihi" else 1.0
    for b, p in enumerate(presentations):
        runtime = build(network, mode)
        for t in range(p.n_steps):
            lo, hi = p.indptr[t], p.indptr[t + 1]
            runtime.step(p.index[lo:hi], p.count[lo:hi] if encoding == "counts" else None)
            for li, name in enumerate(names):
                np.testing.assert_array_equal(runtime.spikes_of(name), traces[li].spikes[b, t],
                                              err_msg=f"{name} step {t}")
            post = np.where(traces[-1].spikes[b, t].astype(bool), 0.0, traces[-1].vnorm[b, t])
            if mode == "loihi":
                np.testing.assert_array_equal(np.round(post * threshold).astype(np.int64), runtime.v("output"))
            else:
                np.testing.assert_allclose(post, runtime.v("output"), rtol=1e-5, atol=1e-6)


def test_delayed_dense_is_the_runtime_with_delays(data_dir):
    """A Dense layer with per-synapse delays 0..20 steps: the trainer's loihi forward equals the runtime's
    delay rings, and the same weights without their delays give different spikes (the delays matter)."""
    spec = InputSpec(scale=2, duration_us=100_000, tail_steps=2)
    shape = (2, 17, 17)
    presentations = recordings(data_dir, spec, shape, 3)
    stack = LS.LayerStack([dense(30, delay_max=20, max_weight=0.5)], shape, 10, "loihi", 5.0, 20.0, 1.0, 1024,
                          (0.5, 2.0), np.random.default_rng(4), init_gain=3.0, input_rate=0.005)
    network = stack.network(shape, spec, Readout(classes=tuple("0123456789")))
    traces = LS.forward(LS.compile_layers(network), *batch_events(presentations))
    assert traces[0].spikes.mean() > 0.01
    undelayed = network.with_projection("fc0", delay=0)
    plain = LS.forward(LS.compile_layers(undelayed), *batch_events(presentations))
    assert not np.array_equal(plain[0].spikes, traces[0].spikes)
    for b, p in enumerate(presentations):
        runtime = build(network, "loihi")
        hidden = []
        for t in range(p.n_steps):
            runtime.step(p.index[p.indptr[t]:p.indptr[t + 1]])
            hidden.append(runtime.spikes_of("hidden0").copy())
        np.testing.assert_array_equal(np.array(hidden), traces[0].spikes[b, :p.n_steps])


# ---------------------------------------------------------------------------------------------- config / CLI
def run_cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline.app.cli", *args], check=False, capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=900)


CONFIG = """
[train]
method = "bptt"
seed = 1
mode = "loihi"
epochs = 1
batch_size = 16
limit = 32
lr = 1e-3
[data]
train = "nmnist_small/train"
train_labels = "nmnist_small/train_labels.txt"
test = "nmnist_small/test"
test_labels = "nmnist_small/test_labels.txt"
[input]
duration_us = 60000
[network]
max_weight_hidden = 0.25
max_weight_output = 0.5
layers = LAYERS
"""


@pytest.mark.parametrize("layers, message", [
    ('[{type = "conv", chanels = 4, kernel = 3}]', "[network] layers[0].chanels: unknown key"),
    ('[{type = "conv", kernel = 3}]', "[network] layers[0].channels: missing"),
    ('[{type = "cnv", size = 3}]', "[network] layers[0].type: expected one of"),
    ('[{type = "dense", size = 8, delay_max = 99}]', "[network] layers[0].delay_max: expected an integer in [0, 62]"),
    ('[{type = "dense", size = 8}, {type = "sumpool", size = 2}]', "[network] layers[1].type: a sumpool layer"),
    ('[{type = "conv", channels = 2, kernel = 40}]', "[network] layers[0] (conv): kernel 40 gives an empty"),
    ('[1, 2]', "[network] layers: expected a list of tables"),
])
def test_bad_layers_fail_with_one_line(tmp_path, data_dir, layers, message):
    config = tmp_path / "bad.toml"
    config.write_text(CONFIG.replace("LAYERS", layers))
    out = tmp_path / "model.npz"
    result = run_cli("train", str(config), "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists() and not list(tmp_path.glob("model*"))


@pytest.mark.slow
def test_train_writes_a_conv_network_the_runtime_runs_alike(tmp_path, data_dir):
    config = tmp_path / "conv.toml"
    config.write_text(CONFIG.replace("LAYERS", '[{type = "conv", channels = 4, kernel = 5, stride = 2, padding = 1},'
                                               ' {type = "avgpool", size = 2}, {type = "dense", size = 32, '
                                               'delay_max = 3}]'))
    out = tmp_path / "conv.npz"
    result = run_cli("train", str(config), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    network = Network.load(out)
    assert [type(p).__name__ for p in network.projections] == ["Conv2D", "Conv2D", "Dense", "Dense"]
    assert metrics["runtime_agreement"] == 1.0
    assert metrics["test_accuracy"] == metrics["loihi_test_accuracy"]


@pytest.mark.slow
def test_shipped_conv_config_trains(tmp_path, data_dir):
    """launch/train_nmnist_conv.toml (shortened with --set) trains and deploys bit-exact on loihi."""
    out = tmp_path / "conv.npz"
    result = run_cli("train", str(ROOT / "launch" / "train_nmnist_conv.toml"), "--out", str(out), "--json",
                     "--set", "train.epochs=1", "--set", "train.limit=32", "--set", "input.duration_us=50000")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["runtime_agreement"] == 1.0
    assert out.exists() and out.with_suffix(".png").exists()
