"""``spikeloop info FILE [--json] [--strict]``: what a recording holds.

Prints format, resolution, DVS event count, first/last event time (µs), duration (s) and mean rate
(events/s), plus format extras (AEDAT 4: camera, compression, frame / IMU / trigger counts). Errors
(missing file, unknown format, damage with --strict) print one line on stderr and exit with status 1.
"""
from __future__ import annotations

import argparse
import json

from pipeline.app.errors import guarded
from recordings.detect import open_recording


def recording_facts(path: str, strict: bool = False) -> dict:
    """Decode a whole recording once and return its facts as a JSON-ready dict."""

    with open_recording(path, strict=strict) as reader:
        count = 0
        first = last = None
        for chunk in reader.chunks():
            if first is None:
                first = int(chunk["timestamp"][0])
            last = int(chunk["timestamp"][-1])
            count += len(chunk)
        header = reader.header
        facts = {
            "format": header.format,
            "width": header.width,
            "height": header.height,
            "events": count,
            "t_start_us": first,
            "t_end_us": last,
            "duration_s": (last - first) / 1e6 if count else 0.0,
            "rate_ev_s": count / ((last - first) / 1e6) if count and last > first else 0.0,
        }
        facts.update({k: v for k, v in header.extra.items() if k not in facts})
        if callable(getattr(reader, "frames", None)):
            facts["frames"] = sum(1 for _ in reader.frames())
            facts["imu_samples"] = sum(len(batch) for batch in reader.imu())
            facts["triggers"] = sum(len(batch) for batch in reader.triggers())
        if reader.damage is not None:
            facts["damage"] = str(reader.damage)
    return facts


def print_facts(facts: dict) -> None:
    """Human-readable listing, one fact per line."""
    duration = facts["duration_s"]
    print(f"file:        {facts['file']}")
    print(f"format:      {facts['format']}")
    print(f"resolution:  {facts['width']} x {facts['height']}")
    print(f"events:      {facts['events']:,}")
    if facts["events"]:
        print(f"time:        {facts['t_start_us']} .. {facts['t_end_us']} µs ({duration:.6f} s)")
        print(f"rate:        {facts['rate_ev_s'] / 1e3:,.1f} kev/s")
    skip = {"file", "format", "width", "height", "events", "t_start_us", "t_end_us", "duration_s", "rate_ev_s"}
    for key, value in facts.items():
        if key not in skip:
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            print(f"{key + ':':<12} {shown}")


def run(args: argparse.Namespace) -> int:
    def body() -> int:
        facts = {"file": args.file, **recording_facts(args.file, strict=args.strict)}
        if args.json:
            print(json.dumps(facts))
        else:
            print_facts(facts)
        return 0

    return guarded("info", body)


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser("info", help=summary,
                                   description=__doc__.splitlines()[0])
    parser.add_argument("file", help="event recording (any supported format)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--strict", action="store_true", help="fail on damage instead of warning")
    parser.set_defaults(func=run)
