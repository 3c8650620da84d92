"""Motor controller protocols over pyserial, their emulated twins, and safety.

``open_motors(protocol, port, ids, **opts)`` returns a :class:`~devices.motors.safety.SafeMotors`:
``send(rad_s) -> perf_counter_ns`` (0 = queued/dropped/refused), ``estop()``, ``close()``,
``feedback()``, ``counters``. ``port`` is a serial device path or ``"emulated:<protocol>"`` (an
emulated twin on a pty, same bytes as the real device).

Velocities are rad/s at the API; each driver converts:

============  =====================  ===========================================================
protocol      ids                    rad/s -> wire
============  =====================  ===========================================================
dynamixel     servo ids 0-252        Goal Velocity raw = round(omega / 0.0239691227) (0.229 rpm)
roboclaw      channels 1, 2          QPPS = round(omega / 2 pi * counts_per_rev)
maestro       channels 0-23          pulse us = neutral_us + omega / full_scale_rad_s * range_us,
                                     sent in quarter-us
odrive        axes 0, 1              turns/s = omega / 2 pi
firmata       pins                   servo angle = 90 + omega / full_scale_rad_s * 90 (degrees), or
                                     PWM duty = |omega| / full_scale_rad_s * 255 (+ direction pin)
============  =====================  ===========================================================

Device-side watchdogs armed at start-up and after every reconnect: Dynamixel Bus Watchdog (98),
RoboClaw serial timeout (cmd 14), ODrive axis watchdog. The Maestro's serial timeout is a device
setting (not reachable over serial) and StandardFirmata has none: there only the host watchdog acts.
"""
from __future__ import annotations

from .driver import Feedback, MotorError
from .registry import PROTOCOLS, open_motors
from .safety import SafeMotors, StopOnSignal

__all__ = ["Feedback", "MotorError", "PROTOCOLS", "SafeMotors", "StopOnSignal", "open_motors"]
