"""ANN -> SNN conversion (Rueckauer et al. 2017): train a bias-free ReLU network on event-count frames,
normalize it with the data, and run it as a rate-coded spiking network on the project's runtime.

The ANN has the SNN's layers (Dense, ReLU, no biases) and sees the events of a whole presentation
summed per input (an (n_inputs,) count frame: the :class:`InputSpec`'s "counts" encoding summed over
its steps, times ``input_scale``). It is trained with Adam on softmax cross-entropy.

Input (``[convert] input``): "frame" (default) presents the ANN's own input to the SNN: the recording's
count frame over the window, as a constant graded input in every step (InputSpec encoding "frame";
Rueckauer et al.'s analog input current). Step 0 can start only once the window has been seen, so the
decision comes after the window plus the simulated steps. "stream" presents the events as they come
(encoding "counts", ``steps`` steps over the window); then a neuron's input changes over time, and an
integrate-and-fire neuron cannot take back a spike when its summed input falls again later (its count
follows the running maximum of its summed input, not the final sum); ``windows`` = K > 1 trains the
ANN's first layer on that running maximum over K cumulative windows.

Conversion (data-based normalization): ``lambda_l`` is the ``percentile``-th percentile of the positive
activations of layer l over the training frames (99.9 in Rueckauer et al.). With integrate-and-fire
neurons (threshold 1) the weights become

    W_1' = W_1 * input_scale * max_rate / lambda_1   (frame; stream: times ``steps``, each event comes once),
    W_l' = W_l * lambda_{l-1} / lambda_l  (l > 1),

so a neuron's spike count over T steps approximates ``T * max_rate * a_l / lambda_l`` (at most one spike
per step). The output is read by spike count (ties: the higher membrane maximum).

Reset (``[convert] reset``): the runtime's neurons (Lava's CUBA LIF) reset v to zero at a spike, which
loses the charge above threshold. "subtract" (default) builds reset by subtraction from the same CUBA
parts (:func:`if_neuron`): u integrates the input without decay, v follows u, and a self-inhibition of one
threshold per spike takes it off u. With constant input and reset by subtraction a neuron's count is
``floor(T z / lambda)`` for its pre-activation z: the quantized ReLU, exactly on the float backend. With no
bias and no leak, a ReLU network is positively homogeneous, so the input's scale never changes its class.
On Loihi u is 24 bits: a neuron driven below zero accumulates its negative input over the steps, so
``vth`` bounds the steps (:func:`worst_drive`; ``fit`` refuses a vth that would wrap u).
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.schema import Key, toml_value
from pipeline.decoders.classifier import ClassifierDecoder
from pipeline.snn.convert import to_loihi
from pipeline.snn.model import InputSpec, Readout
from pipeline.snn.network import INPUT, Dense, FloatLIF, Network, Population, Sparse
from pipeline.snn.runtime import build
from pipeline.train.present import present_file
from pipeline.train.run import Fitted, TrainRun
from recordings.labelled import open_labelled

#: N-MNIST (ATIS 34x34, two polarities).
NMNIST_SHAPE = (2, 34, 34)

SECTIONS: dict[str, dict[str, Key]] = {
    "train": {
        "epochs": Key("int", 30, low=1, high=100_000, help="passes of the ANN over the training frames"),
        "batch_size": Key("int", 32, low=1, high=4096, help="frames per gradient step"),
        "lr": Key("number", 1e-3, low=0, low_open=True, high=10, help="Adam learning rate"),
        "weight_decay": Key("number", 1e-4, low=0, high=1, help="decoupled weight decay per step (AdamW)"),
        "dropout": Key("number", 0.2, low=0, high=0.95, help="dropout on hidden activations while training"),
        "limit": Key("int", 0, low=0, help="use only the first N training recordings (0: all)"),
        "jitter_px": Key("int", 0, low=0, high=16, help="shift each training frame by a random whole number of "
                         "pixels in [-jitter_px, jitter_px] in x and y (augmentation; 0: none)"),
        "windows": Key("int", 1, low=1, high=1000, help="1: the ANN sees whole-presentation count frames "
                       "(Rueckauer); K > 1: its first layer takes the running maximum over K cumulative windows, "
                       "as integrate-and-fire neurons do"),
    },
    "data": {
        "train": Key("str", help="folder of training recordings (relative to $SPIKELOOP_DATA)"),
        "train_labels": Key("str", "", help="labels file (relative to $SPIKELOOP_DATA); empty: FSDD names"),
        "test": Key("str", "", help="folder of test recordings (empty: none)"),
        "test_labels": Key("str", "", help="labels file of the test folder"),
        "test_limit": Key("int", 0, low=0, help="use only the first N test recordings (0: all)"),
    },
    "input": {
        "width": Key("int", 34, low=1, high=4096, help="sensor width (px)"),
        "height": Key("int", 34, low=1, high=4096, help="sensor height (px)"),
        "polarity": Key("str", "split", choices=("split", "merge"), help="one channel per polarity or one"),
        "scale": Key("int", 1, low=1, high=1024, help="pool x and y by this factor"),
        "duration_us": Key("int", 300_000, low=1, high=3_600_000_000, help="presented length of a recording (µs)"),
        "input_scale": Key("number", 0.25, low=0, low_open=True, help="ANN input = event counts * this"),
    },
    "network": {
        "hidden": Key("int_list", [256], low=1, high=100_000, help="hidden Dense layer sizes (ReLU / IF)"),
    },
    "convert": {
        "percentile": Key("number", 99.9, low=0, low_open=True, high=100, help="activation percentile that "
                          "maps to max_rate (Rueckauer et al. 2017: 99.9)"),
        "steps": Key("int", 300, low=1, high=1_000_000, help="simulation steps of the written network "
                     "(bin_us = duration_us / steps)"),
        "max_rate": Key("number", 1.0, low=0, low_open=True, high=1, help="spikes per step an activation at "
                        "the percentile maps to"),
        "input": Key("str", "frame", choices=("frame", "stream"), help="frame: the SNN receives the ANN's input, "
                     "the recording's count frame, as a constant graded input in every step (Rueckauer et al.'s "
                     "analog input); stream: the events as they come, counted per step"),
        "reset": Key("str", "subtract", choices=("subtract", "zero"), help="subtract: integrate-and-fire with reset by "
                     "subtraction (the charge above threshold is kept); zero: the runtime's plain reset to zero"),
        "vth": Key("int", 1024, low=1, high=2**17 - 1, help="loihi threshold mantissa of the written network"),
        "eval_steps": Key("int_list", [25, 50, 100, 200, 300], low=1, high=1_000_000,
                          help="steps at which the converted SNN is evaluated on the test set"),
    },
}


@dataclass(frozen=True)
class AnnConfig:
    """ANN training: ``hidden`` sizes of the hidden Dense layers; Adam (lr, betas 0.9/0.999) with decoupled
    ``weight_decay``; ``dropout`` on hidden activations while training; ``input_scale`` multiplies counts;
    ``jitter_px``: each training frame shifted by up to that many pixels in x and y (``input_shape`` (C, H, W))."""

    hidden: tuple[int, ...] = (256,)
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dropout: float = 0.2
    input_scale: float = 0.25
    jitter_px: int = 0
    input_shape: tuple[int, int, int] = NMNIST_SHAPE


# ---------------------------------------------------------------------------------------------- data
def count_frames(paths, spec: InputSpec, input_shape=NMNIST_SHAPE, windows: int = 1) -> np.ndarray:
    """Recordings -> (windows, n, C*H*W) float32 cumulative event counts: window k holds the events of the
    first (k + 1) / windows of the presentation ``spec`` describes (the last window: all of them)."""
    n_inputs = int(np.prod(input_shape))
    frames = np.zeros((windows, len(paths), n_inputs), np.float32)
    counted = dataclasses.replace(spec, encoding="counts", tail_steps=0, bin_us=spec.duration_us // windows,
                                  duration_us=spec.duration_us // windows * windows)
    for i, path in enumerate(paths):
        p = present_file(path, counted, input_shape, n_inputs)
        for k in range(windows):
            lo, hi = p.indptr[k], p.indptr[k + 1]
            np.add.at(frames[k, i], p.index[lo:hi], p.count[lo:hi])
    return np.cumsum(frames, axis=0)


def jitter(frames: np.ndarray, shape: tuple[int, int, int], px: int, rng: np.random.Generator) -> np.ndarray:
    """Frames (K, n, C*H*W) with every sample's (H, W) grid shifted by its own random (dy, dx) in [-px, px]
    (pixels moved off the grid are dropped, the uncovered ones are 0); the same shift in all K windows."""
    k, n, _ = frames.shape
    c, h, w = shape
    grid = np.pad(frames.reshape(k, n, c, h, w), ((0, 0), (0, 0), (0, 0), (px, px), (px, px)))
    shifts = rng.integers(-px, px + 1, (n, 2))
    out = np.empty((k, n, c, h, w), frames.dtype)
    for i, (dy, dx) in enumerate(shifts):
        out[:, i] = grid[:, i, :, px + dy:px + dy + h, px + dx:px + dx + w]
    return out.reshape(frames.shape)


# ---------------------------------------------------------------------------------------------- ANN
def _first_layer(w: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ReLU of the first layer's running maximum over cumulative windows x (K, n, n_in): (a (n, n_out),
    winning window (n, n_out) int). With K = 1 the plain ReLU layer; with K > 1 an integrate-and-fire
    neuron's count (it never takes back a spike when its summed input falls again)."""
    z = x @ w.T
    k = np.argmax(z, axis=0)
    return np.maximum(np.take_along_axis(z, k[None], axis=0)[0], 0.0), k


def ann_forward(weights: list[np.ndarray], x: np.ndarray) -> list[np.ndarray]:
    """Activations of every layer for inputs x (K, n, n_in) (cumulative windows, :func:`count_frames`):
    ReLU hidden layers (the first over the windows' running maximum), the last are logits.

    weights[l] is (n_out, n_in) like the network's Dense. Returns [a_1, ..., logits], each (n, n_out).
    """
    a, _ = _first_layer(weights[0], x)
    out = [a]
    for l in range(1, len(weights)):
        z = a @ weights[l].T
        a = np.maximum(z, 0.0) if l < len(weights) - 1 else z
        out.append(a)
    return out


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy and its gradient with respect to logits (n, k)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    p /= p.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = float(-np.mean(np.log(p[np.arange(n), labels] + 1e-30)))
    grad = p
    grad[np.arange(n), labels] -= 1.0
    return loss, grad / n


def ann_loss_and_grads(weights, x, labels, masks=None) -> tuple[float, list[np.ndarray], np.ndarray]:
    """Loss, gradients (like weights) and logits of a bias-free ReLU network (at least one hidden layer)
    on x (K, n, n_in); ``masks`` (one per hidden layer, (n, n_hidden) scaled dropout masks) or None."""
    first, window = _first_layer(weights[0], x)
    acts = [None, first * masks[0] if masks is not None else first]
    a = acts[1]
    for l in range(1, len(weights)):
        z = a @ weights[l].T
        if l < len(weights) - 1:
            a = np.maximum(z, 0.0)
            if masks is not None:
                a = a * masks[l]
        else:
            a = z
        acts.append(a)
    loss, delta = cross_entropy(acts[-1], labels)
    grads = [None] * len(weights)
    for l in range(len(weights) - 1, 0, -1):
        grads[l] = delta.T @ acts[l]
        delta = (delta @ weights[l]) * (acts[l] > 0)
        if masks is not None:
            delta = delta * masks[l - 1]
    grads[0] = sum((delta * (window == k)).T @ x[k] for k in range(x.shape[0]))
    return loss, grads, acts[-1]


class Adam:
    """Adam with decoupled weight decay (AdamW) over a list of arrays, updated in place."""

    def __init__(self, params, lr, weight_decay, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.wd, self.b1, self.b2, self.eps = lr, weight_decay, beta1, beta2, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, params, grads) -> None:
        self.t += 1
        c1 = 1 - self.b1 ** self.t
        c2 = 1 - self.b2 ** self.t
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            p -= self.lr * (m / c1 / (np.sqrt(v / c2) + self.eps) + self.wd * p)


def init_weights(sizes: list[int], rng: np.random.Generator) -> list[np.ndarray]:
    """He-normal (n_out, n_in) float32 matrices for consecutive layer sizes."""
    return [rng.normal(0.0, np.sqrt(2.0 / n_in), (n_out, n_in)).astype(np.float32)
            for n_in, n_out in itertools.pairwise(sizes)]


def train_ann(frames: np.ndarray, labels: np.ndarray, n_classes: int, config: AnnConfig, seed: int,
              progress: Callable[..., None] | None = None, weights: list[np.ndarray] | None = None,
              optimizer: Adam | None = None, first_epoch: int = 0,
              on_epoch: Callable[[int, list, Adam], None] | None = None) -> list[np.ndarray]:
    """Train the ANN on (K, n, n_in) cumulative frames (times input_scale) -> weights [(n_out, n_in)] float32.

    ``progress(epoch=, samples=, loss=, accuracy=, samples_per_s=)`` after each epoch; ``on_epoch(epoch,
    weights, optimizer)`` too (checkpoints); ``weights``/``optimizer``/``first_epoch`` resume. Every random
    choice of an epoch comes from (seed, epoch), so a resumed run repeats the uninterrupted one.
    """
    sizes = [frames.shape[2], *config.hidden, n_classes]
    weights = init_weights(sizes, np.random.default_rng(seed)) if weights is None else [w.copy() for w in weights]
    if optimizer is None:
        optimizer = Adam(weights, config.lr, config.weight_decay)
    n = frames.shape[1]
    keep = 1.0 - config.dropout
    for epoch in range(first_epoch, config.epochs):
        started = time.perf_counter()
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(n)
        total, correct = 0.0, 0
        for start in range(0, n, config.batch_size):
            batch = order[start:start + config.batch_size]
            masks = None
            if config.dropout > 0:
                masks = [(rng.random((len(batch), h)) < keep) / keep for h in config.hidden]
            x = frames[:, batch]
            if config.jitter_px:
                x = jitter(x, config.input_shape, config.jitter_px, rng)
            loss, grads, logits = ann_loss_and_grads(weights, x, labels[batch], masks)
            optimizer.step(weights, grads)
            total += loss * len(batch)
            correct += int(np.sum(np.argmax(logits, axis=1) == labels[batch]))
        if progress is not None:
            progress(epoch=epoch + 1, samples=n, loss=total / n, accuracy=correct / n,
                     samples_per_s=n / (time.perf_counter() - started))
        if on_epoch is not None:
            on_epoch(epoch + 1, weights, optimizer)
    return weights


def ann_accuracy(weights, frames, labels) -> float:
    """Accuracy of the ANN on frames (K, n, n_in)."""
    return float(np.mean(np.argmax(ann_forward(weights, frames)[-1], axis=1) == labels))


# ---------------------------------------------------------------------------------------------- conversion
def activation_scales(weights, frames, percentile: float) -> list[float]:
    """lambda_l: the ``percentile``-th percentile of the positive activations of every layer (logits too)."""
    scales = []
    for a in ann_forward(weights, frames):
        positive = a[a > 0]
        scales.append(float(np.percentile(positive, percentile)) if positive.size else 1.0)
    return scales


def worst_drive(weights, scales: list[float], frames: np.ndarray) -> float:
    """The most negative input per step, in thresholds, that any neuron of the converted network receives on
    ``frames`` with "frame" input (its pre-activation / lambda_l): with reset by subtraction u integrates it,
    so over n steps u reaches n times this, which must stay inside Loihi's 24-bit u."""
    acts = ann_forward(weights, frames)
    worst = float(np.min(frames[-1] @ weights[0].T)) / scales[0]
    for l in range(1, len(weights)):
        worst = min(worst, float(np.min(acts[l - 1] @ weights[l].T)) / scales[l])
    return min(worst, 0.0)


def snn_weights(weights, scales: list[float], input_scale: float, steps: int, max_rate: float = 1.0,
                input_kind: str = "frame") -> list[np.ndarray]:
    """The SNN's float weights for threshold 1 (module docstring): an activation lambda_l maps to ``max_rate``
    spikes per step. Layer 1 sees raw event counts: with ``input_kind`` "frame" the whole count frame in every
    step, with "stream" each event once over the ``steps`` steps."""
    per_step = 1.0 if input_kind == "frame" else float(steps)
    out = [weights[0] * input_scale * per_step * max_rate / scales[0]]
    for l in range(1, len(weights)):
        out.append(weights[l] * scales[l - 1] / scales[l])
    return out


def if_neuron(reset: str, dt_ms: float) -> FloatLIF:
    """The integrate-and-fire neuron (threshold 1) of the converted network in the runtime's CUBA LIF terms.

    "zero": no synaptic filter, no leak: v integrates the input and resets to 0 at a spike. "subtract": u
    integrates the input without decay (tau_syn = inf) and v follows u each step (tau_mem -> 0), so v is the
    charge integrated so far; a self-inhibition of -1 per spike (:func:`snn_network`) takes one threshold off
    u in the next step: reset by subtraction, the charge above threshold carries over (Rueckauer et al.
    2017). On the loihi backend (to_loihi) u decays by 1/4096 per step (Lava's du = 0) and v keeps 1/4096.
    """
    if reset == "zero":
        return FloatLIF(tau_syn_ms=0.0, tau_mem_ms=np.inf, threshold=1.0, bias=0.0, refractory_ms=0.0)
    if reset == "subtract":
        return FloatLIF(tau_syn_ms=np.inf, tau_mem_ms=dt_ms * 1e-3, threshold=1.0, bias=0.0, refractory_ms=0.0)
    raise ValueError(f'reset: expected "subtract" or "zero", got {toml_value(reset)}')


def snn_network(weights: list[np.ndarray], spec: InputSpec, classes, input_shape=NMNIST_SHAPE,
                dt_ms: float = 1.0, reset: str = "subtract") -> Network:
    """An integrate-and-fire FloatLIF Network (threshold 1, :func:`if_neuron`) with the given float weights;
    input from graded count spikes; populations hidden0.. and "output" (membrane probed); with reset
    "subtract" every population also has a self-inhibition ``NAME->NAME`` of weight -1 (one threshold)."""
    names = [f"hidden{i}" for i in range(len(weights) - 1)] + ["output"]
    neuron = if_neuron(reset, dt_ms)
    populations = [Population(name, w.shape[0], neuron, probe_v=name == "output") for name, w in zip(names, weights)]
    projections = [Dense(name=f"{src}->{dst}", source=src, target=dst, weights=w.astype(np.float32),
                         num_message_bits=16 if src == INPUT else 0)
                   for src, dst, w in zip([INPUT, *names[:-1]], names, weights)]
    if reset == "subtract":
        projections += [Sparse.from_dense(-np.eye(w.shape[0], dtype=np.float32), name=f"{name}->{name}", source=name,
                                          target=name) for name, w in zip(names, weights)]
    return Network(n_inputs=int(np.prod(input_shape)), populations=populations, projections=projections,
                   output="output", dt_ms=dt_ms, input_shape=tuple(input_shape), input_spec=spec,
                   readout=Readout("count", tuple(classes)))


def presentation_spec(steps: int, duration_us: int, n_layers: int, input_kind: str = "stream") -> InputSpec:
    """``duration_us`` of a recording over ``steps`` steps, plus one tail step per layer: "stream" counts the
    events of each step ("counts" encoding), "frame" presents the window's counts in every step."""
    bin_us = duration_us // steps
    return InputSpec(sensor="dvs", bin_us=bin_us, encoding="frame" if input_kind == "frame" else "counts",
                     polarity="split", duration_us=bin_us * steps, tail_steps=n_layers)


def convert(weights, scales, classes, steps: int, duration_us: int, input_scale: float, vth_target: int,
            max_rate: float = 1.0, input_shape=NMNIST_SHAPE, input_kind: str = "frame", reset: str = "subtract",
            polarity: str = "split", scale: int = 1) -> tuple[Network, Network]:
    """(float network, loihi network) for ``steps`` steps; the loihi one through pipeline.snn.convert."""
    spec = dataclasses.replace(presentation_spec(steps, duration_us, len(weights), input_kind), polarity=polarity,
                               scale=scale)
    float_net = snn_network(snn_weights(weights, scales, input_scale, steps, max_rate, input_kind), spec, classes,
                            input_shape, dt_ms=spec.bin_us / 1000.0, reset=reset)
    loihi_net, _ = to_loihi(float_net, vth_target=vth_target)
    return float_net, loihi_net


# ---------------------------------------------------------------------------------------------- running
def classify(runtime, presentation, readout: Readout) -> int:
    """Run one presentation (pipeline.train.present.Presentation) on a runtime from reset; the class index
    the readout gives at its end (pipeline.decoders.classifier, as ``spikeloop evaluate`` decides: most
    spikes, ties by the higher membrane maximum of the probed output, then the lower index)."""
    runtime.reset()
    decoder = ClassifierDecoder(runtime.populations[runtime.output_name].size, readout.classes, readout.kind,
                                readout.assignment)
    probed = runtime.populations[runtime.output_name].probe_v
    indptr, index, count = presentation
    for k in range(len(indptr) - 1):
        lo, hi = indptr[k], indptr[k + 1]
        spikes = runtime.step(index[lo:hi], count[lo:hi])
        decoder.update(spikes, k, runtime.v(runtime.output_name) if probed else None)
    return decoder.finish(len(indptr) - 1)[1].index


def snn_accuracy(network: Network, backend: str, paths, labels) -> float:
    """Accuracy of a converted network on recordings, each presented as its input_spec says."""
    runtime = build(network, backend)
    n_inputs = int(network.n_inputs)
    hits = 0
    for path, label in zip(paths, labels):
        p = present_file(path, network.input_spec, network.input_shape, n_inputs)
        hits += classify(runtime, p, network.readout) == label
    return hits / max(len(paths), 1)


def data_path(data_dir: Path, value: str) -> Path:
    """A data path from a config: absolute, or relative to $SPIKELOOP_DATA."""
    path = Path(value)
    return path if path.is_absolute() else Path(data_dir) / path


# ---------------------------------------------------------------------------------------------- spikeloop train
def _labelled(run: TrainRun, folder: str, labels: str, classes=None, limit: int = 0):
    labelled = open_labelled(data_path(run.data_dir, folder), data_path(run.data_dir, labels) if labels else None,
                             classes)
    if limit:
        labelled = labelled.subset(range(min(limit, len(labelled))))
    if not len(labelled):
        raise ValueError(f"{data_path(run.data_dir, folder)}: no labelled recordings")
    return labelled


def fit(config: dict, run: TrainRun) -> Fitted:
    """``spikeloop train`` method "ann2snn": train the ANN, convert at ``[convert] steps``, evaluate the
    ANN and the SNN (float and loihi backends) at every ``eval_steps`` on the test set."""
    tc, dc, ic, cc = config["train"], config["data"], config["input"], config["convert"]
    if cc["input"] == "frame" and tc["windows"] != 1:
        raise ValueError(f"config key [train] windows = {tc['windows']} models events arriving over time; with "
                         f"[convert] input = \"frame\" the SNN sees the whole window at once: use windows = 1")
    shape = (2 if ic["polarity"] == "split" else 1, -(-ic["height"] // ic["scale"]), -(-ic["width"] // ic["scale"]))
    ann = AnnConfig(hidden=tuple(config["network"]["hidden"]), epochs=tc["epochs"], batch_size=tc["batch_size"],
                    lr=tc["lr"], weight_decay=tc["weight_decay"], dropout=tc["dropout"],
                    input_scale=ic["input_scale"], jitter_px=tc["jitter_px"], input_shape=shape)
    n_layers = len(ann.hidden) + 1
    train = _labelled(run, dc["train"], dc["train_labels"], limit=tc["limit"])
    test = _labelled(run, dc["test"], dc["test_labels"], train.classes, dc["test_limit"]) if dc["test"] else None
    base = dataclasses.replace(presentation_spec(1, ic["duration_us"], n_layers), polarity=ic["polarity"],
                               scale=ic["scale"])
    frames = count_frames(train.paths, base, shape, tc["windows"]) * ann.input_scale
    labels = np.array(train.labels, np.int64)
    weights, optimizer, first_epoch, history = None, None, 0, []
    resumed = run.resumed()
    if resumed is not None:
        sizes = [frames.shape[2], *ann.hidden, len(train.classes)]
        weights, moments = [], {"m": [], "v": []}
        for l in range(n_layers):
            want = (sizes[l + 1], sizes[l])
            for key, into in ((f"w{l}", weights), (f"m{l}", moments["m"]), (f"v{l}", moments["v"])):
                if key not in resumed or resumed[key].shape != want:
                    raise run.resume_error(key, f"missing or not of shape {want} (the config's network)")
                into.append(resumed[key].astype(np.float32))
        optimizer = Adam(weights, ann.lr, ann.weight_decay)
        optimizer.m, optimizer.v, optimizer.t = moments["m"], moments["v"], int(resumed["adam_t"])
        first_epoch = int(resumed["epoch"])
        history = [dict(zip(("epoch", "loss", "accuracy"), row)) for row in resumed["history"].tolist()]
    run.plan(ann.epochs, frames.shape[1])

    def progress(epoch, samples, loss, accuracy, samples_per_s):
        history.append({"epoch": epoch, "loss": loss, "accuracy": accuracy})
        run.progress(epoch=epoch - 1, samples=samples, loss=loss, accuracy=accuracy, samples_per_s=samples_per_s)

    def checkpoint(epoch, current, adam):
        state = {f"w{l}": w for l, w in enumerate(current)}
        state.update({f"m{l}": m for l, m in enumerate(adam.m)})
        state.update({f"v{l}": v for l, v in enumerate(adam.v)})
        state["adam_t"] = np.array(adam.t)
        state["epoch"] = np.array(epoch)
        state["history"] = np.array([[h["epoch"], h["loss"], h["accuracy"]] for h in history], np.float64)
        run.checkpoint(state)

    weights = train_ann(frames, labels, len(train.classes), ann, run.seed, progress, weights, optimizer, first_epoch,
                        checkpoint)
    scales = activation_scales(weights, frames, cc["percentile"])
    if cc["reset"] == "subtract" and cc["input"] == "frame":
        longest = max([cc["steps"], *cc["eval_steps"]]) + n_layers
        room = (1 << 23) / (cc["vth"] << 6)   # thresholds u can hold before it wraps (24-bit)
        need = -worst_drive(weights, scales, frames) * longest
        if need >= room:
            raise ValueError(f"config key [convert] vth = {cc['vth']}: over {longest} steps a neuron's u would reach "
                             f"{need:.0f} thresholds below zero, Loihi's 24-bit u holds {room:.0f}; lower vth to at "
                             f"most {int((1 << 17) / need)} or use fewer steps")
    conversion = dict(input_shape=shape, input_kind=cc["input"], reset=cc["reset"], polarity=ic["polarity"],
                      scale=ic["scale"])
    _, network = convert(weights, scales, train.classes, cc["steps"], ic["duration_us"], ann.input_scale, cc["vth"],
                         cc["max_rate"], **conversion)
    metrics = {"method": "ann2snn", "train_samples": frames.shape[1], "windows": tc["windows"],
               "ann_train_accuracy": ann_accuracy(weights, frames, labels),
               "activation_scales": scales, "steps": cc["steps"], "input": cc["input"], "reset": cc["reset"]}
    if test is not None:
        test_labels = np.array(test.labels, np.int64)
        metrics["test_samples"] = len(test)
        test_frames = count_frames(test.paths, base, shape, tc["windows"]) * ann.input_scale
        metrics["ann_test_accuracy"] = ann_accuracy(weights, test_frames,
                                                    test_labels)
        table = {}
        for steps in cc["eval_steps"]:
            float_net, loihi_net = convert(weights, scales, train.classes, steps, ic["duration_us"], ann.input_scale,
                                           cc["vth"], cc["max_rate"], **conversion)
            table[str(steps)] = {"float": snn_accuracy(float_net, "float", test.paths, test_labels),
                                 "loihi": snn_accuracy(loihi_net, "loihi", test.paths, test_labels)}
        metrics["snn_test_accuracy"] = table
    return Fitted(network, history, metrics)
