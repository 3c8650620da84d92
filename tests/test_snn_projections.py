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


# Graded input steps: (indices, payloads). Counts 0..23 not all multiples of 4, a duplicated index (its last
# payload counts, once), payload 0, payloads near the int32 limits (int32 ring sums wrap), negatives.
_GRADED_STEPS = [
    ([], []),
    ([3], [5]),
    ([0, 1, 2], [1, 0, 7]),
    ([4, 9, 2, 17], [255, 1, 0, 3]),
    ([5, 6, 7, 8, 9], [2**31 - 1, -2**31, 2**30, -7, 1]),
    ([1, 1, 1, 2, 3, 4, 5], [9, 8, 2**31 - 1, 6, 0, 4, 3]),     # index 1 three times: payload 2**31 - 1, once
    ([22, 0, 11, 5, 5, 13, 7, 19, 2], [-1, 2**31 - 1, 2**31 - 1, 100, -100, 2**31 - 1, 12, 0, 2**31 - 1]),
    (list(range(23)), [(-1) ** i * (2**31 - 1 - i) for i in range(23)]),
    (list(range(22, -1, -1)) + [7, 7], list(range(23)) + [0, 2**31 - 1]),
]


def _reference_ring(weights, delays, payload_steps, ring_len, dtype, send_shift=0):
    """Ring contents (steps, ring_len, n_post) after each step, one row (one input spike) at a time with
    numpy: loihi (int) sums wrap to int32 (per delay, floor-shifted by 2**-send_shift first), float rounds to
    float32 after every row."""
    n_post, n_pre = weights.shape
    ring = np.zeros((ring_len, n_post), dtype)
    out = []
    for t, (indices, payloads) in enumerate(payload_steps):
        ring[t % ring_len] = 0
        last = {}
        for i, p in zip(indices, payloads):
            last[i] = p                                        # dict order: first occurrence; value: last payload
        partial = np.zeros((ring_len, n_post), dtype)
        for i, p in last.items():
            for d in np.unique(delays):
                column = np.where(delays[:, i] == d, weights[:, i], 0)
                slot = (t + 1 + d) % ring_len
                if dtype == np.float32:
                    partial[slot] = (partial[slot].astype(np.float64) + column.astype(np.float64) * p).astype(np.float32)
                else:
                    partial[slot] = (partial[slot].astype(np.int64) + column.astype(np.int64) * p).astype(np.int32)
        if dtype == np.float32:
            ring = (ring.astype(np.float64) + partial).astype(np.float32)
        else:
            ring = (ring.astype(np.int64) + (partial.astype(np.int64) >> -send_shift)).astype(np.int32)
        out.append(ring.copy())
    return out


@pytest.mark.parametrize("backend, limit, delay", [("loihi", 127, 0), ("loihi", 32767, 0), ("loihi", 32767, 2),
                                                   ("float", 32767, 0), ("float", 127, 3)])
def test_graded_dense_ring_matches_one_row_at_a_time(backend, limit, delay):
    """The graded Dense input (four rows per pass) leaves the ring exactly as numpy adding one row at a time."""
    rng = np.random.default_rng(limit + delay)
    weights = rng.integers(-limit, limit + 1, size=(9, 23)).astype(np.int32)
    weights[0, :] = limit                                       # a column of the largest weight: sums wrap
    dense = Dense(name="g", source=INPUT, target="p", weights=weights, num_message_bits=24, delay=delay,
                  weight_exp=-6, prepare_weights=False)
    runtime = build(Network(n_inputs=23, populations=[Population("p", 9, LoihiLIF(vth=2**16))],
                            projections=[dense]), backend)
    assert runtime.synapses.weights.dtype == (np.float32 if backend == "float" else np.int8 if limit < 128 else np.int16)
    dtype = np.float32 if backend == "float" else np.int32
    expected = _reference_ring(weights, np.full(weights.shape, delay), _GRADED_STEPS, delay + 2, dtype)
    for (indices, payloads), ring in zip(_GRADED_STEPS, expected):
        runtime.step(np.array(indices, np.int32), np.array(payloads, np.int64))
        np.testing.assert_array_equal(runtime.synapses.ring.reshape(delay + 2, 9), ring)


def test_graded_sparse_with_per_delay_shift_matches_numpy():
    """Per-synapse delays and a negative weight_exp (the ``partial`` target, each delay's sum floor-shifted)."""
    rng = np.random.default_rng(5)
    weights = rng.integers(-32767, 32768, size=(6, 23)).astype(np.int32)
    delays = rng.integers(0, 3, size=weights.shape)
    dense = Dense(name="g", source=INPUT, target="p", weights=weights, num_message_bits=24, delay=delays,
                  weight_exp=-3, prepare_weights=False)
    runtime = build(Network(n_inputs=23, populations=[Population("p", 6, LoihiLIF(vth=2**16))],
                            projections=[dense]), "loihi")
    assert runtime.synapses.table[0]["send_shift"] == -3
    expected = _reference_ring(weights, delays, _GRADED_STEPS, 4, np.int32, send_shift=-3)
    for (indices, payloads), ring in zip(_GRADED_STEPS, expected):
        runtime.step(np.array(indices, np.int32), np.array(payloads, np.int64))
        np.testing.assert_array_equal(runtime.synapses.ring.reshape(4, 6), ring)
