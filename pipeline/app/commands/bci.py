"""``spikeloop bci {fit,eval,replay,run}``: BCI decoders on DAD .mat files and MC_Maze CSVs.

    spikeloop bci fit DATA --decoder {wiener,kalman,ridge,snn} --out MODEL.npz [--block tr]
    spikeloop bci eval DATA --decoder D --folds K [--json]          (the issue's evaluation contract)
    spikeloop bci replay DATA --model MODEL.npz [--plot out.png] [--json] [--speed X]
    spikeloop bci run launch/bci.toml [--set KEY=TOML] [--json]   (neural replay -> decoder -> motors)

``replay`` and ``run`` build the same launch graph as ``spikeloop launch`` (pipeline.app.launch: neural
recording -> CountBinner -> the decoder, stepped by pipeline.loop.Loop -> the [output] mapping -> sinks) and
add the R^2 of the decoded bins against the recording's kinematics.

DATA is a DAD .mat file (block "tr" = Ytr/Xtr, "te" = Yte/Xte) or an MC_Maze trial CSV (binned at
--bin-ms, hand velocity). Decoders: ``wiener`` (least squares on the current bin; --history/--ridge),
``kalman`` (Wu et al. / Neural_Decoding form; --C), ``ridge`` (Wiener over 10 bins of history with the
ridge penalty chosen by inner cross-validation on the training folds: the causal decoder that beats the
plain Kalman filter), ``snn`` (a recurrent spiking network trained with surrogate gradients; --backend).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.app import arguments
from pipeline.app.bci_plot import plot_decoded
from pipeline.app.errors import check_output_path, fail
from pipeline.app.launch import Graph, build_graph, check_launch, load_launch
from pipeline.decoders.bci.evaluate import cross_validate, r2_score
from pipeline.decoders.bci.factory import DECODER_KINDS, make_decoder
from pipeline.train.bci import RSNNConfig, fit_decoder
from pipeline.decoders.bci.features import BCIInputError
from pipeline.decoders.bci.model_io import save_decoder
from pipeline.loop import LoopReport
from recordings.base import RecordingError
from recordings.bci_data import open_binned


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


def _new_decoder(args: argparse.Namespace, bin_us: int):
    """A fresh (unfitted) decoder as selected by the command-line options (the snn-only ones, as --neurons and
    --members, are ignored for the other decoders)."""
    trainer = snn_trainer(args.neurons, args.seed, args.members) if args.decoder == "snn" else None
    return make_decoder(args.decoder, bin_us, history=args.history, lag=args.lag, ridge=args.ridge, C=args.C,
                        backend=args.backend, steps=args.steps, trainer=trainer)


def snn_trainer(neurons: int | None, seed: int = 0, members: int | None = None):
    """The snn decoder's trainer (pipeline.train.bci.fit_decoder): ``members`` networks (None: RSNNConfig's
    default) of ``neurons`` each (None: the default), training seeds ``seed`` .. seed + members - 1."""
    config = RSNNConfig(seed=seed)
    if neurons is not None:
        config = dataclasses.replace(config, neurons=neurons)
    if members is not None:
        config = dataclasses.replace(config, ensemble=members)
    if config.neurons * config.ensemble > MAX_NEURONS:
        raise ValueError(f"--neurons {config.neurons} x --members {config.ensemble} = "
                         f"{config.neurons * config.ensemble} neurons in one population, more than {MAX_NEURONS}")
    return functools.partial(fit_decoder, config=config)


def _bin_ms(args: argparse.Namespace) -> float | None:
    """The bin width: --rates-to-spikes BIN_MS (the rates' bins) or --bin-ms; both given must agree."""
    rates_ms = getattr(args, "rates_to_spikes", None)
    if rates_ms is not None and args.bin_ms is not None and rates_ms != args.bin_ms:
        raise ValueError(f"--bin-ms {args.bin_ms:g} and --rates-to-spikes {rates_ms:g}: the rates' bins are the "
                         f"replay's bins (give one of them)")
    return rates_ms if rates_ms is not None else args.bin_ms


def _load(args: argparse.Namespace, block: str):
    return open_binned(args.data, block=block, bin_ms=_bin_ms(args), rates=args.rates_to_spikes is not None)


def fit(args: argparse.Namespace) -> int:
    data = _load(args, args.block or "tr")
    decoder = _new_decoder(args, data.bin_us).fit(data.counts, data.kinematics)
    path = save_decoder(decoder, args.out)
    dropped = decoder.scaler.dropped
    print(f"{data.source}: {len(data)} bins x {data.n_units} units -> {decoder.kind} "
          f"(history {decoder.history}, lag {decoder.lag}) saved to {path}"
          + (f"; dropped silent units {dropped.tolist()}" if len(dropped) else ""))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    data = _load(args, args.block or "te")
    result = cross_validate(data, lambda: _new_decoder(args, data.bin_us), args.folds, args.decoder,
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


@dataclass
class DecodedRun:
    """A BCI launch graph's run: the loop's final report, every decoded bin (n, d) and its R^2 per axis
    against the replayed recording's kinematics (repeated when the source loops; empty below 2 bins)."""

    report: LoopReport
    decoded: np.ndarray
    r2: list = field(default_factory=list)


def run_decoding(graph: Graph) -> DecodedRun:
    """Warm up and run a launch graph whose stepper is a bin-level decoder, keeping its decoded kinematics
    (a tap on the loop's decode step); the graph is closed at the end (motors stopped)."""
    decoded: list[np.ndarray] = []
    decode = graph.loop.decode

    def tap(kinematics: np.ndarray, t_us: int):
        decoded.append(np.array(kinematics))
        return decode(kinematics, t_us)

    graph.loop.decode = tap
    try:
        graph.loop.warmup()
        report = graph.loop.run()
    finally:
        graph.close()
    values = np.array(decoded).reshape(len(decoded), graph.decoder.n_out)
    truth = graph.source.data.kinematics
    r2 = []
    if len(values) > 1:
        r2 = [float(v) for v in r2_score(np.resize(truth, values.shape), values)]
    return DecodedRun(report, values, r2)


def _percentiles_us(p50_ms: float, p99_ms: float, max_ms: float) -> dict:
    """{"p50", "p99", "max"} in µs from a report's ms fields; {} when nothing was measured (nan)."""
    if math.isnan(p50_ms):
        return {}
    return {"p50": p50_ms * 1000, "p99": p99_ms * 1000, "max": max_ms * 1000}


def replay(args: argparse.Namespace) -> int:
    """Stream DATA through a fitted model: the launch graph of a neural recording and a bin-level decoder,
    without sinks, scored against the recording's kinematics."""
    data = Path(args.data).expanduser().resolve()
    source = {"type": "mc_maze" if data.suffix.lower() == ".csv" else "dad", "path": str(data),
              "block": args.block or "te", "bin_ms": _bin_ms(args) or 0.0}
    if args.rates_to_spikes is not None:
        if source["type"] != "dad":
            raise ValueError(f"{args.data}: --rates-to-spikes applies to DAD .mat files (an MC_Maze CSV holds spike "
                             f"times)")
        source["rates"] = True
    loop = {"mode": "fast" if args.speed is None else "paced", "speed": args.speed or 1.0,
            "chunk_ms": args.chunk_ms if args.chunk_ms is not None else args.chunk_us / 1000, "report_period_s": 0}
    decoder = {"model": str(Path(args.model).expanduser().resolve())}
    spec = check_launch({"source": source, "loop": loop, "decoder": decoder}, Path.cwd() / "bci-replay",
                        display="bci replay", require_sinks=False)
    graph = build_graph(spec)
    run = run_decoding(graph)
    truth = graph.source.data
    n, bin_us = len(run.decoded), spec.loop.dt_us
    report = {"decoder": graph.decoder.kind, "model": str(args.model), "data": truth.source, "bins": n,
              "bin_ms": bin_us / 1000, "r2": run.r2, "r2_mean": float(np.mean(run.r2)) if run.r2 else math.nan,
              "step_us_p50": run.report.step_time_p50_us, "step_us_p99": run.report.step_time_p99_us,
              "wall_s": run.report.wall_s, "late_spikes": run.report.late_events}
    if args.plot:
        plot_decoded(args.plot, truth.kinematics[:n], run.decoded, np.array(run.r2), truth.axes, bin_us,
                     f"{graph.decoder.kind} decoder, online replay of {truth.source}")
        report["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{truth.source}: {n} bins of {bin_us / 1000:g} ms streamed through {graph.decoder.kind} in "
              f"{report['wall_s']:.2f} s")
        print(f"R^2 {np.round(run.r2, 4).tolist()} (mean {report['r2_mean']:.4f}); step p50 "
              f"{report['step_us_p50']:.1f} µs, p99 {report['step_us_p99']:.1f} µs"
              + (f"; plot: {args.plot}" if args.plot else ""))
    return 0


def run_launch(args: argparse.Namespace) -> int:
    """``bci run``: a BCI launch file through the launch graph, reported with R^2 of the decoded bins."""
    sets = list(args.set)
    if args.rates_to_spikes is not None:
        sets += ["source.rates=true", f"source.bin_ms={args.rates_to_spikes!r}"]
    spec = load_launch(args.launch, sets)
    if spec.network is not None:
        raise ValueError(f"{spec.display}: a BCI launch file has no [network] (its [decoder] steps on binned "
                         f"counts); run it with spikeloop launch")
    run = run_decoding(build_graph(spec))
    r = run.report
    report = {"bins": r.steps, "commands": r.commands, "sink_errors": r.sink_errors,
              "decode_us": _percentiles_us(r.step_time_p50_us / 1000, r.step_time_p99_us / 1000,
                                           r.step_time_max_us / 1000),
              "latency_us": _percentiles_us(r.latency_p50_ms, r.latency_p99_ms, r.latency_max_ms),
              "sensor_latency_us": _percentiles_us(r.sensor_latency_p50_ms, r.sensor_latency_p99_ms,
                                                   r.sensor_latency_max_ms),
              "r2": run.r2, "wall_s": r.wall_s, "late_spikes": r.late_events}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{spec.display}: {r.steps} bins decoded, {r.commands} commands written in {r.wall_s:.2f} s; "
          f"R^2 {np.round(run.r2, 4).tolist()}")
    if report["decode_us"]:
        latency = report["latency_us"]
        print(f"decode+map per bin: p50 {report['decode_us']['p50']:.1f} µs, p99 {report['decode_us']['p99']:.1f} µs; "
              f"packet -> command: p50 {latency.get('p50', 0):.1f} µs, p99 {latency.get('p99', 0):.1f} µs"
              + (f"; sink errors: {r.sink_errors}" if r.sink_errors else ""))
    return 0


def _guarded(func):
    """Run a ``bci ACTION`` body; a failure is one line ``spikeloop bci ACTION: <file/key>: <what>``. Launch
    errors of ``replay`` already start with its display name ("bci replay: "), which is not repeated."""
    def run(args: argparse.Namespace) -> int:
        command = f"bci {args.bci_command}"
        for flag in ("out", "plot"):
            problem = getattr(args, flag, None) and check_output_path(getattr(args, flag), f"--{flag}")
            if problem:
                return fail(command, problem)
        try:
            return func(args)
        except (BCIInputError, RecordingError, ValueError, OSError, RuntimeError) as exc:
            return fail(command, str(exc).removeprefix(f"{command}: "))
    return run


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="DAD .mat file or MC_Maze trial CSV")
    p.add_argument("--block", choices=("tr", "te"), default=None,
                   help="DAD block: tr = Ytr/Xtr, te = Yte/Xte (default: tr for fit, te for eval/replay)")
    p.add_argument("--bin-ms", type=float, default=None,
                   help="bin width in ms (MC_Maze: binning, default 20; DAD: time base, default 50)")
    _rates_option(p)


def _rates_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rates-to-spikes", type=_positive_ms, default=None, metavar="BIN_MS",
                   help="DAD files stored as firing rates (spikes/s) over BIN_MS bins: each unit's rate x bin width "
                        "is accumulated and rounded down along time into whole counts (deterministic, no fraction "
                        "lost), which replay streams as spikes. Fit and replay with the same flag")


def _positive_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a bin width in ms, got {text!r}") from None
    if not 0 < value <= 10_000:
        raise argparse.ArgumentTypeError(f"expected a bin width in (0, 10000] ms, got {text!r}")
    return value


#: Largest --steps (SNN steps per bin): a bound on the work per bin (the snn decoder itself runs 1 and says so).
MAX_STEPS = 1000
#: Largest recurrent population ``--neurons`` x ``--members`` may ask for (its weights are neurons^2 floats).
MAX_NEURONS = 4096
#: Most networks ``--members`` may average (each is trained and stepped: time per bin grows with it).
MAX_MEMBERS = 8


def _decoder_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--decoder", choices=DECODER_KINDS, required=True)
    p.add_argument("--history", type=int, default=None, help="bins per prediction (default: 1; ridge: 10)")
    p.add_argument("--lag", type=int, default=0, help="bins between the newest bin used and the predicted one")
    p.add_argument("--ridge", type=_ridge, default=None, help="ridge penalty (z-scored units) or 'auto'")
    p.add_argument("--C", type=float, default=1.0, help="Kalman process-noise scale (Neural_Decoding's C)")
    p.add_argument("--steady-state", action="store_true",
                   help="eval, Kalman: score the steady-state gain (the online fast path) instead of the full filter "
                        "(fitted models always step online with the steady-state gain)")
    p.add_argument("--backend", choices=("loihi", "float"), default="loihi", help="snn: SNN backend")
    p.add_argument("--steps", type=arguments.integer_in(1, MAX_STEPS), default=None,
                   help=f"snn: SNN steps per bin, 1..{MAX_STEPS} (the decoder runs 1)")
    p.add_argument("--neurons", type=arguments.integer_in(1, MAX_NEURONS), default=None,
                   help=f"snn: neurons in each network's recurrent population, 1..{MAX_NEURONS} (default "
                        f"{RSNNConfig.neurons}; --neurons x --members at most {MAX_NEURONS})")
    p.add_argument("--members", type=arguments.integer_in(1, MAX_MEMBERS), default=None,
                   help=f"snn: networks trained (seeds SEED, SEED+1, ...) and averaged, run as one population, "
                        f"1..{MAX_MEMBERS} (default {RSNNConfig.ensemble}; 1: one network, about 1.6x faster per bin)")
    p.add_argument("--seed", type=arguments.seed("a training seed"), default=0, help="snn: training seed (weights, chunk order; default 0)")


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser("bci", help=summary,
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
    p.add_argument("--plot", "--png", dest="plot", default=None, metavar="PNG",
                   help="write a PNG of decoded vs true kinematics")
    p.add_argument("--json", action="store_true", help="print one JSON record")
    p.add_argument("--speed", type=float, default=None, help="pace at X times real time (default: as fast as possible)")
    chunk = p.add_mutually_exclusive_group()
    chunk.add_argument("--chunk-us", type=int, default=10_000, help="packet length of the spike stream (µs)")
    chunk.add_argument("--chunk-ms", type=float, default=None,
                       help="packet length of the spike stream (ms; as replay's --chunk-ms)")
    p.set_defaults(func=_guarded(replay))
    p = sub.add_parser("run", help="run a BCI launch file: neural replay -> decoder -> motor commands -> sinks")
    p.add_argument("launch", help="launch file (e.g. launch/bci.toml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=TOML",
                   help="override a value, e.g. --set loop.mode='\"fast\"' (repeatable)")
    _rates_option(p)
    p.add_argument("--json", action="store_true", help="print the run report as one JSON record")
    p.set_defaults(func=_guarded(run_launch))
