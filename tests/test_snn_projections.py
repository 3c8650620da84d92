"""Dense, sparse (CSR) and 2-D convolution projections, recurrence and synaptic delays."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import correlate2d

from pipeline.snn import INPUT, Conv2D, Dense, LoihiLIF, Network, Population, Sparse, build


def conv_matrix_by_loops(kernel, in_shape, stride, padding) -> np.ndarray:
    """Reference: the (n_post, n_pre) matrix of a strided, padded cross-correlation, by explicit loops."""
    c_out, c_in, kh, kw = kernel.shape
    _, h, w = in_shape
    oh = (h + 2 * padding[0] - kh) // stride[0] + 1
    ow = (w + 2 * padding[1] - kw) // stride[1] + 1
    matrix = np.zeros((c_out * oh * ow, c_in * h * w), dtype=kernel.dtype)
    for co in range(c_out):
        for oy in range(oh):
            for ox in range(ow):
                for ci in range(c_in):
                    for ky in range(kh):
                        for kx in range(kw):
                            iy, ix = oy * stride[0] - padding[0] + ky, ox * stride[1] - padding[1] + kx
                            if 0 <= iy < h and 0 <= ix < w:
                                matrix[(co * oh + oy) * ow + ox, (ci * h + iy) * w + ix] += kernel[co, ci, ky, kx]
    return matrix


@settings(deadline=None, max_examples=30)
@given(c_in=st.integers(1, 2), c_out=st.integers(1, 3), h=st.integers(3, 7), w=st.integers(3, 7),
       kh=st.integers(1, 3), kw=st.integers(1, 3), sy=st.integers(1, 2), sx=st.integers(1, 2),
       py=st.integers(0, 1), px=st.integers(0, 1), seed=st.integers(0, 2**16))
def test_conv_synapses_equal_the_matrix_of_the_convolution(c_in, c_out, h, w, kh, kw, sy, sx, py, px, seed):
    kernel = np.random.default_rng(seed).integers(-100, 100, (c_out, c_in, kh, kw))
    conv = Conv2D(name="c", source=INPUT, target="p", kernel=kernel, in_shape=(c_in, h, w), stride=(sy, sx),
                  padding=(py, px))
    n_post = int(np.prod(conv.out_shape()))
    conv.check_sizes(c_in * h * w, n_post)
    np.testing.assert_array_equal(conv.dense_weights(c_in * h * w, n_post),
                                  conv_matrix_by_loops(kernel, (c_in, h, w), (sy, sx), (py, px)))


def test_conv_matrix_agrees_with_scipy_correlate():
    rng = np.random.default_rng(3)
    kernel = rng.integers(-9, 9, (2, 2, 3, 3))
    x = (rng.random((2, 6, 5)) < 0.4).astype(np.int64)
    conv = Conv2D(name="c", source=INPUT, target="p", kernel=kernel, in_shape=(2, 6, 5), padding=(1, 1))
    matrix = conv.dense_weights(60, 60)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    expected = np.stack([sum(correlate2d(padded[ci], kernel[co, ci], mode="valid") for ci in range(2)) for co in range(2)])
    np.testing.assert_array_equal(matrix @ x.ravel(), expected.ravel())


def _network(projection, n_in, n_out, **lif) -> Network:
    neuron = LoihiLIF(du=lif.get("du", 300), dv=lif.get("dv", 200), vth=lif.get("vth", 90), bias_mant=0)
    return Network(n_inputs=n_in, populations=[Population("p", n_out, neuron, probe_u=True, probe_v=True)],
                   projections=[projection])


def _trace(network, backend, inputs):
    runtime = build(network, backend)
    rows = []
    for active in inputs:
        spikes = runtime.step(active).copy()
        rows.append(np.concatenate([spikes, runtime.u("p"), runtime.v("p")]))
    return np.array(rows)


@pytest.mark.parametrize("backend", ["loihi", "float"])
def test_dense_sparse_and_conv_runs_are_identical(backend):
    rng = np.random.default_rng(7)
    kernel = rng.integers(-60, 90, (3, 2, 3, 3))
    in_shape = (2, 8, 8)
    conv = Conv2D(name="w", source=INPUT, target="p", kernel=kernel, in_shape=in_shape, stride=(1, 2),
                  padding=(1, 0), weight_exp=1)
    n_in, n_out = 128, int(np.prod(conv.out_shape()))
    matrix = conv_matrix_by_loops(kernel, in_shape, (1, 2), (1, 0))
    inputs = [np.flatnonzero(rng.random(n_in) < 0.15).astype(np.int32) for _ in range(60)]
    by_conv = _trace(_network(conv, n_in, n_out), backend, inputs)
    by_dense = _trace(_network(Dense(name="w", source=INPUT, target="p", weights=matrix, weight_exp=1), n_in, n_out),
                      backend, inputs)
    by_sparse = _trace(_network(Sparse.from_dense(matrix, name="w", source=INPUT, target="p", weight_exp=1),
                                n_in, n_out), backend, inputs)
    assert by_dense[:, :n_out].sum() > 20  # the comparison covers spiking activity
    np.testing.assert_array_equal(by_conv, by_dense)
    np.testing.assert_array_equal(by_sparse, by_dense)


@pytest.mark.parametrize("backend", ["loihi", "float"])
@pytest.mark.parametrize("delay", [0, 1, 5, 62])
def test_projection_delay_adds_steps_after_the_one_step_hop(backend, delay):
    net = _network(Dense(name="d", source=INPUT, target="p", weights=np.array([[50]]), delay=delay), 1, 1,
                   du=4095, dv=4095, vth=10**5)
    trace = _trace(net, backend, [np.array([0] if t == 2 else [], np.int32) for t in range(70)])
    assert np.flatnonzero(trace[:, 1]).tolist() == [2 + 1 + delay]
    assert trace[2 + 1 + delay, 1] == 50 * 64


@pytest.mark.parametrize("backend", ["loihi", "float"])
def test_per_synapse_delays_sparse_and_dense(backend):
    # input 0 -> neuron 0 (delay 0) and neuron 1 (delay 3); input 1 -> neuron 1 (delay 7)
    sparse = Sparse(name="s", source=INPUT, target="p", indptr=np.array([0, 2, 3]), indices=np.array([0, 1, 1]),
                    weights=np.array([10, 20, 30]), delay=np.array([0, 3, 7]))
    dense = Dense(name="s", source=INPUT, target="p", weights=np.array([[10, 0], [20, 30]]),
                  delay=np.array([[0, 0], [3, 7]]))
    inputs = [np.array([0, 1] if t == 0 else [], np.int32) for t in range(12)]
    for projection in (sparse, dense):
        u = _trace(_network(projection, 2, 2, du=4095, dv=4095, vth=10**5), backend, inputs)[:, 2:4]
        assert {(int(t), int(n)): int(u[t, n]) for t, n in np.argwhere(u)} == {(1, 0): 640, (4, 1): 1280, (8, 1): 1920}


def test_recurrent_projection_feeds_back_one_step_later():
    """Neuron 0 spikes at steps 4, 9, ... from its bias; the recurrent weight 100 reaches neuron 1 a step later."""
    neuron = LoihiLIF(du=4095, dv=0, vth=8, bias_mant=np.array([2, 0]), bias_exp=6)
    recurrent = Dense(name="r", source="p", target="p", weights=np.array([[0, 0], [100, 0]]))
    net = Network(n_inputs=0, populations=[Population("p", 2, neuron, probe_u=True)], projections=[recurrent])
    runtime = build(net, "loihi")
    u1 = []
    for _ in range(12):
        runtime.step(np.zeros(0, np.int32))
        u1.append(int(runtime.u("p")[1]))
    assert [t for t, x in enumerate(u1) if x] == [5, 10] and u1[5] == 6400


def test_sparse_from_dense_keeps_only_nonzero_synapses():
    matrix = np.array([[0, 3, 0], [4, 0, 0]])
    sparse = Sparse.from_dense(matrix, name="s", source=INPUT, target="p")
    assert sparse.indptr.tolist() == [0, 1, 2, 2] and sparse.indices.tolist() == [1, 0]
    assert sparse.weights.tolist() == [4, 3]
    np.testing.assert_array_equal(sparse.dense_weights(3, 2), matrix)
