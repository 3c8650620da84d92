"""Spoken digits: FSDD splits, the cochlea model's input spec, the command_map decoder's word rule, the MFCC
anchor's pieces (against scipy), and launch/voice_drive.toml replaying FSDD test words into the emulated
Dynamixel wheels."""
from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.app.launch import LaunchError, build_graph, load_launch
from pipeline.decoders import DECODERS
from pipeline.decoders.command_map import CommandMap
from pipeline.sinks import read_command_log
from pipeline.snn.model import InputSpec
from pipeline.snn.network import Network
from recordings.datasets import shared_data_dir
from recordings.labelled import LabelsError, open_labelled
from recordings.wav import read_wav, word_sequence, write_wav

ROOT = Path(__file__).resolve().parent.parent
FSDD = shared_data_dir() / "audio" / "fsdd"
LAUNCH = ROOT / "launch" / "voice_drive.toml"
MODEL = ROOT / "pipeline" / "train" / "models" / "fsdd_digits.npz"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_voice", ROOT / "bench" / "voice.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- splits ---------------------------------------------------------------------------------------------

def test_fsdd_official_split_is_index_0_to_4_of_every_speaker():
    labelled = open_labelled(FSDD)
    train, test = labelled.fsdd_split("official")
    assert (len(train), len(test)) == (2250, 250)
    assert all(int(p.stem.rsplit("_", 1)[1]) < 5 for p in test.paths)
    assert all(int(p.stem.rsplit("_", 1)[1]) >= 5 for p in train.paths)
    assert set(test.speakers()) == set(train.speakers()) == set(labelled.speakers())
    assert sorted(set(test.labels)) == list(range(10))


def test_fsdd_official_validation_split_holds_out_recordings_5_to_9_and_never_uses_the_test_set():
    train, validation = open_labelled(FSDD).fsdd_split("official_validation")
    index = [[int(p.stem.rsplit("_", 1)[1]) for p in s.paths] for s in (train, validation)]
    assert (len(train), len(validation)) == (2000, 250)
    assert min(index[0]) == 10 and sorted(set(index[1])) == [5, 6, 7, 8, 9]
    assert sorted(set(validation.labels)) == list(range(10)) and len(set(validation.speakers())) == 5


def test_fsdd_leave_one_speaker_out():
    labelled = open_labelled(FSDD)
    speakers = sorted(set(labelled.speakers()))
    assert len(speakers) == 5
    for speaker in speakers:
        train, test = labelled.fsdd_split(f"leave_out:{speaker}")
        assert set(test.speakers()) == {speaker}
        assert speaker not in set(train.speakers())
        assert len(train) + len(test) == len(labelled)
    with pytest.raises(LabelsError, match="no speaker 'nobody'"):
        labelled.fsdd_split("leave_out:nobody")
    with pytest.raises(LabelsError, match="expected 'official', 'official_validation' or 'leave_out:SPEAKER'"):
        labelled.fsdd_split("random")


# -- the model's input spec -----------------------------------------------------------------------------

def test_input_spec_keeps_the_cochlea_threshold(tmp_path):
    from devices.audio import CochleaConfig
    from pipeline.snn.model import Readout
    from pipeline.snn.network import Dense, LoihiLIF, Population

    assert InputSpec().cochlea_threshold == CochleaConfig().threshold
    spec = InputSpec(sensor="cochlea", bin_us=2000, channels=4, cochlea_threshold=3e-5)
    network = Network(n_inputs=4, populations=(Population("output", 2, LoihiLIF(vth=10)),),
                      projections=(Dense(name="fc", source="input", target="output",
                                         weights=np.ones((2, 4), np.int64)),),
                      input_spec=spec, readout=Readout(classes=("a", "b")))
    network.save(tmp_path / "net.npz")
    assert Network.load(tmp_path / "net.npz").input_spec == spec
    with pytest.raises(ValueError, match="cochlea_threshold"):
        InputSpec(sensor="cochlea", cochlea_threshold=0.0)


# -- the decoder ------------------------------------------------------------------------------------------

def spikes_at(n: int, *on: int) -> np.ndarray:
    out = np.zeros(n, np.uint8)
    out[list(on)] = 1
    return out


def test_command_map_decides_at_the_word_gap_and_holds_the_command():
    decoder = CommandMap(3, {"1": [1.0, 1.0], "2": [-1.0, 1.0]}, gap_us=10_000, min_spikes=2, boundary="output")
    assert DECODERS["command_map"] is CommandMap
    t = 0
    np.testing.assert_array_equal(decoder.update(spikes_at(3), t), [0.0, 0.0])  # initial: stopped
    for _ in range(3):  # a word: output 1 twice, output 2 once
        t += 1000
        decoder.update(spikes_at(3, 1), t)
    t += 1000
    decoder.update(spikes_at(3, 2), t)
    last_spike = t
    while t < last_spike + 9000:  # silence shorter than the gap: no decision yet
        t += 1000
        np.testing.assert_array_equal(decoder.update(spikes_at(3), t), [0.0, 0.0])
        assert decoder.in_word
    t += 1000
    np.testing.assert_array_equal(decoder.update(spikes_at(3), t), [1.0, 1.0])
    assert decoder.decisions == [(last_spike + 10_000, 1)]
    assert not decoder.in_word and decoder.evidence.sum() == 0  # evidence reset
    t += 50_000
    decoder.update(spikes_at(3, 0), t)  # one spike: below min_spikes, ignored; the command is held
    np.testing.assert_array_equal(decoder.update(spikes_at(3), t + 20_000), [1.0, 1.0])
    assert decoder.decisions == [(last_spike + 10_000, 1)]
    for k in range(4):  # a tie between 0 and 2: the lower index; class 0 has no command -> held
        decoder.update(spikes_at(3, 0 if k % 2 else 2), t + 30_000 + k * 1000)
    np.testing.assert_array_equal(decoder.update(spikes_at(3), t + 60_000), [1.0, 1.0])
    assert decoder.decisions[-1][1] == 0


class FakeRuntime:
    """What command_map reads from a runtime: inputs active in the step just run."""
    input_spikes = 0


def test_command_map_input_boundary_cuts_words_at_input_silence():
    runtime = FakeRuntime()
    decoder = CommandMap(2, {"0": [1.0], "1": [2.0]}, gap_us=5000, min_spikes=1, min_inputs=2)
    with pytest.raises(ValueError, match="boundary 'input' needs the network runtime"):
        decoder.update(spikes_at(2), 0)
    decoder.attach_runtime(runtime)
    sound = [3, 1, 4, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0]  # inputs per 1 ms step; 1 is below min_inputs
    outputs = [(), (), (1,), (1,), (0,), (1,), (), (), (), (0,), (0,), (0,), (), (), (), ()]
    commands = []
    for t, (active, fired) in enumerate(zip(sound, outputs)):
        runtime.input_spikes = active
        commands.append(decoder.update(spikes_at(2, *fired), t * 1000)[0])
    # word 1: sound at 0 ms and 2 ms, silence >= 5 ms at 7 ms -> output 1 (3 spikes, incl. after the sound)
    # word 2: sound at 9 ms, decided at 14 ms -> output 0
    assert decoder.decisions == [(7000, 1), (14000, 0)]
    assert commands[6] == 0.0 and commands[7] == 2.0 and commands[13] == 2.0 and commands[14] == 1.0


@pytest.mark.parametrize("params, message", [
    ({"commands": {}}, "'commands' must be a non-empty table"),
    ({"commands": {"7": [1.0]}}, "key '7' must be a class index 0..2"),
    ({"commands": {"x": [1.0]}}, "key 'x' must be a class index"),
    ({"commands": {"1": [1.0], "2": [1.0, 2.0]}}, r"'commands\[2\]' has 2 values"),
    ({"commands": {"1": "fast"}}, r"'commands\[1\]' must be a list of finite numbers"),
    ({"commands": {"1": [1.0]}, "gap_us": 0}, "'gap_us'"),
    ({"commands": {"1": [1.0]}, "names": ["a"]}, "'names' must be 3 strings"),
    ({"commands": {"1": [1.0]}, "boundary": "energy"}, "'boundary' must be one of"),
])
def test_command_map_rejects_bad_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        CommandMap(3, **params)


# -- the anchor's MFCC -------------------------------------------------------------------------------------

def test_mfcc_pieces_agree_with_scipy_and_a_pure_tone():
    from scipy.fft import dct

    bench = load_bench()
    x = np.random.default_rng(0).normal(size=(5, 26))
    np.testing.assert_allclose(x @ bench.dct_matrix(26, 13).T, dct(x, type=2, norm="ortho", axis=1)[:, :13],
                               atol=1e-12)
    bank = bench.mel_filterbank(8000.0, 256, 26)
    assert bank.shape == (26, 129) and bank.max() <= 1.0
    centres = bench.mel_to_hz(np.linspace(0, bench.hz_to_mel(4000.0), 28))[1:-1]
    # a 1 kHz tone's power lands in the filter whose centre is nearest 1 kHz
    t = np.arange(8000) / 8000.0
    frames = np.abs(np.fft.rfft(np.sin(2 * np.pi * 1000 * t[:256]) * np.hamming(256))) ** 2
    assert np.argmax(bank @ frames) == np.argmin(np.abs(centres - 1000))
    coefficients = bench.mfcc(np.sin(2 * np.pi * 440 * t), 8000.0)
    assert coefficients.shape == (1 + (8000 - 200) // 80, 13)
    assert bench.clip_features(coefficients).shape == (13 * 22,)


# -- WAV sequences ----------------------------------------------------------------------------------------

def test_word_sequence_round_trips_through_write_wav(tmp_path):
    paths = [FSDD / "1_jackson_0.wav", FSDD / "2_lucas_3.wav"]
    samples, rate, spans = word_sequence(paths, gap_s=0.25, lead_s=0.1)
    first, _ = read_wav(paths[0])
    assert rate == 8000 and spans[0] == (0.1, 0.1 + len(first) / 8000)
    write_wav(tmp_path / "seq.wav", samples, rate)
    back, back_rate = read_wav(tmp_path / "seq.wav")
    assert back_rate == rate and np.max(np.abs(back - samples)) <= 1 / 32767
    assert oct((tmp_path / "seq.wav").stat().st_mode & 0o777) == oct(0o644)


# -- the launch file ------------------------------------------------------------------------------------------

#: Digits spoken in the replay test (official test recordings: index 0-4 never trained on) and the command
#: each should leave on the wheels [left, right] rad/s per launch/voice_drive.toml.
SEQUENCE = [(1, "jackson", 1), (3, "nicolas", 2), (4, "lucas", 0), (2, "yweweler", 4), (0, "george", 3)]
COMMANDS = {1: [3.0, 3.0], 3: [-1.5, 1.5], 4: [1.5, -1.5], 2: [-3.0, -3.0], 0: [0.0, 0.0]}


def test_voice_drive_replays_fsdd_test_words_into_the_emulated_wheels(tmp_path):
    samples, rate, spans = word_sequence([FSDD / f"{d}_{s}_{i}.wav" for d, s, i in SEQUENCE], gap_s=0.6,
                                         lead_s=0.3, rms=0.05)  # one talker level (the model is level-sensitive)
    wav = tmp_path / "words.wav"
    write_wav(wav, samples, rate)
    log = tmp_path / "commands.csv"
    spec = load_launch(LAUNCH, sets=['loop.mode="fast"', 'sinks.log.type="command_log"',
                                     f'sinks.log.path="{log}"'], source=str(wav))
    graph = build_graph(spec)
    try:
        graph.loop.warmup()
        graph.loop.run()
    finally:
        graph.close()
    decisions = graph.decoder.decisions
    assert [c for _, c in decisions] == [d for d, _, _ in SEQUENCE]
    for (t_us, _), (start_s, end_s) in zip(decisions, spans):  # each decision within 100 ms of its word's end
        assert start_s < t_us / 1e6 <= end_s + 0.1
    _, commands = read_command_log(log)
    changes = [commands[0].tolist()] + [c.tolist() for p, c in itertools.pairwise(commands) if (p != c).any()]
    assert changes == [[0.0, 0.0]] + [COMMANDS[d] for d, _, _ in SEQUENCE]  # stopped, then one per word


def test_voice_drive_checks_the_cochlea_and_step_against_the_model():
    with pytest.raises(LaunchError, match=r"\[loop\] dt_us: fsdd_digits.npz was trained on 2000 µs steps"):
        build_graph(load_launch(LAUNCH, sets=["loop.dt_us=1000"]))
    with pytest.raises(LaunchError, match=r"\[source\] threshold: fsdd_digits.npz was trained on cochlea threshold"):
        build_graph(load_launch(LAUNCH, sets=["source.threshold=1.5e-4"]))


def test_shipped_model_is_a_cochlea_digit_classifier():
    network = Network.load(MODEL)
    assert network.input_spec.sensor == "cochlea" and network.input_spec.bin_us == 2000
    assert network.readout.classes == tuple(str(d) for d in range(10))
    assert not network.is_float


@pytest.mark.slow
def test_voice_drive_headless_from_the_command_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "launch", str(LAUNCH), "--headless",
                             "--set", 'loop.mode="fast"', "--snapshot", "view.png"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    # --snapshot is drawn headless too (it was silently not written with --headless)
    view = cv2.imread(str(tmp_path / "view.png"))
    assert view is not None and view.shape[0] > 100 and view.std() > 0
    # what it heard is in the log (it was not: a headless run showed no decision); the sample says
    # "one three four two zero" (launch/voice_drive.toml)
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    heard = [e for e in events if e["event"] == "classified"]
    assert len(heard) == 1 and heard[0]["heard"] == ["one", "three", "four", "two", "zero"], result.stderr
    assert heard[0]["words"] == 5 and len(heard[0]["at_ms"]) == 5


def test_live_view_draws_the_cochlea_raster_and_class_evidence():
    from pipeline.app.dashboard import ON
    from pipeline.app.liveview import for_graph

    graph = build_graph(load_launch(LAUNCH, sets=['loop.mode="fast"', "loop.duration_s=1.2"]))
    try:
        view = for_graph(graph)
        graph.loop.warmup()
        view.run(window=False)
    finally:
        graph.close()
    x, y, w, h = view.layout.events
    raster = view.last_image[y:y + h, x:x + w]
    assert (raster == ON).all(axis=2).sum() > 100  # cochlea spikes drawn (one pixel each)
    assert view.neuron_names[1] == "output 1 'one' cmd" and view.neuron_names[5] == "output 5 'five'"
    assert all(" ev " in label for label in view.raster_labels(np.zeros((0, 10), bool)))
    assert view.command_names == ["left wheel", "right wheel"]


# -- bad input ------------------------------------------------------------------------------------------------

def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline.app.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300, check=False)


@pytest.mark.parametrize("samples, rate, message", [
    (np.zeros(0), 8000, "empty WAV"),
    (np.zeros(4000), 8000, "silent WAV"),
    (None, 6000, "Nyquist frequency 3000 Hz of 6000 Hz audio"),
])
def test_unusable_wavs_are_refused_with_one_line(tmp_path, samples, rate, message):
    folder = tmp_path / "wavs"
    folder.mkdir()
    if samples is None:  # a real word at 6 kHz: below the cochlea's 3.6 kHz top channel's Nyquist rate
        from scipy.signal import resample_poly
        word, _ = read_wav(FSDD / "3_jackson_0.wav")
        samples = resample_poly(word, 3, 4)
    write_wav(folder / "3_jackson_0.wav", samples, rate)
    result = _cli("evaluate", str(MODEL), str(folder), "--backend", "loihi", cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "3_jackson_0.wav" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = _cli("launch", str(LAUNCH), "--headless", "--source", str(folder / "3_jackson_0.wav"),
                  "--set", 'loop.mode="fast"', cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_wav_at_another_rate_runs_the_cochlea_at_that_rate(tmp_path):
    """16 kHz audio: the cochlea's filters are designed at the file's rate (the same centre frequencies),
    so the spikes match the 8 kHz original's closely (independent: scipy's resampler makes the 16 kHz file)."""
    from scipy.signal import resample_poly

    from pipeline.train.present import cochlea_spikes

    word, _ = read_wav(FSDD / "3_jackson_0.wav")
    write_wav(tmp_path / "16k.wav", resample_poly(word, 2, 1), 16000)
    spec = Network.load(MODEL).input_spec
    a, duration_a = cochlea_spikes(FSDD / "3_jackson_0.wav", spec)
    b, duration_b = cochlea_spikes(tmp_path / "16k.wav", spec)
    assert abs(duration_a - duration_b) <= 125
    per_channel = [np.bincount(s["channel"], minlength=64) for s in (a, b)]
    assert abs(len(a) - len(b)) < 0.1 * len(a)
    assert np.corrcoef(*per_channel)[0, 1] > 0.95


def test_channel_shift_moves_every_input_along_the_frequency_axis():
    from pipeline.train.bptt import augment
    from pipeline.train.present import Presentation

    p = Presentation(np.array([0, 3, 4]), np.array([0, 10, 63, 20], np.int32), np.ones(4, np.int32))
    aug = {"drop": 0.0, "jitter_px": 0, "channel_shift": 2, "time_scale": 0.0}
    seen = set()
    for seed in range(40):
        out = augment(p, np.random.default_rng(seed), (1, 1, 64), aug, True)
        shift = int(out.index[out.indptr[1]]) - 20  # step 1's one input, in range for any shift
        rows = [(out.index[out.indptr[k]:out.indptr[k + 1]] - shift).tolist() for k in range(2)]
        kept = [[i for i in row if 0 <= i + shift < 64] for row in ([0, 10, 63], [20])]
        assert rows == kept and abs(shift) <= 2
        seen.add(shift)
    assert seen == {-2, -1, 0, 1, 2}


def test_loso_bench_names_the_speaker_whose_training_failed(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(re.sub(r"(?m)^lr = .*$", "lr = -1", (ROOT / "launch" / "train_fsdd.toml").read_text()))
    with pytest.raises(RuntimeError, match=r"leave_out:george: training failed \(exit 2\): .*\[train\] lr"):
        load_bench().loso(bad, ["george"], 1, 1)


def test_level_augmentation_presents_a_clip_louder_and_is_cochlea_only(tmp_path):
    from devices.audio import Cochlea, CochleaConfig, rms_gain
    from pipeline.train.present import present_file

    spec = InputSpec(sensor="cochlea", bin_us=2000, channels=64, cochlea_threshold=3e-5)
    path = FSDD / "7_lucas_12.wav"
    samples, rate = read_wav(path)
    config = CochleaConfig(n_channels=64, threshold=3e-5)
    for gain_db in (-6.0, 6.0):  # against the cochlea run directly at that gain
        spikes = Cochlea(float(rate), config, input_gain=rms_gain(samples, 0.3) * 10 ** (gain_db / 20)).process(samples)
        dense = present_file(path, spec, None, 64, gain_db).dense(64)
        assert dense.sum() == len(set(zip(spikes["timestamp"] // 2000, spikes["channel"])))
    counts = [present_file(path, spec, None, 64, g).index.size for g in (-6.0, 0.0, 6.0)]
    assert counts[0] < counts[1] < counts[2]
    config = tmp_path / "dvs.toml"
    nmnist = (ROOT / "launch" / "train_nmnist.toml").read_text()
    config.write_text(nmnist.replace("[augment]", "[augment]\nlevel_db = 6"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "train", str(config), "--out",
                           str(tmp_path / "m.npz")], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 2 and "[augment] level_db: only for cochlea input" in done.stderr
    assert not (tmp_path / "m.npz").exists()


def test_command_keys_are_the_models_class_labels_in_any_order():
    """voice_drive's `1 = [3.0, 3.0]` is the class labelled "1": with a model whose classes run 9..0 it is class
    index 8, not 1 (it drove the command of "eight" before); a key that is no class of the model is refused (an
    index only where no class label is a number)."""
    from pipeline.app.launch import build_decoder
    from pipeline.snn.model import Readout

    spec = load_launch(LAUNCH, sets=['loop.mode="fast"', 'decoder.boundary="output"'])
    decoder, length = build_decoder(spec, 10, None, Readout(kind="count", classes=tuple("9876543210")))
    assert length == 2 and sorted(decoder.commands) == [5, 6, 7, 8, 9]
    np.testing.assert_array_equal(decoder.commands[8], [3.0, 3.0])    # "1": forward
    np.testing.assert_array_equal(decoder.commands[9], [0.0, 0.0])    # "0": stop
    shipped, _ = build_decoder(spec, 10, None, Readout(kind="count", classes=tuple("0123456789")))
    np.testing.assert_array_equal(shipped.commands[1], [3.0, 3.0])
    with pytest.raises(LaunchError, match=r'\[decoder\] commands: key "2" is not a class of the model; its classes '
                                          r'are \["yes", "no"\] \(or their indices 0\.\.1\)'):
        build_decoder(spec, 2, None, Readout(kind="count", classes=("yes", "no")))  # keys 0 and 1: indices
    with pytest.raises(LaunchError, match=r'key "4" is not a class of the model; its classes are \["0", "1", "2", '
                                          r'"3"\]$'):
        build_decoder(spec, 4, None, Readout(kind="count", classes=tuple("0123")))
