"""Launch files across processes on this machine (Zenoh on loopback): sensor -> compute -> actuator give
the commands of the in-process run of the same recording; a killed publisher is a lost stream (the
motors stop); a slow loop drops the oldest packets, counted; one compute process serves 4 robots; the
clock offset between publisher and subscriber is estimated. Every wait is bounded."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from devices.transport.zenoh_link import PacketPublisher, ZenohSource, loopback_config
from pipeline.app.launch import LaunchError, build_graph, load_launch
from pipeline.core.events import dvs_events
from pipeline.core.packet import Packet, StreamInfo
from pipeline.sinks import read_command_log

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "recordings" / "samples" / "moving_bars.aedat4"
LAUNCH = ROOT / "launch"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CLI = [sys.executable, "-m", "pipeline.app.cli"]
#: A compute loop that never merges or drops (so it must give the in-process commands): queues that hold a
#: whole recording, no idle steps, no lag limit in practice.
EXACT = ["--set", "source.queue_packets=100000", "--set", "loop.queue_packets=100000", "--set", "loop.idle_ms=0",
         "--set", "loop.max_lag_ms=600000", "--set", "loop.report_period_s=0"]


HUB = textwrap.dedent("""
    import sys, time
    from devices.transport.zenoh_link import open_session
    session = open_session(sys.argv[1])
    while True:
        time.sleep(1)
""")


@pytest.fixture(scope="module", autouse=True)
def zenoh_hub(tmp_path_factory):
    """This module's processes meet at a Zenoh peer of its own on a free loopback port (every process gets
    SPIKELOOP_ZENOH_CONFIG naming it), not at the host-wide default rendezvous port 7447, whose holder is
    whichever process on the machine opened it first and may exit mid-test."""
    folder = tmp_path_factory.mktemp("zenoh")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hub = folder / "hub.json5"
    hub.write_text(f'{{ mode: "peer", listen: {{ endpoints: ["tcp/127.0.0.1:{port}"] }}, '
                   f'scouting: {{ multicast: {{ enabled: false }} }} }}')
    member = folder / "member.json5"
    member.write_text(f'{{ mode: "peer", connect: {{ endpoints: ["tcp/127.0.0.1:{port}"] }}, '
                      f'listen: {{ endpoints: ["tcp/127.0.0.1:0"] }}, scouting: {{ multicast: {{ enabled: false }} }} }}')
    process = subprocess.Popen([sys.executable, "-c", HUB, str(hub)], env=ENV)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "the Zenoh hub did not start"
                time.sleep(0.1)
        previous = os.environ.get("SPIKELOOP_ZENOH_CONFIG")
        os.environ["SPIKELOOP_ZENOH_CONFIG"] = ENV["SPIKELOOP_ZENOH_CONFIG"] = str(member)
        yield member
    finally:
        ENV.pop("SPIKELOOP_ZENOH_CONFIG", None)
        if "previous" in locals():
            if previous is None:
                os.environ.pop("SPIKELOOP_ZENOH_CONFIG", None)
            else:
                os.environ["SPIKELOOP_ZENOH_CONFIG"] = previous
        process.kill()
        process.wait(timeout=30)


def _prefix() -> str:
    return f"spikeloop-test/{uuid.uuid4().hex[:8]}"


def _sets(**values) -> list[str]:
    out = []
    for key, value in values.items():
        out += ["--set", f"{key.replace('__', '.')}={json.dumps(value)}"]
    return out


def _events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def _reference(tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Commands of launch/compute_zenoh.toml run in this process on the recording itself (fast)."""
    spec = load_launch(LAUNCH / "compute_zenoh.toml", sets=['loop.mode="fast"'], source=str(SAMPLE))
    path = tmp_path / "reference.csv"
    spec = replace(spec, sinks=[("log", "command_log", {"path": path, "format": "csv"}, {})])
    graph = build_graph(spec)
    try:
        graph.loop.warmup()
        report = graph.loop.run()
    finally:
        graph.close()
    assert report.merged_steps == 0 and report.commands > 2900
    return read_command_log(path)


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _read_until(process, needle: str, timeout_s: float) -> list[str]:
    """Lines of ``process``'s stderr up to the first holding ``needle`` (fails after ``timeout_s`` or at EOF)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    pytest.fail(f"no {needle!r} in:\n{''.join(lines)}")


def _stop(*processes) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def _compute(prefix: str, tmp_path: Path, *extra: str, key_robot: str = "robot1") -> list[str]:
    return [*CLI, "launch", str(LAUNCH / "compute_zenoh.toml"), "--headless", "--json",
            "--source", f"zenoh:{prefix}/{key_robot}/dvs", *EXACT,
            *_sets(sinks__robot__key=f"{prefix}/{key_robot}/cmd", sinks__robot__spikes_key=f"{prefix}/{key_robot}/spikes",
                   sinks__robot__telemetry_key=f"{prefix}/{key_robot}/telemetry", source__first_packet_s=120.0,
                   source__silence_ms=20000.0, sinks__log__type="command_log",
                   sinks__log__path=str(tmp_path / "compute.csv")), *extra]


@pytest.mark.slow
def test_sensor_compute_actuator_processes_give_the_in_process_commands(tmp_path):
    """Three processes: replay --publish (sensor), launch compute_zenoh.toml (compute), launch
    robot_motors_zenoh.toml (actuator, emulated motors); compute's and actuator's commands == in-process."""
    t_ref, c_ref = _reference(tmp_path)
    prefix = _prefix()
    actuator = subprocess.Popen(
        [*CLI, "launch", str(LAUNCH / "robot_motors_zenoh.toml"), "--headless", "--json",
         *_sets(source__key=f"{prefix}/robot1/cmd", source__queue_packets=100000, loop__report_period_s=0.0,
                sinks__log__type="command_log", sinks__log__path=str(tmp_path / "actuator.csv"),
                sinks__motors__timeout_ms=1000.0, loop__duration_s=300.0)],  # bounded, even if END never came
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    compute = subprocess.Popen(
        _compute(prefix, tmp_path, *_sets(sinks__robot__block=True, sinks__robot__wait_subscriber_s=120.0)),
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sensor = subprocess.run([*CLI, "replay", str(SAMPLE), "--fast", "--publish", f"zenoh:{prefix}/robot1/dvs"],
                                env=ENV, capture_output=True, text=True, timeout=180)
        assert sensor.returncode == 0, sensor.stderr
        out, err = compute.communicate(timeout=180)
        assert compute.returncode == 0, err
        lines = _read_until(actuator, '"event": "command_ended"', 180)  # every command relayed, then END
        time.sleep(0.2)  # zero velocity held
        actuator.send_signal(signal.SIGTERM)
        a_out, a_err = actuator.communicate(timeout=60)
        a_err = "".join(lines) + a_err
    finally:
        _stop(actuator, compute)
    assert actuator.returncode == 0, a_err
    assert "Traceback" not in err + a_err
    t_compute, c_compute = read_command_log(tmp_path / "compute.csv")
    np.testing.assert_array_equal(t_compute, t_ref)
    np.testing.assert_array_equal(c_compute, c_ref)
    transport = [e for e in _events(err) if e["event"] == "transport"][0]
    assert transport["gaps"] == transport["dropped_oldest"] == transport["errors"] == 0
    assert abs(transport["clock_offset_us"]) <= transport["clock_uncertainty_us"] + 1000  # one host, one clock
    relay = json.loads(a_out)
    assert relay["received"] == len(t_ref) and relay["gaps"] == 0 and relay["dropped_oldest"] == 0
    t_act, c_act = read_command_log(tmp_path / "actuator.csv")
    np.testing.assert_array_equal(t_act[:len(t_ref)], t_ref)
    np.testing.assert_array_equal(c_act[:len(t_ref)], c_ref)
    assert (c_act[len(t_ref):] == 0).all()  # after END: zero velocity held
    events = _events(a_err)
    assert any(e["event"] == "command_ended" for e in events)
    assert [e for e in events if e["event"] == "stopped"][0]["motors"] == "zero velocity, torque off"


@pytest.mark.slow
def test_sensor_and_compute_processes_give_the_in_process_commands_with_output_and_telemetry(tmp_path):
    """Two processes; also the compute's output spikes and loop reports arrive on their keys."""
    t_ref, c_ref = _reference(tmp_path)
    prefix = _prefix()
    compute = subprocess.Popen(_compute(prefix, tmp_path), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    echo = subprocess.Popen([*CLI, "echo", f"zenoh:{prefix}/robot1/telemetry", "--json", "--duration", "150"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sensor = subprocess.run([*CLI, "replay", str(SAMPLE), "--fast", "--publish", f"zenoh:{prefix}/robot1/dvs"],
                                env=ENV, capture_output=True, text=True, timeout=180)
        assert sensor.returncode == 0, sensor.stderr
        out, err = compute.communicate(timeout=180)
        e_out, e_err = echo.communicate(timeout=180)
    finally:
        _stop(compute, echo)
    assert compute.returncode == 0, err
    t_compute, c_compute = read_command_log(tmp_path / "compute.csv")
    np.testing.assert_array_equal(t_compute, t_ref)
    np.testing.assert_array_equal(c_compute, c_ref)
    telemetry = json.loads(e_out)
    assert telemetry["telemetry"] == 1 and telemetry["ended"] == 1  # the final report, then END
    assert json.loads(out)["commands"] == len(t_ref)


@pytest.mark.slow
def test_killed_sensor_is_a_lost_stream_compute_exits_4_without_a_traceback(tmp_path):
    prefix = _prefix()
    compute = subprocess.Popen(
        [*CLI, "launch", str(LAUNCH / "compute_zenoh.toml"), "--headless", "--source", f"zenoh:{prefix}/r/dvs",
         *_sets(sinks__robot__key=f"{prefix}/r/cmd", sinks__robot__spikes_key="", sinks__robot__telemetry_key="",
                source__first_packet_s=120.0, source__silence_ms=500.0, loop__report_period_s=0.2)],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sensor = subprocess.Popen([*CLI, "replay", str(SAMPLE), "--loop", "--publish", f"zenoh:{prefix}/r/dvs"],
                              env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the loop is stepping on the sensor's packets
            line = compute.stderr.readline()
            lines.append(line)
            if '"event": "stats"' in line and json.loads(line)["steps"] > 100:
                break
        else:
            pytest.fail("".join(lines))
        sensor.send_signal(signal.SIGKILL)
        out, err = compute.communicate(timeout=60)
    finally:
        _stop(compute, sensor)
    err = "".join(lines) + err
    assert compute.returncode == 1, err
    assert "Traceback" not in err
    lost = [e for e in _events(err) if e["event"] == "source_lost"]
    assert lost and lost[0]["silent_ms"] == 500.0 and lost[0]["ended"] == 0


@pytest.mark.slow
def test_scheduled_robots_keep_separate_safety_one_killed_sensor_is_lost_the_other_ends(tmp_path):
    """[controller] robots = "scheduler": one thread steps both robots, yet each has its own silence watch:
    robot a's sensor killed mid-stream is lost (source_lost names it, exit 1, no traceback) while robot b's
    stream, sent whole, ends normally with all its steps."""
    prefix = _prefix()
    compute = subprocess.Popen(
        [*CLI, "launch", str(LAUNCH / "robots_zenoh.toml"), "--headless", "--source", f"zenoh:{prefix}/*/dvs",
         *_sets(controller__robots="scheduler", sinks__robot__key=f"{prefix}/*/cmd", sinks__robot__spikes_key="",
                sinks__robot__telemetry_key="", source__first_packet_s=120.0, source__silence_ms=500.0,
                source__queue_packets=100000, loop__max_lag_ms=600000, loop__report_period_s=0.2)],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # b's packets wait while its loop starts
    killed = subprocess.Popen([*CLI, "replay", str(SAMPLE), "--loop", "--publish", f"zenoh:{prefix}/a/dvs"],
                              env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    whole = subprocess.Popen([*CLI, "replay", str(SAMPLE), "--publish", f"zenoh:{prefix}/b/dvs"],
                             env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # robot a's loop is stepping on its sensor's packets
            line = compute.stderr.readline()
            lines.append(line)
            if '"event": "stats"' in line and f"{prefix}/a/dvs" in line and json.loads(line)["steps"] > 100:
                break
        else:
            pytest.fail("".join(lines))
        killed.send_signal(signal.SIGKILL)
        assert whole.wait(timeout=120) == 0
        out, err = compute.communicate(timeout=120)
    finally:
        _stop(compute, killed, whole)
    err = "".join(lines) + err
    assert compute.returncode == 1, err
    assert "Traceback" not in err
    events = _events(err)
    lost = [e for e in events if e["event"] == "source_lost"]
    assert [e["robot"] for e in lost] == [f"{prefix}/a/dvs"] and lost[0]["silent_ms"] == 500.0
    assert [e for e in events if e["event"] == "stopped" and "robots" in e][0]["robots"] == {
        f"{prefix}/a/dvs": "lost", f"{prefix}/b/dvs": "ended"}
    final_b = [e for e in events if e["event"] == "final" and e["robot"] == f"{prefix}/b/dvs"]
    assert len(final_b) == 1 and final_b[0]["steps"] > 2900


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


@pytest.mark.slow
def test_killed_command_publisher_makes_the_actuator_stop_the_motors(tmp_path):
    prefix = _prefix()
    log = tmp_path / "actuator.csv"
    actuator = subprocess.Popen(
        [*CLI, "launch", str(LAUNCH / "robot_motors_zenoh.toml"), "--headless", "--json",
         *_sets(source__key=f"{prefix}/cmd", loop__report_period_s=0.2, sinks__log__type="command_log",
                sinks__log__path=str(log), sinks__log__format="jsonl")],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    publisher = subprocess.Popen([sys.executable, "-c", PUBLISH_COMMANDS, f"{prefix}/cmd"], env=ENV)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = actuator.stderr.readline()
            lines.append(line)
            if '"event": "stats"' in line and json.loads(line)["received"] > 20:
                break
        else:
            pytest.fail("".join(lines))
        publisher.send_signal(signal.SIGKILL)
        while time.monotonic() < deadline:
            line = actuator.stderr.readline()
            lines.append(line)
            if '"event": "command_stale"' in line:
                break
        else:
            pytest.fail("".join(lines))
        time.sleep(0.3)
        actuator.send_signal(signal.SIGTERM)
        out, err = actuator.communicate(timeout=60)
    finally:
        _stop(actuator, publisher)
    err = "".join(lines) + err
    assert actuator.returncode == 0 and "Traceback" not in err, err
    stale = [e for e in _events(err) if e["event"] == "command_stale"][0]
    assert stale["stale_ms"] == 100.0
    report = json.loads(out)
    assert report["stale_events"] == 1 and report["stale_s"] > 0.2
    rows = [json.loads(line)["command"] for line in log.read_text().splitlines()]
    assert rows[0] == [1.5, -1.5] and rows[-1] == [0.0, 0.0]  # commands, then zero velocity held
    stopped = [e for e in _events(err) if e["event"] == "stopped"][0]
    assert stopped["motors"] == "zero velocity, torque off"


@pytest.mark.slow
def test_slow_compute_drops_the_oldest_packets_and_counts_them(tmp_path):
    """The sensor bursts 3,000 packets into a compute whose source queue holds 16: the oldest are dropped
    and counted, memory stays bounded, the run ends normally at the END marker."""
    prefix = _prefix()
    compute = subprocess.Popen(
        [*CLI, "launch", str(LAUNCH / "compute_zenoh.toml"), "--headless", "--json", "--source",
         f"zenoh:{prefix}/r/dvs", *_sets(sinks__robot__key=f"{prefix}/r/cmd", sinks__robot__spikes_key="",
                                        sinks__robot__telemetry_key="", source__first_packet_s=120.0,
                                        source__queue_packets=16, loop__queue_packets=4, loop__report_period_s=0.0)],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sensor = subprocess.run([*CLI, "replay", str(SAMPLE), "--fast", "--publish", f"zenoh:{prefix}/r/dvs"],
                                env=ENV, capture_output=True, text=True, timeout=180)
        assert sensor.returncode == 0, sensor.stderr
        out, err = compute.communicate(timeout=180)
    finally:
        _stop(compute)
    assert compute.returncode == 0, err
    transport = [e for e in _events(err) if e["event"] == "transport"][0]
    report = json.loads(out)
    assert transport["samples"] == 2995 and transport["gaps"] == 0 and transport["ended"] == 1
    assert transport["dropped_oldest"] > 0  # the 3,000-packet burst cannot fit in 16 + 4 places
    # every packet received was either dropped (counted) or reached the loop
    assert report["events_in"] + report["dropped_events"] < 26_411


PUBLISH_ROBOTS = textwrap.dedent("""
    import sys
    from devices.transport.zenoh_link import PacketPublisher
    from recordings.replay import ReplaySource
    prefix, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with ReplaySource(path, fast=True) as source:
        packets = list(source.packets())
        info = source.info
    publishers = [PacketPublisher(f"{prefix}/robot{i}/dvs", info, block=True, shared=True) for i in range(n)]
    for publisher in publishers:
        assert publisher.wait_for_subscribers(120)
    for packet in packets:
        for publisher in publishers:
            publisher.send(packet)
    for publisher in publishers:
        publisher.end(packets[-1].t_end_us)
        publisher.close()
""")


@pytest.mark.slow
@pytest.mark.parametrize("robots", ["threads", "scheduler"])
def test_one_compute_process_serves_four_robots_each_with_the_in_process_commands(tmp_path, robots):
    """Threads (one loop each) or the scheduler (one thread steps all four): each robot's own state and
    command key, and exactly the commands of the in-process run of the same recording."""
    t_ref, c_ref = _reference(tmp_path)
    prefix = _prefix()
    compute = subprocess.Popen(
        [*CLI, "launch", str(LAUNCH / "robots_zenoh.toml"), "--headless", "--source", f"zenoh:{prefix}/*/dvs",
         *EXACT, *_sets(controller__robots=robots, sinks__robot__key=f"{prefix}/*/cmd", sinks__robot__spikes_key="",
                        sinks__robot__telemetry_key=f"{prefix}/*/telemetry", source__first_packet_s=120.0,
                        source__silence_ms=20000.0, sinks__log__type="command_log",
                        sinks__log__path=str(tmp_path / "robot_*.csv"))],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sensors = subprocess.run([sys.executable, "-c", PUBLISH_ROBOTS, prefix, str(SAMPLE), "4"], env=ENV,
                                 capture_output=True, text=True, timeout=240)
        assert sensors.returncode == 0, sensors.stderr
        out, err = compute.communicate(timeout=240)
    finally:
        _stop(compute)
    assert compute.returncode == 0, err
    events = _events(err)
    robots = sorted(e["robot"] for e in events if e["event"] == "robot")
    assert robots == [f"{prefix}/robot{i}/dvs" for i in range(4)]
    for i in range(4):
        t, c = read_command_log(tmp_path / f"robot_robot{i}.csv")
        np.testing.assert_array_equal(t, t_ref)
        np.testing.assert_array_equal(c, c_ref)
    finals = [e for e in events if e["event"] == "final"]
    assert len(finals) == 4 and all(f["merged_steps"] == 0 and f["dropped_packets"] == 0 for f in finals)
    assert [e for e in events if e["event"] == "stopped"][0]["robots"] == {
        f"{prefix}/robot{i}/dvs": "ended" for i in range(4)}


def test_clock_offset_of_a_publisher_with_another_clock_is_estimated():
    """A publisher whose wall clock runs 5 s ahead: the subscriber's estimate is 5 s within its stated
    uncertainty, and packets' origin times land on our clock (not 5 s off)."""
    key = f"{_prefix()}/dvs"
    ahead_ns = 5_000_000_000
    publisher = PacketPublisher(key, StreamInfo("dvs", 8, 8), block=True, clock_ns=lambda: time.time_ns() + ahead_ns)
    try:
        with ThreadPoolExecutor(1) as pool:  # the source waits for its first packet
            opening = pool.submit(ZenohSource, key, first_sample_timeout_s=30, end_after_silence_s=5)
            assert publisher.wait_for_subscribers(30)
            publisher.send(Packet(dvs_events([1], [1], [1], [1]), 10))
            source = opening.result(timeout=60)
        try:
            publisher.send(Packet(dvs_events([20], [2], [2], [0]), 30))
            publisher.end(30)
            packets = list(source.packets())
        finally:
            source.close()
    finally:
        publisher.close()
    offset = source.clock_offset
    assert offset is not None and offset.pings == 8
    assert abs(offset.offset_ns - ahead_ns) <= offset.rtt_ns / 2 + 1_000_000
    for packet in packets:
        assert 0 <= packet.arrival_ns - packet.origin_ns < 1_000_000_000  # sent before it arrived, not 5 s
    assert source.stats["clock_offset_us"] == pytest.approx(ahead_ns / 1e3, abs=offset.rtt_ns / 2e3 + 1000)


def test_loopback_is_the_default_and_launch_errors_name_file_section_and_key(tmp_path):
    config = loopback_config()
    endpoints = json.loads(config.get_json("listen/endpoints")) + json.loads(config.get_json("connect/endpoints"))
    assert endpoints[0] == "tcp/127.0.0.1:7447"
    assert endpoints and all(e.startswith("tcp/127.0.0.1:") for e in endpoints)
    assert json.loads(config.get_json("scouting/multicast/enabled")) is False
    robots, compute, motors = (str(LAUNCH / f"{n}.toml") for n in ("robots_zenoh", "compute_zenoh",
                                                                     "robot_motors_zenoh"))
    cases = [
        (robots, ['sinks.robot.key="lab/robot1/cmd"'], "[sinks.robot] key: one loop per robot: expected a key with '*'"),
        (robots, ['source.key="lab/**/dvs"'], "[source] key: one loop per robot takes '*' chunks"),
        (robots, ['sinks.log.type="command_log"', 'sinks.log.path="out.csv"'], "[sinks.log] path: one loop per robot"),
        (compute, ['sinks.robot.key="lab/*/cmd"'], "[sinks.robot] key: expected a key to publish on"),
        (compute, ['source.config="missing.json5"'], "[source] config: file not found"),
        (compute, ['source.kind="audio"'], '[source] kind: expected one of "dvs", "spikes", "command"'),
        (motors, ['network.builder="dvs_steering"'], "[network]: a command stream (kind = \"command\")"),
        (motors, ['source.key="lab/*/cmd"'], "[source] key: a command stream drives one robot's motors"),
    ]
    for path, sets, message in cases:
        with pytest.raises(LaunchError) as info:
            load_launch(path, sets=sets)
        assert message in str(info.value), (sets, str(info.value))
    bad = tmp_path / "bad.json5"
    bad.write_text("{ mode: 12 ")
    with pytest.raises(LaunchError, match=r"\[source\] config: .*bad.json5: not a valid Zenoh config"):
        load_launch(compute, sets=[f"source.config={json.dumps(str(bad))}"])
    with pytest.raises(LaunchError, match="--source: source 'zenoh:': expected zenoh:KEY"):
        load_launch(compute, source="zenoh:")
    # --source zenoh:KEY on a file with a recording keeps what the recording streamed (spikes from audio)
    spec = load_launch(LAUNCH / "audio.toml", source="zenoh:lab/mic1/spikes")
    assert spec.source["type"] == "zenoh" and spec.kind == "spikes" and spec.loop.mode == "live"


@pytest.mark.slow
def test_zenoh_config_files_named_in_the_launch_file_and_the_environment_connect_the_processes(tmp_path):
    """The compute side listens where its config file (named in the launch file) says, on a port of its
    own; the sensor finds it only through its config file (SPIKELOOP_ZENOH_CONFIG): the setup of two hosts,
    on loopback."""
    t_ref, c_ref = _reference(tmp_path)
    port = 20000 + int(uuid.uuid4().int % 20000)
    compute_config = tmp_path / "compute.json5"
    compute_config.write_text(f'{{ mode: "peer", listen: {{ endpoints: ["tcp/127.0.0.1:{port}"] }}, '
                              f'scouting: {{ multicast: {{ enabled: false }} }} }}')
    sensor_config = tmp_path / "sensor.json5"
    sensor_config.write_text(f'{{ mode: "peer", connect: {{ endpoints: ["tcp/127.0.0.1:{port}"] }}, '
                             f'listen: {{ endpoints: ["tcp/127.0.0.1:0"] }}, scouting: {{ multicast: {{ enabled: false }} }} }}')
    prefix = _prefix()
    compute = subprocess.Popen(_compute(prefix, tmp_path, *_sets(source__config=str(compute_config),
                                                                 sinks__robot__config=str(compute_config))),
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # the compute side listens before the sensor connects (it retries anyway)
        sensor = subprocess.run([*CLI, "replay", str(SAMPLE), "--fast", "--publish", f"zenoh:{prefix}/robot1/dvs"],
                                env={**ENV, "SPIKELOOP_ZENOH_CONFIG": str(sensor_config)}, capture_output=True,
                                text=True, timeout=180)
        assert sensor.returncode == 0, sensor.stderr
        out, err = compute.communicate(timeout=180)
    finally:
        _stop(compute)
    assert compute.returncode == 0, err
    t, c = read_command_log(tmp_path / "compute.csv")
    np.testing.assert_array_equal(t, t_ref)
    np.testing.assert_array_equal(c, c_ref)


@pytest.mark.slow
def test_robots_as_processes_each_run_their_own_loop(tmp_path):
    """[controller] robots = "processes": one `launch --robot KEY` process per robot that publishes, each
    with its own command key and log; the launch ends when both robots' loops have ended."""
    prefix = _prefix()
    publishers = [subprocess.Popen([*CLI, "replay", str(SAMPLE), "--loop", "--publish", f"zenoh:{prefix}/r{i}/dvs"],
                                   env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(2)]
    compute = subprocess.Popen(
        [*CLI, "launch", str(LAUNCH / "robots_zenoh.toml"), "--headless", "--source", f"zenoh:{prefix}/*/dvs",
         "--duration", "1.0",
         *_sets(controller__robots="processes", sinks__robot__key=f"{prefix}/*/cmd", sinks__robot__spikes_key="",
                sinks__robot__telemetry_key="", source__first_packet_s=120.0, loop__report_period_s=0.0,
                sinks__log__type="command_log", sinks__log__path=str(tmp_path / "*.csv"))],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = compute.communicate(timeout=240)
    finally:
        _stop(compute, *publishers)
    assert compute.returncode == 0 and "Traceback" not in err, err
    events = _events(err)
    keys = [f"{prefix}/r{i}/dvs" for i in range(2)]
    assert sorted(e["robot"] for e in events if e["event"] == "robot" and "process" in e) == keys
    finals = {e["robot"]: e for e in events if e["event"] == "final"}
    assert sorted(finals) == keys and all(f["stream_s"] == pytest.approx(1.0, abs=0.002) for f in finals.values())
    assert [e for e in events if e["event"] == "stopped" and "robots" in e][0]["robots"] == dict.fromkeys(keys, "ended")
    for i in range(2):
        t, _ = read_command_log(tmp_path / f"r{i}.csv")
        assert len(t) == finals[keys[i]]["commands"] > 0  # live: fewer than 1,000 when bins merged under load
    with pytest.raises(LaunchError, match='--robot lab/robot1/dvs: the \\[source\\] key "lab/robot1/dvs" has no'):
        from pipeline.app.commands.launch import robot_spec
        robot_spec(load_launch(LAUNCH / "compute_zenoh.toml"), "lab/robot1/dvs")
