"""One compute node, several robots: a launch file whose ``[source]`` key has a ``*`` chunk.

``[source] type = "zenoh"``, ``key = "lab/*/dvs"``: one subscription on the pattern is split by the key
each sample names (devices.transport.zenoh_link.KeyDemux); the first sample of a new key (a robot) starts
that robot's own graph (stages, network, decoder state, binner: nothing shared), fed from its own
bounded queue, so nothing it sent is lost while its loop starts. Its sinks come from the
file with every ``*`` filled by the robot's chunk: ``[sinks.cmd] key = "lab/*/cmd"`` publishes robot1's
commands on ``lab/robot1/cmd``, a ``command_log`` path ``out/*.csv`` writes ``out/robot1.csv``.

``[controller] robots``: ``"processes"``: ``spikeloop launch FILE --robot KEY`` per robot,
started when the robot's first sample arrives (it subscribes itself, so what the robot sent while that
process started is not seen); every core, the most CPU per robot. ``"threads"``: one process, one Zenoh
session and one copy of the compiled kernels; each robot's Loop.run in its own thread with its reader
thread; the GIL keeps their Python work on one core. ``"scheduler"`` (the default): one process, one thread steps every
robot (Loop.begin/offer/service/finish): it wakes when any robot's sample arrives, and at least every
dt_us (the 1 kHz tick that runs a silent sensor's idle steps), hands each robot the packets its own queue
holds (ZenohSource.ready) and runs that robot's due steps, merging overdue ones exactly as Loop.run does.
Each robot keeps its own state, command keys, silence watch and counters; a robot that fails or is lost
is closed and the others go on. No reader thread and no hand-off queue per robot: the least CPU per
robot. bench/robots.py measures the three modes, 1 robot against 4 in the same run (README "Several
robots, measured"): the scheduler used the least CPU in every run (about half of processes') and had the
smallest 4-vs-1 gap in two of three runs; one thread's fair share of an overloaded machine is its limit.

A robot's loop ends when its stream ends (END), is lost (silent for ``silence_ms``), or reaches
``duration_s``; the launch ends when every robot that started has ended (or on a signal). Exit status 1
(pipeline.app.errors.EXIT_FAILED) when any robot's stream was lost or its loop failed, else 0.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from typing import Callable

from devices.transport import wire
from devices.transport.zenoh_link import KeyDemux, TransportError
from pipeline.app.errors import EXIT_FAILED
from pipeline.app.launch import Context, LaunchError, LaunchSpec, build_graph
from pipeline.app.sources import SourceSpecError, open_zenoh

#: Robots one compute process serves at most (samples for further keys are counted and ignored).
MAX_ROBOTS = 64


class RobotLoops:
    """Runs one loop per robot seen on ``spec``'s source pattern (see the module docstring).

    log(event, **fields): the launch command's event log (every line names the robot's key);
    make_on_report(key): the report callback of that robot's loop.
    """

    def __init__(self, spec: LaunchSpec, log, make_on_report: Callable[[str], Callable],
                 child_args: list[str] | None = None) -> None:
        self.spec = spec
        self.child_args = child_args
        self.processes = spec.controller["robots"] == "processes"
        self.scheduled = spec.controller["robots"] == "scheduler"
        self._scheduler: threading.Thread | None = None
        self._joining: list = []  # (key, graph) started, not yet picked up by the scheduler
        self.children: dict[str, subprocess.Popen] = {}
        self.log = log
        self.make_on_report = make_on_report
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.graphs: dict[str, object] = {}
        self.threads: dict[str, threading.Thread] = {}
        self.outcomes: dict[str, str] = {}  # key -> "ended" | "lost" | "stopped" | "failed" | "duration"
        source = spec.source
        kind = wire.KIND_DVS if spec.kind == "dvs" else wire.KIND_SPIKES
        try:
            self.demux = KeyDemux(source["key"], config_file=source["config"] or None,
                                  queue=1 if self.processes else source["queue_packets"], kinds=(kind,),
                                  max_keys=MAX_ROBOTS, discover_only=self.processes)
        except TransportError as exc:
            raise Context(spec.path, "source", spec.display).fail("config" if source["config"] else "key",
                                                                  str(exc)) from None

    def stop(self) -> None:
        """Stop every loop (thread- and signal-safe); robot processes get SIGTERM (motors stop, exit 0)."""
        self._stop.set()
        with self._lock:
            graphs = list(self.graphs.values())
            children = list(self.children.values())
        for graph in graphs:
            graph.loop.stop()
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        """Serve robots until all that started have ended (or a stop); the exit status."""
        wait_s = self.spec.source["first_packet_s"]
        started = time.monotonic()
        try:
            while not self._stop.is_set():
                for key in self.demux.new_keys(0.05):
                    if not self._stop.is_set():
                        self._spawn(key) if self.processes else self._start(key)
                with self._lock:
                    threads = list(self.threads.values())
                    running = threads or list(self.graphs)
                    alive = (any(key not in self.outcomes for key in self.graphs) if self.scheduled
                             else any(t.is_alive() for t in threads))
                if running and not alive:
                    break
                if not running and wait_s and time.monotonic() - started > wait_s:
                    self.log("error", kind="TransportError",
                             message=f"zenoh:{self.spec.source['key']}: no robot published within {wait_s:g} s")
                    return EXIT_FAILED
        finally:
            self.stop()
            with self._lock:
                threads = list(self.threads.values())
            for thread in threads:
                thread.join()
            if self._scheduler is not None:
                self._scheduler.join()
            self.demux.close()
        failed = [key for key, outcome in self.outcomes.items() if outcome in ("lost", "failed")]
        return EXIT_FAILED if failed else 0

    def _spawn(self, key: str) -> None:
        """Processes: ``spikeloop launch FILE --robot KEY`` (same overrides), watched by a thread."""
        command = [sys.executable, "-m", "pipeline.app.cli", *self.child_args, "--robot", key]
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        self.log("robot", robot=key, process=child.pid)
        with self._lock:
            self.children[key] = child
            thread = threading.Thread(target=self._watch, args=(key, child), name=f"robot {key}", daemon=True)
            self.threads[key] = thread
        thread.start()

    def _watch(self, key: str, child: subprocess.Popen) -> None:
        status = child.wait()
        outcome = {0: "ended" if not self._stop.is_set() else "stopped", 4: "lost"}.get(status, "failed")
        self.outcomes[key] = outcome
        self.log("robot_stopped", robot=key, outcome=outcome, status=status)

    def _start(self, key: str) -> None:
        spec = self.spec.for_robot(key)
        try:
            source = open_zenoh(spec.source, subscription=self.demux.routes[key])
            graph = build_graph(spec, on_report=self.make_on_report(key), source=source)
            graph.loop.warmup()
        except (LaunchError, SourceSpecError, ValueError, OSError) as exc:
            self.log("robot_error", robot=key, message=str(exc))
            self.outcomes[key] = "failed"
            return
        clock = getattr(source, "clock_offset", None)
        self.log("robot", robot=key, sinks=",".join(sink.name for sink in graph.sinks),
                 **(clock.as_dict() if clock is not None else {}))
        if self.scheduled:
            graph.loop.begin(source)  # counts the packets dropped while the loop was behind
            with self._lock:
                self.graphs[key] = graph
                self._joining.append((key, graph))
                if self._scheduler is None:
                    self._scheduler = threading.Thread(target=self._schedule, name="robots", daemon=True)
                    self._scheduler.start()
            self.demux.arrived.set()
            return
        with self._lock:
            self.graphs[key] = graph
            thread = threading.Thread(target=self._run_one, args=(key, graph), name=f"robot {key}", daemon=True)
            self.threads[key] = thread
        if self._stop.is_set():
            graph.loop.stop()
        thread.start()

    def _schedule(self) -> None:
        """``robots = "scheduler"``: one thread steps every robot's loop. It wakes when any robot's sample
        arrives (at the latest every dt_us: the 1 kHz tick that also runs a silent sensor's idle steps),
        hands each robot the packets its own queue holds and runs that robot's due steps; a robot whose
        stream ended, was lost or failed is closed, the others go on."""
        tick_s = min(0.05, self.spec.loop.dt_us / 1e6)
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(self.spec.loop.switch_interval_us / 1e6)
        active: dict[str, object] = {}
        try:
            while True:
                self.demux.arrived.wait(tick_s)
                self.demux.arrived.clear()
                with self._lock:
                    active.update(self._joining)
                    self._joining.clear()
                stopping = self._stop.is_set()
                for key, graph in list(active.items()):
                    try:
                        packets, ended = graph.source.ready()
                        loop = graph.loop
                        for packet in packets:
                            loop.offer(packet)
                        done = loop.service(ended) or stopping
                    except Exception as exc:  # this robot's source or network failed; the others keep running
                        self.log("error", robot=key, kind=type(exc).__name__, message=str(exc))
                        self._finish(key, graph, "failed")
                        del active[key]
                        continue
                    if done:
                        self._finish(key, graph, None)
                        del active[key]
                if stopping:
                    with self._lock:
                        if not self._joining:
                            return
        finally:
            sys.setswitchinterval(switch_interval)
            for key, graph in active.items():
                self._finish(key, graph, "stopped")

    def _finish(self, key: str, graph, outcome: str | None) -> None:
        """A scheduled robot is done: its final report, outcome (as ``_run_one`` decides it), and close."""
        try:
            report = graph.loop.finish()
            if outcome is None:
                source = graph.source
                if source.stalled:
                    outcome = "lost"
                    self.log("source_lost", robot=key, silent_ms=graph.spec.source["silence_ms"], **_transport(source))
                else:
                    outcome = "stopped" if self._stop.is_set() else "ended"
                if report.fatal:
                    outcome = "failed"
        except Exception as exc:
            outcome = "failed"
            self.log("error", robot=key, kind=type(exc).__name__, message=str(exc))
        self._close(key, graph, outcome)

    def _run_one(self, key: str, graph) -> None:
        outcome = "stopped"
        try:
            report = graph.loop.run()
            source = graph.source
            if source.stalled:
                outcome = "lost"
                self.log("source_lost", robot=key, silent_ms=graph.spec.source["silence_ms"],
                         **_transport(source))
            elif not self._stop.is_set():
                outcome = "ended"
            if report.fatal:
                outcome = "failed"
        except Exception as exc:  # this robot's source or network failed; the others keep running
            outcome = "failed"
            self.log("error", robot=key, kind=type(exc).__name__, message=str(exc))
        finally:
            self._close(key, graph, outcome)

    def _close(self, key: str, graph, outcome: str) -> None:
        try:
            graph.close()
        except Exception as exc:
            self.log("error", robot=key, kind=type(exc).__name__, message=f"while stopping: {exc}")
        self.log("robot_stopped", robot=key, outcome=outcome, **_transport(graph.source))
        self.outcomes[key] = outcome


def _transport(source) -> dict:
    """A zenoh source's counters worth a log line (gaps, drops, invalid samples, clock offset)."""
    stats = getattr(source, "stats", None)
    if not isinstance(stats, dict):
        return {}
    keep = ("samples", "gaps", "reordered", "restarts", "dropped_oldest", "errors", "ended", "clock_offset_us",
            "clock_uncertainty_us")
    return {k: stats[k] for k in keep if k in stats}
