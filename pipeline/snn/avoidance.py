"""The obstacle-avoidance network of ``spikeloop demo``: looming detection and steering, hand-designed.

Input: DVS events on a pooled grid of the robot's forward camera, two channels (index
``(c * height + y) * width + x``, c = 0 for OFF and 1 for ON events, the binner's layout). With the
robot's headlight (devices.world), what the robot approaches brightens at ``v / d`` log units per second
while its image grows as ``1 / d^2``, so ON events from an obstacle rise steeply as the time to contact
shrinks. Turning moves edges across the view and gives ON and OFF events in equal measure, so each
looming neuron counts ON events and subtracts OFF events of the same cells: it reads approach, not turns.

Populations (Loihi integer CUBA LIF, one step = 1 ms):

* ``looming`` (2): [left, right]. Each sums the ON events of its half of the grid minus ``off_ratio``
  times its OFF events; columns near the centre (the robot's path) weigh ``w_centre``, the outer ones
  ``w_edge``. Current and voltage leak with
  ~10 ms time constants, so a neuron fires once its half sees more than about a few events per ms.
* ``motor`` (3): [forward, turn_left, turn_right].
  - forward fires tonically from its bias (``forward_rate`` ~ 250 Hz) and is inhibited by both looming
    neurons: the robot slows down as something looms.
  - turn_left is excited by looming-right, turn_right by looming-left: turn away from the looming side.
  - turn_left and turn_right inhibit each other (a recurrent projection): a head-on obstacle that drives
    both sides equally still gives one clear turn, and the turn persists while the obstacle slides out of
    view (winner-take-all with hysteresis in the dynamics themselves).

Output: ``motor`` spikes -> :class:`pipeline.decoders.DriveDecoder` with forward = [0], left = [1],
right = [2]: v = mps_per_hz x forward rate, omega = radps_per_hz x (left rate - right rate).
"""
from __future__ import annotations

import numpy as np

from pipeline.snn.network import INPUT, Dense, LoihiLIF, Network, Population, Sparse

#: Output neuron order of the ``motor`` population.
MOTOR_NEURONS = ("forward", "turn_left", "turn_right")


def column_profile(width: int, w_centre: int, w_edge: int) -> np.ndarray:
    """Per-column input weight (width,): ``w_centre`` in the middle half of the grid, ``w_edge`` outside."""
    x = np.arange(width)
    centre = (x >= width // 4) & (x < width - width // 4)
    return np.where(centre, w_centre, w_edge).astype(np.int64)


def obstacle_avoidance(width: int, height: int, channels: int = 2, w_centre: int = 24, w_edge: int = 20,
                       off_ratio: float = 1.0, looming_vth: int = 600, w_brake: int = 2, w_turn: int = 40,
                       w_mutual: int = 120, forward_bias: int = 170, turn_vth: int = 150, turn_du: int = 205,
                       turn_dv: int = 410, w_suppress: int = 120, w_flow: int = 20, flow_vth: int = 400,
                       w_flow_turn: int = 20) -> Network:
    """Build the network for a ``width`` x ``height`` grid with OFF and ON channels (``channels`` = 2).

    Weights are 8-bit Loihi mantissas (weight_exp 0); thresholds are mantissas (spike when v > vth << 6);
    ``forward_bias`` is the forward neuron's bias mantissa (exponent 0) added to v each step.

    w_centre: looming input weight of an ON event in the middle half of the columns (the robot's path)
    w_edge: looming input weight of an ON event in the outer columns
    off_ratio: an OFF event weighs -off_ratio times an ON event of its column (looming reads approach, not turns)
    looming_vth: looming neurons' threshold mantissa (spike when v > vth << 6)
    w_brake: looming [left, right] -> forward inhibitory weight (slow down as something looms)
    w_turn: looming side -> turn away from it: excitatory weight (looming right -> turn_left)
    w_mutual: turn_left <-> turn_right inhibitory weight (one clear turn, held while the obstacle slides away)
    forward_bias: forward neuron's bias mantissa added each 1 ms step (its tonic rate)
    turn_vth: turn neurons' threshold mantissa (spike when v > vth << 6)
    turn_du: turn neurons' 12-bit current decay
    turn_dv: turn neurons' 12-bit voltage decay
    w_suppress: turn neurons -> looming and flow inhibitory weight (efference copy: a turn's own motion is
        not an obstacle)
    w_flow: flow input weight of an event in the outer quarter of the columns (ON and OFF)
    flow_vth: flow neurons' threshold mantissa (spike when v > vth << 6)
    w_flow_turn: flow side -> turn away from it: excitatory weight (more flank flow on the right -> turn_left)
    """
    if channels != 2:
        raise ValueError(f"obstacle_avoidance: expected two input channels (OFF, ON), got {channels}")
    plane = width * height
    x = np.arange(plane) % width
    profile = column_profile(width, w_centre, w_edge)[x]
    off = -np.round(off_ratio * profile).astype(np.int64)
    looming_w = np.zeros((2, 2 * plane), dtype=np.int64)
    for side, mask in ((0, x < width // 2), (1, x >= width - width // 2)):
        looming_w[side, :plane][mask] = off[mask]
        looming_w[side, plane:][mask] = profile[mask]
    flow_w = np.zeros((2, 2 * plane), dtype=np.int64)
    for side, mask in ((0, x < width // 4), (1, x >= width - width // 4)):
        flow_w[side, :plane][mask] = w_flow
        flow_w[side, plane:][mask] = w_flow

    # looming [left, right] -> motor [forward, turn_left, turn_right]
    drive = np.array([[-w_brake, -w_brake],
                      [0, w_turn],
                      [w_turn, 0]], dtype=np.int64)
    mutual = np.array([[0, 0, 0],
                       [0, 0, -w_mutual],
                       [0, -w_mutual, 0]], dtype=np.int64)
    # flow [left, right] -> motor: steer away from the flank with more optic flow
    centre = np.array([[0, 0],
                       [0, w_flow_turn],
                       [w_flow_turn, 0]], dtype=np.int64)
    # motor [forward, turn_left, turn_right] -> looming / flow [left, right]: efference copy, turns silence them
    suppress = np.array([[0, -w_suppress, -w_suppress],
                         [0, -w_suppress, -w_suppress]], dtype=np.int64)
    tau_10ms = 410
    looming = LoihiLIF(du=tau_10ms, dv=tau_10ms, vth=looming_vth)
    flow = LoihiLIF(du=tau_10ms, dv=tau_10ms, vth=flow_vth)
    motor = LoihiLIF(du=np.array([tau_10ms, turn_du, turn_du]), dv=np.array([0, turn_dv, turn_dv]),
                     vth=np.array([10, turn_vth, turn_vth]), bias_mant=np.array([forward_bias, 0, 0]))
    return Network(
        n_inputs=2 * plane,
        populations=[Population("looming", 2, looming), Population("flow", 2, flow),
                     Population("motor", 3, motor)],
        projections=[
            Sparse.from_dense(looming_w, name="halves", source=INPUT, target="looming"),
            Sparse.from_dense(flow_w, name="flanks", source=INPUT, target="flow"),
            Dense(name="steer", source="looming", target="motor", weights=drive),
            Dense(name="centre", source="flow", target="motor", weights=centre),
            Dense(name="turn_wta", source="motor", target="motor", weights=mutual),
            Dense(name="efference", source="motor", target="looming", weights=suppress),
            Dense(name="efference_flow", source="motor", target="flow", weights=suppress),
        ],
        output="motor",
        input_shape=(2, height, width),
    )
