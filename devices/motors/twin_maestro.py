"""Emulated Pololu Maestro (compact protocol, and the Pololu protocol ``AA device command&7F ...`` for
``device_number``; packets for other device numbers are skipped): Set Target / Speed / Acceleration, Get Position, Get
Moving State, Get Errors, Go Home. A data byte with the MSB set, or a new command inside a packet,
raises the protocol error bit (4). With ``serial_timeout_ms`` > 0 (a device setting on the real
Maestro), no valid command in that time raises error bit 5 and sends every channel to its home
(``home_us``, default 1500 us = stop for ESCs; 0 = pulses off). Physics: velocity follows
``(pulse_us - neutral_us) / range_us`` (fraction of full scale; 0 while pulses are off).
"""
from __future__ import annotations

import numpy as np

from . import maestro as mo
from .physics import MotorPhysics

#: data bytes after each command byte
DATA_SIZES = {mo.SET_TARGET: 3, mo.SET_SPEED: 3, mo.SET_ACCELERATION: 3, mo.GET_POSITION: 1,
              mo.GET_MOVING_STATE: 0, mo.GET_ERRORS: 0, mo.GO_HOME: 0}


class MaestroDevice:
    def __init__(self, ids: list[int] | None = None, channels: int = 24, serial_timeout_ms: float = 0.0,
                 home_us: float = 1500.0, neutral_us: float = 1500.0, range_us: float = 500.0,
                 device_number: int | None = None, tau_s: float = 0.05) -> None:
        self.channels = channels
        self.device_number = mo.DEFAULT_DEVICE_NUMBER if device_number is None else device_number
        self.serial_timeout_s = serial_timeout_ms / 1000.0
        self.home_q = int(home_us * 4)
        self.neutral_us, self.range_us = neutral_us, range_us
        self.physics = MotorPhysics(channels, tau_s)
        self.power_cycle()

    def power_cycle(self) -> None:
        self.targets = np.zeros(self.channels, dtype=np.int64)
        self.errors = 0
        self._buf = bytearray()
        self._last_command_s: float | None = None
        self.physics.target[:] = 0.0
        self.physics.velocity[:] = 0.0

    def _retarget(self) -> None:
        on = self.targets > 0
        self.physics.target[:] = np.where(on, (self.targets / 4.0 - self.neutral_us) / self.range_us, 0.0)

    def feed(self, data: bytes, now_s: float) -> bytes:
        self.physics.advance(now_s)
        out = bytearray()
        self._buf += data
        while self._buf:
            pololu = self._buf[0] == mo.POLOLU_START
            head = 3 if pololu else 1  # AA device command | command
            if len(self._buf) < head:
                break
            cmd = (self._buf[2] | 0x80) if pololu else self._buf[0]
            size = DATA_SIZES.get(cmd)
            if size is None or (pololu and (self._buf[1] | self._buf[2]) & 0x80):
                self.errors |= 1 << 4
                del self._buf[:1]
                continue
            bad = next((i for i in range(head, min(len(self._buf), head + size))
                        if self._buf[i] & 0x80), None)
            if bad is not None:
                self.errors |= 1 << 4
                del self._buf[:bad]
                continue
            if len(self._buf) < head + size:
                break
            args = bytes(self._buf[head:head + size])
            ours = not pololu or self._buf[1] == self.device_number
            del self._buf[:head + size]
            if ours:
                self._last_command_s = now_s
                out += self._execute(cmd, args)
        return bytes(out)

    def _execute(self, cmd: int, args: bytes) -> bytes:
        if cmd == mo.SET_TARGET:
            if args[0] < self.channels:
                self.targets[args[0]] = args[1] | (args[2] << 7)
                self._retarget()
        elif cmd == mo.GET_POSITION:
            value = int(self.targets[args[0]]) if args[0] < self.channels else 0
            return bytes((value & 0xFF, value >> 8))
        elif cmd == mo.GET_MOVING_STATE:
            return b"\x00"
        elif cmd == mo.GET_ERRORS:
            value, self.errors = self.errors, 0
            return bytes((value & 0xFF, value >> 8))
        elif cmd == mo.GO_HOME:
            self._go_home()
        return b""

    def _go_home(self) -> None:
        self.targets[:] = self.home_q
        self._retarget()

    def tick(self, now_s: float) -> None:
        self.physics.advance(now_s)
        if (self.serial_timeout_s and self._last_command_s is not None
                and now_s - self._last_command_s > self.serial_timeout_s
                and not self.errors & mo.ERROR_SERIAL_TIMEOUT):
            self.errors |= mo.ERROR_SERIAL_TIMEOUT
            self._go_home()
