"""The live view of ``spikeloop launch``: one OpenCV window (960 x 540 px) showing what the sensor sees, what
the network does and what the motors are told, with keys for pause, e-stop and recording.

Panels:

* events: the DVS events of the last ``event_window_ms`` ms at the sensor's resolution (ON green, OFF
  magenta on dark), scaled to fit; for an AER spike source (the cochlea) a raster of its channels over the
  last ``raster_ms`` ms instead (channel 0, the lowest frequency, at the bottom);
* spikes: a raster of the network's output neurons over the last ``raster_ms`` ms (one row per neuron,
  labelled with the population name, index and decoder role, and with the decoder's running class
  evidence when it keeps one: a command_map decoder's spike counts of the word in progress);
* commands: each command component (rad/s) over the last ``plot_s`` s;
* status: events/s, steps/s, event-to-command latency p50/p99 (from the loop's periodic report), and the
  paused / e-stop / recording state, with the key help.

Keys: space pause/resume (the loop stops stepping, the motors get zero commands, live events are dropped
and counted), ``e`` latched e-stop on every motor sink (``c`` clears it), ``r`` start/stop recording the incoming events to
``spikeloop-YYYYmmdd-HHMMSS.aedat4`` in the working directory, ``q``/Esc quit (motors stopped by the caller).

Threads: the loop runs in a worker thread and feeds the view from its own thread (``Loop.on_packet``, a
wrapped ``decode`` and ``on_report``) under a lock; :meth:`LiveView.run` draws and reads keys on the main
thread (where OpenCV's window system wants to be). :meth:`LiveView.draw` returns the image without any
window, for tests and snapshots.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from pipeline.app.dashboard import BG, DIM, FG, HEIGHT, OFF, ON, WIDTH, StepHistory, _panel, _raster, _wheels
from pipeline.core.packet import Packet, StreamInfo
from pipeline.loop import Loop, LoopReport

WINDOW_TITLE = "spikeloop live"
EVENT_BG = (40, 34, 34)
WARN = (60, 60, 235)
PAUSE = (60, 200, 255)
COMMAND_COLOURS = ((80, 180, 255), (255, 170, 60), (120, 220, 120), (200, 120, 255))
_ROLES = {"forward": "fwd", "backward": "back", "left": "turn L", "right": "turn R"}


@dataclass(frozen=True)
class ViewLayout:
    """Panel rectangles (x, y, w, h) in window pixels (30 px title bar, 18 px captions, status at the bottom)."""

    events: tuple = (10, 50, 560, 420)
    spikes: tuple = (590, 50, 360, 190)
    commands: tuple = (590, 280, 360, 190)
    status_y: int = 500


def neuron_labels(network, decoder) -> list[str]:
    """One raster label per output neuron: population name and index, plus the decoder's use of it (for a
    drive decoder: fwd / back / turn L / turn R)."""
    name = network.output_name
    if getattr(decoder, "name", "") == "command_map":  # each output's class: the one it votes for most
        classes = range(network.n_outputs) if decoder.votes is None else \
            np.where(decoder.votes.any(axis=1), np.argmax(decoder.votes, axis=1), -1)
        return [f"{name} {i} " + ("(no vote)" if c < 0 else f"'{decoder.names[c]}'" + (" cmd" if c in decoder.commands
                                                                                      else ""))
                for i, c in enumerate(classes)]
    groups = getattr(decoder, "groups", {})
    labels = []
    for i in range(network.n_outputs):
        roles = [_ROLES.get(key, key) for key, indices in groups.items() if i in set(np.asarray(indices).tolist())]
        labels.append(f"{name} {i}" + (f" {','.join(roles)}" if roles else ""))
    return labels


def command_names(decoder, sinks) -> list[str]:
    """Names of the command components: wheels for a drive decoder, else the first motor sink's ids, else
    none known ([]: the view calls them c0, c1, ...)."""
    kind = getattr(decoder, "name", "")
    if kind == "drive" or kind == "command_map" and decoder.command.size == 2:
        return ["left wheel", "right wheel"]
    for sink in sinks:
        if getattr(sink, "ids", ()):
            return [f"motor {i}" for i in sink.ids]
    return []


def recording_name(now: float | None = None) -> str:
    """``spikeloop-YYYYmmdd-HHMMSS.aedat4`` for the local time ``now`` (default: the current time)."""
    return time.strftime("spikeloop-%Y%m%d-%H%M%S.aedat4", time.localtime(now))


class LiveView:
    """Records what the loop does and draws it; owns the pause / e-stop / recording keys.

    loop: the :class:`pipeline.loop.Loop` to show (its ``on_packet``, ``decode`` and ``on_report`` are
        wrapped; the previous ``on_report`` is still called). info: the source's stream info (resolution).
    neuron_names: raster labels, one per output neuron. command_names: one per command component (when the
        commands have another length they are called c0, c1, ...).
    limit_radps: plot range +-limit (rad/s); None = the largest command seen in the plotted window.
    record_dir: where recordings go. log: ``log(event, **fields)`` for key actions (default: silent).
    """

    def __init__(self, loop: Loop, info: StreamInfo, neuron_names: list[str], command_names: list[str],
                 limit_radps: float | None = None, title: str = WINDOW_TITLE, event_window_ms: float = 30.0,
                 raster_ms: int = 1000, plot_s: float = 5.0, record_dir: str | Path = ".",
                 log: Callable[..., None] | None = None, evidence: Callable[[], np.ndarray] | None = None) -> None:
        self.loop = loop
        self.info = info
        self.neuron_names = list(neuron_names)
        self.command_names = list(command_names)
        self.limit_radps = limit_radps
        self.title = title
        self.event_window_us = int((raster_ms if info.kind == "spikes" else event_window_ms) * 1000)
        self._evidence_of = evidence
        self._evidence: np.ndarray | None = None
        self._snapshot_evidence: np.ndarray | None = None
        self.raster_ms = raster_ms
        self.plot_s = plot_s
        self.record_dir = Path(record_dir)
        self.log = log or (lambda event, **fields: None)
        self.layout = ViewLayout()
        steps_per_s = 1e6 / loop.config.dt_us
        self._lock = threading.Lock()
        self._packets: deque[tuple[int, np.ndarray]] = deque()
        self._spikes = StepHistory(max(1, int(raster_ms / 1000 * steps_per_s)), bool)
        self._commands = StepHistory(max(2, int(plot_s * steps_per_s)), np.float64)
        self._report: LoopReport | None = None
        self._events_per_s = math.nan
        self._last_events_in = 0
        self.estopped = False
        self.recording: Path | None = None
        self.recorded_events = 0
        self._writer = None
        self.record_error = ""
        self.last_image: np.ndarray | None = None
        # blank images copied for every frame (np.full with a colour costs ~2 ms and holds the GIL)
        self._blank = np.full((HEIGHT, WIDTH, 3), BG, np.uint8)
        self._blank_events = np.full((info.height, info.width, 3), EVENT_BG, np.uint8)
        self._attach()

    # -- recording what the loop does (loop thread) ---------------------------------------------------

    def _attach(self) -> None:
        loop = self.loop
        decode, previous = loop.decode, loop.on_report

        def recorded_decode(spikes: np.ndarray, t_us: int):
            command = decode(spikes, t_us)
            with self._lock:
                self._spikes.append(t_us, spikes)
                if self._evidence_of is not None:
                    self._evidence = np.array(self._evidence_of())
                if command is not None:
                    self._commands.append(t_us, command)
            return command

        def on_report(report: LoopReport) -> None:
            self.on_report(report)
            if previous is not None:
                previous(report)

        loop.decode = recorded_decode
        loop.on_report = on_report
        loop.on_packet = self.on_packet

    def on_packet(self, packet: Packet) -> None:
        """Keep the packet's events for the event view and append them to the recording, if any."""
        events = packet.events
        with self._lock:
            if len(events):
                self._packets.append((int(events["timestamp"][-1]), events))
                newest = self._packets[-1][0]
                while self._packets[0][0] < newest - self.event_window_us:
                    self._packets.popleft()
            if self._writer is not None and len(events):
                try:
                    self._writer.write(events)
                    self.recorded_events += len(events)
                except ValueError as exc:  # e.g. a source whose timestamps went backwards
                    self.record_error = str(exc)
                    self._close_writer()

    def on_report(self, report: LoopReport) -> None:
        """Keep the latest report for the status line: a periodic one's rates and latency cover its window,
        the final one's the whole run."""
        with self._lock:
            since = 0 if report.final else self._last_events_in
            self._events_per_s = (report.events_in - since) / report.wall_s
            self._last_events_in = report.events_in
            self._report = report

    # -- keys (main thread) ---------------------------------------------------------------------------

    def toggle_pause(self) -> None:
        if self.loop.paused:
            self.loop.resume()
            self.log("resumed")
        else:
            self.loop.pause()
            self.log("paused", motors="zero velocity")

    def estop(self) -> None:
        """Latched emergency stop on every sink that has one (motor sinks); the loop keeps running."""
        stopped = [sink.name for sink in self.loop.sinks if hasattr(sink, "estop")]
        for sink in self.loop.sinks:
            if hasattr(sink, "estop"):
                sink.estop()
        self.estopped = True
        self.log("estop", sinks=",".join(stopped) or "none", latched=True)

    def clear_estop(self) -> None:
        """Release a latched e-stop (a deliberate second key): the motor controllers re-initialise at zero."""
        if not self.estopped:
            return
        for sink in self.loop.sinks:
            if hasattr(sink, "reset_estop"):
                sink.reset_estop()
        self.estopped = False
        self.log("estop_cleared")

    def toggle_recording(self) -> None:
        """Start recording the incoming events to a new AEDAT 4 file, or stop and close the current one."""
        from recordings.aedat4_writer import Aedat4Writer

        if self._writer is not None:
            with self._lock:
                path, events = self.recording, self.recorded_events
                self._close_writer()
            self.log("recording_stopped", path=str(path), events=events)
            print(f"recorded {events} events to {path}", flush=True)
            return
        if self.info.kind != "dvs":
            self.record_error = "r records DVS events to AEDAT 4; this source streams AER spikes"
            return
        path = self.record_dir / recording_name()
        writer = Aedat4Writer(path, self.info.width, self.info.height, source=self.info.name or "spikeloop")
        with self._lock:
            self._writer = writer
            self.recording = path
            self.recorded_events = 0
            self.record_error = ""
        self.log("recording", path=str(path))
        print(f"recording events to {path}", flush=True)

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def handle_key(self, key: int) -> bool:
        """Apply one key (``cv2.waitKey`` code, -1 = none); returns False when the view should quit."""
        key &= 0xFF
        if key in (ord("q"), 27):
            return False
        if key == ord(" "):
            self.toggle_pause()
        elif key == ord("e"):
            self.estop()
        elif key == ord("c"):
            self.clear_estop()
        elif key == ord("r"):
            self.toggle_recording()
        return True

    # -- drawing --------------------------------------------------------------------------------------

    def snapshot(self):
        """Copies for drawing: events of the last window (or None), (spike times (k,), fired bool (k, n)),
        commands (m, 1 + n) rows of (t_us, values...), the latest report, events/s."""
        with self._lock:
            if self._packets:
                newest = self._packets[-1][0]
                events = np.concatenate([e for _, e in self._packets])
                events = events[events["timestamp"] >= newest - self.event_window_us]
            else:
                events = None
            spikes = self._spikes.last(self.raster_ms * 1000)
            commands = np.column_stack(self._commands.last(self.plot_s * 1e6))
            self._snapshot_evidence = None if self._evidence is None else self._evidence.copy()
            return events, spikes, commands, self._report, self._events_per_s

    def event_image(self, events: np.ndarray | None) -> np.ndarray:
        """The events at sensor resolution: (height, width, 3) uint8 BGR, ON green / OFF magenta on dark."""
        image = self._blank_events.copy()
        if events is not None and len(events):
            on = events["polarity"] != 0
            image[events["y"][~on], events["x"][~on]] = OFF
            image[events["y"][on], events["x"][on]] = ON
        return image

    def _channels_panel(self, image: np.ndarray, events) -> None:
        """AER spikes of the last ``raster_ms`` ms: x = time (newest right), y = channel (0 at the bottom)."""
        x, y, w, h = self.layout.events
        n = 0 if events is None else len(events)
        channels = max(1, self.info.channels)
        view = _panel(image, (x, y, w, h), f"input spikes (AER), last {self.raster_ms} ms: {channels} channels, "
                                           f"channel 0 at the bottom, {n} spikes")
        view[:] = EVENT_BG
        if n:
            t_end = int(events["timestamp"][-1])
            xs = (w - 1 - (t_end - events["timestamp"]) * (w / (self.raster_ms * 1000))).astype(np.int64)
            ys = (h - 1 - (events["channel"].astype(np.int64) * h) // channels).clip(0, h - 1)
            inside = (xs >= 0) & (xs < w)
            view[ys[inside], xs[inside]] = ON

    def _events_panel(self, image: np.ndarray, events) -> None:
        if self.info.kind == "spikes":
            self._channels_panel(image, events)
            return
        x, y, w, h = self.layout.events
        scale = min(w / self.info.width, h / self.info.height)
        sw, sh = max(1, int(self.info.width * scale)), max(1, int(self.info.height * scale))
        n = 0 if events is None else len(events)
        caption = (f"DVS events, last {self.event_window_us / 1000:g} ms: {self.info.width} x {self.info.height} px"
                   f" sensor (x{scale:.2g}), ON green / OFF magenta, {n} events")
        view = _panel(image, (x + (w - sw) // 2, y, sw, sh), caption)
        if scale >= 1:
            view[:] = cv2.resize(self.event_image(events), (sw, sh), interpolation=cv2.INTER_NEAREST)
            return
        view[:] = EVENT_BG
        if n:  # shrinking: map every event to its pixel so none is averaged away
            on = events["polarity"] != 0
            xs = np.minimum((events["x"] * scale).astype(np.int64), sw - 1)
            ys = np.minimum((events["y"] * scale).astype(np.int64), sh - 1)
            view[ys[~on], xs[~on]] = OFF
            view[ys[on], xs[on]] = ON

    def _status(self, image: np.ndarray, report: LoopReport | None, events_per_s: float) -> None:
        y = self.layout.status_y
        if report is None:
            rates = "waiting for the first report ..."
        else:
            rates = (f"events/s {events_per_s:,.0f}   steps/s {report.steps_per_s:,.0f}   "
                     f"latency p50 {report.latency_p50_ms:.2f} ms  p99 {report.latency_p99_ms:.2f} ms   "
                     f"steps {report.steps:,}   behind: merged {report.merged_steps} dropped {report.dropped_events}")
        cv2.putText(image, rates, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, FG, 1, cv2.LINE_AA)
        x = 10
        states = []
        if self.loop.paused:
            dropped = f", {self.loop.paused_events:,} events dropped" if self.loop.config.mode == "live" else ""
            states.append((f"PAUSED: motors at 0 rad/s{dropped}", PAUSE))
        else:
            states.append(("RUNNING", ON))
        if self.estopped:
            states.append(("E-STOP LATCHED (restart to clear)", WARN))
        if self._writer is not None:
            states.append((f"REC {self.recording.name} ({self.recorded_events:,} events)", WARN))
        elif self.record_error:
            states.append((f"recording stopped: {self.record_error}", WARN))
        for text, colour in states:
            cv2.putText(image, text, (x, y + 28), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
            x += cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)[0][0] + 24
        keys = "keys: space pause   e e-stop   c clear e-stop   r record   q quit"
        kw = cv2.getTextSize(keys, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0]
        cv2.putText(image, keys, (WIDTH - 10 - kw, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.4, DIM, 1, cv2.LINE_AA)

    def raster_labels(self, fired: np.ndarray) -> list[str]:
        """Raster row labels: each neuron's name and its firing rate (Hz) over the raster's time window (and the
        decoder's class evidence, when it keeps one)."""
        rates = fired.sum(axis=0) / (self.raster_ms / 1000) if len(fired) else np.zeros(len(self.neuron_names))
        evidence = self._snapshot_evidence
        if evidence is not None and len(evidence) == len(self.neuron_names):
            return [f"{name}  {rate:.0f} Hz  ev {int(e)}"
                    for name, rate, e in zip(self.neuron_names, rates, evidence)]
        return [f"{name}  {rate:.0f} Hz" for name, rate in zip(self.neuron_names, rates)]

    def raster_label_width(self) -> int:
        """Width (px) of the raster's label column: the longest label (with a 4-digit rate) plus a margin, at
        most half the panel."""
        suffix = "  0000 Hz  ev 000" if self._evidence_of is not None else "  0000 Hz"
        widths = [cv2.getTextSize(f"{n}{suffix}", cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0] for n in self.neuron_names]
        return min(16 + max(widths, default=0), self.layout.spikes[2] // 2)

    def draw(self) -> np.ndarray:
        """The view now: (540, 960, 3) uint8 BGR."""
        events, spikes, commands, report, events_per_s = self.snapshot()
        image = self._blank.copy()
        cv2.putText(image, self.title, (10, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.5, FG, 1, cv2.LINE_AA)
        self._events_panel(image, events)
        _raster(_panel(image, self.layout.spikes, f"network output spikes, last {self.raster_ms} ms"), *spikes,
                self.raster_labels(spikes[1]), 0, self.raster_ms, label_w=self.raster_label_width())
        limit = self.limit_radps
        if limit is None:
            limit = float(np.abs(commands[:, 1:]).max(initial=0.0)) or 1.0
        names = self.command_names
        if len(commands) and len(names) != commands.shape[1] - 1:
            names = [f"c{i}" for i in range(commands.shape[1] - 1)]
        caption = f"motor commands (rad/s), last {self.plot_s:g} s" + (": e-stop, not applied" if self.estopped else "")
        plot = _panel(image, self.layout.commands, caption)
        _wheels(plot, commands, limit, self.plot_s, names, COMMAND_COLOURS, legend=False)
        cv2.putText(plot, "0", (4, plot.shape[0] // 2 - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, DIM, 1, cv2.LINE_AA)
        x, y, w, _ = self.layout.commands
        for i in reversed(range(len(names))):  # the legend goes on the caption line, clear of the lines
            w -= cv2.getTextSize(names[i], cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)[0][0]
            cv2.putText(image, names[i], (x + w, y - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        COMMAND_COLOURS[i % len(COMMAND_COLOURS)], 1, cv2.LINE_AA)
            w -= 14
        self._status(image, report, events_per_s)
        return image

    # -- running (main thread) ------------------------------------------------------------------------

    def run(self, window: bool = True, fps: float = 30.0, snapshot: str | Path | None = None) -> LoopReport:
        """Run the loop in a worker thread and draw at ``fps`` on this thread until the loop ends or the user
        quits (q/Esc: ``loop.stop()``). ``window``: show it with OpenCV (else only draw, e.g. for
        ``snapshot``, a PNG of the last frame written at the end). Returns the loop's final report; an
        exception in the loop is re-raised here. An open recording is closed."""
        outcome: dict = {}

        def work() -> None:
            try:
                outcome["report"] = self.loop.run()
            except BaseException as exc:  # re-raised on the main thread
                outcome["error"] = exc

        worker = threading.Thread(target=work, name="spikeloop-loop", daemon=True)
        worker.start()
        period = 1.0 / fps
        try:
            if window:
                cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
            while worker.is_alive():
                start = time.perf_counter()
                self.last_image = self.draw()
                if window:
                    cv2.imshow(self.title, self.last_image)
                    wait_ms = max(1, int((period - (time.perf_counter() - start)) * 1000))
                    quit_key = not self.handle_key(cv2.waitKey(wait_ms))
                    if quit_key or cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:  # q/Esc or closed
                        self.loop.stop()
                else:
                    worker.join(max(0.0, period - (time.perf_counter() - start)))
            worker.join()
            self.last_image = self.draw()
            if snapshot:
                cv2.imwrite(str(snapshot), self.last_image)
        finally:
            self.loop.stop()
            worker.join(timeout=5.0)
            with self._lock:
                self._close_writer()
            if window:
                cv2.destroyWindow(self.title)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["report"]


def for_graph(graph, log: Callable[..., None] | None = None) -> LiveView:
    """The live view of a built launch graph (pipeline.app.launch.Graph): labels from its network and decoder,
    command names and plot range from its decoder / motor sinks."""
    params = graph.spec.decoder[1]
    limit = params.get("max_wheel_radps")
    if limit is None:
        limits = [v["max_velocity_radps"] for _, k, v, _ in graph.spec.sinks if k == "motors" and v["max_velocity_radps"]]
        limit = max(limits) if limits else None
    title = f"spikeloop live: {graph.spec.display}, source {graph.source.info.name or graph.spec.source['type']}"
    evidence = (lambda: graph.decoder.counts) if hasattr(graph.decoder, "counts") else None  # per output neuron
    return LiveView(graph.loop, graph.source.info, neuron_labels(graph.network, graph.decoder),
                    command_names(graph.decoder, graph.sinks), limit_radps=limit, title=title, log=log,
                    evidence=evidence)
