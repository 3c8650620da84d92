"""BCI output side: decoded velocity -> wheel/joint commands, the bci launch file (neural replay ->
decoder -> emulated motors / command log) through the one launch graph (``spikeloop launch`` and its
``spikeloop bci run`` wrapper) and ``spikeloop bci fit`` + ``replay`` with its PNG."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from pipeline.app.cli import main
from pipeline.app.commands.bci import run_decoding
from pipeline.app.launch import build_graph, load_launch
from pipeline.core.schema import LaunchError
from pipeline.decoders.bci.kalman import KalmanDecoder
from pipeline.decoders.bci.motor import VelocityToDrive, VelocityToJoints
from pipeline.sinks import read_command_log
from recordings.dad import load_dad
from recordings.datasets import REPO_ROOT

LAUNCH = REPO_ROOT / "launch" / "bci.toml"


def test_velocity_to_drive_known_values():
    drive = VelocityToDrive(wheel_radius_m=0.05, track_m=0.2, max_wheel_radps=10.0,
                            mps_per_unit=0.01, radps_per_unit=-0.05, deadband=0.5)
    np.testing.assert_allclose(drive(np.array([0.0, 20.0])), [4.0, 4.0])        # 0.2 m/s straight
    np.testing.assert_allclose(drive(np.array([10.0, 0.0])), [1.0, -1.0])       # hand right -> turn right
    np.testing.assert_allclose(drive(np.array([0.4, -0.4])), [0.0, 0.0])        # inside the deadband
    fast = drive(np.array([-40.0, 100.0]))                                       # 1 m/s, +2 rad/s: saturates
    assert np.max(np.abs(fast)) == pytest.approx(10.0) and drive.mixer.saturated
    np.testing.assert_allclose(fast[1] / fast[0], (1.0 + 0.2) / (1.0 - 0.2))    # curvature kept
    with pytest.raises(ValueError, match="non-finite"):
        drive(np.array([np.nan, 1.0]))
    with pytest.raises(ValueError, match="two different axes"):
        VelocityToDrive(0.05, 0.2, 10.0, forward_axis=0, turn_axis=0)


def test_velocity_to_joints_clips():
    joints = VelocityToJoints([[1.0, 0.0], [0.5, 0.5], [0.0, -2.0]], max_joint_radps=3.0)
    np.testing.assert_allclose(joints(np.array([2.0, 2.0])), [2.0, 2.0, -3.0])
    with pytest.raises(ValueError, match="gain"):
        VelocityToJoints([1.0, 2.0], 1.0)


@pytest.fixture()
def launch_copy(tmp_path, data_dir):
    """launch/bci.toml pointed at the test data folder (the file names $SPIKELOOP_DATA/bci/chewie_demo.mat)."""
    text = LAUNCH.read_text().replace("$SPIKELOOP_DATA/bci/chewie_demo.mat",
                                      str(data_dir / "bci" / "chewie_demo.mat"))
    path = tmp_path / "bci.toml"
    path.write_text(text)
    return path


def test_launch_file_commands_equal_offline_decoding(launch_copy, tmp_path, data_dir):
    """Fast run of the shipped launch file with a command log instead of motors: every bin's command is
    the drive mapping of the Kalman filter (fitted on Ytr) stepping through Yte from a fresh state."""
    log = tmp_path / "cmd.csv"
    spec = load_launch(launch_copy, ['loop.mode="fast"', "loop.duration_s=10.0", f'sinks.log.path="{log}"'])
    spec = dataclasses.replace(spec, sinks=[s for s in spec.sinks if s[1] == "command_log"])  # no motors here
    run = run_decoding(build_graph(spec))
    assert run.report.steps == 200 and run.report.commands == 200 and run.decoded.shape == (200, 2)
    t_us, commands = read_command_log(log)
    np.testing.assert_array_equal(t_us, 50_000 * np.arange(1, 201))
    path = data_dir / "bci" / "chewie_demo.mat"
    tr, te = load_dad(path, "tr"), load_dad(path, "te")
    decoder = KalmanDecoder().fit(tr.counts, tr.kinematics)
    decoder.reset()
    drive = VelocityToDrive(wheel_radius_m=0.033, track_m=0.16, max_wheel_radps=6.0, forward_axis=1, turn_axis=0,
                            mps_per_unit=0.01, radps_per_unit=-0.05, deadband=1.0)
    expected = np.array([drive(decoder.step(row)) for row in te.counts[:200]])
    np.testing.assert_allclose(commands, expected, rtol=1e-12, atol=1e-12)
    assert np.abs(commands).max() > 0.5                       # the wheels really move
    # the decoded kinematics the R^2 is computed from are the filter's own outputs, scored against Xte
    decoder.reset()
    offline = np.array([decoder.step(row).copy() for row in te.counts[:200]])
    np.testing.assert_allclose(run.decoded, offline, rtol=1e-12, atol=1e-12)
    truth = te.kinematics[:200]
    r2 = 1 - ((truth - offline) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(run.r2, r2, rtol=1e-12)


def test_bci_run_drives_emulated_motors(launch_copy, tmp_path, capsys):
    """``spikeloop bci run``: the same JSON keys as before it became a wrapper over the launch graph."""
    assert main(["bci", "run", str(launch_copy), "--json", "--set", 'loop.mode="fast"', "--set", "loop.duration_s=2.0",
                 "--set", f'sinks.log.path="{tmp_path / "c.csv"}"']) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"bins", "commands", "sink_errors", "decode_us", "latency_us", "r2", "wall_s"} <= set(report)
    assert report["bins"] == 40 and report["commands"] == 40 and report["sink_errors"] == 0
    assert 0 < report["latency_us"]["p50"] <= report["latency_us"]["p99"] <= report["latency_us"]["max"]
    assert 0 < report["decode_us"]["p50"] and len(report["r2"]) == 2
    assert report["sensor_latency_us"] == {}                  # fast mode: sensor time has no wall-clock meaning


def test_spikeloop_launch_runs_the_bci_file_paced(launch_copy, tmp_path):
    """The shipped file through ``spikeloop launch`` (emulated Dynamixel wheels and a command log): paced at 4x
    real time, one command per 50 ms bin, with latency from arrival and from sensor time (the bin's end on the
    paced clock)."""
    log = tmp_path / "bci.csv"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.app.cli", "launch", str(launch_copy), "--headless", "--duration", "1",
         "--set", f"sinks.log.path={json.dumps(str(log))}", "--json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "paced" and report["steps"] == report["commands"] == 20
    assert report["wall_s"] >= 1 / 4 * 0.9                    # 1 s of sensor time at speed 4
    assert 0 < report["latency_p50_ms"] <= report["sensor_latency_p50_ms"] + 1e-3
    t_us, commands = read_command_log(log)
    np.testing.assert_array_equal(t_us, 50_000 * np.arange(1, 21))
    assert commands.shape == (20, 2)


def test_launch_file_errors_name_section_and_key(launch_copy):
    with pytest.raises(LaunchError, match=r"\[output\] max_wheel_radps: expected a positive number"):
        load_launch(launch_copy, ["output.max_wheel_radps=0"])
    with pytest.raises(LaunchError, match=r"\[decoder\] colour: unknown key"):
        load_launch(launch_copy, ['decoder.colour="red"'])
    with pytest.raises(LaunchError, match=r'\[source\] type: expected one of .*"dad", "mc_maze", "audio".*got "aedat"'):
        load_launch(launch_copy, ['source.type="aedat"'])
    with pytest.raises(LaunchError, match=r"\[decoder\] model: file not found"):
        load_launch(launch_copy, ['decoder.model="missing.npz"'])
    with pytest.raises(LaunchError, match=r"\[loop\] dt_us: a bin-level decoder steps once per bin"):
        load_launch(launch_copy, ["loop.dt_us=1000"])
    with pytest.raises(LaunchError, match=r'\[decoder\] type: a spike decoder \("drive"\) needs a \[network\]'):
        load_launch(launch_copy, ['decoder.type="drive"'])
    with pytest.raises(LaunchError, match=r"\[stages.noise\]: stages filter DVS events; the dad source streams AER"):
        load_launch(launch_copy, ["stages.noise.duration_us=2000"])


def test_output_mapping_errors_are_named(launch_copy):
    text = launch_copy.read_text()
    head = text[:text.index("\n[output]") + 1]
    tail = text[text.index("\n[sinks.motors]") + 1:]
    joints = head + '[output]\ntype = "joints"\ngain = [1.0, 0.0, 0.5]\nn_joints = 2\nmax_joint_radps = 3.0\n\n' + tail
    path = launch_copy.with_name("joints.toml")
    path.write_text(joints)
    with pytest.raises(LaunchError, match=r"\[output\] gain: expected 2 x 2 values .*got 3"):
        build_graph(load_launch(path, ['loop.mode="fast"']))
    with pytest.raises(LaunchError, match=r"\[output\] forward_axis: the decoder has 2 axes"):
        build_graph(load_launch(launch_copy, ['loop.mode="fast"', "output.forward_axis=5"]))


def test_joint_output_commands_equal_offline_decoding(launch_copy, tmp_path, data_dir):
    """[output] type = "joints": three joints, gain (3 x 2) row-major, clipped at 0.3 rad/s."""
    text = launch_copy.read_text()
    log = tmp_path / "joints.csv"
    joints = (text[:text.index("\n[output]") + 1] + '[output]\ntype = "joints"\n'
              'gain = [0.02, 0.0, 0.0, 0.02, 0.01, -0.01]\nn_joints = 3\nmax_joint_radps = 0.3\n\n'
              f'[sinks.log]\ntype = "command_log"\npath = {json.dumps(str(log))}\n')
    path = tmp_path / "joints.toml"
    path.write_text(joints)
    run = run_decoding(build_graph(load_launch(path, ['loop.mode="fast"', "loop.duration_s=5.0"])))
    assert run.report.commands == 100
    path = data_dir / "bci" / "chewie_demo.mat"
    tr, te = load_dad(path, "tr"), load_dad(path, "te")
    decoder = KalmanDecoder().fit(tr.counts, tr.kinematics)
    decoder.reset()
    mapping = VelocityToJoints([[0.02, 0.0], [0.0, 0.02], [0.01, -0.01]], max_joint_radps=0.3)
    expected = np.array([mapping(decoder.step(row)) for row in te.counts[:100]])
    t_us, commands = read_command_log(log)
    np.testing.assert_allclose(commands, expected, rtol=1e-12, atol=1e-12)
    assert np.abs(commands).max() == 0.3                      # some joints hit the limit


def test_launch_units_mismatch(launch_copy, tmp_path, data_dir):
    csv = tmp_path / "trial.csv"
    shutil.copy(data_dir / "bci" / "trial_748_data.csv", csv)
    chewie = data_dir / "bci" / "chewie_demo.mat"
    spec = load_launch(launch_copy, [f'source.path="{csv}"', 'source.type="mc_maze"', 'loop.mode="fast"',
                                     f'decoder.fit_path="{chewie}"'])
    with pytest.raises(LaunchError, match=r"\[decoder\] fit_path: units mismatch: the decoder takes 71 units.*182"):
        build_graph(spec)


def test_cli_fit_replay_png(tmp_path, data_dir, capsys):
    path = data_dir / "bci" / "chewie_demo.mat"
    model, png = tmp_path / "k.npz", tmp_path / "k.png"
    assert main(["bci", "fit", str(path), "--decoder", "kalman", "--out", str(model)]) == 0
    capsys.readouterr()
    assert main(["bci", "replay", str(path), "--model", str(model), "--plot", str(png), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["bins"] == 1818 and record["late_spikes"] == 0
    # train (Ytr) -> test (Yte) Kalman from the training-mean state: the reference's ~0.43 anchor
    np.testing.assert_allclose(record["r2"], [0.426, 0.427], atol=5e-3)
    image = cv2.imread(str(png))
    assert image is not None and image.shape[1] == 1200
    orange = np.all(np.abs(image.astype(int) - [40, 110, 230]) < 40, axis=2)
    assert orange.sum() > 2000                                  # the decoded trace is drawn


def test_cli_errors(tmp_path, data_dir, capsys):
    csv = data_dir / "bci" / "trial_748_data.csv"
    model = tmp_path / "w.npz"
    assert main(["bci", "fit", str(data_dir / "bci" / "chewie_demo.mat"), "--decoder", "wiener",
                 "--out", str(model)]) == 0
    assert main(["bci", "replay", str(csv), "--model", str(model)]) != 0
    assert "units mismatch" in capsys.readouterr().err
    assert main(["bci", "eval", str(tmp_path / "none.mat"), "--decoder", "kalman"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_replay_mc_maze_stream(tmp_path, data_dir, capsys):
    """Fit on one MC_Maze trial (20 ms bins of the 1 ms CSV rows), replay the other as AER spikes."""
    model = tmp_path / "w.npz"
    assert main(["bci", "fit", str(data_dir / "bci" / "trial_748_data.csv"), "--decoder", "wiener",
                 "--ridge", "100", "--out", str(model)]) == 0
    capsys.readouterr()
    assert main(["bci", "replay", str(data_dir / "bci" / "trial_1356_data.csv"), "--model", str(model),
                 "--json", "--chunk-us", "3000"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["bins"] == 178 and record["bin_ms"] == 20.0 and record["late_spikes"] == 0
    assert np.all(np.isfinite(record["r2"]))
