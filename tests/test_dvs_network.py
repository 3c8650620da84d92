"""AEDAT 4 network streams: our server and dv-processing's reader in separate processes, identical events."""
from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from devices.dvs import CameraError, DvsCameraSource, NetworkEventServer, NetworkEventSource, list_cameras
from recordings.detect import open_recording


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_network_round_trip_between_processes_gives_identical_events(data_dir):
    reader = open_recording(data_dir / "events" / "dvxplorer_tonic.aedat4", chunk_events=5000)
    chunks = list(reader.chunks())
    port = free_port()
    server = NetworkEventServer("127.0.0.1", port, reader.header.width, reader.header.height)
    source = NetworkEventSource("127.0.0.1", port)
    try:
        assert server.wait_for_client(5.0)
        assert (source.info.width, source.info.height) == (320, 240)
        for chunk in chunks:
            server.send(chunk)
        server.drain()
        expected = np.concatenate(chunks)
        received, total = [], 0
        deadline = time.monotonic() + 20
        packets = source.packets()
        while total < len(expected) and time.monotonic() < deadline:
            packet = next(packets)
            received.append(np.array(packet.events))
            total += len(packet.events)
        assert np.array_equal(np.concatenate(received), expected)
    finally:
        source.close()


def test_connecting_to_nothing_is_a_clear_error():
    with pytest.raises(CameraError, match=r"127\.0\.0\.1:\d+"):
        NetworkEventSource("127.0.0.1", free_port(), connect_timeout_s=3.0)


@pytest.mark.skipif(bool(list_cameras()), reason="a camera is attached")
def test_no_camera_attached_says_so():
    with pytest.raises(CameraError, match="no iniVation camera attached"):
        DvsCameraSource()
