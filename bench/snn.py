"""SNN runtime throughput, per-step latency and 1 kHz pacing, both backends, against a cache-aware memory bound.

Workloads (Poisson inputs, 2 % active per 1 ms step, dense 8-bit mixed-sign weights):

* ``overhead``: 64 inputs -> 16 LIF -> 4 LIF. Everything sits in L1/L2; the step time is the fixed
  cost of a step (Python call, kernel entry, loops), not memory.
* ``llc``: 4,096 inputs (a 64x64 grid) -> 1,024 LIF -> 10 LIF. Weights 4 MiB (loihi, int8) / 16 MiB
  (float32): they fit the last-level cache.
* ``dram``: 16,384 inputs -> 4,096 LIF -> 10 LIF. Weights 64 MiB / 256 MiB: larger than the last-level
  cache (read from /sys/devices/system/cpu/cpu0/cache), so they stream from DRAM.

For each workload and backend, repeated ``--repeats`` times and alternating: a back-to-back run of
``--steps`` steps (steps/s, per-step p50/p99), then the bound: a numba streaming read (int64 sum) over
the runtime's own weight array, i.e. a buffer of the kernel's working set at the memory level it
lives in (the better of one read stream and four side by side). Bytes per step = synaptic ops per step x weight size (each synaptic op reads one weight);
the bound is that read bandwidth / bytes per step, and the fraction of bound is measured steps/s over
it. Medians of the repeats are printed. The ``llc`` workload is also paced at 1 kHz with a hybrid
sleep/spin clock (missed ticks).

``--baseline PATH`` also runs the same workloads' back-to-back steps with another checkout of the
code (PYTHONPATH=PATH, e.g. the tree before a change) and with this one, in alternating child
processes, and prints the step times side by side.

    python bench/snn.py [--json] [--steps N] [--repeats R] [--paced-steps N] [--realtime] [--baseline PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

from pipeline.snn import INPUT, Dense, LoihiLIF, Network, Population, build

INPUT_RATE = 0.02
BACKENDS = ("float", "loihi")
#: name -> (inputs, hidden, outputs, hidden vth, output vth, grid)
WORKLOADS = {
    "overhead": (64, 16, 4, 300, 100, (1, 8, 8)),
    "llc": (4096, 1024, 10, 3000, 750, (1, 64, 64)),
    "dram": (16384, 4096, 10, 6000, 1500, (1, 128, 128)),
}
GOALS = {"float_fraction_of_bound": 0.8, "loihi_over_float": 1.3, "p99_us": 150.0, "missed_fraction": 0.001}
ANCHORS = ("Reference anchors, NOT measured here (from the issue text): Brian2 cpp_standalone ~7 k steps/s, "
           "snnTorch/Norse on CPU ~0.9 k steps/s, Lava CPU backend ~1.2 k steps/s (on a smaller network).")
CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")


def workload(name: str = "llc", seed: int = 0) -> Network:
    """A benchmark network: the hidden layer fires a few % per step under the 2 % Poisson input."""
    n_in, n_hidden, n_out, vth_hidden, vth_out, grid = WORKLOADS[name]
    rng = np.random.default_rng(seed)
    w1 = rng.integers(-128, 128, (n_hidden, n_in), dtype=np.int8)
    w2 = rng.integers(-128, 128, (n_out, n_hidden), dtype=np.int8)
    return Network(
        n_inputs=n_in, input_shape=grid,
        populations=[Population("hidden", n_hidden, LoihiLIF(du=800, dv=200, vth=vth_hidden)),
                     Population("out", n_out, LoihiLIF(du=800, dv=200, vth=vth_out))],
        projections=[Dense(name="in_hidden", source=INPUT, target="hidden", weights=w1),
                     Dense(name="hidden_out", source="hidden", target="out", weights=w2)])


def poisson_inputs(n_inputs: int, steps: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.flatnonzero(rng.random(n_inputs) < INPUT_RATE).astype(np.int32) for _ in range(steps)]


def cache_sizes() -> dict[str, int]:
    """Data/unified cache sizes in bytes by level name ("L1d", "L2", "L3"), from sysfs ({} if absent)."""
    sizes = {}
    for index in sorted(CACHE_DIR.glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            level = (index / "level").read_text().strip()
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1], 1)
        sizes[f"L{level}{'d' if kind == 'Data' else ''}"] = int(text.rstrip("KMG")) * scale
    return sizes


def memory_level(nbytes: int, caches: dict[str, int]) -> str:
    """The smallest cache level that holds ``nbytes``, or "DRAM"."""
    for name, size in sorted(caches.items(), key=lambda item: item[1]):
        if nbytes <= size:
            return name
    return "DRAM"


@njit(cache=True)
def _stream_read(words, streams, passes):
    """Sum ``words`` (int64) ``passes`` times, reading ``streams`` (1 or 4) equal parts side by side.
    Each pass xors in its number, so no pass can be folded into another."""
    n = words.shape[0] // streams
    total = 0
    for p in range(passes):
        if streams == 4:
            for i in range(n):
                total += (words[i] + words[n + i] + words[2 * n + i] + words[3 * n + i]) ^ p
        else:
            for i in range(n):
                total += words[i] ^ p
    return total


def read_bandwidth(buffer: np.ndarray, min_seconds: float = 0.05, min_calls: int = 3) -> float:
    """Streaming read bandwidth (bytes/s) of ``buffer`` itself: its bytes read as int64 in place, so the
    same memory at the same cache level as whatever uses it. The better of one read stream and four
    side by side (the step kernel reads four weight rows at once), each the median of timed calls of at
    least ``min_seconds`` in total; small buffers are read many times per call (at least 1 MiB)."""
    raw = np.frombuffer(buffer, dtype=np.uint8)
    words = raw[:raw.size - raw.size % 32].view(np.int64)
    passes = max(1, -(-(1 << 20) // max(words.nbytes, 1)))
    best = 0.0
    for streams in (1, 4):
        _stream_read(words, streams, 1)  # compiled, and the buffer is where reads leave it
        rates = []
        start = time.perf_counter()
        while len(rates) < min_calls or time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            _stream_read(words, streams, passes)
            rates.append(words.nbytes * passes / (time.perf_counter() - t0))
        best = max(best, float(np.median(rates)))
    return best


def back_to_back(runtime, inputs: list[np.ndarray], latencies_ns: np.ndarray) -> float:
    """Run every step, recording each step's duration; returns the wall time in s."""
    runtime.reset()
    clock = time.perf_counter_ns
    start = clock()
    previous = start
    for k, active in enumerate(inputs):
        runtime.step(active)
        now = clock()
        latencies_ns[k] = now - previous
        previous = now
    return (previous - start) / 1e9


def steal_ms() -> float:
    """Hypervisor steal time of all CPUs so far (ms, from /proc/stat; 0 where unavailable)."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()
        return int(fields[8]) * 1000.0 / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def paced(runtime, inputs: list[np.ndarray], period_ns: int = 1_000_000, spin_ns: int = 200_000) -> dict:
    """Step once per tick (sleep until spin_ns before the tick, then spin); a tick is missed when its step
    finishes after the next tick is due."""
    runtime.reset()
    clock = time.perf_counter_ns
    late_ns = np.zeros(max(len(inputs), 1), dtype=np.int64)
    stolen = steal_ms()
    start = clock() + period_ns
    for k, active in enumerate(inputs):
        due = start + k * period_ns
        remaining = due - clock()
        if remaining > spin_ns:
            time.sleep((remaining - spin_ns) / 1e9)
        while clock() < due:
            pass
        runtime.step(active)
        done = clock()
        late_ns[k] = done - due
    missed_ticks = late_ns[:len(inputs)] > period_ns
    missed = int(missed_ticks.sum())
    # consecutive missed ticks are one stall (the loop catches up back to back afterwards)
    stalls = int(np.count_nonzero(missed_ticks[1:] & ~missed_ticks[:-1]) + missed_ticks[0]) if missed else 0
    return {"ticks": len(inputs), "missed": missed, "missed_fraction": missed / max(len(inputs), 1), "stalls": stalls,
            "worst_late_ms": float(late_ns.max() / 1e6), "hypervisor_steal_ms": steal_ms() - stolen,
            "finish_after_tick_p99_us": float(np.percentile(late_ns, 99) / 1e3)}


def kernel_runs(names: list[str], steps: int, repeats: int) -> dict:
    """Back-to-back runs only (what ``--baseline`` compares): per workload and backend, steps/s of each
    repeat and per-step p50/p99 over all of them."""
    out = {}
    for name in names:
        network = workload(name)
        inputs = poisson_inputs(network.n_inputs, steps)
        runtimes = {backend: build(network, backend) for backend in BACKENDS}
        for runtime in runtimes.values():
            runtime.warmup()
        rates = {b: [] for b in runtimes}
        latencies = {b: np.zeros((repeats, steps), dtype=np.int64) for b in runtimes}
        for r in range(repeats):
            for backend, runtime in runtimes.items():
                rates[backend].append(steps / back_to_back(runtime, inputs, latencies[backend][r]))
        out[name] = {b: {"steps_per_s": rates[b], "p50_us": float(np.percentile(latencies[b], 50) / 1e3),
                         "p99_us": float(np.percentile(latencies[b], 99) / 1e3)} for b in runtimes}
        del runtimes, network
    return out


def run(steps: int, repeats: int, paced_steps: int) -> dict:
    caches = cache_sizes()
    results = {"caches_bytes": caches, "workloads": {}}
    for name in WORKLOADS:
        network = workload(name)
        inputs = poisson_inputs(network.n_inputs, steps)
        runtimes = {backend: build(network, backend) for backend in BACKENDS}
        for runtime in runtimes.values():
            runtime.warmup()
        rates = {b: [] for b in runtimes}
        bounds = {b: [] for b in runtimes}
        latencies = {b: np.zeros((repeats, steps), dtype=np.int64) for b in runtimes}
        ops = {}
        for r in range(repeats):  # kernel and its bound alternate, and both backends see the same load
            for backend, runtime in runtimes.items():
                rates[backend].append(steps / back_to_back(runtime, inputs, latencies[backend][r]))
                ops[backend] = runtime.counters.total()
                bounds[backend].append(read_bandwidth(runtime.weights))
        n_in, n_hidden, n_out = WORKLOADS[name][:3]
        entry = {"description": f"{n_in} Poisson inputs ({INPUT_RATE:.0%}/step) -> {n_hidden} LIF dense -> "
                                f"{n_out} LIF, {steps} steps", "backends": {}}
        for backend, runtime in runtimes.items():
            total = ops[backend]
            steps_per_s = float(np.median(rates[backend]))
            bandwidth = float(np.median(bounds[backend]))
            hidden_spikes = runtime.counters.by_population()["hidden"]["spikes"] / steps
            bytes_per_step = total["synaptic_ops"] / steps * runtime.weights.itemsize  # one weight read per synaptic op
            bound = bandwidth / bytes_per_step
            lat = latencies[backend].ravel() / 1e3
            entry["backends"][backend] = {
                "weight_dtype": str(runtime.weights.dtype),
                "steps_per_s": steps_per_s,
                "steps_per_s_range": [float(min(rates[backend])), float(max(rates[backend]))],
                "synaptic_events_per_s": total["synaptic_ops"] / steps * steps_per_s,
                "p50_us": float(np.percentile(lat, 50)), "p99_us": float(np.percentile(lat, 99)),
                "max_us": float(lat.max()),
                "working_set_bytes": int(runtime.weights.nbytes),
                "memory_level": memory_level(runtime.weights.nbytes, caches),
                "bound_read_GBps": bandwidth / 1e9,
                "bound_read_GBps_range": [float(min(bounds[backend])) / 1e9, float(max(bounds[backend])) / 1e9],
                "weight_bytes_per_step": bytes_per_step, "bound_steps_per_s": bound,
                "fraction_of_bound": steps_per_s / bound,
                "active_inputs_per_step": (total["synaptic_ops"] / steps - hidden_spikes * n_out) / n_hidden,
                "hidden_spikes_per_step": hidden_spikes,
            }
        if name == "llc":
            for backend, runtime in runtimes.items():
                b = entry["backends"][backend]
                b["paced_1kHz"] = paced(runtime, inputs[:paced_steps])
                # the keys of earlier versions of this benchmark: the bound now *is* the resident one
                b["resident_read_GBps"] = b["bound_read_GBps"]
                b["fraction_of_resident_bound"] = b["fraction_of_bound"]
        results["workloads"][name] = entry
        del runtimes, network
    main = results["workloads"]["llc"]
    results["workload"] = main["description"]
    results["backends"] = main["backends"]
    results["memory_bandwidth_GBps"] = min(b["bound_read_GBps"] for b in results["workloads"]["dram"]["backends"].values())
    b = main["backends"]
    results["loihi_over_float"] = b["loihi"]["steps_per_s"] / b["float"]["steps_per_s"]
    results["goals"] = {
        "float_fraction_of_bound >= 0.8": b["float"]["fraction_of_bound"] >= GOALS["float_fraction_of_bound"],
        "loihi_over_float >= 1.3": results["loihi_over_float"] >= GOALS["loihi_over_float"],
        "p99_us <= 150 (both)": all(x["p99_us"] <= GOALS["p99_us"] for x in b.values()),
        "missed < 0.1 % (both)": all(x["paced_1kHz"]["missed_fraction"] < GOALS["missed_fraction"] for x in b.values()),
    }
    results["scheduler"] = "SCHED_FIFO" if os.sched_getscheduler(0) == os.SCHED_FIFO else "normal"
    results["load_average_1min"] = os.getloadavg()[0]
    results["cpus"] = os.cpu_count()
    results["anchors_not_measured_here"] = ANCHORS
    return results


def compare(baseline: str, steps: int, repeats: int) -> dict:
    """Back-to-back step times of this tree and ``baseline`` in alternating child processes (one repeat each)."""
    trees = {"baseline": str(Path(baseline).resolve()), "this": str(Path(__file__).resolve().parents[1])}
    runs = {label: [] for label in trees}
    for _ in range(repeats):
        for label, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": tree}
            done = subprocess.run([sys.executable, __file__, "--kernel-runs", "--steps", str(steps)], env=env,
                                  capture_output=True, text=True, check=False)
            if done.returncode:
                raise RuntimeError(f"--baseline: the run with PYTHONPATH={tree} failed:\n{done.stderr}")
            runs[label].append(json.loads(done.stdout))
    table = {}
    for name in WORKLOADS:
        for backend in BACKENDS:
            row = {}
            for label in trees:
                rates = [r[name][backend]["steps_per_s"][0] for r in runs[label]]
                row[label] = {"steps_per_s": float(np.median(rates)), "steps_per_s_range": [min(rates), max(rates)],
                              "step_us": 1e6 / float(np.median(rates)),
                              "p50_us": float(np.median([r[name][backend]["p50_us"] for r in runs[label]])),
                              "p99_us": float(np.median([r[name][backend]["p99_us"] for r in runs[label]]))}
            row["this_over_baseline"] = row["this"]["steps_per_s"] / row["baseline"]["steps_per_s"]
            table[f"{name}/{backend}"] = row
    return {"trees": trees, "repeats": repeats, "steps": steps, "rows": table}


def print_table(results: dict) -> None:
    caches = ", ".join(f"{k} {v // 1024} KiB" for k, v in results["caches_bytes"].items())
    print(f"caches (cpu0, sysfs): {caches}")
    print("bound = streaming read of the runtime's own weight array (its working set, at the level it lives in), "
          "measured alternating with the kernel; medians of the repeats")
    header = (f"{'workload':<10}{'backend':<8}{'weights':<9}{'set MiB':>8}{'level':>6}{'steps/s':>10}{'p50 us':>8}"
              f"{'p99 us':>8}{'bytes/step':>11}{'bound GB/s':>11}{'bound steps/s':>14}{'of bound':>9}")
    print(header)
    for name, entry in results["workloads"].items():
        for backend, b in entry["backends"].items():
            print(f"{name:<10}{backend:<8}{b['weight_dtype']:<9}{b['working_set_bytes'] / 2**20:>8.1f}"
                  f"{b['memory_level']:>6}{b['steps_per_s']:>10.0f}{b['p50_us']:>8.1f}{b['p99_us']:>8.1f}"
                  f"{b['weight_bytes_per_step']:>11.0f}{b['bound_read_GBps']:>11.1f}{b['bound_steps_per_s']:>14.0f}"
                  f"{b['fraction_of_bound']:>9.2f}")
    for name, entry in results["workloads"].items():
        for backend, b in entry["backends"].items():
            if b["fraction_of_bound"] < 0.05:
                print(f"{name} {backend}: {b['fraction_of_bound']:.3f} of the read bound: the step time here is not "
                      f"weight reads but the fixed cost of a step and the arithmetic per synaptic op")
    for name, entry in results["workloads"].items():
        f = entry["backends"]["float"]
        print(f"{name}: {entry['description']}; {f['active_inputs_per_step']:.1f} active inputs/step, "
              f"{f['hidden_spikes_per_step']:.1f} hidden spikes/step")
    for name, b in results["backends"].items():
        p = b["paced_1kHz"]
        print(f"llc {name} paced at 1 kHz: {p['missed']} missed ticks of {p['ticks']} in {p['stalls']} stall(s), worst "
              f"step finished {p['worst_late_ms']:.1f} ms after its tick, p99 {p['finish_after_tick_p99_us']:.0f} us; "
              f"hypervisor steal meanwhile {p['hypervisor_steal_ms']:.0f} ms")
    print(f"llc loihi / float steps/s (measured side by side): {results['loihi_over_float']:.2f}")
    print(f"machine load during the run: 1-min load average {results['load_average_1min']:.1f} on "
          f"{results['cpus']} CPUs (other processes compete for the cores; pacing suffers first); "
          f"scheduler: {results['scheduler']}")
    for goal, ok in results["goals"].items():
        print(f"goal {goal}: {'met' if ok else 'NOT met'}")
    print(results["anchors_not_measured_here"])
    if "baseline" in results:
        c = results["baseline"]
        print(f"\nbefore/after: back-to-back steps, alternating child processes, {c['repeats']} runs of {c['steps']} "
              f"steps each, medians; speedup = this steps/s / baseline steps/s (baseline {c['trees']['baseline']}, "
              f"this {c['trees']['this']})")
        print(f"{'workload/backend':<18}{'base us/step':>13}{'this us/step':>13}{'speedup':>10}"
              f"{'base p50':>9}{'this p50':>9}{'base p99':>9}{'this p99':>9}  steps/s range base | this")
        for key, row in c["rows"].items():
            base, this = row["baseline"], row["this"]
            print(f"{key:<18}{base['step_us']:>13.2f}{this['step_us']:>13.2f}{row['this_over_baseline']:>10.3f}"
                  f"{base['p50_us']:>9.2f}{this['p50_us']:>9.2f}{base['p99_us']:>9.1f}{this['p99_us']:>9.1f}  "
                  f"{base['steps_per_s_range'][0]:.0f}-{base['steps_per_s_range'][1]:.0f} | "
                  f"{this['steps_per_s_range'][0]:.0f}-{this['steps_per_s_range'][1]:.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--steps", type=int, default=10_000, help="steps per back-to-back run (default 10000)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats (default 3)")
    parser.add_argument("--paced-steps", type=int, default=10_000, help="ticks of the 1 kHz paced run (default 10000)")
    parser.add_argument("--realtime", action="store_true",
                        help="run under SCHED_FIFO (needs root/CAP_SYS_NICE), as a real-time controller would")
    parser.add_argument("--baseline", metavar="PATH",
                        help="also compare back-to-back step times with the code at PATH (alternating child processes)")
    parser.add_argument("--kernel-runs", action="store_true", help=argparse.SUPPRESS)  # one --baseline child run
    args = parser.parse_args(argv)
    if args.kernel_runs:
        print(json.dumps(kernel_runs(list(WORKLOADS), args.steps, 1)))
        return 0
    if args.realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        except (AttributeError, PermissionError, OSError) as error:
            print(f"--realtime: SCHED_FIFO refused ({error}); running with the normal scheduler", file=sys.stderr)
    results = run(args.steps, args.repeats, args.paced_steps)
    if args.baseline:
        results["baseline"] = compare(args.baseline, args.steps, args.repeats)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
