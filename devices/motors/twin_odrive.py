"""Emulated ODrive (ASCII protocol): lines split on ``\\r``, ``\\n`` or ``!``, ``;`` comments, XOR
checksum verified (a bad line is ignored), replies carry a checksum when the request did. Commands:
``v`` (velocity, turns/s, feeds the watchdog), ``u`` (feed), ``f`` (pos vel), ``r``/``w`` on a small
property tree. Watchdog: with ``axisN.config.enable_watchdog`` 1 in closed loop, no feed for
``watchdog_timeout`` s sets ``axisN.error`` to WATCHDOG_TIMER_EXPIRED (0x800) and the axis goes IDLE;
an axis with an error refuses CLOSED_LOOP_CONTROL until ``w axisN.error 0``.
"""
from __future__ import annotations

from . import odrive as od
from .crc import xor_checksum
from .physics import MotorPhysics


class ODriveDevice:
    def __init__(self, ids: list[int] | None = None, vbus_voltage: float = 24.0, tau_s: float = 0.05) -> None:
        self.vbus_voltage = vbus_voltage
        self.physics = MotorPhysics(2, tau_s)
        self.power_cycle()

    def power_cycle(self) -> None:
        self.props: dict[str, float] = {"vbus_voltage": self.vbus_voltage}
        for a in (0, 1):
            self.props.update({f"axis{a}.error": 0, f"axis{a}.current_state": od.AXIS_STATE_IDLE,
                               f"axis{a}.requested_state": 0, f"axis{a}.controller.config.control_mode": 3,
                               f"axis{a}.controller.config.input_mode": 1,
                               f"axis{a}.config.watchdog_timeout": 0.0, f"axis{a}.config.enable_watchdog": 0,
                               f"axis{a}.controller.input_vel": 0.0})
        self.last_feed_s = [None, None]
        self.watchdog_trips = 0
        self._buf = bytearray()
        self.physics.target[:] = 0.0
        self.physics.velocity[:] = 0.0

    def state(self, axis: int) -> int:
        return int(self.props[f"axis{axis}.current_state"])

    def _retarget(self, axis: int) -> None:
        running = (self.state(axis) == od.AXIS_STATE_CLOSED_LOOP_CONTROL
                   and self.props[f"axis{axis}.controller.config.control_mode"] == od.CONTROL_MODE_VELOCITY)
        self.physics.target[axis] = self.props[f"axis{axis}.controller.input_vel"] if running else 0.0

    def feed(self, data: bytes, now_s: float) -> bytes:
        self.physics.advance(now_s)
        self._buf += data
        out = bytearray()
        while True:
            ends = [i for i in (self._buf.find(c) for c in (b"\r", b"\n", b"!")) if i >= 0]
            if not ends:
                break
            end = min(ends)
            raw = bytes(self._buf[:end])
            del self._buf[:end + 1]
            out += self._line(raw.split(b";")[0], now_s)
        return bytes(out)

    def _line(self, raw: bytes, now_s: float) -> bytes:
        star = raw.find(b"*")
        checksum = star >= 0
        if checksum:
            try:
                if int(raw[star + 1:]) != xor_checksum(raw[:star]):
                    return b""
            except ValueError:
                return b""
            raw = raw[:star]
        parts = raw.decode("ascii", "replace").split()
        if not parts:
            return b""

        def reply(text: str) -> bytes:
            return od.reply_line(text, checksum)

        cmd, args = parts[0], parts[1:]
        if cmd in ("v", "u", "f"):
            try:
                axis = int(args[0])
                value = float(args[1]) if cmd == "v" else 0.0
            except (IndexError, ValueError):
                return reply("invalid command format")
            if axis not in (0, 1):
                return reply(f"invalid motor {axis}")
            if cmd == "f":
                return reply(f"{self.physics.position[axis] / 6.283185307179586:.6f} "
                             f"{self.physics.velocity[axis] / 6.283185307179586:.6f}")
            self.last_feed_s[axis] = now_s
            if cmd == "v":
                self.props[f"axis{axis}.controller.input_vel"] = value * 6.283185307179586
                self._retarget(axis)
            return b""
        if cmd == "r":
            if not args:
                return reply("invalid command format")
            if args[0] not in self.props:
                return reply("invalid property")
            value = self.props[args[0]]
            return reply(f"{value:g}" if isinstance(value, float) else str(int(value)))
        if cmd == "w":
            if len(args) < 2:
                return reply("invalid command format")
            if args[0] not in self.props:
                return reply("invalid property")
            try:
                value = float(args[1])
            except ValueError:
                return reply("invalid command format")
            self._write(args[0], value, now_s)
            return b""
        return reply("unknown command")

    def _write(self, prop: str, value: float, now_s: float) -> None:
        old = self.props[prop]
        self.props[prop] = value if isinstance(old, float) else int(value)
        if prop.endswith(".requested_state"):
            axis = int(prop[4])
            if value == od.AXIS_STATE_IDLE:
                self.props[f"axis{axis}.current_state"] = od.AXIS_STATE_IDLE
            elif value == od.AXIS_STATE_CLOSED_LOOP_CONTROL and self.props[f"axis{axis}.error"] == 0:
                self.props[f"axis{axis}.current_state"] = od.AXIS_STATE_CLOSED_LOOP_CONTROL
                self.last_feed_s[axis] = now_s
            self._retarget(axis)

    def tick(self, now_s: float) -> None:
        self.physics.advance(now_s)
        for axis in (0, 1):
            a = f"axis{axis}"
            last = self.last_feed_s[axis]
            if (self.props[f"{a}.config.enable_watchdog"] and self.state(axis) == od.AXIS_STATE_CLOSED_LOOP_CONTROL
                    and last is not None and now_s - last > self.props[f"{a}.config.watchdog_timeout"]):
                self.props[f"{a}.error"] = int(self.props[f"{a}.error"]) | od.AXIS_ERROR_WATCHDOG_TIMER_EXPIRED
                self.props[f"{a}.current_state"] = od.AXIS_STATE_IDLE
                self.watchdog_trips += 1
                self._retarget(axis)
