"""Launch files: load, validate and build a loop graph from TOML (stdlib ``tomllib``).

A launch file names the nodes and their parameters::

    [source]            type = "replay" | "webcam" | "camera" | "tcp" (DVS events), "samples" (a labelled folder
                        replayed sample by sample, for a classifier), "dad" | "mc_maze" (neural recordings
                        replayed as AER spikes), "audio" (a WAV file or the microphone through the cochlea, AER
                        spikes) or "zenoh" (packets published on a Zenoh key; key = "lab/*/dvs" runs one loop per
                        robot, kind = "command" is the robot side: commands -> motors, no [network]/[decoder]),
                        and the type's keys (pipeline.app.sources.SOURCE_KEYS)
    [loop]              mode, dt_us, speed, max_lag_ms, chunk_ms, ... (pipeline.loop.LoopConfig)
    [stages.<label>]    DVS sources: one table per stage, in file order; type = a pipeline.stages.STAGES name
                        (default: the label), other keys are the fields of its config
    [network]           builder = a pipeline.snn.builders.BUILDERS name (+ [network.params]) or file = "net.npz";
                        backend = "loihi" | "float"; polarity_channels = true | false (DVS sources). The inputs
                        are the grid after the stages (DVS) or the source's channels (AER spikes: the cochlea's
                        (ON/OFF, 1, frequency) grid, a neural recording's units in a row)
    [decoder]           with a [network]: type = a pipeline.decoders.DECODERS name, other keys its parameters;
                        type = "classifier" (margin, min_evidence) classifies each sample of a samples source
                        with the model's readout (the network file must hold an input spec and a readout; the
                        network is reset between samples; a float model on backend "loihi" is converted)
                        Without one (neural recordings only), a bin-level decoder: model = "fitted.npz" (from
                        spikeloop bci fit), or type = "wiener" | "kalman" | "ridge" | "snn" fitted at start on
                        fit_path (default: the source file) block fit_block, with history / lag / ridge / C
    [output]            bin-level decoders only: decoded kinematics -> command, type = "differential_drive"
                        (forward_axis, turn_axis, mps_per_unit, radps_per_unit, deadband, wheel_radius_m,
                        track_m, max_wheel_radps) | "joints" (gain row-major, n_joints, max_joint_radps);
                        without it the decoded kinematics are the command
    [sinks.<label>]     type = "motors" | "command_log" | "zenoh" (commands, output spikes, loop reports published
                        on Zenoh keys) | "decisions" (the classifier's decisions: path, "-" = stdout, format jsonl |
                        text) (default: the label); with a [source] key holding "*", every "*" in a zenoh sink's
                        keys or a command_log path is the robot's matched chunk
    [controller]        process settings: log format, real-time priority

The graph: source -> stages -> binner -> stepper -> decode -> sinks, run by one :class:`pipeline.loop.Loop`.
The source and the stepper choose the binner (pipeline.stages.binning): DVS events -> StepBinner; AER spikes
into a network -> SpikeStepBinner (input index = channel); AER spikes into a bin-level decoder -> CountBinner,
whose bin width (``[source] bin_ms``, or the model's) is the loop's step. The stepper is the network runtime
(decode: the spike decoder) or the bin-level decoder (decode: the [output] mapping).

Nothing in the file is executed or imported: every name resolves through a registry. Validation runs in
two phases, both before any motor port opens: :func:`load_launch` checks the file's structure and every
value it can check alone (types, ranges, registry names, existing files, a model file's bin width);
:func:`build_graph` then opens the source (to learn the sensor size or channel count), builds stages,
binner, network or decoder, checks that their shapes fit together, and opens the sinks last. Every error
names the file, the section, the key and the expectation, e.g.
``launch/replay.toml: [stages.noise] duration_us: expected a positive integer, got -5``.
"""
from __future__ import annotations

import importlib.util
import inspect
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import tomllib

from devices.audio import voice_files
from devices.motors import PROTOCOLS
from devices.motors.registry import driver_class
from devices.transport import wire
from devices.transport.zenoh_link import Subscription, TransportError, read_config
from pipeline.app.sources import (
    NEURAL_TYPES,
    SOURCE_KEYS,
    SOURCE_TYPES,
    SourceSpecError,
    check_zenoh_key,
    fill_robot,
    is_live,
    open_sample_source,
    open_source,
    parse_source_spec,
    robot_chunks,
    table_kind,
)
from pipeline.core.schema import (
    Context,
    Key,
    LaunchError,
    check_table,
    check_value,
    command_line_value,
    keyword_parameters,
    parameter_mismatch,
    printable,
    toml_value,
)
from pipeline.decoders import DECODERS
from pipeline.decoders.bci.factory import DECODER_KINDS, make_decoder
from pipeline.train.bci import fit_decoder
from pipeline.decoders.bci.features import BCIInputError
from pipeline.decoders.bci.model_io import load_decoder
from pipeline.decoders.bci.motor import VelocityToDrive, VelocityToJoints
from pipeline.decoders.classifier import DECISION_FIELDS, SampleDecisions
from pipeline.loop import MODES, Loop, LoopConfig
from pipeline.relay import CommandRelay
from pipeline.sinks import DECISION_FORMATS, CommandLogSink, DecisionLogSink, MotorSink, ZenohSink
from pipeline.snn import Network, build
from pipeline.snn.builders import BUILDERS
from pipeline.stages import STAGES, Chain, ChainError, StageConfig
from pipeline.stages.binning import CountBinner, CountingStepBinner, SpikeStepBinner, StepBinner
from pipeline.train.evaluate import ModelError, decoder_for, prepare
from recordings import dad, mc_maze
from recordings.base import RecordingError
from recordings.bci_data import open_binned
from recordings.datasets import shared_data_dir

SECTIONS = ("source", "loop", "stages", "network", "decoder", "output", "sinks", "controller")

LOOP_KEYS: dict[str, Key] = {
    "mode": Key("str", "fast", choices=MODES, help="live | paced | fast"),
    "dt_us": Key("int", 1000, low=1, high=1_000_000, help="network step (µs; a bin-level decoder steps per bin)"),
    "speed": Key("number", 1.0, low=0, low_open=True, high=1000, help="paced replay speed (1 = real time)"),
    "max_lag_ms": Key("number", 10.0, low=0, low_open=True, high=3_600_000,
                      help="a bin waiting longer than this merges (ms; at most an hour: exact replays set it high)"),
    "queue_packets": Key("int", 64, low=1, high=100_000, help="source queue capacity (packets)"),
    "report_period_s": Key("number", 1.0, low=0, high=3600, help="periodic report interval (s, 0 = off)"),
    "duration_s": Key("number", 0.0, low=0, high=1e7, help="stop after this much sensor time (s, 0 = until the end)"),
    "command_every_steps": Key("int", 1, low=1, high=1_000_000, help="send a command every N steps"),
    "spin_us": Key("int", 800, low=0, high=100_000, help="pacing: spin this long before each tick (µs)"),
    "idle_ms": Key("number", 50.0, low=0, high=60_000, help="live: silent this long -> keep stepping on the wall clock (ms)"),
    "switch_interval_us": Key("int", 200, low=1, high=100_000, help="GIL switch interval while running (µs)"),
    "chunk_ms": Key("number", 0.0, low=0, high=10_000, help="packet length of a replayed recording or the microphone (ms; "
                                               "0 = one step but at most 10 ms; the microphone 10 ms)"),
}

NETWORK_KEYS: dict[str, Key] = {
    "builder": Key("str", "", help="a pipeline.snn.builders.BUILDERS name"),
    "file": Key("str", "", help="a saved network (.npz, Network.save), relative to the launch file"),
    "backend": Key("str", "loihi", choices=("loihi", "float"), help="SNN backend"),
    "polarity_channels": Key("bool", True, help="DVS: ON and OFF events drive separate inputs"),
}

BIN_DECODER_KEYS: dict[str, Key] = {
    "model": Key("str", "", help="a model .npz from 'spikeloop bci fit' (relative to the launch file)"),
    "type": Key("str", "kalman", choices=DECODER_KINDS, help="decoder fitted at start (without a model)"),
    "fit_path": Key("str", "", help="training data (default: the source file), relative to the launch file"),
    "fit_block": Key("str", "tr", choices=("tr", "te"), help="DAD block to fit on"),
    "history": Key("int", 0, low=0, high=100, help="bins per prediction (0 = the decoder's default)"),
    "lag": Key("int", 0, low=0, high=100, help="bins between the newest bin used and the prediction"),
    "ridge": Key("number", -1.0, low=-1, high=1e12, help="ridge penalty (-1 = the decoder's default)"),
    "C": Key("number", 1.0, low=0, low_open=True, high=1e12, help="Kalman process-noise scale"),
}

OUTPUT_KEYS: dict[str, dict[str, Key]] = {
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

SINK_TYPES = ("motors", "command_log", "zenoh", "decisions")
#: Sinks that create or truncate a file when opened (opened after every other sink).
FILE_SINKS = ("command_log", "decisions")
SINK_KEYS: dict[str, dict[str, Key]] = {
    "motors": {
        "protocol": Key("str", help="motor protocol (devices.motors.PROTOCOLS)"),
        "port": Key("str", help="serial device path or 'emulated:<protocol>'"),
        "ids": Key("int_list", low=0, high=255, help="motor ids, in command order"),
        "baud": Key("int", 0, low=0, high=20_000_000, help="baud rate (0 = the protocol's default)"),
        "timeout_ms": Key("number", 200.0, low=0, low_open=True, high=10_000,
                          help="command watchdog (ms; at most 10 s: a longer one no longer stops a runaway robot)"),
        "max_velocity_radps": Key("number", 0.0, low=0, high=10_000, help="velocity limit (rad/s, 0 = device limit)"),
        "max_accel_radps2": Key("number", 0.0, low=0, high=1e6, help="acceleration limit (rad/s^2, 0 = none)"),
        "feedback_hz": Key("number", 50.0, low=0, high=10_000, help="read-back request rate (Hz)"),
        "fatal_after_ms": Key("number", 2000.0, low=0, high=3_600_000, help="link down this long = device lost (ms, 0 = never)"),
    },
    "command_log": {
        "path": Key("out_path", help="file to write (relative to the working directory)"),
        "format": Key("str", "csv", choices=("csv", "jsonl"), help="csv | jsonl"),
    },
    "zenoh": {
        "key": Key("str", help="Zenoh key the commands are published on, e.g. lab/robot1/cmd"),
        "spikes_key": Key("str", "", help="also publish the network's output spikes here ('' = no)"),
        "telemetry_key": Key("str", "", help="also publish every loop report (JSON) here ('' = no)"),
        "config": Key("str", "", help="Zenoh JSON5 config file, relative to the launch file ('' = a peer on "
                                      "loopback only)"),
        "block": Key("bool", False, help="wait on a congested link instead of dropping (receivers count gaps)"),
        "wait_subscriber_s": Key("number", 0.0, low=0, help="at start, wait this long for a command subscriber (s)"),
    },
    "decisions": {
        "path": Key("out_path", help="file to write (relative to the working directory; '-' = stdout)"),
        "format": Key("str", "jsonl", choices=DECISION_FORMATS, help="jsonl | text"),
    },
}
#: [decoder] keys of the classifier (its classes and readout kind come from the model).
CLASSIFIER_KEYS: dict[str, Key] = {
    "margin": Key("number", 3.0, low=0, help="early decision: evidence the leading class needs over the runner-up "
                                             "(spikes; membrane units for a max_membrane readout)"),
    "min_evidence": Key("number", 1.0, low=0, help="early decision: evidence the leading class needs at least "
                                                   "(spikes; membrane units for a max_membrane readout)"),
}

CONTROLLER_KEYS: dict[str, Key] = {
    "log_format": Key("str", "auto", choices=("auto", "text", "json"),
                      help="log lines: key=value text or JSON (auto: JSON when --headless)"),
    "realtime_priority": Key("int", 0, low=0, high=99, help="SCHED_FIFO priority (0 = normal scheduling)"),
    "robots": Key("str", "scheduler", choices=("scheduler", "threads", "processes"),
                  help="[source] key with '*': one loop per robot, in a process each, in threads of this process, or "
                       "all stepped by one scheduler thread"),
}

#: Largest sensor the stages take (pixels): per-pixel state (a noise filter's last-event map) is allocated
#: for the whole sensor, and a file header may declare 32767 x 32767 (8 GiB of int64). 4096 x 4096 is
#: above every event camera made (1280 x 720 HD Prophesee, 640 x 480 DVXplorer).
MAX_SENSOR_PIXELS = 4096 * 4096
#: Most weights a named builder may allocate (its dense int64 matrices: 256 MiB each at this bound).
MAX_BUILDER_SYNAPSES = 32 * 1024 * 1024

#: Longest default packet of a replayed recording (µs), and a microphone's default packet (µs).
MAX_DEFAULT_CHUNK_US = 10_000
MICROPHONE_CHUNK_US = 10_000


@dataclass(frozen=True)
class LaunchSpec:
    """A validated launch file (nothing opened yet). Tables are plain dicts of checked values; change a
    spec with ``dataclasses.replace``.

    network: the [network] table, or None when the stepper is a bin-level decoder. decoder: (type, params):
    a spike decoder's DECODERS name and parameters, or a bin-level decoder's kind and its [decoder] table
    (``model``/``fit_path`` resolved to paths). output: the [output] table or None. chunk_us: packet length
    of a replayed recording or the microphone (µs). loop.dt_us is the binner's step (a bin-level decoder's
    bin width).
    """

    path: Path
    display: str
    source: dict
    loop: LoopConfig
    stages: list[tuple[str, str, StageConfig]]
    network: dict | None
    network_params: dict
    decoder: tuple[str, dict]
    sinks: list[tuple[str, str, dict, dict]]
    controller: dict
    output: dict | None = None
    chunk_us: int = 1000

    @property
    def kind(self) -> str:
        """The source's packets: "dvs" (DVS events), "spikes" (AER spikes) or "command" (a zenoh command
        stream: the robot side, relayed to the sinks)."""
        return table_kind(self.source)

    @property
    def per_robot(self) -> bool:
        """A zenoh source whose key has a ``*`` chunk: one loop per robot (pipeline.app.robots)."""
        return self.source["type"] == "zenoh" and "*" in self.source["key"]

    def for_robot(self, key: str) -> "LaunchSpec":
        """The spec of one robot of a per-robot launch: the source's concrete ``key``, every ``*`` of the
        zenoh sinks' keys and the command_log paths filled with the chunks ``key`` matched."""
        chunks = robot_chunks(self.source["key"], key)
        sinks = []
        for label, kind, values, driver in self.sinks:
            values = dict(values)
            if kind == "zenoh":
                for name in ("key", "spikes_key", "telemetry_key"):
                    values[name] = fill_robot(values[name], chunks)
            elif kind == "command_log":
                values["path"] = Path(fill_robot(str(values["path"]), chunks))
            sinks.append((label, kind, values, driver))
        return replace(self, source={**self.source, "key": key}, sinks=sinks)


# -- overrides ---------------------------------------------------------------------------------------

def parse_set(assignment: str) -> tuple[list[str], Any]:
    """``section.key=value`` (``--set``) -> (path, value); the value is parsed as TOML, else kept as text."""
    name, sep, text = assignment.partition("=")
    path = [p.strip() for p in name.strip().split(".")]
    if not sep or len(path) < 2 or not all(path):
        raise LaunchError(f"--set {assignment!r}: expected section.key=value")
    try:
        return path, command_line_value(text)
    except ValueError as exc:
        raise LaunchError(f"--set {name.strip()}: {exc}") from None


def apply_set(table: dict, path: list[str], value: Any, assignment: str) -> None:
    for part in path[:-1]:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise LaunchError(f"--set {assignment!r}: {part} is not a table")
    table[path[-1]] = value


def apply_source(raw: dict, source: str) -> None:
    """``--source``: replace the file's source. A recording PATH (relative to the cwd) keeps the file's
    options for a source of the same type (a replay's loop/start, a neural recording's block and bin width,
    also from DAD to MC_Maze and back, the cochlea's parameters) and the file's loop mode, as does
    ``video:PATH`` (a video through the frame-to-event emulator); ``webcam[:N]``, ``camera[:SERIAL]``,
    ``tcp://HOST:PORT``, ``zenoh:KEY`` and ``mic`` are live and switch the loop to live mode. ``zenoh:KEY``
    keeps a zenoh source's options, and otherwise expects the packets the file's source streamed (DVS
    events, or AER spikes from audio or a neural recording)."""
    old = raw.get("source", {}) if isinstance(raw.get("source"), dict) else {}
    try:
        table = parse_source_spec(source)
    except SourceSpecError as exc:
        raise LaunchError(f"--source: {exc}") from None
    if old.get("type") == "samples" and table["type"] == "replay":  # one recording for the classifier
        table = {"type": "samples", "path": table["path"]}
    if old.get("type") == table["type"] or {old.get("type"), table["type"]} <= set(NEURAL_TYPES):
        table = {**{k: v for k, v in old.items() if k in SOURCE_KEYS[table["type"]]}, **table}
    elif table["type"] == "zenoh" and old.get("type") in SOURCE_TYPES:  # the same packets, now from the network
        table["kind"] = table_kind(old)
    raw["source"] = table
    if is_live(table):
        loop = raw.setdefault("loop", {})
        if isinstance(loop, dict):
            loop["mode"] = "live"


# -- phase 1: the file alone -------------------------------------------------------------------------

#: Largest launch file read (bytes): a launch file is a page of TOML; /dev/zero or a recording named by
#: mistake is refused after reading this much.
MAX_LAUNCH_BYTES = 1 << 20


def read_launch_text(path: str | Path) -> str:
    """The text of a launch file, read at most :data:`MAX_LAUNCH_BYTES` (+1) bytes. LaunchError names the file
    when it is missing, a directory, larger than the bound (/dev/zero, a recording) or not UTF-8 text."""
    display = str(path)
    path = Path(path)
    try:
        if path.is_dir():
            raise LaunchError(f"{display}: is a directory (expected a TOML launch file, e.g. launch/replay.toml)")
        with open(path, "rb") as handle:
            data = handle.read(MAX_LAUNCH_BYTES + 1)
    except FileNotFoundError:
        raise LaunchError(f"{display}: launch file not found") from None
    except OSError as exc:
        raise LaunchError(f"{display}: cannot read the launch file ({exc.strerror or exc})") from None
    hint = (" (this looks like a recording: replay it with 'spikeloop replay', or run a launch file on it with "
            "'--source')") if _looks_like_recording(path, data) else ""
    if len(data) > MAX_LAUNCH_BYTES:
        raise LaunchError(f"{display}: larger than {MAX_LAUNCH_BYTES >> 20} MiB: not a launch file{hint}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LaunchError(f"{display}: byte {exc.start}: not UTF-8 text (a launch file is TOML){hint}") from None


def _looks_like_recording(path: Path, head: bytes) -> bool:
    """Whether a file handed over as a launch file is an event recording (by suffix or magic bytes)."""
    suffixes = (".aedat4", ".aedat", ".raw", ".dat", ".es", ".bin", ".mat", ".wav", ".h5", ".hdf5", ".npy")
    return (path.suffix.lower() in suffixes
            or head.startswith((b"#!AER-DAT", b"RIFF", b"MATLAB", b"\x89HDF", b"% ", b"\x93NUMPY")))


def _parse_toml(text: str, what: str) -> dict:
    """tomllib.loads with its failures as one LaunchError line prefixed by ``what`` (nesting deeper than
    Python's recursion limit included)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LaunchError(f"{what}: not valid TOML: {exc}") from None
    except RecursionError:
        raise LaunchError(f"{what}: not a launch file: arrays or tables nested too deeply") from None


def read_launch_toml(path: str | Path, sets: list[str] = ()) -> dict:
    """The TOML tables of a launch file with ``--set key.path=TOML`` overrides applied (not yet validated).
    Raises LaunchError naming the file when it is missing, unreadable or not valid TOML."""
    raw = _parse_toml(read_launch_text(path), str(path))
    for assignment in sets:
        key_path, value = parse_set(assignment)
        apply_set(raw, key_path, value, assignment)
    return raw


def load_launch(path: str | Path, sets: list[str] = (), source: str | None = None,
                duration_s: float | None = None) -> LaunchSpec:
    """Read and validate a launch file plus command-line overrides. Raises LaunchError."""
    raw = read_launch_toml(path, sets)
    if source is not None:
        apply_source(raw, source)
    if duration_s is not None:
        raw.setdefault("loop", {})["duration_s"] = duration_s
    return check_launch(raw, path)


def check_launch(raw: dict, path: str | Path, display: str | None = None, require_sinks: bool = True) -> LaunchSpec:
    """Validate launch tables (as :func:`read_launch_toml` returns them) into a LaunchSpec. ``path``: the
    launch file (relative paths in the tables resolve against its folder; it need not exist for tables built
    in code); ``display``: how messages name it (default: the path as given); ``require_sinks``: a file must
    write somewhere, a graph built in code (e.g. ``spikeloop bci replay``) may only be observed."""
    display = str(path) if display is None else display
    path = Path(path).resolve()
    raw = _expand_data_prefix(raw)

    def ctx(section: str) -> Context:
        return Context(path, section, display)

    unknown = [s for s in raw if s not in SECTIONS]
    if unknown:
        raise LaunchError(f"{display}: unknown section [{printable(unknown[0])}] (expected: {', '.join(SECTIONS)})")
    if "source" not in raw:
        raise LaunchError(f"{display}: missing section [source]")
    source_spec = _check_source(ctx("source"), raw["source"])
    kind = table_kind(source_spec)
    if kind == "command":
        return _check_relay(raw, path, display, source_spec)
    for required in ("decoder",) + (("sinks",) if require_sinks else ()):
        if required not in raw:
            raise LaunchError(f"{display}: missing section [{required}]")
    network_given = "network" in raw
    if not network_given and source_spec["type"] not in NEURAL_TYPES:
        raise LaunchError(f"{display}: missing section [network] (the {source_spec['type']} source drives a network; "
                          f"only a neural recording ({', '.join(NEURAL_TYPES)}) can feed a bin-level decoder directly)")
    loop_table = raw.get("loop", {})
    loop_values = check_table(ctx("loop"), loop_table, LOOP_KEYS)
    if is_live(source_spec) and loop_values["mode"] != "live":
        raise ctx("loop").fail("mode", f"expected \"live\" for a live {source_spec['type']} source, "
                                       f"got {toml_value(loop_values['mode'])}")
    if kind != "dvs" and raw.get("stages"):
        where = f"stages.{printable(next(iter(raw['stages'])))}" if isinstance(raw["stages"], dict) else "stages"
        raise LaunchError(f"{display}: [{where}]: stages filter DVS events; the {source_spec['type']} "
                          f"source streams AER spikes")
    stages = _check_stages(path, display, raw.get("stages", {}))
    output = None
    if network_given:
        if "output" in raw:
            raise LaunchError(f"{display}: [output]: only a bin-level decoder (no [network]) takes an [output] "
                              f"mapping; a network's [decoder] makes the command")
        network, network_params = _check_network(ctx("network"), raw["network"],
                                                 Context(path, "network.params", display))
        if kind != "dvs" and "polarity_channels" in raw["network"]:
            raise ctx("network").fail("polarity_channels", f"applies to DVS sources only (the inputs of a "
                                                           f"{source_spec['type']} source are its channels)")
        decoder = _check_decoder(ctx("decoder"), raw["decoder"])
        _check_classifier_graph(ctx, source_spec, network, decoder, raw["sinks"] if "sinks" in raw else {})
    else:
        network, network_params = None, {}
        decoder = _check_bin_decoder(ctx("decoder"), raw["decoder"])
        loop_values["dt_us"] = _bin_width_us(ctx, source_spec, decoder[1], loop_table)
        if "output" in raw:
            output = _typed_table(ctx("output"), raw["output"], tuple(OUTPUT_KEYS), OUTPUT_KEYS, default_type=None)
    chunk_us = _chunk_us(source_spec, loop_values.pop("chunk_ms"), loop_values["dt_us"])
    tick_us = chunk_us if source_spec["type"] in ("replay", "samples") + NEURAL_TYPES + ("audio",) else 0
    try:
        loop = LoopConfig(**loop_values, tick_us=tick_us)
    except ValueError as exc:
        raise LaunchError(f"{ctx('loop').where()}: {exc}") from None
    sinks = _check_sinks(path, display, raw["sinks"]) if "sinks" in raw or require_sinks else []
    _check_zenoh_sinks(path, display, source_spec, sinks, network_given)
    controller = check_table(ctx("controller"), raw.get("controller", {}), CONTROLLER_KEYS)
    return LaunchSpec(path, display, source_spec, loop, stages, network, network_params, decoder, sinks,
                      controller, output, chunk_us)


#: The [loop] keys a command relay (robot side of a zenoh command stream) takes.
RELAY_LOOP_KEYS = {name: LOOP_KEYS[name] for name in ("report_period_s", "duration_s")}


def _check_relay(raw: dict, path: Path, display: str, source: dict) -> LaunchSpec:
    """A robot-side launch file: [source] type = "zenoh", kind = "command" -> [sinks] (motors with their
    safety layer, command logs); no stages, network or decoder. ``duration_s`` is wall time here."""
    extra = [name for name in ("stages", "network", "decoder", "output") if name in raw]
    if extra:
        raise LaunchError(f"{display}: [{extra[0]}]: a command stream (kind = \"command\") goes straight to the "
                          f"sinks; remove [{extra[0]}]")
    if "*" in source["key"]:
        raise Context(path, "source", display).fail("key", "a command stream drives one robot's motors: expected a "
                                                           f"key without '*', got {toml_value(source['key'])}")
    if "sinks" not in raw:
        raise LaunchError(f"{display}: missing section [sinks]")
    values = check_table(Context(path, "loop", display), raw.get("loop", {}), RELAY_LOOP_KEYS)
    sinks = _check_sinks(path, display, raw["sinks"])
    _check_zenoh_sinks(path, display, source, sinks, network_given=False)
    controller = check_table(Context(path, "controller", display), raw.get("controller", {}), CONTROLLER_KEYS)
    loop = LoopConfig(mode="live", report_period_s=values["report_period_s"], duration_s=values["duration_s"])
    return LaunchSpec(path, display, source, loop, [], None, {}, ("relay", {}), sinks, controller)


def _check_zenoh_sinks(path: Path, display: str, source: dict, sinks: list, network_given: bool) -> None:
    """Zenoh sink keys are valid publication keys; a per-robot source (``*`` in its key) needs per-robot
    outputs: every zenoh key and command_log path holds a ``*`` (the robot's chunk), and no motors (they
    are on the robots: launch/robot_motors_zenoh.toml)."""
    per_robot = source["type"] == "zenoh" and "*" in source["key"]
    if per_robot and "**" in source["key"]:
        raise Context(path, "source", display).fail("key", f"one loop per robot takes '*' chunks (one robot per "
                                                           f"match), not '**': got {toml_value(source['key'])}")
    for label, kind, values, _ in sinks:
        ctx = Context(path, f"sinks.{label}", display)
        if per_robot and kind == "motors":
            raise ctx.fail("type", f"a [source] key with '*' runs one loop per robot; their motors subscribe to "
                                   f"the commands on each robot (zenoh sinks), got motors on {values['port']}")
        if per_robot and kind == "command_log" and "*" not in str(values["path"]):
            raise ctx.fail("path", f"one loop per robot: expected a path with '*' (the robot's name), got "
                                   f"{toml_value(str(values['path']))}")
        if kind != "zenoh":
            continue
        if values["spikes_key"] and not network_given:
            raise ctx.fail("spikes_key", "only a [network] has output spikes")
        if values["config"]:
            values["config"] = _check_zenoh_config(ctx, values["config"])
        for name in ("key", "spikes_key", "telemetry_key"):
            key = values[name]
            if not key:
                continue
            if per_robot and "*" not in key:
                raise ctx.fail(name, f"one loop per robot: expected a key with '*' (filled with the robot's chunk of "
                                     f"{toml_value(source['key'])}), got {toml_value(key)}")
            if not per_robot and "*" in key:
                raise ctx.fail(name, f"expected a key to publish on (no '*'), got {toml_value(key)}")
            try:
                check_zenoh_key(key.replace("*", "x") if per_robot else key)
            except SourceSpecError as exc:
                raise ctx.fail(name, str(exc)) from None


def _check_zenoh_config(ctx: Context, value: str) -> Path:
    """A Zenoh JSON5 config file (relative to the launch file) that Zenoh can read."""
    config = check_value(ctx, "config", Key("file"), value)
    try:
        read_config(config)
    except TransportError as exc:
        raise ctx.fail("config", str(exc)) from None
    return config


def _chunk_us(source: dict, chunk_ms: float, dt_us: int) -> int:
    """Packet length (µs) of a replayed recording or the microphone: [loop] chunk_ms, else one step of
    ``dt_us`` but at most 10 ms (the microphone: 10 ms)."""
    if chunk_ms:
        return max(1, round(chunk_ms * 1000))
    if source["type"] == "audio" and source["microphone"]:
        return MICROPHONE_CHUNK_US
    return min(dt_us, MAX_DEFAULT_CHUNK_US)


def _check_source(ctx: Context, table: Any) -> dict:
    values = _typed_table(ctx, table, SOURCE_TYPES, SOURCE_KEYS, default_type=None)
    if values["type"] == "zenoh":
        try:
            check_zenoh_key(values["key"])
        except SourceSpecError as exc:
            raise ctx.fail("key", str(exc)) from None
        if values["config"]:
            values["config"] = str(_check_zenoh_config(ctx, values["config"]))
    if values["type"] == "samples":
        for key in ("path", "labels"):
            if values[key]:
                path = Path(values[key]).expanduser()
                path = path if path.is_absolute() else (ctx.file.parent / path).resolve()
                if not path.exists():
                    raise ctx.fail(key, f"not found: {path}")
                values[key] = str(path)
        if not values["path"]:
            raise ctx.fail("path", "expected a folder of recordings or one recording")
        return values
    if values["type"] != "audio":
        return values
    if values["microphone"] == bool(values["path"]):
        raise ctx.fail("path", "expected a WAV file or microphone = true (exactly one of them)")
    if values["path"]:
        values["path"] = check_value(ctx, "path", Key("file"), values["path"])
    if values["agc_enrol"]:
        if not values["agc_ms"] > 0:
            raise ctx.fail("agc_enrol", "sets where the AGC starts: needs an AGC (agc_ms > 0)")
        enrol = Path(values["agc_enrol"]).expanduser()
        enrol = enrol if enrol.is_absolute() else (ctx.file.parent / enrol).resolve()
        if not voice_files(enrol):
            raise ctx.fail("agc_enrol", f"expected a WAV file or a folder holding WAV files, got {enrol}")
        values["agc_enrol"] = str(enrol)
    if values["microphone"] and importlib.util.find_spec("sounddevice") is None:
        raise ctx.fail("microphone", "needs the optional 'sounddevice' package: pip install 'spikeloop[audio]' "
                                     "(and on Debian/Ubuntu: apt-get install libportaudio2)")
    return values


DATA_PREFIX = "$SPIKELOOP_DATA"


def _expand_data_prefix(value: Any) -> Any:
    """``value`` (launch tables, lists, strings) with every string that starts with ``$SPIKELOOP_DATA/``
    (or is ``$SPIKELOOP_DATA``) turned into a path in the shared data folder
    (recordings.datasets.shared_data_dir), so a shipped file finds the data from any checkout; other values
    are returned as they are (no other variable is expanded)."""
    if isinstance(value, dict):
        return {k: _expand_data_prefix(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_data_prefix(v) for v in value]
    if isinstance(value, str) and (value == DATA_PREFIX or value.startswith(DATA_PREFIX + "/")):
        return str(shared_data_dir() / value[len(DATA_PREFIX) + 1:])
    return value


def _typed_table(ctx: Context, table: Any, types: tuple[str, ...], schemas: dict[str, dict[str, Key]],
                 default_type: str | None) -> dict:
    if not isinstance(table, dict):
        raise LaunchError(f"{ctx.where()}: expected a table, got {toml_value(table)}")
    kind = _type_name(ctx, table, types, default_type)
    values = check_table(ctx, table, schemas[kind], ignore=("type",))
    values["type"] = kind
    return values


def _type_name(ctx: Context, table: dict, types: tuple[str, ...], default: str | None) -> str:
    """The ``type`` of a table: one of ``types`` (a string; a list or number there is refused, not hashed),
    else ``default``."""
    kind = table.get("type", default)
    expected = f"expected one of {', '.join(map(toml_value, types))}"
    if kind is None:
        raise ctx.fail("type", f"missing ({expected})")
    if not isinstance(kind, str) or kind not in types:
        raise ctx.fail("type", f"{expected}, got {toml_value(kind)}")
    return kind


_PARAMETER_ERROR = re.compile(r"parameter '(?P<key>[\w\[\]]+)'\s*(?:=\s*)?(?P<rest>.*)$", re.S)


def _rephrase(ctx: Context, error: Exception) -> LaunchError:
    """Turn a component's ``"<name>: parameter 'key' ..."`` ValueError into a launch-file message."""
    text = str(error)
    match = _PARAMETER_ERROR.search(text)
    if match:
        return ctx.fail(match["key"], match["rest"])
    return LaunchError(f"{ctx.where()}: {text}")


def _check_free_params(ctx: Context, table: dict, cls, skip: tuple[str, ...], owner: str = "this type") -> dict:
    """Parameters of a registry class (stage, decoder, motor driver): unknown and missing keys (a parameter
    without a default; ``owner`` names whose in the message) are rejected here, values by the class itself
    when it is built (its errors are rephrased with file and section)."""
    accepted = keyword_parameters(cls, skip)
    params = {k: v for k, v in table.items() if k != "type"}
    for name in params:
        if name not in accepted:
            raise ctx.fail(name, f"unknown key (expected one of: {', '.join(sorted(accepted))})")
    for name, parameter in accepted.items():
        if parameter.default is inspect.Parameter.empty and name not in params:
            raise ctx.fail(name, f"missing (required by {owner})")
    for name, value in params.items():
        problem = parameter_mismatch(accepted[name], value)
        if problem:
            raise ctx.fail(name, problem)
    return params


def _check_stages(path: Path, display: str, table: Any) -> list[tuple[str, str, StageConfig]]:
    """(label, type, config) per ``[stages.<label>]`` table in file order. The keys a table may hold are
    its config's fields (``pipeline.stages.describe``), and the config checks the values itself: its
    ``"<stage>: parameter '<key>' ..."`` errors come back naming file, section and key."""
    if not isinstance(table, dict):
        raise LaunchError(f"{display}: [stages]: expected tables [stages.<label>], got {toml_value(table)}")
    out = []
    for label, stage in table.items():
        ctx = Context(path, f"stages.{label}", display)
        if not isinstance(stage, dict):
            raise LaunchError(f"{ctx.where()}: expected a table, got {toml_value(stage)}")
        kind = _type_name(ctx, stage, tuple(sorted(STAGES)), label)
        fields = STAGES[kind].describe().params
        names = sorted(field.name for field in fields)
        params = {key: value for key, value in stage.items() if key != "type"}
        for key in params:
            if key not in names:
                raise ctx.fail(key, f"unknown key (expected one of: {', '.join(names)})")
        for field in fields:
            if field.required and field.name not in params:
                raise ctx.fail(field.name, f"missing (expected {field.expectation}: {field.help})")
        try:
            config = STAGES[kind](**params)
        except ValueError as exc:
            raise _rephrase(ctx, exc) from None
        out.append((label, kind, config))
    return out


def _check_network(ctx: Context, table: Any, params_ctx: Context) -> tuple[dict, dict]:
    if not isinstance(table, dict):
        raise LaunchError(f"{ctx.where()}: expected a table, got {toml_value(table)}")
    params = table.get("params", {})
    values = check_table(ctx, table, NETWORK_KEYS, ignore=("params",))
    if bool(values["builder"]) == bool(values["file"]):
        raise ctx.fail("builder", "expected exactly one of 'builder' (a named network) or 'file' (a saved .npz)")
    if values["file"]:
        values["file"] = check_value(ctx, "file", Key("file"), values["file"])
        if params:
            raise ctx.fail("params", "only a builder takes parameters (this network comes from a file)")
        return values, {}
    if values["builder"] not in BUILDERS:
        raise ctx.fail("builder", f"expected one of {', '.join(map(toml_value, sorted(BUILDERS)))}, got {toml_value(values['builder'])}")
    return values, check_table(params_ctx, params, BUILDERS[values["builder"]].params)


def _check_decoder(ctx: Context, table: Any) -> tuple[str, dict]:
    if not isinstance(table, dict):
        raise LaunchError(f"{ctx.where()}: expected a table, got {toml_value(table)}")
    kind = _type_name(ctx, table, tuple(sorted([*DECODERS, "classifier"])), None)
    if kind == "classifier":
        return kind, check_table(ctx, table, CLASSIFIER_KEYS, ignore=("type",))
    return kind, _check_free_params(ctx, table, DECODERS[kind], ("n_outputs",))


def _check_classifier_graph(ctx, source: dict, network: dict, decoder: tuple[str, dict], sinks) -> None:
    """A classifier decides per sample of a samples source, with a model file; decisions sinks need it."""
    classifier = decoder[0] == "classifier"
    if classifier and source["type"] != "samples":
        raise ctx("decoder").fail("type", f"the classifier decides per sample: expected [source] type = \"samples\" "
                                          f"(a labelled folder or one recording), got {toml_value(source['type'])}")
    if classifier and not network["file"]:
        raise ctx("network").fail("builder", "a classifier needs a model file (file = \"model.npz\" with an input "
                                             "spec and a readout)")
    if not classifier and isinstance(sinks, dict):
        for label, sink in sinks.items():
            if isinstance(sink, dict) and sink.get("type", label) == "decisions":
                raise ctx(f"sinks.{label}").fail("type", "a decisions sink writes a classifier's decisions: "
                                                         "expected [decoder] type = \"classifier\"")


def _check_bin_decoder(ctx: Context, table: Any) -> tuple[str, dict]:
    """A bin-level decoder's [decoder] table, its model / fit_path resolved against the launch file."""
    if isinstance(table, dict) and isinstance(table.get("type"), str) and table["type"] in DECODERS:
        raise ctx.fail("type", f"a spike decoder ({toml_value(table['type'])}) needs a [network]; without one the "
                               f"decoder steps on binned counts: expected one of {', '.join(map(toml_value, DECODER_KINDS))}")
    values = check_table(ctx, table, BIN_DECODER_KEYS)
    for key in ("model", "fit_path"):
        if values[key]:
            values[key] = check_value(ctx, key, Key("file"), values[key])
    return values["type"], values


def _bin_width_us(ctx, source: dict, decoder: dict, loop_table: dict) -> int:
    """A bin-level decoder's bin width (µs): the model's, else [source] bin_ms, else the format's default.
    It is the loop's step, so [loop] dt_us must not be given."""
    if isinstance(loop_table, dict) and "dt_us" in loop_table:
        raise ctx("loop").fail("dt_us", "a bin-level decoder steps once per bin: set [source] bin_ms (or use a "
                                        "model fitted at that bin width)")
    given = round(source["bin_ms"] * 1000)
    if decoder["model"]:
        try:
            model_us = load_decoder(decoder["model"]).bin_us
        except BCIInputError as exc:
            raise ctx("decoder").fail("model", str(exc)) from None
        if model_us and given and model_us != given:
            raise ctx("source").fail("bin_ms", f"the model {decoder['model'].name} was fitted on "
                                               f"{model_us / 1000:g} ms bins, got {toml_value(source['bin_ms'])}")
        if model_us:
            return model_us
    default_ms = dad.DEFAULT_BIN_MS if source["type"] == "dad" else mc_maze.DEFAULT_BIN_MS
    return given or round(default_ms * 1000)


def _check_sinks(path: Path, display: str, table: Any) -> list[tuple[str, str, dict, dict]]:
    if not isinstance(table, dict) or not table:
        raise LaunchError(f"{display}: [sinks]: expected at least one table [sinks.<label>], got {toml_value(table)}")
    out = []
    for label, sink in table.items():
        ctx = Context(path, f"sinks.{label}", display)
        if not isinstance(sink, dict):
            raise LaunchError(f"{ctx.where()}: expected a table, got {toml_value(sink)}")
        driver = sink.get("driver", {})
        values = _typed_table(ctx, {k: v for k, v in sink.items() if k != "driver"}, SINK_TYPES, SINK_KEYS,
                              default_type=label if label in SINK_TYPES else None)
        driver_opts = {}
        if values["type"] == "motors":
            driver_opts = _check_motor_sink(ctx, values, driver, Context(path, f"sinks.{label}.driver", display))
        elif driver:
            raise ctx.fail("driver", "only a motors sink takes driver options")
        out.append((label, values["type"], values, driver_opts))
    return out


def _exists(path: str) -> bool:
    """Whether ``path`` exists; False for a name the file system cannot hold (too long, a NUL byte)."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def _check_motor_sink(ctx: Context, values: dict, driver: Any, driver_ctx: Context) -> dict:
    if values["protocol"] not in PROTOCOLS:
        raise ctx.fail("protocol", f"expected one of {', '.join(map(toml_value, sorted(PROTOCOLS)))}, got {toml_value(values['protocol'])}")
    port = values["port"]
    if port.startswith("emulated:") and port != f"emulated:{values['protocol']}":
        raise ctx.fail("port", f"expected \"emulated:{values['protocol']}\" or a device path, got {toml_value(port)}")
    if not port.startswith("emulated:") and not _exists(port):
        raise ctx.fail("port", f"serial device not found: {port} (expected a device path or "
                               f"\"emulated:{values['protocol']}\")")
    if len(set(values["ids"])) != len(values["ids"]):
        raise ctx.fail("ids", f"expected distinct motor ids, got {toml_value(values['ids'])}")
    if not isinstance(driver, dict):
        raise LaunchError(f"{driver_ctx.where()}: expected a table, got {toml_value(driver)}")
    return _check_free_params(driver_ctx, driver, driver_class(values["protocol"]), ("ids",),
                              owner=f"protocol {toml_value(values['protocol'])}")


# -- phase 2: build ----------------------------------------------------------------------------------

@dataclass
class Graph:
    """Everything the loop needs, built and checked, ready to warm up and run.

    chain: the stage chain (DVS) or None. binner: pipeline.stages.binning's binner for the source and stepper.
    network, runtime: the network and its runtime (None with a bin-level decoder). decoder: what [decoder]
    built: a spike decoder (with a network) or the fitted bin-level decoder. output: the [output] mapping of
    a bin-level decoder (None: the kinematics are the command). ``stepper``: what the loop steps.
    """

    spec: LaunchSpec
    source: Any
    chain: Any
    binner: Any
    network: Any
    runtime: Any
    decoder: Any
    sinks: list
    output: Any = None
    loop: Loop | None = None
    #: What building changed about the network (e.g. a float model converted for the loihi backend).
    notes: tuple[str, ...] | list[str] = ()

    @property
    def stepper(self):
        """The network runtime, or the bin-level decoder."""
        return self.runtime if self.runtime is not None else self.decoder

    def close(self) -> None:
        """Close sinks (motors: zero velocity, torque off) then the source. Safe to call twice."""
        errors = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # keep closing the others; report the first
                errors.append(exc)
        self.source.close()
        if errors:
            raise errors[0]


def open_graph_source(spec: LaunchSpec):
    """The source named by the launch file, paced as its loop needs (a recording runs ahead of a paced or
    fast loop and paces itself for a live one); a recording or device that cannot be opened gives a
    LaunchError naming the [source] key."""
    try:
        return open_source(spec.source, speed=spec.loop.speed, fast=spec.loop.mode != "live", chunk_us=spec.chunk_us,
                           bin_us=spec.loop.dt_us if spec.network is None else 0)
    except SourceSpecError as exc:
        raise Context(spec.path, "source", spec.display).fail(exc.key, str(exc)) from None


def build_stages(spec: LaunchSpec, width: int, height: int) -> Chain:
    """The file's stages, in order, as one Chain for a width x height (px) sensor; a config that does not
    fit the resolution it receives (a crop outside the sensor) is named by its section; a sensor larger
    than :data:`MAX_SENSOR_PIXELS` is refused at [source] before any per-pixel state is allocated."""
    if width * height > MAX_SENSOR_PIXELS:
        key = "path" if "path" in spec.source else "type"
        raise Context(spec.path, "source", spec.display).fail(
            key, f"the sensor is {width} x {height} px, larger than the {MAX_SENSOR_PIXELS:,} px the stages "
                 f"hold state for (a header declaring a size no camera has?)")
    try:
        return Chain([config for _, _, config in spec.stages], width, height)
    except ChainError as exc:
        label = spec.stages[exc.position][0]
        raise _rephrase(Context(spec.path, f"stages.{label}", spec.display), exc.error) from None


def spike_grid(info) -> tuple[int, int, int]:
    """(width, height, planes) of an AER source's input indices (index = channel): the source's own layout
    when its StreamInfo gives width and height (the cochlea: frequency x 1, ON/OFF planes), else a row of
    channels (neural units: channels x 1, one plane)."""
    if info.width and info.height and info.channels % (info.width * info.height) == 0:
        return info.width, info.height, info.channels // (info.width * info.height)
    return info.channels, 1, 1


def build_network(spec: LaunchSpec, width: int, height: int, channels: int | None = None):
    """The network (built by name, or loaded) and its runtime; inputs must match the binner's grid:
    channels x height x width (channels None: 2 with [network] polarity_channels, else 1; AER sources:
    :func:`spike_grid`)."""
    ctx = Context(spec.path, "network", spec.display)
    if channels is None:
        channels = 2 if spec.network["polarity_channels"] else 1
    if spec.network["file"]:
        try:
            network = Network.load(spec.network["file"])
        except ValueError as exc:
            raise ctx.fail("file", str(exc)) from None
    else:
        builder = BUILDERS[spec.network["builder"]]
        synapses = builder.synapses(width, height, channels, **spec.network_params)
        if synapses > MAX_BUILDER_SYNAPSES:
            raise Context(spec.path, "network.params", spec.display).fail(
                None, f"the {spec.network['builder']} network for {channels} x {width} x {height} inputs would "
                      f"allocate {synapses:,} weights, more than {MAX_BUILDER_SYNAPSES:,} (fewer neurons, or pool "
                      f"the input with a pooling stage)")
        try:
            network = builder.build(width, height, channels, **spec.network_params)
            network.validate()
        except ValueError as exc:
            raise _rephrase(Context(spec.path, "network.params", spec.display), exc) from None
    _check_input_spec(spec, network)
    expected = channels * width * height
    if network.n_inputs != expected:
        grid = (f"{channels} channel(s) x {width} x {height} px after the stages" if spec.kind == "dvs"
                else f"one per channel of the {spec.source['type']} source: {channels} x {width} x {height}")
        raise ctx.fail("file" if spec.network["file"] else "builder",
                       f"network has {network.n_inputs} inputs, expected {expected} ({grid})")
    if spec.network["backend"] == "loihi" and network.is_float:
        raise ctx.fail("backend", 'expected "float" for a network with float neurons, got "loihi"')
    try:
        runtime = build(network, backend=spec.network["backend"])
    except ValueError as exc:
        raise ctx.fail("backend", str(exc)) from None
    return network, runtime


def _check_input_spec(spec: LaunchSpec, network) -> None:
    """A trained cochlea model (its input_spec) sees the input it was trained on: the loop steps in its
    ``bin_us`` and an audio source's cochlea has its channels, LIF threshold and AGC (else LaunchError naming
    the key)."""
    model = network.input_spec
    if model is None or model.sensor != "cochlea" or spec.source["type"] != "audio":
        return
    name = Path(spec.network["file"]).name if spec.network["file"] else "the network"
    if spec.loop.dt_us != model.bin_us:
        raise Context(spec.path, "loop", spec.display).fail(
            "dt_us", f"{name} was trained on {model.bin_us} µs steps, got {spec.loop.dt_us}")
    source = Context(spec.path, "source", spec.display)
    expected = {"method": "lif", "n_channels": model.channels, "threshold": model.cochlea_threshold,
                "agc_ms": model.cochlea_agc_ms}
    if model.cochlea_agc_ms > 0:
        expected["agc_strength"] = model.cochlea_agc_strength
    for key, value in expected.items():
        if spec.source[key] != value:
            raise source.fail(key, f"{name} was trained on cochlea {key} = {toml_value(value)}, got {toml_value(spec.source[key])}")


def _adaptation_notes(spec: LaunchSpec, network) -> list[str]:
    """A note when a model trained with its cochlea's AGC settled to each speaker (input spec
    cochlea_agc_start "speaker") listens through an audio source with no ``agc_enrol``: the AGC starts at 0."""
    model = network.input_spec
    if model is None or model.cochlea_agc_start != "speaker" or spec.source["type"] != "audio" \
            or spec.source["agc_enrol"]:
        return []
    note = (f"the model was trained with its cochlea's AGC settled to each speaker; [source] agc_enrol is empty, "
            f"so the AGC starts at 0 and settles to the voice over about {model.cochlea_agc_ms / 1000:g} s of "
            f"speech (set agc_enrol to a few WAVs of the voice to start adapted)")
    return [note]


def build_decoder(spec: LaunchSpec, n_outputs: int, runtime=None, readout=None):
    """The spike decoder for ``n_outputs`` network outputs, plus the length of the command it produces. A
    decoder that also watches the network's input (``attach_runtime``: command_map) is given ``runtime``; one
    that takes ``votes`` is given the model's readout as a vote table (Readout.vote_table: an ensemble's "vote"
    readout, or an "assignment" one: outputs -> classes); the other decoders refuse such a model."""
    kind, params = spec.decoder
    ctx = Context(spec.path, "decoder", spec.display)
    votes = readout.vote_table() if readout is not None else None
    if votes is not None:
        if "votes" not in inspect.signature(DECODERS[kind]).parameters:
            raise ctx.fail("type", f"the model's {n_outputs} outputs vote for {len(readout.classes)} classes (its "
                                   f"{readout.kind!r} readout); {kind!r} reads one output per class: use 'command_map'")
        if "votes" in params:
            raise ctx.fail("votes", f"the model's {readout.kind!r} readout gives the votes; remove this key")
        params = {**params, "votes": votes}
    if readout is not None and isinstance(params.get("commands"), dict):
        params = {**params, "commands": _commands_by_class(ctx, params["commands"], readout.classes)}
    try:
        probe, decoder = (DECODERS[kind](n_outputs=n_outputs, **params) for _ in range(2))
        if hasattr(decoder, "attach_runtime"):
            probe.attach_runtime(runtime)
            decoder.attach_runtime(runtime)
        length = len(np.atleast_1d(probe.update(np.zeros(n_outputs, dtype=np.uint8), 0)))
    except (ValueError, TypeError) as exc:
        raise _rephrase(ctx, exc) from None
    return decoder, length


def _commands_by_class(ctx: Context, commands: dict, classes: tuple[str, ...]) -> dict:
    """``[decoder] commands`` keyed by the model's class labels (a launch file's ``3 = [...]`` is the class
    labelled "3", e.g. the spoken digit three) re-keyed by class index, which the decoder takes: a model whose
    classes come in another order still maps every word to its own command. Where no label is a number, a
    key may also be a class index. Any other key is refused, naming the classes."""
    index = {label: i for i, label in enumerate(classes)}
    by_index = not any(label.isdigit() for label in classes)
    out = {}
    for key, values in commands.items():
        text = str(key)
        if text in index:
            out[str(index[text])] = values
        elif by_index and text.isdigit() and int(text) < len(classes):
            out[text] = values
        else:
            also = f" (or their indices 0..{len(classes) - 1})" if by_index else ""
            raise ctx.fail("commands", f"key {toml_value(text)} is not a class of the model; its classes are "
                                       f"{toml_value(list(classes))}{also}")
    return out


def build_bin_decoder(spec: LaunchSpec):
    """The bin-level decoder of a launch file without a network: the [decoder] model, or a new decoder of
    [decoder] type fitted now on fit_path (default: the source file) block fit_block at the loop's bin width
    (the loop's warmup compiles it). Errors name [decoder] and the key."""
    kind, values = spec.decoder
    ctx = Context(spec.path, "decoder", spec.display)
    bin_us = spec.loop.dt_us
    try:
        if values["model"]:
            decoder = load_decoder(values["model"])
        else:
            fit_path = values["fit_path"] or spec.source["path"]
            data = open_binned(fit_path, block=values["fit_block"], bin_ms=bin_us / 1000,
                               rates=spec.source.get("rates", False))
            decoder = make_decoder(kind, bin_us, history=values["history"] or None, lag=values["lag"],
                                   ridge=None if values["ridge"] < 0 else values["ridge"], C=values["C"],
                                   trainer=fit_decoder)
            decoder.fit(data.counts, data.kinematics)
    except (BCIInputError, RecordingError, ValueError) as exc:
        raise ctx.fail("model" if values["model"] else "fit_path" if values["fit_path"] else "type", str(exc)) \
            from None
    return decoder


def build_output(spec: LaunchSpec, n_axes: int):
    """The [output] mapping of decoded kinematics (``n_axes`` values per bin) to a command, and the command's
    length; (None, n_axes) without an [output] (the kinematics are the command)."""
    out = spec.output
    if out is None:
        return None, n_axes
    ctx = Context(spec.path, "output", spec.display)
    params = {k: v for k, v in out.items() if k != "type"}
    if out["type"] == "differential_drive":
        try:
            mapper = VelocityToDrive(**params)
        except ValueError as exc:
            raise LaunchError(f"{ctx.where()}: {exc}") from None
        if mapper.n_axes > n_axes:
            raise ctx.fail("forward_axis" if mapper.forward_axis >= n_axes else "turn_axis",
                           f"the decoder has {n_axes} axes (0 .. {n_axes - 1})")
        return mapper, VelocityToDrive.n_commands
    if len(out["gain"]) != out["n_joints"] * n_axes:
        raise ctx.fail("gain", f"expected {out['n_joints']} x {n_axes} values (n_joints x decoded axes, "
                               f"row-major), got {len(out['gain'])}")
    mapper = VelocityToJoints(np.reshape(out["gain"], (out["n_joints"], n_axes)), out["max_joint_radps"])
    return mapper, mapper.n_commands


def make_decode(decoder):
    """``(spikes, t_us) -> float64 command`` from a spike decoder whose value is a scalar or an array."""

    def decode(spikes: np.ndarray, t_us: int) -> np.ndarray:
        return np.atleast_1d(np.asarray(decoder.update(spikes, t_us), dtype=np.float64))

    return decode


def make_output_decode(output):
    """``(kinematics, t_us) -> float64 command`` of a bin-level decoder: the [output] mapping, or a copy of
    the decoded kinematics (the decoder's output is a view valid until its next step)."""
    if output is None:
        return lambda kinematics, t_us: np.array(kinematics, dtype=np.float64)
    return lambda kinematics, t_us: output(kinematics)


def open_sinks(spec: LaunchSpec, command_length: int, n_outputs: int = 0, classes=(), names=None) -> list:
    """Open every sink (motor ports last of all steps; among sinks, files last). Partly opened sinks are closed
    on failure.
    command_length: values per command (0 = not known: a command relay); n_outputs: the network's outputs
    (channels of a zenoh sink's spikes). A decisions sink names classes by ``classes`` and samples by
    ``names(index)``."""
    for label, kind, values, _ in spec.sinks:
        if kind == "motors" and command_length and len(values["ids"]) != command_length:
            raise Context(spec.path, f"sinks.{label}", spec.display).fail(
                "ids", f"expected {command_length} motor id(s), one per command value, got {toml_value(values['ids'])}")
    # Files last: a sink that fails to open (a motor port, a zenoh session) must not leave an existing
    # command log or decisions file truncated. ``opened`` keeps the launch file's order.
    order = sorted(range(len(spec.sinks)), key=lambda i: spec.sinks[i][1] in FILE_SINKS)
    opened: list = [None] * len(spec.sinks)
    try:
        for index in order:
            label, kind, values, driver_opts = spec.sinks[index]
            if kind == "command_log":
                opened[index] = CommandLogSink(values["path"], values["format"], name=label)
                continue
            if kind == "zenoh":
                try:
                    opened[index] = ZenohSink(values["key"], spikes_key=values["spikes_key"],
                                              telemetry_key=values["telemetry_key"], n_outputs=n_outputs,
                                              config_file=values["config"] or None, block=values["block"],
                                              wait_subscriber_s=values["wait_subscriber_s"], name=label)
                except TransportError as exc:
                    raise Context(spec.path, f"sinks.{label}", spec.display).fail("config" if values["config"]
                                                                                 else "key", str(exc)) from None
                continue
            if kind == "decisions":
                opened[index] = DecisionLogSink(values["path"], classes, names, values["format"], name=label)
                continue
            options = dict(timeout_ms=values["timeout_ms"], feedback_hz=values["feedback_hz"], **driver_opts)
            if values["baud"]:
                options["baud"] = values["baud"]
            if values["max_velocity_radps"]:
                options["max_velocity"] = values["max_velocity_radps"]
            if values["max_accel_radps2"]:
                options["max_accel"] = values["max_accel_radps2"]
            try:
                opened[index] = MotorSink(values["protocol"], values["port"], values["ids"], name=label,
                                          fatal_after_ms=values["fatal_after_ms"], **options)
            except (ValueError, OSError, RuntimeError) as exc:
                raise _rephrase(Context(spec.path, f"sinks.{label}", spec.display), exc) from None
    except BaseException:
        for sink in opened:
            if sink is not None:
                sink.close()
        raise
    return opened


def publishing(sinks: list, decode, on_report):
    """The decode step and report callback with the zenoh sinks' extra outputs added: each step's output
    spikes (a network's) and every loop report go to the zenoh sinks that publish them."""
    spiking = [sink for sink in sinks if isinstance(sink, ZenohSink) and sink.spike_publisher is not None]
    reporting = [sink for sink in sinks if isinstance(sink, ZenohSink) and sink.telemetry is not None]
    if spiking:
        inner = decode

        def decode(output, t_us):
            for sink in spiking:
                sink.spikes(output, t_us)
            return inner(output, t_us)
    if reporting:
        user = on_report

        def on_report(report):
            for sink in reporting:
                try:
                    sink.report(report)
                except Exception:  # telemetry is best effort; commands keep flowing
                    pass
            if user is not None:
                user(report)
    return decode, on_report


def build_relay(spec: LaunchSpec, on_report=None, on_event=None) -> Graph:
    """The robot side of a command stream: the subscription on [source] key, the sinks (motors: their
    safety layer) and the CommandRelay between them (``graph.loop``)."""
    source = spec.source
    try:
        subscription = Subscription(source["key"], config_file=source["config"] or None,
                                    queue=source["queue_packets"], kinds=(wire.KIND_COMMAND,), shared=True)
    except TransportError as exc:
        raise Context(spec.path, "source", spec.display).fail("config" if source["config"] else "key",
                                                              str(exc)) from None
    try:
        sinks = open_sinks(spec, 0)
    except BaseException:
        subscription.close()
        raise
    motor_ids = [len(values["ids"]) for _, kind, values, _ in spec.sinks if kind == "motors"]
    graph = Graph(spec, subscription, None, None, None, None, None, sinks)
    graph.loop = CommandRelay(subscription, sinks, stale_ms=source["stale_ms"],
                              zero_length=motor_ids[0] if motor_ids else 0,
                              report_period_s=spec.loop.report_period_s, duration_s=spec.loop.duration_s,
                              on_report=on_report, on_event=on_event)
    return graph


def build_graph(spec: LaunchSpec, on_report=None, source=None) -> Graph:
    """Open the source (or take ``source``, already open: a robot's stream of a per-robot launch), build
    and check stages/binner/network or bin-level decoder/decode, open the sinks (last), make the Loop."""
    if spec.network is None:
        return _build_bin_decoder_graph(spec, on_report, source)
    if spec.decoder[0] == "classifier":
        return _build_classifier_graph(spec, on_report)
    source = source or open_graph_source(spec)
    try:
        if spec.kind == "dvs":
            chain = build_stages(spec, source.info.width, source.info.height)
            width, height = chain.output_resolution
            binner = StepBinner(spec.loop.dt_us, width, height, channels_by_polarity=spec.network["polarity_channels"])
            network, runtime = build_network(spec, width, height)
        else:
            chain = None
            binner = SpikeStepBinner(spec.loop.dt_us, source.info.channels, t0_us=getattr(source, "t_start_us", None))
            network, runtime = build_network(spec, *spike_grid(source.info))
        decoder, length = build_decoder(spec, network.n_outputs, runtime, network.readout)
        sinks = open_sinks(spec, length, network.n_outputs)
    except BaseException:
        source.close()
        raise
    graph = Graph(spec, source, chain, binner, network, runtime, decoder, sinks, notes=_adaptation_notes(spec, network))
    decode, on_report = publishing(sinks, make_decode(decoder), on_report)
    graph.loop = Loop(source, chain, binner, runtime, decode, sinks, spec.loop, on_report)
    return graph


def _build_bin_decoder_graph(spec: LaunchSpec, on_report, source=None) -> Graph:
    decoder = build_bin_decoder(spec)
    output, length = build_output(spec, decoder.n_out)
    source = source or open_graph_source(spec)
    try:
        if source.info.channels != decoder.n_units:
            key = "model" if spec.decoder[1]["model"] else "fit_path"
            raise Context(spec.path, "decoder", spec.display).fail(
                key, f"units mismatch: the decoder takes {decoder.n_units} units, {spec.source['path']} has "
                     f"{source.info.channels}")
        binner = CountBinner(spec.loop.dt_us, source.info.channels, t0_us=getattr(source, "t_start_us", None))
        sinks = open_sinks(spec, length)
    except BaseException:
        source.close()
        raise
    graph = Graph(spec, source, None, binner, None, None, decoder, sinks, output)
    decode, on_report = publishing(sinks, make_output_decode(output), on_report)
    graph.loop = Loop(source, None, binner, decoder, decode, sinks, spec.loop, on_report)
    return graph


def _build_classifier_graph(spec: LaunchSpec, on_report) -> Graph:
    """A model classifying the samples of a samples source: the network file's input spec sets the step grid
    and each sample's slot, its readout the classes; the network (prepared as pipeline.train.evaluate does:
    learning off, output membrane probed, a float model converted for the loihi backend) is reset after every
    sample by the decode step (pipeline.decoders.classifier.SampleDecisions)."""
    ctx = Context(spec.path, "network", spec.display)
    backend = spec.network["backend"]
    try:
        network, notes = prepare(Network.load(spec.network["file"]), backend)
    except ModelError as exc:
        raise ctx.fail("file", f"{spec.network['file'].name}: {exc}") from None
    except ValueError as exc:
        raise ctx.fail("file", str(exc)) from None
    model = network.input_spec
    if model.sensor != "dvs":
        raise ctx.fail("file", f"the model presents {model.sensor} input; a samples source replays DVS events "
                               f"(classify WAV clips with spikeloop evaluate)")
    if model.encoding == "frame":
        raise ctx.fail("file", f"the model presents each recording as one counted window repeated (encoding "
                               f"'frame'); the loop streams steps: classify it with spikeloop evaluate")
    if spec.loop.dt_us != model.bin_us:
        raise Context(spec.path, "loop", spec.display).fail(
            "dt_us", f"the model {spec.network['file'].name} steps every {model.bin_us} µs, got {spec.loop.dt_us}")
    if spec.network["polarity_channels"] != (model.polarity == "split"):
        raise ctx.fail("polarity_channels", f"the model's input spec has polarity {toml_value(model.polarity)}: expected "
                                            f"{str(model.polarity == 'split').lower()}")
    try:
        source = open_sample_source(spec.source, network.readout.classes, bin_us=model.bin_us,
                                    duration_us=model.duration_us, tail_steps=model.tail_steps,
                                    chunk_us=spec.chunk_us, speed=spec.loop.speed, fast=spec.loop.mode != "live")
    except SourceSpecError as exc:
        raise Context(spec.path, "source", spec.display).fail(exc.key, str(exc)) from None
    try:
        chain = build_stages(spec, source.info.width, source.info.height)
        width, height = chain.output_resolution
        channels = 2 if spec.network["polarity_channels"] else 1
        if network.n_inputs != channels * width * height:
            raise ctx.fail("file", f"network has {network.n_inputs} inputs, expected {channels * width * height} "
                                   f"({channels} channel(s) x {width} x {height} px after the stages)")
        graded = model.encoding == "counts"
        binner = (CountingStepBinner if graded else StepBinner)(
            spec.loop.dt_us, width, height, channels_by_polarity=spec.network["polarity_channels"], t0_us=0)
        runtime = build(network, backend)
        membrane = runtime.v(network.output_name)
        decisions = SampleDecisions(decoder_for(network, **spec.decoder[1]), source.slots,
                                    membrane=lambda: membrane, on_sample_end=runtime.reset)
        sinks = open_sinks(spec, len(DECISION_FIELDS), classes=network.readout.classes,
                           names=lambda i: source.slots[i].name)
    except BaseException:
        source.close()
        raise
    graph = Graph(spec, source, chain, binner, network, runtime, decisions, sinks, notes=notes)
    stepper = GradedStepper(runtime) if graded else runtime
    graph.loop = Loop(source, chain, binner, stepper, decisions, sinks, spec.loop, on_report)
    return graph


class GradedStepper:
    """A network runtime fed the steps of a CountingStepBinner (int32 (2, k): active input indices, event
    counts): the counts are the graded payloads of its input spikes."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime

    def warmup(self) -> None:
        self.runtime.warmup()

    def step(self, pairs: np.ndarray) -> np.ndarray:
        return self.runtime.step(pairs[0], pairs[1])
