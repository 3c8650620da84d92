"""Motor controller protocols over pyserial, their emulated twins, and safety.

``open_motors(protocol, port, ids, **opts)`` returns a :class:`~devices.motors.safety.SafeMotors`:
``send(rad_s) -> perf_counter_ns``, ``estop()``, ``close()``, ``feedback()``, ``counters``.
``port`` is a serial device path or ``"emulated:<protocol>"`` (an emulated twin on a pty).
"""
from __future__ import annotations

from .driver import Feedback, MotorError
from .registry import PROTOCOLS, open_motors
from .safety import SafeMotors, StopOnSignal

__all__ = ["Feedback", "MotorError", "PROTOCOLS", "SafeMotors", "StopOnSignal", "open_motors"]
