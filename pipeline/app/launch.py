"""Launch files: load, validate and build a loop graph from TOML (stdlib ``tomllib``).

A launch file names the nodes and their parameters::

    [source]            type = "replay" | "webcam" | "camera" | "tcp", and the type's keys
    [loop]              mode, dt_us, speed, max_lag_ms, ... (pipeline.loop.LoopConfig)
    [stages.<label>]    one table per stage, in file order; type = a pipeline.stages.STAGES name
                        (default: the label), other keys are the stage's parameters
    [network]           builder = a pipeline.snn.builders.BUILDERS name (+ [network.params]) or file = "net.npz";
                        backend = "loihi" | "float"; polarity_channels = true | false
    [decoder]           type = a pipeline.decoders.DECODERS name, other keys its parameters
    [sinks.<label>]     type = "motors" | "command_log" (default: the label)
    [controller]        process settings: log format, real-time priority

Nothing in the file is executed or imported: every name resolves through a registry. Validation runs in
two phases, both before any motor port opens: :func:`load_launch` checks the file's structure and every
value it can check alone (types, ranges, registry names, existing files); :func:`build_graph` then opens
the source (to learn the sensor size), builds stages, binner, network and decoder, checks that their
shapes fit together, and opens the sinks last. Every error names the file, the section, the key and the
expectation, e.g. ``launch/replay.toml: [stages.noise] duration_us: expected a positive integer, got -5``.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tomllib

from pipeline.app.sources import SourceSpecError, parse_source_spec
from pipeline.core.schema import Context, Key, LaunchError, check_table, check_value
from pipeline.loop import MODES, Loop, LoopConfig

SECTIONS = ("source", "loop", "stages", "network", "decoder", "sinks", "controller")
SOURCE_TYPES = ("replay", "webcam", "camera", "tcp", "world")

SOURCE_KEYS: dict[str, dict[str, Key]] = {
    "replay": {
        "path": Key("file", help="recording (any supported format), relative to the launch file"),
        "loop": Key("bool", False, help="start again at the end (the stream never ends)"),
        "start_us": Key("int", 0, low=0, help="skip this much of the recording (µs)"),
    },
    "webcam": {
        "device": Key("str", "0", help="camera index or video file"),
        "width": Key("int", 0, low=0, high=32767, help="resize frames to this width (px, 0 = native)"),
        "height": Key("int", 0, low=0, high=32767, help="resize frames to this height (px, 0 = native)"),
    },
    "camera": {
        "serial": Key("str", "", help="camera serial number ('' = the first camera found)"),
    },
    "tcp": {
        "host": Key("str", help="AEDAT 4 network stream host (dv-processing NetworkWriter / DV software)"),
        "port": Key("int", low=1, high=65535, help="TCP port"),
    },
    "world": {  # closed through the graph's motors: built by `spikeloop demo`, not by open_source
        "seed": Key("int", 0, low=0, help="arena seed of the simulated robot world (devices.world)"),
    },
}

LOOP_KEYS: dict[str, Key] = {
    "mode": Key("str", "fast", choices=MODES, help="live | paced | fast"),
    "dt_us": Key("int", 1000, low=1, high=1_000_000, help="network step (µs)"),
    "speed": Key("number", 1.0, low=0, low_open=True, help="paced replay speed (1 = real time)"),
    "max_lag_ms": Key("number", 10.0, low=0, low_open=True, help="a bin waiting longer than this merges (ms)"),
    "queue_packets": Key("int", 64, low=1, high=100_000, help="source queue capacity (packets)"),
    "report_period_s": Key("number", 1.0, low=0, help="periodic report interval (s, 0 = off)"),
    "duration_s": Key("number", 0.0, low=0, help="stop after this much sensor time (s, 0 = until the end)"),
    "command_every_steps": Key("int", 1, low=1, high=1_000_000, help="send a command every N steps"),
    "spin_us": Key("int", 800, low=0, high=100_000, help="pacing: spin this long before each tick (µs)"),
    "idle_ms": Key("number", 50.0, low=0, help="live: silent this long -> keep stepping on the wall clock (ms)"),
    "switch_interval_us": Key("int", 200, low=1, high=100_000, help="GIL switch interval while running (µs)"),
}

NETWORK_KEYS: dict[str, Key] = {
    "builder": Key("str", "", help="a pipeline.snn.builders.BUILDERS name"),
    "file": Key("str", "", help="a saved network (.npz, Network.save), relative to the launch file"),
    "backend": Key("str", "loihi", choices=("loihi", "float"), help="SNN backend"),
    "polarity_channels": Key("bool", True, help="ON and OFF events drive separate inputs"),
}

SINK_TYPES = ("motors", "command_log")
SINK_KEYS: dict[str, dict[str, Key]] = {
    "motors": {
        "protocol": Key("str", help="motor protocol (devices.motors.PROTOCOLS)"),
        "port": Key("str", help="serial device path or 'emulated:<protocol>'"),
        "ids": Key("int_list", low=0, high=255, help="motor ids, in command order"),
        "baud": Key("int", 0, low=0, high=20_000_000, help="baud rate (0 = the protocol's default)"),
        "timeout_ms": Key("number", 200.0, low=0, low_open=True, help="command watchdog (ms)"),
        "max_velocity_radps": Key("number", 0.0, low=0, help="velocity limit (rad/s, 0 = device limit)"),
        "max_accel_radps2": Key("number", 0.0, low=0, help="acceleration limit (rad/s^2, 0 = none)"),
        "feedback_hz": Key("number", 50.0, low=0, high=10_000, help="read-back request rate (Hz)"),
        "fatal_after_ms": Key("number", 2000.0, low=0, help="link down this long = device lost (ms, 0 = never)"),
    },
    "command_log": {
        "path": Key("out_path", help="file to write (relative to the working directory)"),
        "format": Key("str", "csv", choices=("csv", "jsonl"), help="csv | jsonl"),
    },
}

CONTROLLER_KEYS: dict[str, Key] = {
    "log_format": Key("str", "auto", choices=("auto", "text", "json"),
                      help="log lines: key=value text or JSON (auto: JSON when --headless)"),
    "realtime_priority": Key("int", 0, low=0, high=99, help="SCHED_FIFO priority (0 = normal scheduling)"),
}


@dataclass
class LaunchSpec:
    """A validated launch file (nothing opened yet). Tables are plain dicts of checked values."""

    path: Path
    display: str
    source: dict
    loop: LoopConfig
    stages: list[tuple[str, str, dict]]
    network: dict
    network_params: dict
    decoder: tuple[str, dict]
    sinks: list[tuple[str, str, dict, dict]]
    controller: dict


# -- overrides ---------------------------------------------------------------------------------------

def parse_set(assignment: str) -> tuple[list[str], Any]:
    """``section.key=value`` (``--set``) -> (path, value); the value is parsed as TOML, else kept as text."""
    name, sep, text = assignment.partition("=")
    path = [p.strip() for p in name.strip().split(".")]
    if not sep or len(path) < 2 or not all(path):
        raise LaunchError(f"--set {assignment!r}: expected section.key=value")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    return path, value


def apply_set(table: dict, path: list[str], value: Any, assignment: str) -> None:
    for part in path[:-1]:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise LaunchError(f"--set {assignment!r}: {part} is not a table")
    table[path[-1]] = value


def apply_source(raw: dict, source: str) -> None:
    """``--source``: replace the file's source. A recording PATH (relative to the cwd) keeps the file's
    replay options and ``video:PATH`` (a video through the frame-to-event emulator) the file's loop mode;
    ``webcam[:N]``, ``camera[:SERIAL]`` and ``tcp://HOST:PORT`` are live and switch the loop to live mode."""
    old = raw.get("source", {}) if isinstance(raw.get("source"), dict) else {}
    try:
        table = parse_source_spec(source)
    except SourceSpecError as exc:
        raise LaunchError(f"--source: {exc}") from None
    if table["type"] == "replay":
        keep = {k: v for k, v in old.items() if k in SOURCE_KEYS["replay"] and old.get("type") == "replay"}
        raw["source"] = {**keep, **table}
        return
    raw["source"] = table
    if source.startswith("video:"):
        return
    loop = raw.setdefault("loop", {})
    if isinstance(loop, dict):
        loop["mode"] = "live"


# -- phase 1: the file alone -------------------------------------------------------------------------

def read_launch_toml(path: str | Path, sets: list[str] = ()) -> dict:
    """The TOML tables of a launch file with ``--set key.path=TOML`` overrides applied (not yet validated).
    Raises LaunchError naming the file when it is missing or not valid TOML."""
    display = str(path)
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LaunchError(f"{display}: launch file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise LaunchError(f"{display}: not valid TOML: {exc}") from None
    for assignment in sets:
        key_path, value = parse_set(assignment)
        apply_set(raw, key_path, value, assignment)
    return raw


def load_launch(path: str | Path, sets: list[str] = (), source: str | None = None,
                duration_s: float | None = None) -> LaunchSpec:
    """Read and validate a launch file plus command-line overrides. Raises LaunchError."""
    path = Path(path)
    display = str(path)
    raw = read_launch_toml(path, sets)
    if source is not None:
        apply_source(raw, source)
    if duration_s is not None:
        raw.setdefault("loop", {})["duration_s"] = duration_s
    path = path.resolve()

    def ctx(section: str) -> Context:
        return Context(path, section, display)

    unknown = [s for s in raw if s not in SECTIONS]
    if unknown:
        raise LaunchError(f"{display}: unknown section [{unknown[0]}] (expected: {', '.join(SECTIONS)})")
    for required in ("source", "network", "decoder", "sinks"):
        if required not in raw:
            raise LaunchError(f"{display}: missing section [{required}]")

    source_spec = _typed_table(ctx("source"), raw["source"], SOURCE_TYPES, SOURCE_KEYS, default_type=None)
    loop_values = check_table(ctx("loop"), raw.get("loop", {}), LOOP_KEYS)
    recorded = source_spec["type"] in ("replay", "world") or (source_spec["type"] == "webcam"
                                                   and not source_spec["device"].isdigit())
    if not recorded and loop_values["mode"] != "live":
        raise ctx("loop").fail("mode", f"expected 'live' for a live {source_spec['type']} source, "
                                       f"got {loop_values['mode']!r}")
    loop = LoopConfig(**loop_values)

    stages = _check_stages(path, display, raw.get("stages", {}))
    network, network_params = _check_network(ctx("network"), raw["network"], Context(path, "network.params", display))
    decoder = _check_decoder(ctx("decoder"), raw["decoder"])
    sinks = _check_sinks(path, display, raw["sinks"])
    controller = check_table(ctx("controller"), raw.get("controller", {}), CONTROLLER_KEYS)
    return LaunchSpec(path, display, source_spec, loop, stages, network, network_params, decoder, sinks,
                      controller)


def _typed_table(ctx: Context, table: Any, types: tuple[str, ...], schemas: dict[str, dict[str, Key]],
                 default_type: str | None) -> dict:
    if not isinstance(table, dict):
        raise LaunchError(f"{ctx.where()}: expected a table, got {table!r}")
    kind = table.get("type", default_type)
    if kind is None:
        raise ctx.fail("type", f"missing (expected one of {', '.join(map(repr, types))})")
    if kind not in types:
        raise ctx.fail("type", f"expected one of {', '.join(map(repr, types))}, got {kind!r}")
    values = check_table(ctx, table, schemas[kind], ignore=("type",))
    values["type"] = kind
    return values


def _stage_registry() -> dict:
    from pipeline.stages import STAGES

    return STAGES


_PARAMETER_ERROR = re.compile(r"parameter '(?P<key>[\w\[\]]+)'\s*(?:=\s*)?(?P<rest>.*)$", re.S)


def _rephrase(ctx: Context, error: Exception) -> LaunchError:
    """Turn a component's ``"<name>: parameter 'key' ..."`` ValueError into a launch-file message."""
    text = str(error)
    match = _PARAMETER_ERROR.search(text)
    if match:
        return ctx.fail(match["key"], match["rest"])
    return LaunchError(f"{ctx.where()}: {text}")


def _accepted_parameters(cls, skip: tuple[str, ...]) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls.__init__).parameters
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {n: p for n, p in params.items() if n not in ("self", *skip) and p.kind in named}


def _check_free_params(ctx: Context, table: dict, cls, skip: tuple[str, ...]) -> dict:
    """Parameters of a registry class (stage, decoder): unknown and missing keys are rejected here,
    values by the class itself when it is built (its errors are rephrased with file and section)."""
    accepted = _accepted_parameters(cls, skip)
    params = {k: v for k, v in table.items() if k != "type"}
    for name in params:
        if name not in accepted:
            raise ctx.fail(name, f"unknown key (expected one of: {', '.join(sorted(accepted))})")
    for name, parameter in accepted.items():
        if parameter.default is inspect.Parameter.empty and name not in params:
            raise ctx.fail(name, "missing (required by this type)")
    return params


def _check_stages(path: Path, display: str, table: Any) -> list[tuple[str, str, dict]]:
    if not isinstance(table, dict):
        raise LaunchError(f"{display}: [stages]: expected tables [stages.<label>], got {table!r}")
    registry = _stage_registry()
    out = []
    for label, stage in table.items():
        ctx = Context(path, f"stages.{label}", display)
        if not isinstance(stage, dict):
            raise LaunchError(f"{ctx.where()}: expected a table, got {stage!r}")
        kind = stage.get("type", label)
        if kind not in registry:
            raise ctx.fail("type", f"expected one of {', '.join(map(repr, sorted(registry)))}, got {kind!r}")
        out.append((label, kind, _check_free_params(ctx, stage, registry[kind], ("width", "height"))))
    return out


def _check_network(ctx: Context, table: Any, params_ctx: Context) -> tuple[dict, dict]:
    from pipeline.snn.builders import BUILDERS

    if not isinstance(table, dict):
        raise LaunchError(f"{ctx.where()}: expected a table, got {table!r}")
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
        raise ctx.fail("builder", f"expected one of {', '.join(map(repr, sorted(BUILDERS)))}, got {values['builder']!r}")
    return values, check_table(params_ctx, params, BUILDERS[values["builder"]].params)


def _check_decoder(ctx: Context, table: Any) -> tuple[str, dict]:
    from pipeline.decoders import DECODERS

    if not isinstance(table, dict):
        raise LaunchError(f"{ctx.where()}: expected a table, got {table!r}")
    kind = table.get("type")
    if kind not in DECODERS:
        raise ctx.fail("type", f"expected one of {', '.join(map(repr, sorted(DECODERS)))}, got {kind!r}")
    return kind, _check_free_params(ctx, table, DECODERS[kind], ("n_outputs",))


def _check_sinks(path: Path, display: str, table: Any) -> list[tuple[str, str, dict, dict]]:
    if not isinstance(table, dict) or not table:
        raise LaunchError(f"{display}: [sinks]: expected at least one table [sinks.<label>], got {table!r}")
    out = []
    for label, sink in table.items():
        ctx = Context(path, f"sinks.{label}", display)
        if not isinstance(sink, dict):
            raise LaunchError(f"{ctx.where()}: expected a table, got {sink!r}")
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


def _check_motor_sink(ctx: Context, values: dict, driver: Any, driver_ctx: Context) -> dict:
    from devices.motors import PROTOCOLS
    from devices.motors.registry import driver_class

    if values["protocol"] not in PROTOCOLS:
        raise ctx.fail("protocol", f"expected one of {', '.join(map(repr, sorted(PROTOCOLS)))}, got {values['protocol']!r}")
    port = values["port"]
    if port.startswith("emulated:") and port != f"emulated:{values['protocol']}":
        raise ctx.fail("port", f"expected 'emulated:{values['protocol']}' or a device path, got {port!r}")
    if not port.startswith("emulated:") and not Path(port).exists():
        raise ctx.fail("port", f"serial device not found: {port} (expected a device path or "
                               f"'emulated:{values['protocol']}')")
    if len(set(values["ids"])) != len(values["ids"]):
        raise ctx.fail("ids", f"expected distinct motor ids, got {values['ids']!r}")
    if not isinstance(driver, dict):
        raise LaunchError(f"{driver_ctx.where()}: expected a table, got {driver!r}")
    return _check_free_params(driver_ctx, driver, driver_class(values["protocol"]), ("ids",))


# -- phase 2: build ----------------------------------------------------------------------------------

@dataclass
class Graph:
    """Everything the loop needs, built and checked, ready to warm up and run."""

    spec: LaunchSpec
    source: Any
    stages: list
    binner: Any
    network: Any
    runtime: Any
    decoder: Any
    sinks: list
    loop: Loop | None = None

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


def open_source(spec: LaunchSpec):
    """The source named by the launch file; a recording or device that cannot be opened gives a LaunchError."""
    from devices.errors import CameraError
    from recordings.base import RecordingError

    ctx = Context(spec.path, "source", spec.display)
    values = spec.source
    kind = values["type"]
    if kind == "replay":
        from recordings.replay import ReplaySource

        mode = spec.loop.mode
        try:
            return ReplaySource(values["path"], speed=spec.loop.speed, fast=(mode != "live"), loop=values["loop"],
                                start_us=values["start_us"], chunk_us=spec.loop.dt_us)
        except (RecordingError, ValueError, OSError) as exc:
            raise ctx.fail("path", f"cannot replay {values['path']}: {exc}") from None
    if kind == "webcam":
        from devices.webcam import WebcamSource

        size = (values["width"], values["height"]) if values["width"] and values["height"] else None
        device = int(values["device"]) if values["device"].isdigit() else values["device"]
        try:
            return WebcamSource(device, size=size)
        except (CameraError, ValueError) as exc:
            raise ctx.fail("device", f"cannot open webcam {values['device']!r}: {exc}") from None
    if kind == "world":
        raise ctx.fail("type", "'world' is closed through the robot's motors: run it with `spikeloop demo --launch "
                               f"{spec.display}`, or replay a recording of it with --source PATH")
    if kind == "tcp":
        from devices.dvs import NetworkEventSource

        try:
            return NetworkEventSource(values["host"], values["port"])
        except CameraError as exc:
            raise ctx.fail("host", f"cannot receive tcp://{values['host']}:{values['port']}: {exc}") from None
    from devices.dvs import DvsCameraSource

    try:
        return DvsCameraSource(values["serial"] or None)
    except CameraError as exc:
        raise ctx.fail("serial" if values["serial"] else "type", f"no DVS camera could be opened: {exc}") from None


def build_stages(spec: LaunchSpec, width: int, height: int) -> tuple[list, int, int]:
    """Stage objects in file order for a width x height sensor; returns (stages, out_width, out_height)."""
    registry = _stage_registry()
    stages = []
    for label, kind, params in spec.stages:
        ctx = Context(spec.path, f"stages.{label}", spec.display)
        try:
            stage = registry[kind](width=width, height=height, **params)
        except (ValueError, TypeError) as exc:
            raise _rephrase(ctx, exc) from None
        width, height = stage.output_resolution
        stages.append(stage)
    return stages, width, height


def build_network(spec: LaunchSpec, width: int, height: int):
    """The network (built by name, or loaded) and its runtime; inputs must match the binner's grid."""
    from pipeline.snn import Network, build
    from pipeline.snn.builders import BUILDERS

    ctx = Context(spec.path, "network", spec.display)
    channels = 2 if spec.network["polarity_channels"] else 1
    if spec.network["file"]:
        try:
            network = Network.load(spec.network["file"])
        except ValueError as exc:
            raise ctx.fail("file", str(exc)) from None
    else:
        builder = BUILDERS[spec.network["builder"]]
        try:
            network = builder.build(width, height, channels, **spec.network_params)
            network.validate()
        except ValueError as exc:
            raise _rephrase(Context(spec.path, "network.params", spec.display), exc) from None
    expected = channels * width * height
    if network.n_inputs != expected:
        raise ctx.fail("file" if spec.network["file"] else "builder",
                       f"network has {network.n_inputs} inputs, expected {expected} "
                       f"({channels} channel(s) x {width} x {height} px after the stages)")
    if spec.network["backend"] == "loihi" and network.is_float:
        raise ctx.fail("backend", "expected 'float' for a network with float neurons, got 'loihi'")
    try:
        runtime = build(network, backend=spec.network["backend"])
    except ValueError as exc:
        raise ctx.fail("backend", str(exc)) from None
    return network, runtime


def build_decoder(spec: LaunchSpec, n_outputs: int):
    """The decoder for ``n_outputs`` network outputs, plus the length of the command it produces."""
    from pipeline.decoders import DECODERS

    kind, params = spec.decoder
    ctx = Context(spec.path, "decoder", spec.display)
    try:
        probe = DECODERS[kind](n_outputs=n_outputs, **params)
        length = len(np.atleast_1d(probe.update(np.zeros(n_outputs, dtype=np.uint8), 0)))
        decoder = DECODERS[kind](n_outputs=n_outputs, **params)
    except (ValueError, TypeError) as exc:
        raise _rephrase(ctx, exc) from None
    return decoder, length


def make_decode(decoder):
    """``(spikes, t_us) -> float64 command`` from a decoder whose value is a scalar or an array."""

    def decode(spikes: np.ndarray, t_us: int) -> np.ndarray:
        return np.atleast_1d(np.asarray(decoder.update(spikes, t_us), dtype=np.float64))

    return decode


def open_sinks(spec: LaunchSpec, command_length: int) -> list:
    """Open every sink (motor ports last of all steps). Partly opened sinks are closed on failure."""
    from pipeline.sinks import CommandLogSink, MotorSink

    for label, kind, values, _ in spec.sinks:
        if kind == "motors" and len(values["ids"]) != command_length:
            raise Context(spec.path, f"sinks.{label}", spec.display).fail(
                "ids", f"expected {command_length} motor id(s), one per command value, got {values['ids']!r}")
    opened = []
    try:
        for label, kind, values, driver_opts in spec.sinks:
            if kind == "command_log":
                opened.append(CommandLogSink(values["path"], values["format"], name=label))
                continue
            options = dict(timeout_ms=values["timeout_ms"], feedback_hz=values["feedback_hz"], **driver_opts)
            if values["baud"]:
                options["baud"] = values["baud"]
            if values["max_velocity_radps"]:
                options["max_velocity"] = values["max_velocity_radps"]
            if values["max_accel_radps2"]:
                options["max_accel"] = values["max_accel_radps2"]
            try:
                opened.append(MotorSink(values["protocol"], values["port"], values["ids"], name=label,
                                        fatal_after_ms=values["fatal_after_ms"], **options))
            except (ValueError, OSError, RuntimeError) as exc:
                raise _rephrase(Context(spec.path, f"sinks.{label}", spec.display), exc) from None
    except BaseException:
        for sink in opened:
            sink.close()
        raise
    return opened


def build_graph(spec: LaunchSpec, on_report=None) -> Graph:
    """Open the source, build and check stages/binner/network/decoder, open the sinks, make the Loop."""
    from pipeline.stages import StepBinner

    source = open_source(spec)
    try:
        stages, width, height = build_stages(spec, source.info.width, source.info.height)
        binner = StepBinner(spec.loop.dt_us, width, height, channels_by_polarity=spec.network["polarity_channels"])
        network, runtime = build_network(spec, width, height)
        decoder, length = build_decoder(spec, network.n_outputs)
        sinks = open_sinks(spec, length)
    except BaseException:
        source.close()
        raise
    graph = Graph(spec, source, stages, binner, network, runtime, decoder, sinks)
    graph.loop = Loop(source, stages, binner, runtime, make_decode(decoder), sinks, spec.loop, on_report)
    return graph

