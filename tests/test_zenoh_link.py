"""Zenoh publishers and subscribers between processes on loopback: whole streams, hostile peers,
slow readers, killed publishers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from devices.transport import wire
from devices.transport.zenoh_link import (CommandPublisher, CommandSubscriber, PacketPublisher, Subscription,
                                          TransportError, ZenohSource, open_session, parse_spec)
from pipeline.core.events import dvs_events
from pipeline.core.packet import Packet, StreamInfo
from recordings.replay import ReplaySource

SAMPLE = Path(__file__).resolve().parents[1] / "recordings" / "samples" / "moving_bars.aedat4"
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _key(name: str) -> str:
    return f"spikeloop-test/{uuid.uuid4().hex[:8]}/{name}"


def _wait(predicate, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.slow
def test_replay_published_from_another_process_arrives_whole():
    key = _key("dvs")
    publisher = subprocess.Popen([sys.executable, "-m", "pipeline.app.cli", "replay", str(SAMPLE), "--fast",
                                  "--publish", f"zenoh:{key}"], env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        source = ZenohSource(key, queue=100_000, first_sample_timeout_s=30, end_after_silence_s=15)
        received = list(source.packets())
        stats = source.stats
        source.close()
        assert not stats["stalled"], publisher.communicate(timeout=30)[1]
        assert publisher.wait(timeout=30) == 0, publisher.stderr.read()
    finally:
        publisher.kill()
    with ReplaySource(SAMPLE, fast=True) as direct:
        expected = list(direct.packets())
        assert source.info.kind == "dvs" and (source.info.width, source.info.height) == (direct.info.width,
                                                                                        direct.info.height)
    assert [p.t_end_us for p in received] == [p.t_end_us for p in expected]
    np.testing.assert_array_equal(np.concatenate([p.events for p in received]),
                                  np.concatenate([p.events for p in expected]))
    assert stats["gaps"] == stats["errors"] == stats["dropped_oldest"] == 0 and stats["ended"] == 1


def test_hostile_peer_gives_counted_errors_and_sequence_faults():
    key = _key("dvs")
    subscription = Subscription(key)
    peer = open_session()
    try:
        hostile = peer.declare_publisher(key)
        _wait(lambda: hostile.matching_status.matching)
        good = dict(t_end_us=100, stream_id=9, sent_ns=time.time_ns(), width=8, height=8)
        events = dvs_events([10, 20], [1, 2], [3, 4], [0, 1])
        valid = wire.encode_events(events, wire.KIND_DVS, sequence=0, **good)
        huge = valid[:36] + (0xFFFFFFF0).to_bytes(4, "little") + valid[40:]
        for data in (b"", b"garbage" * 10, os.urandom(4096), huge, valid[:-3], b"SPKL" + os.urandom(60)):
            hostile.put(data)
        for sequence in (0, 1, 3, 2, 4):  # 2 is lost then arrives late
            hostile.put(wire.encode_events(events, wire.KIND_DVS, sequence=sequence, **good))
        _wait(lambda: subscription.stats()["samples"] == 11)
        stats = subscription.stats()
    finally:
        peer.close()
        subscription.close()
    assert stats["errors"] == 6 and stats["errors_by_reason"]["too_large"] == 1
    assert (stats["gaps"], stats["reordered"]) == (1, 1)
    assert stats["queued"] == 4


def test_slow_reader_drops_the_oldest_packets_and_counts_them():
    key = _key("dvs")
    subscription = Subscription(key, queue=8)
    try:
        with PacketPublisher(key, StreamInfo("dvs", 16, 16), block=True) as publisher:
            assert publisher.wait_for_subscribers(10)
            for k in range(100):
                publisher.send(Packet(dvs_events([k], [1], [1], [1]), k))
            _wait(lambda: subscription.stats()["samples"] == 100)
        stats = subscription.stats()
        kept = [subscription.take(0)[1].header.sequence for _ in range(stats["queued"])]
    finally:
        subscription.close()
    assert stats["dropped_oldest"] == 92 and stats["queued"] == 8
    assert kept == list(range(92, 100))  # the newest survive


PUBLISH_COMMANDS = textwrap.dedent("""
    import sys, time
    from devices.transport.zenoh_link import CommandPublisher
    publisher = CommandPublisher(sys.argv[1])
    t = 0
    while True:
        publisher.send([1.5, -1.5], t)
        t += 10_000
        time.sleep(0.01)
""")


def test_killed_command_publisher_becomes_a_stale_command():
    key = _key("cmd")
    subscriber = CommandSubscriber(key, stale_after_s=0.2)
    child = subprocess.Popen([sys.executable, "-c", PUBLISH_COMMANDS, key], env=ENV, stderr=subprocess.PIPE)
    try:
        seen = []  # the first non-stale reading (a second call could find it stale on a loaded machine)
        _wait(lambda: seen.append(subscriber.latest()) or seen[-1] is not None, timeout_s=30)
        values, _t_us, age_s = seen[-1]
        np.testing.assert_array_equal(values, [1.5, -1.5])
        assert age_s < 0.2
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        killed = time.monotonic()
        _wait(lambda: subscriber.latest() is None, timeout_s=5)
        assert time.monotonic() - killed < 1.0
        assert subscriber.stats["errors"] == 0
    finally:
        child.kill()
        subscriber.close()


@pytest.mark.slow
def test_killed_packet_publisher_ends_a_source_that_watches_silence():
    key = _key("dvs")
    child = subprocess.Popen([sys.executable, "-m", "pipeline.app.cli", "replay", str(SAMPLE), "--loop",
                              "--publish", f"zenoh:{key}"], env=ENV, stderr=subprocess.PIPE)
    try:
        source = ZenohSource(key, first_sample_timeout_s=30, end_after_silence_s=0.3)
        got = 0
        for packet in source.packets():
            got += 1
            if got == 50:
                child.send_signal(signal.SIGKILL)
        assert source.stalled and source.silence_s() > 0.3
        assert source.stats["errors"] == 0
        source.close()
    finally:
        child.kill()
        child.wait(timeout=10)


def test_no_publisher_and_bad_specs_are_clear_errors(tmp_path):
    with pytest.raises(TransportError, match="no valid dvs/spikes packet within 0.2 s"):
        ZenohSource(_key("nobody"), first_sample_timeout_s=0.2)
    with pytest.raises(TransportError, match="expected zenoh:KEY"):
        parse_spec("tcp://host:1")
    with pytest.raises(TransportError, match="not a Zenoh key expression"):
        parse_spec("zenoh:a//b")
    bad = tmp_path / "bad.json5"
    bad.write_text("{ mode: 12 ")
    with pytest.raises(TransportError, match="bad.json5"):
        CommandPublisher("x", config_file=bad)


@pytest.mark.slow
def test_echo_json_counts_a_published_recording():
    key = _key("dvs")
    echo = subprocess.Popen([sys.executable, "-m", "pipeline.app.cli", "echo", f"zenoh:{key}", "--json",
                             "--duration", "60"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    replay = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "replay", str(SAMPLE), "--fast",
                             "--publish", f"zenoh:{key}"], env=ENV, capture_output=True, text=True, timeout=60)
    assert replay.returncode == 0, replay.stderr
    out, err = echo.communicate(timeout=60)  # ends at the publisher's END marker
    assert echo.returncode == 0, err
    summary = json.loads(out)
    with ReplaySource(SAMPLE, fast=True) as direct:
        packets = list(direct.packets())
    assert summary["events"] == sum(len(p) for p in packets) and summary["packets"] == len(packets)
    assert summary["gaps"] == 0 and summary["kinds"] == ["dvs"] and summary["ended"] == 1
    assert isinstance(summary["events"], int) and isinstance(summary["packets"], int)


@pytest.mark.slow
def test_camera_serve_publishes_a_source_on_zenoh():
    key = _key("dvs")
    serve = subprocess.Popen([sys.executable, "-m", "pipeline.app.cli", "camera", "serve", "--source", str(SAMPLE),
                              "--zenoh", key, "--duration", "1.0"], env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        source = ZenohSource(key, queue=100_000, first_sample_timeout_s=30, end_after_silence_s=15)
        received = list(source.packets())
        stats = source.stats
        source.close()
        assert not stats["stalled"], serve.communicate(timeout=30)[1]
        assert serve.wait(timeout=30) == 0, serve.stderr.read()
    finally:
        serve.kill()
    with ReplaySource(SAMPLE, fast=True) as direct:
        expected = {p.t_end_us: p.events for p in direct.packets()}
    # A live publisher neither waits for subscribers nor blocks on a congested link: every packet that
    # arrives is the file's packet for its window, and every one lost on the way is counted as a gap.
    assert len(received) > 100 and received[-1].t_end_us - received[0].t_end_us <= 1_001_000
    for packet in received:
        np.testing.assert_array_equal(packet.events, expected[packet.t_end_us])
    windows = (received[-1].t_end_us - received[0].t_end_us) // 1000 + 1
    assert stats["gaps"] == windows - len(received)


def test_spikes_commands_and_telemetry_round_trip_through_zenoh():
    from devices.transport.zenoh_link import TelemetryPublisher
    from pipeline.core.events import spikes

    base = _key("robot")
    subscription = Subscription(f"{base}/*")
    try:
        with PacketPublisher(f"{base}/spikes", StreamInfo("spikes", channels=64)) as spk, \
                CommandPublisher(f"{base}/cmd") as cmd, TelemetryPublisher(f"{base}/report") as report:
            for publisher in (spk, cmd, report):
                assert publisher.wait_for_subscribers(10)
            spk.send(Packet(spikes([5, 9], [3, 63]), 10))
            cmd.send([0.25, -0.5], 10)
            report.send({"steps": 3, "missed": 0}, 10)
            _wait(lambda: subscription.stats()["queued"] == 3)
        got = {item[0].rsplit("/", 1)[1]: item[1] for item in (subscription.take(0) for _ in range(3))}
    finally:
        subscription.close()
    assert got["spikes"].header.channels == 64
    np.testing.assert_array_equal(got["spikes"].payload, spikes([5, 9], [3, 63]))
    np.testing.assert_array_equal(got["cmd"].payload, [0.25, -0.5])
    assert got["report"].payload == {"steps": 3, "missed": 0} and got["report"].header.kind_name == "telemetry"
