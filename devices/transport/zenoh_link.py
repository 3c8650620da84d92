"""Packets, commands and telemetry over Zenoh (``eclipse-zenoh``), in spikeloop's wire format.

* :class:`ZenohSource` subscribes to a key expression (``lab/robot1/dvs``, or ``lab/*/dvs`` for many
  publishers) and is a :class:`pipeline.core.packet.Source`: its packets are what publishers sent,
  with the kind and resolution from the wire header. Samples are decoded on Zenoh's thread into a
  bounded queue; when the consumer falls behind the *oldest* packets are dropped and counted
  (``dropped_oldest``), so memory never grows. Invalid samples are counted by reason, never raised.
* :class:`PacketPublisher`, :class:`CommandPublisher` and :class:`TelemetryPublisher` put packets,
  command vectors (float64, e.g. rad/s, with the sensor time they answer) and loop reports (JSON).
* :class:`CommandSubscriber` keeps the latest command and its age, so a motor-side process treats a
  silent link as a stale command and stops.

Sessions: :func:`open_session` without a config file opens a *peer* bound to loopback only: it listens
on ``tcp/127.0.0.1:7447`` (the first spikeloop process on the host takes this rendezvous port) and on
a random ``tcp/127.0.0.1`` port, connects to ``tcp/127.0.0.1:7447``, and multicast scouting is off; the
peers then find each other by gossip. A Zenoh router on the host (``zenohd``, or ROS 2's
``rmw_zenohd``, which listen on 7447) is joined the same way. Anything else (other hosts, routers,
TLS, user/password) comes from a Zenoh JSON5 config file given as ``config_file`` or named by the
environment variable ``SPIKELOOP_ZENOH_CONFIG``; it replaces the loopback default whole (see README
"Zenoh transport").
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Iterator

import numpy as np

from devices.transport import wire
from devices.transport.clock_sync import ClockOffset, ClockResponder, estimate_offset
from pipeline.core.packet import Packet, StreamInfo

#: The rendezvous port of the default loopback configuration (Zenoh's own default router port).
RENDEZVOUS_PORT = 7447
#: Environment variable naming a Zenoh config file (used when no config file is passed).
CONFIG_ENV = "SPIKELOOP_ZENOH_CONFIG"
#: Packets a ZenohSource queues before it drops the oldest.
DEFAULT_QUEUE_PACKETS = 256
#: Transport latencies kept for percentiles (a ring).
LATENCY_RING = 1 << 14
#: Suffix of the key subscribers answer drain queries on: "has the END of stream S arrived?"
ACK_SUFFIX = "/ack"
#: How long a blocking publisher's ``end()`` waits for its subscribers to confirm the END (s), and how
#: long when subscribers match but none answers (not spikeloop's, or not reachable for queries).
DRAIN_S = 30.0
SILENT_DRAIN_S = 5.0


class TransportError(OSError):
    """A Zenoh session, key or config file that cannot be used, or a stream that never started.

    ``filename`` names what failed (a config file, ``zenoh:KEY``), ``strerror`` says how; an OSError so
    the commands' error handling prints it as one line.
    """

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.filename = str(where)
        self.strerror = message

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def loopback_config(port: int = RENDEZVOUS_PORT):
    """The default session config: a peer on 127.0.0.1 only (see the module docstring)."""
    import zenoh

    config = zenoh.Config()
    config.insert_json5("mode", '"peer"')
    config.insert_json5("listen/endpoints", json.dumps([f"tcp/127.0.0.1:{port}", "tcp/127.0.0.1:0"]))
    config.insert_json5("listen/exit_on_failure", "false")
    config.insert_json5("connect/endpoints", json.dumps([f"tcp/127.0.0.1:{port}"]))
    config.insert_json5("connect/exit_on_failure", "false")
    config.insert_json5("scouting/multicast/enabled", "false")
    return config


def read_config(config_file: str | os.PathLike):
    """A Zenoh config read from a JSON5 file; TransportError naming the file when it is missing or invalid."""
    import zenoh

    path = Path(config_file)
    if not path.is_file():
        raise TransportError(str(path), "no such Zenoh config file")
    try:
        return zenoh.Config.from_file(str(path))
    except Exception as error:  # zenoh raises ZError for syntax and schema errors alike
        raise TransportError(str(path), f"not a valid Zenoh config ({error})") from None


def open_session(config_file: str | os.PathLike | None = None):
    """A Zenoh session: as the JSON5 ``config_file`` says, else as the file named by the environment
    variable ``SPIKELOOP_ZENOH_CONFIG``, else the loopback peer."""
    import zenoh

    config_file = config_file or os.environ.get(CONFIG_ENV) or None
    config = loopback_config() if config_file is None else read_config(config_file)
    try:
        return zenoh.open(config)
    except Exception as error:
        raise TransportError(str(config_file or "zenoh"), f"cannot open a Zenoh session: {error}") from None


_SHARED_LOCK = threading.Lock()
_SHARED: dict[str, list] = {}  # config file ('' = default) -> [session, users]


def acquire_session(config_file: str | os.PathLike | None = None):
    """The process's shared session for ``config_file`` (opened by the first user, see
    :func:`open_session`); every acquire is paired with :func:`release_session`. One session per process
    keeps the number of peers (and TCP links) independent of how many keys a process uses."""
    name = str(config_file or os.environ.get(CONFIG_ENV) or "")
    with _SHARED_LOCK:
        entry = _SHARED.get(name)
        if entry is None:
            entry = _SHARED[name] = [open_session(name or None), 0]
        entry[1] += 1
        return entry[0]


def release_session(session) -> None:
    """Give back a session from :func:`acquire_session`; the last user closes it."""
    with _SHARED_LOCK:
        for name, entry in list(_SHARED.items()):
            if entry[0] is session:
                entry[1] -= 1
                if entry[1] <= 0:
                    del _SHARED[name]
                    session.close()
                return


def _session(session, config_file, shared: bool):
    """(session, how to let go of it): the given one (kept open), the shared one, or a new owned one."""
    if session is not None:
        return session, lambda: None
    if shared:
        opened = acquire_session(config_file)
        return opened, lambda: release_session(opened)
    opened = open_session(config_file)
    return opened, opened.close


def check_key(key: str) -> str:
    """A key expression Zenoh accepts, or TransportError naming it."""
    import zenoh

    try:
        zenoh.KeyExpr(key)
    except Exception as error:
        raise TransportError(f"zenoh:{key}", f"not a Zenoh key expression ({error})") from None
    return key


def parse_spec(spec: str) -> str:
    """The key of a ``zenoh:KEY`` specification (TransportError if it is not one)."""
    scheme, _, key = spec.partition(":")
    if scheme != "zenoh" or not key:
        raise TransportError(spec, "expected zenoh:KEY (e.g. zenoh:lab/robot1/dvs)")
    return check_key(key)


class _Publisher:
    """A Zenoh publisher of one wire kind. Session: the one given, else the process's shared one
    (``shared``), else its own. It answers clock queries on ``KEY/clock`` (devices.transport.clock_sync)
    with ``clock_ns``, the wall clock (ns since the UNIX epoch) it stamps ``sent_ns`` with."""

    kind: int

    def __init__(self, key: str, *, session=None, config_file=None, block: bool = False, shared: bool = False,
                 clock_ns=time.time_ns):
        import zenoh

        self.key = check_key(key)
        self.session, self._release = _session(session, config_file, shared)
        self.clock_ns = clock_ns
        self.block = block
        congestion = zenoh.CongestionControl.BLOCK if block else zenoh.CongestionControl.DROP
        self._publisher = self.session.declare_publisher(key, congestion_control=congestion, express=True)
        self._clock = ClockResponder(self.session, self.key, clock_ns)
        self.stream_id = int.from_bytes(os.urandom(4), "little")
        self.sequence = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def wait_for_subscribers(self, timeout_s: float | None) -> bool:
        """Wait until a subscriber matches the key (None: forever); False on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._publisher.matching_status.matching:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _fields(self, t_end_us: int) -> dict:
        fields = dict(t_end_us=int(t_end_us), sequence=self.sequence, stream_id=self.stream_id,
                      sent_ns=self.clock_ns())
        self.sequence += 1
        return fields

    def _put(self, data: bytes) -> None:
        self._publisher.put(data)

    def end(self, t_end_us: int = 0) -> None:
        """Send the END marker (subscribers then know the stream finished, not that the link died); a
        blocking publisher then drains (see :meth:`drain`)."""
        self._put(wire.encode_end(self.kind, **self._fields(t_end_us)))
        if self.block:
            self.drain()

    def drain(self, timeout_s: float = DRAIN_S) -> bool:
        """Wait until every subscriber that answers drain queries (``KEY/ack``) has received this stream's
        END: Zenoh hands a put to its send queue and returns, and closing the session discards what is
        still queued, so a publisher that exits right after its last put would lose the tail of a stream
        its subscribers are slow to take. False after ``timeout_s`` (or when the session is gone)."""
        start = time.monotonic()
        question = self.stream_id.to_bytes(4, "little")
        while time.monotonic() - start < timeout_s:
            try:
                replies = [r.ok.payload.to_bytes() for r in self.session.get(self.key + ACK_SUFFIX, payload=question,
                                                                             timeout=1.0) if r.ok is not None]
            except Exception:  # the session closed under us
                return False
            if replies and all(reply == b"\x01" for reply in replies):
                return True
            if not replies and (not self._publisher.matching_status.matching
                                or time.monotonic() - start > SILENT_DRAIN_S):
                return not self._publisher.matching_status.matching  # nobody to wait for / nobody answers
            time.sleep(0.01)
        return False

    def close(self) -> None:
        """Undeclare the publisher and close an owned session. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._clock.close()
        self._publisher.undeclare()
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def publisher_for(spec: str, info: StreamInfo, *, block: bool = False, wait_s: float | None = 0.0,
                  waiting=None, config_file=None) -> "PacketPublisher":
    """A PacketPublisher for a ``zenoh:KEY`` spec. With ``wait_s`` (None: forever) it waits for a
    subscriber first, calling ``waiting(key)`` once if none is there yet; TransportError on timeout."""
    key = parse_spec(spec)
    publisher = PacketPublisher(key, info, block=block, config_file=config_file)
    if wait_s != 0.0 and not publisher.wait_for_subscribers(0.2):
        if waiting is not None:
            waiting(key)
        if not publisher.wait_for_subscribers(wait_s):
            publisher.close()
            raise TransportError(f"zenoh:{key}", f"no subscriber within {wait_s:g} s")
    return publisher


class PacketPublisher(_Publisher):
    """Publishes a Source's packets (dvs or spikes, per ``info.kind``) on ``key``.

    block: with False (default) a congested link drops samples (the subscriber counts the gaps) rather
    than stalling the sensor; True waits (replaying a file as fast as possible, benchmarks).
    """

    def __init__(self, key: str, info: StreamInfo, **options):
        if info.kind not in ("dvs", "spikes"):
            raise TransportError(f"zenoh:{key}", f"cannot publish a {info.kind!r} stream (dvs or spikes)")
        self.kind = wire.KIND_CODES[info.kind]
        self.info = info
        super().__init__(key, **options)
        self._shape = (dict(width=info.width, height=info.height) if self.kind == wire.KIND_DVS
                       else dict(channels=info.channels))

    def send(self, packet: Packet) -> None:
        """Publish one packet (events as the stream's dtype, ``t_end_us`` in µs)."""
        self._put(wire.encode_events(packet.events, self.kind, **self._shape, **self._fields(packet.t_end_us)))

    def end(self, t_end_us: int = 0) -> None:
        self._put(wire.encode_end(self.kind, **self._shape, **self._fields(t_end_us)))
        if self.block:
            self.drain()


class CommandPublisher(_Publisher):
    """Publishes command vectors (float64 (channels,), e.g. wheel speeds in rad/s) on ``key``."""

    kind = wire.KIND_COMMAND

    def send(self, values, t_us: int) -> None:
        """Publish one command answering sensor time ``t_us`` (µs)."""
        self._put(wire.encode_command(values, **self._fields(t_us)))


class TelemetryPublisher(_Publisher):
    """Publishes loop reports (JSON objects) on ``key``."""

    kind = wire.KIND_TELEMETRY

    def send(self, report: dict, t_us: int = 0) -> None:
        self._put(wire.encode_telemetry(report, **self._fields(t_us)))


class Subscription:
    """Every valid sample of the ``kinds`` published on ``key``, decoded on Zenoh's thread into a deque
    of at most ``queue`` messages (the oldest dropped and counted); everything counted (``stats``)."""

    def __init__(self, key: str, *, session=None, config_file=None, queue: int = DEFAULT_QUEUE_PACKETS,
                 kinds: tuple[int, ...] = tuple(wire.KIND_NAMES), shared: bool = False, declare: bool = True):
        if queue < 1:
            raise ValueError(f"queue must hold at least 1 sample, got {queue}")
        self.key = check_key(key)
        self.kinds = kinds
        wire.warm()
        self._queue: deque[tuple[str, wire.Message, int, int]] = deque()
        self._capacity = int(queue)
        self._ready = threading.Condition()
        self.tracker = wire.SequenceTracker()
        self.errors: Counter[str] = Counter()
        self.samples = self.messages = self.events = self.dropped_oldest = self.dropped_oldest_events = 0
        self.first_header: wire.Header | None = None
        self.first_key: str | None = None  # the concrete key of the first accepted sample
        self.last_sample_ns: int | None = None  # perf_counter_ns of the last valid sample
        self.latencies_ns = np.zeros(LATENCY_RING, dtype=np.int64)
        self.latency_count = 0
        self._closed = False
        if declare:
            self.session, self._release = _session(session, config_file, shared)
            self._subscriber = self.session.declare_subscriber(key, self._on_sample)
            self._acks = self.session.declare_queryable(key + ACK_SUFFIX, self.answer_drain)
        else:  # fed by a KeyDemux (whose session it is)
            self.session, self._release, self._subscriber, self._acks = session, (lambda: None), None, None

    def _on_sample(self, sample) -> None:
        arrival_ns = time.perf_counter_ns()
        wall_ns = time.time_ns()
        try:
            data = sample.payload.to_bytes()
            key = str(sample.key_expr)
            with self._ready:
                self.samples += 1
            message = wire.decode(data)
            if message.header.kind not in self.kinds:
                raise wire.WireError("kind", f"{message.header.kind_name} sample on a "
                                             f"{'/'.join(wire.KIND_NAMES[k] for k in self.kinds)} subscription")
        except wire.WireError as error:
            with self._ready:
                self.errors[error.reason] += 1
            return
        except Exception:  # a sample Zenoh itself could not hand over; counted, never raised on its thread
            with self._ready:
                self.errors["sample"] += 1
            return
        with self._ready:
            if not self.tracker.accept(key, message.header):
                return
            if self.first_header is None and not message.header.end:
                self.first_header = message.header
                self.first_key = key
            self.last_sample_ns = arrival_ns
            self.latencies_ns[self.latency_count % LATENCY_RING] = wall_ns - message.header.sent_ns
            self.latency_count += 1
            if len(self._queue) >= self._capacity:
                dropped = self._queue.popleft()[1].payload
                self.dropped_oldest += 1
                self.dropped_oldest_events += 0 if dropped is None else len(dropped)
            self._queue.append((key, message, arrival_ns, wall_ns))
            self._ready.notify()

    def answer_drain(self, query) -> None:
        """Reply to a publisher's drain query (payload: its 4-byte stream id): 1 when that stream's END
        has arrived here, else 0."""
        try:
            question = query.payload.to_bytes() if query.payload is not None else b""
            key = str(query.key_expr)[:-len(ACK_SUFFIX)]
            with self._ready:
                ended = len(question) == 4 and self.tracker.has_ended(key, int.from_bytes(question, "little"))
            query.reply(query.key_expr, b"\x01" if ended else b"\x00")
        except Exception:  # a malformed query or a gone asker; never raised on Zenoh's thread
            pass

    def take(self, timeout_s: float) -> tuple[str, wire.Message, int, int] | None:
        """The oldest queued (key, message, arrival perf_counter_ns, arrival wall ns), or None after
        ``timeout_s``."""
        with self._ready:
            if not self._queue:
                self._ready.wait(timeout_s)
            return self._queue.popleft() if self._queue else None

    def take_all(self) -> tuple[list[tuple[str, wire.Message, int, int]], bool]:
        """Without waiting: every queued item (as ``take`` returns them), and whether, at that moment,
        every stream seen had sent END (taken together, so no sample before an END is left behind)."""
        with self._ready:
            items = list(self._queue)
            self._queue.clear()
            return items, bool(self.tracker.ended and not self.tracker.open_streams)

    def silence_s(self) -> float | None:
        """Seconds since the last valid sample (None before the first)."""
        last = self.last_sample_ns
        return None if last is None else (time.perf_counter_ns() - last) / 1e9

    def stats(self) -> dict:
        """Counters as a JSON-ready dict (latency: publisher wall clock to ours, µs; meaningful on one host
        or with synchronised clocks)."""
        with self._ready:
            kept = self.latencies_ns[:min(self.latency_count, LATENCY_RING)].copy()
            stats = {
                "samples": self.samples,
                "errors": sum(self.errors.values()),
                "errors_by_reason": dict(self.errors),
                "gaps": self.tracker.gaps,
                "reordered": self.tracker.reordered,
                "restarts": self.tracker.restarts,
                "streams": self.tracker.streams,
                "ended": self.tracker.ended,
                "dropped_oldest": self.dropped_oldest,
                "queued": len(self._queue),
            }
        if len(kept):
            p50, p99 = np.percentile(kept / 1e3, [50, 99])
            stats.update(latency_p50_us=float(p50), latency_p99_us=float(p99))
        return stats

    def close(self) -> None:
        """Undeclare the subscriber and close an owned session. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._subscriber is not None:
            self._subscriber.undeclare()
            self._acks.undeclare()
        self._release()
        with self._ready:
            self._ready.notify_all()


class ZenohSource:
    """Packets published on ``key`` (implements pipeline.core.packet.Source).

    The constructor waits up to ``first_sample_timeout_s`` (None: forever) for the first valid packet,
    whose header gives ``info`` (kind, resolution / channel count); TransportError if none comes.
    ``packets()`` yields packets in arrival order (``arrival_ns`` = when the sample arrived) and ends when
    every stream seen has sent END, when ``close()`` is called, or after ``end_after_silence_s`` without a
    sample (None: never; ``stalled`` then says so: the publisher died or the link broke). ``queue`` bounds
    the packets held (oldest dropped, counted as ``dropped_oldest``).

    Clock: with ``sync_clock`` the constructor asks the publisher for its wall clock (NTP-style, see
    devices.transport.clock_sync); ``clock_offset`` is then the estimate (None when the publisher does not
    answer), and each packet's ``origin_ns`` is the moment, on our ``perf_counter_ns`` clock, at which the
    publisher sent it, so the loop measures event-to-command latency from the sensor host's send time.
    ``subscription``: a Subscription to read instead of declaring one (a KeyDemux route; its key).
    """

    def __init__(self, key: str, *, session=None, config_file=None, queue: int = DEFAULT_QUEUE_PACKETS,
                 first_sample_timeout_s: float | None = 10.0, end_after_silence_s: float | None = None,
                 shared: bool = False, subscription: "Subscription | None" = None, sync_clock: bool = True):
        self._sub = subscription or Subscription(key, session=session, config_file=config_file, queue=queue,
                                                 kinds=(wire.KIND_DVS, wire.KIND_SPIKES), shared=shared)
        self.key = key
        self.end_after_silence_s = end_after_silence_s
        self.stalled = False
        self.clock_offset: ClockOffset | None = None
        deadline = None if first_sample_timeout_s is None else time.monotonic() + first_sample_timeout_s
        while self._sub.first_header is None:
            if deadline is not None and time.monotonic() > deadline:
                stats = self._sub.stats()
                self.close()
                raise TransportError(f"zenoh:{key}", f"no valid dvs/spikes packet within {first_sample_timeout_s:g} s "
                                     f"({stats['samples']} samples, {stats['errors']} invalid)")
            time.sleep(0.005)
        first = self._sub.first_header
        self.info = StreamInfo(first.kind_name, first.width, first.height, first.channels, name=f"zenoh:{key}")
        if sync_clock and self._sub.session is not None and self._sub.first_key is not None:
            self.clock_offset = estimate_offset(self._sub.session, self._sub.first_key)

    @property
    def stats(self) -> dict:
        """The subscription's counters (see Subscription.stats) plus ``stalled`` and the clock offset
        (``clock_offset_us``, ``clock_uncertainty_us``, ``clock_pings``; absent when not estimated)."""
        extra = self.clock_offset.as_dict() if self.clock_offset is not None else {}
        return {**self._sub.stats(), "stalled": self.stalled, **extra}

    def silence_s(self) -> float | None:
        """Seconds since the last valid sample."""
        return self._sub.silence_s()

    @property
    def dropped_packets(self) -> int:
        """Packets dropped (the oldest) because the consumer was behind."""
        return self._sub.dropped_oldest

    @property
    def dropped_events(self) -> int:
        """Events in those packets."""
        return self._sub.dropped_oldest_events

    def _finished(self) -> bool:
        """No sample queued: has every stream seen sent END, or has the link been silent for
        ``end_after_silence_s`` (then ``stalled``)?"""
        if self._sub.tracker.ended and not self._sub.tracker.open_streams:
            return True
        silence = self._sub.silence_s()
        if self.end_after_silence_s is not None and silence is not None and silence > self.end_after_silence_s:
            self.stalled = True
            return True
        return False

    def messages(self, poll_s: float = 0.05) -> Iterator[tuple[str, wire.Message, int, int]]:
        """(key, message, arrival perf_counter_ns, arrival wall ns) per accepted sample, END markers
        included; ends as ``packets()`` does."""
        while not self._sub._closed:
            item = self._sub.take(poll_s)
            if item is None:
                if self._finished():
                    return
                continue
            yield item

    def _packet(self, message: wire.Message, arrival_ns: int, wall_ns: int, offset: int | None) -> Packet:
        if offset is None:
            return Packet(message.payload, message.header.t_end_us, arrival_ns)
        # the publisher's send time on our clocks: its wall clock minus the offset, then to perf
        in_flight_ns = wall_ns - (message.header.sent_ns - offset)
        return Packet(message.payload, message.header.t_end_us, arrival_ns, arrival_ns - max(in_flight_ns, 0))

    def packets(self) -> Iterator[Packet]:
        """Yield the received packets (events of ``info.kind``; END markers end their stream)."""
        offset = self.clock_offset.offset_ns if self.clock_offset is not None else None
        for _key, message, arrival_ns, wall_ns in self.messages():
            if message.payload is not None:
                yield self._packet(message, arrival_ns, wall_ns, offset)

    def ready(self) -> tuple[list[Packet], bool]:
        """Without waiting: the packets received so far (as ``packets()`` yields them), and whether the
        stream has ended as ``packets()`` ends (END from every stream, silence, or closed)."""
        offset = self.clock_offset.offset_ns if self.clock_offset is not None else None
        items, ended = self._sub.take_all()
        packets = [self._packet(message, arrival_ns, wall_ns, offset)
                   for _key, message, arrival_ns, wall_ns in items if message.payload is not None]
        return packets, ended or self._sub._closed or (not items and self._finished())

    def close(self) -> None:
        """Stop receiving. Safe to call twice."""
        self._sub.close()


class KeyDemux:
    """One subscription on a key expression with a ``*`` chunk (``lab/*/dvs``) split by the concrete key
    of each sample: every new key (a robot) gets its own :class:`Subscription` route (own bounded queue,
    own sequence tracking), created on the sample that first names it, so nothing it sent is lost while
    its consumer starts. ``new_keys(timeout_s)`` hands out keys not yet handed out. At most ``max_keys``
    routes (a peer inventing keys cannot grow memory); samples for further keys are counted
    (``refused_keys``). ``discover_only``: keys are all that is wanted (another process subscribes to each
    key itself): a known key's samples are ignored undecoded, and drain queries are left to that process."""

    def __init__(self, pattern: str, *, config_file=None, queue: int = DEFAULT_QUEUE_PACKETS,
                 kinds: tuple[int, ...] = (wire.KIND_DVS, wire.KIND_SPIKES), max_keys: int = 64,
                 discover_only: bool = False):
        self.pattern = check_key(pattern)
        self.discover_only = discover_only
        self.queue = queue
        self.kinds = kinds
        self.max_keys = max_keys
        self.routes: dict[str, Subscription] = {}
        self.refused_keys = 0
        self._new: deque[str] = deque()
        self._lock = threading.Condition()
        self._closed = False
        #: Set after every sample routed to a known key (a consumer of all routes waits on it, then clears it).
        self.arrived = threading.Event()
        self.session = acquire_session(config_file)
        self._subscriber = self.session.declare_subscriber(pattern, self._on_sample)
        self._acks = self.session.declare_queryable(pattern + ACK_SUFFIX, self._answer_drain)

    def _answer_drain(self, query) -> None:
        if self.discover_only:
            return
        route = self.routes.get(str(query.key_expr)[:-len(ACK_SUFFIX)])
        if route is not None:
            route.answer_drain(query)

    def _on_sample(self, sample) -> None:
        key = str(sample.key_expr)
        with self._lock:
            route = self.routes.get(key)
            if route is not None and self.discover_only:
                return
            if route is None:
                if len(self.routes) >= self.max_keys or self._closed:
                    self.refused_keys += 1
                    return
                route = Subscription(key, session=self.session, queue=self.queue, kinds=self.kinds, declare=False)
                self.routes[key] = route
                self._new.append(key)
                self._lock.notify_all()
        route._on_sample(sample)
        self.arrived.set()

    def new_keys(self, timeout_s: float) -> list[str]:
        """Keys seen for the first time since the last call (waits up to ``timeout_s`` for one)."""
        with self._lock:
            if not self._new:
                self._lock.wait(timeout_s)
            keys = list(self._new)
            self._new.clear()
            return keys

    def close(self) -> None:
        """Undeclare, close every route, give back the session. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            routes = list(self.routes.values())
        self._subscriber.undeclare()
        self._acks.undeclare()
        for route in routes:
            route.close()
        release_session(self.session)


class CommandSubscriber:
    """The latest command published on ``key``, for a motor-side process.

    ``latest()`` returns ``(values float64 (channels,), t_us, age_s)`` or None when no command has come
    or the last one is older than ``stale_after_s`` (a silent link is a stale command: stop the motors).
    """

    def __init__(self, key: str, *, stale_after_s: float = 0.1, session=None, config_file=None):
        if not stale_after_s > 0:
            raise ValueError(f"stale_after_s must be > 0, got {stale_after_s}")
        self.stale_after_s = float(stale_after_s)
        self._sub = Subscription(key, session=session, config_file=config_file, queue=1,
                                  kinds=(wire.KIND_COMMAND,))
        self._latest: tuple[np.ndarray, int, int] | None = None

    def latest(self) -> tuple[np.ndarray, int, float] | None:
        item = self._sub.take(0.0)
        if item is not None and item[1].payload is not None:
            self._latest = (item[1].payload, item[1].header.t_end_us, item[2])
        elif item is not None:  # END: the publisher stopped on purpose
            self._latest = None
        if self._latest is None:
            return None
        values, t_us, arrival_ns = self._latest
        age_s = (time.perf_counter_ns() - arrival_ns) / 1e9
        return None if age_s > self.stale_after_s else (values, t_us, age_s)

    @property
    def stats(self) -> dict:
        return self._sub.stats()

    def close(self) -> None:
        self._sub.close()
