"""iniVation DVS cameras and AEDAT 4 network streams.

* :func:`list_cameras` / :class:`DvsCameraSource`: discover and open a camera (by serial number or the
  first one) through dv-processing, stream its events as packets; a clear :class:`CameraError` when none
  is attached.
* :class:`NetworkEventSource`: a client of an AEDAT 4 TCP stream (dv-processing's ``NetworkWriter``, the
  DV software, or :class:`NetworkEventServer`).
* :class:`NetworkEventServer`: serves events as an AEDAT 4 TCP stream that dv-processing's
  ``NetworkReader`` and the DV software read, so a sensor host and a compute host can be split.

The stream (dv-processing's network format): ``int32 size`` + the IOHeader flatbuffer (compression,
infoNode XML naming the streams; no ``#!AER-DAT4.0`` line and no data table), then packets
``int32 streamId, int32 size`` + payload as in an AEDAT 4 file (recordings.aedat4). Both ends are
implemented here on plain sockets rather than with dv-processing's classes, whose reader dropped most of
a stream whose server closed promptly (568 of 17,879 events), aborted on garbage (std::length_error),
allocated whatever a length field asked for, and whose writer could not be destroyed while a client
was connected. Here a peer controls no allocation beyond MAX_PACKET_BYTES of data it actually sent,
the server flushes every queued packet to its clients before closing, and the client reads to the
end of the stream: a clean end (the server closed between packets) finishes ``packets()``; anything
else (a cut inside a packet, garbage, an event outside the sensor, no data for ``idle_timeout_s``)
raises :class:`StreamError` saying where and how many events had arrived.

Events are DVS_EVENT_DTYPE (µs timestamps, upper-left origin, polarity 1 = ON).
"""
from __future__ import annotations

import queue
import socket
import struct
import threading
import time
from datetime import timedelta
from typing import Iterator

import numpy as np

from devices.errors import CameraError
from pipeline.core.events import DVS_EVENT_DTYPE
from pipeline.core.packet import Packet, StreamInfo
from recordings import invariants
from recordings.aedat4 import COMPRESSIONS, MAX_HEADER_BYTES, MAX_PACKET_BYTES, parse_info_node, parse_ioheader
from recordings.aedat4_packets import decode_event_packet
from recordings.aedat4_writer import dvs_layout, evts_packet_head, info_xml, ioheader
from recordings.dv_bridge import to_numpy

#: How long the camera source sleeps when the camera has no packet ready (s): bounds added latency.
POLL_INTERVAL_S = 0.0002
#: Default for ``idle_timeout_s``: a live stream that sends nothing for this long (s) is broken. DV and
#: NetworkEventServer send a packet per camera batch (every few ms while the sensor sees anything).
DEFAULT_IDLE_TIMEOUT_S = 10.0
#: Events per packet the server sends (at most 4 MiB per packet).
SERVER_PACKET_EVENTS = 1 << 18
#: Bytes a server keeps queued per client; beyond that the client is too slow and packets are dropped
#: for it (counted in ``dropped_events``), so a stalled reader never stalls the sensor.
SERVER_QUEUE_BYTES = 64 << 20
#: A client whose socket accepts nothing for this long (s) is disconnected by the server.
SERVER_SEND_TIMEOUT_S = 5.0


class StreamError(CameraError):
    """An AEDAT 4 TCP stream broke. ``offset``: stream byte where it happened; ``events`` and ``packets``:
    what had arrived (and was delivered) before."""

    def __init__(self, peer: str, message: str, offset: int, events: int, packets: int):
        self.peer, self.offset, self.events, self.packets = peer, offset, events, packets
        super().__init__(f"{peer}: at stream byte {offset}: {message}; "
                         f"{events:,} events in {packets:,} packets arrived before it")


def list_cameras() -> list[str]:
    """Serial numbers / names of the attached iniVation cameras (empty when none)."""
    import dv_processing as dv

    return [str(getattr(d, "serialNumber", d)) for d in dv.io.camera.discover()]


class DvsCameraSource:
    """Events from an attached iniVation camera (implements pipeline.core.packet.Source).

    serial: the camera's serial number, or None for the first camera found. Packets are what the
    camera delivers (about every ``packet_interval_ms``); ``t_end_us`` is the last event's timestamp.
    """

    def __init__(self, serial: str | None = None, packet_interval_ms: float = 1.0):
        import dv_processing as dv

        found = list_cameras()
        if not found:
            raise CameraError("no iniVation camera attached (dv-processing's camera discovery found none); "
                              "use a recording (--source FILE) or --source webcam instead")
        if serial is not None and serial not in found:
            raise CameraError(f"no camera with serial {serial!r}; attached: {', '.join(found)}")
        self._camera = dv.io.camera.open(serial) if serial else dv.io.camera.open()
        if hasattr(self._camera, "setTimeInterval"):
            self._camera.setTimeInterval(timedelta(milliseconds=packet_interval_ms))
        resolution = self._camera.getEventResolution()
        if resolution is None:
            raise CameraError(f"camera {self._camera.getCameraName()} has no event stream")
        self.info = StreamInfo(kind="dvs", width=int(resolution[0]), height=int(resolution[1]),
                               name=self._camera.getCameraName())

    def packets(self) -> Iterator[Packet]:
        """Stream packets until the camera stops (unplugged: CameraError) or ``close()``."""
        last_t = 0
        while self._camera is not None:
            if not self._camera.isRunning():
                raise CameraError(f"camera {self.info.name} stopped running (unplugged?)")
            store = self._camera.getNextEventBatch()
            if store is None or store.size() == 0:
                time.sleep(POLL_INTERVAL_S)
                continue
            events = to_numpy(store)
            last_t = max(last_t, int(events["timestamp"][-1]))
            yield Packet(events=events, t_end_us=last_t)

    def close(self) -> None:
        """Release the camera."""
        self._camera = None


class NetworkEventSource:
    """Events from an AEDAT 4 TCP stream at ``host:port`` (implements pipeline.core.packet.Source).

    connect_timeout_s: bound on connecting and receiving the stream's header (CameraError after it).
    idle_timeout_s: a stream that sends no byte for this long raises StreamError (DEFAULT_IDLE_TIMEOUT_S).
    ``packets()`` reads the socket itself (the loop iterates it in its reader thread; a blocked recv
    releases the GIL). ``events_received`` / ``packets_received`` / ``bytes_received`` count what arrived.
    """

    def __init__(self, host: str, port: int, connect_timeout_s: float = 5.0,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S):
        if not connect_timeout_s > 0 or not idle_timeout_s > 0:
            raise ValueError(f"timeouts must be > 0 s, got connect {connect_timeout_s}, idle {idle_timeout_s}")
        self.peer = f"tcp://{host}:{port}"
        self.idle_timeout_s = float(idle_timeout_s)
        self.events_received = self.packets_received = self.bytes_received = 0
        self._closed = False
        try:
            self._sock = socket.create_connection((host, port), timeout=connect_timeout_s)
        except OSError as error:
            raise CameraError(f"cannot connect to AEDAT 4 stream at {host}:{port}: "
                              f"{error.strerror or error}") from None
        try:
            self._read_header(time.monotonic() + connect_timeout_s, connect_timeout_s)
        except BaseException:
            self.close()
            raise

    def _read_header(self, deadline: float, timeout_s: float) -> None:
        raw = self._read(4, deadline, "the header size")
        if raw is None or len(raw) < 4:
            raise CameraError(f"no AEDAT 4 stream header from {self.peer} within {timeout_s:g} s")
        size = struct.unpack("<i", raw)[0]
        if not 8 <= size <= MAX_HEADER_BYTES:
            raise CameraError(f"{self.peer}: at stream byte 0: implausible IOHeader size {size} "
                              f"(8..{MAX_HEADER_BYTES} accepted): not an AEDAT 4 stream")
        buf = self._read(size, deadline, "the IOHeader")
        if buf is None or len(buf) < size:
            raise CameraError(f"{self.peer}: stream ended or stalled inside its {size}-byte IOHeader")
        try:
            compression, _, xml = parse_ioheader(bytes(buf))
            streams = parse_info_node(xml)
        except (ValueError, struct.error, SyntaxError, RecursionError) as exc:
            raise CameraError(f"{self.peer}: at stream byte 4: unreadable IOHeader: {exc}") from None
        if not 0 <= compression < len(COMPRESSIONS):
            raise CameraError(f"{self.peer}: at stream byte 4: unknown compression code {compression}")
        self.compression = COMPRESSIONS[compression]
        events = [s for s in streams if s.type_identifier == "EVTS"]
        if not events:
            names = ", ".join(f"{s.name}:{s.type_identifier}" for s in streams) or "none"
            raise CameraError(f"{self.peer}: the stream carries no events (streams: {names})")
        self._events_id = events[0].stream_id
        self._stream_ids = {s.stream_id for s in streams}
        self._position = 4 + size
        name = events[0].source or "unnamed camera"
        self.info = StreamInfo(kind="dvs", width=events[0].width, height=events[0].height,
                               name=f"{self.peer} ({name})")

    def _read(self, n: int, deadline: float, what: str) -> bytearray | None:
        """Up to ``n`` bytes; fewer only at the end of the stream (or after close()). None when the peer
        sent nothing more before ``deadline`` (monotonic s). Grows with the bytes that actually arrive."""
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(min(n - len(buf), 1 << 20))
            except socket.timeout:
                return None
            except OSError as error:
                if self._closed:
                    return buf
                raise StreamError(self.peer, f"connection failed while reading {what} "
                                  f"({error.strerror or error})", self._position + len(buf),
                                  self.events_received, self.packets_received) from None
            if not chunk:
                return buf
            buf += chunk
            self.bytes_received += len(chunk)
            deadline = time.monotonic() + self.idle_timeout_s
        return buf

    def _fail(self, message: str, offset: int) -> StreamError:
        return StreamError(self.peer, message, offset, self.events_received, self.packets_received)

    def packets(self) -> Iterator[Packet]:
        """Yield packets as they arrive; returns when the server ends the stream between packets (or after
        close()). Raises StreamError for a cut packet, garbage, a bad event or ``idle_timeout_s`` of
        silence."""
        state = invariants.new_state()
        width, height = self.info.width, self.info.height
        last_t = 0
        while not self._closed:
            at = self._position
            head = self._read(8, time.monotonic() + self.idle_timeout_s, "a packet header")
            if head is None:
                raise self._fail(f"no data for {self.idle_timeout_s:g} s (idle timeout)", at)
            if self._closed or not head:
                return
            if len(head) < 8:
                raise self._fail(f"stream cut inside a packet header ({len(head)} of 8 bytes)", at)
            stream_id, size = struct.unpack("<ii", head)
            if stream_id not in self._stream_ids:
                raise self._fail(f"packet names unknown stream id {stream_id} (garbage?)", at)
            if not 0 < size <= MAX_PACKET_BYTES:
                raise self._fail(f"packet declares {size} payload bytes (1..{MAX_PACKET_BYTES} accepted)", at)
            payload = self._read(size, time.monotonic() + self.idle_timeout_s, "a packet")
            if payload is None:
                raise self._fail(f"no data for {self.idle_timeout_s:g} s inside a {size}-byte packet "
                                 f"(idle timeout)", at)
            if self._closed:
                return
            if len(payload) < size:
                raise self._fail(f"stream cut inside a packet ({len(payload)} of {size} payload bytes)", at)
            self._position = at + 8 + size
            if stream_id != self._events_id:
                continue
            events, reason = decode_event_packet(payload, self.compression)
            if events is None:
                raise self._fail(f"damaged event packet: {reason}", at)
            good, bad = invariants.first_invalid(events, width, height, state)
            if bad != invariants.OK:
                if good:
                    self.events_received += good
                    yield Packet(events=events[:good], t_end_us=max(last_t, int(events["timestamp"][good - 1])))
                raise self._fail(f"event {good} of the packet: {invariants.describe(bad, state, width, height)}",
                                 at)
            self.packets_received += 1
            if len(events):
                self.events_received += len(events)
                last_t = max(last_t, int(events["timestamp"][-1]))
                yield Packet(events=events, t_end_us=last_t)

    def close(self) -> None:
        """Disconnect (also wakes a ``packets()`` blocked in another thread, which then returns)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


class _Client(threading.Thread):
    """One connected reader of a NetworkEventServer: sends the header, then queued packets, in order."""

    def __init__(self, sock: socket.socket, address, header: bytes) -> None:
        super().__init__(name=f"aedat4-tcp-client {address}", daemon=True)
        self.sock, self.address, self.header = sock, address, header
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.queued_bytes = 0
        self.dropped_events = 0
        self.alive = True
        self.lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()

    def offer(self, data: bytes, events: int) -> None:
        """Queue one packet unless SERVER_QUEUE_BYTES are already waiting (then count its events)."""
        with self.lock:
            if not self.alive or self.queued_bytes + len(data) > SERVER_QUEUE_BYTES:
                self.dropped_events += events
                return
            self.queued_bytes += len(data)
            self.idle.clear()
        self.queue.put(data)

    def finish(self) -> None:
        """Send what is queued, then end the stream (the reader sees its end after the last packet)."""
        self.queue.put(None)

    def run(self) -> None:
        self.sock.settimeout(SERVER_SEND_TIMEOUT_S)
        try:
            self.sock.sendall(self.header)
            while (data := self.queue.get()) is not None:
                self.sock.sendall(data)
                with self.lock:
                    self.queued_bytes -= len(data)
                    if not self.queued_bytes:
                        self.idle.set()
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:  # the reader left, or stopped reading for SERVER_SEND_TIMEOUT_S
            pass
        finally:
            with self.lock:
                self.alive = False
                self.idle.set()
            self.sock.close()


class NetworkEventServer:
    """Serve DVS events as an AEDAT 4 stream on ``host:port`` (uncompressed, one EVTS stream).

    ``send(events)`` queues one packet per SERVER_PACKET_EVENTS for every connected reader and never
    blocks (a reader more than SERVER_QUEUE_BYTES behind loses packets, counted in ``dropped_events``);
    ``client_count`` tells how many readers are connected; ``close()`` flushes every queued packet, then
    ends each reader's stream cleanly. Readers that connect later get the header, then the packets sent
    after they joined (as from the DV software).
    """

    def __init__(self, host: str, port: int, width: int, height: int, name: str = "spikeloop"):
        self.width, self.height = int(width), int(height)
        if not (0 < self.width <= invariants.MAX_SENSOR_SIDE and 0 < self.height <= invariants.MAX_SENSOR_SIDE):
            raise ValueError(f"sensor resolution must be 1..{invariants.MAX_SENSOR_SIDE}, got {width}x{height}")
        try:
            self._listener = socket.create_server((host, port))
        except OSError as error:
            raise CameraError(f"cannot serve on {host}:{port}: {error.strerror or error}") from None
        self._header = ioheader(info_xml(self.width, self.height, name))
        self._clients: list[_Client] = []
        self._lock = threading.Lock()
        self._closed = False
        self.events_sent = 0
        self._accepter = threading.Thread(target=self._accept, name="aedat4-tcp-accept", daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._closed:
            try:
                sock, address = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _Client(sock, address, self._header)
            with self._lock:
                if self._closed:
                    sock.close()
                    return
                self._clients = [c for c in self._clients if c.alive] + [client]
            client.start()

    @property
    def client_count(self) -> int:
        """Connected readers."""
        with self._lock:
            return sum(c.alive for c in self._clients)

    @property
    def dropped_events(self) -> int:
        """Events not sent to some reader because it was too far behind (summed over readers)."""
        with self._lock:
            return sum(c.dropped_events for c in self._clients)

    def wait_for_client(self, timeout_s: float) -> bool:
        """Wait until a reader is connected; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.client_count == 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def send(self, events: np.ndarray) -> None:
        """Queue events (DVS_EVENT_DTYPE (n,), time-ordered, inside the sensor) for every connected reader."""
        events = np.ascontiguousarray(dvs_layout(events))
        with self._lock:
            clients = [c for c in self._clients if c.alive]
        for start in range(0, len(events), SERVER_PACKET_EVENTS):
            part = events[start:start + SERVER_PACKET_EVENTS]
            data = evts_packet_head(len(part)) + part.tobytes()
            for client in clients:
                client.offer(data, len(part))
        self.events_sent += len(events)

    def drain(self, timeout_s: float = 5.0) -> bool:
        """Wait until every reader has been handed all queued packets; False if some had not after
        ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            clients = list(self._clients)
        return all(c.idle.wait(max(0.0, deadline - time.monotonic())) for c in clients)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, flush queued packets to every reader (at most ``timeout_s``), end their streams.
        Called again (e.g. with 0 after an interrupted flush), it cuts off the readers still being flushed."""
        with self._lock:
            first = not self._closed
            self._closed = True
            clients = list(self._clients)
        if first:
            self._listener.close()
            self._accepter.join(timeout=1.0)
            for client in clients:
                client.finish()
        deadline = time.monotonic() + timeout_s
        for client in clients:
            client.join(max(0.0, deadline - time.monotonic()))
            if client.is_alive():  # a reader that stopped reading: cut it off
                try:
                    client.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                client.join(1.0)

    def __enter__(self) -> "NetworkEventServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["CameraError", "StreamError", "list_cameras", "DvsCameraSource", "NetworkEventSource", "NetworkEventServer"]
