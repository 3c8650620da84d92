"""Method ``bptt``: surrogate-gradient backpropagation through time for CUBA LIF networks.

Config sections (``spikeloop train``; every key below with its default in :data:`SECTIONS`):

* ``[train]`` epochs, batch_size, lr, weight_decay (AdamW, decoupled), lr_schedule ("constant" or
  "cosine"), grad_clip (a batch's gradient whose global L2 norm over every parameter exceeds this is scaled
  down to it before the Adam step; each epoch's record has the median norm and the clipped batches),
  warmup_steps (the learning rate rises linearly over the first gradient steps, :func:`learning_rate`), mode
  ("float": the float backend's dynamics; "loihi": quantization-aware training whose forward is the loihi
  backend's integer dynamics, so the written network classifies every sample as the trained model does),
  members (K > 1: K networks trained one after the other with seeds seed ... seed + K - 1, written as one
  ensemble, pipeline.snn.ensemble: their output spikes summed per class).
* ``[data]`` train / test: labelled folders relative to $SPIKELOOP_DATA (or absolute), train_labels /
  test_labels: labels files (``sample class`` lines) relative to the same; test is optional. ``split``
  (FSDD names only): "official", "official_validation" (recordings 5-9 as the test set, 10 and up train)
  or "leave_out:SPEAKER" divides the train folder into train and test
  (recordings.labelled.LabelledSet.fsdd_split); test must then be empty.
* ``[input]`` how a recording is presented (pipeline.snn.model.InputSpec): sensor ("dvs": width, height,
  polarity, scale; "cochlea": a WAV through the project's cochlea, channels, cochlea_threshold,
  cochlea_agc_ms, cochlea_agc_strength, cochlea_agc_start: "speaker" starts each clip's AGC at its speaker's
  mean level over the set's clips of that speaker, FSDD names), bin_us, encoding, duration_us, tail_steps.
* ``[network]`` hidden (sizes of hidden layers), recurrent, tau_syn_ms, tau_mem_ms, vth (loihi threshold
  mantissa), max_weight_hidden / max_weight_output (largest |weight| in thresholds; fixes weight_exp),
  init_gain; layers: a list of conv / sumpool / avgpool / dense (with per-synapse delays) hidden layers
  that replaces ``hidden`` (pipeline.train.layer_stack; not with recurrent).
* ``[loss]`` kind ("count_ce": cross-entropy of output spike counts; "max_membrane_ce": cross-entropy of
  the output's maximum membrane voltage; "rate": squared error of output rates against rate_true for the
  labelled class and rate_false for the others), logit_scale (count_ce), membrane_scale (max_membrane_ce,
  :data:`MEMBRANE_SCALE`), surrogate ("fast_sigmoid", "arctan",
  "triangle"), slope.
* ``[augment]`` jitter_px (random shift of every event of a sample, pixels), channel_shift (random shift of
  every input along the last axis, x: for the cochlea its frequency channels, ~0.35 ERB each, a cheap
  vocal-tract-length perturbation), warp (cochlea only: every spike's channel moved to where its centre
  frequency times a random factor in [1 - warp, 1 + warp] lies on the ERB channel axis, rounded up or down
  at random in proportion to the fraction, off the bank dropped: a fractional, multiplicative
  vocal-tract-length perturbation, devices.audio.warped_channels), time_scale (sample time stretched by a
  factor in [1 - s, 1 + s]), drop (probability an event is dropped), level_db (cochlea: every training clip
  is presented at its normalised level and ``level_db`` dB below and above it, and each sample of a batch
  takes one of the three at random: the network learns words played quieter or louder than the training
  level); training only.

The written network: populations hidden0.., output (probed v), projections fc0.. (+ rec0..; with
``layers``: conv0.. / pool0.. Conv2D and delayed fc0.., pipeline.train.layer_stack), with
input_spec and readout (count, or max_membrane for that loss); with members = K, member k's as m{k}_hidden0..,
m{k}_fc0.., the outputs one population of K x classes neurons and a vote readout (metrics add members,
member_train_accuracy and member_test_accuracy). Metrics: train/test accuracy of the
model, and of the written network run on the runtime (pipeline.snn.build) on the test set: "loihi" for
loihi mode; for float mode the float network on the "float" backend and, converted with
pipeline.snn.convert.to_loihi, on "loihi" (float-trained-then-quantized).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from devices.audio import CochleaConfig, warped_channels
from pipeline.core.schema import Key, toml_value
from pipeline.snn.ensemble import ensemble
from pipeline.snn.model import AGC_STARTS, InputSpec, Readout
from pipeline.train import kernels as K
from pipeline.train import layer_stack
from pipeline.train.lif_stack import LifStack, backward, compile_network, forward
from pipeline.train.present import Presentation, present_file, speaker_levels, transform
from pipeline.train.run import Fitted, TrainRun
from recordings.labelled import LabelledSet, LabelsError, open_labelled

#: max_membrane_ce's default logit scale. The readout is the output's largest membrane voltage over a sample
#: as the runtime probes it: after reset, so below one threshold, and at least the 0 it starts from. Logits
#: scale * v/threshold therefore differ by less than ``scale``; count_ce's 0.5 caps the labelled class's
#: softmax probability at e^0.5 / (e^0.5 + 9) = 0.15 with ten classes, and training stalls (README, Training).
MEMBRANE_SCALE = 8.0

SECTIONS: dict[str, dict[str, Key]] = {
    "train": {
        "epochs": Key("int", 10, low=1, high=100_000, help="passes over the training set"),
        "batch_size": Key("int", 32, low=1, high=4096, help="samples per gradient step"),
        "lr": Key("number", 2e-3, low=0, low_open=True, high=10, help="Adam learning rate"),
        "weight_decay": Key("number", 0.0, low=0, high=1, help="decoupled weight decay per step (AdamW)"),
        "lr_schedule": Key("str", "cosine", choices=("constant", "cosine"), help="learning-rate schedule"),
        "grad_clip": Key("number", 0.0, low=0, help="largest global L2 norm of a batch's gradient: a larger one is "
                                                   "scaled down to it (0: no clipping)"),
        "warmup_steps": Key("int", 0, low=0, high=10_000_000, help="gradient steps over which the learning rate "
                            "rises linearly from lr / warmup_steps to the schedule's value (0: none)"),
        "mode": Key("str", "loihi", choices=("float", "loihi"), help="forward dynamics"),
        "limit": Key("int", 0, low=0, help="use only the first N training samples (0: all)"),
        "members": Key("int", 1, low=1, high=32, help="networks trained (seeds seed, seed + 1, ...) and written as "
                                                      "one ensemble: their output spikes summed per class"),
        "member_min_accuracy": Key("number", 0.0, low=0, high=1, help="a network whose last epoch's training accuracy "
                                   "is below this is set aside and the next seed trained (0: keep every one)"),
    },
    "data": {
        "train": Key("str", help="folder of training recordings (relative to $SPIKELOOP_DATA)"),
        "train_labels": Key("str", "", help="labels file (relative to $SPIKELOOP_DATA); empty: FSDD names"),
        "test": Key("str", "", help="folder of test recordings (empty: none)"),
        "test_labels": Key("str", "", help="labels file of the test folder"),
        "split": Key("str", "", help="FSDD: 'official', 'official_validation' or 'leave_out:SPEAKER' splits the "
                                     "train folder (empty: the test folder is the test set)"),
    },
    "input": {
        "sensor": Key("str", "dvs", choices=("dvs", "cochlea"), help="DVS events, or a WAV through the cochlea"),
        "channels": Key("int", 64, low=1, high=1024, help="cochlea: filterbank channels (network inputs)"),
        "cochlea_threshold": Key("number", InputSpec.cochlea_threshold, low=0, low_open=True,
                                 help="cochlea: LIF spike threshold (lower: more spikes)"),
        "cochlea_agc_ms": Key("number", 0.0, low=0, high=60_000, help="cochlea: AGC time constant (ms; 0: no AGC; "
                                                                    "devices.audio)"),
        "cochlea_agc_strength": Key("number", 1.0, low=0, high=2, help="cochlea: AGC exponent (1: a channel's "
                                                                       "steady level divided out)"),
        "cochlea_agc_start": Key("str", "zero", choices=AGC_STARTS,
                                 help="cochlea: the AGC's level at each clip's start: zero, or the speaker's "
                                      "(their clips' mean level: adapted to the voice, from unlabelled audio)"),
        "width": Key("int", 34, low=1, high=4096, help="sensor width (px)"),
        "height": Key("int", 34, low=1, high=4096, help="sensor height (px)"),
        "bin_us": Key("int", 1000, low=1, high=10_000_000, help="step length (µs)"),
        "encoding": Key("str", "spikes", choices=("spikes", "counts"), help="binary spikes or event counts"),
        "polarity": Key("str", "split", choices=("split", "merge"), help="one channel per polarity or one"),
        "scale": Key("int", 1, low=1, high=1024, help="pool x and y by this factor"),
        "duration_us": Key("int", 300_000, low=0, help="present this much of each recording (µs; 0: all)"),
        "tail_steps": Key("int", 2, low=0, high=100_000, help="empty steps after the recording"),
    },
    "network": {
        "hidden": Key("int_list", [256], low=1, high=100_000, help="hidden layer sizes"),
        "recurrent": Key("bool", False, help="hidden layers get a recurrent projection"),
        "tau_syn_ms": Key("number", 5.0, low=0, low_open=True, help="synaptic time constant (ms)"),
        "tau_mem_ms": Key("number", 20.0, low=0, low_open=True, help="membrane time constant (ms)"),
        "vth": Key("int", 4096, low=1, high=2**17 - 1, help="loihi threshold mantissa (threshold vth * 64)"),
        "max_weight_hidden": Key("number", 0.0625, low=0, low_open=True, help="largest |weight| into hidden layers "
                                                                               "(thresholds)"),
        "max_weight_output": Key("number", 0.25, low=0, low_open=True, help="largest |weight| into the output"),
        "init_gain": Key("number", 1.0, low=0, low_open=True, help="scale of the initial weights"),
        "layers": Key("table_list", [], check=layer_stack.check_layers,
                      help="hidden layers [{type=conv|sumpool|avgpool|dense, ...}] (replaces hidden)"),
    },
    "loss": {
        "kind": Key("str", "count_ce", choices=("count_ce", "max_membrane_ce", "rate"), help="loss"),
        "logit_scale": Key("number", 0.5, low=0, low_open=True, help="count_ce: logits = scale * spike count"),
        "membrane_scale": Key("number", MEMBRANE_SCALE, low=0, low_open=True,
                              help="max_membrane_ce: logits = scale * maximum v/threshold (which lies in [0, 1))"),
        "rate_true": Key("number", 0.1, low=0, high=1, help="target spikes per step of the labelled output"),
        "rate_false": Key("number", 0.0, low=0, high=1, help="target spikes per step of the other outputs"),
        "surrogate": Key("str", "fast_sigmoid", choices=tuple(K.SURROGATES), help="surrogate derivative"),
        "slope": Key("number", 5.0, low=0, low_open=True, help="surrogate slope (per threshold)"),
    },
    "augment": {
        "jitter_px": Key("int", 0, low=0, high=64, help="random shift of a sample's events (px)"),
        "channel_shift": Key("int", 0, low=0, high=64, help="random shift of a sample's inputs along x "
                                                             "(cochlea: frequency channels)"),
        "warp": Key("number", 0.0, low=0, high=0.5, help="cochlea: random frequency warp 1 +- this (fractional "
                                                           "channel positions on the ERB axis)"),
        "time_scale": Key("number", 0.0, low=0, high=0.9, help="random time stretch 1 +- this"),
        "drop": Key("number", 0.0, low=0, high=0.9, help="probability an event is dropped"),
        "level_db": Key("number", 0.0, low=0, high=40, help="cochlea: each clip also presented this many dB "
                                                             "quieter and louder, one of the 3 levels per sample"),
    },
}
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


# ---------------------------------------------------------------------------------------------- data
def _data_path(run: TrainRun, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else run.data_dir / path


def input_spec(config: dict) -> tuple[InputSpec, tuple[int, int, int]]:
    c = config["input"]
    if c["sensor"] == "cochlea":
        spec = InputSpec(sensor="cochlea", bin_us=c["bin_us"], encoding=c["encoding"], duration_us=c["duration_us"],
                         tail_steps=c["tail_steps"], channels=c["channels"], cochlea_threshold=c["cochlea_threshold"],
                         cochlea_agc_ms=c["cochlea_agc_ms"], cochlea_agc_strength=c["cochlea_agc_strength"],
                         cochlea_agc_start=c["cochlea_agc_start"])
        return spec, (1, 1, c["channels"])
    spec = InputSpec(sensor="dvs", bin_us=c["bin_us"], encoding=c["encoding"], polarity=c["polarity"],
                     duration_us=c["duration_us"], tail_steps=c["tail_steps"], scale=c["scale"])
    shape = (2 if c["polarity"] == "split" else 1, -(-c["height"] // c["scale"]), -(-c["width"] // c["scale"]))
    return spec, shape


def load_set(folder: Path | LabelledSet, labels: Path | None, spec: InputSpec, shape, classes=None, limit: int = 0,
             gain_db: float = 0.0):
    """(presentations, labels int64, classes) of a labelled folder (or an already opened LabelledSet); WAVs
    through the cochlea ``gain_db`` dB above their normalised level."""
    labelled = folder if isinstance(folder, LabelledSet) else open_labelled(folder, labels, classes)
    if limit:
        labelled = labelled.subset(range(min(limit, len(labelled))))
    n_inputs = int(np.prod(shape))
    starts = [None] * len(labelled)
    if spec.cochlea_agc_start == "speaker":
        try:
            speakers = labelled.speakers()
        except LabelsError as error:
            raise ValueError(f"[input] cochlea_agc_start = \"speaker\" needs each file's speaker: {error}") from None
        levels = speaker_levels(labelled.paths, speakers, spec)
        starts = [levels[s] for s in speakers]
    presentations = [present_file(p, spec, shape, n_inputs, gain_db, start) for p, start in zip(labelled.paths, starts)]
    return presentations, np.array(labelled.labels, np.int64), labelled.classes


def augment(p: Presentation, rng: np.random.Generator, shape, aug: dict, binary: bool) -> Presentation:
    """A randomly shifted / stretched / thinned copy of one presentation (same number of steps): every event
    dropped with probability ``drop``, the sample shifted by up to ``jitter_px`` pixels and by up to
    ``channel_shift`` more along x, its time stretched
    by a factor in [1 - time_scale, 1 + time_scale] (pipeline.train.present.transform)."""
    keep = rng.random(p.index.size) >= aug["drop"] if aug["drop"] > 0 else np.ones(p.index.size, bool)
    dx = dy = 0
    if aug["jitter_px"] > 0:
        j = aug["jitter_px"]
        dx, dy = (int(d) for d in rng.integers(-j, j + 1, 2))
    if aug["channel_shift"] > 0:  # along x only: for the cochlea (1, 1, channels), its frequency channels
        j = aug["channel_shift"]
        dx += int(rng.integers(-j, j + 1))
    scale = rng.uniform(1 - aug["time_scale"], 1 + aug["time_scale"]) if aug["time_scale"] > 0 else 1.0
    index = p.index
    if aug.get("warp", 0) > 0:
        index, kept = warp_channels(index, rng, int(shape[-1]), aug["warp"])
        keep &= kept
    return Presentation(*transform(p.indptr, index, p.count, tuple(int(n) for n in shape), keep, dx, dy,
                                   float(scale), binary))


def warp_channels(index: np.ndarray, rng: np.random.Generator, n_channels: int, warp: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Cochlea inputs (channels, (nnz,) int32) moved by one random frequency warp: a factor drawn from
    [1 - warp, 1 + warp], each event's channel replaced by where its centre frequency times the factor lies
    (devices.audio.warped_channels, the default cochlea's 100-3600 Hz bank), rounded down or up at random
    with the fraction as the probability of up. Returns (new index int32, kept: False where off the bank)."""
    defaults = CochleaConfig()
    factor = rng.uniform(1 - warp, 1 + warp)
    position = warped_channels(defaults.f_lo_hz, defaults.f_hi_hz, n_channels, factor)[index]
    moved = np.floor(position + rng.random(index.size)).astype(np.int64)
    kept = (moved >= 0) & (moved < n_channels)
    return np.where(kept, moved, 0).astype(np.int32), kept


def batch_events(presentations: list[Presentation]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Presentations -> (indptr (B, T + 1) global, index int32, count float32, T = the longest)."""
    n_steps = max(p.n_steps for p in presentations)
    indptr = np.empty((len(presentations), n_steps + 1), np.int64)
    offset = 0
    for b, p in enumerate(presentations):
        indptr[b, :p.n_steps + 1] = p.indptr + offset
        indptr[b, p.n_steps + 1:] = p.indptr[-1] + offset
        offset += int(p.indptr[-1])
    index = np.concatenate([p.index for p in presentations]).astype(np.int32)
    count = np.concatenate([p.count for p in presentations]).astype(np.float32)
    return indptr, index, count, n_steps


# ---------------------------------------------------------------------------------------------- readout
def classify(counts: np.ndarray, vmax: np.ndarray, kind: str) -> np.ndarray:
    """Class per sample: "count" most output spikes, ties by the higher membrane maximum, then the lower
    index; "max_membrane": highest membrane maximum. counts, vmax (B, n_out)."""
    if kind == "max_membrane":
        return np.argmax(vmax, axis=1)
    order = np.lexsort((-np.arange(counts.shape[1])[None, :].repeat(len(counts), 0), vmax, counts), axis=1)
    return order[:, -1]


def step_mask(lengths, n_steps: int) -> np.ndarray:
    """(B, T, 1) bool: step t belongs to sample b (t < lengths[b]); a batch is padded to its longest sample."""
    return (np.arange(n_steps)[None, :] < np.asarray(lengths)[:, None])[:, :, None]


def output_summary(trace, lengths=None) -> tuple[np.ndarray, np.ndarray]:
    """(spike counts, maximum post-reset membrane v/threshold) per (sample, output), over each sample's own
    ``lengths[b]`` steps (default: every step), as the runtime counts when it runs that sample alone."""
    spiked = trace.spikes.astype(bool)
    v_post = np.where(spiked, 0.0, trace.vnorm)
    if lengths is not None:
        mask = step_mask(lengths, spiked.shape[1])
        spiked = spiked & mask
        v_post = np.where(mask, v_post, -np.inf)
    return spiked.sum(axis=1).astype(np.float64), v_post.max(axis=1)


def loss_and_grad(trace, labels: np.ndarray, loss: dict, n_steps: int, lengths=None):
    """(mean loss, predictions, dL/dspikes (B, T, n), dL/dv' or None) of the output layer. ``lengths``: each
    sample's steps (default ``n_steps``); steps past a sample's end (batch padding) neither count nor get
    gradient."""
    n_batch, _, n_out = trace.spikes.shape
    lengths = np.full(n_batch, n_steps) if lengths is None else np.asarray(lengths)
    mask = step_mask(lengths, trace.spikes.shape[1])
    counts, vmax = output_summary(trace, lengths)
    onehot = np.eye(n_out)[labels]
    kind = loss["kind"]
    grad_v = None
    if kind == "rate":
        target = np.where(onehot > 0, loss["rate_true"], loss["rate_false"])
        steps = np.maximum(lengths, 1)[:, None]
        err = counts / steps - target
        value = float(np.mean(np.sum(err * err, axis=1)))
        g = 2 * err / steps / n_batch
        grad_s = np.where(mask, g[:, None, :], 0.0)
        predicted = classify(counts, vmax, "count")
    else:
        scale = loss["logit_scale"] if kind == "count_ce" else loss["membrane_scale"]
        logits = scale * (counts if kind == "count_ce" else vmax)
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        value = float(-np.mean(np.log(p[np.arange(n_batch), labels] + 1e-12)))
        g = scale * (p - onehot) / n_batch
        if kind == "count_ce":
            grad_s = np.where(mask, g[:, None, :], 0.0)
            predicted = classify(counts, vmax, "count")
        else:
            grad_s = np.zeros(trace.spikes.shape, np.float32)
            v_post = np.where(trace.spikes.astype(bool) | ~mask, -np.inf, trace.vnorm)
            at = np.argmax(v_post, axis=1)  # (B, n_out)
            grad_v = np.zeros(trace.spikes.shape, np.float32)
            b_idx, k_idx = np.meshgrid(np.arange(n_batch), np.arange(n_out), indexing="ij")
            grad_v[b_idx, at, k_idx] = g
            predicted = classify(counts, vmax, "max_membrane")
    return value, predicted, np.ascontiguousarray(grad_s, np.float32), grad_v


def output_counts(layers, presentations, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(spike counts, maximum post-reset membrane v/threshold), each (n, n_outputs), of every presentation
    through compiled layers (pipeline.train.lif_stack.compile_network)."""
    counts, vmax = [], []
    for start in range(0, len(presentations), batch_size):
        chunk = presentations[start:start + batch_size]
        indptr, index, count, n_steps = batch_events(chunk)
        traces = passes(layers)[0](layers, indptr, index, count, n_steps)
        c, v = output_summary(traces[-1], [p.n_steps for p in chunk])
        counts.append(c)
        vmax.append(v)
    if not counts:
        return np.zeros((0, 0)), np.zeros((0, 0))
    return np.concatenate(counts), np.concatenate(vmax)


def predict(layers, presentations, readout_kind: str, batch_size: int = 64) -> np.ndarray:
    """Class of each presentation through compiled layers (pipeline.train.lif_stack.compile_network)."""
    if not presentations:
        return np.zeros(0, np.int64)
    return classify(*output_counts(layers, presentations, batch_size), readout_kind)


def runtime_predict(network, presentations, backend: str) -> np.ndarray:
    """Class of each presentation run step by step on the runtime (pipeline.snn.build) with the network's
    readout (count with the membrane tie-break, max_membrane, or vote: the most votes, ties to the lower
    class, as pipeline.decoders.classifier decides)."""
    from pipeline.snn import build

    runtime = build(network, backend)
    kind = network.readout.kind
    out = np.empty(len(presentations), np.int64)
    n_out = network.n_outputs
    for k, p in enumerate(presentations):
        runtime.reset()
        counts = np.zeros(n_out)
        vmax = np.full(n_out, -np.inf)
        graded = network.input_spec.graded
        for t in range(p.n_steps):
            lo, hi = p.indptr[t], p.indptr[t + 1]
            counts += runtime.step(p.index[lo:hi], p.count[lo:hi] if graded else None)
            vmax = np.maximum(vmax, runtime.v(network.output_name))
        out[k] = np.argmax(counts @ network.readout.votes) if kind == "vote" else classify(counts[None], vmax[None],
                                                                                             kind)[0]
    return out


def passes(layers):
    """(forward, backward) for compiled layers: pipeline.train.layer_stack's or pipeline.train.lif_stack's."""
    return (layer_stack.forward, layer_stack.backward) if layer_stack.is_stack(layers) else (forward, backward)


def compile_any(network):
    """Kernel arguments of a trained network file: layer_stack for Conv2D or delays, else lif_stack."""
    return layer_stack.compile_layers(network) if layer_stack.is_stack_network(network) else compile_network(network)


# ---------------------------------------------------------------------------------------------- fit
def _state(model: LifStack, adam: dict, step: int, epoch: int, rng, history) -> dict[str, np.ndarray]:
    state = {f"param_{k}": v for k, v in model.params.items()}
    state.update({f"adam_m_{k}": v for k, v in adam["m"].items()})
    state.update({f"adam_v_{k}": v for k, v in adam["v"].items()})
    state["adam_step"] = np.array(step)
    state["epoch"] = np.array(epoch)
    state["rng"] = np.array(json.dumps(rng.bit_generator.state))
    state["history"] = np.array(json.dumps(history))
    return state


def _restore_group(run: TrainRun, state: dict, group: dict[str, np.ndarray], prefix: str) -> None:
    """Copy ``state[prefix + name]`` into each array of ``group`` in place (resume errors name the key)."""
    for name, value in group.items():
        key = prefix + name
        if key not in state:
            raise run.resume_error(key, "missing (a checkpoint of another network?)")
        if state[key].shape != value.shape:
            raise run.resume_error(key, f"has shape {state[key].shape}, this config's network needs {value.shape}")
        if state[key].dtype.kind not in "fiu" or not np.all(np.isfinite(state[key])):
            raise run.resume_error(key, f"must hold finite numbers, got dtype {state[key].dtype}"
                                        + (" with non-finite values" if state[key].dtype.kind == "f" else ""))
        value[...] = state[key]


def _resume_int(run: TrainRun, state: dict, key: str, low: int, high: int, default: int | None = None) -> int:
    """The integer ``state[key]`` (a 0-d integer array in [low, high]; ``default`` when missing, if given)."""
    if key not in state:
        if default is None:
            raise run.resume_error(key, "missing")
        return default
    value = state[key]
    if value.shape != () or value.dtype.kind not in "iu" or not low <= int(value) <= high:
        raise run.resume_error(key, f"must be an integer in [{low}, {high}], got {toml_value(value.tolist())}")
    return int(value)


def _resume_json(run: TrainRun, state: dict, key: str, kind: type):
    """``state[key]``: the JSON text of a ``kind`` (dict or list)."""
    if key not in state:
        raise run.resume_error(key, "missing")
    try:
        value = json.loads(str(state[key]))
    except json.JSONDecodeError as error:
        raise run.resume_error(key, f"not JSON ({error})") from None
    if not isinstance(value, kind):
        raise run.resume_error(key, f"expected a JSON {'object' if kind is dict else 'array'}")
    return value


def _restore_params(run: TrainRun, state: dict, model, prefix: str) -> None:
    """A finished ensemble member's weights from a checkpoint (keys ``done{k}_param_*``)."""
    _restore_group(run, state, model.params, prefix)


def _restore(run: TrainRun, state: dict, model: LifStack, adam: dict):
    for group, prefix in ((model.params, "param_"), (adam["m"], "adam_m_"), (adam["v"], "adam_v_")):
        _restore_group(run, state, group, prefix)
    step = _resume_int(run, state, "adam_step", 0, 2**62)
    epoch = _resume_int(run, state, "epoch", 0, SECTIONS["train"]["epochs"].high)
    rng = np.random.default_rng()
    try:
        rng.bit_generator.state = _resume_json(run, state, "rng", dict)
    except (ValueError, TypeError, KeyError) as error:
        raise run.resume_error("rng", f"not a PCG64 random state ({error})") from None
    history = _resume_json(run, state, "history", list)
    if not all(isinstance(r, dict) and isinstance(r.get("accuracy"), (int, float)) for r in history):
        raise run.resume_error("history", "expected a list of epoch records with an accuracy")
    return step, epoch, rng, history


@dataclass(frozen=True)
class _Data:
    """A run's presentations: training set (at each level: normalised, quieter, louder), test set, classes."""

    spec: InputSpec
    shape: tuple[int, int, int]
    levels: list[list[Presentation]]
    train_y: np.ndarray
    classes: tuple[str, ...]
    test_p: list[Presentation]
    test_y: np.ndarray


def _load_data(config: dict, run: TrainRun) -> _Data:
    tc, ac, dc = config["train"], config["augment"], config["data"]
    spec, shape = input_spec(config)
    if ac["level_db"] > 0 and spec.sensor != "cochlea":
        raise ValueError("[augment] level_db: only for cochlea input (a WAV's level), the sensor is "
                         f"{spec.sensor!r}")
    if ac["warp"] and spec.sensor != "cochlea":
        raise ValueError("[augment] warp: moves cochlea channels; expected 0 with [input] sensor = "
                         f"{spec.sensor!r}")
    labels_path = _data_path(run, dc["train_labels"]) if dc["train_labels"] else None
    train_set = _data_path(run, dc["train"])
    test_p, test_y = [], np.zeros(0, np.int64)
    if dc["split"]:
        if dc["test"]:
            raise ValueError("[data] test: must be empty with split (the split makes the test set)")
        try:
            train_set, test_set = open_labelled(train_set, labels_path).fsdd_split(dc["split"])
        except LabelsError as error:
            raise ValueError(f"[data] split: {error}") from None
    train_p, train_y, classes = load_set(train_set, labels_path, spec, shape, limit=tc["limit"])
    levels = [train_p]
    if ac["level_db"] > 0:
        levels += [load_set(train_set, labels_path, spec, shape, limit=tc["limit"], gain_db=g)[0]
                   for g in (-ac["level_db"], ac["level_db"])]
    if dc["split"]:
        test_p, test_y, _ = load_set(test_set, None, spec, shape)
    elif dc["test"]:
        test_labels = _data_path(run, dc["test_labels"]) if dc["test_labels"] else None
        test_p, test_y, _ = load_set(_data_path(run, dc["test"]), test_labels, spec, shape, classes)
    return _Data(spec, shape, levels, train_y, classes, test_p, test_y)


def _new_model(config: dict, data: _Data, rng: np.random.Generator):
    """A freshly initialised LifStack (or LayerStack with [network] layers) for the data's input and classes."""
    tc, net = config["train"], config["network"]
    spec, shape = data.spec, data.shape
    n_in = int(np.prod(shape))
    active = np.mean([p.index.size / max(p.n_steps, 1) / n_in for p in data.levels[0][:100]])
    if net["layers"]:
        if net["recurrent"]:
            raise ValueError("[network] recurrent: not available with layers (use hidden for recurrent layers)")
        stack = layer_stack.LayerStack(net["layers"], shape, len(data.classes), tc["mode"], net["tau_syn_ms"],
                                       net["tau_mem_ms"], spec.bin_us / 1000.0, net["vth"],
                                       (net["max_weight_hidden"], net["max_weight_output"]), rng, net["init_gain"],
                                       input_rate=float(active))
        try:  # what the trained stack will be written as (e.g. a conv too large to build), checked before training
            stack.network(shape, spec)
        except ValueError as error:
            raise ValueError(f"[network] layers: {error}") from None
        return stack
    sizes = [n_in, *net["hidden"], len(data.classes)]
    max_weight = [net["max_weight_hidden"]] * len(net["hidden"]) + [net["max_weight_output"]]
    return LifStack(sizes, tc["mode"], net["tau_syn_ms"], net["tau_mem_ms"], spec.bin_us / 1000.0,
                    net["recurrent"], net["vth"], max_weight, rng, net["init_gain"], input_rate=float(active))


def _check_history(run: TrainRun, history: list[dict], kept: list[int], member: int, epoch: int) -> None:
    """A resumed history holds a record of every finished member and ``epoch`` of the member in training
    (records without "member" belong to member 0: a one-network run's)."""
    owners = [r.get("member", 0) for r in history]
    missing = [a for a in kept if a not in owners]
    if missing or owners.count(member) < epoch:
        raise run.resume_error("history", f"holds {owners.count(member)} epoch record(s) of member {member} and none "
                                          f"of {missing}; key 'epoch' is {epoch} and key 'kept' {kept}")


def _resumed_kept(run: TrainRun, resumed: dict | None, first: int) -> list[int]:
    """The seed offsets of the finished members a checkpoint keeps (its key ``kept``; before it existed: every
    one before ``first``, the seed offset in training): distinct, increasing, below ``first``."""
    if resumed is None:
        return []
    if "kept" not in resumed:
        kept = np.arange(first)
    else:
        kept = resumed["kept"]
        if kept.ndim != 1 or (kept.size and kept.dtype.kind not in "iu"):
            raise run.resume_error("kept", f"must be a list of member indices, got {toml_value(kept.tolist())}")
    kept = [int(a) for a in kept]
    if kept != sorted(set(kept)) or any(not 0 <= a < first for a in kept):
        raise run.resume_error("kept", f"is {kept} with key 'member' {first}: expected distinct, increasing seed "
                                       f"offsets below 'member'")
    return kept


def _zero_adam(model) -> dict:
    return {"m": {k: np.zeros_like(v) for k, v in model.params.items()},
            "v": {k: np.zeros_like(v) for k, v in model.params.items()}}


def fit(config: dict, run: TrainRun) -> Fitted:
    """Train ``[train] members`` networks (seeds seed, seed + 1, ...; one member: the network itself) and write
    them as one: pipeline.snn.ensemble (the members side by side, their output spikes summed per class). A
    network whose last epoch's training accuracy is below ``member_min_accuracy`` is set aside and the next
    seed trained instead (at most ``members`` extra seeds). Checkpoints hold the kept members' weights and the
    training network's state; a resumed one must have been written with this config, but for ``[train]
    members`` and, while no member is finished, ``[train] epochs`` (a damaged or mismatched one: ValueError
    naming the checkpoint and key)."""
    tc = config["train"]
    n_members, floor = tc["members"], tc["member_min_accuracy"]
    readout_kind = "max_membrane" if config["loss"]["kind"] == "max_membrane_ce" else "count"
    if n_members > 1 and readout_kind != "count":
        raise ValueError(f"[train] members: an ensemble sums output spike counts; [loss] kind "
                         f"{toml_value(config['loss']['kind'])} reads the membrane (use count_ce or rate)")
    # before the data is read: the checkpoint's config may differ in its epochs and members only
    resumed = run.resumed(may_change=("train.epochs", "train.members"))
    first = _resume_int(run, resumed, "member", 0, 2 * SECTIONS["train"]["members"].high - 1, default=0) \
        if resumed is not None else 0
    kept = _resumed_kept(run, resumed, first)
    if len(kept) >= n_members or first >= 2 * n_members:
        raise run.resume_error("member", f"is {first} with finished members {kept}: more than [train] members = "
                                         f"{n_members} allows (fewer finished members, fewer than 2 x members seeds)")
    if kept:  # members already trained (with the checkpoint's epochs) are kept as they are
        run.check_resumed_config(("train.members",), f"; its member(s) {kept} were trained with its [train] epochs")
    data = _load_data(config, run)
    readout = Readout(kind=readout_kind, classes=data.classes)
    tagged = n_members > 1 or floor > 0  # history records name the seed offset they belong to
    run.plan(tc["epochs"] * n_members, len(data.levels[0]))
    models, history, seconds, samples = [], [], 0.0, 0
    for attempt in kept:
        model = _new_model(config, data, np.random.default_rng(run.seed + attempt))
        _restore_params(run, resumed, model, f"done{attempt}_param_")
        models.append(model)
    attempt = first
    while len(kept) < n_members:
        if attempt == 2 * n_members:
            finals = {r["member"]: r["accuracy"] for r in history}
            raise ValueError(f"[train] member_min_accuracy: only {len(kept)} of {2 * n_members} seeds "
                             f"({run.seed}..{run.seed + attempt - 1}) reached a training accuracy of {floor} "
                             f"(last epochs: {', '.join(f'{100 * a:.1f} %' for a in finals.values())}); lower it "
                             f"or change the training")
        rng = np.random.default_rng(run.seed + attempt)
        model = _new_model(config, data, rng)
        adam, step, first_epoch = _zero_adam(model), 0, 0
        if attempt == first and resumed is not None:
            step, first_epoch, rng, history = _restore(run, resumed, model, adam)
            _check_history(run, history, kept, attempt, first_epoch)
        done = {f"done{a}_param_{name}": value for a, m in zip(kept, models) for name, value in m.params.items()}
        done["kept"] = np.array(kept, dtype=np.int64)
        spent, trained = _train_member(config, run, data, model, adam, rng, step, first_epoch, history, readout_kind,
                                       attempt if tagged else None, done)
        seconds, samples = seconds + spent, samples + trained
        if history[-1]["accuracy"] >= floor:
            kept.append(attempt)
            models.append(model)
        attempt += 1
        run.plan(tc["epochs"] * (attempt + n_members - len(kept)), len(data.levels[0]))  # a set-aside adds one
    networks = [m.network(data.shape, data.spec, readout) for m in models]
    last = {r.get("member", 0): r for r in history}
    metrics = {"mode": tc["mode"], "epochs": tc["epochs"], "train_samples": len(data.levels[0]),
               "test_samples": len(data.test_p), "train_seconds": round(seconds, 2),
               "samples_per_s": round(samples / seconds, 1) if samples else None,
               "train_accuracy": float(np.mean([last[a if tagged else 0]["accuracy"] for a in kept]))}
    if floor > 0:
        metrics["member_seeds"] = [run.seed + a for a in kept]
        metrics["set_aside"] = [{"seed": run.seed + a, "train_accuracy": r["accuracy"]}
                                for a, r in sorted(last.items()) if a not in kept]
    if n_members == 1:
        network = networks[0]
        if data.test_p:
            metrics.update(evaluate(network, data.test_p, data.test_y))
        return Fitted(network, history, metrics)
    network = ensemble(networks)
    metrics["members"] = n_members
    metrics["member_train_accuracy"] = [last[a]["accuracy"] for a in kept]
    if data.test_p:
        metrics.update(evaluate_ensemble(networks, network, data.test_p, data.test_y))
    return Fitted(network, history, metrics)


def _train_member(config, run, data: _Data, model, adam, rng, step: int, first_epoch: int, history: list,
                  readout_kind: str, member: int | None, done: dict) -> tuple[float, int]:
    """Train ``model`` in place from ``first_epoch`` (appending a record per epoch to ``history``, with
    ``member`` when training an ensemble; checkpoints carry ``done``, the finished members' weights).
    (seconds spent, samples trained)."""
    tc, net, lc, ac = config["train"], config["network"], config["loss"], config["augment"]
    binary = data.spec.encoding == "spikes"
    surrogate = K.SURROGATES[lc["surrogate"]]
    levels, train_y, shape = data.levels, data.train_y, data.shape
    n = len(levels[0])
    batch = tc["batch_size"]
    total_steps = -(-n // batch) * tc["epochs"]
    offset = (member or 0) * tc["epochs"]
    augmenting = ac["jitter_px"] or ac["channel_shift"] or ac["time_scale"] or ac["drop"] or ac["warp"]
    started = time.perf_counter()
    trained_samples = 0
    for epoch in range(first_epoch, tc["epochs"]):
        order = rng.permutation(n)
        loss_sum = correct = seen = network_spikes = clipped = 0
        norms = []
        epoch_start = time.perf_counter()
        for start in range(0, n, batch):
            chosen = order[start:start + batch]
            level = rng.integers(0, len(levels), len(chosen)) if len(levels) > 1 else np.zeros(len(chosen), np.int64)
            samples = [levels[g][i] for g, i in zip(level, chosen)]
            samples = [augment(p, rng, shape, ac, binary) for p in samples] if augmenting else samples
            indptr, index, count, n_steps = batch_events(samples)
            layers = model.layers()
            run_forward, run_backward = passes(layers)
            traces = run_forward(layers, indptr, index, count, n_steps)
            network_spikes += sum(int(np.count_nonzero(t.spikes)) for t in traces)
            value, predicted, grad_s, grad_v = loss_and_grad(traces[-1], train_y[chosen], lc, n_steps,
                                                             [p.n_steps for p in samples])
            grads = run_backward(layers, traces, (indptr, index, count), grad_s, grad_v, surrogate, lc["slope"],
                                 net["recurrent"])
            norm = clip_grad_norm(grads, tc["grad_clip"])
            norms.append(norm)
            clipped += 0 < tc["grad_clip"] < norm
            step += 1
            _adam(model, adam, grads, step, learning_rate(step, total_steps, tc), tc["weight_decay"])
            loss_sum += value * len(chosen)
            correct += int(np.sum(predicted == train_y[chosen]))
            seen += len(chosen)
            trained_samples += len(chosen)
            run.progress(epoch=offset + epoch, samples=seen, loss=loss_sum / seen, accuracy=correct / seen,
                         samples_per_s=seen / (time.perf_counter() - epoch_start))
        where = f"epoch {epoch + 1}" + (f" of member {member + 1}" if member is not None else "")
        if not math.isfinite(loss_sum) or not all(np.isfinite(v).all() for v in model.params.values()):
            raise ValueError(f"training diverged in {where}: non-finite loss or weights (lower [train] lr)")
        if network_spikes == 0:
            raise ValueError(f"training stopped in {where}: every neuron was silent for every training "
                             f"sample (raise [network] init_gain or lower vth)")
        record = {"epoch": offset + epoch + 1, "loss": loss_sum / seen, "accuracy": correct / seen,
                  "samples_per_s": seen / (time.perf_counter() - epoch_start)}
        record.update(grad_norm_median=float(np.median(norms)), clipped_batches=clipped)
        if member is not None:
            record["member"] = member
        if data.test_p:
            record["test_accuracy"] = float(np.mean(predict(model.layers(), data.test_p, readout_kind) == data.test_y))
        history.append(record)
        state = _state(model, adam, step, epoch + 1, rng, history)
        if member is not None:
            state.update(done, member=np.array(member))
        run.checkpoint(state)
    return time.perf_counter() - started, trained_samples


def evaluate(network, presentations, labels) -> dict:
    """Accuracies of a trained network on a labelled set: the trainer's forward ("model") and the runtime
    ("loihi" for a LoihiLIF network; "float" and, after to_loihi, "quantized_loihi" for a FloatLIF one),
    with how many samples the model and the runtime classify alike."""
    from pipeline.snn.convert import to_loihi

    kind = network.readout.kind
    model = predict(compile_any(network), presentations, kind)
    out = {"test_accuracy": float(np.mean(model == labels))}
    if network.is_float:
        floated = runtime_predict(network, presentations, "float")
        out["float_test_accuracy"] = float(np.mean(floated == labels))
        quantized, _ = to_loihi(network)
        out["quantized_loihi_test_accuracy"] = float(np.mean(runtime_predict(quantized, presentations, "loihi")
                                                             == labels))
        out["runtime_agreement"] = float(np.mean(floated == model))
    else:
        deployed = runtime_predict(network, presentations, "loihi")
        out["loihi_test_accuracy"] = float(np.mean(deployed == labels))
        out["runtime_agreement"] = float(np.mean(deployed == model))
    return out


def evaluate_ensemble(members, network, presentations, labels) -> dict:
    """Accuracies of an ensemble (pipeline.snn.ensemble) of count-readout ``members``: the trainer's forward
    of every member with their counts summed per class ("model"; ``member_test_accuracy``: each alone), and
    the ensemble ``network`` on the runtime ("loihi"; or "float" for FloatLIF members)."""
    totals, alone = 0.0, []
    for member in members:
        counts, vmax = output_counts(compile_any(member), presentations)
        alone.append(float(np.mean(classify(counts, vmax, "count") == labels)))
        totals = totals + counts
    model = np.argmax(totals, axis=1)
    backend = "float" if network.is_float else "loihi"
    deployed = runtime_predict(network, presentations, backend)
    return {"test_accuracy": float(np.mean(model == labels)), "member_test_accuracy": alone,
            f"{backend}_test_accuracy": float(np.mean(deployed == labels)),
            "runtime_agreement": float(np.mean(deployed == model))}


def clip_grad_norm(grads: dict[str, np.ndarray], limit: float) -> float:
    """The global L2 norm of ``grads`` (float64 sum of squares over every parameter); when ``limit`` > 0 and
    the norm exceeds it, every gradient is scaled in place by ``limit / norm``. Returns the norm before."""
    norm = math.sqrt(sum(float(np.dot(g.reshape(-1).astype(np.float64), g.reshape(-1).astype(np.float64)))
                         for g in grads.values()))
    if 0 < limit < norm:
        scale = limit / norm
        for name, g in grads.items():
            grads[name] = (g * scale).astype(g.dtype, copy=False)
    return norm


def learning_rate(step: int, total_steps: int, tc: dict) -> float:
    """The learning rate of gradient step ``step`` (1-based) of ``total_steps``: ``[train] lr`` under
    ``lr_schedule`` ("constant", or "cosine": from lr down to 0 over the run), times step / warmup_steps
    while step < ``warmup_steps`` (a linear warm-up; 0: none)."""
    lr = tc["lr"] if tc["lr_schedule"] == "constant" else \
        tc["lr"] * 0.5 * (1 + math.cos(math.pi * min(step - 1, total_steps) / total_steps))
    return lr * step / tc["warmup_steps"] if step < tc["warmup_steps"] else lr


def _adam(model: LifStack, adam: dict, grads: dict, step: int, lr: float, weight_decay: float) -> None:
    """AdamW in place (kernels.adam, float32, numpy's elementwise order), then the weights are clipped."""
    b1, b2 = ADAM_BETAS
    f32 = np.float32
    scalars = (f32(lr), f32(b1), f32(1 - b1), f32(b2), f32(1 - b2), f32(1 - b1 ** step), f32(1 - b2 ** step),
               f32(ADAM_EPS), f32(weight_decay))
    for name, w in model.params.items():
        g = np.ascontiguousarray(grads[name], np.float32)
        K.adam(w.reshape(-1), g.reshape(-1), adam["m"][name].reshape(-1), adam["v"][name].reshape(-1), *scalars)
    model.clip()
