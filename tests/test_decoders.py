"""Output decoders: sliding-window rates, winner-take-all with hysteresis, population vector, drive mixing."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.decoders import (
    DECODERS,
    MIXERS,
    NO_ACTION,
    DifferentialDrive,
    DriveDecoder,
    PopulationVector,
    RateDecoder,
    SpikeWindow,
    WinnerTakeAll,
)


def one_hot(n, *active):
    spikes = np.zeros(n, dtype=np.uint8)
    spikes[list(active)] = 1
    return spikes


@pytest.fixture(scope="module")
def maze_spikes(data_dir):
    """MC_Maze trial 748: (T, units) uint8 spikes at 1 ms rows and the timestamps in µs."""
    path = data_dir / "bci" / "trial_748_data.csv"
    header = path.read_text().split("\n", 1)[0].split(",")
    units = [i for i, name in enumerate(header) if name.startswith("unit_")]
    table = np.loadtxt(path, delimiter=",", skiprows=1, usecols=[0] + units)
    t_us = np.round(table[:, 0] * 1e6).astype(np.int64)
    return t_us, table[:, 1:].astype(np.uint8)


# ---------------------------------------------------------------- sliding window

def test_window_includes_exactly_the_last_window_us():
    window = SpikeWindow("test", 2, window_us=3000)
    assert window.update(one_hot(2, 0), 0).tolist() == [1, 0]
    assert window.update(one_hot(2, 0, 1), 1000).tolist() == [2, 1]
    assert window.update(one_hot(2), 2999).tolist() == [2, 1]
    assert window.update(one_hot(2, 1), 3000).tolist() == [1, 2]  # the spike at 0 is exactly window_us old
    assert window.update(one_hot(2), 10_000).tolist() == [0, 0]
    with pytest.raises(ValueError, match="time went backwards"):
        window.update(one_hot(2), 9_999)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        window.update(np.zeros(3, np.uint8), 20_000)
    with pytest.raises(ValueError, match="window_us"):
        SpikeWindow("test", 2, window_us=0)


def test_window_rates_on_real_spike_trains_match_cumsum(maze_spikes):
    """Real MC_Maze spikes through a 100 ms window (ring grows past its initial 64 slots)."""
    t_us, spikes = maze_spikes
    decoder = RateDecoder(spikes.shape[1], window_us=100_000, positive=[5])
    window = SpikeWindow("test", spikes.shape[1], window_us=100_000)
    cumulative = np.vstack([np.zeros((1, spikes.shape[1]), np.int64), np.cumsum(spikes, axis=0)])
    for row in range(len(t_us)):
        counts = window.update(spikes[row], t_us[row])
        value = decoder.update(spikes[row], t_us[row])
        first = np.searchsorted(t_us, t_us[row] - 100_000, side="right")
        expected = cumulative[row + 1] - cumulative[first]
        if row % 97 == 0 or row == len(t_us) - 1:
            np.testing.assert_array_equal(counts, expected)
            assert value == pytest.approx(expected[5] / 0.1)
    assert spikes.sum() > 1000


# ---------------------------------------------------------------- rate decoder

def test_rate_decoder_units_and_groups():
    decoder = RateDecoder(4, window_us=10_000, positive=[0, 1], negative=[2], scale=0.01, offset=0.5, unit="m/s")
    assert decoder.update(one_hot(4, 0, 1), 0) == pytest.approx(0.5 + 0.01 * 100.0)
    assert decoder.update(one_hot(4, 2), 1000) == pytest.approx(0.5 + 0.01 * (100.0 - 100.0))
    assert decoder.unit == "m/s"
    decoder.reset()
    assert decoder.value == 0.5
    with pytest.raises(ValueError, match=r"outputs \[1\] are in both"):
        RateDecoder(4, positive=[0, 1], negative=[1])
    with pytest.raises(ValueError, match=r"'positive\[1\]' = 4 is out of range"):
        RateDecoder(4, positive=[0, 4])


def test_rate_decoder_recovers_poisson_rate():
    rng = np.random.default_rng(11)
    decoder = RateDecoder(20, window_us=500_000)
    for step in range(2000):  # 1 ms steps, 40 Hz per output
        value = decoder.update((rng.random(20) < 0.04).astype(np.uint8), step * 1000)
    assert value == pytest.approx(40.0, rel=0.1)


# ---------------------------------------------------------------- winner-take-all

def test_wta_hysteresis_hand_checked():
    wta = WinnerTakeAll(3, window_us=10_000, names=["left", "straight", "right"], margin=2, min_spikes=1)
    assert wta.update(one_hot(3), 0) == NO_ACTION and wta.action_name == "none"
    actions = [wta.update(one_hot(3, 0), t) for t in range(1000, 6000, 1000)]
    assert actions == [0] * 5 and wta.action_name == "left"
    # output 1 takes over: count(1) rises by 1 per step; count(0) = 5 until its spikes leave the 10 ms
    # window (the one at 1 ms leaves at 11 ms). At 11 ms: 6 vs 4 (not > 4 + 2); at 12 ms: 7 vs 3 -> switch.
    actions = [wta.update(one_hot(3, 1), t) for t in range(6000, 16_000, 1000)]
    assert actions == [0] * 6 + [1] * 4
    assert wta.update(one_hot(3), 40_000) == NO_ACTION


def test_wta_groups_and_no_flicker_on_near_ties():
    rng = np.random.default_rng(2)
    wta = WinnerTakeAll(6, window_us=50_000, groups=[[0, 1, 2], [3, 4, 5]], margin=3.0)
    decisions = []
    for step in range(1000):  # both groups ~ equal 100 Hz per neuron: without hysteresis it would flip often
        decisions.append(wta.update((rng.random(6) < 0.1).astype(np.uint8), step * 1000))
    switches = np.count_nonzero(np.diff(decisions))
    plain = WinnerTakeAll(6, window_us=50_000, groups=[[0, 1, 2], [3, 4, 5]], margin=0.0)
    rng = np.random.default_rng(2)
    plain_decisions = [plain.update((rng.random(6) < 0.1).astype(np.uint8), s * 1000) for s in range(1000)]
    assert switches < np.count_nonzero(np.diff(plain_decisions)) / 3
    with pytest.raises(ValueError, match="'names' must be 2 strings"):
        WinnerTakeAll(6, groups=[[0], [1]], names=["a"])
    with pytest.raises(ValueError, match="'min_spikes'"):
        WinnerTakeAll(6, min_spikes=0)


# ---------------------------------------------------------------- population vector

def test_population_vector_hand_checked_and_hold():
    pv = PopulationVector(4, window_us=10_000)
    assert pv.update(one_hot(4, 1), 0) == pytest.approx(math.pi / 2)
    assert pv.update(one_hot(4, 0), 1000) == pytest.approx(math.pi / 4)
    assert pv.strength == pytest.approx(math.sqrt(2) / 2)
    assert pv.update(one_hot(4), 20_000) == pytest.approx(math.pi / 4) and not pv.valid
    assert pv.update(one_hot(4, 0, 2), 21_000) == pytest.approx(math.pi / 4) and not pv.valid  # cancels
    assert pv.update(one_hot(4, 2), 22_000) == pytest.approx(math.pi)
    custom = PopulationVector(3, window_us=10_000, preferred_rad=[0.0, 0.5, -2.0])
    assert custom.update(one_hot(3, 1), 0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="needs 4 angles"):
        PopulationVector(4, preferred_rad=[0.0, 1.0])


@pytest.mark.parametrize("direction", [-2.5, -0.3, 0.0, 1.2, 3.0])
def test_population_vector_decodes_cosine_tuned_population(direction):
    """Georgopoulos-style population: 32 cosine-tuned Poisson neurons with evenly spaced preferred directions
    (the default), 10-60 Hz, 200 ms window."""
    rng = np.random.default_rng(int(direction * 100) % 1000)
    preferred = 2 * np.pi * np.arange(32) / 32
    rates = 35 + 25 * np.cos(preferred - direction)
    pv = PopulationVector(32, window_us=200_000)
    for step in range(400):
        angle = pv.update((rng.random(32) < rates * 1e-3).astype(np.uint8), step * 1000)
    error = abs(math.remainder(angle - direction, 2 * math.pi))
    assert error < math.radians(15)
    assert -math.pi < angle <= math.pi


# ---------------------------------------------------------------- differential drive

def test_differential_drive_hand_checked():
    drive = DifferentialDrive(wheel_radius_m=0.05, track_m=0.3, max_wheel_radps=10.0)
    np.testing.assert_allclose(drive.mix(0.2, 0.0), [4.0, 4.0])
    np.testing.assert_allclose(drive.mix(0.0, 1.0), [-3.0, 3.0])  # spin left in place
    assert not drive.saturated
    left, right = drive.mix(1.0, 1.0)  # wheels would be 17 and 23 rad/s
    assert drive.saturated
    assert right == pytest.approx(10.0) and left == pytest.approx(17 * 10 / 23)
    v, omega = drive.body_velocity(left, right)
    assert omega / v == pytest.approx(1.0)  # curvature 1/m kept
    with pytest.raises(ValueError, match="non-finite"):
        drive.mix(float("nan"), 0.0)
    with pytest.raises(ValueError, match="'track_m'"):
        DifferentialDrive(0.05, 0.0, 10.0)


@settings(deadline=None, max_examples=200)
@given(st.floats(-5, 5), st.floats(-20, 20))
def test_differential_drive_limits_preserve_curvature(v, omega):
    drive = DifferentialDrive(0.033, 0.16, 6.0)
    wheels = drive.mix(v, omega)
    assert np.max(np.abs(wheels)) <= 6.0 + 1e-9
    v_out, omega_out = drive.body_velocity(*wheels)
    scale = 1.0
    raw_peak = max(abs(v - omega * 0.08), abs(v + omega * 0.08)) / 0.033
    if raw_peak > 6.0:
        scale = 6.0 / raw_peak
        assert drive.saturated and np.max(np.abs(wheels)) == pytest.approx(6.0)
    assert v_out == pytest.approx(v * scale, abs=1e-9)
    assert omega_out == pytest.approx(omega * scale, abs=1e-9)


def test_drive_decoder_end_to_end():
    decoder = DECODERS["drive"](n_outputs=4, forward=[0], backward=[1], left=[2], right=[3], window_us=10_000,
                                mps_per_hz=0.002, radps_per_hz=0.01, wheel_radius_m=0.05, track_m=0.3,
                                max_wheel_radps=10.0)
    wheels = decoder.update(one_hot(4, 0, 2), 0)  # 100 Hz forward, 100 Hz left
    assert decoder.v_mps == pytest.approx(0.2) and decoder.omega_radps == pytest.approx(1.0)
    np.testing.assert_allclose(wheels, [(0.2 - 0.15) / 0.05, (0.2 + 0.15) / 0.05])
    assert isinstance(decoder, DriveDecoder)
    assert MIXERS["differential_drive"] is DifferentialDrive


def test_registry_builds_every_decoder_from_keywords():
    params = {"drive": {"forward": [0], "wheel_radius_m": 0.05, "track_m": 0.3, "max_wheel_radps": 5.0},
              "command_map": {"commands": {"1": [1.0, 1.0]}, "boundary": "output"}}
    for name, cls in DECODERS.items():
        decoder = cls(n_outputs=4, **params.get(name, {}))
        decoder.update(one_hot(4, 0), 0)
        decoder.reset()
    assert set(DECODERS) == {"rate", "wta", "population_vector", "drive", "command_map"}
