"""What every protocol driver provides to the serial link and the safety layer.

A driver turns wheel velocities (rad/s, shape (n,)) into bytes, knows how to bring the device up
(:meth:`MotorDriver.initialise`, blocking request/reply, run before motion and after every reconnect),
decodes the device's replies into :class:`Feedback`, and names the bytes that stop the motors and
release them (torque off / pulses off). Drivers never touch the port directly; they get an
:class:`Exchange` during initialisation and return bytes otherwise.
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np


class MotorError(RuntimeError):
    """A device did not answer or answered with an error (message names port, id and what was expected)."""


def is_positive_number(value: Any) -> bool:
    """Whether a driver option's value is a finite number > 0 (not a bool, a string or None)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value < math.inf


class Exchange(Protocol):
    """Blocking request/reply used during initialisation only (never on the hot path)."""

    port: str

    def request(self, data: bytes, n_replies: int, timeout_s: float,
                accept: Callable[[Any], bool] | None = None) -> list[Any]:
        """Write ``data``; return the decoded replies ``accept`` takes (all when None) once ``n_replies``
        of them arrived or the timeout hit. Replies not accepted (late answers to earlier requests)
        are dropped."""
        ...

    def write(self, data: bytes) -> None:
        ...


@dataclass(frozen=True)
class Feedback:
    """Latest read-back per motor: velocity (rad/s), position (rad; NaN when the device has no sensor),
    age (s since that motor's last reply; inf before the first)."""

    velocity: np.ndarray
    position: np.ndarray
    age_s: np.ndarray


class FeedbackStore:
    """Latest read-back values written by the I/O thread, read by anyone (copies out)."""

    def __init__(self, n: int) -> None:
        self.velocity = np.zeros(n)
        self.position = np.full(n, np.nan)
        self.t_ns = np.zeros(n, dtype=np.int64)

    def update(self, k: int, velocity: float, position: float = float("nan")) -> None:
        self.velocity[k] = velocity
        self.position[k] = position
        self.t_ns[k] = time.perf_counter_ns()

    def snapshot(self) -> Feedback:
        now = time.perf_counter_ns()
        age = np.where(self.t_ns > 0, (now - self.t_ns) / 1e9, np.inf)
        return Feedback(self.velocity.copy(), self.position.copy(), age)


class MotorDriver:
    """Base class. Subclasses set the class attributes and implement the methods below."""

    #: Protocol name used by ``open_motors`` and ``emulated:<protocol>``.
    protocol = ""
    #: Baud rate when none is given for a real port, and for an emulated twin.
    default_baud = 115200
    emulated_baud = 1_000_000
    #: One wire for both directions (no command may be written while a reply is due).
    half_duplex = False
    #: How long to wait for a reply before counting it missing (s).
    reply_timeout_s = 0.05
    #: Half-duplex only: the device's delay before it answers (s); with the reply length it sets how long
    #: the bus stays busy after a feedback request.
    return_delay_s = 0.0

    def __init__(self, ids: list[int]) -> None:
        if not ids:
            raise ValueError(f"{self.protocol}: at least one motor id is needed")
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self.protocol}: duplicate motor ids in {ids}")
        self.ids = list(ids)
        self.feedback = FeedbackStore(len(ids))
        #: Per-motor velocity limit the device itself enforces (rad/s); set by initialise().
        self.device_max_velocity = np.full(len(ids), np.inf)

    # -- bytes ------------------------------------------------------------------------------------
    def encode_velocity(self, omega_rad_s: np.ndarray) -> bytes:
        raise NotImplementedError

    def stop_bytes(self) -> bytes:
        """Zero velocity for every motor."""
        return self.encode_velocity(np.zeros(len(self.ids)))

    def release_bytes(self) -> bytes:
        """Drive disabled: torque off / pulses off (sent after :meth:`stop_bytes` on close and e-stop)."""
        raise NotImplementedError

    def poll_bytes(self) -> bytes:
        """One feedback request (b"" when the device has nothing to read back)."""
        return b""

    def polls_expected_replies(self) -> int:
        """How many replies the last :meth:`poll_bytes` asked for."""
        return 0

    def poll_reply_bytes(self) -> int:
        """Total length of the replies to the last :meth:`poll_bytes` (bytes on the wire)."""
        return 0

    def on_command_written(self) -> None:
        """Called by the link (under its lock) right before a velocity command goes to the wire, so a
        driver whose device acknowledges writes can expect the acknowledgement in wire order."""

    # -- replies ----------------------------------------------------------------------------------
    def reset_decoder(self) -> None:
        raise NotImplementedError

    def decode(self, data: bytes) -> list[Any]:
        """Feed received bytes; return the complete replies found."""
        raise NotImplementedError

    def apply(self, reply: Any) -> None:
        """Update :attr:`feedback` (and any device-state flags) from one decoded reply."""

    def needs_reinitialise(self) -> bool:
        """True when read-back showed the device left its running state (e.g. its watchdog tripped)."""
        return False

    # -- bring-up ---------------------------------------------------------------------------------
    def initialise(self, link: Exchange) -> None:
        """Ping, configure velocity mode, arm the device watchdog, zero the command, enable drive."""
        raise NotImplementedError
