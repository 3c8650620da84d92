"""Closed chain for BCI replay: neural spike source -> causal binner -> decoder.step -> motor mapping -> sinks.

Launch files (``spikeloop bci run launch/bci.toml``) use the project's launch-file conventions and checks
(pipeline.core.schema: every error names the file, the section and the key) and the same motor/log sinks
as ``spikeloop launch`` (pipeline.app.launch's [sinks.<label>] tables, pipeline.sinks)::

    [source]   type = "dad" | "mc_maze"; path; block ("tr"/"te", dad); bin_ms
    [loop]     mode = "paced" | "fast"; speed; duration_s; chunk_ms
    [decoder]  model = "fitted.npz"  — or —  type = "wiener" | "kalman" | "ridge" | "snn", fitted at start on
               fit_path (default: the source file) block fit_block, with history / lag / ridge / C
    [output]   type = "differential_drive" (forward_axis, turn_axis, mps_per_unit, radps_per_unit, deadband,
               wheel_radius_m, track_m, max_wheel_radps) | "joints" (gain row-major, n_joints, max_joint_radps)
    [sinks.<label>]  type = "motors" | "command_log" (as in spikeloop launch files)

Each completed bin is decoded as soon as the packet that completes it arrives; the command latency is
measured from that packet's arrival to the sink write.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from pipeline.core.schema import Context, Key, LaunchError, check_table

SECTIONS = ("source", "loop", "decoder", "output", "sinks")
SOURCE_TYPES = ("dad", "mc_maze")
SOURCE_KEYS = {
    "path": Key("file", help="DAD .mat or MC_Maze CSV, relative to the launch file"),
    "block": Key("str", "te", choices=("tr", "te"), help="DAD block replayed (te = Yte/Xte)"),
    "bin_ms": Key("number", 0.0, low=0, help="bin width (ms; 0 = the model's, else 50 DAD / 20 MC_Maze)"),
    "loop": Key("bool", False, help="start over at the end"),
}
LOOP_KEYS = {
    "mode": Key("str", "paced", choices=("paced", "fast"), help="paced (real time x speed) or fast"),
    "speed": Key("number", 1.0, low=0, low_open=True, help="paced replay speed (1 = real time)"),
    "duration_s": Key("number", 0.0, low=0, help="stop after this much sensor time (s, 0 = until the end)"),
    "chunk_ms": Key("number", 10.0, low=0, low_open=True, help="spike packet length (ms)"),
}
DECODER_KEYS = {
    "model": Key("str", "", help="a model .npz from 'spikeloop bci fit' (relative to the launch file)"),
    "type": Key("str", "kalman", choices=("wiener", "kalman", "ridge", "snn"), help="decoder fitted at start"),
    "fit_path": Key("str", "", help="training data (default: the source file)"),
    "fit_block": Key("str", "tr", choices=("tr", "te"), help="DAD block to fit on"),
    "history": Key("int", 0, low=0, high=100, help="bins per prediction (0 = the decoder's default)"),
    "lag": Key("int", 0, low=0, high=100, help="bins between the newest bin used and the prediction"),
    "ridge": Key("number", -1.0, help="ridge penalty (-1 = the decoder's default)"),
    "C": Key("number", 1.0, low=0, low_open=True, help="Kalman process-noise scale"),
}
OUTPUT_KEYS = {
    "differential_drive": {
        "forward_axis": Key("int", 1, low=0, help="decoded axis that drives forward speed"),
        "turn_axis": Key("int", 0, low=0, help="decoded axis that drives yaw rate"),
        "mps_per_unit": Key("number", 0.01, help="m/s of forward speed per decoded unit"),
        "radps_per_unit": Key("number", -0.05, help="rad/s of yaw rate per decoded unit (left positive)"),
        "deadband": Key("number", 0.0, low=0, help="decoded |value| below this counts as 0"),
        "wheel_radius_m": Key("number", low=0, low_open=True, help="wheel radius (m)"),
        "track_m": Key("number", low=0, low_open=True, help="wheel separation (m)"),
        "max_wheel_radps": Key("number", low=0, low_open=True, help="wheel speed limit (rad/s)"),
    },
    "joints": {
        "gain": Key("number_list", help="n_joints x d matrix, row-major (rad/s per decoded unit)"),
        "n_joints": Key("int", low=1, high=64, help="joints (motor ids) driven"),
        "max_joint_radps": Key("number", low=0, low_open=True, help="joint speed limit (rad/s)"),
    },
}


@dataclass
class BCILaunch:
    """A validated BCI launch file (nothing opened yet)."""

    path: Path
    display: str
    source: dict
    loop: dict
    decoder: dict
    output: dict
    sinks: list


def _typed(ctx: Context, table, schemas: dict[str, dict[str, Key]]) -> dict:
    """A table whose ``type`` selects its schema (``schemas``: type -> keys)."""
    types = tuple(schemas)
    if not isinstance(table, dict):
        raise LaunchError(f"{ctx.where()}: expected a table, got {table!r}")
    kind = table.get("type")
    if kind not in types:
        raise ctx.fail("type", f"expected one of {', '.join(map(repr, types))}, got {kind!r}")
    values = check_table(ctx, table, schemas[kind], ignore=("type",))
    values["type"] = kind
    return values


def load_bci_launch(path: str | Path, sets: list[str] = ()) -> BCILaunch:
    """Read and check a BCI launch file plus ``--set key.path=TOML`` overrides; raises LaunchError."""
    from pipeline.app.launch import _check_sinks, read_launch_toml

    path = Path(path)
    display = str(path)
    raw = read_launch_toml(path, sets)
    path = path.resolve()
    unknown = [s for s in raw if s not in SECTIONS]
    if unknown:
        raise LaunchError(f"{display}: unknown section [{unknown[0]}] (expected: {', '.join(SECTIONS)})")
    for required in ("source", "decoder", "output", "sinks"):
        if required not in raw:
            raise LaunchError(f"{display}: missing section [{required}]")

    def ctx(section: str) -> Context:
        return Context(path, section, display)

    source = _typed(ctx("source"), raw["source"], {kind: SOURCE_KEYS for kind in SOURCE_TYPES})
    loop = check_table(ctx("loop"), raw.get("loop", {}), LOOP_KEYS)
    decoder = check_table(ctx("decoder"), raw["decoder"], DECODER_KEYS)
    for key in ("model", "fit_path"):
        if decoder[key]:
            p = Path(decoder[key]).expanduser()
            p = p if p.is_absolute() else (path.parent / p).resolve()
            if not p.is_file():
                raise ctx("decoder").fail(key, f"file not found: {p}")
            decoder[key] = p
    output = _typed(ctx("output"), raw["output"], OUTPUT_KEYS)
    sinks = _check_sinks(path, display, raw["sinks"])
    return BCILaunch(path, display, source, loop, decoder, output, sinks)


@dataclass
class BCIReport:
    """What a run did: bins decoded, commands written, per-bin decode time and packet-arrival -> sink-write
    latency (µs percentiles), R^2 of the decoded vs true kinematics of the replayed data."""

    bins: int = 0
    commands: int = 0
    sink_errors: int = 0
    decode_us: dict = field(default_factory=dict)
    latency_us: dict = field(default_factory=dict)
    r2: list = field(default_factory=list)
    wall_s: float = 0.0


def _percentiles(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {}
    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99)),
            "max": float(values.max())}


def run_bci(source, decoder, mapper, sinks, truth: np.ndarray, bin_us: int, duration_s: float = 0.0) -> BCIReport:
    """Stream ``source`` (SPIKE_DTYPE packets) through ``decoder`` one bin at a time, map every decoded
    bin to a command and write it to every sink. truth: (T, d) kinematics of the replayed bins (for R^2)."""
    from pipeline.decoders.bci.binning import OnlineBinner
    from pipeline.decoders.bci.evaluate import r2_score
    from pipeline.loop import SinkFatalError

    binner = OnlineBinner(source.info.channels, bin_us, source.t_start_us)
    max_bins = len(truth) if not duration_s else min(len(truth), int(duration_s * 1e6 // bin_us))
    decoded = np.zeros((max_bins, decoder.n_out))
    decode_ns = np.zeros(max_bins, dtype=np.int64)
    latency_ns = np.zeros(max_bins, dtype=np.int64)
    report = BCIReport()
    n = 0
    wall0 = time.perf_counter_ns()
    try:
        for packet in source.packets():
            rows = binner.push(packet.events, packet.t_end_us)
            first = binner.next_bin - len(rows)
            for i, row in enumerate(rows):
                t0 = time.perf_counter_ns()
                value = decoder.step(row)
                command = mapper(value)
                decode_ns[n] = time.perf_counter_ns() - t0
                decoded[n] = value
                t_us = binner.bin_start_us(first + i + 1)       # sensor time at the end of this bin
                written = 0
                for sink in sinks:
                    try:
                        written = max(written, sink.write(command, t_us))
                    except SinkFatalError:
                        report.sink_errors += 1
                        raise
                    except (ValueError, OSError):
                        report.sink_errors += 1
                if written:
                    report.commands += 1
                    latency_ns[n] = written - packet.arrival_ns
                n += 1
                if n >= max_bins:
                    break
            if n >= max_bins:
                break
    finally:
        source.close()
        report.wall_s = (time.perf_counter_ns() - wall0) / 1e9
        report.bins = n
        report.decode_us = _percentiles(decode_ns[:n] / 1e3)
        report.latency_us = _percentiles(latency_ns[:n][latency_ns[:n] > 0] / 1e3)
        if n > 1:
            report.r2 = [float(v) for v in r2_score(truth[:n], decoded[:n])]
    return report


def build_and_run(spec: BCILaunch) -> BCIReport:
    """Open the source, load or fit the decoder, open the sinks (last), run, close the sinks."""
    from pipeline.app.launch import open_sinks
    from pipeline.decoders.bci.model_io import load_decoder
    from pipeline.decoders.bci.motor import VelocityToDrive, VelocityToJoints
    from recordings.bci_data import open_binned

    src, dec, out = spec.source, spec.decoder, spec.output

    def ctx(section: str) -> Context:
        return Context(spec.path, section, spec.display)

    if dec["model"]:
        decoder = load_decoder(dec["model"])
    else:
        from pipeline.app.commands.bci import make_decoder

        fit_path = dec["fit_path"] or src["path"]
        fit_data = open_binned(fit_path, block=dec["fit_block"], bin_ms=src["bin_ms"] or None)
        args = SimpleNamespace(decoder=dec["type"], history=dec["history"] or None, lag=dec["lag"],
                               ridge=None if dec["ridge"] < 0 else dec["ridge"], C=dec["C"], steady_state=True,
                               backend="loihi", steps=None, neurons=4)
        decoder = make_decoder(args, fit_data.bin_us).fit(fit_data.counts, fit_data.kinematics)
    bin_us = decoder.bin_us or round((src["bin_ms"] or 50.0) * 1000)
    speed = spec.loop["speed"]
    fast = spec.loop["mode"] == "fast"
    chunk_us = round(spec.loop["chunk_ms"] * 1000)
    if src["type"] == "dad":
        from recordings.dad import DadSource

        source = DadSource(src["path"], src["block"], bin_us / 1000, speed=speed, fast=fast, loop=src["loop"],
                           chunk_us=chunk_us)
        truth = source.data
    else:
        from recordings.mc_maze import McMazeSource

        source = McMazeSource(src["path"], speed=speed, fast=fast, loop=src["loop"], chunk_us=chunk_us)
        truth = source.trial.binned(bin_us / 1000)
    if source.info.channels != decoder.n_units:
        source.close()
        raise ctx("decoder").fail("model" if dec["model"] else "fit_path",
                                  f"units mismatch: the decoder takes {decoder.n_units} units, "
                                  f"{src['path']} has {source.info.channels}")
    try:
        if out["type"] == "differential_drive":
            mapper = VelocityToDrive(**{k: v for k, v in out.items() if k != "type"})
        else:
            gain = np.asarray(out["gain"]).reshape(out["n_joints"], -1) if len(out["gain"]) % out["n_joints"] == 0 \
                else None
            if gain is None or gain.shape[1] != decoder.n_out:
                raise ctx("output").fail("gain", f"expected {out['n_joints']} x {decoder.n_out} values, "
                                                  f"got {len(out['gain'])}")
            mapper = VelocityToJoints(gain, out["max_joint_radps"])
        if getattr(mapper, "n_axes", 0) > decoder.n_out:
            raise ctx("output").fail("forward_axis", f"the decoder has {decoder.n_out} axes")
    except ValueError as exc:
        source.close()
        raise LaunchError(f"{ctx('output').where()}: {exc}") from None
    decoder.warmup()
    decoder.reset()
    mapper(np.zeros(decoder.n_out))
    n_commands = getattr(mapper, "n_commands", 2)
    sinks = open_sinks(SimpleNamespace(path=spec.path, display=spec.display, sinks=spec.sinks), n_commands)
    try:
        return run_bci(source, decoder, mapper, sinks, truth.kinematics, bin_us, spec.loop["duration_s"])
    finally:
        for sink in sinks:
            sink.close()
