"""``spikeloop demo``: closed-loop obstacle avoidance in a simulated arena, no hardware needed.

  spikeloop demo                          a window (when a display exists), real time; q quits, e e-stops,
                                          c clears the e-stop, space pauses
  spikeloop demo --headless               as fast as the machine allows; writes an MP4 and a PNG summary
                                          (path, collisions and the run's numbers; where: printed at the end)
  spikeloop demo --headless --duration 60 --seed 3 --json     one JSON object with the run's numbers

The demo's parameters are launch/demo.toml (--launch FILE for another). Headless runs are the same for a
seed under any load (the world waits for every command); with a window the world runs on the wall clock.
The window and the video are drawn on the main thread from copies the world's thread takes.
"""
from __future__ import annotations

import argparse
import json
import math
import queue
import sys
import threading
import time
from pathlib import Path

from pipeline.app import arguments
from pipeline.app.errors import check_output_path, write_atomically
from pipeline.app.progress import ProgressLine

#: Longest --duration (simulated s): 24 h. Beyond it a typo (1e300) ran until stopped, writing 30 video frames
#: per simulated second.
MAX_DURATION_S = 24 * 3600.0
#: Video frame period in simulated time (µs): 30 frames per simulated second.
VIDEO_FRAME_US = 33_333
WINDOW_TITLE = "spikeloop demo"


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _duration(text: str) -> float:
    """argparse type of --duration: simulated seconds in (0, MAX_DURATION_S]."""
    value = _positive(text)
    if value > MAX_DURATION_S:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_DURATION_S:g} s (24 h) of simulated time, "
                                         f"got {text!r}")
    return value


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser("demo", help=summary,
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=arguments.seed("an arena seed"), default=0, help="arena seed, >= 0 (default 0; 0-15 were used for tuning)")
    parser.add_argument("--duration", type=_duration, default=60.0,
                        help="simulated seconds, > 0 and at most 86400 (24 h; default 60)")
    parser.add_argument("--headless", action="store_true",
                        help="no window: run unpaced and write --video and --png instead")
    parser.add_argument("--video", default=None, help="MP4 to write (headless default: spikeloop-demo.mp4; "
                                                      "'none' to skip)")
    parser.add_argument("--png", "--plot", dest="png", default=None,
                        help="summary PNG to write (headless default: spikeloop-demo.png)")
    parser.add_argument("--record", default=None, help="also write the robot camera's DVS events to this .aedat4")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the results")
    parser.add_argument("--backend", choices=("loihi", "float"), default=None,
                        help="SNN backend (default: the launch file's, loihi)")
    parser.add_argument("--speed", type=_positive, default=1.0, help="window mode: simulated seconds per second")
    parser.add_argument("--zero-weights", action="store_true", help="ablation: every synaptic weight set to 0")
    parser.add_argument("--controller", choices=("snn", "braitenberg"), default="snn",
                        help="snn (default) or braitenberg: a non-spiking baseline on the same ON/OFF cue")
    parser.add_argument("--launch", default=None, help="the demo's launch file (default launch/demo.toml)")
    parser.set_defaults(func=run)


class Frames:
    """Dashboard states handed from the world's thread to the main thread, which draws them.

    Every ``VIDEO_FRAME_US`` of simulated time the world's thread copies the world and the recorder (in
    lockstep at the first frame after a command instant, when the loop has done exactly the steps up to it,
    so the video is the same for a seed). ``latest_only`` (a window): the main thread shows the newest one;
    otherwise (a video) every one is kept, and the world waits when the main thread is 8 behind.
    """

    def __init__(self, latest_only: bool, command_period_us: int, frame_us: int, lockstep: bool):
        self.latest_only = latest_only
        self.command_period_us = command_period_us
        self.frame_us = frame_us
        self.lockstep = lockstep
        self.next_us = 0
        self.queue: queue.Queue = queue.Queue(maxsize=1 if latest_only else 8)
        self.closed = False

    def on_frame(self, run, world, t_us: int) -> None:
        if t_us < self.next_us or self.closed:
            return
        if self.lockstep and (t_us - self.frame_us) % self.command_period_us:
            return
        self.next_us = t_us + VIDEO_FRAME_US
        state = (world.snapshot(), run.recorder.view(), t_us)
        if self.latest_only:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                pass
            self.queue.put_nowait(state)
            return
        while not self.closed:
            try:
                self.queue.put(state, timeout=0.05)
                return
            except queue.Full:
                continue

    def get(self, timeout_s: float):
        try:
            return self.queue.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        """The main thread stops taking states: the world's thread no longer waits for it."""
        self.closed = True


def draw_dashboard(run, world, recorder, t_us: int):
    """The dashboard image for a (copied) world and recorder state, with the run's status numbers."""
    from pipeline.app.dashboard import draw

    speed = world.robot.wheel_radius_m * float(world.wheel_radps.mean())
    seconds = max(t_us / 1e6, 1e-9)
    what = "SNN (" + run.spec.network["backend"] + ")" if run.config.controller == "snn" else "Braitenberg (numpy)"
    status = [
        ("speed", f"{speed:5.2f} m/s"),
        ("distance", f"{world.distance_m:5.1f} m"),
        ("events/s", f"{recorder.events_total / seconds:6.0f}"),
        ("collisions", f"{world.collisions}"),
        ("controller", what.split(" ")[0]),
    ]
    title = (f"spikeloop demo  seed {run.config.seed}   world -> DVS -> {what} -> "
             "Dynamixel (emulated, pty) -> world")
    return draw(world, recorder, t_us, title, status)


def run(args) -> int:
    import cv2

    from pipeline.app.dashboard import HEIGHT, WIDTH, has_display
    from pipeline.app.demo import DEMO_LAUNCH, DemoConfig, DemoRun
    from pipeline.core.schema import LaunchError

    window = not args.headless and has_display()
    if not args.headless and not window:
        print("spikeloop demo: no display found; running headless (use --headless to say so)", file=sys.stderr)
    headless = not window
    video = args.video if args.video is not None else ("spikeloop-demo.mp4" if headless else None)
    png = args.png if args.png is not None else ("spikeloop-demo.png" if headless else None)
    video = None if video == "none" else video
    png = None if png == "none" else png
    for flag, path in (("--video", video), ("--png", png), ("--record", args.record)):
        problem = path and check_output_path(path, flag)
        if problem:
            print(f"spikeloop demo: {problem}", file=sys.stderr)
            return 2
    try:
        config = DemoConfig(seed=args.seed, duration_s=args.duration, backend=args.backend,
                            mode="fast" if headless else "paced", speed=args.speed, zero_weights=args.zero_weights,
                            controller=args.controller, launch=args.launch or DEMO_LAUNCH)
    except ValueError as error:
        print(f"spikeloop demo: {error}", file=sys.stderr)
        return 2
    writer = None
    if video:
        from pipeline.app.video import VideoWriter, h264_available

        try:
            writer = VideoWriter(video, (WIDTH, HEIGHT), 30.0)
        except OSError as error:
            print(f"spikeloop demo: {error}", file=sys.stderr)
            return 1
        if not h264_available():
            print(f"spikeloop demo: {video}: MPEG-4 Part 2 (mp4v), which browsers do not play; "
                  f"pip install 'spikeloop[video]' for H.264", file=sys.stderr)
    progress = Progress(args.duration, quiet=args.json)
    recorder = EventRecorder(args.record) if args.record else None
    frames: Frames | None = None

    def on_frame(run, world, events, t_us):
        progress.update(world)
        if recorder is not None:
            recorder.write(world, events)
        if frames is not None:
            frames.on_frame(run, world, t_us)

    try:
        demo = DemoRun(config, on_frame=on_frame)
    except (LaunchError, ValueError, OSError) as error:
        print(f"spikeloop demo: {error}", file=sys.stderr)
        return 1
    if window or writer is not None:
        frames = Frames(latest_only=window, command_period_us=demo.command_period_us, frame_us=demo.spec.loop.dt_us,
                        lockstep=not window)
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["result"] = demo.run()
        except BaseException as exc:  # re-raised on the main thread
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="spikeloop-demo", daemon=True)
    screen = Screen(demo) if window else None
    try:
        worker.start()
        while worker.is_alive() or (frames is not None and not frames.queue.empty()):
            state = frames.get(0.05) if frames is not None else None
            if state is None:
                if screen is not None:
                    screen.keys(1)
                elif frames is None:
                    worker.join(0.1)
                continue
            image = draw_dashboard(demo, *state)
            if writer is not None:
                writer.write(image)
            if screen is not None:
                screen.show(image)
    except KeyboardInterrupt:
        demo.stop()
        worker.join(5.0)
        outcome["interrupted"] = True
    finally:
        if frames is not None:
            frames.close()
        demo.stop()
        worker.join(10.0)
        if writer is not None:
            writer.close()
        if screen is not None:
            screen.close()
        progress.done()
        if recorder is not None:
            recorder.close()
    if outcome.get("interrupted"):
        print(f"spikeloop demo: interrupted at {demo.world.time_s:.1f} s simulated"
              + (f"; video up to there: {Path(video).resolve()}" if video else "")
              + ("; no summary PNG written" if png else ""), file=sys.stderr)
        return 130
    if "error" in outcome:
        raise outcome["error"]
    summary = outcome["result"].summary()
    if png:
        write_summary_png(png, demo, summary)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['sim_seconds']:.1f} s simulated in arena {args.seed}: {summary['collisions']} collisions, "
              f"{summary['distance_m']:.1f} m driven, mean speed {summary['mean_speed_mps']:.3f} m/s "
              f"({100 * summary['mean_speed_fraction']:.0f} % of top speed), {summary['events']:,} events, "
              f"latency p50 {summary['latency_p50_us']:.0f} µs / p99 {summary['latency_p99_us']:.0f} µs from "
              f"arrival, p50 {summary['sensor_latency_p50_us']:.0f} µs / p99 {summary['sensor_latency_p99_us']:.0f} µs "
              f"from sensor time, {summary['realtime_factor']:.2f}x real time"
              + (f", Loihi 1 estimate {summary['energy_uj_per_s']:.2f} µJ/s dynamic (Davies et al. 2018 pre-silicon "
                 f"per-op energy) + {summary['static_energy_uj_per_s']:.0f} µJ/s static (measured idle, Blouw et al. "
                 f"2019); not counted: host I/O, barrier sync, x86 cores' per-step work"
                 if summary["energy_uj_per_s"] is not None else ""))
    for path, what in ((video, "video"), (png, "summary"), (args.record, "events")):
        if path:  # with --json, stdout holds the JSON object only: say where files went on stderr
            print(f"{what}: {Path(path).resolve()}", file=sys.stderr if args.json else sys.stdout)
    return 0


def write_summary_png(path: str, demo, summary: dict) -> None:
    """The run's summary picture (pipeline.app.demo_summary) as a PNG, written atomically."""
    import cv2

    from pipeline.app.demo_summary import draw_summary

    path_m, collisions = demo.recorder.track()
    ok, data = cv2.imencode(".png", draw_summary(demo.world, path_m, collisions, summary))
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the summary PNG")
    write_atomically(path, lambda handle: handle.write(data.tobytes()))


class Screen:
    """The demo's window (main thread only): shows dashboard images and applies keys. q/Esc or closing the
    window stops the run, e e-stops the motors (latched), c clears the e-stop, space pauses the world."""

    def __init__(self, demo):
        import cv2

        self.cv2 = cv2
        self.demo = demo
        cv2.namedWindow(WINDOW_TITLE, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        self.shown = False

    def show(self, image) -> None:
        self.cv2.imshow(WINDOW_TITLE, image)
        self.shown = True
        self.keys(1)

    def keys(self, wait_ms: int) -> None:
        cv2 = self.cv2
        key = cv2.waitKey(wait_ms) & 0xFF
        demo = self.demo
        if key in (ord("q"), 27) or (self.shown and cv2.getWindowProperty(WINDOW_TITLE, cv2.WND_PROP_VISIBLE) < 1):
            demo.stop()
        elif key == ord("e"):
            demo.motors.estop()
        elif key == ord("c"):
            demo.motors.reset_estop()
        elif key == ord(" "):
            if demo.source.paused:
                demo.source.resume()
            else:
                demo.source.pause()

    def close(self) -> None:
        self.cv2.destroyWindow(WINDOW_TITLE)


class EventRecorder:
    """Writes the robot camera's events to an AEDAT 4 file in packets of PACKET_US of sensor time (as a camera
    delivers them; one packet per 1 ms frame would mostly be packet headers). Opened at the first frame."""

    PACKET_US = 10_000

    def __init__(self, path: str):
        self.path = path
        self.writer = None
        self.pending: list = []
        self.flush_at_us = self.PACKET_US

    def write(self, world, events) -> None:
        from recordings.aedat4_writer import Aedat4Writer

        if self.writer is None:
            self.writer = Aedat4Writer(self.path, world.camera.width, world.camera.height, source="spikeloop demo")
        self.pending.append(events)
        if world.time_s * 1e6 >= self.flush_at_us:
            self._flush()
            self.flush_at_us += self.PACKET_US

    def _flush(self) -> None:
        import numpy as np

        if self.pending:
            self.writer.write(np.concatenate(self.pending))
            self.pending = []

    def close(self) -> None:
        if self.writer is not None:
            self._flush()
            self.writer.close()


class Progress:
    """Simulated time, percent and wall time on stderr (pipeline.app.progress: redrawn on a terminal,
    a line every few seconds in a pipe or log)."""

    def __init__(self, duration_s: float, quiet: bool):
        self.duration_s = duration_s
        self.line = ProgressLine(quiet)
        self.started = time.monotonic()

    def update(self, world) -> None:
        if not self.line.due():
            return
        done = world.time_s / self.duration_s if self.duration_s else 0.0
        self.line.show(f"{world.time_s:6.1f} / {self.duration_s:g} s simulated ({100 * done:3.0f} %), "
                       f"{world.collisions} collisions, {time.monotonic() - self.started:5.1f} s wall")

    def done(self) -> None:
        self.line.done()
