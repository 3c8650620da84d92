"""Emulated Arduino running StandardFirmata (the parts used for motor outputs).

Parses the MIDI-like stream (a data byte >= 0x80 aborts the message in progress): SET_PIN_MODE,
SET_DIGITAL_PIN_VALUE, ANALOG_MESSAGE, DIGITAL_MESSAGE, REPORT_ANALOG/DIGITAL, REPORT_VERSION,
SYSTEM_RESET, and sysex EXTENDED_ANALOG, SERVO_CONFIG, REPORT_FIRMWARE, PIN_STATE_QUERY. Like the real
firmware it has no host timeout. Physics for the motor pins ``ids``: a SERVO-mode pin drives towards
``(angle - 90) / 90``, a PWM pin towards ``duty / 255`` (negated while its ``dir_pins`` entry is high),
in fractions of full scale.
"""
from __future__ import annotations

import numpy as np

from . import firmata as fm
from .physics import MotorPhysics

FIRMWARE_NAME = "StandardFirmata.ino"
FIRMWARE_VERSION = (2, 5)
N_PINS = 20

#: data bytes after each non-sysex command (low nibble = pin/port for the 0x80-0xEF range)
_DATA_SIZES = {fm.ANALOG_MESSAGE: 2, fm.DIGITAL_MESSAGE: 2, fm.REPORT_ANALOG: 1, fm.REPORT_DIGITAL: 1,
               fm.SET_PIN_MODE: 2, fm.SET_DIGITAL_PIN_VALUE: 2, fm.REPORT_VERSION: 0, fm.SYSTEM_RESET: 0}


class FirmataBoard:
    def __init__(self, ids: list[int], dir_pins: list[int] | None = None, tau_s: float = 0.05) -> None:
        self.motor_pins = list(ids)
        self.dir_pins = list(dir_pins) if dir_pins is not None else None
        self.physics = MotorPhysics(len(ids), tau_s)
        self.power_cycle()

    def power_cycle(self) -> None:
        self.modes = np.full(N_PINS, fm.OUTPUT, dtype=np.int64)
        self.values = np.zeros(N_PINS, dtype=np.int64)
        self.servo_range = {}
        self._buf = bytearray()
        self.physics.target[:] = 0.0
        self.physics.velocity[:] = 0.0

    def _retarget(self) -> None:
        for k, pin in enumerate(self.motor_pins):
            if self.modes[pin] == fm.SERVO:
                target = (self.values[pin] - 90) / 90.0
            elif self.modes[pin] == fm.PWM:
                reverse = self.dir_pins is not None and self.values[self.dir_pins[k]]
                target = self.values[pin] / 255.0 * (-1.0 if reverse else 1.0)
            else:
                target = 0.0
            self.physics.target[k] = target

    def feed(self, data: bytes, now_s: float) -> bytes:
        self.physics.advance(now_s)
        self._buf += data
        out = bytearray()
        while self._buf:
            cmd = self._buf[0]
            if cmd < 0x80:
                del self._buf[:1]
                continue
            if cmd == fm.START_SYSEX:
                end = self._buf.find(fm.END_SYSEX)
                if end < 0:
                    break
                body = bytes(self._buf[1:end])
                del self._buf[:end + 1]
                if body and all(b < 0x80 for b in body):
                    out += self._sysex(body[0], body[1:])
                continue
            kind = cmd & 0xF0 if cmd < 0xF0 else cmd
            if kind not in _DATA_SIZES:
                del self._buf[:1]
                continue
            size = _DATA_SIZES[kind]
            bad = next((i for i in range(1, min(len(self._buf), size + 1)) if self._buf[i] & 0x80), None)
            if bad is not None:
                del self._buf[:bad]
                continue
            if len(self._buf) < size + 1:
                break
            args = bytes(self._buf[1:size + 1])
            del self._buf[:size + 1]
            out += self._message(kind, cmd & 0x0F, args)
        self._retarget()
        return bytes(out)

    def _set(self, pin: int, value: int) -> None:
        if pin < N_PINS:
            self.values[pin] = value

    def _message(self, kind: int, low: int, args: bytes) -> bytes:
        if kind == fm.ANALOG_MESSAGE:
            self._set(low, fm.from_seven_bit(args))
        elif kind == fm.DIGITAL_MESSAGE:
            bits = fm.from_seven_bit(args)
            for i in range(8):
                pin = low * 8 + i
                if pin < N_PINS and self.modes[pin] == fm.OUTPUT:
                    self.values[pin] = (bits >> i) & 1
        elif kind == fm.SET_PIN_MODE and args[0] < N_PINS:
            self.modes[args[0]] = args[1]
            self.values[args[0]] = 0
        elif kind == fm.SET_DIGITAL_PIN_VALUE:
            self._set(args[0], args[1] & 1)
        elif kind == fm.REPORT_VERSION:
            return bytes((fm.REPORT_VERSION, *FIRMWARE_VERSION))
        elif kind == fm.SYSTEM_RESET:
            self.power_cycle()
        return b""

    def _sysex(self, command: int, payload: bytes) -> bytes:
        if command == fm.EXTENDED_ANALOG and payload:
            self._set(payload[0], fm.from_seven_bit(payload[1:]))
        elif command == fm.SERVO_CONFIG and len(payload) == 5:
            # StandardFirmata attaches the servo and switches the pin to SERVO mode here.
            self.servo_range[payload[0]] = (fm.from_seven_bit(payload[1:3]), fm.from_seven_bit(payload[3:5]))
            if payload[0] < N_PINS:
                self.modes[payload[0]] = fm.SERVO
        elif command == fm.REPORT_FIRMWARE:
            name = b"".join(fm.seven_bit(c) for c in FIRMWARE_NAME.encode("ascii"))
            return fm.sysex(fm.REPORT_FIRMWARE, bytes(FIRMWARE_VERSION) + name)
        elif command == fm.PIN_STATE_QUERY and payload and payload[0] < N_PINS:
            pin = payload[0]
            state = int(self.values[pin])
            n = max(1, (state.bit_length() + 6) // 7)
            return fm.sysex(fm.PIN_STATE_RESPONSE, bytes((pin, int(self.modes[pin]))) + fm.seven_bit(state, n))
        return b""

    def tick(self, now_s: float) -> None:
        self.physics.advance(now_s)
