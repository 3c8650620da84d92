"""Spike-time learning (SpikeProp family): time-to-first-spike coding with exact spike-time gradients.

Model (Mostafa 2017): non-leaky integrate-and-fire neurons with exponentially decaying synaptic current
(time constant tau, ms) and threshold 1. An input spike at t_i with weight w_i adds
``w_i * (1 - exp(-(t - t_i) / tau))`` to the membrane for t > t_i. With C the inputs before the output
spike (the causal set), A = sum_C w_i and B = sum_C w_i exp(t_i / tau), the first threshold crossing is

    t_out = tau * ln(B / (A - 1))                                             (needs A > 1)

and it is valid when it lies between the last causal input and the next input. Exact gradients
(z = exp(t / tau)): dt_out/dw_i = tau (z_i / z_out - 1) / (A - 1), dt_out/dt_i = w_i (z_i / z_out) / (A - 1).
Each neuron spikes at most once (refractory for the rest of the presentation). A neuron that never
spikes passes no gradient; Mostafa's penalty ``gamma * max(0, 1 - sum of weights of spiking inputs)``
per silent neuron and sample pulls it back.

Coding: input values in [0, 1] become spike times ``t_min + v (t_max - t_min)`` ms, plus one bias
input spike at ``t_bias``, which reaches the hidden layer and the output. The class is the output
neuron that spikes first; the loss is softmax cross-entropy of ``-t_out / xi`` (xi ms; a silent output
counts as ``t_cap``, without gradient).

Deployment: the trained net becomes a FloatLIF :class:`Network` (tau_syn = tau, no leak, threshold 1,
weights ``w (1 - exp(-dt / tau))`` so a spike adds ``w`` to the membrane in the limit, refractory for
the presentation) with a ``first_spike`` readout. On the runtime a spike at step m stands for time
``m * dt``: inputs are rounded to the nearest step, each layer's crossing to the next step, so the
runtime's spike times lag the exact ones by up to one step per layer (:func:`run_deployed`).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from pipeline.core.schema import Key
from pipeline.decoders.classifier import ClassifierDecoder
from pipeline.snn.convert import to_loihi
from pipeline.snn.model import InputSpec, Readout
from pipeline.snn.network import INPUT, Dense, FloatLIF, Network, Population, Sparse
from pipeline.snn.runtime import build
from pipeline.train import yinyang
from pipeline.train.present import Presentation, present_file
from pipeline.train.run import Fitted, TrainRun
from recordings.labelled import open_labelled

THRESHOLD = 1.0
#: Longest presentation of one sample on the runtime (steps).
MAX_DEPLOY_STEPS = 1_000_000


class Coding(NamedTuple):
    """Time-to-first-spike input coding and readout, ms: inputs at t_min + v (t_max - t_min), the bias
    spike at t_bias; a silent output counts as t_cap in the loss; xi: softmax temperature."""

    t_min: float
    t_max: float
    t_bias: float
    t_cap: float
    xi: float


# ---------------------------------------------------------------------------------------------- kernels
#: Batches at least this large run over both cores; smaller ones (training batches) run on one, where
#: thread start-up and contention with other processes would cost more than the work.
PARALLEL_BATCH = 512


@njit(cache=True)
def _neuron_spike(t_sorted, w_sorted, tau):
    """First threshold crossing of one neuron. t_sorted (n,) ascending input times (inf = none),
    w_sorted (n,) their weights. Returns (t_out ms or inf, number of causal inputs)."""
    a = 0.0
    b = 0.0
    n = t_sorted.shape[0]
    for k in range(n):
        t_k = t_sorted[k]
        if not np.isfinite(t_k):
            break
        a += w_sorted[k]
        b += w_sorted[k] * np.exp(t_k / tau)
        if k + 1 < n and t_sorted[k + 1] == t_k:
            continue  # inputs at the same time arrive together
        if a > THRESHOLD and b > 0.0:
            t_out = tau * np.log(b / (a - THRESHOLD))
            nxt = t_sorted[k + 1] if k + 1 < n else np.inf
            if t_out >= t_k and t_out < nxt:
                return t_out, k + 1
    return np.inf, 0


@njit(cache=True)
def _sample_forward(t_row, w, tau, t_out, n_causal, order):
    """One sample of :func:`layer_forward` (t_row (n_in,); writes the sample's rows of the outputs)."""
    o = np.argsort(t_row, kind="mergesort")
    order[:] = o
    t_sorted = t_row[o]
    w_sorted = np.empty(o.shape[0])
    for j in range(w.shape[0]):
        for k in range(o.shape[0]):
            w_sorted[k] = w[j, o[k]]
        t_out[j], n_causal[j] = _neuron_spike(t_sorted, w_sorted, tau)


@njit(cache=True, parallel=True)
def _forward_parallel(t_in, w, tau, t_out, n_causal, order):
    for s in prange(t_in.shape[0]):
        _sample_forward(t_in[s], w, tau, t_out[s], n_causal[s], order[s])


@njit(cache=True)
def _forward_serial(t_in, w, tau, t_out, n_causal, order):
    for s in range(t_in.shape[0]):
        _sample_forward(t_in[s], w, tau, t_out[s], n_causal[s], order[s])


def layer_forward(t_in: np.ndarray, w: np.ndarray, tau: float):
    """Spike times of a layer. t_in (batch, n_in) ms (inf = silent), w (n_out, n_in).

    Returns t_out (batch, n_out) ms (inf = silent), n_causal (batch, n_out) int64 and order
    (batch, n_in) int64 (each sample's inputs by time; the causal set is order[:n_causal])."""
    batch, n_in = t_in.shape
    t_out = np.empty((batch, w.shape[0]))
    n_causal = np.zeros((batch, w.shape[0]), np.int64)
    order = np.empty((batch, n_in), np.int64)
    kernel = _forward_parallel if batch >= PARALLEL_BATCH else _forward_serial
    kernel(np.ascontiguousarray(t_in, dtype=np.float64), np.ascontiguousarray(w, dtype=np.float64), float(tau),
           t_out, n_causal, order)
    return t_out, n_causal, order


@njit(cache=True)
def _sample_backward(t_in, w, t_out, n_causal, order, grad_t_out, tau, gamma, grad_w, grad_t_in):
    """One sample of :func:`layer_backward`: adds into grad_w (n_out, n_in) and grad_t_in (n_in,)."""
    n_out, n_in = w.shape
    for j in range(n_out):
        if np.isfinite(t_out[j]):
            g = grad_t_out[j]
            if g == 0.0:
                continue
            a = 0.0
            for k in range(n_causal[j]):
                a += w[j, order[k]]
            denom = a - THRESHOLD
            for k in range(n_causal[j]):
                i = order[k]
                r = np.exp((t_in[i] - t_out[j]) / tau)
                grad_w[j, i] += g * tau * (r - 1.0) / denom
                grad_t_in[i] += g * w[j, i] * r / denom
        elif gamma > 0.0:
            total = 0.0
            for i in range(n_in):
                if np.isfinite(t_in[i]):
                    total += w[j, i]
            if total < THRESHOLD:
                for i in range(n_in):
                    if np.isfinite(t_in[i]):
                        grad_w[j, i] -= gamma


@njit(cache=True, parallel=True)
def _backward_parallel(t_in, w, t_out, n_causal, order, grad_t_out, tau, gamma, grad_w, grad_t_in):
    n_threads = min(t_in.shape[0], 2)
    partial = np.zeros((n_threads, w.shape[0], w.shape[1]))
    for part in prange(n_threads):
        for s in range(part, t_in.shape[0], n_threads):
            _sample_backward(t_in[s], w, t_out[s], n_causal[s], order[s], grad_t_out[s], tau, gamma, partial[part],
                             grad_t_in[s])
    for part in range(n_threads):
        grad_w += partial[part]


@njit(cache=True)
def _backward_serial(t_in, w, t_out, n_causal, order, grad_t_out, tau, gamma, grad_w, grad_t_in):
    for s in range(t_in.shape[0]):
        _sample_backward(t_in[s], w, t_out[s], n_causal[s], order[s], grad_t_out[s], tau, gamma, grad_w, grad_t_in[s])


def layer_backward(t_in, w, t_out, n_causal, order, grad_t_out, tau, gamma):
    """Exact gradients of a layer (module docstring) plus the silent-neuron penalty.

    grad_t_out (batch, n_out): dL/dt_out (ignored where t_out is inf). gamma: penalty weight per silent
    neuron and sample, ``gamma * max(0, 1 - sum of weights of spiking inputs)``. Returns grad_w
    (n_out, n_in) summed over the batch and grad_t_in (batch, n_in)."""
    grad_w = np.zeros(w.shape)
    grad_t_in = np.zeros(t_in.shape)
    kernel = _backward_parallel if t_in.shape[0] >= PARALLEL_BATCH else _backward_serial
    kernel(np.ascontiguousarray(t_in, dtype=np.float64), np.ascontiguousarray(w, dtype=np.float64), t_out, n_causal,
           order, np.ascontiguousarray(grad_t_out, dtype=np.float64), float(tau), float(gamma), grad_w, grad_t_in)
    return grad_w, grad_t_in


# ---------------------------------------------------------------------------------------------- model
def encode(features: np.ndarray, coding: Coding) -> np.ndarray:
    """(n, k) features in [0, 1] -> (n, k + 1) input spike times ms, the bias spike last."""
    times = coding.t_min + np.clip(features, 0.0, 1.0) * (coding.t_max - coding.t_min)
    return np.concatenate([times, np.full((len(features), 1), coding.t_bias)], axis=1)


class Trace(NamedTuple):
    """Everything the backward pass needs: input times, hidden layer (times, causal counts, order),
    output layer likewise (its inputs are [hidden times, bias time])."""

    t_in: np.ndarray
    t_hidden: np.ndarray
    causal_hidden: np.ndarray
    order_hidden: np.ndarray
    t_out_in: np.ndarray
    t_out: np.ndarray
    causal_out: np.ndarray
    order_out: np.ndarray


def forward(w_hidden: np.ndarray, w_out: np.ndarray, t_in: np.ndarray, tau: float) -> Trace:
    """Exact spike times of the two-layer net. w_hidden (H, n_in) (bias input last), w_out (n_classes, H + 1)
    (the bias input last), t_in (batch, n_in) ms."""
    t_hidden, causal_hidden, order_hidden = layer_forward(t_in, w_hidden, tau)
    t_out_in = np.concatenate([t_hidden, t_in[:, -1:]], axis=1)
    t_out, causal_out, order_out = layer_forward(t_out_in, w_out, tau)
    return Trace(t_in, t_hidden, causal_hidden, order_hidden, t_out_in, t_out, causal_out, order_out)


def loss_and_grad(t_out: np.ndarray, labels: np.ndarray, coding: Coding) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean cross-entropy of softmax(-min(t_out, t_cap) / xi), its gradient with respect to t_out
    (0 where silent or capped) and the predicted classes (earliest spike; all silent -> -1)."""
    t = np.minimum(t_out, coding.t_cap)
    logits = -t / coding.xi
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = float(-np.mean(np.log(p[np.arange(n), labels] + 1e-30)))
    grad_logits = p.copy()
    grad_logits[np.arange(n), labels] -= 1.0
    grad_t = np.where(t_out < coding.t_cap, -grad_logits / coding.xi / n, 0.0)
    return loss, grad_t, predict(t_out)


def predict(t_out: np.ndarray) -> np.ndarray:
    """Class of the earliest output spike per row (lowest index on ties), -1 when no output spiked."""
    winner = np.argmin(t_out, axis=1)
    return np.where(np.isfinite(t_out.min(axis=1)), winner, -1)


def gradients(w_hidden, w_out, t_in, labels, coding: Coding, tau: float, gamma: float):
    """(loss, grad_w_hidden, grad_w_out, trace) of the batch (loss without the penalty)."""
    trace = forward(w_hidden, w_out, t_in, tau)
    loss, grad_t, _ = loss_and_grad(trace.t_out, labels, coding)
    n = len(labels)
    grad_out, grad_t_out_in = layer_backward(trace.t_out_in, w_out, trace.t_out, trace.causal_out, trace.order_out,
                                             grad_t, tau, gamma / n)
    grad_hidden, _ = layer_backward(t_in, w_hidden, trace.t_hidden, trace.causal_hidden, trace.order_hidden,
                                    grad_t_out_in[:, :-1], tau, gamma / n)
    return loss, grad_hidden, grad_out, trace


def penalty(w_hidden, w_out, trace: Trace, gamma: float) -> float:
    """The silent-neuron penalty term the gradients include (mean over the batch)."""
    total = 0.0
    for t_in, w, t_out in ((trace.t_in, w_hidden, trace.t_hidden), (trace.t_out_in, w_out, trace.t_out)):
        drive = np.where(np.isfinite(t_in), 1.0, 0.0) @ w.T
        total += np.sum(np.where(np.isinf(t_out), np.maximum(0.0, THRESHOLD - drive), 0.0))
    return gamma * total / len(trace.t_in)


@dataclass(frozen=True)
class SpikeTimeConfig:
    """Training: hidden size, tau (ms), Adam (lr, betas 0.9/0.999), epochs, batch_size, gamma (penalty),
    init_mean / init_std (weights in thresholds per input, times 1/sqrt-free fan-in scaling below)."""

    hidden: int = 120
    tau_ms: float = 5.0
    epochs: int = 40
    batch_size: int = 32
    lr: float = 3e-3
    lr_decay: float = 0.95
    gamma: float = 1.0
    init_mean: float = 2.0
    init_std: float = 2.0


def init_weights(n_in: int, hidden: int, n_out: int, config: SpikeTimeConfig, rng: np.random.Generator):
    """Weights so that the summed weight of a neuron's inputs is init_mean thresholds on average (every
    neuron spikes at first), spread init_std thresholds / sqrt(fan-in)."""
    def layer(n_post, n_pre):
        return rng.normal(config.init_mean / n_pre, config.init_std / np.sqrt(n_pre), (n_post, n_pre))
    return layer(hidden, n_in), layer(n_out, hidden + 1)


class _Adam:
    def __init__(self, shapes):
        self.m = [np.zeros(s) for s in shapes]
        self.v = [np.zeros(s) for s in shapes]
        self.t = 0

    def step(self, params, grads, lr):
        self.t += 1
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            p -= lr * (m / (1 - 0.9 ** self.t)) / (np.sqrt(v / (1 - 0.999 ** self.t)) + 1e-8)


def evaluate_exact(w_hidden, w_out, t_in, labels, tau) -> dict:
    """Accuracy and mean time to decision (ms, earliest output spike, over samples with one) of the exact model."""
    t_out = forward(w_hidden, w_out, t_in, tau).t_out
    predicted = predict(t_out)
    first = t_out.min(axis=1)
    decided = np.isfinite(first)
    return {"accuracy": float(np.mean(predicted == labels)),
            "mean_decision_ms": float(first[decided].mean()) if decided.any() else None,
            "silent_samples": int((~decided).sum())}


# ---------------------------------------------------------------------------------------------- deployment
def to_network(w_hidden, w_out, tau_ms: float, dt_ms: float, duration_ms: float, classes=yinyang.CLASSES) -> Network:
    """The trained net as a FloatLIF Network on the runtime (module docstring). Populations "hidden" and
    "output"; projections input->hidden, hidden->output and the bias input->output."""
    n_hidden, n_in = w_hidden.shape
    gain = 1.0 - np.exp(-dt_ms / tau_ms)
    neuron = FloatLIF(tau_syn_ms=tau_ms, tau_mem_ms=np.inf, threshold=THRESHOLD, bias=0.0,
                      refractory_ms=duration_ms)
    bias_to_out = np.zeros((w_out.shape[0], n_in))
    bias_to_out[:, -1] = w_out[:, -1]
    return Network(
        n_inputs=n_in, dt_ms=dt_ms, output="output",
        populations=[Population("hidden", n_hidden, neuron),
                     Population("output", w_out.shape[0], neuron, probe_v=True)],
        projections=[Dense(name="input->hidden", source=INPUT, target="hidden", weights=w_hidden * gain),
                     Dense(name="hidden->output", source="hidden", target="output", weights=w_out[:, :-1] * gain),
                     Dense(name="bias->output", source=INPUT, target="output", weights=bias_to_out * gain)],
        readout=Readout("first_spike", tuple(classes)))


@njit(cache=True)
def _input_steps(t_in, dt_ms):
    return np.rint(t_in / dt_ms).astype(np.int64)


def run_deployed(network: Network, backend: str, t_in: np.ndarray, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The network on the runtime, inputs (n, n_inputs) ms presented at the nearest step, ``n_steps`` steps
    each: first output spike times (n, n_outputs) ms (a spike at step m is time m * dt; inf = none) and the
    class the first_spike readout decides (pipeline.decoders.classifier, as ``spikeloop evaluate``: earliest
    spike, ties by the higher membrane maximum, then the lower index; no spike: highest membrane maximum)."""
    runtime = build(network, backend)
    out = runtime.populations[runtime.output_name]
    decoder = ClassifierDecoder(out.size, network.readout.classes, "first_spike")
    dt = float(network.dt_ms)
    steps = _input_steps(np.where(np.isfinite(t_in), t_in, -1.0), dt)
    first = np.full((len(t_in), out.size), np.inf)
    decided = np.zeros(len(t_in), np.int64)
    for s in range(len(t_in)):
        runtime.reset()
        decoder.start(0)
        row = first[s]
        for m in range(n_steps):
            spikes = runtime.step(np.flatnonzero(steps[s] == m).astype(np.int32))
            decoder.update(spikes, m, runtime.v(runtime.output_name) if out.probe_v else None)
            row[(spikes > 0) & np.isinf(row)] = m * dt
        decided[s] = decoder.finish(n_steps)[1].index
    return first, decided


# ---------------------------------------------------------------------------------------------- event recordings
def first_spike_times(presentation: Presentation, n_inputs: int, dt_ms: float) -> np.ndarray:
    """(n_inputs + 1,) ms: the start of the first step in which each input saw an event (inf: none), then the
    bias spike at 0 (the recording's first event is in step 0)."""
    steps = np.repeat(np.arange(presentation.n_steps), np.diff(presentation.indptr)).astype(np.float64)
    times = np.full(n_inputs + 1, np.inf)
    np.minimum.at(times, presentation.index, steps * dt_ms)
    times[-1] = 0.0
    return times


def event_network(w_hidden, w_out, tau_ms: float, spec: InputSpec, input_shape, classes) -> Network:
    """The trained net for event recordings presented as ``spec`` says (binary "spikes", ``duration_us`` +
    ``tail_steps``): a relay population "first" (one neuron per input, weight 2 thresholds, refractory for
    the presentation) spikes once, one step after its input's first event, and a one-neuron population "bias"
    driven by every input spikes one step after the recording's first event (the bias spike); then
    "hidden" and "output" as :func:`to_network`. Every input time is one step later than in the exact model,
    the same for all, plus one step per layer as there."""
    n_in = int(np.prod(input_shape))
    dt_ms = spec.bin_us / 1000.0
    whole_ms = (spec.duration_us // spec.bin_us + spec.tail_steps) * dt_ms
    relay = FloatLIF(tau_syn_ms=0.0, tau_mem_ms=np.inf, threshold=THRESHOLD, bias=0.0, refractory_ms=whole_ms)
    base = to_network(w_hidden, w_out, tau_ms, dt_ms, whole_ms, classes)
    hidden = base.projection("input->hidden").weights
    to_out = base.projection("bias->output").weights[:, -1:]
    return Network(
        n_inputs=n_in, dt_ms=dt_ms, output="output", input_shape=tuple(input_shape), input_spec=spec,
        populations=[Population("first", n_in, relay), Population("bias", 1, relay), *base.populations],
        projections=[Sparse.from_dense(2.0 * THRESHOLD * np.eye(n_in), name="input->first", source=INPUT,
                                       target="first"),
                     Dense(name="input->bias", source=INPUT, target="bias", weights=np.full((1, n_in), 2.0 * THRESHOLD)),
                     Dense(name="first->hidden", source="first", target="hidden", weights=hidden[:, :-1]),
                     Dense(name="bias->hidden", source="bias", target="hidden", weights=hidden[:, -1:]),
                     base.projection("hidden->output"),
                     Dense(name="bias->output", source="bias", target="output", weights=to_out)],
        readout=base.readout)


def run_presented(network: Network, backend: str, presentations) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`run_deployed` for presentations of recordings (pipeline.train.present): first output
    spike times (n, n_outputs) ms from the recording's first event (step m ends at (m + 1) dt) and the
    classes the first_spike readout decides."""
    runtime = build(network, backend)
    out = runtime.populations[runtime.output_name]
    decoder = ClassifierDecoder(out.size, network.readout.classes, "first_spike")
    dt = float(network.dt_ms)
    first = np.full((len(presentations), out.size), np.inf)
    decided = np.zeros(len(presentations), np.int64)
    for s, p in enumerate(presentations):
        runtime.reset()
        decoder.start(0)
        row = first[s]
        for m in range(p.n_steps):
            spikes = runtime.step(p.index[p.indptr[m]:p.indptr[m + 1]])
            decoder.update(spikes, m, runtime.v(runtime.output_name) if out.probe_v else None)
            row[(spikes > 0) & np.isinf(row)] = (m + 1) * dt
        decided[s] = decoder.finish(p.n_steps)[1].index
    return first, decided


def _recordings(run: TrainRun, dc: dict, ic: dict):
    """N-MNIST-style labelled folders -> (t_train, y_train, t_test, y_test, classes, spec, input_shape,
    test presentations): inputs' first event times (ms, bias last) over the ``[input]`` window."""
    shape = (2 if ic["polarity"] == "split" else 1, -(-ic["height"] // ic["scale"]), -(-ic["width"] // ic["scale"]))
    n_in = int(np.prod(shape))
    bin_us = ic["bin_us"]
    spec = InputSpec(sensor="dvs", bin_us=bin_us, encoding="spikes", polarity=ic["polarity"],
                     duration_us=ic["duration_us"] // bin_us * bin_us, tail_steps=ic["tail_steps"], scale=ic["scale"])
    if spec.duration_us == 0:
        raise ValueError(f"[input] duration_us {ic['duration_us']} is shorter than bin_us {bin_us}")
    for key in ("train", "test"):
        if not dc[key]:
            raise ValueError(f"[data] {key}: a folder of recordings is needed with dataset \"nmnist\"")

    def folder(value):
        path = Path(value)
        return path if path.is_absolute() else run.data_dir / path

    sets = []
    for key, classes in (("train", None), ("test", "train")):
        labelled = open_labelled(folder(dc[key]), folder(dc[key + "_labels"]) if dc[key + "_labels"] else None,
                                 sets[0][0].classes if classes else None)
        if key == "train" and dc["limit"]:
            labelled = labelled.subset(range(min(dc["limit"], len(labelled))))
        if not len(labelled):
            raise ValueError(f"{folder(dc[key])}: no labelled recordings")
        presented = [present_file(p, spec, shape, n_in) for p in labelled.paths]
        times = np.array([first_spike_times(p, n_in, bin_us / 1000.0) for p in presented])
        sets.append((labelled, presented, times))
    (train, _, t_train), (test, test_p, t_test) = sets
    return (t_train, np.array(train.labels, np.int64), t_test, np.array(test.labels, np.int64), train.classes, spec,
            shape, test_p)


# ---------------------------------------------------------------------------------------------- spikeloop train
SECTIONS: dict[str, dict[str, Key]] = {
    "train": {
        "epochs": Key("int", 40, low=1, high=100_000, help="passes over the training set"),
        "batch_size": Key("int", 32, low=1, high=4096, help="samples per gradient step"),
        "lr": Key("number", 3e-3, low=0, low_open=True, high=10, help="Adam learning rate"),
        "lr_decay": Key("number", 0.95, low=0, low_open=True, high=1, help="learning rate factor per epoch"),
        "gamma": Key("number", 1.0, low=0, high=100, help="silent-neuron penalty weight (Mostafa 2017)"),
    },
    "data": {
        "dataset": Key("str", "yinyang", choices=("yinyang", "nmnist"), help="yinyang: generated from its formula; "
                       "nmnist: labelled event recordings (train / test folders), first event time per input"),
        "train_size": Key("int", 5000, low=1, high=10_000_000, help="yinyang: training samples"),
        "test_size": Key("int", 1000, low=1, high=10_000_000, help="yinyang: test samples"),
        "data_seed": Key("int", 42, low=0, help="yinyang: seed of the training set (test: data_seed + 1)"),
        "train": Key("str", "", help="nmnist: folder of training recordings (relative to $SPIKELOOP_DATA)"),
        "train_labels": Key("str", "", help="nmnist: labels file of the training folder"),
        "test": Key("str", "", help="nmnist: folder of test recordings"),
        "test_labels": Key("str", "", help="nmnist: labels file of the test folder"),
        "limit": Key("int", 0, low=0, help="nmnist: use only the first N training recordings (0: all)"),
    },
    "input": {
        "width": Key("int", 34, low=1, high=4096, help="nmnist: sensor width (px)"),
        "height": Key("int", 34, low=1, high=4096, help="nmnist: sensor height (px)"),
        "polarity": Key("str", "split", choices=("split", "merge"), help="nmnist: one input per polarity or one"),
        "scale": Key("int", 1, low=1, high=1024, help="nmnist: pool x and y by this factor"),
        "duration_us": Key("int", 100_000, low=1, high=10_000_000, help="nmnist: window whose first events code "
                           "the sample (µs from the first event)"),
        "bin_us": Key("int", 1000, low=1, high=1_000_000, help="nmnist: time resolution of the input spike times "
                      "and step of the written network (µs; [deploy] dt_ms is not used)"),
        "tail_steps": Key("int", 100, low=0, high=100_000, help="nmnist: steps after the window in which the "
                          "runtime may still decide"),
    },
    "network": {
        "hidden": Key("int", 120, low=1, high=100_000, help="hidden neurons"),
        "tau_ms": Key("number", 5.0, low=0, low_open=True, high=1e6, help="synaptic time constant (ms)"),
        "init_mean": Key("number", 2.0, help="mean summed input weight per neuron at init (thresholds)"),
        "init_std": Key("number", 2.0, low=0, help="init weight spread (thresholds * sqrt(fan-in))"),
    },
    "coding": {
        "t_min_ms": Key("number", 0.0, low=0, help="spike time of an input value 0 (ms)"),
        "t_max_ms": Key("number", 10.0, low=0, low_open=True, help="spike time of an input value 1 (ms)"),
        "t_bias_ms": Key("number", 0.0, low=0, help="spike time of the bias input (ms)"),
        "t_cap_ms": Key("number", 40.0, low=0, low_open=True, help="a silent output counts as this (ms)"),
        "xi_ms": Key("number", 1.0, low=0, low_open=True, help="softmax temperature of -t_out (ms)"),
    },
    "deploy": {
        "dt_ms": Key("number", 0.1, low=0, low_open=True, high=1000, help="step of the written network (ms)"),
        "duration_ms": Key("number", 40.0, low=0, low_open=True, high=100_000, help="presentation length on the runtime (ms)"),
        "backends": Key("str", "float", choices=("float", "float,loihi"), help="runtime backends evaluated"),
    },
}


def fit(config: dict, run: TrainRun) -> Fitted:
    """``spikeloop train`` method "spiketime": train on generated Yin-Yang, evaluate exactly and deployed."""
    tc, dc, nc, cc, pc = (config[k] for k in ("train", "data", "network", "coding", "deploy"))
    if cc["t_max_ms"] <= cc["t_min_ms"]:
        raise ValueError(f"[coding] t_max_ms {cc['t_max_ms']} must be > t_min_ms {cc['t_min_ms']}")
    if pc["duration_ms"] / pc["dt_ms"] > MAX_DEPLOY_STEPS:
        raise ValueError(f"[deploy] duration_ms / dt_ms is {pc['duration_ms'] / pc['dt_ms']:.0f} steps, "
                         f"at most {MAX_DEPLOY_STEPS}")
    coding = Coding(cc["t_min_ms"], cc["t_max_ms"], cc["t_bias_ms"], cc["t_cap_ms"], cc["xi_ms"])
    st = SpikeTimeConfig(hidden=nc["hidden"], tau_ms=nc["tau_ms"], epochs=tc["epochs"], batch_size=tc["batch_size"],
                         lr=tc["lr"], lr_decay=tc["lr_decay"], gamma=tc["gamma"], init_mean=nc["init_mean"],
                         init_std=nc["init_std"])
    if dc["dataset"] == "nmnist":
        t_train, y_train, t_test, y_test, classes, spec, shape, test_p = _recordings(run, dc, config["input"])
    else:
        x_train, y_train = yinyang.generate(dc["train_size"], dc["data_seed"])
        x_test, y_test = yinyang.generate(dc["test_size"], dc["data_seed"] + 1)
        t_train, t_test = encode(x_train, coding), encode(x_test, coding)
        classes = yinyang.CLASSES
    rng = np.random.default_rng(run.seed)
    w_hidden, w_out = init_weights(t_train.shape[1], st.hidden, len(classes), st, rng)
    adam = _Adam([w_hidden.shape, w_out.shape])
    history, first_epoch = [], 0
    resumed = run.resumed()
    if resumed is not None:
        for key, want in (("w_hidden", w_hidden.shape), ("w_out", w_out.shape)):
            if key not in resumed or resumed[key].shape != want:
                raise run.resume_error(key, f"missing or not of shape {want}")
        w_hidden, w_out = resumed["w_hidden"].copy(), resumed["w_out"].copy()
        adam.m = [resumed["m_hidden"].copy(), resumed["m_out"].copy()]
        adam.v = [resumed["v_hidden"].copy(), resumed["v_out"].copy()]
        adam.t = int(resumed["adam_t"])
        first_epoch = int(resumed["epoch"])
        history = [dict(zip(("epoch", "loss", "accuracy", "test_accuracy"), row))
                   for row in resumed["history"].tolist()]
    n = len(t_train)
    run.plan(st.epochs, n)
    for epoch in range(first_epoch, st.epochs):
        lr = st.lr * st.lr_decay ** epoch
        order = np.random.default_rng([run.seed, epoch]).permutation(n)  # resume replays the same order
        loss_sum = correct = seen = 0
        epoch_start = time.perf_counter()
        for start in range(0, n, st.batch_size):
            batch = order[start:start + st.batch_size]
            loss, g_hidden, g_out, trace = gradients(w_hidden, w_out, t_train[batch], y_train[batch], coding,
                                                     st.tau_ms, st.gamma)
            adam.step([w_hidden, w_out], [g_hidden, g_out], lr)
            loss_sum += loss * len(batch)
            correct += int(np.sum(predict(trace.t_out) == y_train[batch]))
            seen += len(batch)
            if (start // st.batch_size) % 20 == 19:
                run.progress(epoch=epoch, samples=seen, loss=loss_sum / seen, accuracy=correct / seen,
                             samples_per_s=seen / (time.perf_counter() - epoch_start))
        rate = seen / (time.perf_counter() - epoch_start)
        test = evaluate_exact(w_hidden, w_out, t_test, y_test, st.tau_ms)
        record = {"epoch": epoch + 1, "loss": loss_sum / seen, "accuracy": correct / seen,
                  "test_accuracy": test["accuracy"]}
        history.append(record)
        run.progress(epoch=epoch, samples=seen, loss=record["loss"], accuracy=record["accuracy"],
                     samples_per_s=rate, test_accuracy=test["accuracy"])
        run.checkpoint({"w_hidden": w_hidden, "w_out": w_out, "m_hidden": adam.m[0], "m_out": adam.m[1],
                        "v_hidden": adam.v[0], "v_out": adam.v[1], "adam_t": np.array(adam.t),
                        "epoch": np.array(epoch + 1),
                        "history": np.array([[h["epoch"], h["loss"], h["accuracy"], h["test_accuracy"]]
                                             for h in history])})
    if dc["dataset"] == "nmnist":
        network = event_network(w_hidden, w_out, st.tau_ms, spec, shape, classes)
    else:
        network = to_network(w_hidden, w_out, st.tau_ms, pc["dt_ms"], pc["duration_ms"])
    exact_test = evaluate_exact(w_hidden, w_out, t_test, y_test, st.tau_ms)
    metrics = {"method": "spiketime", "dataset": dc["dataset"], "train_samples": n, "test_samples": len(t_test),
               "train_accuracy": evaluate_exact(w_hidden, w_out, t_train, y_train, st.tau_ms)["accuracy"],
               "test_accuracy": exact_test["accuracy"], "mean_decision_ms": exact_test["mean_decision_ms"],
               "silent_test_samples": exact_test["silent_samples"]}
    exact_out = forward(w_hidden, w_out, t_test, st.tau_ms).t_out
    n_steps = round(pc["duration_ms"] / pc["dt_ms"])
    metrics["deployed"] = {}
    for backend in pc["backends"].split(","):
        deployed_net = network if backend == "float" else _loihi_copy(network)
        if dc["dataset"] == "nmnist":
            times, decided = run_presented(deployed_net, backend, test_p)
        else:
            times, decided = run_deployed(deployed_net, backend, t_test, n_steps)
        metrics["deployed"][backend] = deployed_metrics(times, decided, exact_out, y_test)
    return Fitted(network, history, metrics)


def deployed_metrics(times: np.ndarray, predicted: np.ndarray, exact: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy of the runtime's decisions, its decision time, and how far its first spikes are from the
    exact ones (times, exact (n, n_outputs) ms; predicted, labels (n,))."""
    first = times.min(axis=1)
    both = np.isfinite(times) & np.isfinite(exact)
    lag = times[both] - exact[both]
    return {"accuracy": float(np.mean(predicted == labels)),
            "mean_decision_ms": float(first[np.isfinite(first)].mean()) if np.isfinite(first).any() else None,
            "same_class_as_exact": float(np.mean(predicted == predict(exact))),
            "spike_time_lag_ms_mean": float(lag.mean()) if lag.size else None,
            "spike_time_lag_ms_median": float(np.median(lag)) if lag.size else None,
            "spike_time_lag_ms_max_abs": float(np.abs(lag).max()) if lag.size else None,
            "silent_mismatch": int(np.sum(np.isfinite(times) != np.isfinite(exact)))}


def _loihi_copy(network: Network) -> Network:
    """The network through pipeline.snn.convert.to_loihi, refractory capped at Loihi's 255 steps."""
    cap = 255 * float(network.dt_ms)
    capped = network
    for population in network.populations:
        capped = capped.with_population(population.name, neuron=dataclasses.replace(
            population.neuron, refractory_ms=min(float(np.max(population.neuron.refractory_ms)), cap)))
    return to_loihi(capped)[0]
