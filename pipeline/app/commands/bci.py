"""``spikeloop bci {fit,eval,replay,run}``: BCI decoders on DAD .mat files and MC_Maze CSVs.

    spikeloop bci fit DATA --decoder {wiener,kalman,ridge,snn} --out MODEL.npz [--block tr]
    spikeloop bci eval DATA --decoder D --folds K [--json]          (the issue's evaluation contract)
    spikeloop bci replay DATA --model MODEL.npz [--plot out.png] [--json] [--speed X]
    spikeloop bci run launch/bci.toml [--set KEY=TOML] [--json]   (neural replay -> decoder -> motors)

DATA is a DAD .mat file (block "tr" = Ytr/Xtr, "te" = Yte/Xte) or an MC_Maze trial CSV (binned at
--bin-ms, hand velocity). Decoders: ``wiener`` (least squares on the current bin; --history/--ridge),
``kalman`` (Wu et al. / Neural_Decoding form; --C), ``ridge`` (Wiener over 10 bins of history with the
ridge penalty chosen by inner cross-validation on the training folds: the causal decoder that beats the
plain Kalman filter), ``snn`` (the current-bin Wiener filter as a spiking network; --backend).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

DECODERS = ("wiener", "kalman", "ridge", "snn")
#: Defaults per decoder for --history and --ridge when not given.
DEFAULT_HISTORY = {"wiener": 1, "kalman": 1, "ridge": 10, "snn": 1}
DEFAULT_RIDGE = {"wiener": 0.0, "kalman": 0.0, "ridge": "auto", "snn": 0.0}


def _ridge(text: str):
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"ridge must be a number >= 0 or 'auto', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"ridge must be >= 0, got {value}")
    return value


def make_decoder(args: argparse.Namespace, bin_us: int):
    """A fresh (unfitted) decoder as selected by the command-line options."""
    from pipeline.decoders.bci.kalman import KalmanDecoder
    from pipeline.decoders.bci.snn import SNNDecoder
    from pipeline.decoders.bci.wiener import WienerDecoder

    name = args.decoder
    history = args.history if args.history is not None else DEFAULT_HISTORY[name]
    ridge = args.ridge if args.ridge is not None else DEFAULT_RIDGE[name]
    if name == "kalman":
        return KalmanDecoder(history=history, lag=args.lag, C=args.C, steady_state=True, bin_us=bin_us)
    if name == "snn":
        if history != 1 or args.lag:
            raise ValueError("the snn decoder implements the current-bin filter (no --history/--lag)")
        steps = args.steps or max(1, round(bin_us / 1000))
        return SNNDecoder(steps=steps, neurons=args.neurons, backend=args.backend, ridge=ridge, bin_us=bin_us)
    return WienerDecoder(history=history, lag=args.lag, ridge=ridge, bin_us=bin_us)


def _load(args: argparse.Namespace, block: str):
    from recordings.bci_data import open_binned

    return open_binned(args.data, block=block, bin_ms=args.bin_ms)


def fit(args: argparse.Namespace) -> int:
    from pipeline.decoders.bci.model_io import save_decoder

    data = _load(args, args.block or "tr")
    decoder = make_decoder(args, data.bin_us).fit(data.counts, data.kinematics)
    path = save_decoder(decoder, args.out)
    dropped = decoder.scaler.dropped
    print(f"{data.source}: {len(data)} bins x {data.n_units} units -> {decoder.kind} "
          f"(history {decoder.history}, lag {decoder.lag}) saved to {path}"
          + (f"; dropped silent units {dropped.tolist()}" if len(dropped) else ""))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from pipeline.decoders.bci.evaluate import cross_validate

    data = _load(args, args.block or "te")
    result = cross_validate(data, lambda: make_decoder(args, data.bin_us), args.folds, args.decoder,
                            steady_state=args.steady_state)
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{data.source}: {len(data)} bins x {data.n_units} units, {args.folds} contiguous folds")
    for i, fold in enumerate(result.folds):
        print(f"  fold {i}: bins [{fold.start}, {fold.stop})  R^2 = {np.round(fold.r2, 4).tolist()}")
    print(f"{args.decoder}: R^2 {np.round(result.r2, 4).tolist()} (mean {summary['r2_mean']:.4f}), "
          f"{summary['decode_us_per_bin']:.2f} µs/bin; dropped silent units: {summary['dropped_units'] or 'none'}")
    return 0


def _spike_source(args: argparse.Namespace, bin_us: int):
    """The AER replay source for DATA and the binned truth at the model's bin width."""
    from pathlib import Path

    if Path(args.data).suffix.lower() == ".csv":
        from recordings.mc_maze import McMazeSource

        source = McMazeSource(args.data, speed=args.speed or 1.0, fast=args.speed is None, chunk_us=args.chunk_us)
        return source, source.trial.binned(bin_us / 1000)
    from recordings.dad import DadSource

    source = DadSource(args.data, args.block or "te", bin_us / 1000, speed=args.speed or 1.0,
                       fast=args.speed is None, chunk_us=args.chunk_us)
    return source, source.data


def replay(args: argparse.Namespace) -> int:
    from pipeline.decoders.bci.binning import OnlineBinner
    from pipeline.decoders.bci.evaluate import r2_score
    from pipeline.decoders.bci.features import BCIInputError
    from pipeline.decoders.bci.model_io import load_decoder

    decoder = load_decoder(args.model)
    bin_us = decoder.bin_us or round((args.bin_ms or 50.0) * 1000)
    source, truth = _spike_source(args, bin_us)
    if source.info.channels != decoder.n_units:
        source.close()
        raise BCIInputError(f"units mismatch: {args.model} was fitted on {decoder.n_units} units, "
                            f"{args.data} has {source.info.channels}")
    decoder.warmup()
    decoder.reset()
    binner = OnlineBinner(source.info.channels, bin_us, source.t_start_us)
    decoded = np.zeros((len(truth), decoder.n_out))
    step_ns = np.zeros(len(truth), dtype=np.int64)
    n = 0
    wall0 = time.perf_counter_ns()
    for packet in source.packets():
        for row in binner.push(packet.events, packet.t_end_us):
            if n >= len(truth):
                break
            t0 = time.perf_counter_ns()
            decoded[n] = decoder.step(row)
            step_ns[n] = time.perf_counter_ns() - t0
            n += 1
    wall_s = (time.perf_counter_ns() - wall0) / 1e9
    source.close()
    r2 = r2_score(truth.kinematics[:n], decoded[:n])
    us = step_ns[:n] / 1e3
    report = {"decoder": decoder.kind, "model": str(args.model), "data": truth.source, "bins": n,
              "bin_ms": bin_us / 1000, "r2": [float(v) for v in r2], "r2_mean": float(r2.mean()),
              "step_us_p50": float(np.percentile(us, 50)), "step_us_p99": float(np.percentile(us, 99)),
              "wall_s": wall_s, "late_spikes": binner.skipped}
    if args.plot:
        from pipeline.app.bci_plot import plot_decoded

        plot_decoded(args.plot, truth.kinematics[:n], decoded[:n], r2, truth.axes, bin_us,
                     f"{decoder.kind} decoder, online replay of {truth.source}")
        report["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{truth.source}: {n} bins of {bin_us / 1000:g} ms streamed through {decoder.kind} in {wall_s:.2f} s")
        print(f"R^2 {np.round(r2, 4).tolist()} (mean {r2.mean():.4f}); step p50 {report['step_us_p50']:.1f} µs, "
              f"p99 {report['step_us_p99']:.1f} µs" + (f"; plot: {args.plot}" if args.plot else ""))
    return 0


def run_launch(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from pipeline.app.bci_run import build_and_run, load_bci_launch

    spec = load_bci_launch(args.launch, args.set)
    report = build_and_run(spec)
    if args.json:
        print(json.dumps(asdict(report)))
        return 0
    print(f"{spec.display}: {report.bins} bins decoded, {report.commands} commands written in {report.wall_s:.2f} s; "
          f"R^2 {np.round(report.r2, 4).tolist()}")
    if report.decode_us:
        print(f"decode+map per bin: p50 {report.decode_us['p50']:.1f} µs, p99 {report.decode_us['p99']:.1f} µs; "
              f"packet -> command: p50 {report.latency_us.get('p50', 0):.1f} µs, p99 {report.latency_us.get('p99', 0):.1f} µs"
              + (f"; sink errors: {report.sink_errors}" if report.sink_errors else ""))
    return 0


def _guarded(func):
    def run(args: argparse.Namespace) -> int:
        from pipeline.decoders.bci.features import BCIInputError
        from recordings.base import RecordingError

        try:
            return func(args)
        except (BCIInputError, RecordingError, ValueError, OSError, RuntimeError) as exc:
            print(f"spikeloop bci: error: {exc}", file=sys.stderr)
            return 2
    return run


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="DAD .mat file or MC_Maze trial CSV")
    p.add_argument("--block", choices=("tr", "te"), default=None,
                   help="DAD block: tr = Ytr/Xtr, te = Yte/Xte (default: tr for fit, te for eval/replay)")
    p.add_argument("--bin-ms", type=float, default=None,
                   help="bin width in ms (MC_Maze: binning, default 20; DAD: time base, default 50)")


def _decoder_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--decoder", choices=DECODERS, required=True)
    p.add_argument("--history", type=int, default=None, help="bins per prediction (default: 1; ridge: 10)")
    p.add_argument("--lag", type=int, default=0, help="bins between the newest bin used and the predicted one")
    p.add_argument("--ridge", type=_ridge, default=None, help="ridge penalty (z-scored units) or 'auto'")
    p.add_argument("--C", type=float, default=1.0, help="Kalman process-noise scale (Neural_Decoding's C)")
    p.add_argument("--steady-state", action="store_true",
                   help="eval, Kalman: score the steady-state gain (the online fast path) instead of the full filter "
                        "(fitted models always step online with the steady-state gain)")
    p.add_argument("--backend", choices=("loihi", "float"), default="loihi", help="snn: SNN backend")
    p.add_argument("--steps", type=int, default=None, help="snn: SNN steps per bin (default: bin width in ms)")
    p.add_argument("--neurons", type=int, default=4, help="snn: output neurons per sign and axis")


def register(subparsers) -> None:
    parser = subparsers.add_parser("bci", help="BCI decoders: fit, cross-validate, replay neural data",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bci_command", metavar="ACTION", required=True)
    p = sub.add_parser("fit", help="fit a decoder on a whole block and save it (.npz)")
    _data_options(p)
    _decoder_options(p)
    p.add_argument("--out", required=True, help="model file to write (.npz)")
    p.set_defaults(func=_guarded(fit))
    p = sub.add_parser("eval", help="contiguous K-fold cross-validation (R^2 per axis)")
    _data_options(p)
    _decoder_options(p)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print one JSON record")
    p.set_defaults(func=_guarded(evaluate))
    p = sub.add_parser("replay", help="stream DATA as spikes through a fitted model, one bin at a time")
    _data_options(p)
    p.add_argument("--model", required=True, help="model .npz from 'bci fit'")
    p.add_argument("--plot", default=None, help="write a PNG of decoded vs true kinematics")
    p.add_argument("--json", action="store_true", help="print one JSON record")
    p.add_argument("--speed", type=float, default=None, help="pace at X times real time (default: as fast as possible)")
    p.add_argument("--chunk-us", type=int, default=10_000, help="packet length of the spike stream (µs)")
    p.set_defaults(func=_guarded(replay))
    p = sub.add_parser("run", help="run a BCI launch file: neural replay -> decoder -> motor commands -> sinks")
    p.add_argument("launch", help="launch file (e.g. launch/bci.toml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=TOML",
                   help="override a value, e.g. --set loop.mode='\"fast\"' (repeatable)")
    p.add_argument("--json", action="store_true", help="print the run report as one JSON record")
    p.set_defaults(func=_guarded(run_launch))
