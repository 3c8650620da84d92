"""RoboClaw, Maestro, ODrive and Firmata: worked examples, peers (basicmicro, pyfirmata2), emulated twins,
and every protocol through open_motors (command, read-back, release on close, reconnect after unplug)."""
from __future__ import annotations

import logging
import os
import random
import select
import struct
import time
import tty

import numpy as np
import pytest

from devices.motors import firmata as fm
from devices.motors import maestro as mo
from devices.motors import odrive as od
from devices.motors import open_motors, registry
from devices.motors import roboclaw as rc
from devices.motors.crc import crc7_maestro, crc16_xmodem, xor_checksum
from devices.motors.registry import start_twin
from devices.motors.twin_maestro import MaestroDevice
from devices.motors.twin_odrive import ODriveDevice

H = bytes.fromhex


def wait_until(predicate, timeout_s: float, step_s: float = 0.002) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step_s)
    return False


# -- RoboClaw ---------------------------------------------------------------------------------------
def test_roboclaw_worked_examples():
    assert crc16_xmodem(b"123456789") == 0x31C3
    assert rc.speed_single(0x80, 1, 1000) == H("80 23 00 00 03 E8 1B 33")
    assert rc.speed_m1m2(0x80, 1000, -1000) == H("80 25 00 00 03 E8 FF FF FC 18 82 90")
    assert rc.speed_m1m2(0x80, 0, 0) == H("80 25 00 00 00 00 00 00 00 00 34 04")
    assert rc.set_serial_timeout(0x80, 5) == H("80 0E 05 48 F0")
    assert rc.reply(0x80, 18, H("00 00 10 E1 01")) == H("00 00 10 E1 01 4A FC")
    assert rc.reply(0x80, 108, struct.pack(">ii", 1000, -1000)) == H("00 00 03 E8 FF FF FC 18 1F 95")


@pytest.fixture
def basicmicro_on_twin():
    basicmicro = pytest.importorskip("basicmicro")
    logging.getLogger("basicmicro").setLevel(logging.CRITICAL)
    twin = start_twin("roboclaw", [1, 2])
    host = basicmicro.Basicmicro(twin.path, 38400)
    assert host.Open()
    yield host, twin
    host.close()
    twin.close()


def test_basicmicro_commands_match_ours_and_our_twin_accepts_them(basicmicro_on_twin):
    host, twin = basicmicro_on_twin
    rng = random.Random(7)
    for _ in range(150):
        m1, m2 = rng.randrange(-(1 << 31), 1 << 31), rng.randrange(-(1 << 31), 1 << 31)
        twin.clear_received()
        assert host.SpeedM1M2(0x80, m1, m2)
        sent = twin.received()
        # basicmicro re-sends after a slow ACK (its retry loop), so the frame may appear more than once.
        assert sent and sent == rc.speed_m1m2(0x80, m1, m2) * (len(sent) // 12)
        assert list(twin.device.physics.target) == [m1, m2]
        q = rng.randrange(-(1 << 31), 1 << 31)
        twin.clear_received()
        assert host.SpeedM1(0x80, q)
        sent = twin.received()
        assert sent and sent == rc.speed_single(0x80, 1, q) * (len(sent) // 8)
    twin.clear_received()
    assert host.SetTimeout(0x80, 0.3)
    assert twin.received() == rc.set_serial_timeout(0x80, 3)
    assert twin.device.serial_timeout_tenths == 3


def test_basicmicro_parses_our_twin_replies(basicmicro_on_twin):
    host, twin = basicmicro_on_twin
    ok, version = host.ReadVersion(0x80)
    assert ok and version.startswith("USB Roboclaw")
    assert host.SpeedM1M2(0x80, 3000, -2000)
    assert wait_until(lambda: abs(twin.device.physics.velocity[0] - 3000) < 5, 2.0)
    ok, s1, s2 = host.GetSpeeds(0x80)
    # basicmicro decodes these as unsigned (a known fault): reinterpret as int32.
    s1, s2 = (struct.unpack("<i", struct.pack("<I", v))[0] for v in (s1, s2))
    assert ok and abs(s1 - 3000) < 10 and abs(s2 + 2000) < 10
    ok, e1, e2 = host.GetEncoders(0x80)
    assert ok and e1 > 0


def test_roboclaw_twin_serial_timeout_stops_motors(basicmicro_on_twin):
    host, twin = basicmicro_on_twin
    assert host.SetTimeout(0x80, 0.1)
    assert host.SpeedM1M2(0x80, 2000, 2000)
    assert wait_until(lambda: twin.device.physics.target[0] == 2000, 0.5)
    assert wait_until(lambda: twin.device.physics.target[0] == 0.0, 1.0)  # no bytes for 100 ms
    assert twin.device.timeouts == 1


def test_roboclaw_twin_ignores_a_bad_crc():
    twin = start_twin("roboclaw", [1, 2])
    try:
        bad = bytearray(rc.speed_m1m2(0x80, 500, 500))
        bad[-1] ^= 0xFF
        assert twin.device.feed(bytes(bad), 0.0) == b""  # no ACK for an invalid packet
        assert twin.device.feed(rc.speed_m1m2(0x80, 500, 500), 0.0) == b"\xff"
    finally:
        twin.close()


# -- Maestro ----------------------------------------------------------------------------------------
def test_maestro_worked_examples_and_twin():
    assert mo.set_target(0, 1500 * 4) == H("84 00 70 2E")
    assert crc7_maestro(H("83 01")) == 0x17
    dev = MaestroDevice(serial_timeout_ms=100)
    assert dev.feed(mo.set_target(2, 1750 * 4) + mo.get_position(2), 0.0) == struct.pack("<H", 7000)
    assert dev.feed(mo.get_errors(), 0.0) == b"\x00\x00"
    dev.feed(H("84 02 80 01"), 0.01)  # data byte with the MSB set: protocol error
    assert dev.feed(mo.get_errors(), 0.02) == bytes((1 << 4, 0))
    dev.tick(0.2)  # no command for more than 100 ms: serial timeout -> home (1500 us)
    assert dev.targets[2] == 6000 and dev.errors & mo.ERROR_SERIAL_TIMEOUT


def test_maestro_pololu_protocol():
    assert mo.pololu(12, mo.set_target(0, 6000)) == H("AA 0C 04 00 70 2E")
    dev = MaestroDevice(device_number=12)
    dev.feed(mo.pololu(13, mo.set_target(1, 7000)) + mo.pololu(12, mo.set_target(0, 5000)), 0.0)
    assert dev.targets[0] == 5000 and dev.targets[1] == 0  # device 13's packet is not ours
    assert dev.feed(mo.pololu(12, mo.get_position(0)), 0.0) == struct.pack("<H", 5000)
    with open_motors("maestro", "emulated:maestro", [3], full_scale_rad_s=4.0, device_number=12) as m:
        assert wait_until(lambda: m.send(np.array([2.0])) > 0 and abs(m.feedback().velocity[0] - 2.0) < 1e-3, 2.0)
        assert m.twin.device.targets[3] == 7000  # 1750 us


# -- ODrive -----------------------------------------------------------------------------------------
def test_odrive_checksums_and_lines():
    assert od.read("vbus_voltage") == b"r vbus_voltage *93\n"
    assert xor_checksum(b"v 0 1.0") == 105
    assert od.velocity(1, -0.25) == b"v 1 -0.25 *" + str(xor_checksum(b"v 1 -0.25 ")).encode() + b"\n"
    dec = od.LineDecoder()
    assert dec.feed(od.reply_line("1.5 -2", True) + b"12.0*99\r\n" + od.reply_line("24", False)) == ["1.5 -2", "24"]
    assert dec.checksum_errors == 1


def test_odrive_twin_watchdog_and_checksum():
    dev = ODriveDevice()
    assert dev.feed(b"r vbus_voltage *94\n", 0.0) == b""  # wrong checksum: silently ignored
    assert dev.feed(od.read("vbus_voltage"), 0.0) == od.reply_line("24", True)
    setup = [od.write("axis0.controller.config.control_mode", 2), od.write("axis0.config.watchdog_timeout", 0.1),
             od.write("axis0.config.enable_watchdog", 1), od.write("axis0.requested_state", 8), od.velocity(0, 1.0)]
    assert dev.feed(b"".join(setup), 0.0) == b""
    assert dev.state(0) == od.AXIS_STATE_CLOSED_LOOP_CONTROL and dev.physics.target[0] > 6.0
    dev.tick(0.05)
    assert dev.state(0) == 8
    dev.tick(0.2)
    assert dev.state(0) == od.AXIS_STATE_IDLE and dev.props["axis0.error"] == od.AXIS_ERROR_WATCHDOG_TIMER_EXPIRED
    dev.feed(od.write("axis0.requested_state", 8), 0.3)
    assert dev.state(0) == od.AXIS_STATE_IDLE  # refused until the error is cleared
    dev.feed(od.write("axis0.error", 0) + od.write("axis0.requested_state", 8), 0.3)
    assert dev.state(0) == 8
    assert dev.feed(b"x 0\n", 0.3) == od.reply_line("unknown command", False)


def test_odrive_driver_reinitialises_an_axis_that_left_closed_loop():
    with open_motors("odrive", "emulated:odrive", [0, 1]) as m:
        dev = m.twin.device
        dev.props["axis1.error"] = od.AXIS_ERROR_WATCHDOG_TIMER_EXPIRED
        dev.props["axis1.current_state"] = od.AXIS_STATE_IDLE
        assert wait_until(lambda: m.counters["reinitialisations"] >= 1 and m.connected and dev.state(1) == 8, 3.0)
        assert dev.props["axis1.config.enable_watchdog"] == 1


# -- Firmata ----------------------------------------------------------------------------------------
@pytest.fixture
def pyfirmata_on_pty(monkeypatch):
    pyfirmata2 = pytest.importorskip("pyfirmata2")
    monkeypatch.setattr(pyfirmata2.pyfirmata2, "BOARD_SETUP_WAIT_TIME", 0)
    master, slave = os.openpty()
    tty.setraw(master)
    board = pyfirmata2.Board(os.ttyname(slave), layout=pyfirmata2.BOARDS["arduino"])

    def drain(n: int | None = None) -> bytes:
        """``n`` bytes (waiting up to 1 s for them), or whatever arrives within 20 ms."""
        out = b""
        while n is None or len(out) < n:
            if not select.select([master], [], [], 1.0 if n else 0.02)[0]:
                break
            out += os.read(master, 4096 if n is None else n - len(out))
        return out

    drain()
    yield board, drain
    board.exit()
    os.close(master)
    os.close(slave)


def test_firmata_bytes_match_pyfirmata2(pyfirmata_on_pty):
    board, drain = pyfirmata_on_pty
    pwm = board.get_pin("d:3:p")
    assert drain() == fm.set_pin_mode(3, fm.PWM) == H("F4 03 03")
    pwm.write(0.5)
    assert drain() == fm.analog_write(3, 128) == H("E3 00 01")
    servo = board.get_pin("d:9:s")
    assert drain() == fm.servo_config(9, 544, 2400) + fm.analog_write(9, 0) == H("F0 70 09 20 04 60 12 F7 E9 00 00")
    servo.write(90)
    assert drain() == fm.analog_write(9, 90) == H("E9 5A 00")
    rng = random.Random(3)
    for _ in range(200):
        duty = rng.random()
        pwm.write(duty)
        assert drain(3) == fm.analog_write(3, int(round(duty * 255)))
        angle = rng.randrange(0, 181)
        servo.write(float(angle))  # pyfirmata2 skips a write when `value is` the previous object
        assert drain(3) == fm.analog_write(9, angle)
    assert drain() == b""


def test_firmata_twin_parses_pyfirmata2_bytes(pyfirmata_on_pty):
    from devices.motors.twin_firmata import FirmataBoard

    board, drain = pyfirmata_on_pty
    twin = FirmataBoard([9])
    board.get_pin("d:9:s").write(135)
    board.get_pin("d:5:p").write(0.2)
    twin.feed(drain(), 0.0)
    assert twin.modes[9] == fm.SERVO and twin.values[9] == 135 and twin.servo_range[9] == (544, 2400)
    assert twin.modes[5] == fm.PWM and twin.values[5] == 51
    reply = twin.feed(fm.pin_state_query(9) + fm.report_firmware(), 0.0)
    frames = fm.SysexDecoder().feed(reply)
    assert frames[0] == (fm.PIN_STATE_RESPONSE, bytes((9, fm.SERVO)) + fm.seven_bit(135))
    assert frames[1][0] == fm.REPORT_FIRMWARE and frames[1][1][:2] == b"\x02\x05"


# -- every protocol through open_motors -------------------------------------------------------------
CASES = {
    "dynamixel": dict(ids=[1, 2], opts={}),
    "roboclaw": dict(ids=[1, 2], opts=dict(counts_per_rev=2048)),
    "maestro": dict(ids=[0, 5], opts=dict(full_scale_rad_s=6.0)),
    "odrive": dict(ids=[0, 1], opts={}),
    "firmata": dict(ids=[9, 10], opts=dict(full_scale_rad_s=6.0)),
}


@pytest.mark.parametrize("protocol", ["firmata", "maestro", "roboclaw"])
def test_a_required_driver_option_left_out_is_refused_before_anything_opens(protocol, monkeypatch):
    """full_scale_rad_s / counts_per_rev: no default in the driver's signature, so the same fact makes
    ``spikeloop list`` and ``motor --help`` say "required" and open_motors refuse (one line)."""
    monkeypatch.setattr(registry, "start_twin", lambda *a, **k: pytest.fail("a twin started"))
    monkeypatch.setattr(registry, "SerialLink", lambda *a, **k: pytest.fail("a port opened"))
    (option,) = CASES[protocol]["opts"]
    with pytest.raises(ValueError, match=rf"^{protocol}: driver option {option} is required: \S"):
        open_motors(protocol, f"emulated:{protocol}", CASES[protocol]["ids"])
    with pytest.raises(ValueError, match=rf"^{protocol}: unknown driver option speed \(expected one of: {option}, "):
        open_motors(protocol, f"emulated:{protocol}", CASES[protocol]["ids"], speed=1, **CASES[protocol]["opts"])


def released(protocol: str, dev) -> bool:
    """The twin's motors are stopped and their drive is disabled."""
    if protocol == "dynamixel":
        return not dev.torque_on(0) and not dev.torque_on(1) and np.all(dev.physics.target == 0)
    if protocol == "roboclaw":
        return np.all(dev.physics.target == 0)
    if protocol == "maestro":
        return dev.targets[0] == 0 and dev.targets[5] == 0
    if protocol == "odrive":
        return dev.state(0) == od.AXIS_STATE_IDLE and dev.state(1) == od.AXIS_STATE_IDLE
    return dev.modes[9] == fm.OUTPUT and dev.values[9] == 0 and np.all(dev.physics.target == 0)


@pytest.mark.parametrize("protocol", sorted(CASES))
def test_open_motors_on_each_emulated_protocol(protocol):
    case = CASES[protocol]
    command = np.array([1.5, -1.0])
    m = open_motors(protocol, f"emulated:{protocol}", case["ids"], backoff_s=(0.02, 0.1), **case["opts"])
    twin = m.twin
    try:
        def fed_back() -> bool:
            m.send(command)
            fb = m.feedback()
            return bool(np.all(fb.age_s < 0.2) and np.allclose(fb.velocity, command, atol=0.06))

        assert wait_until(fed_back, 3.0), m.feedback()
        assert m.counters["errors"] == 0 and m.counters["crc_errors"] == 0
        twin.unplug()
        assert wait_until(lambda: not m.connected, 2.0)
        twin.replug(power_cycle=True)
        assert wait_until(lambda: m.connected, 3.0)
        assert m.counters["reconnects"] == 1
        assert wait_until(fed_back, 3.0), m.feedback()
    finally:
        m.close()
    assert released(protocol, twin.device)


class _Chatty:
    """A device that answers every byte with 64 KiB: far more than a pty's input queue holds."""

    def feed(self, data: bytes, now_s: float) -> bytes:
        return b"\x55" * 65536 * len(data)

    def tick(self, now_s: float) -> None:
        pass

    def power_cycle(self) -> None:
        pass


def test_a_twin_whose_host_stops_reading_still_closes():
    """The serving thread answers under the twin's lock: a reply the host's full queue cannot take must not
    block it (before, every later call that takes the lock, close() included, hung)."""
    import threading

    from devices.motors.twin import PtyTwin

    twin = PtyTwin(_Chatty(), name="chatty")
    host = os.open(twin.path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(host)
    outcome = {}

    def scenario():
        os.write(host, b"ab")  # the replies overflow the host's queue; the host never reads them
        deadline = time.monotonic() + 10
        while len(twin.received()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.write(host, b"c")
        os.close(host)
        twin.close()
        outcome["received"] = twin.received()

    worker = threading.Thread(target=scenario, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the twin hung writing replies nobody reads"
    assert outcome["received"] == b"abc"


@pytest.mark.parametrize("protocol, ids, options, needle", [
    ("odrive", [0], {"state_check_every": 0}, "odrive: state_check_every must be >= 1, got 0"),   # was modulo by zero
    ("odrive", [0], {"max_turns_s": -1.0}, "odrive: max_turns_s must be > 0, got -1.0"),
    ("dynamixel", [1], {"watchdog_check_every": 0}, "dynamixel: watchdog_check_every must be >= 1, got 0"),
    ("roboclaw", [1], {"counts_per_rev": 2048, "max_qpps": 0}, "roboclaw: max_qpps must be >= 1, got 0"),
])
def test_driver_counts_and_limits_out_of_range_are_refused(protocol, ids, options, needle):
    """Read-back periods of 0 (ZeroDivisionError in poll, or a reconnect loop) and device speed limits <= 0
    (a motor that cannot move, or a negative limit) were accepted by ``spikeloop motor --opt``."""
    with pytest.raises(ValueError, match=needle):
        registry.driver_class(protocol)(ids, **options)
