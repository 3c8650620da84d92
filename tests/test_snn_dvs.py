"""A convolutional network on real DVS events (N-MNIST saccades, ../shared/data/nmnist_small).

Events are binned into 1 ms steps and fed as input indices (c * 34 + y) * 34 + x with the polarity as
the channel, the layout Conv2D documents for event grids.
"""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.snn import INPUT, Conv2D, Dense, LoihiLIF, Network, Population, build

SIDE = 34


def nmnist_steps(path) -> list[np.ndarray]:
    """Per 1 ms step the active input indices of an N-MNIST 40-bit file (x, y, p|t22..16, t15..8, t7..0)."""
    raw = np.fromfile(path, dtype=np.uint8)
    assert raw.size % 5 == 0, f"{path}: size {raw.size} is not a multiple of 5 bytes"
    b = raw.reshape(-1, 5).astype(np.int64)
    x, y, p = b[:, 0], b[:, 1], b[:, 2] >> 7
    t_us = ((b[:, 2] & 0x7F) << 16) | (b[:, 3] << 8) | b[:, 4]
    step = t_us // 1000
    index = (p * SIDE + y) * SIDE + x
    bounds = np.searchsorted(step, np.arange(step.max() + 2))
    return [index[bounds[k]:bounds[k + 1]].astype(np.int32) for k in range(step.max() + 1)]


def conv_network(as_dense: bool) -> Network:
    rng = np.random.default_rng(0)
    conv = Conv2D(name="conv", source=INPUT, target="features", kernel=rng.integers(-40, 100, (4, 2, 5, 5)),
                  in_shape=(2, SIDE, SIDE), stride=(2, 2), padding=(2, 2))
    first = conv
    if as_dense:
        first = Dense(name="conv", source=INPUT, target="features", weights=conv.dense_weights(2 * SIDE * SIDE, 4 * 17 * 17))
    return Network(
        n_inputs=2 * SIDE * SIDE, input_shape=(2, SIDE, SIDE),
        populations=[Population("features", 4 * 17 * 17, LoihiLIF(du=1000, dv=500, vth=120)),
                     Population("digits", 10, LoihiLIF(du=1000, dv=500, vth=60), probe_v=True)],
        projections=[first, Dense(name="readout", source="features", target="digits",
                                  weights=rng.integers(-30, 60, (10, 4 * 17 * 17)))])


@pytest.fixture(scope="module")
def sample(data_dir):
    return nmnist_steps(data_dir / "nmnist_small" / "test" / "60001.bs2")


def test_sample_decodes_as_the_data_readme_says(sample):
    n_events = sum(len(s) for s in sample)
    assert 1000 <= n_events <= 6000 and 250 <= len(sample) <= 320  # ~1-6 k events, ~300 ms
    assert max(int(s.max()) for s in sample if len(s)) < 2 * SIDE * SIDE


@pytest.mark.parametrize("backend", ["loihi", "float"])
def test_conv_on_real_events_equals_its_dense_matrix_and_counts_synapses(sample, backend):
    conv_runtime, dense_runtime = build(conv_network(False), backend), build(conv_network(True), backend)
    fan_out = np.diff(conv_network(False).projections[0].synapses(2 * SIDE * SIDE, 4 * 17 * 17)[0])
    expected_conv_ops = 0
    feature_spikes = 0
    for active in sample:
        a = conv_runtime.step(active).copy()
        b = dense_runtime.step(active)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(conv_runtime.spikes_of("features"), dense_runtime.spikes_of("features"))
        np.testing.assert_array_equal(conv_runtime.v("digits"), dense_runtime.v("digits"))
        expected_conv_ops += int(fan_out[np.unique(active)].sum())
        feature_spikes += int(conv_runtime.spikes_of("features").sum())
    by_pop = conv_runtime.counters.by_population()
    assert by_pop["features"]["synaptic_ops"] == expected_conv_ops  # only rows of active pixels touched
    assert by_pop["digits"]["synaptic_ops"] == feature_spikes * 10
    assert by_pop["features"]["spikes"] == feature_spikes > 50
    assert by_pop["digits"]["spikes"] > 0
    # dense stores every (zero) synapse of the implied matrix; the conv projection only real ones
    assert dense_runtime.counters.by_population()["features"]["synaptic_ops"] == \
        sum(len(np.unique(s)) for s in sample) * 4 * 17 * 17
