"""Training throughput of the BPTT engine on N-MNIST, against snnTorch / Norse when they are importable,
and the step latency of a trained network in the 1 kHz loop on the loihi backend.

Training workload (the issue's): a 2312-256-10 CUBA LIF network (tau_syn 5 ms, tau_mem 20 ms), N-MNIST
training recordings presented as 300 steps of 1 ms (34x34x2 binary inputs), batch 32, one full step per
batch: forward, spike-count cross-entropy, BPTT backward with the fast-sigmoid surrogate, Adam update.
spikeloop runs in float and in loihi (QAT) mode, each with 1 thread and with every thread numba has
(``numba.set_num_threads``; 2 on this machine), side by side; peers train the same network (dense input
tensors of the same recordings) with their own LIF cells, with as many torch threads as numba uses. Each
is timed over ``--batches`` batches, ``--repeats`` times, alternating; medians are printed. Under load
(other processes on the cores) wall-clock rates drop: the CPU milliseconds this process used per sample
are printed too (user + system, all threads), with the load average; 1000 / CPU ms is the rate one free
core would give.

Inference: the trained model (default: the shipped pipeline/train/models/nmnist.npz) runs the N-MNIST
test recordings step by step on the loihi runtime, back to back (per-step p50/p99) and paced at 1 kHz
(bench/snn.py's hybrid sleep/spin clock: p99 time from tick to step done, missed ticks).

    python bench/train.py [--json] [--batches N] [--repeats R] [--model MODEL.npz] [--paced-steps N]

``--json`` prints {"spikeloop": {"samples_per_s": float, ...}, "peers": {"snntorch": {...} or null,
"norse": {...} or null}, "inference": {...}}: spikeloop's samples_per_s is float mode with every thread;
spikeloop["loihi_qat"] the same for QAT; spikeloop["by_threads"][mode][str(threads)] each configuration
(samples_per_s, cpu_ms_per_sample, runs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numba
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.snn import paced  # noqa: E402
from pipeline.snn import build  # noqa: E402
from pipeline.snn.model import InputSpec  # noqa: E402
from pipeline.snn.network import Network  # noqa: E402
from pipeline.train import kernels as K  # noqa: E402
from pipeline.train.bptt import _adam, batch_events, load_set, loss_and_grad  # noqa: E402
from pipeline.train.lif_stack import LifStack, backward, forward  # noqa: E402
from recordings.datasets import shared_data_dir  # noqa: E402

BATCH = 32
STEPS = 300
SIZES = (2312, 256, 10)
TAU_SYN_MS, TAU_MEM_MS = 5.0, 20.0
PEER_NUMBERS = "issue's one-thread peers, NOT measured here: snnTorch 65, Norse 65, torch 70, Spyx 40 samples/s"
GOAL_SAMPLES_PER_S = 700.0   # 10x the best single-thread peer of the issue (torch, 70)
DEFAULT_MODEL = REPO / "pipeline" / "train" / "models" / "nmnist.npz"


def load_batches(n_batches: int):
    data = shared_data_dir() / "nmnist_small"
    spec = InputSpec(bin_us=1000, duration_us=STEPS * 1000)
    presentations, labels, _ = load_set(data / "train", data / "train_labels.txt", spec, (2, 34, 34),
                                        limit=BATCH * n_batches)
    return [(presentations[i:i + BATCH], labels[i:i + BATCH]) for i in range(0, len(presentations), BATCH)]


def spikeloop_run(batches, mode: str, threads: int | None = None) -> tuple[float, float]:
    """(samples/s wall, CPU s per sample) of full training steps over ``batches`` with ``threads`` numba
    threads (default: all)."""
    numba.set_num_threads(threads or numba.config.NUMBA_NUM_THREADS)
    model = LifStack(list(SIZES), mode, TAU_SYN_MS, TAU_MEM_MS, 1.0, False, 1024, [0.25, 2.0],
                     np.random.default_rng(0), 1.0, 0.006)
    adam = {"m": {k: np.zeros_like(v) for k, v in model.params.items()},
            "v": {k: np.zeros_like(v) for k, v in model.params.items()}}
    loss = {"kind": "count_ce", "logit_scale": 0.5, "rate_true": 0.1, "rate_false": 0.0}
    wall, cpu = time.perf_counter(), time.process_time()
    n = 0
    for step, (presentations, labels) in enumerate(batches, 1):
        indptr, index, count, n_steps = batch_events(presentations)
        layers = model.layers()
        traces = forward(layers, indptr, index, count, n_steps)
        _, _, grad_s, grad_v = loss_and_grad(traces[-1], labels, loss, n_steps)
        grads = backward(layers, traces, (indptr, index, count), grad_s, grad_v, K.FAST_SIGMOID, 5.0, False)
        _adam(model, adam, grads, step, 5e-4, 0.0)
        n += len(labels)
    return n / (time.perf_counter() - wall), (time.process_time() - cpu) / n


def dense_batches(batches):
    """(T, B, 2312) float32 input tensors and labels, for the peers."""
    out = []
    for presentations, labels in batches:
        x = np.zeros((STEPS, len(presentations), SIZES[0]), np.float32)
        for b, p in enumerate(presentations):
            x[:, b, :] = np.minimum(p.dense(SIZES[0])[:STEPS], 1)
        out.append((x, labels))
    return out


def peer_snntorch(dense):
    """snnTorch: Linear + Synaptic (CUBA LIF) twice, spike-count cross-entropy, Adam; or None."""
    try:
        import snntorch as snn
        import torch
    except ImportError:
        return None
    torch.set_num_threads(_threads())
    alpha, beta = float(np.exp(-1 / TAU_SYN_MS)), float(np.exp(-1 / TAU_MEM_MS))
    fc1, fc2 = torch.nn.Linear(SIZES[0], SIZES[1]), torch.nn.Linear(SIZES[1], SIZES[2])
    lif1 = snn.Synaptic(alpha=alpha, beta=beta, reset_mechanism="zero")
    lif2 = snn.Synaptic(alpha=alpha, beta=beta, reset_mechanism="zero")
    optimizer = torch.optim.Adam([*fc1.parameters(), *fc2.parameters()], lr=5e-4)

    def step(x, labels):
        syn1, mem1 = lif1.init_synaptic()
        syn2, mem2 = lif2.init_synaptic()
        counts = 0
        for t in range(x.shape[0]):
            s1, syn1, mem1 = lif1(fc1(x[t]), syn1, mem1)
            s2, syn2, mem2 = lif2(fc2(s1), syn2, mem2)
            counts = counts + s2
        loss = torch.nn.functional.cross_entropy(0.5 * counts, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return _time_peer(dense, step, torch)


def peer_norse(dense):
    """Norse: Linear + LIFCell twice (norse.torch.LIFCell: CUBA LIF), spike-count cross-entropy, Adam."""
    try:
        import norse.torch as norse
        import torch
    except ImportError:
        return None
    torch.set_num_threads(_threads())
    params = norse.LIFParameters(tau_syn_inv=torch.tensor(1 / TAU_SYN_MS * 1000),
                                 tau_mem_inv=torch.tensor(1 / TAU_MEM_MS * 1000), v_th=torch.tensor(1.0),
                                 v_reset=torch.tensor(0.0), v_leak=torch.tensor(0.0))
    fc1, fc2 = torch.nn.Linear(SIZES[0], SIZES[1]), torch.nn.Linear(SIZES[1], SIZES[2])
    lif1, lif2 = norse.LIFCell(params, dt=0.001), norse.LIFCell(params, dt=0.001)
    optimizer = torch.optim.Adam([*fc1.parameters(), *fc2.parameters()], lr=5e-4)

    def step(x, labels):
        s1 = s2 = None
        counts = 0
        for t in range(x.shape[0]):
            z1, s1 = lif1(fc1(x[t]), s1)
            z2, s2 = lif2(fc2(z1), s2)
            counts = counts + z2
        loss = torch.nn.functional.cross_entropy(0.5 * counts, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return _time_peer(dense, step, torch)


def _threads() -> int:
    import numba
    return numba.get_num_threads()


def _time_peer(dense, step, torch):
    tensors = [(torch.from_numpy(x), torch.from_numpy(np.asarray(labels))) for x, labels in dense]
    step(*tensors[0])  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    n = 0
    for x, labels in tensors:
        step(x, labels)
        n += x.shape[1]
    return n / (time.perf_counter() - wall), (time.process_time() - cpu) / n


def inference(model_path: Path, paced_steps: int) -> dict:
    """Per-step latency of a trained network on the loihi runtime over the N-MNIST test recordings."""
    from pipeline.train.present import present_file
    from recordings.labelled import open_labelled

    network = Network.load(model_path)
    data = shared_data_dir() / "nmnist_small"
    labelled = open_labelled(data / "test", data / "test_labels.txt", network.readout.classes)
    inputs = []
    for path in labelled.paths:
        p = present_file(path, network.input_spec, network.input_shape, network.n_inputs)
        inputs.extend(p.index[p.indptr[t]:p.indptr[t + 1]] for t in range(p.n_steps))
    runtime = build(network, "loihi")
    runtime.warmup()
    latencies = np.zeros(len(inputs), np.int64)
    clock = time.perf_counter_ns
    previous = clock()
    for k, active in enumerate(inputs):
        runtime.step(active)
        now = clock()
        latencies[k] = now - previous
        previous = now
    pacing = paced(runtime, inputs[:paced_steps])
    return {"model": str(model_path), "steps": len(inputs), "step_p50_us": float(np.percentile(latencies, 50) / 1e3),
            "step_p99_us": float(np.percentile(latencies, 99) / 1e3),
            "paced_1khz": pacing, "goal_p99_us": 150.0}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--batches", type=int, default=4, help="batches of 32 per timed run (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats (default 3)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="trained network for the inference numbers")
    parser.add_argument("--paced-steps", type=int, default=5000, help="ticks of the 1 kHz paced run")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    batches = load_batches(args.batches)
    all_threads = numba.config.NUMBA_NUM_THREADS
    thread_counts = sorted({1, all_threads})
    spikeloop_run(batches[:1], "float")  # compile / load the kernels once
    spikeloop_run(batches[:1], "loihi")
    dense = dense_batches(batches)
    configs = [(mode, threads) for mode in ("float", "loihi") for threads in thread_counts]
    runs = {config: [] for config in configs}
    runs.update({"snntorch": [], "norse": []})
    peers_available = {"snntorch": True, "norse": True}
    for _ in range(args.repeats):
        for mode, threads in configs:
            runs[mode, threads].append(spikeloop_run(batches, mode, threads))
        numba.set_num_threads(all_threads)
        for name, peer in (("snntorch", peer_snntorch), ("norse", peer_norse)):
            if peers_available[name]:
                result = peer(dense)
                peers_available[name] = result is not None
                if result is not None:
                    runs[name].append(result)

    def summary(values):
        if not values:
            return None
        rates = [v[0] for v in values]
        return {"samples_per_s": float(np.median(rates)), "runs": rates,
                "cpu_ms_per_sample": float(np.median([v[1] for v in values]) * 1e3)}

    best_peer = max((summary(runs[p])["samples_per_s"] for p in ("snntorch", "norse") if runs[p]), default=None)
    spikeloop = summary(runs["float", all_threads])
    spikeloop.update({"loihi_qat": summary(runs["loihi", all_threads]), "batch": BATCH, "steps": STEPS,
                      "sizes": list(SIZES), "threads": all_threads,
                      "by_threads": {mode: {str(t): summary(runs[mode, t]) for t in thread_counts}
                                     for mode in ("float", "loihi")},
                      "goal_samples_per_s": GOAL_SAMPLES_PER_S,
                      "over_best_peer": spikeloop["samples_per_s"] / best_peer if best_peer else None})
    result = {"spikeloop": spikeloop, "peers": {"snntorch": summary(runs["snntorch"]), "norse": summary(runs["norse"])},
              "load_average_1min": [load_before[0], os.getloadavg()[0]]}
    if Path(args.model).exists():
        result["inference"] = inference(Path(args.model), args.paced_steps)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"load average (1 min) before/after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"training 2312-256-10 LIF, {STEPS} steps of 1 ms, batch {BATCH} (median of {args.repeats} x "
          f"{args.batches} batches; CPU ms = user + system of all threads; 1000 / CPU ms = one free core's rate):")
    rows = [(f"spikeloop {'float' if mode == 'float' else 'loihi QAT'}, {t} thread{'s' if t > 1 else ''}",
             (mode, t)) for mode, t in configs] + [("snntorch", "snntorch"), ("norse", "norse")]
    for name, key in rows:
        s = summary(runs[key])
        print(f"  {name:<28} " + (f"{s['samples_per_s']:8.1f} samples/s  {s['cpu_ms_per_sample']:6.2f} CPU ms/sample"
                                    f"  ({1000 / s['cpu_ms_per_sample']:6.0f} per CPU-second)"
                                    if s else "   not installed (pip install .[bench])"))
    if best_peer:
        print(f"  spikeloop float / best peer: {spikeloop['over_best_peer']:.1f}x")
    print(f"  ({PEER_NUMBERS}; goal {GOAL_SAMPLES_PER_S:.0f} samples/s)")
    if "inference" in result:
        inf = result["inference"]
        print(f"inference on loihi ({inf['model']}, {inf['steps']} steps of the test set): step p50 "
              f"{inf['step_p50_us']:.1f} µs, p99 {inf['step_p99_us']:.1f} µs (goal <= 150); paced 1 kHz: "
              f"tick-to-done p99 {inf['paced_1khz']['finish_after_tick_p99_us']:.1f} µs, "
              f"missed {inf['paced_1khz']['missed']}/{inf['paced_1khz']['ticks']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
