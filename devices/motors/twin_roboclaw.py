"""Emulated RoboClaw (packet serial): frames commands by their known lengths, checks the CRC,
acknowledges valid writes with ``FF`` (invalid ones get no reply), answers reads with data + CRC, drops a
packet with a gap above 10 ms between bytes, and applies the serial timeout (cmd 14): no byte for
``value x 100 ms`` stops both motors. Units inside: QPPS and encoder counts;
duty d (+-32767) drives towards d / 32767 x ``no_load_qpps``.
"""
from __future__ import annotations

import struct

import numpy as np

from . import roboclaw as rc
from .physics import MotorPhysics

VERSION = b"USB Roboclaw 2x15a v4.2.8 (emulated)\n\x00"
INTER_BYTE_TIMEOUT_S = 0.010

#: data bytes (before the CRC) of each write command the twin understands
WRITE_SIZES = {rc.SET_SERIAL_TIMEOUT: 1, rc.M1_DUTY: 2, rc.M2_DUTY: 2, rc.MIXED_DUTY: 4,
               rc.M1_SPEED: 4, rc.M2_SPEED: 4, rc.MIXED_SPEED: 8}


class RoboClawDevice:
    def __init__(self, ids: list[int] | None = None, address: int = 0x80, tau_s: float = 0.05,
                 no_load_qpps: float = 20000.0) -> None:
        self.address = address
        self.no_load_qpps = no_load_qpps
        self.physics = MotorPhysics(2, tau_s)
        self.power_cycle()

    def power_cycle(self) -> None:
        self._buf = bytearray()
        self._last_byte_s: float | None = None
        self.serial_timeout_tenths = 0
        self.timeouts = 0
        self.physics.target[:] = 0.0
        self.physics.velocity[:] = 0.0
        self.physics.position[:] = 0.0

    def feed(self, data: bytes, now_s: float) -> bytes:
        self.physics.advance(now_s)
        if self._buf and self._last_byte_s is not None and now_s - self._last_byte_s > INTER_BYTE_TIMEOUT_S:
            self._buf.clear()
        self._last_byte_s = now_s
        self._buf += data
        out = bytearray()
        while len(self._buf) >= 2:
            address, cmd = self._buf[0], self._buf[1]
            if address != self.address:
                del self._buf[:1]
                continue
            if cmd in WRITE_SIZES:
                total = 2 + WRITE_SIZES[cmd] + 2
                if len(self._buf) < total:
                    break
                frame = bytes(self._buf[:total])
                del self._buf[:total]
                if rc.frame_ok(frame):
                    self._apply(cmd, frame[2:-2])
                    out.append(rc.ACK)
                continue
            del self._buf[:2]
            if cmd == rc.READ_VERSION:
                out += rc.reply(address, cmd, VERSION)
            elif cmd == rc.READ_SPEEDS:
                out += rc.reply(address, cmd, struct.pack(">ii", *np.rint(self.physics.velocity).astype(int)))
            elif cmd == rc.READ_ENCODERS:
                out += rc.reply(address, cmd, struct.pack(">ii", *np.rint(self.physics.position).astype(int)))
            else:
                self._buf.clear()  # unknown command: the real controller would wait and time out
        return bytes(out)

    def _apply(self, cmd: int, data: bytes) -> None:
        if cmd == rc.SET_SERIAL_TIMEOUT:
            self.serial_timeout_tenths = data[0]
        elif cmd == rc.MIXED_SPEED:
            self.physics.target[:] = struct.unpack(">ii", data)
        elif cmd in (rc.M1_SPEED, rc.M2_SPEED):
            self.physics.target[cmd - rc.M1_SPEED] = struct.unpack(">i", data)[0]
        elif cmd == rc.MIXED_DUTY:
            self.physics.target[:] = np.array(struct.unpack(">hh", data)) / 32767.0 * self.no_load_qpps
        elif cmd in (rc.M1_DUTY, rc.M2_DUTY):
            self.physics.target[cmd - rc.M1_DUTY] = struct.unpack(">h", data)[0] / 32767.0 * self.no_load_qpps

    def tick(self, now_s: float) -> None:
        self.physics.advance(now_s)
        if (self.serial_timeout_tenths and self._last_byte_s is not None
                and now_s - self._last_byte_s > self.serial_timeout_tenths / 10.0
                and np.any(self.physics.target != 0.0)):
            self.physics.target[:] = 0.0
            self.timeouts += 1
