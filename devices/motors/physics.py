"""Simple motor physics for the emulated twins: first-order velocity response and position integration."""
from __future__ import annotations

import numpy as np


class MotorPhysics:
    """``n`` motors whose velocity follows a target with time constant ``tau_s``.

    ``target`` (rad/s, shape (n,)) is set by the device model; ``advance(now_s)`` integrates
    velocity (rad/s) and position (rad) exactly for the elapsed time (exponential approach).
    """

    def __init__(self, n: int, tau_s: float = 0.05) -> None:
        self.tau_s = float(tau_s)
        self.target = np.zeros(n)
        self.velocity = np.zeros(n)
        self.position = np.zeros(n)
        self._t_s: float | None = None

    def advance(self, now_s: float) -> None:
        if self._t_s is None:
            self._t_s = now_s
            return
        dt = now_s - self._t_s
        if dt <= 0.0:
            return
        self._t_s = now_s
        decay = np.exp(-dt / self.tau_s)
        gap = self.velocity - self.target
        # Position gains target*dt plus the integral of the decaying gap.
        self.position += self.target * dt + gap * self.tau_s * (1.0 - decay)
        self.velocity = self.target + gap * decay
