"""The cochlea front end: tonotopy, streaming invariance, spike rates on real speech, validation; and the
cochlea as a launch source (WAV -> spikes -> network -> commands through the one loop)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from devices.audio import Cochlea, CochleaConfig, WavCochleaSource, erb_space, rms_gain
from pipeline.app.launch import build_graph, load_launch
from pipeline.core.events import SPIKE_DTYPE
from pipeline.core.schema import LaunchError
from pipeline.decoders import DriveDecoder
from pipeline.sinks import read_command_log
from pipeline.snn import build
from pipeline.snn.builders import dvs_steering

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


def test_missing_or_busy_microphone_names_the_device(monkeypatch):
    import sys
    import types

    from devices.audio import MicrophoneCochleaSource

    class PortAudioError(Exception):
        pass

    def check_input_settings(device=None, **settings):
        if device == 7:
            raise PortAudioError("Error querying device 7")

    def busy(**settings):
        raise PortAudioError("Device unavailable [PaErrorCode -9985]")

    fake = types.SimpleNamespace(check_input_settings=check_input_settings, InputStream=busy)
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    with pytest.raises(ValueError, match=r"microphone 7 cannot capture .*device 7.*python3 -m sounddevice"):
        MicrophoneCochleaSource(device=7)
    source = MicrophoneCochleaSource()
    with pytest.raises(OSError, match=r"cannot start capturing \(Device unavailable.*another program"):
        next(source.packets())


def test_audio_command_writes_spikes_and_a_raster(data_dir, tmp_path, capsys):
    import json

    from pipeline.app.cli import main

    out, png = tmp_path / "spikes.npy", tmp_path / "raster.png"
    assert main(["audio", str(fsdd(data_dir, "3_jackson_0.wav")), "--json", "--out", str(out), "--png", str(png)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["channels"] == 64 and summary["spikes"] == len(np.load(out)) > 100
    assert png.stat().st_size > 1000
    assert main(["audio", str(tmp_path / "missing.wav")]) == 2
    assert "no such file" in capsys.readouterr().err


# -- audio as a launch source: WAV -> cochlea -> AER spikes -> SpikeStepBinner -> network -> decoder -> sinks --

LAUNCH = Path(__file__).resolve().parent.parent / "launch" / "audio.toml"


def audio_launch(data_dir, tmp_path, name="6_lucas_3.wav") -> Path:
    """launch/audio.toml with its WAV named relative to the copy (relative paths resolve against the launch
    file) and its command log in tmp_path."""
    text = LAUNCH.read_text()
    wav = os.path.relpath(fsdd(data_dir, name), tmp_path)
    text = text.replace('"$SPIKELOOP_DATA/audio/fsdd/6_lucas_3.wav"', json.dumps(wav))
    text = text.replace('"audio_commands.csv"', json.dumps(str(tmp_path / "audio.csv")))
    path = tmp_path / "audio.toml"
    path.write_text(text)
    return path


def reference_commands(wav: Path) -> np.ndarray:
    """The graph of launch/audio.toml built by hand, without the loop, launch code or binner: the clip's
    delta-cochlea spikes cut into 1 ms steps with numpy, the network on its (ON/OFF, 1, 64 bands) grid,
    the drive decoder; one command per step, the last partial step included."""
    source = WavCochleaSource(wav, CochleaConfig(method="delta"), packet_ms=1.0, fast=True)
    packets = list(source.packets())
    events = np.concatenate([p.events for p in packets])
    step = events["timestamp"] // 1000
    n_steps = max(packets[-1].t_end_us // 1000, int(step[-1]) + 1)
    runtime = build(dvs_steering(64, 1, 2, weight=8, vth=48), backend="loihi")
    decoder = DriveDecoder(2, forward=[0, 1], left=[1], right=[0], window_us=50_000, mps_per_hz=0.0003,
                           radps_per_hz=0.005, wheel_radius_m=0.033, track_m=0.16, max_wheel_radps=6.0)
    commands = []
    for k in range(n_steps):
        active = np.unique(events["channel"][step == k]).astype(np.int32)
        commands.append(decoder.update(runtime.step(active), (k + 1) * 1000))
    return np.array(commands)


def test_audio_launch_file_commands_equal_the_graph_built_by_hand(data_dir, tmp_path):
    spec = load_launch(audio_launch(data_dir, tmp_path), ['loop.mode="fast"', "source.loop=false", "loop.duration_s=0"])
    assert spec.kind == "spikes" and spec.source["path"] == fsdd(data_dir, "6_lucas_3.wav").resolve()
    graph = build_graph(spec)
    assert graph.network.n_inputs == 128 and type(graph.binner).__name__ == "SpikeStepBinner"
    graph.loop.warmup()
    report = graph.loop.run()
    graph.close()
    t_us, commands = read_command_log(tmp_path / "audio.csv")
    expected = reference_commands(fsdd(data_dir, "6_lucas_3.wav"))
    assert report.steps == len(expected) == len(t_us) and report.events_in == report.events_used > 3000
    np.testing.assert_array_equal(t_us, 1000 * np.arange(1, len(expected) + 1))
    np.testing.assert_allclose(commands, expected, rtol=0, atol=0)
    assert np.abs(commands).max() > 1.0 and np.ptp(commands[:, 1] - commands[:, 0]) > 0.5  # drives and turns


def test_spikeloop_launch_runs_the_audio_file_paced(data_dir, tmp_path):
    """The shipped file through ``spikeloop launch``: the looping clip, paced at 1 kHz; latency from arrival
    and from sensor time (the 1 ms packets end on step ends, so both count from the same instant)."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.app.cli", "launch", str(audio_launch(data_dir, tmp_path)), "--headless",
         "--duration", "1.5", "--json"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "paced" and report["steps"] + report["merged_steps"] == 1500  # past the clip's end
    assert report["commands"] == report["steps"] and report["ticks"] >= 1500 and report["wall_s"] >= 1.4
    assert 0 < report["latency_p50_ms"] <= report["sensor_latency_p50_ms"] + 1e-3
    assert report["step_time_p50_us"] > 0
    t_us, commands = read_command_log(tmp_path / "audio.csv")
    assert len(t_us) == report["commands"] and commands.shape[1] == 2


def test_audio_launch_errors_name_the_key(data_dir, tmp_path, monkeypatch):
    path = audio_launch(data_dir, tmp_path)
    with pytest.raises(LaunchError, match=r'\[source\] method: expected one of "lif", "delta", got "mel"'):
        load_launch(path, ['source.method="mel"'])
    with pytest.raises(LaunchError, match=r"\[source\] path: expected a WAV file or microphone = true"):
        load_launch(path, ["source.microphone=true"])
    with pytest.raises(LaunchError, match=r"\[stages.roi\]: stages filter DVS events; the audio source"):
        load_launch(path, ["stages.roi.x=0"])
    with pytest.raises(LaunchError, match=r"\[network\] polarity_channels: applies to DVS sources only"):
        load_launch(path, ["network.polarity_channels=true"])
    with pytest.raises(LaunchError, match=r"\[source\] f_hi_hz: .*Nyquist"):
        build_graph(load_launch(path, ["source.f_hi_hz=5000.0", 'loop.mode="fast"']))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sounddevice"
                        else real_find_spec(name, *a))
    with pytest.raises(LaunchError, match=r"\[source\] microphone: needs the optional 'sounddevice' package: "
                                          r"pip install 'spikeloop\[audio\]'"):
        load_launch(path, source="mic")
