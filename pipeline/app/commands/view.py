"""spikeloop view FILE: play a recording as event frames, in a window or to an MP4/PNG (headless).

One frame every 1/--fps s of sensor time shows the events of the last --accumulate-ms (ON events green,
OFF events red, on grey), as DV's event visualiser accumulates them. In a window (a display and neither
--mp4 nor --png) the recording plays at --speed (1 = real time; q/Esc quits); headless
it renders as fast as possible into --mp4 (H.264 with PyAV, see pipeline.app.video) and/or --png (the
last frame). --start/--duration select a span of sensor time.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections import deque

import numpy as np

from pipeline.app.errors import EXIT_INTERRUPTED, check_output_path, fail, guarded
from pipeline.core.events import DVS_EVENT_DTYPE

BACKGROUND = (40, 40, 40)
#: BGR colours of ON and OFF events.
ON_BGR, OFF_BGR = (80, 220, 80), (70, 70, 230)
#: Smallest side of a drawn frame (px): small sensors (128 x 128) are scaled up by an integer factor.
MIN_SIDE_PX = 360


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser("view", help=summary, description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="event recording (any supported format)")
    parser.add_argument("--speed", type=float, default=1.0, help="window: sensor seconds per wall second (default 1)")
    parser.add_argument("--accumulate-ms", type=float, default=33.0,
                        help="events of the last ACCUMULATE ms of sensor time in each frame (default 33)")
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second of sensor time (default 30)")
    parser.add_argument("--mp4", "--video", dest="mp4", metavar="OUT.mp4", help="headless: write the frames to this MP4")
    parser.add_argument("--png", "--plot", dest="png", metavar="OUT.png", help="headless: write the last frame to this PNG")
    parser.add_argument("--start", type=float, default=None, metavar="S", help="start S seconds after the first event")
    parser.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds of sensor time")
    parser.set_defaults(func=run)


def render(events: np.ndarray, width: int, height: int, scale: int = 1) -> np.ndarray:
    """A BGR frame (uint8 (height*scale, width*scale, 3)) of DVS events (DVS_EVENT_DTYPE): each pixel with
    an event shows its latest event's polarity (ON green, OFF red), the rest grey."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    if len(events):
        # later events overwrite earlier ones at the same pixel (numpy assigns in order for repeated indices)
        colours = np.where(events["polarity"][:, None] > 0, np.array(ON_BGR, np.uint8), np.array(OFF_BGR, np.uint8))
        image[events["y"].astype(np.intp), events["x"].astype(np.intp)] = colours
    if scale > 1:
        image = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
    return image


def run(args: argparse.Namespace) -> int:
    from pipeline.app.dashboard import has_display

    for flag, value, low in (("--speed", args.speed, 0), ("--accumulate-ms", args.accumulate_ms, 0),
                             ("--fps", args.fps, 0)):
        if not (value > low and value < 1e6):
            return fail("view", f"{flag}: expected a number > 0, got {value:g}")
    if args.start is not None and not 0 <= args.start < math.inf:
        return fail("view", f"--start: expected a time >= 0 s, got {args.start:g}")
    if args.duration is not None and not 0 < args.duration < math.inf:
        return fail("view", f"--duration: expected a time > 0 s, got {args.duration:g}")
    for flag, path in (("--mp4", args.mp4), ("--png", args.png)):
        problem = path and check_output_path(path, flag)
        if problem:
            return fail("view", problem)
    window = not (args.mp4 or args.png)
    if window and not has_display():
        return fail("view", "no display to open a window on", "give --mp4 OUT.mp4 or --png OUT.png to render headless")
    return guarded("view", lambda: _play(args, window))


def _play(args: argparse.Namespace, window: bool) -> int:
    from recordings.replay import ReplaySource

    frame_us = max(1, round(1e6 / args.fps))
    accumulate_us = max(1, round(args.accumulate_ms * 1000))
    source = ReplaySource(args.file, speed=args.speed, fast=not window, chunk_us=frame_us,
                          start_us=None if args.start is None else round(args.start * 1e6))
    width, height = source.info.width, source.info.height
    scale = max(1, MIN_SIDE_PX // max(1, min(width, height)))
    writer = None
    if args.mp4:
        from pipeline.app.video import VideoWriter

        writer = VideoWriter(args.mp4, (width * scale + (width * scale) % 2, height * scale + (height * scale) % 2),
                             args.fps)
    recent: deque = deque()
    image = render(np.zeros(0, DVS_EVENT_DTYPE), width, height, scale)
    frames, t_stop, interrupted = 0, None, False
    import cv2

    try:
        for packet in source.packets():
            if t_stop is None and args.duration is not None:
                t_stop = packet.t_end_us - frame_us + round(args.duration * 1e6)
            if t_stop is not None and packet.t_end_us - frame_us >= t_stop:
                break
            recent.append(packet.events)
            kept_from = packet.t_end_us - accumulate_us
            while recent and (not len(recent[0]) or recent[0]["timestamp"][-1] < kept_from) and len(recent) > 1:
                recent.popleft()
            shown = np.concatenate(list(recent)) if recent else packet.events
            shown = shown[shown["timestamp"] >= kept_from]
            image = render(shown, width, height, scale)
            frames += 1
            if writer is not None:
                writer.write(_even(image))
            if window:
                cv2.imshow("spikeloop view", image)
                key = cv2.waitKey(1) & 0xFF
                if key in (ord("q"), 27):
                    break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        source.close()
        if writer is not None:
            writer.close()
        if window:
            cv2.destroyAllWindows()
    if args.png:
        from pipeline.app.errors import write_atomically

        ok, png = cv2.imencode(".png", image)
        write_atomically(args.png, lambda handle: handle.write(png.tobytes()))
    if frames == 0 and not interrupted:
        return fail("view", f"{args.file}: no events to show" + (" after --start" if args.start else ""))
    print(f"{args.file}: {frames:,} frames of {frame_us / 1000:g} ms, {args.accumulate_ms:g} ms accumulated"
          + (f"; video: {args.mp4}" if args.mp4 else "") + (f"; last frame: {args.png}" if args.png else ""),
          file=sys.stderr)
    return EXIT_INTERRUPTED if interrupted else 0


def _even(image: np.ndarray) -> np.ndarray:
    """Pad a frame to even sides (H.264 with 4:2:0 chroma needs them)."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    out = np.empty((h + h % 2, w + w % 2, 3), np.uint8)
    out[:] = BACKGROUND
    out[:h, :w] = image
    return out
