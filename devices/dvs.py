"""iniVation DVS cameras and AEDAT 4 network streams, through dv-processing.

* :func:`list_cameras` / :class:`DvsCameraSource`: discover and open a camera (by serial number or the
  first one), stream its events as packets; a clear :class:`CameraError` when none is attached.
* :class:`NetworkEventSource`: a client of an AEDAT 4 TCP stream (dv-processing's ``NetworkWriter``, or
  the DV software). ``dv.io.NetworkReader`` blocks while holding the GIL, so it runs in a child process
  that forwards raw event bytes over a pipe; the parent's loop never stalls on the socket.
* :class:`NetworkEventServer`: serves events as an AEDAT 4 TCP stream (``dv.io.NetworkWriter``), so a
  sensor host and a compute host can be split.

Events are DVS_EVENT_DTYPE (µs timestamps, upper-left origin, polarity 1 = ON).
"""
from __future__ import annotations

import multiprocessing as mp
import threading
import time
from datetime import timedelta
from typing import Iterator

import numpy as np

from devices.errors import CameraError
from pipeline.core.events import DVS_EVENT_DTYPE
from pipeline.core.packet import Packet, StreamInfo
from recordings.dv_bridge import to_event_store, to_numpy

#: How long the network child sleeps when no packet is queued (s): bounds added latency to ~0.2 ms.
POLL_INTERVAL_S = 0.0002


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


def _network_reader_process(host: str, port: int, out, stop) -> None:
    """Child process: connect a dv NetworkReader, send ('info', w, h, name) or ('error', text), then raw
    event bytes per packet; an empty message marks the end of the stream."""
    import dv_processing as dv

    try:
        reader = dv.io.NetworkReader(host, port)
    except Exception as error:  # dv-processing raises plain RuntimeError subclasses
        reason = str(error).split(" [", 1)[0]  # drop boost's source-location suffix
        out.send(("error", f"cannot connect to AEDAT 4 stream at {host}:{port}: {reason}"))
        return
    resolution = reader.getEventResolution() or (0, 0)
    out.send(("info", int(resolution[0]), int(resolution[1]), reader.getCameraName()))
    while not stop.is_set():
        if not reader.isRunning():
            out.send_bytes(b"")
            return
        store = reader.getNextEventBatch()
        if store is None:
            time.sleep(POLL_INTERVAL_S)
            continue
        if store.size():
            out.send_bytes(store.numpy().tobytes())


class NetworkEventSource:
    """Events from an AEDAT 4 TCP stream at ``host:port`` (implements pipeline.core.packet.Source).

    The dv reader runs in a child process (it holds the GIL while blocking); packets arrive here over a
    pipe. ``connect_timeout_s`` bounds the wait for the stream's header.
    """

    def __init__(self, host: str, port: int, connect_timeout_s: float = 5.0):
        context = mp.get_context("spawn")
        self._conn, child_conn = context.Pipe(duplex=False)
        self._stop = context.Event()
        self._process = context.Process(target=_network_reader_process, args=(host, port, child_conn, self._stop),
                                         daemon=True, name="dv-network-reader")
        self._process.start()
        child_conn.close()
        if not self._conn.poll(connect_timeout_s):
            self.close()
            raise CameraError(f"no AEDAT 4 stream header from {host}:{port} within {connect_timeout_s:g} s")
        message = self._conn.recv()
        if message[0] == "error":
            self.close()
            raise CameraError(message[1])
        _, width, height, name = message
        self.info = StreamInfo(kind="dvs", width=width, height=height, name=f"tcp://{host}:{port} ({name})")

    def packets(self) -> Iterator[Packet]:
        """Yield packets as they arrive; ends when the server closes the stream."""
        last_t = 0
        while True:
            try:
                data = self._conn.recv_bytes()
            except (EOFError, OSError):
                return
            if not data:
                return
            events = np.frombuffer(data, dtype=DVS_EVENT_DTYPE)
            last_t = max(last_t, int(events["timestamp"][-1]))
            yield Packet(events=events, t_end_us=last_t)

    def close(self) -> None:
        """Stop and reap the reader process."""
        self._stop.set()
        self._process.join(timeout=2.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


class NetworkEventServer:
    """Serve DVS events as an AEDAT 4 stream on ``host:port`` (dv-processing's NetworkWriter is the server).

    ``send(events)`` queues one packet (non-blocking); ``client_count`` tells how many readers are
    connected. Keep the server alive until shutdown (destroying a writer right after a client left hung
    once, formats.md §9.2).
    """

    def __init__(self, host: str, port: int, width: int, height: int, name: str = "spikeloop"):
        import dv_processing as dv

        self.width, self.height = int(width), int(height)
        stream = dv.io.Stream.EventStream(0, "events", name, (self.width, self.height))
        self._writer = dv.io.NetworkWriter(host, port, stream)

    @property
    def client_count(self) -> int:
        """Connected readers."""
        return int(self._writer.getClientCount())

    def wait_for_client(self, timeout_s: float) -> bool:
        """Wait until a reader is connected; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.client_count == 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def send(self, events: np.ndarray) -> None:
        """Queue events (DVS_EVENT_DTYPE, time-ordered) for every connected reader."""
        if len(events):
            self._writer.writeEvents(to_event_store(events, self.width, self.height))

    def drain(self, timeout_s: float = 5.0) -> None:
        """Wait until the writer's queue is empty (or the timeout passes)."""
        deadline = time.monotonic() + timeout_s
        while self._writer.getQueuedPacketCount() > 0 and time.monotonic() < deadline:
            time.sleep(0.005)


def pump(source_packets: Iterator[Packet], server: NetworkEventServer, stop: threading.Event | None = None) -> int:
    """Send every packet of a source to a network server; returns the number of events sent."""
    sent = 0
    for packet in source_packets:
        if stop is not None and stop.is_set():
            break
        server.send(packet.events)
        sent += len(packet.events)
    return sent


__all__ = ["CameraError", "list_cameras", "DvsCameraSource", "NetworkEventSource", "NetworkEventServer", "pump"]
