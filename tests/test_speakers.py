"""Speaker independence on FSDD: the cochlea's AGC (a causal per-channel gain normalisation) against a
plain-numpy reference, the trainer's input spikes equal to the runtime audio source's with the AGC on,
the fractional frequency-warp augmentation, and the stronger MFCC anchor's pieces (CMVN, deltas, warped
filterbank)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from devices.audio import AGC_FLOOR, Cochlea, CochleaConfig, WavCochleaSource, rms_gain
from pipeline.loop import steps_of
from pipeline.snn.model import InputSpec
from pipeline.stages.binning import SpikeStepBinner
from pipeline.train.present import cochlea_config, present_file
from recordings.datasets import shared_data_dir
from recordings.wav import read_wav

ROOT = Path(__file__).resolve().parent.parent
FSDD = shared_data_dir() / "audio" / "fsdd"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_voice", ROOT / "bench" / "voice.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_agc_lif(samples, sample_rate, config: CochleaConfig, gain: float, sos) -> list[tuple[int, int]]:
    """The AGC + LIF spike rule of devices.audio written per sample with numpy over channels (scipy's sosfilt
    for the filterbank): [(sample index, channel)] in time order, channels ascending within a sample."""
    from scipy.signal import sosfilt

    bm = np.stack([sosfilt(np.array(s), samples * gain) for s in sos], axis=1)   # (n, C)
    dt = 1.0 / sample_rate
    decay = np.exp(-dt / (config.tau_ms * 1e-3))
    alpha = 1.0 - np.exp(-dt / (config.agc_ms * 1e-3))
    refractory_samples = int(round(config.refractory_ms * 1e-3 * sample_rate))
    n_channels = bm.shape[1]
    level, v, refractory = np.zeros(n_channels), np.zeros(n_channels), np.zeros(n_channels, int)
    out = []
    for i, row in enumerate(np.maximum(bm, 0.0)):
        mean = level.mean()
        g = ((mean + 1e-9) / (level + AGC_FLOOR * mean + 1e-9)) ** config.agc_strength
        level = level + alpha * (row - level)
        quiet = refractory > 0
        refractory[quiet] -= 1
        v = np.where(quiet, 0.0, v * decay + dt * g * row)
        fired = ~quiet & (v >= config.threshold)
        v[fired] = 0.0
        refractory[fired] = refractory_samples
        out += [(i, int(c)) for c in np.flatnonzero(fired)]
    return out


def test_agc_spikes_match_a_numpy_reference():
    samples, rate = read_wav(FSDD / "3_george_7.wav")
    samples = samples.astype(np.float64)[:1600]   # 0.2 s
    config = CochleaConfig(n_channels=16, threshold=3e-5, agc_ms=100.0, agc_strength=0.8)
    gain = rms_gain(samples, config.target_rms)
    cochlea = Cochlea(float(rate), config, input_gain=gain)
    ours = np.concatenate([cochlea.process(samples[k:k + 80]) for k in range(0, len(samples), 80)])
    reference = reference_agc_lif(samples, rate, config, gain, cochlea.sos)
    assert len(reference) > 100
    index = np.rint(ours["timestamp"] * rate / 1e6).astype(int)
    got = list(zip(index.tolist(), ours["channel"].tolist()))
    # float summation order differs (numba's and sosfilt's filters): a spike may move by a sample
    mismatched = len(set(got) ^ set(reference))
    assert abs(len(got) - len(reference)) <= 0.01 * len(reference) and mismatched <= 0.02 * len(reference)


def test_agc_divides_out_a_steady_spectral_tilt():
    """The same word through a +12 dB/decade-ish tilt (a first-difference filter): per-channel spike counts
    stay closer to the untilted word's with the AGC than without."""
    samples, rate = read_wav(FSDD / "5_jackson_9.wav")
    x = samples.astype(np.float64)
    tilted = np.append(x[:1], x[1:] - 0.9 * x[:-1])

    def distance(config):
        counts = []
        for w in (x, tilted):
            spikes = Cochlea(float(rate), config, input_gain=rms_gain(w, config.target_rms)).process(w)
            c = np.bincount(spikes["channel"], minlength=config.n_channels).astype(float)
            counts.append(c / c.sum())
        return float(np.abs(counts[0] - counts[1]).sum())

    plain, agc = CochleaConfig(threshold=3e-5), CochleaConfig(threshold=3e-5, agc_ms=300.0)
    assert distance(agc) < 0.6 * distance(plain)


def test_agc_off_is_the_plain_cochlea_and_bad_values_are_refused():
    samples, rate = read_wav(FSDD / "0_lucas_3.wav")
    x = samples.astype(np.float64)
    plain = Cochlea(float(rate), CochleaConfig(threshold=3e-5)).process(x)
    flat = Cochlea(float(rate), CochleaConfig(threshold=3e-5, agc_ms=200.0, agc_strength=0.0)).process(x)
    np.testing.assert_array_equal(plain, flat)   # strength 0: every gain is 1
    with pytest.raises(ValueError, match="cochlea agc_ms: expected >= 0"):
        CochleaConfig(agc_ms=-1.0).validate(8000.0)
    with pytest.raises(ValueError, match="cochlea agc_ms: the AGC drives the lif method only"):
        CochleaConfig(agc_ms=100.0, method="delta").validate(8000.0)
    with pytest.raises(ValueError, match="cochlea_agc_strength"):
        InputSpec(sensor="cochlea", cochlea_agc_strength=3.0)


def test_trainer_input_equals_the_runtime_source_with_the_agc_on():
    """present_file (training, `spikeloop evaluate`) and WavCochleaSource (launch) give the network the same
    active inputs in every step for a real WAV, the AGC on."""
    spec = InputSpec(sensor="cochlea", bin_us=2000, channels=64, cochlea_threshold=3e-5, cochlea_agc_ms=300.0,
                     cochlea_agc_strength=1.0, tail_steps=0)
    path = FSDD / "7_nicolas_12.wav"
    trainer = present_file(path, spec, None, 64)
    source = WavCochleaSource(path, cochlea_config(spec), packet_ms=10.0, fast=True)
    binner = SpikeStepBinner(spec.bin_us, 64, t0_us=0)
    steps = []
    for packet in source.packets():
        steps += [sorted(active.tolist()) for _, active in steps_of(binner.push(packet.events, packet.t_end_us))]
    plain = present_file(path, InputSpec(sensor="cochlea", bin_us=2000, channels=64, cochlea_threshold=3e-5), None, 64)
    assert trainer.index.size != plain.index.size   # the AGC changed the spikes
    expected = [trainer.index[trainer.indptr[k]:trainer.indptr[k + 1]].tolist() for k in range(trainer.n_steps)]
    assert len(steps) >= trainer.n_steps - 1 and sum(map(len, expected)) > 500
    assert steps[:trainer.n_steps] == expected[:len(steps)]


def test_launch_refuses_an_audio_source_without_the_models_agc(tmp_path):
    from pipeline.app.launch import LaunchError, build_graph, load_launch
    from pipeline.snn.network import Network

    shipped = Network.load(ROOT / "pipeline" / "train" / "models" / "fsdd_digits.npz")
    spec = shipped.input_spec
    agc = InputSpec(sensor="cochlea", bin_us=spec.bin_us, channels=spec.channels,
                    cochlea_threshold=spec.cochlea_threshold, tail_steps=spec.tail_steps, cochlea_agc_ms=300.0)
    model = tmp_path / "agc.npz"
    Network(n_inputs=shipped.n_inputs, populations=shipped.populations, projections=shipped.projections,
            input_spec=agc, readout=shipped.readout).save(model)
    launch = ROOT / "launch" / "voice_drive.toml"
    with pytest.raises(LaunchError, match=r"\[source\] agc_ms: agc.npz was trained on cochlea agc_ms = 300.0, got 0.0"):
        build_graph(load_launch(launch, sets=[f'network.file="{model}"']))
    build_graph(load_launch(launch, sets=[f'network.file="{model}"', "source.agc_ms=300"]))


# -- the frequency-warp augmentation ------------------------------------------------------------------------

def test_warp_moves_each_channel_to_its_scaled_centre_frequency():
    from pipeline.train.bptt import augment
    from pipeline.train.present import Presentation

    n = 64
    def erb(f):   # Glasberg & Moore 1990
        return 21.4 * np.log10(1 + 0.00437 * f)

    centres = (10 ** (np.linspace(erb(100.0), erb(3600.0), n) / 21.4) - 1) / 0.00437
    index = np.repeat(np.arange(n, dtype=np.int32), 200)    # 200 events per channel, one per step
    p = Presentation(np.arange(index.size + 1, dtype=np.int64), index, np.ones(index.size, np.int32))
    aug = {"drop": 0.0, "jitter_px": 0, "channel_shift": 0, "time_scale": 0.0, "warp": 0.15}
    factors = []
    for seed in range(6):
        factor = np.random.default_rng(seed).uniform(0.85, 1.15)   # the first draw, as augment makes it
        out = augment(p, np.random.default_rng(seed), (1, 1, n), aug, True)
        rows = np.repeat(np.arange(p.n_steps), np.diff(out.indptr))
        source = index[rows]
        # each event whose centre frequency x factor is on the bank lands on one of the two channels around it
        target = centres[source] * factor
        inside = (target > centres[0]) & (target < centres[-1])
        assert np.all(centres[np.maximum(out.index - 1, 0)][inside] <= target[inside] + 1e-6)
        assert np.all(centres[np.minimum(out.index + 1, n - 1)][inside] >= target[inside] - 1e-6)
        # ... in proportion, so the mean position of a channel's events is the fractional position
        for c in (10, 30, 50):
            if inside[source == c].all():
                want = np.interp(centres[c] * factor, centres, np.arange(n))
                assert abs(out.index[source == c].mean() - want) < 0.12
        # more than a channel off the bank: dropped; within one: dropped with the fraction as probability
        spacing = np.diff(erb(centres)).mean()
        position = (erb(centres[index] * factor) - erb(centres[0])) / spacing
        far = np.sum((position <= -1) | (position >= n))
        assert far <= index.size - out.index.size <= np.sum((position < 0) | (position > n - 1))
        factors.append(factor)
    assert min(factors) < 0.95 and max(factors) > 1.05


def test_warp_is_refused_for_dvs_input(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "dvs.toml"
    config.write_text((ROOT / "launch" / "train_nmnist.toml").read_text() + "\n")
    done = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "train", str(config), "--set", "augment.warp=0.1",
                           "--set", "train.epochs=1", "--set", "train.limit=4", "--out", str(tmp_path / "m.npz")],
                          cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "SPIKELOOP_DATA": str(shared_data_dir()), "PATH": ""})
    assert done.returncode == 2 and "[augment] warp" in done.stderr and not (tmp_path / "m.npz").exists()


# -- the speaker-normalised MFCC anchor (bench/voice.py) -------------------------------------------------------

def test_anchor_warped_filterbank_follows_a_stretched_spectrum():
    """A tone at f / warp excites the warped bank's filters as a tone at f excites the plain bank's."""
    bench = load_bench()
    plain = bench.mel_filterbank(8000.0, 256, 26)
    assert np.allclose(bench.warped_mel_filterbank(8000.0, 256, 26, 1.0), plain)
    t = np.arange(256) / 8000.0

    def spectrum(hz):
        return np.abs(np.fft.rfft(np.sin(2 * np.pi * hz * t) * np.hamming(256))) ** 2

    for warp in (0.9, 1.1):
        bank = bench.warped_mel_filterbank(8000.0, 256, 26, warp)
        assert np.isfinite(bank).all() and np.all(bank.max(axis=1) > 0)
        for f in (500.0, 1000.0, 2000.0):
            assert abs(int(np.argmax(bank @ spectrum(f / warp))) - int(np.argmax(plain @ spectrum(f)))) <= 1


def test_anchor_cmvn_and_deltas():
    bench = load_bench()
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (40, 13))
    normalised = bench.cmvn(x)
    np.testing.assert_allclose(normalised.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(normalised.std(axis=0), 1, atol=1e-6)
    np.testing.assert_allclose(bench.cmvn(x, variance=False), x - x.mean(axis=0))
    d = bench.with_deltas(x)
    assert d.shape == (40, 39)
    np.testing.assert_allclose(d[5:-5, 13:26], (x[6:-4] - x[4:-6]) / 2)     # central differences
    np.testing.assert_allclose(d[:, :13], x)
    features = bench.strong_features(read_wav(FSDD / "2_yweweler_30.wav")[0].astype(np.float64))
    assert features.shape == (39 * 20,) and np.isfinite(features).all()
