"""A non-spiking baseline for ``spikeloop demo``: a Braitenberg vehicle on the network's own cue.

It reads exactly what the obstacle-avoidance network reads, the pooled OFF/ON grid of each 1 ms step
(index ``(c * height + y) * width + x``, c = 0 OFF, 1 ON; the binner's layout), in plain numpy:

* looming [left, right]: ON minus OFF active cells of each half of the grid, the middle half of the
  columns weighted ``w_centre``, the outer ones ``w_edge`` (approach brightens what lies ahead, turns
  give ON and OFF alike);
* flank flow [left, right]: active cells (either polarity) of the outer quarter on each side;

each a leaky sum with time constant ``tau_ms``. The vehicle brakes in proportion to the looming above
``loom_threshold`` on both sides and turns away from the side that looms more and from the flank with more
flow; (v, omega) go through the same differential-drive mixer as the network's decoder, to the same
emulated motors. Its gains are the best of 10 settings tried on tuning arenas (0-7 and 0-5, 30 s each),
never on evaluation arenas: 3 collisions in 6 x 30 s at 0.71 of top speed there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.decoders.drive import DifferentialDrive
from pipeline.snn.avoidance import column_profile


@dataclass(frozen=True)
class BraitenbergParams:
    """Gains of the vehicle. Cues are in weighted active cells (leaky sums); speeds m/s, turn rates rad/s.

    v_mps: cruising speed. brake_mps: speed shed per unit of looming above ``loom_threshold`` (summed over
    both sides). turn_radps / flow_turn_radps: turn rate per unit of looming / flank-flow difference.
    """

    tau_ms: float = 10.0
    w_centre: float = 1.2
    w_edge: float = 1.0
    loom_threshold: float = 10.0
    v_mps: float = 0.19
    brake_mps: float = 0.006
    turn_radps: float = 0.1
    flow_turn_radps: float = 0.06


class BraitenbergVehicle:
    """Steps on the loop's binned inputs and returns wheel speeds [left, right] (rad/s, float64 (2,)).

    width, height: the pooled grid; dt_us: the step (µs); drive: the mixer (robot geometry, wheel limit).
    ``step(indices int32 (k,))`` is the loop's stepper call; the command it returns passes through
    :func:`command` as the loop's decode.
    """

    def __init__(self, width: int, height: int, dt_us: int, drive: DifferentialDrive,
                 params: BraitenbergParams = BraitenbergParams()) -> None:
        self.width, self.height, self.params, self.drive = width, height, params, drive
        plane = width * height
        x = np.arange(plane) % width
        profile = column_profile(width, 1, 0).astype(float)
        profile = np.where(profile > 0, params.w_centre, params.w_edge)[x]
        self._loom = np.zeros((2, 2 * plane))
        self._flow = np.zeros((2, 2 * plane))
        for side, mask in ((0, x < width // 2), (1, x >= width - width // 2)):
            self._loom[side, :plane][mask] = -profile[mask]
            self._loom[side, plane:][mask] = profile[mask]
        for side, mask in ((0, x < width // 4), (1, x >= width - width // 4)):
            self._flow[side, :plane][mask] = 1.0
            self._flow[side, plane:][mask] = 1.0
        self._decay = math.exp(-dt_us / (params.tau_ms * 1000.0))
        self.looming = np.zeros(2)
        self.flow = np.zeros(2)

    def warmup(self) -> None:
        """Nothing to compile (plain numpy)."""

    def step(self, indices: np.ndarray) -> np.ndarray:
        p = self.params
        self.looming = self.looming * self._decay + self._loom[:, indices].sum(axis=1)
        self.flow = self.flow * self._decay + self._flow[:, indices].sum(axis=1)
        threat = np.maximum(self.looming - p.loom_threshold, 0.0)
        v = max(0.0, p.v_mps - p.brake_mps * float(threat.sum()))
        omega = p.turn_radps * float(threat[1] - threat[0]) + p.flow_turn_radps * float(self.flow[1] - self.flow[0])
        return self.drive.mix(v, omega)


def command(wheels: np.ndarray, t_us: int) -> np.ndarray:
    """The loop's decode for the vehicle: its step already returns the wheel speeds (rad/s)."""
    return wheels
