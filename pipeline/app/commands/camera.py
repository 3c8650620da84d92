"""``spikeloop camera``: list cameras, record any event source to AEDAT 4, serve or receive AEDAT 4 over TCP.

  spikeloop camera list
  spikeloop camera record OUT.aedat4 [--source camera|webcam|tcp://H:P|FILE] [--duration S]
  spikeloop camera serve [--source ...] [--host H] [--port P] [--zenoh KEY]   (sensor host side)
  spikeloop camera receive tcp://HOST:PORT [--out OUT.aedat4] [--duration S] [--idle-timeout S]   (compute host)

A stream that breaks (cut inside a packet, garbage, an event outside the sensor, silent for the idle
timeout) ends ``receive`` with status 1 and the count of events that arrived (and were written).
"""
from __future__ import annotations

import sys
import time

from devices.dvs import NetworkEventServer, NetworkEventSource, list_cameras
from devices.errors import CameraError
from pipeline.app.errors import EXIT_FAILED, check_output_path, fail
from pipeline.app.progress import ProgressLine
from pipeline.app.sources import (
    SOURCE_KINDS,
    SourceSpecError,
    open_source,
    parse_source_spec,
    table_kind,
    with_defaults,
)
from recordings.aedat4_writer import Aedat4Writer
from recordings.base import RecordingError


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser("camera", help=summary,
                                   description=__doc__.split("\n\n")[0])
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="list attached iniVation cameras")
    record = actions.add_parser("record", help="record a source to an AEDAT 4 file")
    record.add_argument("out", help="output .aedat4 file")
    serve = actions.add_parser("serve", help="serve a source as an AEDAT 4 TCP stream")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=7777, help="TCP port (default 7777)")
    serve.add_argument("--zenoh", metavar="KEY", help="publish on this Zenoh key instead (e.g. lab/robot1/dvs)")
    receive = actions.add_parser("receive", help="receive an AEDAT 4 TCP stream")
    receive.add_argument("url", help="tcp://HOST:PORT")
    receive.add_argument("--out", help="also write the events to this .aedat4 file")
    receive.add_argument("--idle-timeout", type=float, default=10.0, metavar="S",
                         help="fail when the stream sends nothing for S seconds (default 10)")
    for sub in (record, serve):
        sub.add_argument("--source", default="camera", help=f"what to read: {', '.join(SOURCE_KINDS)} (default camera)")
    for sub in (record, serve, receive):
        sub.add_argument("--duration", type=float, default=None, help="stop after this many seconds of sensor time")
    parser.set_defaults(func=run)


def run(args) -> int:
    out = getattr(args, "out", None)
    problem = out and check_output_path(out, "output" if args.action == "record" else "--out")
    if problem:
        return fail("camera", problem)
    try:
        if args.action == "list":
            cameras = list_cameras()
            print("\n".join(cameras) if cameras else "no iniVation camera attached")
            return 0
        if args.action == "receive":
            source = _receiver(args.url, args.idle_timeout)
        else:
            table = with_defaults(parse_source_spec(args.source))
            if table_kind(table) != "dvs":
                raise SourceSpecError(f"source {args.source!r}: the {table['type']} source streams AER spikes, not "
                                      f"DVS events (expected one of {', '.join(SOURCE_KINDS[:-1])})")
            source = open_source(table)
    except CameraError as error:  # a device or a peer that does not answer: a runtime failure
        return fail("camera", str(error), status=EXIT_FAILED)
    except (SourceSpecError, RecordingError, ValueError) as error:  # what the user named is wrong
        return fail("camera", str(error))
    try:
        if args.action == "serve":
            return _serve(source, args)
        return _record(source, args.out, args.duration)
    finally:
        source.close()


def _receiver(url: str, idle_timeout_s: float):
    table = parse_source_spec(url)
    if table["type"] != "tcp":
        raise SourceSpecError(f"receive needs tcp://HOST:PORT, got {url!r}")
    return NetworkEventSource(table["host"], table["port"], idle_timeout_s=idle_timeout_s)


def _limited(source, duration_s: float | None):
    """The source's packets up to ``duration_s`` of sensor time after the first packet."""
    t_stop = None
    for packet in source.packets():
        if duration_s is not None:
            if t_stop is None:
                t_stop = packet.t_end_us + int(duration_s * 1e6)
            if packet.t_end_us > t_stop:
                return
        yield packet


def _record(source, out: str | None, duration_s: float | None) -> int:
    writer = Aedat4Writer(out, source.info.width, source.info.height) if out else None
    events, started, failure = 0, time.monotonic(), None
    progress = ProgressLine()
    try:
        for packet in _limited(source, duration_s):
            if writer:
                writer.write(packet.events)
            events += len(packet.events)
            progress.show(f"{events:,} events  {time.monotonic() - started:6.1f} s")
    except KeyboardInterrupt:
        pass
    except CameraError as error:  # the stream or camera broke: keep what arrived, say so, fail
        failure = error
    finally:
        if writer:
            writer.close()
    progress.done()
    print(f"{events:,} events from {source.info.name}" + (f" written to {out}" if out else ""), file=sys.stderr)
    if failure is not None:
        print(f"spikeloop camera: {failure}", file=sys.stderr)
        return 1
    return 0


def _serve(source, args) -> int:
    if args.zenoh:
        return _serve_zenoh(source, args)
    try:
        server = NetworkEventServer(args.host, args.port, source.info.width, source.info.height, source.info.name)
    except (CameraError, ValueError) as error:
        print(f"spikeloop camera: {error}", file=sys.stderr)
        return 1
    print(f"serving {source.info.name} ({source.info.width}x{source.info.height}) on tcp://{args.host}:{args.port}; "
          "waiting for a client", file=sys.stderr)
    sent, flush_s = 0, 5.0
    try:
        while not server.wait_for_client(1.0):
            pass
        for packet in _limited(source, args.duration):
            server.send(packet.events)
            sent += len(packet.events)
    except KeyboardInterrupt:
        flush_s = 1.0
    finally:
        try:
            server.close(flush_s)  # flushes what is queued to every client (at most flush_s), ends their streams
        except KeyboardInterrupt:  # stopped while flushing (e.g. to a stalled client): end without the flush
            server.close(0.0)
    dropped = server.dropped_events
    print(f"sent {sent:,} events" + (f" ({dropped:,} dropped for readers that fell behind)" if dropped else ""),
          file=sys.stderr)
    return 0


def _serve_zenoh(source, args) -> int:
    from devices.transport.zenoh_link import TransportError, publisher_for

    try:
        publisher = publisher_for(f"zenoh:{args.zenoh}", source.info)
    except TransportError as error:
        print(f"spikeloop camera: {error}", file=sys.stderr)
        return 1
    print(f"publishing {source.info.name} ({source.info.width}x{source.info.height}) on zenoh:{args.zenoh}",
          file=sys.stderr)
    sent = t_end_us = 0
    try:
        for packet in _limited(source, args.duration):
            publisher.send(packet)
            sent, t_end_us = sent + len(packet.events), packet.t_end_us
    except KeyboardInterrupt:
        pass
    finally:
        publisher.end(t_end_us)
        publisher.close()
    print(f"published {sent:,} events", file=sys.stderr)
    return 0
