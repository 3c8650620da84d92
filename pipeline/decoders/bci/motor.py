"""Decoded kinematics -> motor commands.

The BCI decoders output hand velocity in the data's units (DAD chewie: arbitrary units, |v| up to ~30;
MC_Maze: mm/s). A mapper turns one decoded bin (d,) into the command a motor sink takes (rad/s per motor):

* :class:`VelocityToDrive` — a differential-drive robot: forward speed from one axis, yaw rate from the
  other, mixed into [left, right] wheel speeds by pipeline.decoders.DifferentialDrive (which keeps the
  curvature when a wheel would exceed its limit);
* :class:`VelocityToJoints` — joint velocities as a linear map of the decoded velocity, clipped per joint.
"""
from __future__ import annotations

import numpy as np

from pipeline.decoders.drive import DifferentialDrive


class VelocityToDrive:
    """v (m/s) = mps_per_unit * vel[forward_axis]; omega (rad/s) = radps_per_unit * vel[turn_axis]
    (a positive omega turns left); |vel| components below ``deadband`` (data units) count as 0.
    wheel_radius_m, track_m, max_wheel_radps: the robot (see DifferentialDrive). Output: [left, right] rad/s."""

    n_commands = 2

    def __init__(self, wheel_radius_m: float, track_m: float, max_wheel_radps: float, forward_axis: int = 1,
                 turn_axis: int = 0, mps_per_unit: float = 0.01, radps_per_unit: float = -0.05,
                 deadband: float = 0.0):
        if forward_axis == turn_axis or min(forward_axis, turn_axis) < 0:
            raise ValueError(f"forward_axis and turn_axis must be two different axes >= 0, got {forward_axis}, {turn_axis}")
        if deadband < 0:
            raise ValueError(f"deadband must be >= 0, got {deadband}")
        self.mixer = DifferentialDrive(wheel_radius_m, track_m, max_wheel_radps)
        self.forward_axis, self.turn_axis = int(forward_axis), int(turn_axis)
        self.mps_per_unit, self.radps_per_unit = float(mps_per_unit), float(radps_per_unit)
        self.deadband = float(deadband)
        self.n_axes = max(self.forward_axis, self.turn_axis) + 1

    def __call__(self, velocity: np.ndarray) -> np.ndarray:
        """Wheel speeds [left, right] (rad/s) for one decoded bin ``velocity`` (d,)."""
        forward, turn = float(velocity[self.forward_axis]), float(velocity[self.turn_axis])
        forward = 0.0 if abs(forward) < self.deadband else forward
        turn = 0.0 if abs(turn) < self.deadband else turn
        return self.mixer.mix(self.mps_per_unit * forward, self.radps_per_unit * turn)


class VelocityToJoints:
    """Joint velocities (rad/s) = gain @ velocity, clipped to ±max_joint_radps. gain: (n_joints, d)
    in rad/s per data unit."""

    def __init__(self, gain, max_joint_radps: float):
        self.gain = np.asarray(gain, dtype=np.float64)
        if self.gain.ndim != 2 or not np.all(np.isfinite(self.gain)):
            raise ValueError(f"gain must be a finite (n_joints, d) matrix, got shape {self.gain.shape}")
        if not max_joint_radps > 0:
            raise ValueError(f"max_joint_radps must be > 0, got {max_joint_radps}")
        self.max_joint_radps = float(max_joint_radps)
        self.n_commands, self.n_axes = self.gain.shape

    def __call__(self, velocity: np.ndarray) -> np.ndarray:
        """Joint velocities (n_joints,) in rad/s for one decoded bin (d,)."""
        if not np.all(np.isfinite(velocity)):
            raise ValueError(f"non-finite decoded velocity {velocity}")
        return np.clip(self.gain @ velocity, -self.max_joint_radps, self.max_joint_radps)
