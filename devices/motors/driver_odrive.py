"""ODrive (ASCII protocol, firmware 0.5 era) axes in velocity control.

ids are axes (0, 1). Units: ``v`` takes turns/s = omega / (2 pi); ``f`` returns turns and turns/s.
Bring-up per axis: ping (``r vbus_voltage``), clear errors (``w axisN.error 0``), velocity control with
passthrough input, watchdog (``axisN.config.watchdog_timeout`` = ``device_watchdog_ms``, then
``enable_watchdog 1``), zero velocity, CLOSED_LOOP_CONTROL, and a read of ``current_state`` that must be
8. Read-back: ``f N`` round-robin, and ``r axisN.current_state`` every ``state_check_every`` polls: an axis
that left closed loop (watchdog expiry, any error) triggers re-initialisation. Release: IDLE. All lines
carry the XOR checksum. The ODrive watchdog is fed only by commands (not by read-back), so keep
``device_watchdog_ms`` (default 500) above the safety layer's ``timeout_ms`` plus its 20 ms re-send
period: then a stale loop is stopped by the host first and the device watchdog covers a dead host. Property names follow 0.5-era firmware (unverified on other versions).
"""
from __future__ import annotations

import math
import time
from collections import deque

import numpy as np

from . import odrive as od
from .driver import Exchange, MotorDriver, MotorError

TWO_PI = 2.0 * math.pi


class ODriveDriver(MotorDriver):
    """ODrive axes (ids 0, 1) in velocity control; options (``--opt`` / ``[sinks.<label>.driver]``):

    device_watchdog_ms: the axes' watchdog: no command for this long stops them (ms; keep it above the
        safety layer's timeout_ms + 20 ms)
    state_check_every: read each axis's state every this many read-back polls
    max_turns_s: speed limit the device enforces (turns/s; left out: none)
    """

    protocol = "odrive"
    default_baud = 115200
    emulated_baud = 921600
    reply_timeout_s = 0.05

    def __init__(self, ids: list[int], device_watchdog_ms: float = 500.0, state_check_every: int = 10,
                 max_turns_s: float | None = None) -> None:
        super().__init__(ids)
        if any(a not in (0, 1) for a in ids):
            raise ValueError(f"odrive: ids are axes 0 and/or 1, got {ids}")
        if device_watchdog_ms <= 0:
            raise ValueError(f"odrive: device_watchdog_ms must be > 0, got {device_watchdog_ms}")
        self.watchdog_s = device_watchdog_ms / 1000.0
        if state_check_every < 1:
            raise ValueError(f"odrive: state_check_every must be >= 1, got {state_check_every}")
        self.state_check_every = state_check_every
        if max_turns_s is not None:
            if not max_turns_s > 0:
                raise ValueError(f"odrive: max_turns_s must be > 0, got {max_turns_s}")
            self.device_max_velocity[:] = max_turns_s * TWO_PI
        self._decoder = od.LineDecoder()
        self._expect: deque[tuple[str, int, int]] = deque()  # (kind, axis index, t_ns)
        self._poll_count = 0
        self.axis_left_closed_loop = False
        self.error_replies: list[str] = []
        self.resyncs = 0

    # -- bytes ------------------------------------------------------------------------------------
    def encode_velocity(self, omega_rad_s: np.ndarray) -> bytes:
        turns = np.asarray(omega_rad_s, dtype=float) / TWO_PI
        return b"".join(od.velocity(axis, float(t)) for axis, t in zip(self.ids, turns))

    def release_bytes(self) -> bytes:
        return b"".join(od.write(f"axis{a}.requested_state", od.AXIS_STATE_IDLE) for a in self.ids)

    def poll_bytes(self) -> bytes:
        now = time.perf_counter_ns()
        while self._expect and now - self._expect[0][2] > self.reply_timeout_s * 4e9:
            self._expect.popleft()  # unanswered: forget (the line buffer belongs to the I/O thread)
        k = self._poll_count % len(self.ids)
        check = self._poll_count % (self.state_check_every * len(self.ids)) < len(self.ids)
        self._poll_count += 1
        axis = self.ids[k]
        if check:
            self._expect.append(("state", k, now))
            return od.read(f"axis{axis}.current_state")
        self._expect.append(("f", k, now))
        return od.feedback_request(axis)

    def polls_expected_replies(self) -> int:
        return 1

    # -- replies ----------------------------------------------------------------------------------
    def reset_decoder(self) -> None:
        self._decoder.reset()
        self._expect.clear()

    @property
    def crc_errors(self) -> int:
        return self._decoder.checksum_errors

    def decode(self, data: bytes) -> list[tuple[str, int, str]]:
        out = []
        for text in self._decoder.feed(data):
            if text.startswith(od.ERROR_REPLIES):
                self.error_replies.append(text)
                del self.error_replies[:-10]
                continue
            if not self._expect:
                continue
            kind, k, _ = self._expect.popleft()
            if (len(text.split()) == 2) != (kind == "f"):
                # Replies carry no tag: a shape mismatch means a late reply shifted the queue; resync.
                self._expect.clear()
                self.resyncs += 1
                continue
            out.append((kind, k, text))
        return out

    def apply(self, reply: tuple[str, int, str]) -> None:
        kind, k, text = reply
        try:
            if kind == "f":
                pos, vel = (float(v) for v in text.split())
                self.feedback.update(k, vel * TWO_PI, pos * TWO_PI)
            elif kind == "state" and int(text) != od.AXIS_STATE_CLOSED_LOOP_CONTROL:
                self.axis_left_closed_loop = True
        except ValueError:
            self.error_replies.append(f"unparseable reply to {kind}: {text!r}")

    def needs_reinitialise(self) -> bool:
        return self.axis_left_closed_loop

    # -- bring-up ---------------------------------------------------------------------------------
    def _read(self, link: Exchange, prop: str) -> str:
        self._expect.append(("r", 0, time.perf_counter_ns()))
        replies = link.request(od.read(prop), 1, self.reply_timeout_s * 4)
        if not replies:
            self.reset_decoder()
            detail = f" (device said: {self.error_replies[-1]})" if self.error_replies else ""
            raise MotorError(f"odrive on {link.port}: no reply to 'r {prop}'{detail}")
        return replies[0][2]

    def initialise(self, link: Exchange) -> None:
        self.reset_decoder()
        self.error_replies.clear()
        try:
            float(self._read(link, "vbus_voltage"))
        except ValueError:
            raise MotorError(f"odrive on {link.port}: 'r vbus_voltage' did not return a number") from None
        for axis in self.ids:
            a = f"axis{axis}"
            for prop, value in ((f"{a}.error", 0), (f"{a}.controller.config.control_mode", od.CONTROL_MODE_VELOCITY),
                                (f"{a}.controller.config.input_mode", od.INPUT_MODE_PASSTHROUGH),
                                (f"{a}.config.watchdog_timeout", f"{self.watchdog_s:g}"),
                                (f"{a}.config.enable_watchdog", 1)):
                link.write(od.write(prop, value))
            link.write(od.line(f"u {axis}") + od.velocity(axis, 0.0))
            link.write(od.write(f"{a}.requested_state", od.AXIS_STATE_CLOSED_LOOP_CONTROL))
            state = self._read(link, f"{a}.current_state")
            if self.error_replies:
                raise MotorError(f"odrive on {link.port}: axis {axis} set-up rejected: {self.error_replies[-1]}")
            if state != str(od.AXIS_STATE_CLOSED_LOOP_CONTROL):
                error = self._read(link, f"{a}.error")
                raise MotorError(f"odrive on {link.port}: axis {axis} did not enter CLOSED_LOOP_CONTROL "
                                 f"(current_state {state}, error {error})")
        self.axis_left_closed_loop = False
