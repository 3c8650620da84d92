"""Float -> Loihi conversion: the quantization report, and float vs loihi agreement on converted networks.

Tolerance: the converter keeps thresholds exact (the scale is chosen from them), realizes decays within
1/8192 per step, and rounds weights to the 8-bit mantissa (error <= 1 mantissa step, <= 1/127 of the
projection's largest weight for mixed signs, where only even mantissas survive). The fixed-point state
additionally truncates u and v toward zero by < 1 unit (1/2**20 of the threshold) per step. Neurons
driven well above threshold therefore keep their counts within a spike or two; fluctuation-driven
neurons near threshold (most of this recurrent network) shift single spikes by a step, and through the
recurrent inhibition those shifts decorrelate later spike times, so their count difference grows like
the Poisson spread of the count. Tolerance per neuron: |float - loihi| <= 2 + sqrt(count) (observed
<= 0.9 sqrt); population totals within 1 % (observed <= 0.4 %). A weight exponent off by one (x2 input)
gives ~14 sqrt(count) and fails, as tested below.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.snn import INPUT, Conv2D, Dense, FloatLIF, LoihiLIF, Network, Population, build
from pipeline.snn.convert import quantize_weights, to_loihi

STEPS = 4000


def float_network(seed: int = 0) -> Network:
    rng = np.random.default_rng(seed)
    return Network(
        n_inputs=100, output="o",
        populations=[Population("h", 40, FloatLIF(tau_syn_ms=5.0, tau_mem_ms=20.0, threshold=1.0, bias=0.004,
                                                  refractory_ms=2.0)),
                     Population("o", 10, FloatLIF(tau_syn_ms=8.0, tau_mem_ms=15.0, threshold=0.8))],
        projections=[Dense(name="in_h", source=INPUT, target="h", weights=rng.normal(0.004, 0.02, (40, 100))),
                     Dense(name="h_o", source="h", target="o", weights=rng.normal(0.01, 0.03, (10, 40))),
                     Dense(name="h_h", source="h", target="h", weights=-0.01 * (1 - np.eye(40)), delay=1)])


def poisson(n: int, rate: float, steps: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.flatnonzero(rng.random(n) < rate).astype(np.int32) for _ in range(steps)]


def spike_counts(network: Network, backend: str, inputs) -> dict[str, np.ndarray]:
    runtime = build(network, backend)
    counts = {p.name: np.zeros(p.size, dtype=np.int64) for p in network.populations}
    for active in inputs:
        runtime.step(active)
        for name in counts:
            counts[name] += runtime.spikes_of(name)
    return counts


@pytest.fixture(scope="module")
def converted():
    network = float_network()
    loihi, report = to_loihi(network)
    inputs = poisson(100, 0.05, STEPS, seed=1)
    return network, loihi, report, inputs, spike_counts(network, "float", inputs)


def test_report_bounds(converted):
    network, loihi, report, _, _ = converted
    assert [p.name for p in report.populations] == ["h", "o"]
    for pop in report.populations:
        assert pop.threshold_rel_error == 0.0
        assert pop.decay_u_error <= 1 / 8192 and pop.decay_v_error <= 1 / 8192
        assert pop.bias_rel_error <= 2**7 / 2**20  # one mantissa step at the largest exponent
    h = report.populations[0]
    assert abs(h.tau_syn_ms_realized - 5.0) < 0.01 and abs(h.tau_mem_ms_realized - 20.0) < 0.05
    for projection in report.projections:
        assert 0 < projection.max_rel_error <= 1 / 127 and projection.n_clipped == 0
    assert loihi.populations[0].neuron.refractory.tolist() == [2] * 40
    assert "in_h" in str(report) and "tau_syn ms" in str(report)


def test_float_and_loihi_spike_counts_agree(converted):
    network, loihi, _, inputs, float_counts = converted
    loihi_counts = spike_counts(loihi, "loihi", inputs)
    for name in ("h", "o"):
        f, q = float_counts[name], loihi_counts[name]
        assert f.sum() > 5 * len(f)  # every population is really firing
        assert np.all(np.abs(f - q) <= 2 + np.sqrt(f)), (name, f, q)
        assert abs(int(f.sum()) - int(q.sum())) <= 0.01 * f.sum()


def test_the_tolerance_catches_a_wrong_weight_exponent(converted):
    _, loihi, _, inputs, float_counts = converted
    broken = dataclasses.replace(loihi, projections=[dataclasses.replace(loihi.projections[0],
                                                                         weight_exp=loihi.projections[0].weight_exp + 1),
                                                     *loihi.projections[1:]])
    counts = spike_counts(broken, "loihi", inputs)["h"]
    assert not np.all(np.abs(float_counts["h"] - counts) <= 2 + np.sqrt(float_counts["h"]))


def test_float_backend_on_the_converted_network_tracks_the_loihi_backend(converted):
    _, loihi, _, inputs, _ = converted
    a, b = spike_counts(loihi, "float", inputs[:1000]), spike_counts(loihi, "loihi", inputs[:1000])
    for name in a:
        assert np.all(np.abs(a[name] - b[name]) <= 2 + np.sqrt(a[name]))


def test_quantize_weights_picks_the_smallest_exponent_that_fits():
    mantissa, exp, report = quantize_weights(np.array([0.5, -0.25, 0.125]), scale=2**20)
    # 0.5 * 2**20 / 2**(e + 6) <= 254 needs e = 6 (e = 5 gives 256); mantissas even (mixed signs)
    assert exp == 6 and mantissa.tolist() == [128, -64, 32]
    assert report.max_rel_error <= 1 / 127
    positive, exp_pos, _ = quantize_weights(np.array([0.5, 0.25]), scale=2**20)
    assert exp_pos == 6 and positive.tolist() == [128, 64]


def test_conversion_of_conv_projection_and_errors():
    kernel = np.random.default_rng(2).normal(0, 0.1, (2, 1, 3, 3))
    network = Network(n_inputs=25, populations=[Population("c", 18, FloatLIF(bias=0.0))],
                      projections=[Conv2D(name="k", source=INPUT, target="c", kernel=kernel, in_shape=(1, 5, 5))])
    loihi, report = to_loihi(network)
    assert loihi.projections[0].kernel.dtype.kind == "i" and report.projections[0].max_rel_error <= 1 / 127
    with pytest.raises(ValueError, match="already LoihiLIF"):
        to_loihi(loihi)
    too_much_bias = Network(n_inputs=1, populations=[Population("p", 1, FloatLIF(threshold=1.0, bias=100.0))])
    with pytest.raises(ValueError, match=r"population 'p': parameter 'bias'"):
        to_loihi(too_much_bias)
    assert isinstance(to_loihi(Network(n_inputs=1, populations=[Population("p", 1, FloatLIF())]))[0].populations[0].neuron,
                      LoihiLIF)
