"""Differential-drive robots: body velocity (v, omega) -> wheel speeds (rad/s), and a spike decoder for it.

Kinematics (x forward, omega counter-clockwise positive, seen from above):
left = (v - omega * track / 2) / r, right = (v + omega * track / 2) / r, in rad/s of each wheel.
When a wheel would exceed ``max_wheel_radps`` both wheels are scaled by the same factor, so the path
curvature omega / v is preserved and the robot only slows down along the same arc.
"""
from __future__ import annotations

import math

import numpy as np

from pipeline.core.checks import check_number
from pipeline.decoders.window import SpikeWindow, check_indices


class DifferentialDrive:
    """Mixer: wheel_radius_m (m), track_m (wheel separation, m), max_wheel_radps (rad/s limit per wheel)."""

    name = "differential_drive"

    def __init__(self, wheel_radius_m: float, track_m: float, max_wheel_radps: float):
        self.wheel_radius_m = check_number(self.name, "wheel_radius_m", wheel_radius_m, 0.0, 100.0, low_open=True)
        self.track_m = check_number(self.name, "track_m", track_m, 0.0, 100.0, low_open=True)
        self.max_wheel_radps = check_number(self.name, "max_wheel_radps", max_wheel_radps, 0.0, 1e5, low_open=True)
        self.saturated = False

    def mix(self, v_mps: float, omega_radps: float) -> np.ndarray:
        """Wheel speeds [left, right] in rad/s (float64 (2,)) for forward speed v (m/s) and yaw rate omega (rad/s).

        ``saturated`` tells whether the limit scaled this command down. Non-finite inputs raise ValueError.
        """
        if not (math.isfinite(v_mps) and math.isfinite(omega_radps)):
            raise ValueError(f"{self.name}: non-finite command v={v_mps} m/s, omega={omega_radps} rad/s")
        # Python floats, not numpy scalars: the same IEEE float64 operations, a few µs less per command
        half = omega_radps * self.track_m / 2.0
        left = (v_mps - half) / self.wheel_radius_m
        right = (v_mps + half) / self.wheel_radius_m
        peak = max(abs(left), abs(right))
        self.saturated = peak > self.max_wheel_radps
        if self.saturated:
            scale = self.max_wheel_radps / peak
            left, right = left * scale, right * scale
        return np.array([left, right])

    def body_velocity(self, left_radps: float, right_radps: float) -> tuple[float, float]:
        """Inverse kinematics: (v m/s, omega rad/s) from wheel speeds in rad/s."""
        v = self.wheel_radius_m * (left_radps + right_radps) / 2.0
        omega = self.wheel_radius_m * (right_radps - left_radps) / self.track_m
        return v, omega


class DriveDecoder:
    """Output spikes -> wheel speeds [left, right] (rad/s) for a differential-drive robot.

    v (m/s) = mps_per_hz * (mean rate of ``forward`` - mean rate of ``backward``);
    omega (rad/s) = radps_per_hz * (mean rate of ``left`` - mean rate of ``right``) (left turn positive);
    rates in Hz over the last ``window_us`` µs, then mixed by ``DifferentialDrive``. Each of the four groups
    is a list of output indices; ``backward``/``left``/``right`` may be empty.

    n_outputs: network outputs
    forward: output indices whose mean rate drives forward speed
    backward: output indices whose mean rate drives backward speed
    left: output indices whose mean rate turns left
    right: output indices whose mean rate turns right
    wheel_radius_m: wheel radius (m)
    track_m: wheel separation (m)
    max_wheel_radps: wheel speed limit (rad/s); a faster command is scaled down, keeping its curvature
    window_us: rate window (µs)
    mps_per_hz: forward speed per Hz of rate (m/s per Hz)
    radps_per_hz: yaw rate per Hz of rate (rad/s per Hz)
    """

    name = "drive"

    def __init__(self, n_outputs: int, forward: list[int], wheel_radius_m: float, track_m: float,
                 max_wheel_radps: float, backward: list[int] = (), left: list[int] = (), right: list[int] = (),
                 window_us: int = 100_000, mps_per_hz: float = 0.005, radps_per_hz: float = 0.02):
        self.window = SpikeWindow(self.name, n_outputs, window_us)
        n = self.window.n_outputs
        self.groups = {"forward": check_indices(self.name, "forward", forward, n)}
        for key, value in (("backward", backward), ("left", left), ("right", right)):
            self.groups[key] = (np.zeros(0, dtype=np.int64) if len(value) == 0
                                else check_indices(self.name, key, value, n))
        self._members = {key: [int(i) for i in indices] for key, indices in self.groups.items()}
        self.mps_per_hz = check_number(self.name, "mps_per_hz", mps_per_hz)
        self.radps_per_hz = check_number(self.name, "radps_per_hz", radps_per_hz)
        self.mixer = DifferentialDrive(wheel_radius_m, track_m, max_wheel_radps)
        self.v_mps = 0.0
        self.omega_radps = 0.0

    def reset(self) -> None:
        self.window.reset()
        self.v_mps = 0.0
        self.omega_radps = 0.0

    def _rate(self, key: str) -> float:
        """Mean spike rate (Hz) of a group over the window. Counts are integers, so their float64 sum is
        exact in any order (the same value as numpy's mean, without its per-call overhead)."""
        members = self._members[key]
        if not members:
            return 0.0
        counts = self.window.counts
        total = 0.0
        for i in members:
            total += float(counts[i])
        return total / len(members) / self.window.window_s

    def update(self, spikes, t_us: int) -> np.ndarray:
        """Add one step's spikes (uint8 (n_outputs,)) at ``t_us`` µs; returns [left, right] wheel speeds, rad/s."""
        self.window.update(spikes, t_us)
        self.v_mps = self.mps_per_hz * (self._rate("forward") - self._rate("backward"))
        self.omega_radps = self.radps_per_hz * (self._rate("left") - self._rate("right"))
        return self.mixer.mix(self.v_mps, self.omega_radps)
