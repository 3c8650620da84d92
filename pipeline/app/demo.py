"""``spikeloop demo``: closed-loop obstacle avoidance with no hardware.

    simulated world --camera frames--> frame-to-event emulator --DVS events--> pooling stage
      --> StepBinner (1 ms steps) --> obstacle-avoidance SNN on the loihi backend --> DriveDecoder
      --> emulated Dynamixel controller over a pty (the real driver, safety layer and bytes)
      --> the wheel speeds the controller received --> world physics --> next frame

Everything runs through :class:`pipeline.loop.Loop`, like a launch file would; the world waits for each
command to reach the emulated controller before it simulates on (see devices.world_source), so a run is
deterministic for a seed and runs as fast as the machine allows (``mode="fast"``) or in real time
(``mode="paced"``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from devices.motors.dynamixel import VELOCITY_UNIT_RAD_S, rad_s_to_raw
from devices.world import World
from devices.world_source import CommandTap, WorldSource
from pipeline.app.dashboard import DashboardRecorder
from pipeline.decoders import DriveDecoder
from pipeline.loop import Loop, LoopConfig, LoopReport
from pipeline.sinks import MotorSink
from pipeline.snn import build
from pipeline.snn.avoidance import MOTOR_NEURONS, obstacle_avoidance
from pipeline.snn.mapping import estimate_runtime, map_network
from pipeline.stages import SpatialPooling, StepBinner

#: Network step (µs) and camera frame period (µs) of the demo.
DT_US = 1000
#: Pooling factor from the 64 x 48 camera to the network's 16 x 12 input grid.
POOL = 4
#: Wheel commands are written every this many network steps (200 Hz, a common Dynamixel update rate).
COMMAND_EVERY_STEPS = 5
#: Dynamixel ids of the left and right wheel.
WHEEL_IDS = (1, 2)


#: DriveDecoder parameters: 50 ms rate window; the forward neuron's ~235 Hz tonic rate is about top speed;
#: a 100 Hz turn-rate difference turns at 1 rad/s.
DEMO_DECODER = {"window_us": 50_000, "mps_per_hz": 0.0009, "radps_per_hz": 0.01}


@dataclass(frozen=True)
class DemoConfig:
    """One demo run.

    seed: arena and sensor-noise seed. duration_s: simulated seconds. backend: "loihi" or "float".
    mode: "fast" (as fast as possible) or "paced" (real time x ``speed``). zero_weights: ablation, every
    synaptic weight set to 0 (the robot then drives blind). network: obstacle_avoidance() parameters
    (overrides of its defaults, which were tuned on arenas 0-9).
    decoder: DriveDecoder parameters (window_us, mps_per_hz, radps_per_hz).
    """

    seed: int = 0
    duration_s: float = 60.0
    backend: str = "loihi"
    mode: str = "fast"
    speed: float = 1.0
    zero_weights: bool = False
    network: dict = field(default_factory=dict)
    decoder: dict = field(default_factory=lambda: dict(DEMO_DECODER))


@dataclass(frozen=True)
class DemoResult:
    """What a run did. Speeds m/s (mean speed = forward distance actually driven / simulated time, so pushing
    against a wall counts as standing still), latencies µs; energy µJ per simulated second on Loihi 1, estimated
    (pipeline.snn.mapping): energy_uj_per_s is the dynamic energy from Davies et al. 2018's pre-silicon per-op
    figures, static_energy_uj_per_s the chip's static power (Blouw et al. 2019's measured idle, 29 mW per chip)."""

    seed: int
    sim_seconds: float
    collisions: int
    distance_m: float
    mean_speed_mps: float
    top_speed_mps: float
    events: int
    steps: int
    latency_p50_us: float
    latency_p99_us: float
    realtime_factor: float
    energy_uj_per_s: float
    static_energy_uj_per_s: float
    sync_timeouts: int
    backend: str
    loop: LoopReport

    def summary(self) -> dict:
        """The JSON object ``spikeloop demo --json`` prints."""
        out = {k: getattr(self, k) for k in (
            "sim_seconds", "collisions", "distance_m", "mean_speed_mps", "events", "steps", "latency_p50_us",
            "latency_p99_us", "realtime_factor", "energy_uj_per_s", "seed", "top_speed_mps", "sync_timeouts",
            "backend", "static_energy_uj_per_s")}
        out["mean_speed_fraction"] = self.mean_speed_mps / self.top_speed_mps
        out["merged_steps"] = self.loop.merged_steps
        out["sink_errors"] = self.loop.sink_errors
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def demo_network(world: World, config: DemoConfig):
    """The obstacle-avoidance network for the world's camera (weights zeroed for the ablation)."""
    network = obstacle_avoidance(world.camera.width // POOL, world.camera.height // POOL, 2, **config.network)
    if config.zero_weights:
        network = replace(network, projections=[replace(p, weights=np.zeros_like(p.weights))
                                                for p in network.projections])
    return network


class DemoRun:
    """Builds the closed loop for a config; ``run()`` executes it. ``on_frame(run, world, events, t_us)``
    is called in the world's thread after every camera frame (for a window or a video)."""

    def __init__(self, config: DemoConfig, on_frame: Callable | None = None, on_report: Callable | None = None):
        self.config = config
        self.world = World(seed=config.seed)
        self.network = demo_network(self.world, config)
        self.runtime = build(self.network, config.backend)
        robot = self.world.robot
        self.decoder = DriveDecoder(len(MOTOR_NEURONS), forward=[0], left=[1], right=[2],
                                    wheel_radius_m=robot.wheel_radius_m, track_m=robot.track_m,
                                    max_wheel_radps=robot.max_wheel_radps, **config.decoder)
        names = ["loom L", "loom R", "flow L", "flow R", "forward", "turn L", "turn R"]
        self.recorder = DashboardRecorder(names, n_sensory=4)
        self.motors = MotorSink("dynamixel", "emulated:dynamixel", WHEEL_IDS)
        self.tap = CommandTap()
        bus = self.motors.controller.twin.device
        self._on_frame = on_frame
        self.source = WorldSource(
            self.world, lambda: bus.physics.target.copy(), self.tap, frame_us=DT_US, duration_s=config.duration_s,
            command_period_us=DT_US * COMMAND_EVERY_STEPS,
            expected_goal=self._goal_for, on_frame=self._frame)
        camera = self.world.camera
        pooling = SpatialPooling(factor=POOL).build(camera.width, camera.height)
        width, height = pooling.output_resolution
        self.loop = Loop(self.source, pooling, StepBinner(DT_US, width, height, True, t0_us=0), self.runtime,
                         self._decode, [self.motors, self.tap],
                         LoopConfig(mode=config.mode, dt_us=DT_US, speed=config.speed,
                                    command_every_steps=COMMAND_EVERY_STEPS,
                                    report_period_s=1.0 if on_report else 0.0),
                         on_report=on_report)

    def _goal_for(self, command: np.ndarray) -> np.ndarray:
        """The goal velocity (rad/s) the emulated servos hold after ``command``: clipped to the controller's
        velocity limit, then quantized to Goal Velocity units (0.229 rpm) as the driver encodes it."""
        limit = self.motors.controller.velocity_limit
        return rad_s_to_raw(np.clip(command, -limit, limit)) * VELOCITY_UNIT_RAD_S

    def _decode(self, spikes: np.ndarray, t_us: int) -> np.ndarray:
        command = self.decoder.update(spikes, t_us)
        sensed = [self.runtime.spikes_of(name) for name in ("looming", "flow")]
        self.recorder.add_step(t_us, np.concatenate(sensed + [spikes]), command)
        return command

    def _frame(self, world: World, events: np.ndarray, t_us: int) -> None:
        self.recorder.add_frame(world, events, t_us, self._collisions_seen)
        self._collisions_seen = world.collisions
        if self._on_frame is not None:
            self._on_frame(self, world, events, t_us)

    def run(self) -> DemoResult:
        """Run to the configured duration (or until ``stop()``); motors are stopped and closed at the end."""
        self._collisions_seen = 0
        try:
            self.loop.warmup()
            report = self.loop.run()
        finally:
            self.tap.close()
            self.motors.close()
        sim_s = self.world.time_s
        energy = estimate_runtime(self.runtime, map_network(self.network), total=True)
        return DemoResult(
            seed=self.config.seed, sim_seconds=sim_s, collisions=self.world.collisions,
            distance_m=self.world.distance_m, mean_speed_mps=self.world.distance_m / sim_s if sim_s else 0.0,
            top_speed_mps=self.world.robot.top_speed_mps, events=self.source.events, steps=report.steps,
            latency_p50_us=_us(report.latency_p50_ms), latency_p99_us=_us(report.latency_p99_ms),
            realtime_factor=report.real_time_factor,
            energy_uj_per_s=energy.dynamic_pj * 1e-6 / sim_s if sim_s else 0.0,
            static_energy_uj_per_s=energy.static_pj * 1e-6 / sim_s if sim_s else 0.0,
            sync_timeouts=self.source.sync_timeouts, backend=self.config.backend, loop=report)

    def stop(self) -> None:
        """End the run early (thread- and signal-safe)."""
        self.source.close()
        self.loop.stop()


def _us(ms: float) -> float:
    return ms * 1000.0 if math.isfinite(ms) else float("nan")
