"""Launch files: validation messages (file, section, key, expectation) before anything opens, the
shipped files, end-to-end replay of a real recording, and the headless robot controller process
(SIGTERM -> motors stopped, exit 0; device loss -> exit 3)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from devices.motors import dynamixel as dxl
from devices.motors.registry import start_twin
from pipeline.app.launch import LaunchError, build_graph, load_launch
from pipeline.sinks import read_command_log
from pipeline.snn.builders import dvs_steering

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch"
RECORDING = "events/dvxplorer_tonic.aedat4"  # DVXplorer 320x240, 111,954 events, 0.59 s


@pytest.fixture
def recording(data_dir) -> Path:
    return data_dir / RECORDING


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """Command logs named relative to the working directory land in the test's folder."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def base_toml(recording) -> str:
    """launch/replay.toml reading a real recording, logging commands instead of driving motors."""
    text = (LAUNCH / "replay.toml").read_text()
    text = text.replace('"../recordings/samples/moving_bars.aedat4"', json.dumps(str(recording)))
    head = text[:text.index("[sinks.motors]")]
    return head + '[sinks.log]\ntype = "command_log"\npath = "commands.csv"\n'


def write(tmp_path, text, name="bad.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path, **kwargs) -> str:
    with pytest.raises(LaunchError) as info:
        load_launch(path, **kwargs)
    return str(info.value)


@pytest.mark.parametrize("edit, expected", [
    (("[loop]", "[loop]\nsped = 2.0"), "[loop] sped: unknown key (expected one of:"),
    (("[decoder]", "[decoder]\nwindow = 3"), "[decoder] window: unknown key (expected one of:"),
    (("[controler]", None), "unknown section [controler]"),
    (('mode = "paced"', 'mode = "turbo"'), '[loop] mode: expected one of "live", "paced", "fast", got "turbo"'),
    (("dt_us = 1000", "dt_us = 1.5"), "[loop] dt_us: expected an integer in [1, 1000000], got 1.5"),
    (("dt_us = 1000", 'dt_us = "1000"'), '[loop] dt_us: expected an integer in [1, 1000000], got "1000"'),
    (("speed = 1.0", "speed = 0"), "[loop] speed: expected a number in (0, 1000], got 0"),
    (("speed = 1.0", "speed = -2"), "[loop] speed: expected a number in (0, 1000], got -2"),
    (("max_lag_ms = 10", "max_lag_ms = 0"), "[loop] max_lag_ms: expected a number in (0, 3600000], got 0"),
    (("loop = false", "loop = 1"), "[source] loop: expected true or false, got 1"),
    (('type = "replay"', 'type = "tape"'), '[source] type: expected one of "replay", "webcam", "camera", "tcp", "samples", "dad", "mc_maze", "audio", "world", "zenoh", got "tape"'),
    (('builder = "dvs_steering"', 'builder = "resnet"'), '[network] builder: expected one of "dvs_steering", "obstacle_avoidance", "random_lif", got "resnet"'),
    (("vth = 48", "vth = -3"), "[network.params] vth: expected an integer in [0, 131071], got -3"),
    (('backend = "loihi"', 'backend = "gpu"'), '[network] backend: expected one of "loihi", "float", got "gpu"'),
    (('type = "drive"', 'type = "steer"'), "[decoder] type: expected one of"),
    (("[stages.refractory]", "[stages.refractory]\ntype = \"blur\""), "[stages.refractory] type: expected one of"),
    (("duration_us = 2000", "duration_us = 2000\nradius = 1"), "[stages.noise_filter] radius: unknown key"),
])
def test_each_kind_of_bad_key_or_value_is_named(tmp_path, base_toml, edit, expected):
    old, new = edit
    if new is None:
        text = base_toml + f"\n{old}\nx = 1\n"
    else:
        assert old in base_toml
        text = base_toml.replace(old, new, 1)
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_missing_files_and_missing_keys_are_named(tmp_path, base_toml, recording):
    path = write(tmp_path, base_toml.replace(json.dumps(str(recording)), '"nowhere.aedat4"'))
    assert error_of(path) == (f"{path}: [source] path: file not found: {tmp_path / 'nowhere.aedat4'} "
                              "(expected a path to an existing file)")
    path = write(tmp_path, base_toml.replace('builder = "dvs_steering"', 'file = "net.npz"'))
    assert f"{path}: [network] file: file not found: {tmp_path / 'net.npz'}" in error_of(path)
    path = write(tmp_path, base_toml.replace('path = "commands.csv"\n', ""))
    assert error_of(path) == f"{path}: [sinks.log] path: missing (expected a file path to write)"
    path = write(tmp_path, base_toml.replace("[decoder]", "[decoder_off]"))
    assert "unknown section [decoder_off]" in error_of(path)


def test_motor_sink_values_are_checked_before_any_port_opens(tmp_path, base_toml):
    motors = (LAUNCH / "replay.toml").read_text()
    motors = motors[motors.index("[sinks.motors]"):]
    text = base_toml + "\n" + motors
    cases = [
        (('protocol = "dynamixel"', 'protocol = "canbus"'), '[sinks.motors] protocol: expected one of "dynamixel"'),
        (("ids = [1, 2]", "ids = [1, 1]"), "[sinks.motors] ids: expected distinct motor ids, got [1, 1]"),
        (("ids = [1, 2]", "ids = []"), "[sinks.motors] ids: expected a non-empty list of integers in [0, 255], got []"),
        (("timeout_ms = 200", "timeout_ms = -1"), "[sinks.motors] timeout_ms: expected a number in (0, 10000], got -1"),
        (('port = "emulated:dynamixel"', 'port = "/dev/ttyNOPE9"'),
         "[sinks.motors] port: serial device not found: /dev/ttyNOPE9"),
        (("device_watchdog_ms = 100", "watchdog = 100"), "[sinks.motors.driver] watchdog: unknown key"),
    ]
    for (old, new), expected in cases:
        assert old in text
        path = write(tmp_path, text.replace(old, new, 1))
        message = error_of(path)
        assert message.startswith(f"{path}: ") and expected in message, message


def test_component_errors_surface_with_file_and_section_and_no_motor_moves(tmp_path, base_toml, monkeypatch):
    import pipeline.sinks

    opened = []
    monkeypatch.setattr(pipeline.sinks, "MotorSink", lambda *a, **k: opened.append(a))
    motors = (LAUNCH / "replay.toml").read_text()
    motors = motors[motors.index("[sinks.motors]"):]
    path = write(tmp_path, base_toml.replace("duration_us = 2000", "duration_us = -5") + "\n" + motors)
    with pytest.raises(LaunchError) as info:
        build_graph(load_launch(path))
    assert str(info.value).startswith(f"{path}: [stages.noise_filter] duration_us: -5 is out of range")
    # Three motor ids for a two-wheel decoder: caught before the sink opens.
    path = write(tmp_path, base_toml + "\n" + motors.replace("ids = [1, 2]", "ids = [1, 2, 3]"))
    with pytest.raises(LaunchError, match=r"\[sinks.motors\] ids: expected 2 motor id\(s\), one per command value"):
        build_graph(load_launch(path))
    assert opened == []


def test_set_overrides_and_their_errors(tmp_path, base_toml):
    path = write(tmp_path, base_toml, "ok.toml")
    spec = load_launch(path, sets=["loop.speed=4", 'loop.mode="fast"', "network.params.vth=60",
                                   "stages.pooling.target=[8, 6]"], duration_s=0.2)
    assert spec.loop.speed == 4.0 and spec.loop.mode == "fast" and spec.loop.duration_s == 0.2
    assert spec.network_params["vth"] == 60 and spec.stages[-1][2].target == (8, 6)
    assert "[loop] speed: expected a number in (0, 1000], got -1" in error_of(path, sets=["loop.speed=-1"])
    assert "[loop] turbo: unknown key" in error_of(path, sets=["loop.turbo=1"])
    assert "--set 'speed': expected section.key=value" in error_of(path, sets=["speed"])
    # A bare word that is not TOML is taken as a string, then checked like any value.
    assert "[loop] mode: expected one of" in error_of(path, sets=["loop.mode=warp"])


def test_live_sources_without_a_driver_fail_clearly(tmp_path, base_toml):
    path = write(tmp_path, base_toml, "ok.toml")
    spec = load_launch(path, source="camera")
    assert spec.loop.mode == "live" and spec.source == {"type": "camera", "serial": ""}
    result = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "launch", str(LAUNCH / "live_demo.toml")],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"spikeloop launch: {LAUNCH / 'live_demo.toml'}: [source] ")
    assert "camera" in result.stderr


def test_network_from_a_saved_file_must_fit_the_input_grid(tmp_path, base_toml):
    dvs_steering(16, 12, 2).save(tmp_path / "net.npz")
    dvs_steering(8, 6, 2).save(tmp_path / "small.npz")
    text = base_toml.replace('builder = "dvs_steering"', 'file = "net.npz"')
    text = text[:text.index("[network.params]")] + text[text.index("[decoder]"):]
    graph = build_graph(load_launch(write(tmp_path, text, "file.toml")))
    graph.close()
    assert graph.network.n_inputs == 384
    path = write(tmp_path, text.replace("net.npz", "small.npz"), "small.toml")
    with pytest.raises(LaunchError, match=r"\[network\] file: network has 96 inputs, expected 384 "
                                          r"\(2 channel\(s\) x 16 x 12 px after the stages\)"):
        build_graph(load_launch(path))


def test_shipped_launch_files_validate(recording):
    for name in ("replay.toml", "robot_controller.toml", "live_demo.toml"):
        spec = load_launch(LAUNCH / name, source=str(recording))
        assert spec.sinks[0][1] == "motors" and spec.sinks[0][2]["port"] == "emulated:dynamixel"
    assert load_launch(LAUNCH / "robot_controller.toml", source=str(recording)).controller["log_format"] == "json"


#: Shipped files that name shared data ($SPIKELOOP_DATA/...), and the file each names.
SHIPPED_DATA = {"bci.toml": "bci/chewie_demo.mat", "audio.toml": "audio/fsdd/6_lucas_3.wav",
                "nmnist_classify.toml": "nmnist_small/test"}


@pytest.mark.parametrize("name", sorted(SHIPPED_DATA))
def test_shipped_files_find_the_shared_data_from_any_checkout(name, data_dir, tmp_path):
    """A fresh clone need not sit next to shared/: the shipped files name the data folder as
    $SPIKELOOP_DATA/..., so a copy of launch/ anywhere (here tmp_path) finds it through the variable."""
    copy = tmp_path / "elsewhere" / "launch"
    copy.mkdir(parents=True)
    (copy.parent / "pipeline").symlink_to(REPO / "pipeline")  # the shipped models, as in a clone
    (copy / name).write_text((LAUNCH / name).read_text())
    spec = load_launch(copy / name)
    assert Path(spec.source["path"]) == data_dir / SHIPPED_DATA[name]


def test_spikeloop_data_prefix_works_for_every_path_key(tmp_path, data_dir, monkeypatch):
    """$SPIKELOOP_DATA/... is the shared data folder in any path a launch file names ([source] path of a
    replay, a [network] file ...), not only in a samples source; elsewhere it is an ordinary name."""
    monkeypatch.setenv("SPIKELOOP_DATA", str(data_dir))
    text = (LAUNCH / "replay.toml").read_text().replace('"../recordings/samples/moving_bars.aedat4"',
                                                         f'"$SPIKELOOP_DATA/{RECORDING}"')
    spec = load_launch(write(tmp_path, text))
    assert Path(spec.source["path"]) == data_dir / RECORDING
    missing = text.replace(RECORDING, "events/no_such_file.aedat4")
    assert f"file not found: {data_dir / 'events/no_such_file.aedat4'}" in error_of(write(tmp_path, missing))


#: Shipped files with their own end-to-end test: nmnist_classify.toml decides once per sample, not per step
#: (tests/test_evaluate.py runs it on real recordings).
OWN_TEST = ("nmnist_classify.toml",)


def _is_training_config(path) -> bool:
    """Training configs (``[train]`` section) in launch/ are run by ``spikeloop train``, not the loop."""
    return "train" in tomllib.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(p.name for p in LAUNCH.glob("*.toml")
                                        if p.name not in OWN_TEST and not _is_training_config(p)
                                        and "zenoh" not in p.name))
def test_every_shipped_launch_file_runs_through_the_one_loop(name, data_dir, recording, tmp_path):
    """Each file in launch/, fast for 0.3 s of sensor time, its motors on emulated buses: a live camera
    source replaced by a recording, shared data found through $SPIKELOOP_DATA. (The *_zenoh.toml
    files run between processes in tests/test_zenoh_launch.py.)"""
    # live_demo's camera and demo's closed-loop world (run by `spikeloop demo`) give way to a recording
    source = str(recording) if name in ("live_demo.toml", "demo.toml") else None
    spec = load_launch(LAUNCH / name, sets=['loop.mode="fast"'], source=source, duration_s=0.3)
    graph = build_graph(spec)
    try:
        graph.loop.warmup()
        report = graph.loop.run()
    finally:
        graph.close()
    assert report.fatal == "" and report.sink_errors == 0
    assert report.stream_s == pytest.approx(0.3, abs=spec.loop.dt_us / 1e6)
    # in fast mode a motor bus may still be busy with the previous command (counted as unwritten)
    assert report.commands + report.commands_unwritten == report.steps // spec.loop.command_every_steps
    assert report.commands > 0


def test_end_to_end_replay_of_a_real_recording_through_the_launch_file(tmp_path, recording):
    log = tmp_path / "commands.csv"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.app.cli", "launch", str(LAUNCH / "replay.toml"), "--source", str(recording),
         "--set", 'loop.mode="fast"', "--set", 'sinks.log.type="command_log"', "--set", f"sinks.log.path={json.dumps(str(log))}",
         "--json"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["events_in"] == 111_954 and 585 <= report["steps"] <= 592
    assert report["sink_errors"] == 0 and report["merged_steps"] == 0
    assert "event=stopped" in result.stderr
    t, wheels = read_command_log(log)
    assert len(t) == report["steps"] and wheels.shape[1] == 2
    assert np.all(np.abs(wheels) <= 6.0 + 1e-9) and np.any(wheels != 0)


def spawn_controller(port: str, source: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.app.cli", "launch", str(LAUNCH / "robot_controller.toml"), "--headless",
         "--source", str(source), "--set", f"sinks.motors.port={json.dumps(port)}",
         "--set", "source.loop=true", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def velocity_packets(twin):
    packets = dxl.PacketDecoder().feed(twin.received())
    return [p for p in packets if p.instruction in (dxl.SYNC_WRITE, dxl.WRITE)]


def test_sigterm_stops_the_motors_then_the_controller_exits_0(recording):
    twin = start_twin("dynamixel", [1, 2])
    proc = spawn_controller(twin.path, recording)
    try:
        moving = lambda: any(p.instruction == dxl.SYNC_WRITE and p.params[:2] == b"\x68\x00"
                             and any(p.params[5:9] + p.params[10:14]) for p in velocity_packets(twin))
        assert wait_for(moving, 60.0), "the controller never commanded a non-zero velocity"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)  # its exit, on a loaded machine
    finally:
        proc.kill()
        twin.close()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines()]
    events = [line["event"] for line in lines]
    assert events[0] == "start" and events[-3:] == ["final", "signal", "stopped"]
    assert lines[-2]["signal"] == "SIGTERM"
    packets = velocity_packets(twin)
    last_velocity = [p for p in packets if p.params[:2] == b"\x68\x00"][-1]
    assert last_velocity.params[4:] == bytes([1, 0, 0, 0, 0, 2, 0, 0, 0, 0])  # ids 1, 2: goal velocity 0
    assert packets[-1].params == bytes([64, 0, 1, 0, 1, 0, 2, 0])  # then torque off on both
    assert not twin.device.torque_on(0) and not twin.device.torque_on(1)


def test_lost_motor_port_stops_the_controller_with_exit_3(recording):
    twin = start_twin("dynamixel", [1, 2])
    proc = spawn_controller(twin.path, recording, "--set", "sinks.motors.fatal_after_ms=300")
    try:
        assert wait_for(lambda: len(velocity_packets(twin)) > 20, 60.0)
        twin.unplug()
        _, err = proc.communicate(timeout=120)  # its exit, on a loaded machine
    finally:
        proc.kill()
        twin.close()
    assert proc.returncode == 3, err
    lines = [json.loads(line) for line in err.splitlines()]
    lost = [line for line in lines if line["event"] == "device_lost"]
    assert lost and "link down for more than 300 ms" in lost[0]["reason"]
    assert lines[-1]["event"] == "stopped"


def test_controller_logs_whether_sched_fifo_was_granted(recording):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.app.cli", "launch", str(LAUNCH / "robot_controller.toml"), "--headless",
         "--source", str(recording), "--duration", "0.2", "--set", "controller.realtime_priority=1"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines[0]["event"] in ("realtime", "realtime_refused") and lines[0]["priority"] == 1
    final = next(line for line in lines if line["event"] == "final")
    assert 199 <= final["steps"] + final["merged_steps"] <= 201


def test_falling_behind_is_logged_when_it_happens():
    import io
    from types import SimpleNamespace

    from pipeline.app.commands.launch import Degradation, EventLog

    stream = io.StringIO()
    degradation = Degradation(EventLog(as_json=False, stream=stream))
    counts = dict(merged_steps=0, dropped_packets=0, late_events=0, missed_ticks=0, sink_errors=0)
    degradation(SimpleNamespace(**counts))
    degradation(SimpleNamespace(**{**counts, "merged_steps": 7, "missed_ticks": 3}))
    degradation(SimpleNamespace(**{**counts, "merged_steps": 7, "missed_ticks": 3, "sink_errors": 2}))
    assert stream.getvalue().splitlines() == [
        "event=behind new_merged_steps=7 new_missed_ticks=3",
        "event=sink_errors new=2 total=2",
    ]
    EventLog(as_json=False, stream=stream)("stopped", counters={"motors": {"errors": 0}})
    assert stream.getvalue().splitlines()[-1] == "event=stopped counters.motors.errors=0"


def test_the_demo_avoidance_network_runs_by_name_from_a_launch_file(tmp_path, base_toml):
    path = write(tmp_path, base_toml, "ok.toml")
    sets = ["network.builder=obstacle_avoidance", "network.params={looming_vth = 300}", "decoder.forward=[0]",
            "decoder.left=[1]", "decoder.right=[2]", 'loop.mode="fast"', "loop.duration_s=0.2"]
    graph = build_graph(load_launch(path, sets=sets))
    assert graph.network.n_outputs == 3 and graph.network.n_inputs == 384
    graph.loop.warmup()
    report = graph.loop.run()
    graph.close()
    assert 200 <= report.steps <= 201 and report.sink_errors == 0
    t, wheels = read_command_log(tmp_path / "commands.csv")
    assert wheels.shape == (report.steps, 2)
    message = error_of(path, sets=sets[:1] + ["network.params={vth = 3}"])
    assert "[network.params] vth: unknown key (expected one of: " in message and "forward_bias" in message


def test_a_video_file_runs_through_the_frame_to_event_emulator(tmp_path, base_toml):
    import cv2

    video = tmp_path / "square.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    for i in range(30):  # a bright square moving right over a grey background, 1 s at 30 frames/s
        frame = np.full((48, 64, 3), 60, np.uint8)
        frame[15:30, 5 + i:13 + i] = 230
        writer.write(frame)
    writer.release()
    spec = load_launch(write(tmp_path, base_toml, "ok.toml"), source=f"video:{video}", sets=['loop.mode="fast"'])
    assert spec.source["type"] == "webcam" and spec.loop.mode == "fast"
    graph = build_graph(spec)
    graph.loop.warmup()
    report = graph.loop.run()
    graph.close()
    assert report.events_in > 0 and 900 <= report.steps + report.merged_steps <= 1000
    t, wheels = read_command_log(tmp_path / "commands.csv")
    assert np.any(wheels != 0)


def test_source_spec_picks_the_type_by_extension_and_keeps_the_options_of_the_same_type(tmp_path, data_dir):
    audio = LAUNCH / "audio.toml"
    other = data_dir / "audio" / "fsdd" / "2_george_7.wav"
    spec = load_launch(audio, source=str(other))
    assert spec.source["type"] == "audio" and spec.source["path"] == other and spec.source["method"] == "delta"
    assert spec.loop.mode == "paced"                       # a recording keeps the file's mode
    csv = data_dir / "bci" / "trial_748_data.csv"
    spec = load_launch(LAUNCH / "bci.toml", source=str(csv))
    assert spec.source["type"] == "mc_maze" and spec.source["bin_ms"] == 50.0 and spec.loop.dt_us == 50_000
    spec = load_launch(LAUNCH / "bci.toml", source=str(data_dir / "bci" / "chewie_demo.mat"))
    assert spec.source["type"] == "dad" and spec.source["block"] == "te" and spec.chunk_us == 10_000
    with pytest.raises(LaunchError, match=r"\[stages.noise_filter\]: stages filter DVS events; the audio source"):
        load_launch(LAUNCH / "replay.toml", source=str(other))
