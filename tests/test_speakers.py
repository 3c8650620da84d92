"""Speaker independence on FSDD: the cochlea's AGC (a causal per-channel gain normalisation) against a
plain-numpy reference, the trainer's input spikes equal to the runtime audio source's with the AGC on,
the fractional frequency-warp augmentation, and the stronger MFCC anchor's pieces (CMVN, deltas, warped
filterbank)."""
from __future__ import annotations

import importlib.util
from dataclasses import replace as dataclasses_replace
from pathlib import Path

import numpy as np
import pytest

from devices.audio import AGC_FLOOR, Cochlea, CochleaConfig, WavCochleaSource, rms_gain, voice_level
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


def reference_agc_lif(samples, sample_rate, config: CochleaConfig, gain: float, sos, level0=None
                      ) -> list[tuple[int, int]]:
    """The AGC + LIF spike rule of devices.audio written per sample with numpy over channels (scipy's sosfilt
    for the filterbank), the AGC's level starting at ``level0`` (None: 0): [(sample index, channel)] in time
    order, channels ascending within a sample."""
    from scipy.signal import sosfilt

    bm = np.stack([sosfilt(np.array(s), samples * gain) for s in sos], axis=1)   # (n, C)
    dt = 1.0 / sample_rate
    decay = np.exp(-dt / (config.tau_ms * 1e-3))
    alpha = 1.0 - np.exp(-dt / (config.agc_ms * 1e-3))
    refractory_samples = int(round(config.refractory_ms * 1e-3 * sample_rate))
    n_channels = bm.shape[1]
    level = np.zeros(n_channels) if level0 is None else np.array(level0, dtype=np.float64)
    v, refractory = np.zeros(n_channels), np.zeros(n_channels, int)
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


@pytest.mark.parametrize("start", ["zero", "level"])
def test_agc_spikes_match_a_numpy_reference(start):
    samples, rate = read_wav(FSDD / "3_george_7.wav")
    samples = samples.astype(np.float64)[:1600]   # 0.2 s
    config = CochleaConfig(n_channels=16, threshold=3e-5, agc_ms=100.0, agc_strength=0.8)
    gain = rms_gain(samples, config.target_rms)
    # a start level with a steep spectral tilt, so a started AGC's gains differ from a fresh one's
    level0 = None if start == "zero" else np.geomspace(1e-4, 1e-2, 16)
    cochlea = Cochlea(float(rate), config, input_gain=gain, agc_level=level0)
    ours = np.concatenate([cochlea.process(samples[k:k + 80]) for k in range(0, len(samples), 80)])
    reference = reference_agc_lif(samples, rate, config, gain, cochlea.sos, level0)
    if level0 is not None:
        assert set(reference) != set(reference_agc_lif(samples, rate, config, gain, cochlea.sos))
        cochlea.reset()   # reset restores the start level: the same spikes again
        np.testing.assert_array_equal(cochlea.process(samples)["channel"], ours["channel"])
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


# -- speaker adaptation: the AGC started at the speaker's level ---------------------------------------------
def reference_drive(samples, sample_rate, config: CochleaConfig, gain: float) -> np.ndarray:
    """Mean half-wave-rectified output of each gammatone channel, scipy's own design and sosfilt: (C,)."""
    from scipy.signal import gammatone, sosfilt, tf2sos

    from devices.audio import erb_space

    return np.array([np.maximum(sosfilt(tf2sos(*gammatone(fc, "iir", fs=sample_rate)), samples * gain), 0).mean()
                     for fc in erb_space(config.f_lo_hz, config.f_hi_hz, config.n_channels)])


def test_channel_drive_is_the_mean_rectified_filterbank_output():
    from devices.audio import channel_drive

    samples, rate = read_wav(FSDD / "8_yweweler_30.wav")
    x = samples.astype(np.float64)
    config = CochleaConfig(n_channels=16)
    gain = rms_gain(x, config.target_rms)
    ours = channel_drive(np.array_split(x, 7), float(rate), config, gain)   # state carried across blocks
    np.testing.assert_allclose(ours, reference_drive(x, float(rate), config, gain), rtol=1e-6)
    with pytest.raises(ValueError, match="cochlea agc_level: expected 16 finite levels >= 0, got shape"):
        Cochlea(float(rate), config, agc_level=np.ones(15))


def speaker_spec(**overrides) -> InputSpec:
    values = {"sensor": "cochlea", "bin_us": 2000, "channels": 16, "cochlea_threshold": 3e-5,
              "cochlea_agc_ms": 60_000.0, "cochlea_agc_strength": 1.0, "cochlea_agc_start": "speaker", "tail_steps": 0}
    return InputSpec(**{**values, **overrides})


def test_speaker_start_needs_an_agc_and_travels_in_the_model():
    spec = speaker_spec()
    assert InputSpec.from_arrays(spec.to_arrays()) == spec
    with pytest.raises(ValueError, match="'cochlea_agc_start' 'speaker' needs an AGC"):
        speaker_spec(cochlea_agc_ms=0.0)
    with pytest.raises(ValueError, match="'cochlea_agc_start' must be one of"):
        speaker_spec(cochlea_agc_start="session")


def test_trainer_starts_each_clip_at_its_speakers_mean_level(tmp_path):
    """load_set with cochlea_agc_start "speaker": every clip is presented with the AGC started at the mean
    level of its speaker's clips in the set (computed here with scipy), not at 0, and not another's."""
    from pipeline.train.bptt import load_set
    from recordings.labelled import open_labelled

    names = ["1_george_3.wav", "2_george_4.wav", "1_lucas_3.wav", "5_lucas_8.wav"]
    for name in names:
        (tmp_path / name).symlink_to(FSDD / name)
    spec = speaker_spec()
    config = cochlea_config(spec)
    level = {}
    for speaker in ("george", "lucas"):
        drives = []
        for name in (n for n in names if speaker in n):
            x, rate = read_wav(FSDD / name)
            x = x.astype(np.float64)
            drives.append(reference_drive(x, float(rate), config, rms_gain(x, config.target_rms)))
        level[speaker] = np.mean(drives, axis=0)
    presentations, _, _ = load_set(tmp_path, None, spec, (1, 1, 16))
    paths = open_labelled(tmp_path).paths
    assert len(presentations) == 4
    for p, path in zip(presentations, paths):
        speaker = path.stem.split("_")[1]
        other = level["lucas" if speaker == "george" else "george"]
        expected = present_file(path, spec, None, 16, agc_level=level[speaker])
        np.testing.assert_array_equal(p.index, expected.index)
        np.testing.assert_array_equal(p.indptr, expected.indptr)
        assert not np.array_equal(p.index, present_file(path, spec, None, 16, agc_level=other).index)
        assert not np.array_equal(p.index, present_file(path, spec, None, 16).index)


def test_speaker_start_needs_speaker_names(tmp_path):
    from pipeline.train.bptt import load_set

    (tmp_path / "word.wav").symlink_to(FSDD / "1_george_3.wav")
    (tmp_path / "labels.txt").write_text("word 1\n")
    with pytest.raises(ValueError, match=r'cochlea_agc_start = "speaker" needs each file\'s speaker: .*word.wav'):
        load_set(tmp_path, tmp_path / "labels.txt", speaker_spec(), (1, 1, 16))


def test_launch_starts_the_audio_sources_agc_at_the_enrolled_voice(tmp_path):
    """[source] agc_enrol (a folder of the voice's WAVs, relative to the launch file): the source's cochlea
    starts at devices.audio.voice_level of them; a bad value is refused naming the key before anything opens."""
    from devices.audio import voice_level
    from pipeline.app.launch import LaunchError, build_graph, load_launch
    from pipeline.snn.network import Network

    shipped = Network.load(ROOT / "pipeline" / "train" / "models" / "fsdd_digits.npz")
    spec = shipped.input_spec
    adapted = InputSpec(sensor="cochlea", bin_us=spec.bin_us, channels=spec.channels,
                        cochlea_threshold=spec.cochlea_threshold, tail_steps=spec.tail_steps, cochlea_agc_ms=60_000.0,
                        cochlea_agc_start="speaker")
    Network(n_inputs=shipped.n_inputs, populations=shipped.populations, projections=shipped.projections,
            input_spec=adapted, readout=shipped.readout).save(tmp_path / "adapted.npz")
    voice = tmp_path / "voice"
    voice.mkdir()
    for name in ("1_george_3.wav", "2_george_4.wav"):
        (voice / name).symlink_to(FSDD / name)
    launch = tmp_path / "drive.toml"
    launch.write_text((ROOT / "launch" / "voice_drive.toml").read_text())
    sets = [f'source.path="{FSDD / "3_george_7.wav"}"', "source.agc_ms=60000", 'network.file="adapted.npz"']
    unenrolled = build_graph(load_launch(launch, sets=sets))
    unenrolled.close()
    assert any("agc_enrol is empty, so the AGC starts at 0" in note for note in unenrolled.notes)
    np.testing.assert_array_equal(unenrolled.source.cochlea._level, 0.0)
    graph = build_graph(load_launch(launch, sets=sets + ['source.agc_enrol="voice"']))
    assert not graph.notes
    try:
        config = graph.source.cochlea.config
        expected = voice_level(sorted(voice.iterdir()), config)
        np.testing.assert_allclose(graph.source.cochlea.agc_level, expected, rtol=1e-12)
        graph.source.cochlea.reset()
        np.testing.assert_array_equal(graph.source.cochlea._level, graph.source.cochlea.agc_level)
    finally:
        graph.close()
    with pytest.raises(LaunchError, match=r"\[source\] agc_enrol: expected a WAV file or a folder holding WAV files"):
        load_launch(launch, sets=sets + ['source.agc_enrol="nowhere"'])
    with pytest.raises(LaunchError, match=r"\[source\] agc_enrol: sets where the AGC starts: needs an AGC"):
        load_launch(launch, sets=[sets[0], 'source.agc_enrol="voice"'])   # the shipped model: no AGC
    (voice / "silent.wav").write_bytes((FSDD / "1_george_3.wav").read_bytes()[:44])   # a header, no samples
    with pytest.raises(LaunchError, match=r"\[source\] agc_enrol: cannot measure the voice in .*silent.wav"):
        build_graph(load_launch(launch, sets=sets + ['source.agc_enrol="voice"']))


def test_evaluate_adapts_to_each_speaker_of_the_folder(tmp_path):
    """`spikeloop evaluate` of a model whose cochlea starts at the speaker's level: each WAV is classified
    with its speaker's voice_level over the folder's WAVs of that speaker (the runtime's decisions equal those
    on presentations made here), and a folder without speaker names is refused."""
    from pipeline.snn.network import Network
    from pipeline.train.evaluate import ModelError, SampleClassifier, evaluate, prepare
    from recordings.labelled import open_labelled

    shipped = Network.load(ROOT / "pipeline" / "train" / "models" / "fsdd_digits.npz")
    spec = dataclasses_replace(shipped.input_spec, cochlea_agc_ms=60_000.0, cochlea_agc_start="speaker")
    network = Network(n_inputs=shipped.n_inputs, populations=shipped.populations, projections=shipped.projections,
                      input_spec=spec, readout=shipped.readout)
    names = ["1_george_3.wav", "2_george_4.wav", "1_lucas_3.wav"]
    for name in names:
        (tmp_path / name).symlink_to(FSDD / name)
    classes = shipped.readout.classes
    data = open_labelled(tmp_path, classes=classes)
    result = evaluate(network, data)
    assert any("adapted to each speaker" in note and "2 speakers" in note for note in result.notes)
    prepared, _ = prepare(network, "loihi")
    classifier = SampleClassifier(prepared, "loihi")
    config = cochlea_config(spec)
    for path, got in zip(data.paths, result.results):
        voice = [p for p in data.paths if p.stem.split("_")[1] == path.stem.split("_")[1]]
        presentation = present_file(path, spec, None, network.n_inputs, agc_level=voice_level(voice, config))
        assert classifier.run(presentation)[1] == got.end
    words = tmp_path / "words"
    words.mkdir()
    (words / "word.wav").symlink_to(FSDD / names[0])
    (tmp_path / "labels.txt").write_text("word 1\n")
    with pytest.raises(ModelError, match="cochlea_agc_start 'speaker'.*needs FSDD names: .*word.wav"):
        evaluate(network, open_labelled(words, tmp_path / "labels.txt", classes))


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


def test_anchor_speaker_cmvn_normalises_each_voice_over_all_its_clips():
    """Each speaker's frames, pooled over their clips, have mean 0 and standard deviation 1 per column; a
    clip is normalised by its speaker's statistics, not its own (one clip of a voice keeps its offset)."""
    bench = load_bench()
    rng = np.random.default_rng(1)
    clips = [rng.normal(mu, sd, (n, 13)) for mu, sd, n in ((5.0, 2.0, 30), (6.0, 2.0, 50), (-3.0, 0.5, 40))]
    speakers = np.array(["a", "a", "b"])
    out = bench.speaker_cmvn(clips, speakers)
    pooled = np.vstack(out[:2])
    np.testing.assert_allclose(pooled.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(pooled.std(axis=0), 1, atol=1e-6)
    assert out[0].mean() < -0.1 < 0.1 < out[1].mean()   # the lower clip of voice a stays below the other
    np.testing.assert_allclose(out[2], (clips[2] - clips[2].mean(axis=0)) / (clips[2].std(axis=0) + 1e-8))
