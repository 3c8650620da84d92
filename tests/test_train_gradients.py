"""BPTT gradients of the numba kernels against JAX autodiff of the same model and surrogate (float mode).

The JAX model below is written independently from the kernels' equations (pipeline.train.kernels):
dense matrix products over time instead of event lists, the surrogate as a custom_jvp of the Heaviside
step, the reset as v' * (1 - stop_gradient(spike)). Each case checks spikes (forward) and the gradients of
every weight for a random linear loss of the output spikes and membrane potentials. A deliberately wrong
backward (a decay off by 5 % in the reverse pass only) must fail the same comparison.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="JAX (the test extra) is the independent autodiff")
import jax.numpy as jnp  # noqa: E402

from pipeline.train import kernels as K  # noqa: E402
from pipeline.train.lif_stack import LifStack, backward, forward  # noqa: E402
from jax_reference import jax_surrogate  # noqa: E402


def jax_model(params, x, decays, n_layers, spike):
    """x (B, T, n_in) counts -> (output spikes, output v') (B, T, n_out), all layers in sequence."""
    inputs = x
    for li in range(n_layers):
        w = params[f"w{li}"]
        r = params.get(f"r{li}")
        n = w.shape[1]
        decay_u, decay_v = decays[li]
        b, t_steps = inputs.shape[0], inputs.shape[1]
        u = jnp.zeros((b, n), jnp.float32)
        v = jnp.zeros((b, n), jnp.float32)
        s_prev = jnp.zeros((b, n), jnp.float32)
        spikes, vs = [], []
        for t in range(t_steps):
            a = inputs[:, t - 1] @ w if t >= 1 else jnp.zeros((b, n), jnp.float32)
            if r is not None:
                a = a + s_prev @ r
            u = u * decay_u + a
            vp = v * decay_v + u
            s = spike(vp - 1.0)
            v = vp * (1.0 - jax.lax.stop_gradient(s))
            spikes.append(s)
            vs.append(vp)
            s_prev = s
        inputs = jnp.stack(spikes, 1)
        v_out = jnp.stack(vs, 1)
    return inputs, v_out


def events_of(x):
    """Dense counts (B, T, n) -> the kernels' CSR batch."""
    b, t, _ = x.shape
    indptr = np.zeros((b, t + 1), np.int64)
    index, count = [], []
    for i in range(b):
        indptr[i, 0] = len(index)
        for s in range(t):
            nz = np.nonzero(x[i, s])[0]
            index.extend(nz)
            count.extend(x[i, s, nz])
            indptr[i, s + 1] = len(index)
    return indptr, np.array(index, np.int32), np.array(count, np.float32)


def case(kind, recurrent, seed=0, sizes=(12, 9, 4), steps=30, batch=3):
    rng = np.random.default_rng(seed)
    model = LifStack(list(sizes), "float", 4.0, 10.0, 1.0, recurrent, 1024, [3.0, 3.0], rng)
    for name, w in model.params.items():  # strong enough that every layer spikes
        w[...] = rng.normal(0.25, 0.6, w.shape)
    x = (rng.random((batch, steps, sizes[0])) < 0.3).astype(np.float32) * rng.integers(1, 3, (batch, steps, sizes[0]))
    layers = model.layers()
    indptr, index, count = events_of(x)
    traces = forward(layers, indptr, index, count, steps)
    g_s = rng.normal(size=traces[-1].spikes.shape).astype(np.float32)
    g_v = rng.normal(size=traces[-1].spikes.shape).astype(np.float32)
    spike = jax_surrogate(kind, 2.0)
    params = {k: jnp.asarray(v) for k, v in model.params.items()}

    def loss(p):
        s, vp = jax_model(p, jnp.asarray(x), [(layer.decay_u, layer.decay_v) for layer in layers], model.n_layers, spike)
        return jnp.sum(s * g_s) + jnp.sum(vp * g_v), s
    (_, s_ref), ref = jax.value_and_grad(loss, has_aux=True)(params)
    return model, layers, traces, (indptr, index, count), g_s, g_v, np.asarray(s_ref), {k: np.asarray(v) for k, v in ref.items()}


def close(ours, ref):
    return all(np.allclose(ours[k], ref[k], rtol=2e-3, atol=2e-4 * np.abs(ref[k]).max()) for k in ref)


@pytest.mark.parametrize("recurrent", [False, True], ids=["dense", "recurrent"])
@pytest.mark.parametrize("kind", list(K.SURROGATES))
def test_gradients_match_jax(kind, recurrent):
    model, layers, traces, inputs, g_s, g_v, s_ref, ref = case(kind, recurrent)
    np.testing.assert_array_equal(traces[-1].spikes, s_ref)          # same forward
    assert 0 < traces[0].spikes.mean() < 0.9 and traces[-1].spikes.any()
    ours = backward(layers, traces, inputs, g_s.copy(), g_v, K.SURROGATES[kind], 2.0, recurrent)
    assert set(ours) == set(ref)
    for name in ref:
        np.testing.assert_allclose(ours[name], ref[name], rtol=2e-3, atol=2e-4 * np.abs(ref[name]).max(),
                                   err_msg=f"{kind} {name}")


@pytest.mark.parametrize("recurrent", [False, True], ids=["dense", "recurrent"])
def test_a_wrong_kernel_fails_the_check(recurrent):
    """The same comparison rejects a backward whose synaptic decay is 5 % off, or whose surrogate slope is."""
    model, layers, traces, inputs, g_s, g_v, s_ref, ref = case("fast_sigmoid", recurrent)
    good = backward(layers, traces, inputs, g_s.copy(), g_v, K.FAST_SIGMOID, 2.0, recurrent)
    assert close(good, ref)
    wrong_decay = [dataclasses.replace(layer, decay_u=layer.decay_u * np.float32(0.95)) for layer in layers]
    assert not close(backward(wrong_decay, traces, inputs, g_s.copy(), g_v, K.FAST_SIGMOID, 2.0, recurrent), ref)
    assert not close(backward(layers, traces, inputs, g_s.copy(), g_v, K.FAST_SIGMOID, 2.2, recurrent), ref)


@pytest.mark.parametrize("recurrent", [False, True], ids=["dense", "recurrent"])
def test_results_do_not_depend_on_the_thread_count(recurrent):
    """Samples and weight-gradient rows are taken by whichever thread is free; every output is still summed
    in one fixed order, so 1 and 2 threads give the same bits."""
    import numba

    model, layers, traces, inputs, g_s, g_v, _, _ = case("arctan", recurrent, seed=4, batch=9, steps=40)
    runs = []
    previous = numba.get_num_threads()
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            t = forward(layers, *inputs, 40)
            runs.append(([x.spikes for x in t] + [x.vnorm for x in t],
                         backward(layers, t, inputs, g_s, g_v, K.ARCTAN, 2.0, recurrent)))
    finally:
        numba.set_num_threads(previous)
    (fwd1, grads1), (fwd2, grads2) = runs
    for a, b in zip(fwd1, fwd2):
        np.testing.assert_array_equal(a, b)
    assert set(grads1) == set(grads2)
    for name in grads1:
        np.testing.assert_array_equal(grads1[name], grads2[name], err_msg=name)
