"""The cochlea front end: tonotopy, streaming invariance, spike rates on real speech, validation."""
from __future__ import annotations

import numpy as np
import pytest

from devices.audio import Cochlea, CochleaConfig, erb_space, rms_gain
from pipeline.core.events import SPIKE_DTYPE

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


def fsdd(data_dir, name):
    return data_dir / "audio" / "fsdd" / name


def test_spoken_digits_give_about_a_thousand_spikes_per_second(data_dir):
    """The reference front end (cochlea_bci.md) reports a median of 1.1 k spikes/s (0.65-1.55 k) over
    take 0 of every digit and speaker, with these defaults."""
    from devices.audio import WavCochleaSource

    rates = []
    for path in sorted((data_dir / "audio" / "fsdd").glob("*_0.wav")):
        source = WavCochleaSource(path, fast=True)
        packets = list(source.packets())
        seconds = packets[-1].t_end_us / 1e6
        rates.append(sum(len(p.events) for p in packets) / seconds)
    assert len(rates) == 50
    assert 700 < np.median(rates) < 1600


def test_wav_source_packets_cover_the_clip_in_order(data_dir):
    from devices.audio import WavCochleaSource
    from recordings.wav import read_wav

    path = fsdd(data_dir, "7_lucas_3.wav")
    samples, rate = read_wav(path)
    source = WavCochleaSource(path, packet_ms=5.0, fast=True)
    packets = list(source.packets())
    assert packets[-1].t_end_us == int(len(samples) * 1e6 / rate)
    spikes = np.concatenate([p.events for p in packets])
    assert np.all(np.diff(spikes["timestamp"]) >= 0)
    whole = Cochlea(float(rate), input_gain=rms_gain(samples.astype(np.float64), 0.3)).process(samples)
    assert np.array_equal(spikes, whole)


def test_microphone_without_sounddevice_says_how_to_install(monkeypatch):
    import sys

    from devices.audio import MicrophoneCochleaSource

    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(RuntimeError, match=r"spikeloop\[audio\]"):
        MicrophoneCochleaSource()


def test_audio_command_writes_spikes_and_a_raster(data_dir, tmp_path, capsys):
    import json

    from pipeline.app.cli import main

    out, png = tmp_path / "spikes.npy", tmp_path / "raster.png"
    assert main(["audio", str(fsdd(data_dir, "3_jackson_0.wav")), "--json", "--out", str(out), "--png", str(png)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["channels"] == 64 and summary["spikes"] == len(np.load(out)) > 100
    assert png.stat().st_size > 1000
    assert main(["audio", str(tmp_path / "missing.wav")]) == 1
    assert "no such file" in capsys.readouterr().err
