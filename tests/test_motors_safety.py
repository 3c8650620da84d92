"""Safety layer and fault handling, on the real driver path against the emulated Dynamixel bus.

Timing limits here are functional deadlines with generous slack (the machine is shared), not benchmarks.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from devices.motors import MotorError, StopOnSignal, open_motors
from devices.motors import dynamixel as dxl
from devices.motors.registry import start_twin
from devices.motors.safety import STOPPED


def wait_until(predicate, timeout_s: float, step_s: float = 0.002) -> float | None:
    """Seconds until ``predicate()`` held, or None if it never did within ``timeout_s``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(step_s)
    return None


@pytest.fixture
def twin():
    twin = start_twin("dynamixel", [1, 2])
    yield twin
    twin.close()


def goal_raw(twin, k: int) -> int:
    return int.from_bytes(twin.device.tables[k][104:108], "little", signed=True)


def commands_received(twin) -> list[dxl.Packet]:
    return dxl.PacketDecoder().feed(twin.received())


def test_send_moves_the_emulated_servos_and_feedback_follows(twin):
    with open_motors("dynamixel", twin.path, [1, 2]) as m:
        def converged() -> bool:
            m.send(np.array([1.5, -1.5]))
            return bool(np.allclose(m.feedback().velocity, [1.5, -1.5], atol=0.05))

        assert wait_until(converged, 3.0) is not None
        fb = m.feedback()
        assert fb.position[0] > 0 > fb.position[1]
        assert np.all(fb.age_s < 0.5)
        assert m.counters["commands_sent"] > 0 and m.counters["errors"] == 0
        assert twin.device.tables[0][dxl.BUS_WATCHDOG[0]] == 5  # armed: 5 x 20 ms
    assert not twin.device.torque_on(0) and not twin.device.torque_on(1)
    assert goal_raw(twin, 0) == 0


def test_command_watchdog_zeroes_a_stale_command(twin):
    with open_motors("dynamixel", twin.path, [1, 2], timeout_ms=100) as m:
        m.send(np.array([2.0, 2.0]))
        assert wait_until(lambda: goal_raw(twin, 0) != 0, 1.0) is not None
        stale = wait_until(lambda: goal_raw(twin, 0) == 0, 1.0)
        assert stale is not None and stale < 0.5  # 100 ms timeout + 20 ms re-send period, loaded machine
        assert m.counters["watchdog_stops"] == 1
        assert twin.device.torque_on(0)  # a watchdog stop keeps the drive enabled


def test_velocity_acceleration_and_nonfinite_limits(twin):
    with open_motors("dynamixel", twin.path, [1, 2], max_velocity=3.0, max_accel=10.0) as m:
        device_limit = 265  # the twin's Velocity Limit (44), 0.229 rpm units
        assert np.allclose(m.velocity_limit, [3.0, 3.0])
        start = time.perf_counter()
        m.send(np.array([0.0, 0.0]))
        time.sleep(0.05)
        m.send(np.array([100.0, np.nan]))  # >= 50 ms later: at most 10 rad/s^2 times the time between the sends
        most = 10.0 * (time.perf_counter() - start)  # (the sleep overruns on a loaded machine)
        assert wait_until(lambda: goal_raw(twin, 0) != 0, 60.0) is not None  # the twin has read the command
        assert 0 < goal_raw(twin, 0) * dxl.VELOCITY_UNIT_RAD_S <= most + dxl.VELOCITY_UNIT_RAD_S
        assert goal_raw(twin, 1) == 0
        for _ in range(60):
            m.send(np.array([100.0, -100.0]))
            time.sleep(0.01)
        assert wait_until(lambda: goal_raw(twin, 0) == round(3.0 / dxl.VELOCITY_UNIT_RAD_S), 60.0) is not None
        assert round(3.0 / dxl.VELOCITY_UNIT_RAD_S) < device_limit
        assert m.counters["nonfinite"] == 1 and m.counters["limited"] > 0
    with open_motors("dynamixel", twin.path, [1, 2]) as m:
        assert np.allclose(m.velocity_limit, 265 * dxl.VELOCITY_UNIT_RAD_S)  # device Velocity Limit (44)
        with pytest.raises(ValueError, match="expects 2 velocities"):
            m.send(np.array([1.0]))


def test_estop_is_latched_until_reset(twin):
    # A long command timeout: the host watchdog must not zero the goal before this loaded test sees it.
    with open_motors("dynamixel", twin.path, [1, 2], timeout_ms=5000) as m:
        m.send(np.array([1.0, 1.0]))
        assert wait_until(lambda: goal_raw(twin, 0) != 0, 1.0) is not None
        m.estop()
        assert wait_until(lambda: not twin.device.torque_on(0) and not twin.device.torque_on(1), 0.5) is not None
        assert goal_raw(twin, 0) == 0
        assert m.send(np.array([1.0, 1.0])) == 0 and m.counters["refused"] == 1
        m.reset_estop()
        assert wait_until(lambda: twin.device.torque_on(0) and m.connected, 1.0) is not None
        assert wait_until(lambda: m.send(np.array([0.5, 0.5])) > 0, 1.0) is not None
        assert wait_until(lambda: goal_raw(twin, 0) == round(0.5 / dxl.VELOCITY_UNIT_RAD_S), 1.0) is not None


def test_stop_on_signal_estops_then_flags(twin):
    with open_motors("dynamixel", twin.path, [1, 2]) as m:
        m.send(np.array([1.0, -1.0]))
        stopper = StopOnSignal([m])
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            assert wait_until(lambda: stopper.requested, 1.0) is not None and stopper.signum == signal.SIGTERM
        finally:
            stopper.restore()
        assert m.estopped
        assert wait_until(lambda: not twin.device.torque_on(0), 0.5) is not None


def test_unplug_stops_the_servo_and_the_driver_reconnects(twin):
    with open_motors("dynamixel", twin.path, [1, 2], backoff_s=(0.02, 0.1), timeout_ms=5000) as m:
        def moving() -> bool:  # keep commanding until the twin has applied a goal (a loaded machine is slow)
            m.send(np.array([2.0, 2.0]))
            return goal_raw(twin, 0) != 0

        assert wait_until(moving, 2.0) is not None
        twin.unplug()
        # The servo's Bus Watchdog (100 ms) stops it; the host sees the loss on its next read or write.
        stopped = wait_until(lambda: twin.device.physics.target[0] == 0.0, 1.0)
        assert stopped is not None and stopped < 0.5  # Bus Watchdog 5 x 20 ms, loaded machine
        assert twin.device.watchdog_tripped(0)
        assert wait_until(lambda: not m.connected, 1.0) is not None
        assert m.send(np.array([2.0, 2.0])) == 0
        assert m.counters["errors"] >= 1 and m.counters["dropped"] >= 1
        twin.replug()  # same device, watchdog still tripped: re-initialisation must clear and re-arm it
        assert wait_until(lambda: m.connected, 2.0) is not None
        assert m.counters["reconnects"] == 1
        assert twin.device.tables[0][dxl.BUS_WATCHDOG[0]] == 5 and twin.device.torque_on(0)
        assert goal_raw(twin, 0) == 0  # no motion until a fresh command
        assert wait_until(lambda: m.send(np.array([1.0, 1.0])) > 0 and goal_raw(twin, 0) > 0, 1.0) is not None


def test_watchdog_trip_seen_in_read_back_is_re_armed(twin):
    with open_motors("dynamixel", twin.path, [1, 2]) as m:
        twin.device.tables[1][dxl.BUS_WATCHDOG[0]] = 0xFF  # as if the host had stalled
        assert wait_until(lambda: m.counters["reinitialisations"] >= 1, 2.0) is not None
        assert wait_until(lambda: twin.device.tables[1][dxl.BUS_WATCHDOG[0]] == 5 and m.connected, 1.0) is not None


def test_missing_servo_is_named(twin):
    with pytest.raises(MotorError, match="no reply from id 3"):
        open_motors("dynamixel", twin.path, [1, 3])


def test_missing_port_is_named(tmp_path):
    with pytest.raises(MotorError, match="cannot open serial port .*ttyNONE"):
        open_motors("dynamixel", str(tmp_path / "ttyNONE"), [1])


# -- the CLI in a subprocess -----------------------------------------------------------------------
#: Upper bound (s) on `spikeloop motor` starting and reaching its velocity on a loaded machine.
STARTUP_S = 120.0


def spawn_motor_tool(port: str, duration: float = 600.0) -> subprocess.Popen:
    """`spikeloop motor` on ``port`` (the tests end it with a signal long before ``duration`` s)."""
    return subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-m", "pipeline.app.cli", "motor", "--protocol", "dynamixel",
         "--port", port, "--ids", "1,2", "--velocity", "1.5,-1.5", "--duration", str(duration)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout_s: float = 120.0) -> tuple[str, str]:
    """Wait for the tool to exit; if it hangs, make faulthandler dump its threads into the failure."""
    try:
        return proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate()
        pytest.fail(f"spikeloop motor did not exit within {timeout_s} s; its threads:\n{err}")


def test_sigterm_to_the_motor_tool_leaves_a_stop_as_the_last_bytes(twin):
    proc = spawn_motor_tool(twin.path)
    try:
        # the tool's start (imports, numba cache) takes seconds on a loaded machine
        assert wait_until(lambda: abs(twin.device.velocity_rad_s(1) - 1.5) < 0.05, STARTUP_S) is not None
        proc.send_signal(signal.SIGTERM)
        out, err = finish(proc)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    packets = [p for p in commands_received(twin) if p.instruction in (dxl.SYNC_WRITE, dxl.WRITE)]
    last_velocity = [p for p in packets if p.params[:2] == b"\x68\x00"][-1]
    assert last_velocity.params[4:] == bytes([1, 0, 0, 0, 0, 2, 0, 0, 0, 0])
    assert packets[-1].instruction == dxl.SYNC_WRITE and packets[-1].params == bytes([64, 0, 1, 0, 1, 0, 2, 0])
    assert not twin.device.torque_on(0) and not twin.device.torque_on(1)


def test_stalled_host_is_stopped_by_the_device_watchdog(twin):
    proc = spawn_motor_tool(twin.path)
    try:
        # the tool's start (imports, numba cache) takes seconds on a loaded machine
        assert wait_until(lambda: abs(twin.device.velocity_rad_s(1) - 1.5) < 0.05, STARTUP_S) is not None
        proc.send_signal(signal.SIGSTOP)
        stopped = wait_until(lambda: twin.device.physics.target[0] == 0.0, 2.0)
        assert stopped is not None and stopped < 0.6  # Bus Watchdog 5 x 20 ms, loaded machine
        assert twin.device.watchdog_trips >= 1
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        finish(proc)
    finally:
        proc.kill()
    assert proc.returncode == 0


def test_motor_tool_on_an_emulated_port_prints_read_back(capsys):
    from pipeline.app.cli import main

    assert main(["motor", "--protocol", "dynamixel", "--port", "emulated:dynamixel", "--ids", "1,2",
                 "--velocity", "1.5,-1.5", "--duration", "0.4"]) == 0
    out = capsys.readouterr().out
    last = [line for line in out.splitlines() if line.startswith("t=")][-2:]
    assert "id=1 velocity=+1.5" in last[0] and "id=2 velocity=-1.5" in last[1]


def test_motor_tool_errors(capsys, twin):
    from pipeline.app.cli import main

    assert main(["motor", "--protocol", "dynamixel", "--port", twin.path, "--ids", "1,5",
                 "--velocity", "1,1", "--duration", "0"]) == 1
    assert "no reply from id 5" in capsys.readouterr().err
    assert main(["motor", "--protocol", "dynamixel", "--port", twin.path, "--ids", "1,2",
                 "--velocity", "1", "--duration", "0"]) == 2
    assert "--velocity has 1 values for 2 ids" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["motor", "--protocol", "dynamixel", "--port", twin.path, "--ids", "1,,2", "--velocity", "1,1"])
    assert "expected comma-separated integers" in capsys.readouterr().err


# -- the limiter on its own (a recording stand-in for the serial link) -------------------------------
class RecordingLink:
    up = True
    on_up = None

    def __init__(self) -> None:
        self.commands: list[bytes] = []

    def write_command(self, data: bytes) -> int:
        self.commands.append(data)
        return 1

    def write_urgent(self, data: bytes) -> None:
        self.commands.append(data)

    def close(self, final: bytes = b"") -> bool:
        self.commands.append(final)
        return True


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st

from devices.motors.driver_dynamixel import DynamixelDriver  # noqa: E402
from devices.motors.safety import SafeMotors  # noqa: E402

velocities = st.floats(allow_nan=True, allow_infinity=True, width=32)


@settings(deadline=None, max_examples=60)
@given(st.lists(st.tuples(velocities, velocities), min_size=1, max_size=30),
       st.floats(0.5, 10.0), st.floats(1.0, 100.0))
def test_limiter_keeps_velocity_and_slew_within_limits(targets, vmax, amax):
    link = RecordingLink()
    m = SafeMotors(DynamixelDriver([1, 2]), link, max_velocity=vmax, max_accel=amax, timeout_ms=200)
    try:
        previous, previous_ns = np.zeros(2), m._command_ns
        for target in targets:
            m.send(np.array(target))
            now_ns = m._command_ns
            (pkt,) = dxl.PacketDecoder().feed(link.commands[-1])
            # SYNC_WRITE params: address(2) length(2) {id(1) goal velocity int32}...
            raw = np.array([int.from_bytes(pkt.params[5:9], "little", signed=True),
                            int.from_bytes(pkt.params[10:14], "little", signed=True)])
            sent = raw * dxl.VELOCITY_UNIT_RAD_S
            assert np.all(np.abs(sent) <= vmax + dxl.VELOCITY_UNIT_RAD_S / 2 + 1e-9)
            step = amax * min(now_ns - previous_ns, 200_000_000) / 1e9  # dt capped at timeout_ms
            assert np.all(np.abs(sent - previous) <= step + dxl.VELOCITY_UNIT_RAD_S + 1e-9)
            previous, previous_ns = sent, now_ns
    finally:
        m.close()


def test_status_return_level_1_servos_are_driven_without_write_acknowledgements(twin):
    for table in twin.device.tables:
        table[68] = 1
    original = twin.device._handle

    def quiet_writes(pkt, now_s):
        reply = original(pkt, now_s)
        return b"" if pkt.instruction == dxl.WRITE else reply  # level 1: no status for WRITE

    twin.device._handle = quiet_writes
    with open_motors("dynamixel", twin.path, [1, 2]) as m:
        # Unacknowledged writes: the servos apply them as the bytes arrive.
        assert wait_until(lambda: twin.device.torque_on(1) and twin.device.tables[1][dxl.OPERATING_MODE[0]] == 1,
                          1.0) is not None
        assert wait_until(lambda: m.send(np.array([1.0, 1.0])) > 0 and goal_raw(twin, 1) > 0, 1.0) is not None


def test_estop_from_a_handler_interrupting_a_write_still_ends_with_the_stop(twin):
    """A signal handler can run in the middle of send() (same thread, link lock held). The e-stop
    bytes must still be the last on the wire, after the interrupted command."""
    with open_motors("dynamixel", twin.path, [1, 2], feedback_hz=0) as m:
        time.sleep(0.01)
        twin.clear_received()
        m.driver.on_command_written = m.estop  # "the handler fires" just before the command's os.write
        m.send(np.array([2.0, 2.0]))
        assert wait_until(lambda: not twin.device.torque_on(0), 1.0) is not None
        time.sleep(0.05)
        packets = commands_received(twin)
        velocity = [p for p in packets if p.params[:2] == b"\x68\x00"]
        assert velocity[0].params[5:9] != b"\x00\x00\x00\x00"  # the interrupted command went out first
        assert velocity[-1].params[4:] == bytes([1, 0, 0, 0, 0, 2, 0, 0, 0, 0])
        assert packets[-1].params == bytes([64, 0, 1, 0, 1, 0, 2, 0])  # torque off last
        assert goal_raw(twin, 0) == 0


def test_an_exception_in_the_controlling_code_stops_and_releases(twin):
    with pytest.raises(RuntimeError, match="planner crashed"):
        with open_motors("dynamixel", twin.path, [1, 2], timeout_ms=5000) as m:
            assert wait_until(lambda: m.send(np.array([1.0, 1.0])) > 0 and goal_raw(twin, 0) > 0, 1.0) is not None
            raise RuntimeError("planner crashed")
    assert goal_raw(twin, 0) == 0 and not twin.device.torque_on(0) and not twin.device.torque_on(1)


# -- what close() and the controller say they did (issue 14) ---------------------------------------
def test_garbled_replies_take_the_link_down_yet_close_still_releases_the_drive(twin):
    """Replies with bad CRCs make the re-initialisation fail, so the link is down (between reconnect
    attempts) at close: the port is reopened for zero velocity + torque off, and ``shutdown`` says so."""
    with open_motors("dynamixel", twin.path, [1, 2], timeout_ms=5000, backoff_s=(0.05, 0.2)) as m:
        assert wait_until(lambda: m.send(np.array([1.0, 1.0])) > 0 and goal_raw(twin, 0) > 0, 1.0) is not None
        feed = twin.device.feed
        def garbled(data: bytes, now: float) -> bytes:  # the last CRC byte of every reply flipped
            reply = feed(data, now)
            return reply[:-1] + bytes([reply[-1] ^ 0xFF]) if reply else reply

        twin.device.feed = garbled
        m.link.request_reinitialise()  # as after a watchdog trip: its PING gets no valid reply
        assert wait_until(lambda: not m.connected and m.counters["errors"] >= 1, 3.0) is not None
        assert twin.device.torque_on(0) and m.counters["crc_errors"] > 0
    assert m.shutdown == STOPPED
    assert not twin.device.torque_on(0) and not twin.device.torque_on(1) and goal_raw(twin, 0) == 0


def test_close_after_the_port_is_gone_says_nothing_was_written(twin):
    m = open_motors("dynamixel", twin.path, [1, 2], timeout_ms=5000, backoff_s=(0.05, 0.2))
    assert wait_until(lambda: m.send(np.array([1.0, 1.0])) > 0, 1.0) is not None
    twin.unplug()
    assert wait_until(lambda: not m.connected, 2.0) is not None
    m.close()
    assert m.shutdown.startswith("zero velocity and torque off NOT written (cannot reopen")
    assert twin.device.torque_on(0)  # the host could not reach it: only the device's watchdog stops it


ROBOT = Path(__file__).resolve().parent.parent / "launch" / "robot_controller.toml"


@pytest.mark.parametrize("where", ["pipeline.app.cli:build_parser", "pipeline.app.launch:load_launch"])
def test_sigterm_while_the_controller_starts_exits_0_with_nothing_opened(twin, where):
    """SIGTERM before the launch command's own handler existed killed the controller (status -15). The
    signal is raised from inside the named function: while the CLI imports its commands, or while the
    launch file loads (then nothing may open)."""
    module, function = where.split(":")
    code = (
        "import os, signal, sys, importlib\n"
        f"module = importlib.import_module({module!r})\n"
        f"real = module.{function}\n"
        "def patched(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return real(*args, **kwargs)\n"
        f"module.{function} = patched\n"
        "from pipeline.app.cli import main\n"
        f"sys.exit(main(['launch', {str(ROBOT)!r}, '--headless', '--set', "
        f"'sinks.motors.port=\"{twin.path}\"']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=ROBOT.parent.parent)
    assert proc.returncode == 0, proc.stderr
    assert twin.received() == b""  # no port was opened
