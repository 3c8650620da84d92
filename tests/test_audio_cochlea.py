"""The cochlea front end: tonotopy, streaming invariance, spike rates on real speech, validation."""
from __future__ import annotations

import numpy as np
import pytest

from devices.audio import Cochlea, CochleaConfig, erb_space, rms_gain
from pipeline.events import SPIKE_DTYPE

FS = 8000.0


def tone(freq_hz: float, seconds: float = 0.25, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * FS)) / FS
    return amplitude * np.sin(2 * np.pi * freq_hz * t)


def test_erb_space_endpoints_and_spacing():
    f = erb_space(100.0, 3600.0, 64)
    assert f[0] == pytest.approx(100.0) and f[-1] == pytest.approx(3600.0)
    erb_rate = 21.4 * np.log10(1 + 0.00437 * f)
    assert np.allclose(np.diff(erb_rate), np.diff(erb_rate)[0])


@pytest.mark.parametrize("freq_hz", [300.0, 1000.0, 2500.0])
def test_a_tone_drives_the_channel_tuned_to_it(freq_hz):
    cochlea = Cochlea(FS, input_gain=rms_gain(tone(freq_hz), 0.3))
    out = cochlea.process(tone(freq_hz))
    assert out.dtype == SPIKE_DTYPE
    counts = np.bincount(out["channel"], minlength=64)
    best = int(np.argmax(counts))
    nearest = int(np.argmin(np.abs(cochlea.centre_hz - freq_hz)))
    assert abs(best - nearest) <= 2, (best, nearest)


@pytest.mark.parametrize("method", ["lif", "delta"])
def test_block_size_does_not_change_the_spikes(method):
    rng = np.random.default_rng(0)
    x = tone(440.0, 0.5) + 0.05 * rng.standard_normal(int(0.5 * FS))
    whole = Cochlea(FS, CochleaConfig(method=method)).process(x)
    streamed = Cochlea(FS, CochleaConfig(method=method))
    cuts = np.sort(rng.choice(len(x), 7, replace=False))
    parts = [streamed.process(block) for block in np.split(x, cuts)]
    assert np.array_equal(np.concatenate(parts), whole)
    assert np.all(np.diff(whole["timestamp"]) >= 0)


def test_lif_refractory_caps_each_channel_rate():
    cochlea = Cochlea(FS, CochleaConfig(refractory_ms=2.0), input_gain=10.0)
    out = cochlea.process(tone(1000.0, 1.0))
    assert np.bincount(out["channel"]).max() <= 1.0 / 2e-3 + 1


def test_delta_channels_split_on_and_off():
    cochlea = Cochlea(FS, CochleaConfig(method="delta"))
    x = np.concatenate([np.zeros(800), tone(1000.0, 0.2), np.zeros(1600)])
    out = cochlea.process(x)
    assert cochlea.n_outputs == 128
    on, off = out["channel"] < 64, out["channel"] >= 64
    assert on.any() and off.any()
    assert out["timestamp"][on].min() < out["timestamp"][off].min()


@pytest.mark.parametrize(
    "config, message",
    [
        (CochleaConfig(n_channels=0), "n_channels"),
        (CochleaConfig(method="cubic"), "method"),
        (CochleaConfig(f_hi_hz=5000.0), "Nyquist"),
        (CochleaConfig(f_lo_hz=4000.0, f_hi_hz=3000.0), "f_lo"),
        (CochleaConfig(tau_ms=0.0), "tau_ms"),
    ],
)
def test_impossible_parameters_are_named(config, message):
    with pytest.raises(ValueError, match=message):
        Cochlea(FS, config)
