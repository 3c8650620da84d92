"""``spikeloop replay FILE [--speed X | --fast] [--loop] [--start S] [--chunk-ms MS | --chunk-us US] [--strict]``.

Streams a recording through :class:`recordings.replay.ReplaySource` (the pipeline's source interface),
paced in real time, ×X, or as fast as possible, with a live progress line on stderr (events/s, sensor
position, real-time factor) and a summary (events, packets, durations, packet release error vs schedule).
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from devices.transport.zenoh_link import publisher_for
from pipeline.app.errors import EXIT_INTERRUPTED, fail, guarded
from recordings.replay import ReplaySource

#: Longest packet --chunk-ms/--chunk-us may ask for (µs): an hour of sensor time.
MAX_CHUNK_US = 3_600_000_000
#: Seconds between progress updates (terminal) / progress lines (pipe or file).
PROGRESS_TTY_S = 0.1
PROGRESS_PIPE_S = 1.0
#: Release errors kept for the summary percentiles (a bounded ring).
ERROR_RING = 1 << 16


def _rate(events_per_s: float) -> str:
    """An event rate with a readable unit (ev/s, kev/s, Mev/s)."""
    for scale, unit in ((1e6, "Mev/s"), (1e3, "kev/s")):
        if events_per_s >= scale:
            return f"{events_per_s / scale:7.2f} {unit}"
    return f"{events_per_s:7.0f} ev/s "


def _progress(events: int, position_s: float, wall_s: float, rate: float) -> str:
    factor = position_s / wall_s if wall_s > 0 else 0.0
    return (f"t = {position_s:8.3f} s | {events:>12,} events | {_rate(rate)} | "
            f"x{factor:6.2f} real time")


def replay(args: argparse.Namespace) -> int:
    start_us = None if args.start is None else round(args.start * 1e6)
    source = ReplaySource(args.file, speed=args.speed, fast=args.fast, loop=args.loop, start_us=start_us,
                          chunk_us=args.chunk_us, strict=args.strict)
    publisher = args.publish and publisher_for(args.publish, source.info, block=True, wait_s=None, waiting=lambda key:
                                               print(f"waiting for a subscriber on {key}", file=sys.stderr))
    tty = sys.stderr.isatty()
    every_ns = int((PROGRESS_TTY_S if tty else PROGRESS_PIPE_S) * 1e9)
    errors = np.zeros(ERROR_RING, dtype=np.int64)
    events = packets = 0
    window_events = 0
    position_s = 0.0
    wall0 = last_report = window_start = None
    interrupted = False
    info = source.info
    print(f"{args.file}: {info.width}x{info.height}, "
          f"{'fast' if args.fast else f'speed x{args.speed:g}'}{', looping' if args.loop else ''}",
          file=sys.stderr)
    try:
        for packet in source.packets():
            if wall0 is None:
                wall0 = last_report = window_start = packet.arrival_ns
            if publisher:
                publisher.send(packet)
            if not args.fast:
                errors[packets % ERROR_RING] = packet.arrival_ns - source.scheduled_ns(packet.t_end_us)
            packets += 1
            events += len(packet)
            window_events += len(packet)
            position_s = (packet.t_end_us - source.t0_us) / 1e6
            now = time.perf_counter_ns()
            if now - last_report >= every_ns:
                rate = window_events * 1e9 / (now - window_start)
                line = _progress(events, position_s, (now - wall0) / 1e9, rate)
                print(f"\r{line}" if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
                last_report = window_start = now
                window_events = 0
    except KeyboardInterrupt:
        interrupted = True
    finally:
        source.close()
        if publisher:
            publisher.end(packet.t_end_us if packets else 0)
            publisher.close()
    wall_s = (time.perf_counter_ns() - wall0) / 1e9 if wall0 is not None else 0.0
    if tty:
        print("\r" + " " * 90 + "\r", end="", file=sys.stderr)
    factor = position_s / wall_s if wall_s > 0 else 0.0
    loops = f", {source.loops_completed} loops" if args.loop else ""
    print(f"replayed {events:,} events in {packets:,} packets: {position_s:.3f} s of sensor time in "
          f"{wall_s:.3f} s (x{factor:.2f} real time, {_rate(events / wall_s if wall_s else 0).strip()}){loops}",
          file=sys.stderr)
    if packets and not args.fast:
        kept = errors[:min(packets, ERROR_RING)] / 1e3
        p50, p99, worst = np.percentile(kept, [50, 99, 100])
        print(f"packet release vs schedule: p50 {p50:.0f} µs, p99 {p99:.0f} µs, max {worst:.0f} µs",
              file=sys.stderr)
    if packets == 0 and args.start and not interrupted:
        return fail("replay", f"{args.file}: --start {args.start:g} s is past the last event",
                    "nothing was replayed; 'spikeloop info FILE' gives the duration")
    return EXIT_INTERRUPTED if interrupted else 0


def run(args: argparse.Namespace) -> int:
    if not args.speed > 0:
        return fail("replay", f"--speed: expected a number > 0, got {args.speed:g}")
    flag, chunk_us = ("--chunk-us", args.chunk_us) if args.chunk_us is not None else (
        "--chunk-ms", args.chunk_ms * 1000 if args.chunk_ms is not None else 1000)
    if not (math.isfinite(chunk_us) and 1 <= round(chunk_us) <= MAX_CHUNK_US):
        given = args.chunk_us if args.chunk_us is not None else args.chunk_ms
        return fail("replay", f"{flag}: expected 1 µs to 1 h of sensor time per packet, got {given:g}")
    args.chunk_us = round(chunk_us)
    if args.start is not None and not 0 <= args.start < math.inf:
        return fail("replay", f"--start: expected a time >= 0 s, got {args.start:g}")
    return guarded("replay", lambda: replay(args))


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser("replay", help=summary,
                                   description=__doc__.splitlines()[0])
    parser.add_argument("file", help="event recording (any supported format)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, help="sensor seconds per wall second (default 1)")
    pace.add_argument("--fast", action="store_true", help="as fast as possible, no pacing")
    parser.add_argument("--loop", action="store_true", help="start again at the end (Ctrl-C stops)")
    parser.add_argument("--start", type=float, default=None, metavar="S",
                        help="start S seconds after the first event")
    chunk = parser.add_mutually_exclusive_group()
    chunk.add_argument("--chunk-ms", type=float, default=None, help="sensor time per packet in ms (default 1)")
    chunk.add_argument("--chunk-us", type=int, default=None, help="sensor time per packet in µs (as bci replay's)")
    parser.add_argument("--strict", action="store_true", help="fail on damage instead of warning")
    parser.add_argument("--publish", metavar="zenoh:KEY", help="also publish the packets on a Zenoh key")
    parser.set_defaults(func=run)
