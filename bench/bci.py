"""Decode time per bin of the BCI decoders for 200 units (synthetic, cosine-tuned Poisson counts).

Measured in the same run, one bin at a time through the online API (``decoder.step(counts)``):
steady-state Kalman (the real-time fast path; goal p99 <= 50 µs), the full Kalman filter (covariance
recursion per bin), Wiener (current bin), ridge Wiener over 10 bins, the spiking decoder (recurrent
population of 128 LIF neurons, one SNN step per bin, readout filter of 15 bins; loihi and float backends;
and the default decoder, two such networks averaged, run as one population of 2 x 128; trained for 10 epochs here: the time per bin depends on the sizes and the spike rate, not on the fit),
and Neural_Decoding's KalmanFilterRegression.predict per bin (when installed).

Also, on real bins (--data, default $SPIKELOOP_DATA/bci/chewie_demo.mat, block te, 71 units): the spiking
decoder fitted with its default training and the 10-bin ridge (penalty by inner cross-validation) on the
first 1400 bins, each timed per bin over the rest (one network and the default two).

    python bench/bci.py [--json] [--bins N] [--data FILE]
"""
from __future__ import annotations

import argparse
import functools
import contextlib
import io
import json
import os
import time
import warnings

import numpy as np

from pipeline.decoders.bci.kalman import KalmanDecoder
from pipeline.decoders.bci.snn import SNNDecoder
from pipeline.decoders.bci.wiener import WienerDecoder
from pipeline.train.bci import RSNNConfig, fit_decoder
from recordings.dad import load_dad

N_UNITS = 200


def synthetic(n_bins: int, seed: int = 0):
    """Counts (n_bins, 200) from cosine-tuned Poisson units driven by a smooth 2-D velocity (n_bins, 2)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_bins) * 0.05
    vel = np.column_stack([np.sin(0.7 * t) + 0.3 * np.sin(2.3 * t), np.cos(0.5 * t) + 0.3 * np.cos(1.9 * t)])
    pref = rng.uniform(0, 2 * np.pi, N_UNITS)
    base = rng.uniform(0.5, 3.0, N_UNITS)
    rate = base * np.exp(0.6 * (vel[:, :1] * np.cos(pref) + vel[:, 1:] * np.sin(pref)))
    return rng.poisson(rate).astype(np.float64), vel


def time_steps(decoder, counts: np.ndarray) -> np.ndarray:
    """Per-bin wall time (µs) of decoder.step over counts, after a warm-up."""
    decoder.warmup()
    decoder.reset()
    out = np.zeros(len(counts))
    clock = time.perf_counter_ns
    step = decoder.step
    for i in range(len(counts)):
        t0 = clock()
        step(counts[i])
        out[i] = clock() - t0
    return out / 1e3


def _one_blas_thread():
    """Neural_Decoding inverts an n x n matrix per bin through BLAS/LAPACK; one thread is its fastest
    setting on a shared 2-core machine (threads otherwise fight the other processes)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def time_neural_decoding(train_counts, train_vel, counts, vel) -> np.ndarray | None:
    """Neural_Decoding's Kalman predict over the block, as wall time per bin (µs), or None."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):    # it prints warnings about optional packages
            from Neural_Decoding.decoders import KalmanFilterRegression
    except ImportError:
        return None
    ref = KalmanFilterRegression(C=1)
    ref.fit(train_counts, train_vel)
    with warnings.catch_warnings(), _one_blas_thread():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter_ns()
        ref.predict(counts, vel)
    return np.array([(time.perf_counter_ns() - t0) / 1e3 / len(counts)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--bins", type=int, default=3000, help="bins timed per decoder (SNN and Neural_Decoding: 1/10)")
    parser.add_argument("--data", default=None, help="DAD .mat file for the real-data SNN timing")
    args = parser.parse_args()
    counts, vel = synthetic(4000 + args.bins)
    train_c, train_v, test_c, test_v = counts[:4000], vel[:4000], counts[4000:], vel[4000:]
    decoders = {
        "kalman_steady_state": KalmanDecoder(steady_state=True),
        "kalman_full": KalmanDecoder(steady_state=False),
        "wiener": WienerDecoder(),
        "ridge_history10": WienerDecoder(history=10, ridge=1000.0),
        "snn_loihi_128": SNNDecoder("loihi", functools.partial(fit_decoder, config=RSNNConfig(epochs=10, ensemble=1)),
                                    bin_us=50_000),
        "snn_loihi_2x128": SNNDecoder("loihi", functools.partial(fit_decoder, config=RSNNConfig(epochs=10)),
                                      bin_us=50_000),
    }
    results = {}
    for name, dec in decoders.items():
        dec.fit(train_c, train_v)
        us = time_steps(dec, test_c)
        results[name] = {"bins": len(us), "p50_us": float(np.percentile(us, 50)),
                         "p99_us": float(np.percentile(us, 99)), "max_us": float(us.max())}
        if name == "snn_loihi_128":
            us = time_steps(dec.with_backend("float"), test_c)
            results["snn_float_128"] = {"bins": len(us), "p50_us": float(np.percentile(us, 50)),
                                        "p99_us": float(np.percentile(us, 99)), "max_us": float(us.max())}
    real = args.data or os.path.join(os.environ.get("SPIKELOOP_DATA", "../shared/data"), "bci", "chewie_demo.mat")
    if os.path.isfile(real):
        data = load_dad(real, "te")
        single = functools.partial(fit_decoder, config=RSNNConfig(ensemble=1))
        chewie = {"snn_loihi_128_chewie": SNNDecoder("loihi", single, bin_us=data.bin_us),
                  "snn_loihi_2x128_chewie": SNNDecoder("loihi", fit_decoder, bin_us=data.bin_us),
                  "ridge_history10_chewie": WienerDecoder(history=10, ridge="auto", bin_us=data.bin_us)}
        for name, dec in chewie.items():
            dec.fit(data.counts[:1400], data.kinematics[:1400])
            us = time_steps(dec, data.counts[1400:])
            results[name] = {"bins": len(us), "p50_us": float(np.percentile(us, 50)),
                             "p99_us": float(np.percentile(us, 99)), "max_us": float(us.max())}
    nd_bins = max(50, args.bins // 10)
    nd = time_neural_decoding(train_c, train_v, test_c[:nd_bins], test_v[:nd_bins])
    if nd is not None:
        results["neural_decoding_kalman_predict"] = {"bins": nd_bins, "mean_us": float(nd[0])}
    record = {"units": N_UNITS, "goal_p99_us": 50.0, "results": results,
              "steady_state_meets_goal": results["kalman_steady_state"]["p99_us"] <= 50.0,
              "snn_meets_goal": results["snn_loihi_128"]["p99_us"] <= 50.0,
              "snn_2x128_meets_goal": results["snn_loihi_2x128"]["p99_us"] <= 50.0}
    if "snn_loihi_2x128_chewie" in results:
        record["snn_2x128_chewie_meets_goal"] = results["snn_loihi_2x128_chewie"]["p99_us"] <= 50.0
    if args.json:
        print(json.dumps(record))
        return 0
    print(f"decode time per bin, {N_UNITS} units, one bin per step() call (µs)")
    print(f"{'decoder':<32}{'bins':>7}{'p50':>10}{'p99':>10}{'max':>10}")
    for name, r in results.items():
        if "p50_us" in r:
            print(f"{name:<32}{r['bins']:>7}{r['p50_us']:>10.2f}{r['p99_us']:>10.2f}{r['max_us']:>10.1f}")
        else:
            print(f"{name:<32}{r['bins']:>7}{r['mean_us']:>10.1f}   (mean per bin over a block predict)")
    ss = results["kalman_steady_state"]
    print(f"steady-state Kalman p99 {ss['p99_us']:.2f} µs vs goal 50 µs: {'met' if ss['p99_us'] <= 50 else 'NOT met'}")
    for name in ("snn_loihi_128", "snn_loihi_2x128", "snn_loihi_128_chewie", "snn_loihi_2x128_chewie"):
        if name in results:
            p99 = results[name]["p99_us"]
            print(f"spiking decoder {name} p99 {p99:.2f} µs vs goal 50 µs: {'met' if p99 <= 50 else 'NOT met'}")
    if nd is not None:
        print(f"speed-up vs Neural_Decoding's Kalman predict: x{nd[0] / ss['p50_us']:.0f} (p50)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
