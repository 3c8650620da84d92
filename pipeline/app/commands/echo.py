"""``spikeloop echo zenoh:KEY [--duration S] [--json] [--zenoh-config FILE]``: what flows on a Zenoh key.

Like ``ros2 topic hz/echo``: subscribes to KEY (wildcards allowed: ``lab/*/dvs``) and reports, every
second on stderr and once at the end, samples and events per second, the packet count, sequence gaps
(samples lost on the way), reordered and invalid samples, packets dropped by a slow reader, the
transport latency (publisher wall clock to ours; one host or synchronised clocks) and the sensor-time
lag (how far the stream's sensor time has fallen behind the wall clock since its first packet, µs).
Stops after ``--duration`` seconds, when every publisher has sent its END marker, or on Ctrl-C.
``--json`` prints one object: ``{"events": int, "packets": int, "gaps": int, ...}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from devices.transport import wire
from devices.transport.zenoh_link import Subscription, TransportError, parse_spec
from pipeline.app.errors import EXIT_FAILED, fail

#: Seconds between progress lines.
REPORT_EVERY_S = 1.0
#: Messages the echo subscription queues (a slow terminal drops the oldest, counted).
ECHO_QUEUE = 4096


def echo(key: str, duration_s: float | None, config_file: str | None, progress) -> dict:
    """Receive on ``key`` for ``duration_s`` (None: until every stream ended); returns the summary."""
    subscription = Subscription(key, config_file=config_file, queue=ECHO_QUEUE)
    counts = {"events": 0, "packets": 0, "commands": 0, "telemetry": 0}
    kinds: set[str] = set()
    first: dict[str, tuple[int, int]] = {}  # key -> (arrival wall ns, t_end_us) of its first sample
    lag_us = max_lag_us = 0.0
    started = time.monotonic()
    shown = started
    shown_events = shown_packets = 0
    try:
        while duration_s is None or time.monotonic() - started < duration_s:
            item = subscription.take(0.05)
            now = time.monotonic()
            if item is not None:
                sample_key, message, _arrival, wall_ns = item
                header = message.header
                if message.payload is not None:
                    kinds.add(header.kind_name)
                    if header.kind in (wire.KIND_DVS, wire.KIND_SPIKES):
                        counts["packets"] += 1
                        counts["events"] += len(message.payload)
                    else:
                        counts["commands" if header.kind == wire.KIND_COMMAND else "telemetry"] += 1
                    wall0, t0 = first.setdefault(sample_key, (wall_ns, header.t_end_us))
                    lag_us = (wall_ns - wall0) / 1e3 - (header.t_end_us - t0)
                    max_lag_us = max(max_lag_us, lag_us)
            elif subscription.tracker.ended and not subscription.tracker.open_streams:
                break
            if progress and now - shown >= REPORT_EVERY_S:
                span = now - shown
                stats = subscription.stats()
                progress(f"{key}: {(counts['events'] - shown_events) / span:12,.0f} ev/s "
                         f"{(counts['packets'] - shown_packets) / span:8,.1f} packets/s | "
                         f"{counts['packets']:,} packets, {stats['gaps']} gaps, {stats['errors']} invalid | "
                         f"latency p50 {stats.get('latency_p50_us', 0):.0f} µs | lag {lag_us:.0f} µs")
                shown, shown_events, shown_packets = now, counts["events"], counts["packets"]
    finally:
        stats = subscription.stats()
        subscription.close()
    elapsed = time.monotonic() - started
    return {**counts, **stats, "kinds": sorted(kinds), "duration_s": elapsed,
            "rate_ev_s": counts["events"] / elapsed if elapsed > 0 else 0.0,
            "sensor_lag_us": lag_us, "sensor_lag_max_us": max_lag_us}


def run(args: argparse.Namespace) -> int:
    if args.duration is not None and args.duration <= 0:
        return fail("echo", f"--duration: expected a time > 0 s, got {args.duration:g}")
    try:
        key = parse_spec(args.spec)
        progress = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
        summary = echo(key, args.duration, args.zenoh_config, progress)
    except TransportError as error:
        return fail("echo", str(error), status=EXIT_FAILED)
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{key}: {summary['events']:,} events in {summary['packets']:,} packets, {summary['commands']:,} "
              f"commands, {summary['telemetry']:,} reports in {summary['duration_s']:.1f} s; gaps "
              f"{summary['gaps']}, reordered {summary['reordered']}, invalid {summary['errors']}, "
              f"dropped by this reader {summary['dropped_oldest']}")
    return 0


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser("echo", help=summary,
                                   description=__doc__.splitlines()[0])
    parser.add_argument("spec", metavar="zenoh:KEY", help="key expression to subscribe to, e.g. zenoh:lab/*/dvs")
    parser.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.add_argument("--zenoh-config", default=None, metavar="FILE",
                        help="Zenoh JSON5 config (default: loopback peer; env SPIKELOOP_ZENOH_CONFIG)")
    parser.set_defaults(func=run)
