"""Pololu Maestro driving continuous-rotation servos or RC ESCs (compact protocol).

ids are channels 0..23. Velocity -> pulse: ``pulse_us = neutral_us + omega / full_scale_rad_s *
range_us`` (clamped to neutral +- range), sent as Set Target in quarter-us. ``full_scale_rad_s`` is the
speed your servo/ESC reaches at neutral + range (required). Read-back: Get Position per channel, the
*output pulse* (the Maestro has no sensor), converted back to rad/s; position is NaN. Release: target 0
(pulses off). The Maestro's own serial timeout is a device setting (Maestro Control Center), not
settable over serial, so this driver cannot arm it; Get Errors at start-up clears old errors. With
``device_number`` set, every command uses the Pololu protocol (``AA device ...``) instead of the compact one.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np

from pipeline.core.schema import toml_value

from . import maestro as mo
from .driver import Exchange, MotorDriver, MotorError, is_positive_number


class MaestroDriver(MotorDriver):
    """Pololu Maestro channels (ids 0..23) driving servos or RC ESCs; options (``--opt`` /
    ``[sinks.<label>.driver]``):

    full_scale_rad_s: speed the servo/ESC reaches at neutral_us + range_us (rad/s)
    neutral_us: pulse width that stops the motor (µs)
    range_us: pulse width change from neutral to full speed (µs, below neutral_us)
    device_number: Pololu-protocol device number (left out: the compact protocol)
    """

    protocol = "maestro"
    default_baud = 115200
    emulated_baud = 200000
    reply_timeout_s = 0.05

    def __init__(self, ids: list[int], full_scale_rad_s: float, neutral_us: float = 1500.0,
                 range_us: float = 500.0, device_number: int | None = None) -> None:
        super().__init__(ids)
        if device_number is not None:
            mo.pololu(device_number, mo.get_errors())
        self.device_number = device_number
        for channel in ids:
            mo.get_position(channel)
        if not is_positive_number(full_scale_rad_s):
            raise ValueError(f"maestro: full_scale_rad_s (speed at neutral + range pulse, rad/s) must be a number "
                             f"> 0, got {toml_value(full_scale_rad_s)}")
        if not 0 < range_us < neutral_us:
            raise ValueError(f"maestro: range_us={range_us} must be in (0, neutral_us={neutral_us})")
        self.full_scale = float(full_scale_rad_s)
        self.neutral_us = float(neutral_us)
        self.range_us = float(range_us)
        self.device_max_velocity[:] = self.full_scale
        self._expect: deque[tuple[int, int]] = deque()  # (channel or -1 for errors, t_ns)
        self._buf = bytearray()
        self._next_channel = 0
        self.errors_seen = 0

    def _targets(self, omega: np.ndarray) -> np.ndarray:
        frac = np.clip(np.asarray(omega, dtype=float) / self.full_scale, -1.0, 1.0)
        return np.rint((self.neutral_us + frac * self.range_us) * 4.0).astype(np.int64)

    # -- bytes ------------------------------------------------------------------------------------
    def _frame(self, compact: bytes) -> bytes:
        return compact if self.device_number is None else mo.pololu(self.device_number, compact)

    def encode_velocity(self, omega_rad_s: np.ndarray) -> bytes:
        return b"".join(self._frame(mo.set_target(ch, int(q)))
                        for ch, q in zip(self.ids, self._targets(omega_rad_s)))

    def release_bytes(self) -> bytes:
        return b"".join(self._frame(mo.set_target(ch, 0)) for ch in self.ids)

    def poll_bytes(self) -> bytes:
        limit = time.perf_counter_ns() - int(self.reply_timeout_s * 4e9)
        while self._expect and self._expect[0][1] < limit:  # unanswered: forget (queue only, see decode)
            self._expect.popleft()
        channel = self.ids[self._next_channel]
        self._next_channel = (self._next_channel + 1) % len(self.ids)
        self._expect.append((channel, time.perf_counter_ns()))
        return self._frame(mo.get_position(channel))

    def polls_expected_replies(self) -> int:
        return 1

    # -- replies ----------------------------------------------------------------------------------
    def reset_decoder(self) -> None:
        self._expect.clear()
        self._buf.clear()

    def decode(self, data: bytes) -> list[tuple[int, int]]:
        self._buf += data
        out = []
        while self._expect and len(self._buf) >= 2:
            channel, _ = self._expect.popleft()
            out.append((channel, self._buf[0] | (self._buf[1] << 8)))
            del self._buf[:2]
        if not self._expect:
            self._buf.clear()
        return out

    def apply(self, reply: tuple[int, int]) -> None:
        channel, value = reply
        if channel < 0 or channel not in self.ids:
            return
        k = self.ids.index(channel)
        velocity = 0.0 if value == 0 else (value / 4.0 - self.neutral_us) / self.range_us * self.full_scale
        self.feedback.update(k, velocity)

    # -- bring-up ---------------------------------------------------------------------------------
    def initialise(self, link: Exchange) -> None:
        self.reset_decoder()
        self._expect.append((-1, time.perf_counter_ns()))
        errors = link.request(self._frame(mo.get_errors()), 1, self.reply_timeout_s * 4)
        if not errors:
            self.reset_decoder()
            raise MotorError(f"maestro on {link.port}: no reply to Get Errors (A1) (check the port is the "
                             f"Maestro's Command Port and serial mode is USB Dual Port / UART)")
        self.errors_seen = errors[0][1]
        link.write(self.stop_bytes())
