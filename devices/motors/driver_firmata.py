"""Arduino (StandardFirmata) driving continuous-rotation servos or PWM motor drivers.

ids are pins. ``mode="servo"``: angle = 90 + omega / full_scale_rad_s * 90 (0-180, 90 = stop), written with
ANALOG_MESSAGE after SET_PIN_MODE SERVO and SERVO_CONFIG (``min_us``/``max_us``, default 1000-2000 us).
``mode="pwm"``: duty = |omega| / full_scale_rad_s * 255 on a PWM pin; with ``dir_pins`` (one per id) the
sign goes to that digital pin (1 = reverse), without them only forward motion is possible (negative
commands give 0). Read-back: pin state query (the last value set: there is no sensor). Release: servo
pins back to OUTPUT low (detached), PWM duty 0. StandardFirmata has **no device-side watchdog**: the
safety layer's host watchdog is the only timeout. Opening a real Uno's port resets it; the driver waits
up to ``boot_wait_s`` for the firmware report.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np

from pipeline.core.schema import toml_value

from . import firmata as fm
from .driver import Exchange, MotorDriver, MotorError, is_positive_number


class FirmataDriver(MotorDriver):
    """StandardFirmata pins (ids) driving servos or PWM motor drivers; options (``--opt`` /
    ``[sinks.<label>.driver]``):

    full_scale_rad_s: speed at full servo angle / full PWM duty (rad/s)
    mode: "servo" (continuous-rotation servo pulses) or "pwm" (PWM duty on the pin)
    min_us: servo pulse width at full reverse (µs)
    max_us: servo pulse width at full forward (µs)
    dir_pins: pwm: one direction pin per id, high = reverse (left out: forward motion only)
    boot_wait_s: wait this long for the firmware report after opening the port (s; a real Uno resets)
    """

    protocol = "firmata"
    default_baud = 57600
    emulated_baud = 57600
    reply_timeout_s = 0.05

    def __init__(self, ids: list[int], full_scale_rad_s: float, mode: str = "servo",
                 min_us: int = 1000, max_us: int = 2000, dir_pins: list[int] | None = None,
                 boot_wait_s: float = 3.0) -> None:
        super().__init__(ids)
        if dir_pins is not None and not (isinstance(dir_pins, (list, tuple)) and all(
                isinstance(pin, (int, np.integer)) and not isinstance(pin, bool) for pin in dir_pins)):
            # (true was pin 1 here, then an array index in the twin: a traceback)
            raise ValueError(f"firmata: dir_pins must be a list of pin numbers, got {toml_value(dir_pins)}")
        for pin in ids + list(dir_pins or []):
            fm.set_pin_mode(pin, fm.OUTPUT)
        if not is_positive_number(full_scale_rad_s):
            raise ValueError(f"firmata: full_scale_rad_s (speed at full servo angle / full PWM duty, rad/s) must "
                             f"be a number > 0, got {toml_value(full_scale_rad_s)}")
        if mode not in ("servo", "pwm"):
            raise ValueError(f'firmata: mode must be "servo" or "pwm", got {toml_value(mode)}')
        if dir_pins is not None and (mode != "pwm" or len(dir_pins) != len(ids)):
            raise ValueError("firmata: dir_pins needs mode='pwm' and one pin per id")
        if not 0 < min_us < max_us <= 0x3FFF:
            raise ValueError(f"firmata: need 0 < min_us < max_us, got {min_us}, {max_us}")
        self.full_scale = float(full_scale_rad_s)
        self.mode = mode
        self.min_us, self.max_us = int(min_us), int(max_us)
        self.dir_pins = list(dir_pins) if dir_pins is not None else None
        self.boot_wait_s = boot_wait_s
        self.device_max_velocity[:] = self.full_scale
        self._decoder = fm.SysexDecoder()
        self._sign = np.ones(len(ids))
        self._next = 0
        self._expect: deque[int] = deque()
        self.firmware = ""

    # -- bytes ------------------------------------------------------------------------------------
    def _values(self, omega: np.ndarray) -> np.ndarray:
        frac = np.clip(np.asarray(omega, dtype=float) / self.full_scale, -1.0, 1.0)
        if self.mode == "servo":
            return np.rint(90.0 + frac * 90.0).astype(np.int64)
        if self.dir_pins is None:
            frac = np.maximum(frac, 0.0)
        return np.rint(np.abs(frac) * 255.0).astype(np.int64)

    def encode_velocity(self, omega_rad_s: np.ndarray) -> bytes:
        values = self._values(omega_rad_s)
        out = bytearray()
        if self.dir_pins is not None:
            reverse = np.asarray(omega_rad_s, dtype=float) < 0
            self._sign = np.where(reverse, -1.0, 1.0)
            for pin, rev in zip(self.dir_pins, reverse):
                out += fm.set_digital_pin_value(pin, int(rev))
        for pin, value in zip(self.ids, values):
            out += fm.analog_write(pin, int(value))
        return bytes(out)

    def release_bytes(self) -> bytes:
        if self.mode == "pwm":
            return b"".join(fm.analog_write(pin, 0) for pin in self.ids)
        return b"".join(fm.set_pin_mode(pin, fm.OUTPUT) + fm.set_digital_pin_value(pin, 0) for pin in self.ids)

    def poll_bytes(self) -> bytes:
        pin = self.ids[self._next]
        self._next = (self._next + 1) % len(self.ids)
        return fm.pin_state_query(pin)

    def polls_expected_replies(self) -> int:
        return 1

    # -- replies ----------------------------------------------------------------------------------
    def reset_decoder(self) -> None:
        self._decoder.reset()

    def decode(self, data: bytes) -> list[tuple[int, bytes]]:
        return self._decoder.feed(data)

    def apply(self, reply: tuple[int, bytes]) -> None:
        command, payload = reply
        if command != fm.PIN_STATE_RESPONSE or len(payload) < 3 or payload[0] not in self.ids:
            return
        k = self.ids.index(payload[0])
        state = fm.from_seven_bit(payload[2:])
        if self.mode == "servo":
            velocity = (state - 90) / 90.0 * self.full_scale if payload[1] == fm.SERVO else 0.0
        else:
            velocity = state / 255.0 * self.full_scale * self._sign[k]
        self.feedback.update(k, velocity)

    # -- bring-up ---------------------------------------------------------------------------------
    def initialise(self, link: Exchange) -> None:
        self.reset_decoder()
        deadline = time.monotonic() + self.boot_wait_s
        while True:
            replies = [r for r in link.request(fm.report_firmware(), 1, 0.25) if r[0] == fm.REPORT_FIRMWARE]
            if replies or time.monotonic() > deadline:
                break
        if not replies:
            raise MotorError(f"firmata on {link.port}: no firmware report (F0 79 F7) within "
                             f"{self.boot_wait_s:g} s (is StandardFirmata running at this baud rate?)")
        payload = replies[0][1]
        name = bytes(fm.from_seven_bit(payload[i:i + 2]) for i in range(2, len(payload) - 1, 2))
        self.firmware = f"{name.decode('ascii', 'replace')} {payload[0]}.{payload[1]}"
        setup = bytearray()
        for pin in self.ids:
            if self.mode == "servo":
                setup += fm.set_pin_mode(pin, fm.SERVO) + fm.servo_config(pin, self.min_us, self.max_us)
            else:
                setup += fm.set_pin_mode(pin, fm.PWM)
        for pin in self.dir_pins or []:
            setup += fm.set_pin_mode(pin, fm.OUTPUT)
        link.write(bytes(setup) + self.stop_bytes())
