"""``spikeloop demo``: closed-loop obstacle avoidance in a simulated arena, no hardware needed.

  spikeloop demo                          a window (when a display exists), real time; q quits, e e-stops,
                                          space pauses
  spikeloop demo --headless               as fast as the machine allows; writes an MP4 and a PNG summary
  spikeloop demo --headless --duration 60 --seed 3 --json     one JSON object with the run's numbers
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

#: Video frame period in simulated time (µs): 30 frames per simulated second.
VIDEO_FRAME_US = 33_333


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="closed-loop obstacle avoidance in a simulated world (no hardware)",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="arena seed (default 0)")
    parser.add_argument("--duration", type=float, default=60.0, help="simulated seconds (default 60)")
    parser.add_argument("--headless", action="store_true",
                        help="no window: run unpaced and write --video and --png instead")
    parser.add_argument("--video", default=None, help="MP4 to write (headless default: spikeloop-demo.mp4; "
                                                      "'none' to skip)")
    parser.add_argument("--png", default=None, help="summary PNG to write (headless default: spikeloop-demo.png)")
    parser.add_argument("--record", default=None, help="also write the robot camera's DVS events to this .aedat4")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the results")
    parser.add_argument("--backend", choices=("loihi", "float"), default="loihi", help="SNN backend (default loihi)")
    parser.add_argument("--speed", type=float, default=1.0, help="window mode: simulated seconds per second")
    parser.add_argument("--zero-weights", action="store_true", help="ablation: every synaptic weight set to 0")
    parser.set_defaults(func=run)


class VideoOutput:
    """Writes dashboard frames (every VIDEO_FRAME_US of simulated time) to an MP4 file and/or a window."""

    def __init__(self, video_path: str | None, window: bool):
        import cv2

        from pipeline.app.dashboard import HEIGHT, WIDTH

        self.cv2 = cv2
        self.writer = None
        if video_path:
            self.writer = cv2.VideoWriter(video_path, cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (WIDTH, HEIGHT))
            if not self.writer.isOpened():
                raise OSError(f"cannot write video {video_path} (OpenCV's mp4v writer failed)")
        self.window = window
        self.next_frame_us = 0
        self.last_image = None
        self.paused = False
        self.key_action = ""

    def frame(self, run, world, events, t_us: int) -> None:
        if t_us < self.next_frame_us:
            return
        self.next_frame_us = t_us + VIDEO_FRAME_US
        image = draw_dashboard(run, world, t_us)
        self.last_image = image
        if self.writer is not None:
            self.writer.write(image)
        if self.window:
            self._show(run, image)

    def _show(self, run, image) -> None:
        cv2 = self.cv2
        cv2.imshow("spikeloop demo", image)
        key = cv2.waitKey(1) & 0xFF
        while True:
            if key == ord("q") or key == 27:
                run.stop()
            elif key == ord("e"):
                run.motors.estop()
                self.key_action = "e-stop"
            elif key == ord(" "):
                self.paused = not self.paused
            if not self.paused or key in (ord("q"), 27):
                return
            key = cv2.waitKey(50) & 0xFF

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
        if self.window:
            self.cv2.destroyAllWindows()


def draw_dashboard(run, world, t_us: int):
    """The dashboard image with the run's live status numbers."""
    from pipeline.app.dashboard import draw

    recorder = run.recorder
    speed = world.robot.wheel_radius_m * float(world.wheel_radps.mean())
    seconds = max(t_us / 1e6, 1e-9)
    status = [
        ("speed", f"{speed:5.2f} m/s"),
        ("distance", f"{world.distance_m:5.1f} m"),
        ("events/s", f"{recorder.events_total / seconds:6.0f}"),
        ("collisions", f"{world.collisions}"),
        ("backend", run.config.backend),
    ]
    title = (f"spikeloop demo  seed {run.config.seed}   world -> DVS -> SNN ({run.config.backend}) -> "
             "Dynamixel (emulated, pty) -> world")
    return draw(world, recorder, t_us, title, status)


def run(args) -> int:
    from pipeline.app.dashboard import has_display
    from pipeline.app.demo import DemoConfig, DemoRun

    window = not args.headless and has_display()
    if not args.headless and not window:
        print("spikeloop demo: no display found; running headless (use --headless to say so)", file=sys.stderr)
    headless = not window
    video = args.video if args.video is not None else ("spikeloop-demo.mp4" if headless else None)
    png = args.png if args.png is not None else ("spikeloop-demo.png" if headless else None)
    video = None if video == "none" else video
    png = None if png == "none" else png
    config = DemoConfig(seed=args.seed, duration_s=args.duration, backend=args.backend,
                        mode="fast" if headless else "paced", speed=args.speed, zero_weights=args.zero_weights)
    try:
        output = VideoOutput(video, window)
    except OSError as error:
        print(f"spikeloop demo: {error}", file=sys.stderr)
        return 1
    progress = Progress(args.duration, quiet=args.json)
    recorder = EventRecorder(args.record) if args.record else None

    def on_frame(run, world, events, t_us):
        output.frame(run, world, events, t_us)
        progress.update(world)
        if recorder is not None:
            recorder.write(world, events)

    demo = DemoRun(config, on_frame=on_frame)
    try:
        result = demo.run()
    except KeyboardInterrupt:
        demo.stop()
        return 130
    finally:
        output.close()
        progress.done()
        if recorder is not None:
            recorder.close()
    if png and output.last_image is not None:
        import cv2

        cv2.imwrite(png, draw_dashboard(demo, demo.world, int(demo.world.time_s * 1e6)))
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['sim_seconds']:.1f} s simulated in arena {args.seed}: {summary['collisions']} collisions, "
              f"{summary['distance_m']:.1f} m driven, mean speed {summary['mean_speed_mps']:.3f} m/s "
              f"({100 * summary['mean_speed_fraction']:.0f} % of top speed), {summary['events']:,} events, "
              f"latency p50 {summary['latency_p50_us']:.0f} µs / p99 {summary['latency_p99_us']:.0f} µs, "
              f"{summary['realtime_factor']:.2f}x real time, "
              f"Loihi 1 estimate {summary['energy_uj_per_s']:.2f} µJ/s dynamic "
              f"(Davies et al. 2018 pre-silicon per-op energy) + {summary['static_energy_uj_per_s']:.0f} µJ/s static "
              f"(measured idle, Blouw et al. 2019); not counted: host I/O, barrier sync, x86 cores' per-step work")
        for path, what in ((video, "video"), (png, "summary"), (args.record, "events")):
            if path:
                print(f"{what}: {Path(path).resolve()}")
    return 0


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
    """A progress line on stderr (simulated time, percent, wall time), at most 4 times a second."""

    def __init__(self, duration_s: float, quiet: bool):
        self.duration_s = duration_s
        self.quiet = quiet or not sys.stderr.isatty()
        self.started = time.monotonic()
        self.shown = 0.0

    def update(self, world) -> None:
        now = time.monotonic()
        if self.quiet or now - self.shown < 0.25:
            return
        self.shown = now
        done = world.time_s / self.duration_s if self.duration_s else 0.0
        print(f"\r{world.time_s:6.1f} / {self.duration_s:g} s simulated ({100 * done:3.0f} %), "
              f"{world.collisions} collisions, {now - self.started:5.1f} s wall", end="", file=sys.stderr)

    def done(self) -> None:
        if not self.quiet:
            print(file=sys.stderr)
