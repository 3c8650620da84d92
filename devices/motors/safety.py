"""Safety layer between the control loop and a motor controller.

* Command watchdog: when no fresh ``send()`` arrived for ``timeout_ms`` (default 200 ms), a background
  thread commands zero velocity (slewed by ``max_accel`` when set) and keeps re-sending it every
  ``timeout_ms / 4`` (at most 20 ms) while stale; that also keeps device watchdogs fed with a *stop*.
* Limits: non-finite velocities become 0; each motor is clamped to ``max_velocity`` (rad/s) and to
  the device's own limit; with ``max_accel`` (rad/s^2) the change per call is at most
  ``max_accel * dt`` (dt since the previous command, or since the link came up, capped at
  ``timeout_ms``: a motor at rest for minutes still ramps up).
* E-stop (``estop()``, or :class:`StopOnSignal` for SIGINT/SIGTERM): latched; writes zero velocity
  and torque-off immediately, refuses motion until :meth:`SafeMotors.reset_estop`.
* ``close()`` (also on ``with`` exit, on interpreter exit, and via the signal helper) writes zero
  velocity then torque-off before closing the port (reopening it once if the link was down) and says in
  :attr:`SafeMotors.shutdown` what was actually done. Serial loss and reconnection are handled by
  :class:`~devices.motors.link.SerialLink`; after every (re)initialisation the command restarts at 0.
"""
from __future__ import annotations

import atexit
import signal
import threading
import time
from dataclasses import dataclass, fields
from typing import Callable, Iterable

import numpy as np

from .driver import Feedback, MotorDriver
from .link import SerialLink


#: ``SafeMotors.shutdown`` after a close that wrote zero velocity and drive-off to the device.
STOPPED = "zero velocity, torque off"


@dataclass
class SafetyCounters:
    watchdog_stops: int = 0   #: times the command watchdog found the command stale and zeroed it
    estops: int = 0           #: e-stop requests
    refused: int = 0          #: send() calls refused while e-stopped or closed
    nonfinite: int = 0        #: non-finite velocities replaced by 0
    limited: int = 0          #: send() calls whose command was clamped or slewed

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class SafeMotors:
    """Safety-wrapped controller returned by :func:`devices.motors.open_motors`."""

    def __init__(self, driver: MotorDriver, link: SerialLink, *, timeout_ms: float = 200.0,
                 max_velocity: float | Iterable[float] | None = None, max_accel: float | None = None,
                 on_close: Callable[[], None] | None = None) -> None:
        if timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be > 0, got {timeout_ms}")
        if max_accel is not None and max_accel <= 0:
            raise ValueError(f"max_accel must be > 0 rad/s^2, got {max_accel}")
        self.driver = driver
        self.link = link
        self.n = len(driver.ids)
        self.timeout_ns = int(timeout_ms * 1e6)
        self.max_accel = max_accel
        limit = np.inf if max_velocity is None else max_velocity
        self._user_limit = np.broadcast_to(np.asarray(limit, dtype=float), (self.n,)).copy()
        if np.any(self._user_limit <= 0):
            raise ValueError(f"max_velocity must be > 0 rad/s, got {max_velocity}")
        self.safety_counters = SafetyCounters()
        self._limit_rad_s = self.velocity_limit
        self._on_close = on_close
        self._lock = threading.Lock()
        self._command = np.zeros(self.n)
        self._command_ns = time.perf_counter_ns()
        self._fresh_ns = 0
        self._estopped = False
        self._closed = False
        #: What close() did: STOPPED, or why zero velocity / drive-off could not be written ("" while open).
        self.shutdown = ""
        self._stop = threading.Event()
        link.on_up = self._link_up
        self._period_s = min(self.timeout_ns / 4e9, 0.02)
        self._thread = threading.Thread(target=self._watchdog, name="motors:watchdog", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- public API -------------------------------------------------------------------------------
    @property
    def velocity_limit(self) -> np.ndarray:
        """Per-motor velocity limit in force (rad/s): the smaller of max_velocity and the device's."""
        return np.minimum(self._user_limit, self.driver.device_max_velocity)

    def send(self, velocities_rad_s) -> int:
        """Command wheel velocities (rad/s, shape (n,)). Non-blocking; returns ``time.perf_counter_ns()``
        right after the bytes were written, or 0 if they were queued (wire busy), dropped (link down)
        or refused (e-stopped / closed)."""
        target = np.asarray(velocities_rad_s, dtype=float)
        if target.shape != (self.n,):
            raise ValueError(f"send() expects {self.n} velocities (rad/s), got shape {target.shape}")
        with self._lock:
            if self._estopped or self._closed:
                self.safety_counters.refused += 1
                return 0
            now = time.perf_counter_ns()
            command = self._limit(target, now)
            self._fresh_ns = now
            # Written under the lock so the watchdog's zero can never land after a fresher command.
            return self.link.write_command(self.driver.encode_velocity(command))

    def estop(self) -> None:
        """Latched emergency stop: zero velocity and drive disabled, written immediately."""
        self._estopped = True
        self.safety_counters.estops += 1
        self._command = np.zeros(self.n)
        self.link.write_urgent(self.driver.stop_bytes() + self.driver.release_bytes())

    @property
    def estopped(self) -> bool:
        return self._estopped

    def reset_estop(self) -> None:
        """Clear the e-stop: the device is re-initialised (drive enabled, command 0) by the I/O thread."""
        if self._estopped and not self._closed:
            self.link.request_reinitialise()
            self._estopped = False

    def feedback(self) -> Feedback:
        """Latest read-back (velocity rad/s, position rad, age s) per motor."""
        return self.driver.feedback.snapshot()

    @property
    def connected(self) -> bool:
        return self.link.up

    @property
    def counters(self) -> dict[str, int]:
        """Link, safety and decoder counters in one flat dict (a snapshot)."""
        out = self.link.counters.as_dict()
        out.update(self.safety_counters.as_dict())
        out["crc_errors"] = int(getattr(self.driver, "crc_errors", 0))
        return out

    def close(self) -> None:
        """Zero velocity, drive off, close the port (idempotent); :attr:`shutdown` says what was done."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        if self.link.close(final=self.driver.stop_bytes() + self.driver.release_bytes()):
            self.shutdown = STOPPED
        else:
            self.shutdown = (f"zero velocity and torque off NOT written ({self.link.last_error or 'port unavailable'}); "
                             f"only the device's own watchdog, where armed, stops it")
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> "SafeMotors":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------------
    def _limit(self, target: np.ndarray, now: int) -> np.ndarray:
        finite = np.isfinite(target)
        if not finite.all():
            self.safety_counters.nonfinite += int((~finite).sum())
            target = np.where(finite, target, 0.0)
        limit = self._limit_rad_s
        command = np.minimum(np.maximum(target, -limit), limit)
        if self.max_accel is not None:
            step = self.max_accel * min(now - self._command_ns, self.timeout_ns) / 1e9
            command = self._command + np.minimum(np.maximum(command - self._command, -step), step)
        if (command != target).any():
            self.safety_counters.limited += 1
        self._command = command
        self._command_ns = now
        return command

    def _link_up(self) -> None:
        """After (re)initialisation the device is at zero; restart from there, stay stopped if e-stopped."""
        with self._lock:
            self._limit_rad_s = self.velocity_limit
            self._command = np.zeros(self.n)
            self._command_ns = time.perf_counter_ns()
            self._fresh_ns = 0
        if self._estopped:
            self.link.write_urgent(self.driver.stop_bytes() + self.driver.release_bytes())

    def _watchdog(self) -> None:
        try:
            self._watch()
        finally:
            if not self._closed:
                # The watchdog must not die silently: stop the motors if it does.
                self.estop()

    def _watch(self) -> None:
        stale_since = False
        while not self._stop.wait(self._period_s):
            with self._lock:
                if self._closed or self._estopped or not self.link.up:
                    continue
                now = time.perf_counter_ns()
                if now - self._fresh_ns <= self.timeout_ns:
                    stale_since = False
                    continue
                if not stale_since and np.any(self._command != 0.0):
                    self.safety_counters.watchdog_stops += 1
                stale_since = True
                command = self._limit(np.zeros(self.n), now)
                self.link.write_command(self.driver.encode_velocity(command))


class StopOnSignal:
    """Install SIGINT/SIGTERM handlers that e-stop ``controllers`` (the stop and torque-off bytes are
    written inside the handler) and set :attr:`requested` / :attr:`signum` for the loop to notice.
    :meth:`restore` puts the previous handlers back.

    The handler deliberately sets plain attributes instead of a ``threading.Event``: ``Event.set()``
    from a signal handler deadlocks when the signal lands while the main thread holds the event's
    internal lock (inside ``Event.wait``).
    """

    def __init__(self, controllers: Iterable[SafeMotors],
                 signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.controllers = list(controllers)
        self.requested = False
        self.signum: int | None = None
        self._previous = {s: signal.signal(s, self._handle) for s in signals}

    def _handle(self, signum, frame) -> None:
        for controller in self.controllers:
            controller.estop()
        self.signum = signum
        self.requested = True

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
