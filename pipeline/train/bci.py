"""Surrogate-gradient training of the recurrent spiking BCI decoder (``spikeloop bci eval --decoder snn``).

The network is one recurrent population of CUBA LIF neurons (synaptic current tau_syn_ms, membrane leak
tau_mem_ms) stepped once per bin (dt = the bin width): each unit's spike count of bin t is a graded
spike into the population (payload = count), the population's spikes feed back through recurrent
weights. The decoded velocity is a learned linear readout filter of the population::

    y_t = b + sum_{k=0}^{taps-1} R_k s_{t-k} + R_v v_t        (s spikes (n,), v post-reset v/threshold)

Training: the engine's kernels (pipeline.train.lif_stack.forward/backward, QAT: the loihi forward is
the runtime bit for bit) on chunks of ``chunk`` bins cut from the training segments; loss = mean squared
error of the z-scored velocity after ``burn_in`` bins of each chunk; Adam on input, recurrent and readout
weights. Afterwards the readout is refitted by ridge on the features of the whole training data run
through the deployed (quantized) network.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from pipeline.decoders.bci.snn import TrainedSNN
from pipeline.train.bptt import ADAM_BETAS, ADAM_EPS
from pipeline.train.kernels import SURROGATES
from pipeline.train.lif_stack import LifStack, backward, forward, loihi_decays, quantize


#: Readout penalties and membrane weights tried by ``RSNNConfig.readout_select`` (z-scored targets).
READOUT_RIDGES = (1000.0, 2000.0, 3000.0, 5000.0)
V_SCALES = (1.0, 0.5, 0.3, 0.1)


@dataclass(frozen=True)
class RSNNConfig:
    """neurons: population size; taps: readout filter length (bins); tau_syn_ms, tau_mem_ms: time
    constants (ms); epochs, batch, chunk (bins per training sequence), burn_in (bins of a chunk not
    scored), lr (Adam), ridge (readout refit penalty, z-scored targets), mode "loihi" (QAT) or "float";
    validation: fraction of the training bins held out at the end of the last training segment (causal,
    contiguous; 0 = none): after every epoch the network is scored there (mean squared error of the
    z-scored targets through the current readout) and the weights of the best epoch are kept; ensemble:
    networks averaged (see :func:`fit_decoder`; 2: one network's R^2 depends on its seed by more than its
    margin over ridge on chewie's block tr, two averaged beat ridge on both axes and blocks for every seed
    measured, at about 1.6x the time per bin); v_scale: weight of the membranes in the readout refit
    (see :func:`fit_readout`; ridge and v_scale may be per-axis tuples); readout_select: fraction of the
    training bins at the end held out to choose ridge and v_scale per axis (:func:`select_readout`; the
    network is trained twice, the final one on all bins; 0 = use ridge and v_scale as given)."""

    neurons: int = 128
    taps: int = 15
    tau_syn_ms: float = 50.0
    tau_mem_ms: float = 100.0
    epochs: int = 40
    batch: int = 16
    chunk: int = 60
    burn_in: int = 10
    lr: float = 5e-4
    ridge: float = 3000.0
    vth: int = 256
    max_weight: float = 2.0
    mode: str = "loihi"
    seed: int = 0
    validation: float = 0.0
    ensemble: int = 2
    v_scale: float = 1.0
    readout_select: float = 0.0


def features(spikes: np.ndarray, vpost: np.ndarray, taps: int) -> np.ndarray:
    """Readout features (B, T, taps * n + n): spikes of bins t, t-1, ..., t-taps+1 (0 before the start)
    then the post-reset membrane v/threshold of bin t; spikes, vpost (B, T, n)."""
    B, T, n = spikes.shape
    out = np.zeros((B, T, (taps + 1) * n), np.float32)
    for k in range(taps):
        out[:, k:, k * n:(k + 1) * n] = spikes[:, :T - k]
    out[:, :, taps * n:] = vpost
    return out


def _events(counts: np.ndarray):
    """Graded input events (CSR, pipeline.train.kernels) of a batch of count chunks (B, T, n_units)."""
    B, T, _ = counts.shape
    b, t, i = np.nonzero(counts)
    # global positions: row (b, t) holds the events of sample b at bin t
    flat = np.zeros(B * T + 1, np.int64)
    np.add.at(flat, b * T + t + 1, 1)
    flat = np.cumsum(flat)
    indptr = np.empty((B, T + 1), np.int64)
    for s in range(B):
        indptr[s] = flat[s * T:(s + 1) * T + 1]
    return indptr, i.astype(np.int32), counts[b, t, i].astype(np.int32)


def run(stack: LifStack, counts: np.ndarray):
    """Forward chunks (B, T, n_units) through the stack -> (trace, features (B, T, p))."""
    indptr, index, count = _events(counts)
    trace = forward(stack.layers(), indptr, index, count, counts.shape[1])[0]
    vpost = np.where(trace.spikes.astype(bool), 0.0, trace.vnorm).astype(np.float32)
    return trace, (indptr, index, count), features(trace.spikes.astype(np.float32), vpost, stack.taps)


def make_stack(n_units: int, config: RSNNConfig, bin_ms: float, rng: np.random.Generator) -> LifStack:
    """A one-population recurrent LifStack (weights w0 input-major, r0 recurrent) for counts of n_units."""
    stack = LifStack([n_units, config.neurons], config.mode, config.tau_syn_ms, config.tau_mem_ms, bin_ms,
                     recurrent=False, vth=config.vth, max_weight=[config.max_weight], rng=rng, input_rate=0.5)
    n = config.neurons
    stack.params["w0"] = np.clip(rng.normal(0, 0.6 / math.sqrt(n_units), (n_units, n)), -stack.limit[0],
                                 stack.limit[0]).astype(np.float32)
    stack.params["r0"] = np.clip(rng.normal(0, 0.3 / math.sqrt(n), (n, n)), -stack.limit[0],
                                 stack.limit[0]).astype(np.float32)
    stack.taps = config.taps
    return stack


def ridge_readout(F: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Readout (p, d) and bias (d,) by ridge regression of y (N, d) on features F (N, p)."""
    fm, ym = F.mean(axis=0), y.mean(axis=0)
    Fc = F - fm
    R = np.linalg.solve(Fc.T @ Fc + ridge * np.eye(F.shape[1]), Fc.T @ (y - ym))
    return R, ym - fm @ R


def split_validation(segments, config: RSNNConfig):
    """(segments to learn from, validation (context_start, start, stop) or None): the last
    ``config.validation`` of all training bins, cut from the end of the last segment (contiguous; the
    validation run starts up to one chunk earlier so that its state has warmed up). No split when it would
    leave the last segment shorter than one chunk or hold out fewer than 2 * burn_in bins."""
    segments = list(segments)
    total = sum(b - a for a, b in segments)
    held = int(round(config.validation * total))
    a, b = segments[-1]
    if held < 2 * config.burn_in or b - held - a < config.chunk:
        return segments, None
    start = b - held
    return segments[:-1] + [(a, start)], (max(a, start - config.chunk), start, b)


def validation_loss(stack: LifStack, counts: np.ndarray, y: np.ndarray, check, R: np.ndarray,
                    bias: np.ndarray) -> float:
    """Mean squared error of the z-scored targets y over bins [start, stop) of ``check`` = (context_start,
    start, stop), the network run from context_start, through the readout R (p, d), bias (d,)."""
    c, start, stop = check
    _, _, F = run(stack, counts[None, c:stop])
    return float(((F[0, start - c:] @ R + bias - y[start:stop]) ** 2).mean())


def train(counts: np.ndarray, y: np.ndarray, segments, config: RSNNConfig, bin_ms: float, progress=None):
    """Train on counts (T, n_units) (raw counts: graded spikes) and targets y (T, d) (z-scored) over
    ``segments`` ([start, stop) bin ranges, each a continuous recording). Returns (stack, readout (p, d),
    bias (d,), history: list of per-epoch mean losses)."""
    rng = np.random.default_rng(config.seed)
    d = y.shape[1]
    all_segments = list(segments)
    learn, check = split_validation(all_segments, config)
    stack = make_stack(counts.shape[1], config, bin_ms, rng)
    p = (config.taps + 1) * config.neurons
    R = np.zeros((p, d), np.float32)
    bias = np.zeros(d, np.float32)
    starts = [(a, s) for a, b in learn for s in range(a, b - config.chunk + 1, config.chunk // 2)]
    if not starts:
        raise ValueError(f"training segments are shorter than one chunk of {config.chunk} bins")
    params = {"w0": stack.params["w0"], "r0": stack.params["r0"], "R": R, "bias": bias}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v2 = {k: np.zeros_like(v) for k, v in params.items()}
    kind, slope, step, history, best = SURROGATES["fast_sigmoid"], 5.0, 0, [], None
    L, burn = config.chunk, config.burn_in
    for epoch in range(config.epochs):
        order = rng.permutation(len(starts))
        losses = []
        for i0 in range(0, len(order), config.batch):
            idx = [starts[j][1] for j in order[i0:i0 + config.batch]]
            xb = np.stack([counts[s:s + L] for s in idx])
            yb = np.stack([y[s:s + L] for s in idx])
            trace, inputs, F = run(stack, xb)
            pred = F @ R + bias
            err = (pred - yb)[:, burn:]
            n_scored = err.shape[0] * err.shape[1] * d
            losses.append(float((err ** 2).sum() / n_scored))
            gy = np.zeros_like(pred)
            gy[:, burn:] = 2 * err / n_scored
            gF = gy @ R.T                                                  # (B, T, p)
            n = config.neurons
            g_s = np.zeros(trace.spikes.shape, np.float32)
            for k in range(config.taps):
                g_s[:, :L - k] += gF[:, k:, k * n:(k + 1) * n]
            g_v = (gF[:, :, config.taps * n:] * (1 - trace.spikes)).astype(np.float32)
            grads = backward(stack.layers(), [trace], inputs, g_s, g_v, kind, slope, True)
            grads["R"] = np.einsum("btp,btd->pd", F, gy).astype(np.float32)
            grads["bias"] = gy.sum(axis=(0, 1)).astype(np.float32)
            step += 1
            b1, b2 = ADAM_BETAS
            for name, w in params.items():
                g = grads[name]
                m[name] = b1 * m[name] + (1 - b1) * g
                v2[name] = b2 * v2[name] + (1 - b2) * g * g
                w -= config.lr * (m[name] / (1 - b1 ** step)) / (np.sqrt(v2[name] / (1 - b2 ** step)) + ADAM_EPS)
            stack.clip()
        history.append(float(np.mean(losses)))
        if progress is not None:
            progress(epoch=epoch + 1, loss=history[-1])
        if not np.all([np.isfinite(w).all() for w in params.values()]):
            raise ValueError(f"snn decoder training diverged (non-finite weights) at epoch {epoch + 1}")
        if check is not None:
            score = validation_loss(stack, counts, y, check, R, bias)
            if best is None or score < best[0]:
                best = (score, {k: v.copy() for k, v in params.items()})
    if best is not None:                       # the epoch that scored best on the held-out bins
        for name, w in params.items():
            w[...] = best[1][name]
    # refit the readout on the deployed network's features over whole segments (validation bins included)
    F, Y = segment_features(stack, counts, y, all_segments, burn)
    R, bias = fit_readout(F, Y, config.ridge, config.v_scale, config.taps * config.neurons)
    return stack, R, bias, history


def segment_features(stack: LifStack, counts: np.ndarray, y: np.ndarray, segments, burn: int):
    """Features (N, p) float64 and targets (N, d) of the network run over each whole segment, the first
    ``burn`` bins of every segment left out."""
    Fs, ys = [], []
    for a, b in segments:
        _, _, F = run(stack, counts[None, a:b])
        Fs.append(F[0, burn:])
        ys.append(y[a + burn:b])
    return np.concatenate(Fs).astype(np.float64), np.concatenate(ys)


def fit_readout(F: np.ndarray, y: np.ndarray, ridge, v_scale, n_spike: int):
    """Ridge readout (p, d), bias (d,) of y (N, d) on F (N, p) whose membrane columns (from n_spike on)
    count v_scale times their value in the penalised fit (v_scale < 1: the membranes' weights are held
    to 1 / v_scale^2 times the penalty); the readout applies to the unscaled features. ridge, v_scale:
    one value, or one per axis (d,) (each axis is its own regression)."""
    d = y.shape[1]
    ridge, v_scale = np.broadcast_to(ridge, (d,)), np.broadcast_to(v_scale, (d,))
    R, bias = np.zeros((F.shape[1], d)), np.zeros(d)
    for pair in sorted(set(zip(ridge.tolist(), v_scale.tolist()))):
        axes = [i for i in range(d) if (ridge[i], v_scale[i]) == pair]
        scale = np.ones(F.shape[1])
        scale[n_spike:] = pair[1]
        Ra, ba = ridge_readout(F * scale, y[:, axes], pair[0])
        R[:, axes], bias[axes] = Ra * scale[:, None], ba
    return R, bias


def select_readout(counts: np.ndarray, y: np.ndarray, segments, config: RSNNConfig, bin_ms: float):
    """Per axis, the readout penalty and membrane weight from READOUT_RIDGES x V_SCALES with the least
    squared error on the last ``config.readout_select`` of the training bins (contiguous, cut from the end
    of the longest segment, see :func:`split_validation`), scored with a network trained (same seed) on the bins before them only;
    returns (ridge (d,), v_scale (d,), errors (len(V_SCALES), len(READOUT_RIDGES), d)). Without room for
    the split: (config.ridge, config.v_scale, None)."""
    d = y.shape[1]
    longest_last = sorted(segments, key=lambda seg: seg[1] - seg[0])     # cut from the longest segment
    learn, check = split_validation(longest_last, dataclasses.replace(config, validation=config.readout_select))
    if check is None:
        return np.broadcast_to(config.ridge, (d,)).copy(), np.broadcast_to(config.v_scale, (d,)).copy(), None
    stack = train(counts, y, learn, dataclasses.replace(config, validation=0.0, readout_select=0.0), bin_ms)[0]
    F, Y = segment_features(stack, counts, y, learn, config.burn_in)
    c, start, stop = check
    Fv = run(stack, counts[None, c:stop])[2][0, start - c:].astype(np.float64)
    n_spike = config.taps * config.neurons
    errors = np.zeros((len(V_SCALES), len(READOUT_RIDGES), d))
    for i, v_scale in enumerate(V_SCALES):         # one thin SVD per membrane weight serves every penalty
        scale = np.ones(F.shape[1])
        scale[n_spike:] = v_scale
        f_mean, y_mean = (F * scale).mean(axis=0), Y.mean(axis=0)
        U, S, Vt = np.linalg.svd(F * scale - f_mean, full_matrices=False)
        proj = U.T @ (Y - y_mean)
        Fs = (Fv * scale - f_mean) @ Vt.T
        for j, ridge in enumerate(READOUT_RIDGES):
            pred = Fs @ (proj * (S / (S * S + ridge))[:, None]) + y_mean
            errors[i, j] = ((pred - y[start:stop]) ** 2).mean(axis=0)
    best = [np.unravel_index(int(np.argmin(errors[:, :, a])), errors.shape[:2]) for a in range(d)]
    return np.array([READOUT_RIDGES[j] for _, j in best]), np.array([V_SCALES[i] for i, _ in best]), errors


def fit_decoder(counts: np.ndarray, kinematics: np.ndarray, segments, bin_ms: float,
                config: RSNNConfig = RSNNConfig()) -> TrainedSNN:
    """The trainer of pipeline.decoders.bci.snn.SNNDecoder: z-score the kinematics (T, d), train on counts
    (T, n_units) over ``segments``, and return the network and readout (in kinematics units).

    With ``config.ensemble`` K > 1, K networks are trained (seeds seed .. seed + K - 1, each with its own
    readout) and returned as one population of K * neurons with block-diagonal recurrent weights whose
    readout is the mean of the K readouts: the ensemble average, run as one network."""
    y_mean, y_std = kinematics.mean(axis=0), kinematics.std(axis=0)
    y_std = np.where(y_std > 0, y_std, 1.0)
    z = (kinematics - y_mean) / y_std
    members = []
    for k in range(config.ensemble):
        member = dataclasses.replace(config, seed=config.seed + k)
        if config.readout_select > 0:
            ridge, v_scale, _ = select_readout(counts, z, segments, member, bin_ms)
            member = dataclasses.replace(member, ridge=tuple(ridge), v_scale=tuple(v_scale))
        members.append(train(counts, z, segments, member, bin_ms)[:3])
    du, dv = loihi_decays(config.tau_syn_ms, config.tau_mem_ms, bin_ms)
    e = members[0][0].weight_exp[0]
    n, K, taps = config.neurons, config.ensemble, config.taps
    w_in = np.concatenate([stack.params["w0"].T for stack, _, _ in members]).astype(np.float64)
    w_rec = np.zeros((K * n, K * n))
    readout = np.zeros(((taps + 1) * K * n, kinematics.shape[1]))
    for k, (stack, R, _) in enumerate(members):
        w_rec[k * n:(k + 1) * n, k * n:(k + 1) * n] = stack.params["r0"].T
        for t in range(taps + 1):              # rows t * n + i of member k -> t * K n + k n + i
            readout[t * K * n + k * n:t * K * n + (k + 1) * n] = R[t * n:(t + 1) * n] / K
    bias = np.mean([b for _, _, b in members], axis=0)
    return TrainedSNN(w_in, w_rec, quantize(w_in, e, config.vth).astype(np.int16),
                      quantize(w_rec, e, config.vth).astype(np.int16), e, du, dv, config.vth, config.tau_syn_ms,
                      config.tau_mem_ms, bin_ms, taps, readout * y_std, bias * y_std + y_mean)
