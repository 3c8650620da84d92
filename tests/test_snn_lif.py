"""Known-answer sequences of the bit-accurate CUBA LIF (Lava's LIF unit tests and the conformance
README's semantics), run through the loihi runtime one neuron at a time."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.snn import INPUT, Dense, LoihiLIF, Network, Population, build
from pipeline.snn.weights import truncate_weights


def run(neuron: LoihiLIF, steps: int, weights=None, inputs=None, weight_exp=0, num_weight_bits=8, backend="loihi"):
    """(spikes, u, v) arrays (steps, n) of one population fed by an optional Dense input projection."""
    n = 1 if weights is None else np.shape(weights)[0]
    n_in = 1 if weights is None else np.shape(weights)[1]
    projections = [] if weights is None else [Dense(name="d", source=INPUT, target="p", weights=np.asarray(weights),
                                                    weight_exp=weight_exp, num_weight_bits=num_weight_bits)]
    net = Network(n_inputs=n_in, populations=[Population("p", n, neuron, probe_u=True, probe_v=True)],
                  projections=projections)
    runtime = build(net, backend)
    out = np.zeros((3, steps, n), dtype=np.float64 if backend == "float" else np.int64)
    for t in range(steps):
        active = np.asarray(inputs.get(t, []) if inputs else [], dtype=np.int32)
        out[0, t] = runtime.step(active)
        out[1, t] = runtime.u("p")
        out[2, t] = runtime.v("p")
    return out


def test_bias_only_spikes_every_fifth_step():
    """Lava test_lif: bias_mant=2, bias_exp=6, vth=8, du=dv=0: v climbs 128 per step, spikes when > 512."""
    spikes, u, v = run(LoihiLIF(du=0, dv=0, vth=8, bias_mant=2, bias_exp=6), 20)
    assert np.flatnonzero(spikes[:, 0]).tolist() == [4, 9, 14, 19]
    assert v[:5, 0].tolist() == [128, 256, 384, 512, 0]
    assert not u.any()


def test_threshold_is_strict():
    """v == vth << 6 does not spike: bias 64 per step, vth=4 -> v reaches 256 at step 4, spikes at 5."""
    spikes, _, v = run(LoihiLIF(vth=4, bias_mant=1, bias_exp=6), 6)
    assert v[3, 0] == 256 and spikes[3, 0] == 0 and spikes[4, 0] == 1


def test_negative_bias_never_spikes_and_v_decays_toward_zero_with_truncation():
    """bias -128/step, dv=2048 halves v: v_t = trunc(v_{t-1} / 2) - 128 -> -128, -192, -224, ... -> -255."""
    _, _, v = run(LoihiLIF(dv=2048, vth=1, bias_mant=-2, bias_exp=6), 12)
    expected, x = [], 0
    for _ in range(12):
        x = -((-x) >> 1) - 128
        expected.append(x)
    assert v[:, 0].tolist() == expected
    assert expected[-1] == -255


def test_negative_bias_exponent_is_an_arithmetic_right_shift():
    _, _, v = run(LoihiLIF(vth=100, bias_mant=-5, bias_exp=-1), 2)
    assert v[:, 0].tolist() == [-3, -6]  # -5 >> 1 == -3


def test_input_reaches_u_one_step_later_scaled_by_64():
    """An input spike at step 0 through weight 10 shows up in u at step 1 as 10 << 6 = 640."""
    _, u, v = run(LoihiLIF(du=4095, dv=4095, vth=10**5), 4, weights=[[10]], inputs={0: [0]})
    assert u[:, 0].tolist() == [0, 640, 0, 0]
    assert v[:, 0].tolist() == [0, 640, 0, 0]  # dv=4095: v keeps 1/4096 of itself -> 0


def test_current_decay_sequence_truncates_toward_zero():
    """du=0: u *= 4095/4096 each step, rounded toward zero for either sign."""
    for weight in (64, -64):
        _, u, _ = run(LoihiLIF(du=0, dv=4095, vth=10**5), 5, weights=[[weight, 0]], inputs={0: [0]})
        expected, x = [0, weight * 64], weight * 64
        for _ in range(3):
            x = int(np.sign(x)) * ((abs(x) * 4095) >> 12)
            expected.append(x)
        assert u[:, 0].tolist() == expected
        assert abs(expected[-1]) == 4093


def test_u_wraps_once_not_modulo():
    """16 inputs x 255 << 7 << 6 = 33,423,360 > 2**23: one subtraction of 2**24 leaves 16,646,144."""
    weights = np.full((1, 16), 255)
    spikes, u, v = run(LoihiLIF(du=4095, dv=0, vth=2**17 - 1), 2, weights=weights, inputs={0: list(range(16))},
                       weight_exp=7)
    assert u[1, 0] == 16 * 255 * 2**13 - 2**24 == 16_646_144
    # v saturates at 2**23 - 1 = 8,388,607, which exceeds the largest threshold (2**17 - 1) << 6 = 8,388,544
    assert spikes[1, 0] == 1 and v[1, 0] == 0
    _, u, _ = run(LoihiLIF(du=4095, dv=0, vth=2**17 - 1), 2, weights=-weights, inputs={0: list(range(16))}, weight_exp=7)
    assert u[1, 0] == -16 * 255 * 2**13 + 2**24


def test_weight_exp_scales_the_sum_not_each_synapse():
    """Weights 3 and 3 (excitatory, 8 bits) with weight_exp=-2: (3 + 3) >> 2 = 1, not 0 + 0."""
    _, u, _ = run(LoihiLIF(du=4095, dv=4095, vth=10**5), 2, weights=[[3, 3]], inputs={0: [0, 1]}, weight_exp=-2)
    assert u[1, 0] == 1 << 6


@pytest.mark.parametrize("weights, bits, expected", [
    ([-3, 3], 8, [-4, 2]),           # mixed: one bit less, arithmetic shift
    ([3, 200, 300], 8, [3, 200, 255]),  # excitatory: clip to 255, all 8 bits
    ([-3, -300], 8, [-3, -255]),     # inhibitory: clip magnitude to 255
    ([-100, 37], 6, [-104, 32]),     # mixed, 6 bits: low 3 bits zeroed
    ([-500, 10], 8, [-256, 10]),     # mixed clip to -256
])
def test_weight_truncation(weights, bits, expected):
    got, _ = truncate_weights(np.array(weights), bits)
    assert got.tolist() == expected


def test_dense_input_is_summed_over_active_inputs_and_duplicate_indices_count_once():
    _, u, _ = run(LoihiLIF(du=4095, dv=4095, vth=10**5), 2, weights=[[5, 7, 11]], inputs={0: [0, 2, 2, 0]})
    assert u[1, 0] == (5 + 11) << 6


def test_refractory_holds_v_at_zero():
    """Loihi 2 refractory (not in Lava's CPU LIF): with 3 steps the bias-only neuron spikes every 8th step."""
    spikes, _, v = run(LoihiLIF(vth=8, bias_mant=2, bias_exp=6, refractory=3), 21)
    assert np.flatnonzero(spikes[:, 0]).tolist() == [4, 12, 20]
    assert v[5:8, 0].tolist() == [0, 0, 0] and v[8, 0] == 128


def test_float_backend_runs_the_same_loihi_network_without_rounding():
    spikes, _, v = run(LoihiLIF(vth=8, bias_mant=2, bias_exp=6), 20, backend="float")
    assert np.flatnonzero(spikes[:, 0]).tolist() == [4, 9, 14, 19]
    assert v[:4, 0].tolist() == [128.0, 256.0, 384.0, 512.0]
