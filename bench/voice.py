"""Spoken digits (FSDD): the cochlea + spiking classifier against real time on one core, its accuracy and
decision latency, and a non-spiking anchor measured in the same run.

    python bench/voice.py [--model MODEL.npz] [--clips N] [--json] [--no-anchor | --anchor-only]
    python bench/voice.py --loso [--epochs N] [--jobs J] [--config launch/train_fsdd.toml] [--anchor-only] [--json]

1. Speed (the process pinned to one core, numba on one thread): N official test recordings streamed in
   10 ms blocks (as a microphone delivers them) through the project's cochlea (64 ERB channels), binned
   into the model's steps (SpikeStepBinner) and stepped through the model on the loihi backend, with the
   command_map decoder; x real time = audio seconds / seconds taken, median over clips and overall, by the
   wall clock and by this thread's CPU time (on a shared machine the wall clock also counts the time other
   processes had the core). The cochlea alone is timed on the same blocks (what the network adds is the
   difference). Goal: >= 20x.
2. Accuracy and decision latency of the model on all 250 official test recordings, run as a live stream
   would be: the clip, then silence; the count readout over the clip (the trainer's rule) and the
   command_map decision (the word ends when the cochlea has been silent for gap_us, launch/voice_drive.toml's
   by default), whose time after the clip's last sample is the decision latency (FSDD clips are trimmed to
   the word, with near-minimal silence). A word whose internal silence outlasts the gap is split: it gets
   more than one decision; the latency is the last one's (the decision that holds after the word), the
   accuracy is given for the first and the last. The latency is by construction the cochlea's ring-down
   after the last sample (its filters and LIF keep spiking for a while: measured here, the time of the
   last step with a cochlea spike after the clip's end) + gap_us, so gap_us bounds it. Goal: >= 97 %, decision within 100 ms of
   the word's end.
3. Anchor: MFCCs computed here with numpy (pre-emphasis 0.97, 25 ms Hamming frames every 10 ms, 256-point
   FFT power, 26 triangular mel filters 0-4 kHz, log, orthonormal DCT-II, 13 coefficients), each clip as
   its 13 coefficients at 20 time points (linear interpolation) plus their mean and standard deviation,
   standardised; scikit-learn's logistic regression and a 1-hidden-layer MLP (128 ReLU) on the official
   split and leave-one-speaker-out. Published point of comparison: a Keras CNN on MFCCs reaches 97 % on a
   random 10 % of the then 1,500 recordings of 3 speakers (adhishthite/sound-mnist); a random split is
   not speaker-independent.
4. ``--loso``: the five leave-one-speaker-out SNN trainings (``spikeloop train CONFIG --set
   data.split='"leave_out:SPEAKER"'``, with ``--epochs`` if given, ``--jobs`` at a time, each a
   subprocess writing its model to a temporary folder), each speaker's test accuracy on the trainer and on
   the loihi runtime, and their mean; with the MFCC anchor's leave-one-speaker-out from the same run, and a
   speaker-normalised anchor (strong_anchor: deltas, per-utterance CMVN, training copies at three
   vocal-tract-length warps 0.9-1.1; logistic regression and MLP), and speaker-adapted anchors
   (speaker_anchor: per-speaker CMVN from each voice's unlabelled clips, an MLP, and five MLPs self-trained
   on the held-out voice's confident predictions). ``--config launch/train_fsdd_speakers.toml``: the
   speaker-independent SNN configuration.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
import tomllib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devices.audio import Cochlea, CochleaConfig, rms_gain
from pipeline.decoders.command_map import CommandMap
from pipeline.loop import steps_of
from pipeline.snn import Network, build
from pipeline.stages.binning import SpikeStepBinner
from pipeline.train.present import cochlea_config
from recordings.datasets import shared_data_dir
from recordings.labelled import open_labelled
from recordings.wav import WavReader

DEFAULT_MODEL = ROOT / "pipeline" / "train" / "models" / "fsdd_digits.npz"
#: The voice-drive launch file whose [decoder] gap_us is the default word gap.
VOICE_DRIVE = ROOT / "launch" / "voice_drive.toml"
BLOCK_MS = 10.0
#: Silence after each clip while the decoder waits for the word boundary (ms).
TAIL_MS = 300


# ---------------------------------------------------------------------------------------------- MFCC
def hz_to_mel(f_hz):
    """The HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(f_hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate_hz: float, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular filters (n_mels, n_fft // 2 + 1) on FFT bins, centres uniform in mel from 0 to Nyquist,
    each peaking at 1 on its centre frequency."""
    edges_hz = mel_to_hz(np.linspace(0.0, hz_to_mel(sample_rate_hz / 2), n_mels + 2))
    bin_hz = np.arange(n_fft // 2 + 1) * sample_rate_hz / n_fft
    low, centre, high = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bin_hz[None, :] - low) / (centre - low)
    falling = (high - bin_hz[None, :]) / (high - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def dct_matrix(n: int, k: int) -> np.ndarray:
    """Orthonormal DCT-II rows 0..k-1 as a (k, n) matrix: X_k = s_k sum_j x_j cos(pi k (2j + 1) / (2n))."""
    j = np.arange(n)
    rows = np.cos(np.pi * np.arange(k)[:, None] * (2 * j[None, :] + 1) / (2 * n)) * np.sqrt(2.0 / n)
    rows[0] /= np.sqrt(2.0)
    return rows


def mfcc(samples: np.ndarray, sample_rate_hz: float, n_mfcc: int = 13, n_mels: int = 26, frame_ms: float = 25.0,
         hop_ms: float = 10.0, n_fft: int = 256, preemphasis: float = 0.97, warp: float = 1.0) -> np.ndarray:
    """MFCCs of a clip: (n_frames, n_mfcc), frames of ``frame_ms`` every ``hop_ms`` (a clip shorter than a
    frame is zero-padded to one frame). ``warp``: the filterbank's frequency axis scaled as by
    :func:`warped_mel_filterbank` (1: the plain filterbank)."""
    power = power_frames(samples, sample_rate_hz, frame_ms, hop_ms, n_fft, preemphasis)
    bank = mel_filterbank(sample_rate_hz, n_fft, n_mels) if warp == 1.0 else \
        warped_mel_filterbank(sample_rate_hz, n_fft, n_mels, warp)
    return np.log(power @ bank.T + 1e-10) @ dct_matrix(n_mels, n_mfcc).T


def power_frames(samples: np.ndarray, sample_rate_hz: float, frame_ms: float = 25.0, hop_ms: float = 10.0,
                 n_fft: int = 256, preemphasis: float = 0.97) -> np.ndarray:
    """Pre-emphasised, Hamming-windowed power spectra of a clip's frames: (n_frames, n_fft // 2 + 1)."""
    x = np.asarray(samples, dtype=np.float64)
    x = np.append(x[:1], x[1:] - preemphasis * x[:-1])
    frame = int(round(sample_rate_hz * frame_ms / 1000))
    hop = int(round(sample_rate_hz * hop_ms / 1000))
    if len(x) < frame:
        x = np.pad(x, (0, frame - len(x)))
    n_frames = 1 + (len(x) - frame) // hop
    frames = x[np.arange(frame)[None, :] + hop * np.arange(n_frames)[:, None]] * np.hamming(frame)
    return np.abs(np.fft.rfft(frames, n_fft)) ** 2 / n_fft


def warped_mel_filterbank(sample_rate_hz: float, n_fft: int, n_mels: int, warp: float) -> np.ndarray:
    """The mel filterbank with every filter edge divided by ``warp`` (capped just below Nyquist): a spectrum
    compressed by ``warp`` (every frequency f at f / warp: formants of a longer vocal tract for warp > 1)
    gives the plain bank's energies; a vocal-tract-length perturbation (Jaitly & Hinton 2013) when ``warp`` is
    drawn around 1."""
    nyquist = sample_rate_hz / 2
    edges_hz = np.minimum(mel_to_hz(np.linspace(0.0, hz_to_mel(nyquist), n_mels + 2)) / warp, nyquist)
    edges_hz = edges_hz - (edges_hz >= nyquist) * (1e-3 * (n_mels + 2 - np.arange(n_mels + 2)))  # keep increasing
    bin_hz = np.arange(n_fft // 2 + 1) * sample_rate_hz / n_fft
    low, centre, high = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bin_hz[None, :] - low) / (centre - low)
    falling = (high - bin_hz[None, :]) / (high - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def with_deltas(coefficients: np.ndarray) -> np.ndarray:
    """(n_frames, k) -> (n_frames, 3k): the coefficients, their first and second differences over time
    (central differences, np.gradient; zeros for a one-frame clip)."""
    if len(coefficients) < 2:
        return np.hstack([coefficients, np.zeros_like(coefficients), np.zeros_like(coefficients)])
    d = np.gradient(coefficients, axis=0)
    return np.hstack([coefficients, d, np.gradient(d, axis=0)])


def cmvn(features: np.ndarray, variance: bool = True) -> np.ndarray:
    """Per-utterance cepstral mean (and, with ``variance``, variance) normalisation: every column to mean 0
    (and standard deviation 1) over the clip's frames."""
    centred = features - features.mean(axis=0)
    return centred / (features.std(axis=0) + 1e-8) if variance else centred


def clip_features(coefficients: np.ndarray, points: int = 20) -> np.ndarray:
    """A fixed-length vector of a clip's MFCCs: each coefficient at ``points`` times (linear
    interpolation over the clip), then the mean and standard deviation of each."""
    n = len(coefficients)
    at = np.linspace(0, n - 1, points)
    resampled = np.stack([np.interp(at, np.arange(n), coefficients[:, k]) for k in range(coefficients.shape[1])])
    return np.concatenate([resampled.ravel(), coefficients.mean(axis=0), coefficients.std(axis=0)])


def anchor(wavs, labels, speakers, indices) -> dict:
    """Logistic regression and MLP on MFCC features: official split and leave-one-speaker-out accuracies."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    features = np.stack([clip_features(mfcc(w, 8000.0)) for w in wavs])
    models = {"logistic": lambda: LogisticRegression(C=1.0, max_iter=3000),
              "mlp": lambda: MLPClassifier((128,), alpha=1e-3, max_iter=500, random_state=0)}
    splits = {"official": indices < 5}
    for speaker in sorted(set(speakers)):
        splits[f"leave_out:{speaker}"] = speakers == speaker
    out = {}
    for name, make in models.items():
        scores = {}
        for split, test in splits.items():
            scaler = StandardScaler().fit(features[~test])
            model = make().fit(scaler.transform(features[~test]), labels[~test])
            scores[split] = float(model.score(scaler.transform(features[test]), labels[test]))
        loso = [v for k, v in scores.items() if k.startswith("leave_out:")]
        out[name] = {"official": scores["official"], "leave_one_speaker_out_mean": float(np.mean(loso)),
                     "leave_one_speaker_out": {k[len("leave_out:"):]: v for k, v in scores.items()
                                               if k.startswith("leave_out:")}}
    return out


#: Frequency warps of the stronger anchor's training copies (vocal-tract-length perturbation).
WARPS = (0.9, 1.0, 1.1)


def strong_features(samples: np.ndarray, warp: float = 1.0, variance: bool = True, points: int = 20) -> np.ndarray:
    """The stronger anchor's clip vector: MFCCs (``warp``-ed filterbank) with deltas and delta-deltas,
    per-utterance CMVN (CMN without ``variance``), each of the 39 columns at ``points`` times over the clip
    (linear interpolation)."""
    c = cmvn(with_deltas(mfcc(samples, 8000.0, warp=warp)), variance)
    at = np.linspace(0, len(c) - 1, points)
    return np.stack([np.interp(at, np.arange(len(c)), c[:, k]) for k in range(c.shape[1])]).ravel()


def strong_anchor(wavs, labels, speakers) -> dict:
    """Leave-one-speaker-out of the speaker-normalised anchor: :func:`strong_features`, the training
    speakers' clips at every warp of WARPS (test clips unwarped), standardised, scikit-learn's logistic
    regression (C 0.1) and MLP (128 ReLU, L2 1e-2) on CMVN'd features, and the logistic regression on
    CMN'd ones (means only). Per speaker and mean."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    features = {(w, v): np.stack([strong_features(x, w, v) for x in wavs]) for w in WARPS for v in (True, False)}
    models = {"cmvn_delta_warp_logistic": (True, lambda: LogisticRegression(C=0.1, max_iter=2000)),
              "cmvn_delta_warp_mlp": (True, lambda: MLPClassifier((128,), alpha=1e-2, max_iter=200, random_state=0)),
              "cmn_delta_warp_logistic": (False, lambda: LogisticRegression(C=0.1, max_iter=2000))}
    out = {}
    for name, (variance, make) in models.items():
        per = {}
        for speaker in sorted(set(speakers)):
            test = speakers == speaker
            x = np.vstack([features[w, variance][~test] for w in WARPS])
            y = np.concatenate([labels[~test]] * len(WARPS))
            scaler = StandardScaler().fit(x)
            model = make().fit(scaler.transform(x), y)
            per[speaker] = float(model.score(scaler.transform(features[1.0, variance][test]), labels[test]))
        out[name] = {"leave_one_speaker_out_mean": float(np.mean(list(per.values()))), "leave_one_speaker_out": per}
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def speaker_cmvn(frames: list[np.ndarray], speakers: np.ndarray) -> list[np.ndarray]:
    """Per-speaker cepstral mean and variance normalisation: every clip's frames (n_frames, k) centred and
    scaled by the mean and standard deviation of all frames of its speaker (speaker adaptation from
    unlabelled audio; a live system would track them over a session)."""
    stats = {}
    for speaker in set(speakers):
        every = np.vstack([f for f, s in zip(frames, speakers) if s == speaker])
        stats[speaker] = (every.mean(axis=0), every.std(axis=0) + 1e-8)
    return [(f - stats[s][0]) / stats[s][1] for f, s in zip(frames, speakers)]


#: Self-training of the speaker-adapted anchor: rounds, and the fraction of the test voice's clips (most
#: confident first) added with their predicted labels in each round.
SELF_TRAINING = (0.5, 0.7, 0.9)


def speaker_anchor(wavs, labels, speakers) -> dict:
    """Leave-one-speaker-out with speaker adaptation from the held-out voice's unlabelled clips (the
    transductive upper reference for the speaker-adapted SNN): MFCCs with per-speaker CMVN
    (:func:`speaker_cmvn`), :func:`clip_features`, standardised; "speaker_cmvn_mlp": the plain anchor's MLP
    (128 ReLU, L2 1e-3); "speaker_cmvn_mlp5_self_training": five MLPs (256 ReLU, L2 1e-2, seeds 0-4,
    probabilities averaged), then for each fraction f of SELF_TRAINING the held-out voice's most confident
    f of clips added with their predicted labels and the five retrained (labels of the voice never used)."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    frames = speaker_cmvn([mfcc(w, 8000.0) for w in wavs], speakers)
    x = np.stack([clip_features(f) for f in frames])

    def five(x_train, y_train, x_test):
        return np.mean([MLPClassifier((256,), alpha=1e-2, max_iter=500, random_state=seed).fit(x_train, y_train)
                        .predict_proba(x_test) for seed in range(5)], axis=0)

    out = {"speaker_cmvn_mlp": {}, "speaker_cmvn_mlp5_self_training": {}}
    for speaker in sorted(set(speakers)):
        test = speakers == speaker
        scaler = StandardScaler().fit(x[~test])
        train_x, test_x = scaler.transform(x[~test]), scaler.transform(x[test])
        model = MLPClassifier((128,), alpha=1e-3, max_iter=500, random_state=0).fit(train_x, labels[~test])
        out["speaker_cmvn_mlp"][speaker] = float(model.score(test_x, labels[test]))
        p = five(train_x, labels[~test], test_x)
        for fraction in SELF_TRAINING:
            confident = p.max(axis=1) >= np.quantile(p.max(axis=1), 1 - fraction)
            p = five(np.vstack([train_x, test_x[confident]]),
                     np.concatenate([labels[~test], p.argmax(axis=1)[confident]]), test_x)
        out["speaker_cmvn_mlp5_self_training"][speaker] = float(np.mean(p.argmax(axis=1) == labels[test]))
    result = {name: {"leave_one_speaker_out_mean": float(np.mean(list(per.values()))), "leave_one_speaker_out": per}
              for name, per in out.items()}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


# ---------------------------------------------------------------------------------------------- SNN
def stream(network: Network, runtime, decoder: CommandMap, samples: np.ndarray, gain: float, config: CochleaConfig,
           tail_ms: float = 0.0) -> tuple[np.ndarray, int, int]:
    """One clip (+ ``tail_ms`` of silence) streamed in 10 ms blocks: cochlea -> binner -> runtime ->
    decoder. Returns (output spike counts over the clip's steps (n_outputs,), steps, the end of the last step
    with a cochlea spike (µs from the clip's start; 0: none))."""
    spec = network.input_spec
    cochlea = Cochlea(8000.0, config, input_gain=gain)
    binner = SpikeStepBinner(spec.bin_us, config.n_channels, t0_us=0)
    block = int(8000 * BLOCK_MS / 1000)
    x = np.concatenate([samples, np.zeros(int(8000 * tail_ms / 1000))])
    clip_steps = -(-len(samples) * 1_000_000 // 8000 // spec.bin_us)
    counts = np.zeros(network.n_outputs, np.int64)
    steps = last_sound_us = 0
    for start in range(0, len(x), block):
        chunk = x[start:start + block]
        spikes = cochlea.process(chunk)
        t_end = int(round((start + len(chunk)) * 1e6 / 8000))
        for t_us, active in steps_of(binner.push(spikes, t_end)):
            out = runtime.step(active)
            if len(active):
                last_sound_us = t_us
            if steps < clip_steps:
                counts += out
            decoder.update(out, t_us)
            steps += 1
    return counts, steps, last_sound_us


def loso(config: Path, speakers: list[str], epochs: int, jobs: int) -> dict:
    """Part 4: train one SNN per held-out speaker (subprocesses, ``jobs`` at a time); their test accuracies
    and the mean. A failed training raises RuntimeError with its last stderr line."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = time.perf_counter()

    def train(speaker: str) -> dict:
        with tempfile.TemporaryDirectory() as folder:
            command = [sys.executable, "-m", "pipeline.app.cli", "train", str(config), "--json",
                       "--set", f'data.split="leave_out:{speaker}"', "--out", str(Path(folder) / "model.npz")]
            if epochs:
                command += ["--set", f"train.epochs={epochs}"]
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"leave_out:{speaker}: training failed (exit {done.returncode}): {last}")
        metrics = json.loads(done.stdout.strip().splitlines()[-1])
        return {"test_accuracy": metrics["test_accuracy"], "loihi_test_accuracy": metrics["loihi_test_accuracy"],
                "train_accuracy": metrics["train_accuracy"], "train_seconds": metrics["train_seconds"]}

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        per = dict(zip(speakers, pool.map(train, speakers)))
    return {"config": str(config), "epochs": epochs or "config", "per_speaker": per,
            "mean_test_accuracy": float(np.mean([r["test_accuracy"] for r in per.values()])),
            "mean_loihi_test_accuracy": float(np.mean([r["loihi_test_accuracy"] for r in per.values()])),
            "seconds": round(time.perf_counter() - started, 1), "goal": 0.9}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="trained FSDD model (.npz)")
    parser.add_argument("--data", default=None, help="FSDD folder (default: $SPIKELOOP_DATA/audio/fsdd)")
    parser.add_argument("--clips", type=int, default=100, help="test clips timed for speed")
    parser.add_argument("--gap-us", type=int, default=None,
                        help=f"command_map word gap (µs; default: {VOICE_DRIVE.name}'s [decoder] gap_us)")
    parser.add_argument("--no-anchor", action="store_true", help="skip the MFCC anchor")
    parser.add_argument("--anchor-only", action="store_true", help="only the MFCC anchor (no model needed)")
    parser.add_argument("--loso", action="store_true",
                        help="train the 5 leave-one-speaker-out SNNs and print their mean (with the MFCC anchor)")
    parser.add_argument("--config", default=str(ROOT / "launch" / "train_fsdd.toml"), help="--loso: training config")
    parser.add_argument("--epochs", type=int, default=0, help="--loso: epochs per training (0: the config's)")
    parser.add_argument("--jobs", type=int, default=1, help="--loso: trainings at a time")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.gap_us is None:
        with open(VOICE_DRIVE, "rb") as f:
            args.gap_us = int(tomllib.load(f)["decoder"]["gap_us"])
    if args.loso:
        return main_loso(args)
    numba.set_num_threads(1)  # one core, as the issue measures (an environment variable would leak into importers)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    data = Path(args.data) if args.data else shared_data_dir() / "audio" / "fsdd"
    labelled = open_labelled(data)
    labels = np.array(labelled.labels)
    speakers = np.array(labelled.speakers())
    indices = np.array([int(p.stem.rsplit("_", 1)[1]) for p in labelled.paths])
    wavs = [np.concatenate(list(WavReader(p, strict=True).blocks())).astype(np.float64) for p in labelled.paths]
    results: dict = {}
    if not args.anchor_only:
        results.update(measure_model(args, wavs, labels, indices))
    if not args.no_anchor:
        started = time.perf_counter()
        results["anchor_mfcc"] = anchor(wavs, labels, speakers, indices)
        results["anchor_mfcc"]["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(results))
        return 0
    if "speed" in results:
        s, a = results["speed"], results["accuracy"]
        print(f"model {args.model}: {results['test_clips']} official test clips")
        print(f"speed (one core, {s['clips']} clips, {s['audio_s']} s of audio): cochlea alone "
              f"{s['cochlea_x_realtime_median']}x real time, cochlea + network + decoder "
              f"{s['cochlea_network_x_realtime_median']}x (median per clip; overall "
              f"{s['cochlea_network_x_realtime_overall']}x; by CPU time {s['cochlea_network_x_realtime_cpu_median']}x, "
              f"overall {s['cochlea_network_x_realtime_cpu_overall']}x); goal >= 20x")
        print(f"accuracy: count readout {a['count_readout']:.1%}, command_map decision "
              f"{a['command_map_decision']:.1%} (last decision of a word {a['command_map_last_decision']:.1%}; "
              f"{a['undecided']} undecided, {a['split_words']} split); decision latency after the word's "
              f"end: median {a['decision_latency_ms_median']} ms, p95 {a['decision_latency_ms_p95']} ms, max "
              f"{a['decision_latency_ms_max']} ms, {a['decided_within_100ms']:.1%} within 100 ms "
              f"(gap {args.gap_us} µs; cochlea ring-down after the clip: median {a['ringdown_ms_median']} ms, "
              f"max {a['ringdown_ms_max']} ms)")
    if "anchor_mfcc" in results:
        for name in ("logistic", "mlp"):
            r = results["anchor_mfcc"][name]
            per = ", ".join(f"{k} {v:.1%}" for k, v in r["leave_one_speaker_out"].items())
            print(f"anchor MFCC + {name}: official {r['official']:.1%}, leave-one-speaker-out mean "
                  f"{r['leave_one_speaker_out_mean']:.1%} ({per}); {results['anchor_mfcc']['seconds']} s")
    return 0


def main_loso(args) -> int:
    """--loso: the five leave-one-speaker-out trainings (not with --anchor-only), then the MFCC anchors
    (plain and speaker-normalised; not with --no-anchor) on the same splits."""
    data = Path(args.data) if args.data else shared_data_dir() / "audio" / "fsdd"
    labelled = open_labelled(data)
    speakers = np.array(labelled.speakers())
    results = {"load_average_start": os.getloadavg()[0]}
    if not args.anchor_only:
        results["snn"] = loso(Path(args.config), sorted(set(speakers)), args.epochs, args.jobs)
    if not args.no_anchor:
        labels = np.array(labelled.labels)
        indices = np.array([int(p.stem.rsplit("_", 1)[1]) for p in labelled.paths])
        wavs = [np.concatenate(list(WavReader(p, strict=True).blocks())).astype(np.float64) for p in labelled.paths]
        results["anchor_mfcc"] = anchor(wavs, labels, speakers, indices)
        results["anchor_normalised"] = strong_anchor(wavs, labels, speakers)
        results["anchor_speaker_adapted"] = speaker_anchor(wavs, labels, speakers)
    results["load_average_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(results))
        return 0
    if "snn" in results:
        snn = results["snn"]
        per = ", ".join(f"{k} {v['test_accuracy']:.1%}/{v['loihi_test_accuracy']:.1%} (train {v['train_accuracy']:.0%})"
                        for k, v in snn["per_speaker"].items())
        print(f"SNN leave-one-speaker-out ({snn['config']}, epochs {snn['epochs']}): mean "
              f"{snn['mean_test_accuracy']:.1%} trainer, {snn['mean_loihi_test_accuracy']:.1%} loihi runtime "
              f"(trainer/loihi per speaker: {per}); "
              f"{snn['seconds']} s; goal >= 90 %")
    for group, names in (("anchor_mfcc", ("logistic", "mlp")),
                         ("anchor_normalised",
                          ("cmvn_delta_warp_logistic", "cmvn_delta_warp_mlp", "cmn_delta_warp_logistic")),
                         ("anchor_speaker_adapted", ("speaker_cmvn_mlp", "speaker_cmvn_mlp5_self_training"))):
        for name in names if group in results else ():
            r = results[group][name]
            per = ", ".join(f"{k} {v:.1%}" for k, v in r["leave_one_speaker_out"].items())
            print(f"anchor MFCC {name}: leave-one-speaker-out mean {r['leave_one_speaker_out_mean']:.1%} ({per})")
    print(f"load average {results['load_average_start']:.1f} at the start, "
          f"{results['load_average_end']:.1f} at the end")
    return 0


def measure_model(args, wavs, labels, indices) -> dict:
    """Parts 1 and 2 of the module docstring: speed on one core, streamed accuracy and decision latency."""
    network = Network.load(args.model)
    spec = network.input_spec
    config = cochlea_config(spec)
    runtime = build(network, "loihi")
    runtime.warmup()
    test = np.flatnonzero(indices < 5)
    results: dict = {"model": str(args.model), "test_clips": int(len(test)), "outputs": network.n_outputs}
    votes = network.readout.votes if network.readout.kind == "vote" else None  # an ensemble's outputs -> classes

    # 1. speed, one core
    Cochlea(8000.0, config).process(np.zeros(80))
    cochlea_x, total_x, total_cpu_x, audio_s, cochlea_s, total_s, total_cpu_s = [], [], [], 0.0, 0.0, 0.0, 0.0
    block = int(8000 * BLOCK_MS / 1000)
    for i in test[:args.clips]:
        w = wavs[i]
        gain = rms_gain(w, config.target_rms)
        duration = len(w) / 8000
        cochlea = Cochlea(8000.0, config, input_gain=gain)
        started = time.perf_counter()
        for start in range(0, len(w), block):
            cochlea.process(w[start:start + block])
        c_s = time.perf_counter() - started
        runtime.reset()
        decoder = CommandMap(network.n_outputs, {"0": [0.0]}, gap_us=args.gap_us, votes=votes)
        decoder.attach_runtime(runtime)
        started, cpu_started = time.perf_counter(), time.thread_time()
        stream(network, runtime, decoder, w, gain, config)
        t_s = time.perf_counter() - started
        cpu_s = time.thread_time() - cpu_started
        total_cpu_x.append(duration / cpu_s)
        total_cpu_s += cpu_s
        cochlea_x.append(duration / c_s)
        total_x.append(duration / t_s)
        audio_s += duration
        cochlea_s += c_s
        total_s += t_s
    results["speed"] = {"clips": len(cochlea_x), "audio_s": round(audio_s, 2),
                        "cochlea_x_realtime_median": round(statistics.median(cochlea_x), 1),
                        "cochlea_network_x_realtime_median": round(statistics.median(total_x), 1),
                        "cochlea_network_x_realtime_overall": round(audio_s / total_s, 1),
                        "cochlea_network_x_realtime_cpu_median": round(statistics.median(total_cpu_x), 1),
                        "cochlea_network_x_realtime_cpu_overall": round(audio_s / total_cpu_s, 1),
                        "goal_x_realtime": 20}

    # 2. accuracy and decision latency, streamed
    correct_count = correct_decision = correct_last = 0
    latencies, ringdowns = [], []
    undecided = split = 0
    for i in test:
        w = wavs[i]
        runtime.reset()
        decoder = CommandMap(network.n_outputs, {"0": [0.0]}, gap_us=args.gap_us, votes=votes)
        decoder.attach_runtime(runtime)
        counts, _, last_sound_us = stream(network, runtime, decoder, w, rms_gain(w, config.target_rms), config,
                                          TAIL_MS)
        correct_count += int(np.argmax(counts if votes is None else counts @ votes) == labels[i])
        end_us = len(w) * 1e6 / 8000
        ringdowns.append((last_sound_us - end_us) / 1000)
        if decoder.decisions:
            correct_decision += int(decoder.decisions[0][1] == labels[i])
            t_us, decided = decoder.decisions[-1]
            correct_last += int(decided == labels[i])
            split += len(decoder.decisions) > 1
            latencies.append((t_us - end_us) / 1000)
        else:
            undecided += 1
    latencies = np.array(latencies)
    results["accuracy"] = {"count_readout": correct_count / len(test),
                           "command_map_decision": correct_decision / len(test),
                           "command_map_last_decision": correct_last / len(test),
                           "undecided": undecided, "split_words": split, "gap_us": args.gap_us,
                           "ringdown_ms_median": round(float(np.median(ringdowns)), 1),
                           "ringdown_ms_max": round(float(np.max(ringdowns)), 1),
                           "decision_latency_ms_median": round(float(np.median(latencies)), 1),
                           "decision_latency_ms_p95": round(float(np.percentile(latencies, 95)), 1),
                           "decision_latency_ms_max": round(float(latencies.max()), 1),
                           "decided_within_100ms": float(np.mean(latencies <= 100.0)),
                           "decided_before_word_end": int(np.sum(latencies < 0))}
    return results


if __name__ == "__main__":
    sys.exit(main())
