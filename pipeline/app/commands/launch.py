"""``spikeloop launch FILE``: run a launch file (live demo, replay, BCI, audio, or the headless robot controller).

Without ``--headless`` and with a display ($DISPLAY / $WAYLAND_DISPLAY), a graph with a network runs under the
live view (pipeline.app.liveview: DVS events or the cochlea raster, output spikes, commands; keys space pause,
e e-stop, r record (DVS), q quit).

A zenoh source (``--source zenoh:KEY`` or ``[source] type = "zenoh"``) runs the loop on packets another
process publishes; a key with a ``*`` chunk runs one loop per robot (pipeline.app.robots); ``kind =
"command"`` is the robot side: commands received -> motors (pipeline.relay). A network stream silent for
``[source] silence_ms`` is lost: ``source_lost`` is logged, the motors stop, exit 1.

Exit status: 0 finished or stopped by SIGTERM/SIGINT (motors stopped first); 2 invalid launch file or
override (nothing was started); 3 a motor device was lost for good (motors stopped); 1 the source or the
network failed while running, or a network stream was lost (motors stopped) - the scheme of
pipeline.app.errors.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time

from pipeline.app.dashboard import has_display
from pipeline.app.errors import EXIT_DEVICE_LOST, EXIT_FAILED, check_output_path
from pipeline.app.errors import EXIT_USAGE as EXIT_INVALID
from pipeline.app.launch import LaunchError, build_graph, build_relay, load_launch
from pipeline.app.liveview import for_graph
from pipeline.app.robots import RobotLoops, _transport
from pipeline.core.schema import toml_value


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser(
        "launch", help=summary,
        description="Run a TOML launch file. Everything is validated before any port opens or motor moves.")
    parser.add_argument("file", help="launch file (TOML), e.g. launch/replay.toml")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a value (TOML syntax; repeatable), e.g. --set loop.speed=4")
    parser.add_argument("--source", metavar="PATH|webcam[:N]|video:PATH|camera[:SERIAL]|tcp://HOST:PORT|zenoh:KEY|mic",
                        help="replace the file's source: a recording to replay (.wav audio, .mat DAD, .csv MC_Maze, "
                             "else DVS events), or a live source (loop runs live; zenoh:lab/*/dvs: one loop per "
                             "robot)")
    parser.add_argument("--robot", metavar="KEY",
                        help="a file whose [source] key has '*' (one loop per robot): run only the loop of the robot "
                             "publishing on KEY (e.g. lab/robot2/dvs), its sinks' '*' filled with its name")
    parser.add_argument("--headless", action="store_true",
                        help="controller process: no window, JSON log lines on stderr (unless [controller] "
                             "log_format says text); without it, key=value lines for people and, when a display "
                             "exists, the live view window (keys: space pause, e e-stop, r record, q quit)")
    parser.add_argument("--snapshot", "--png", "--plot", dest="snapshot", metavar="PNG",
                        help="live view: write its last frame to this PNG at the end (drawn even without a display)")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds of sensor time")
    parser.add_argument("--json", action="store_true", help="print the final report as one JSON object on stdout "
                                                            "(with --check: the validated graph)")
    parser.add_argument("--check", action="store_true",
                        help="validate the file (and --set/--source/--duration) and print the graph it describes, "
                             "without opening the source, a port or any output file; exit 0 valid, 2 invalid")
    parser.set_defaults(func=run)


class EventLog:
    """One line per event on stderr: ``{"t": unix_s, "event": ..., ...}`` (json) or ``event=... key=value``."""

    def __init__(self, as_json: bool, stream=None, **always) -> None:
        self.as_json = as_json
        self.stream = stream or sys.stderr
        self.always = always  # fields every line carries (a robot's loop: robot=KEY)
        self._lock = threading.Lock()

    def __call__(self, event: str, **fields) -> None:
        fields = {**self.always, **fields}
        if self.as_json:
            clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in fields.items()}
            line = json.dumps({"t": round(time.time(), 6), "event": event, **clean}, default=str)
        else:
            parts = [f"event={event}"]
            for key, value in _flatten(fields).items():
                if isinstance(value, float):
                    value = f"{value:.4g}"
                elif isinstance(value, str) and (not value or " " in value):
                    value = json.dumps(value)
                parts.append(f"{key}={value}")
            line = " ".join(parts)
        with self._lock:  # one robot loop per thread may log at once: whole lines only
            self.stream.write(line + "\n")
            self.stream.flush()


def _flatten(fields: dict, prefix: str = "") -> dict:
    """Nested dicts as dotted keys: {"motors": {"errors": 0}} -> {"motors.errors": 0}."""
    flat = {}
    for key, value in fields.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def set_realtime(priority: int, log: EventLog) -> None:
    """Ask for SCHED_FIFO at ``priority`` (1-99) before any thread starts, so the source reader, motor I/O
    and watchdog threads inherit it (a GIL held by a starved normal-priority thread would stall the loop);
    log whether the system allowed it."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        log("realtime", policy="SCHED_FIFO", priority=priority)
    except (PermissionError, OSError, AttributeError) as exc:
        log("realtime_refused", policy="SCHED_FIFO", priority=priority, reason=str(exc))


class Degradation:
    """Turns report counters into log events when they grow: ``behind`` (bins merged, packets dropped,
    events arriving too late for their step, ticks missed) and ``sink_errors``, so falling behind is
    logged as it happens, not only counted."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.seen = {"merged_steps": 0, "dropped_packets": 0, "late_events": 0, "missed_ticks": 0,
                     "sink_errors": 0}

    def __call__(self, report) -> None:
        grown = {k: getattr(report, k) - v for k, v in self.seen.items() if getattr(report, k) > v}
        self.seen.update({k: getattr(report, k) for k in grown})
        behind = {k: v for k, v in grown.items() if k != "sink_errors"}
        if behind:
            self.log("behind", **{f"new_{k}": v for k, v in behind.items()})
        if "sink_errors" in grown:
            self.log("sink_errors", new=grown["sink_errors"], total=report.sink_errors)


def motor_counters(sinks) -> dict:
    """Link and safety counters of every motor sink (watchdog stops, reconnects, coalesced commands ...)."""
    return {sink.name: sink.controller.counters for sink in sinks if hasattr(sink, "controller")}


def motor_shutdown(sinks) -> str:
    """What closing did to the motor sinks: "zero velocity, torque off" when every controller wrote both,
    else ``label: what happened`` per controller (e.g. its port was gone); "none" without motors."""
    from devices.motors.safety import STOPPED

    done = {sink.name: sink.controller.shutdown for sink in sinks if hasattr(sink, "controller")}
    if not done:
        return "none"
    if all(outcome == STOPPED for outcome in done.values()):
        return STOPPED
    return "; ".join(f"{name}: {outcome}" for name, outcome in done.items())


def robot_spec(spec, key: str):
    """``--robot KEY``: the one-robot spec of a per-robot file (LaunchError when the file is not one or KEY
    is not one of its robots)."""
    if not spec.per_robot:
        raise LaunchError(f"{spec.display}: --robot {key}: the [source] key {toml_value(spec.source.get('key', ''))} has no "
                          f"'*' (one loop per robot)")
    pattern = spec.source["key"].split("/")
    parts = key.split("/")
    if len(parts) != len(pattern) or any(p != "*" and p != k for p, k in zip(pattern, parts)) or "*" in key:
        raise LaunchError(f"{spec.display}: --robot {key}: expected a key matching {toml_value(spec.source['key'])}")
    return spec.for_robot(key)


def _child_args(args) -> list[str]:
    """The command line of one robot's process: this file with the same overrides, plus --robot KEY."""
    out = ["launch", args.file, "--headless"]
    for assignment in args.sets:
        out += ["--set", assignment]
    if args.source:
        out += ["--source", args.source]
    if args.duration is not None:
        out += ["--duration", str(args.duration)]
    return out


def describe_spec(spec) -> dict:
    """The validated launch graph as JSON-ready tables, section name -> values (defaults filled in, paths
    resolved), in the order the graph runs: source, loop, stages, network, decoder, output, sinks, controller."""
    import dataclasses
    from pathlib import Path

    def plain(value):
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    tables: dict = {"source": plain(spec.source), "loop": plain(dataclasses.asdict(spec.loop))}
    for label, kind, config in spec.stages:
        tables[f"stages.{label}"] = {"type": kind, **plain(dataclasses.asdict(config))}
    if spec.network is not None:
        tables["network"] = plain(spec.network)
        if spec.network_params:
            tables["network.params"] = plain(spec.network_params)
    kind, params = spec.decoder
    tables["decoder"] = {"type": kind, **plain(params)}
    if spec.output is not None:
        tables["output"] = plain(spec.output)
    for label, kind, values, driver in spec.sinks:
        tables[f"sinks.{label}"] = plain({**values, "type": kind})
        if driver:
            tables[f"sinks.{label}.driver"] = plain(driver)
    tables["controller"] = plain(spec.controller)
    return tables


def format_description(display: str, tables: dict) -> str:
    """``describe_spec``'s tables as text: one ``[section] key=value ...`` line each."""
    lines = [f"{display}: valid (nothing opened)"]
    for section, values in tables.items():
        fields = " ".join(f"{k}={json.dumps(v)}" for k, v in values.items())
        lines.append(f"  [{section}] {fields}")
    return "\n".join(lines)


def run(args) -> int:
    stop_signal: list[int] = []
    graph = None
    robots = None

    def on_signal(signum, frame) -> None:
        stop_signal.append(signum)
        if graph is not None:
            graph.loop.stop()
        if robots is not None:
            robots.stop()

    # Installed first, before the imports and the launch file: a signal while they load, while ports open
    # or while kernels compile still ends cleanly (exit 0; before the graph is built nothing opens).
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        spec = load_launch(args.file, sets=args.sets, source=args.source, duration_s=args.duration)
        if args.robot:
            spec = robot_spec(spec, args.robot)
    except LaunchError as exc:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        print(f"spikeloop launch: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.check:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        graph_tables = describe_spec(spec)
        print(json.dumps(graph_tables) if args.json else format_description(spec.display, graph_tables))
        return 0
    problem = args.snapshot and check_output_path(args.snapshot, "--snapshot")
    if problem:
        print(f"spikeloop launch: {problem}", file=sys.stderr)
        return EXIT_INVALID
    if args.snapshot and spec.network is None:
        print(f"spikeloop launch: --snapshot draws the live view of a network's input and output; {spec.display} "
              f"has no [network]", file=sys.stderr)
        return EXIT_INVALID
    log_format = spec.controller["log_format"]
    log = EventLog(log_format == "json" or (log_format == "auto" and args.headless),
                   **({"robot": args.robot} if args.robot else {}))
    degradation = Degradation(log)

    def on_report(report) -> None:
        log("final" if report.final else "stats", **{k: v for k, v in report.as_dict().items() if k != "final"})
        if not report.final and spec.kind != "command":
            degradation(report)

    def robot_reports(key: str):
        seen = Degradation(lambda event, **fields: log(event, robot=key, **fields))

        def on_robot_report(report) -> None:
            log("final" if report.final else "stats", robot=key,
                **{k: v for k, v in report.as_dict().items() if k != "final"})
            if not report.final:
                seen(report)
        return on_robot_report

    status = 0
    report = None
    try:
        if stop_signal:  # stopped while loading: nothing was opened
            log("signal", signal=signal.Signals(stop_signal[0]).name)
            return status
        if spec.controller["realtime_priority"]:
            set_realtime(spec.controller["realtime_priority"], log)
        if spec.per_robot:
            try:
                robots = RobotLoops(spec, log, robot_reports, child_args=_child_args(args))
            except LaunchError as exc:
                print(f"spikeloop launch: {exc}", file=sys.stderr)
                return EXIT_INVALID
            log("start", file=spec.display, source=f"zenoh:{spec.source['key']}", mode=spec.loop.mode,
                dt_us=spec.loop.dt_us, robots="one loop per key",
                sinks=",".join(f"{label}:{kind}" for label, kind, _, _ in spec.sinks))
            if stop_signal:
                robots.stop()
            status = robots.run()
            if stop_signal:
                log("signal", signal=signal.Signals(stop_signal[0]).name)
            log("stopped", robots={key: outcome for key, outcome in sorted(robots.outcomes.items())})
            return status
        try:
            graph = build_relay(spec, on_report, log) if spec.kind == "command" else build_graph(spec, on_report)
        except LaunchError as exc:
            print(f"spikeloop launch: {exc}", file=sys.stderr)
            return EXIT_INVALID
        try:
            graph.loop.warmup()
            network = graph.network
            if spec.kind == "command":
                log("start", file=spec.display, source=f"zenoh:{spec.source['key']}", relay="commands -> sinks",
                    stale_ms=spec.source["stale_ms"], sinks=",".join(f"{label}:{kind}" for label, kind, _, _ in spec.sinks))
            else:
                log("start", file=spec.display, source=spec.source["type"], mode=spec.loop.mode,
                    dt_us=spec.loop.dt_us, inputs=network.n_inputs if network else graph.decoder.n_units,
                    outputs=network.n_outputs if network else graph.decoder.n_out,
                    sinks=",".join(f"{label}:{kind}" for label, kind, _, _ in spec.sinks),
                    **(graph.source.clock_offset.as_dict() if getattr(graph.source, "clock_offset", None) else {}))
            for note in graph.notes:
                log("note", message=note)
            viewable = spec.network is not None  # the live view draws a network's input and output spikes
            window = viewable and not args.headless and has_display()
            if not stop_signal and (window or (viewable and args.snapshot)):  # a snapshot is drawn headless too
                report = for_graph(graph, log).run(window=window, snapshot=args.snapshot)
            elif not stop_signal:
                report = graph.loop.run()
            if report is not None and hasattr(graph.decoder, "summary"):  # a classifier's or command_map's decisions
                log("classified", **graph.decoder.summary())
            if stop_signal:
                log("signal", signal=signal.Signals(stop_signal[0]).name)
            if report is not None and report.fatal:
                log("device_lost", reason=report.fatal)
                status = EXIT_DEVICE_LOST
            elif getattr(graph.source, "stalled", False):
                log("source_lost", source=graph.source.info.name, silent_ms=spec.source["silence_ms"],
                    **_transport(graph.source))
                status = EXIT_FAILED
            elif spec.source["type"] == "zenoh" and spec.kind != "command":
                log("transport", source=graph.source.info.name, **_transport(graph.source))
        except Exception as exc:  # the source or the network failed: stop the motors, report, non-zero exit
            log("error", kind=type(exc).__name__, message=str(exc))
            status = EXIT_FAILED
        finally:
            counters = motor_counters(graph.sinks)
            try:
                graph.close()
                log("stopped", motors=motor_shutdown(graph.sinks), counters=counters)
            except Exception as exc:
                log("error", kind=type(exc).__name__, message=f"while stopping: {exc}")
                status = status or EXIT_FAILED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if args.json and report is not None:
        data = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in report.as_dict().items()}
        print(json.dumps(data))
    return status
