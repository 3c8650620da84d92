"""AEDAT 4 TCP streams against hostile and reference peers on 127.0.0.1.

A hostile peer is a plain socket server that plays a script (bytes, pauses, a close, or holding the
connection open). The reader must deliver every event of a valid stream, end cleanly only when the
server closes between packets, and otherwise raise StreamError naming the stream byte and the count of
events that arrived - quickly (idle timeouts are 0.5 s here), without allocating what a length field
asks for. dv-processing's NetworkWriter / NetworkReader are the reference peers; the lz4 and zstd
packages compress the peer's packets independently of our decoders.
"""
from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import dv_processing as dv
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.dvs import DEFAULT_IDLE_TIMEOUT_S, CameraError, NetworkEventServer, NetworkEventSource, StreamError
from pipeline.core.events import DVS_EVENT_DTYPE
from recordings.aedat4_writer import evts_packet_head, info_xml, ioheader
from recordings.detect import open_recording

ROOT = Path(__file__).resolve().parent.parent
IDLE_S = 0.5
#: A hostile case must be over well within this (s), whatever the machine's load.
DEADLINE_S = 10.0


@pytest.fixture(scope="module")
def sample(data_dir) -> list[np.ndarray]:
    """The DVXplorer sample (320x240) in packets of 5000 events."""
    reader = open_recording(data_dir / "events" / "dvxplorer_tonic.aedat4", chunk_events=5000)
    return [chunk.copy() for chunk in reader.chunks()]


def stream_header(width: int = 320, height: int = 240, compression: int = 0) -> bytes:
    """``int32 size`` + IOHeader of a one-EVTS-stream network stream (compression: 0 NONE, 1 LZ4, 3 ZSTD)."""
    return ioheader(info_xml(width, height, "hostile peer"), compression=compression)


def packet(events: np.ndarray, compress=None) -> bytes:
    """One EVTS packet: ``int32 stream id, int32 size`` + the (optionally compressed) flatbuffer."""
    flatbuffer = evts_packet_head(len(events))[8:] + np.ascontiguousarray(events).tobytes()
    payload = compress(flatbuffer) if compress else flatbuffer
    return struct.pack("<ii", 0, len(payload)) + payload


class HostilePeer:
    """Serves one connection on 127.0.0.1 with a script of ("send", bytes), ("sleep", s), ("close",) or
    ("hold",) (keep the connection open, silent, until the peer is stopped)."""

    def __init__(self, script: list[tuple]) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(DEADLINE_S)
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            try:
                for step in self.script:
                    if step[0] == "send":
                        conn.sendall(step[1])
                    elif step[0] == "sleep":
                        time.sleep(step[1])
                    elif step[0] == "hold":
                        self.done.wait(DEADLINE_S)
                    elif step[0] == "close":
                        break
            except OSError:
                pass

    def __enter__(self) -> "HostilePeer":
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.listener.close()
        self.thread.join(DEADLINE_S)


def drain(source: NetworkEventSource) -> tuple[np.ndarray, BaseException | None]:
    """(every event ``packets()`` yielded, the exception that ended it or None)."""
    parts, error = [], None
    try:
        for item in source.packets():
            parts.append(np.array(item.events))
    except Exception as exc:  # noqa: BLE001 - the test inspects what was raised
        error = exc
    return (np.concatenate(parts) if parts else np.zeros(0, DVS_EVENT_DTYPE)), error


def assert_invariants(events: np.ndarray, width: int, height: int) -> None:
    """The reader contract (recordings.invariants), computed here with plain numpy."""
    if not len(events):
        return
    assert events["x"].min() >= 0 and events["x"].max() < width
    assert events["y"].min() >= 0 and events["y"].max() < height
    assert set(np.unique(events["polarity"]).tolist()) <= {0, 1}
    t = events["timestamp"]
    assert t.min() >= 0
    running = np.maximum.accumulate(t)
    assert np.all(t[1:] >= running[:-1] - 1000)
    assert np.all(np.diff(running) <= 2**31)


def receive(script: list[tuple], idle_timeout_s: float = IDLE_S):
    """Run a scripted peer against NetworkEventSource: (events, error, seconds, source)."""
    with HostilePeer(script) as peer:
        started = time.monotonic()
        source = NetworkEventSource("127.0.0.1", peer.port, connect_timeout_s=2.0, idle_timeout_s=idle_timeout_s)
        try:
            events, error = drain(source)
        finally:
            source.close()
        return events, error, time.monotonic() - started, source


def test_valid_stream_whose_server_closes_at_once_delivers_every_event(sample):
    script = [("send", stream_header() + b"".join(packet(p) for p in sample)), ("close",)]
    events, error, _, source = receive(script)
    assert error is None
    np.testing.assert_array_equal(events, np.concatenate(sample))
    assert source.events_received == len(events) and source.packets_received == len(sample)


@pytest.mark.parametrize("compression", ["LZ4", "ZSTD"])
def test_compressed_streams_decode_like_the_peer_library_encoded_them(sample, compression):
    if compression == "LZ4":
        import lz4.frame

        code, compress = 1, lambda data: lz4.frame.compress(data, block_size=lz4.frame.BLOCKSIZE_MAX64KB)
    else:
        from backports import zstd

        code, compress = 3, zstd.compress
    script = [("send", stream_header(compression=code) + b"".join(packet(p, compress) for p in sample)), ("close",)]
    events, error, _, source = receive(script)
    assert error is None and source.compression == compression
    np.testing.assert_array_equal(events, np.concatenate(sample))


def _cases(sample) -> dict[str, tuple[list[tuple], str, int, int]]:
    """name -> (script, message fragment, events that must have arrived, stream byte of the failure)."""
    head = stream_header()
    three = b"".join(packet(p) for p in sample[:3])
    fourth = packet(sample[3])
    n3 = sum(len(p) for p in sample[:3])
    at = len(head) + len(three)
    outside = sample[3].copy()
    outside["x"][17] = 320
    backwards = sample[3].copy()
    backwards["timestamp"][9] -= 5000
    rng = np.random.default_rng(7)
    return {
        "cut mid-packet": ([("send", head + three + fourth[:len(fourth) // 2]), ("close",)],
                           "stream cut inside a packet", n3, at),
        "cut in a packet header": ([("send", head + three + fourth[:5]), ("close",)],
                                   "inside a packet header", n3, at),
        "garbage after the header": ([("send", head + three + rng.bytes(4096)), ("hold",)],
                                     "unknown stream id", n3, at),
        "length 2^31-1": ([("send", head + three + struct.pack("<ii", 0, 2**31 - 1)), ("hold",)],
                          "declares 2147483647 payload bytes", n3, at),
        "negative length": ([("send", head + three + struct.pack("<ii", 0, -16)), ("hold",)],
                            "declares -16 payload bytes", n3, at),
        "stall after the header": ([("send", head + three), ("hold",)], "idle timeout", n3, at),
        "stall inside a packet": ([("send", head + three + fourth[:100]), ("hold",)], "idle timeout", n3, at),
        "event outside the sensor": ([("send", head + three + packet(outside)), ("close",)],
                                     "event 17 of the packet: event at x=320", n3 + 17, at),
        "time going back": ([("send", head + three + packet(backwards)), ("close",)],
                            "event 9 of the packet: timestamp went back", n3 + 9, at),
        "size prefix lies": ([("send", head + three + fourth[:8] + b"\x00\x00\x00\x01" + fourth[12:]), ("close",)],
                             "damaged event packet", n3, at),
    }


CASE_NAMES = ["cut mid-packet", "cut in a packet header", "garbage after the header", "length 2^31-1",
              "negative length", "stall after the header", "stall inside a packet", "event outside the sensor",
              "time going back", "size prefix lies"]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_broken_stream_is_an_error_with_what_arrived(sample, name):
    script, fragment, arrived, offset = _cases(sample)[name]
    tracemalloc.start()
    try:
        events, error, seconds, _ = receive(script)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(error, StreamError), error
    message = str(error)
    assert fragment in message and f"at stream byte {offset}:" in message
    assert f"{arrived:,} events" in message and error.events == arrived
    np.testing.assert_array_equal(events, np.concatenate(sample)[:arrived])
    assert seconds < DEADLINE_S
    if "stall" not in name:
        assert seconds < IDLE_S + 2.0  # refused on sight, not after a timeout or the peer's close
    assert peak < 64 << 20  # bytes: no allocation sized by a length field


@pytest.mark.parametrize("script, fragment", [
    ([("send", b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 64), ("close",)], "implausible IOHeader size"),
    ([("send", struct.pack("<i", 2**31 - 1)), ("hold",)], "implausible IOHeader size"),
    ([("send", struct.pack("<i", 400) + b"\x00" * 100), ("close",)], "inside its 400-byte IOHeader"),
    ([("send", struct.pack("<i", 64) + b"\x00" * 64), ("close",)], "unreadable IOHeader"),
    ([("hold",)], "no AEDAT 4 stream header"),
])
def test_bad_header_is_refused_at_connect(script, fragment):
    with HostilePeer(script) as peer:
        started = time.monotonic()
        with pytest.raises(CameraError, match=fragment):
            NetworkEventSource("127.0.0.1", peer.port, connect_timeout_s=1.0, idle_timeout_s=IDLE_S)
        assert time.monotonic() - started < DEADLINE_S


def test_a_stream_without_events_is_refused():
    info = info_xml(320, 240, "peer").replace("EVTS", "IMUS")
    with HostilePeer([("send", ioheader(info)), ("hold",)]) as peer:
        with pytest.raises(CameraError, match="carries no events .*IMUS"):
            NetworkEventSource("127.0.0.1", peer.port, connect_timeout_s=2.0)


@settings(deadline=None, max_examples=int(os.environ.get("SPIKELOOP_DAMAGE_EXAMPLES", "25")),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_streams_end_cleanly_or_in_a_stream_error(sample, data):
    clean = stream_header() + b"".join(packet(p) for p in sample[:6])
    raw = bytearray(clean)
    for position, value in data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)),
                                              max_size=6)):
        raw[position] = value
    cut = data.draw(st.integers(0, len(raw)))
    tail = data.draw(st.binary(max_size=64))
    started = time.monotonic()
    with HostilePeer([("send", bytes(raw[:cut]) + tail), ("close",)]) as peer:
        try:
            source = NetworkEventSource("127.0.0.1", peer.port, connect_timeout_s=2.0, idle_timeout_s=IDLE_S)
        except CameraError:
            return
        events, error = drain(source)
        source.close()
    assert error is None or isinstance(error, StreamError), repr(error)
    assert_invariants(events, source.info.width, source.info.height)
    assert source.events_received == len(events)
    assert time.monotonic() - started < DEADLINE_S


def test_close_from_another_thread_ends_a_blocked_read():
    with HostilePeer([("send", stream_header()), ("hold",)]) as peer:
        source = NetworkEventSource("127.0.0.1", peer.port, idle_timeout_s=DEFAULT_IDLE_TIMEOUT_S)
        threading.Timer(0.3, source.close).start()
        started = time.monotonic()
        events, error = drain(source)
        assert error is None and len(events) == 0 and time.monotonic() - started < 3.0


# -- the server ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_flushes_everything_then_ends_the_stream(sample):
    port = free_port()
    server = NetworkEventServer("127.0.0.1", port, 320, 240, "flush test")
    source = NetworkEventSource("127.0.0.1", port)
    assert server.wait_for_client(5.0)
    for part in sample:
        server.send(part)
    server.close()
    events, error = drain(source)
    source.close()
    assert error is None
    np.testing.assert_array_equal(events, np.concatenate(sample))
    assert server.events_sent == len(events) and server.dropped_events == 0


def test_server_close_does_not_wait_for_a_reader_that_stopped_reading(sample):
    port = free_port()
    server = NetworkEventServer("127.0.0.1", port, 320, 240)
    stalled = socket.create_connection(("127.0.0.1", port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        assert server.wait_for_client(5.0)
        for _ in range(200):  # ~22 M events: far more than the kernel buffers hold
            for part in sample:
                server.send(part)
        started = time.monotonic()
        server.close(timeout_s=0.5)
        assert time.monotonic() - started < 3.0
        assert server.dropped_events > 0  # the stalled reader fell more than SERVER_QUEUE_BYTES behind
    finally:
        stalled.close()


def test_dv_processing_network_writer_to_our_reader(data_dir):
    """dv-processing reads the file and serves it (in a child process: destroying a NetworkWriter hangs
    while its io thread lives); our reader must deliver exactly what dv decodes from the file."""
    path = data_dir / "events" / "dvxplorer_tonic.aedat4"
    port = free_port()
    code = (
        "import os, time, dv_processing as dv\n"
        f"recording = dv.io.MonoCameraRecording({str(path)!r})\n"
        f"writer = dv.io.NetworkWriter('127.0.0.1', {port}, "
        "dv.io.Stream.EventStream(0, 'events', 'dvwriter', recording.getEventResolution()))\n"
        "while writer.getClientCount() == 0: time.sleep(0.01)\n"
        "while (batch := recording.getNextEventBatch()) is not None: writer.writeEvents(batch)\n"
        "while writer.getQueuedPacketCount(): time.sleep(0.01)\n"
        "time.sleep(0.5)\n"
        "os._exit(0)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                source = NetworkEventSource("127.0.0.1", port, idle_timeout_s=20.0)
                break
            except CameraError:
                assert time.monotonic() < deadline and child.poll() is None
                time.sleep(0.1)
        assert (source.info.width, source.info.height) == (320, 240) and "dvwriter" in source.info.name
        events, error = drain(source)
        source.close()
        assert error is None
        recording = dv.io.MonoCameraRecording(str(path))
        expected = np.concatenate([b.numpy() for b in iter(recording.getNextEventBatch, None)],
                                  dtype=DVS_EVENT_DTYPE)
        np.testing.assert_array_equal(events, expected)
    finally:
        child.kill()
        child.wait()


def test_our_server_to_dv_processing_network_reader(sample, tmp_path):
    """dv's NetworkReader blocks holding the GIL, so it runs in a child process. It reads until it has
    every event (it drops what is still buffered when a stream ends, which is dv-processing's loss, not
    the server's), then the server closes."""
    port = free_port()
    expected = sum(len(part) for part in sample)
    out = tmp_path / "dv_received.npy"
    code = (
        "import time, numpy as np, dv_processing as dv\n"
        f"reader = dv.io.NetworkReader('127.0.0.1', {port})\n"
        "parts, total, deadline = [], 0, time.monotonic() + 60\n"
        f"while total < {expected} and time.monotonic() < deadline:\n"
        "    batch = reader.getNextEventBatch()\n"
        "    if batch is None:\n"
        "        time.sleep(0.0005); continue\n"
        "    parts.append(batch.numpy()); total += len(parts[-1])\n"
        f"np.save({str(out)!r}, np.concatenate(parts))\n"
        "print(reader.getEventResolution(), reader.getCameraName())\n"
    )
    with NetworkEventServer("127.0.0.1", port, 320, 240, "our server") as server:
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert server.wait_for_client(20.0)
        for part in sample:
            server.send(part)
        stdout, _ = child.communicate(timeout=90)
    assert child.returncode == 0 and stdout.strip() == "(320, 240) our server"
    # dv's NetworkReader may stop reading before the end of a stream whose server closed promptly (it kept
    # 568 of 17,879 events in the repro; our reader delivers it whole): what it got must be an
    # exact prefix of what was sent, never altered events
    received, sent = np.load(out).astype(DVS_EVENT_DTYPE), np.concatenate(sample)
    assert 0 < len(received) <= len(sent)
    np.testing.assert_array_equal(received, sent[:len(received)])


# -- the command line ------------------------------------------------------------------------------
def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.app.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def test_receive_idle_timeout_default_is_the_reader_default():
    from pipeline.app.cli import build_parser

    args = build_parser("camera").parse_args(["camera", "receive", "tcp://127.0.0.1:1"])
    assert args.idle_timeout == DEFAULT_IDLE_TIMEOUT_S


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cut mid-packet", "garbage after the header", "stall after the header"])
def test_camera_receive_fails_with_the_count_of_what_arrived(sample, tmp_path, name):
    script, fragment, arrived, _ = _cases(sample)[name]
    out = tmp_path / "received.aedat4"
    with HostilePeer([("sleep", 0.0)] + script) as peer:
        proc = cli("camera", "receive", f"tcp://127.0.0.1:{peer.port}", "--out", str(out), "--idle-timeout", "1")
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert fragment in err and f"{arrived:,} events in 3 packets arrived before it" in err
    with open_recording(out) as reader:  # what arrived was written and is readable
        np.testing.assert_array_equal(np.concatenate(list(reader.chunks())), np.concatenate(sample)[:arrived])


@pytest.mark.slow
@pytest.mark.parametrize("how", ["duration", "sigint"])
def test_camera_serve_exits_with_a_stalled_client_connected(data_dir, how):
    """The 9.2 s recording is still streaming when SIGINT comes (1.5 s after the client connected)."""
    port = free_port()
    duration = "1" if how == "duration" else "100"
    client = None
    proc = cli("camera", "serve", "--source", str(data_dir / "events" / "dvs128_walking_b.aedat"), "--port", str(port),
               "--duration", duration)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.05)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # connected, never reads
        time.sleep(1.5)
        started = time.monotonic()
        if how == "sigint":
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "sent " in err and time.monotonic() - started < 15
    finally:
        proc.kill()
        if client is not None:
            client.close()


@pytest.mark.slow
def test_launch_from_a_garbled_stream_fails_with_status_1(sample):
    """`launch --source tcp://...` used to make no progress for 42 s on a stream turned to garbage."""
    script, fragment, arrived, _ = _cases(sample)["garbage after the header"]
    with HostilePeer(script) as peer:
        started = time.monotonic()
        proc = cli("launch", str(ROOT / "launch" / "robot_controller.toml"), "--headless",
                   "--source", f"tcp://127.0.0.1:{peer.port}")
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert fragment in err and f"{arrived:,} events in 3 packets arrived before it" in err
    assert time.monotonic() - started < 60
