"""``spikeloop demo``: closed-loop obstacle avoidance with no hardware.

    simulated world --camera frames--> frame-to-event emulator --DVS events--> pooling stage
      --> StepBinner (1 ms steps) --> obstacle-avoidance SNN on the loihi backend --> DriveDecoder
      --> emulated Dynamixel controller over a pty (the real driver, safety layer and bytes)
      --> the wheel speeds the controller received --> world physics --> next frame

The graph is launch/demo.toml (source, loop, stages, network, decoder, motors): this module keeps no copy
of its parameters. Everything runs through :class:`pipeline.loop.Loop`, like a launch file would. Two
clocks (see devices.world_source): ``mode="fast"`` runs the world in lockstep with the loop, as fast as
the machine allows and the same for a seed under any load; ``mode="paced"`` runs the world in real time
(x ``speed``) with the loop in live mode, for a window.

``controller="braitenberg"`` swaps the network and decoder for a non-spiking baseline on the same cue
(:mod:`pipeline.app.braitenberg`); ``zero_weights`` is the ablation (every synaptic weight 0).
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from devices.dvs_emulator import DvsEmulator
from devices.motors.dynamixel import VELOCITY_UNIT_RAD_S
from devices.world import World
from devices.world_source import CommandTap, ServoWheels, WorldSource
from pipeline.app.braitenberg import BraitenbergVehicle
from pipeline.app.braitenberg import command as braitenberg_command
from pipeline.app.dashboard import DashboardRecorder
from pipeline.app.launch import LaunchSpec, build_decoder, build_network, build_stages, load_launch, open_sinks
from pipeline.core.events import dvs_events
from pipeline.core.schema import Context, LaunchError, toml_value
from pipeline.decoders.drive import DifferentialDrive
from pipeline.loop import Loop, LoopReport
from pipeline.snn import build
from pipeline.snn.mapping import estimate_runtime, map_network
from pipeline.stages import StepBinner

#: The demo's launch file: every parameter of the demo.
DEMO_LAUNCH = Path(__file__).resolve().parents[2] / "launch" / "demo.toml"
MODES = ("fast", "paced")
CONTROLLERS = ("snn", "braitenberg")
#: Arena seeds used to tune the network and the baseline (git log, README): never evaluate on them.
TUNING_SEEDS = range(0, 16)
#: Lockstep: the motor layer's wall-clock watchdogs at their longest (command watchdog and the servos' Bus
#: Watchdog 2,540 ms, the most its register holds; link declared lost after 10 s). Simulated time stands
#: still while the process is stalled, so in lockstep these timers measure the machine's load, not the
#: robot's; at the launch file's 100-200 ms a busy machine trips them and the run would depend on it.
LOCKSTEP_MOTOR_SETS = ("timeout_ms=2540", "driver.device_watchdog_ms=2540", "fatal_after_ms=10000")


@dataclass(frozen=True)
class DemoConfig:
    """One demo run.

    seed: arena seed (>= 0). duration_s: simulated seconds (> 0). backend: "loihi" or "float" (None = the
    launch file's). mode: "fast" (lockstep, as fast as possible) or "paced" (real time x ``speed``).
    controller: "snn" (the launch file's network and decoder) or "braitenberg" (the non-spiking baseline).
    zero_weights: ablation, every synaptic weight set to 0 (the robot then drives blind).
    network / decoder: overrides of the launch file's [network.params] / [decoder] keys.
    launch: the launch file (default launch/demo.toml).
    """

    seed: int = 0
    duration_s: float = 60.0
    backend: str | None = None
    mode: str = "fast"
    speed: float = 1.0
    zero_weights: bool = False
    controller: str = "snn"
    network: dict = field(default_factory=dict)
    decoder: dict = field(default_factory=dict)
    launch: str | Path = DEMO_LAUNCH

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed: expected an integer >= 0, got {self.seed!r}")
        if not (isinstance(self.duration_s, (int, float)) and math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(f"duration: expected a positive number of simulated seconds, got {self.duration_s!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {self.mode!r}")
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(f"speed: expected a positive number, got {self.speed!r}")
        if self.controller not in CONTROLLERS:
            raise ValueError(f"controller: expected one of {', '.join(CONTROLLERS)}, got {self.controller!r}")
        if self.zero_weights and self.controller != "snn":
            raise ValueError("zero_weights: the ablation applies to the network (controller 'snn')")


@dataclass(frozen=True)
class DemoResult:
    """What a run did. Speeds m/s (mean speed = forward distance actually driven / simulated time, so pushing
    against a wall counts as standing still), latencies µs; energy µJ per simulated second on Loihi 1, estimated
    (pipeline.snn.mapping; None without a network): energy_uj_per_s is the dynamic energy from Davies et al.
    2018's pre-silicon per-op figures, static_energy_uj_per_s the chip's static power (Blouw et al. 2019's
    measured idle, 29 mW per chip).

    latency_*: from the arrival of the packet that completed a command's step to the command's bytes
    written (the loop's measure). sensor_latency_*: from each event's sensor time to the first command
    written after it (see :class:`SensorLatency`). ``resends``: lockstep commands the world sent again
    because they had not landed after 50 ms (the same goal: the run does not depend on it). Wall-clock
    fields (not the same run to run): latencies, ``realtime_factor``, ``wall_s``, ``resends``.
    """

    seed: int
    sim_seconds: float
    collisions: int
    distance_m: float
    mean_speed_mps: float
    top_speed_mps: float
    events: int
    steps: int
    commands: int
    latency_p50_us: float
    latency_p99_us: float
    sensor_latency_p50_us: float
    sensor_latency_p99_us: float
    realtime_factor: float
    wall_s: float
    energy_uj_per_s: float | None
    static_energy_uj_per_s: float | None
    sync_timeouts: int
    resends: int
    backend: str
    controller: str
    zero_weights: bool
    mode: str
    loop: LoopReport

    #: JSON keys whose values depend on the wall clock (everything else is the same for a seed).
    WALL_CLOCK_KEYS = ("latency_p50_us", "latency_p99_us", "sensor_latency_p50_us", "sensor_latency_p99_us",
                       "realtime_factor", "wall_s", "resends")

    def summary(self) -> dict:
        """The JSON object ``spikeloop demo --json`` prints (plain Python numbers, rounded to 4 places)."""
        out = {k: getattr(self, k) for k in (
            "sim_seconds", "collisions", "distance_m", "mean_speed_mps", "events", "steps", "latency_p50_us",
            "latency_p99_us", "realtime_factor", "energy_uj_per_s", "seed", "top_speed_mps", "sync_timeouts",
            "backend", "sensor_latency_p50_us", "sensor_latency_p99_us", "commands", "wall_s", "controller",
            "zero_weights", "mode", "static_energy_uj_per_s", "resends")}
        out["mean_speed_fraction"] = self.mean_speed_mps / self.top_speed_mps
        out["merged_steps"] = self.loop.merged_steps
        out["sink_errors"] = self.loop.sink_errors

        def plain(v):
            if isinstance(v, (bool, np.bool_)):
                return bool(v)
            if isinstance(v, (int, np.integer)):
                return int(v)
            if isinstance(v, (float, np.floating)):
                return round(float(v), 4) if math.isfinite(v) else None
            return v

        return {k: plain(v) for k, v in out.items()}


class SensorLatency:
    """Event-to-command latency from each event's sensor time: a sink placed after the motor sink.

    An event at sensor time t_e lands in the step ending at s = (t_e // dt + 1) dt and first reaches the
    motors with the command of the first command instant c >= s (every ``command_period_us``). Its latency
    is the command's write time minus the wall time at which t_e happened: in real time the world clock's
    due time of t_e; in lockstep (simulated time stands still while the loop works) the release of the
    frame ending at c minus (c - t_e). So it is the sensor time the event waits for its step and its
    command plus the measured processing time. Histogram at 1 µs up to ``max_us`` (longer ones: last bin).
    """

    name = "sensor_latency"

    def __init__(self, dt_us: int, command_period_us: int, due_ns: Callable[[int], int | None],
                 max_us: int = 200_000) -> None:
        self.dt_us = dt_us
        self.period_us = command_period_us
        self.due_ns = due_ns
        self.counts = np.zeros(max_us + 1, dtype=np.int64)
        self._lock = threading.Lock()
        self._ages: dict[int, np.ndarray] = {}
        self._released: dict[int, int] = {}

    def add_frame(self, events: np.ndarray, t_us: int) -> None:
        """The world released a frame ending at ``t_us`` with ``events`` (world thread)."""
        now = time.perf_counter_ns()
        ts = events["timestamp"].astype(np.int64)
        instant = -(-((ts // self.dt_us + 1) * self.dt_us) // self.period_us) * self.period_us
        per_instant = [(int(c), np.bincount(c - ts[instant == c], minlength=self.period_us + self.dt_us))
                       for c in np.unique(instant)]
        with self._lock:
            if t_us % self.period_us == 0:
                self._released[t_us] = now
            for c, ages in per_instant:
                if c in self._ages:
                    self._ages[c] += ages
                else:
                    self._ages[c] = ages

    def write(self, command: np.ndarray, t_us: int) -> int:
        now = time.perf_counter_ns()
        with self._lock:
            ages = self._ages.pop(t_us, None)
            released = self._released.pop(t_us, now)
        reference = self.due_ns(t_us)
        if ages is not None:
            last = len(self.counts) - 1
            shift = min(last, max(0, (now - (released if reference is None else reference)) // 1000))
            end = min(last, shift + len(ages))
            self.counts[shift:end] += ages[: end - shift]
            self.counts[last] += ages[end - shift:].sum()
        return time.perf_counter_ns()

    def percentile_us(self, q: float) -> float:
        """The q-th percentile (0..100) in µs over all events so far (bin centre); nan when empty."""
        n = int(self.counts.sum())
        if n == 0:
            return math.nan
        rank = max(1, math.ceil(q / 100.0 * n))
        return float(np.searchsorted(np.cumsum(self.counts), rank)) + 0.5

    def close(self) -> None:
        pass


def demo_spec(config: DemoConfig) -> LaunchSpec:
    """The launch file with the config's seed and overrides applied, validated (LaunchError names the key);
    in lockstep (``mode="fast"``) the motors' watchdogs at their longest (LOCKSTEP_MOTOR_SETS)."""
    sets = [f"source.seed={int(config.seed)}"]
    sets += [f"network.params.{k}={toml_value(v, limit=None)}" for k, v in config.network.items()]
    sets += [f"decoder.{k}={toml_value(v, limit=None)}" for k, v in config.decoder.items()]
    if config.backend is not None:
        sets.append(f'network.backend="{config.backend}"')
    spec = load_launch(config.launch, sets)
    if config.mode == "fast":
        labels = [label for label, kind, _, _ in spec.sinks if kind == "motors"]
        sets += [f"sinks.{label}.{assignment}" for label in labels for assignment in LOCKSTEP_MOTOR_SETS]
        spec = load_launch(config.launch, sets)
    if spec.source["type"] != "world":
        raise Context(spec.path, "source", spec.display).fail(
            "type", f"expected \"world\" for spikeloop demo, got {toml_value(spec.source['type'])}")
    if spec.decoder[0] != "drive":
        raise Context(spec.path, "decoder", spec.display).fail(
            "type", f"expected \"drive\" (wheel speeds for the simulated robot), got {toml_value(spec.decoder[0])}")
    motors = [(label, values) for label, kind, values, _ in spec.sinks if kind == "motors"]
    if len(motors) != 1 or motors[0][1]["port"] != "emulated:dynamixel":
        raise LaunchError(f"{spec.display}: [sinks]: expected one motors sink with protocol \"dynamixel\" on port "
                          '"emulated:dynamixel" (the simulated robot\'s wheel servos)')
    return spec


def raster_names(network, decoder) -> list[str]:
    """Dashboard raster rows: every neuron, the output population's named by their decoder role."""
    roles = {"forward": "fwd", "backward": "back", "left": "turn L", "right": "turn R"}
    hidden = [f"{p.name} {i}" for p in network.populations if p.name != network.output_name for i in range(p.size)]
    outputs = []
    for i in range(network.n_outputs):
        named = [roles[k] for k, indices in decoder.groups.items() if i in set(np.asarray(indices).tolist())]
        outputs.append(" ".join(named) if named else f"{network.output_name} {i}")
    return hidden + outputs


def zeroed(network):
    """The network with every synaptic weight 0 (a new description; the original is untouched)."""
    projections = [dataclasses.replace(p, weights=np.zeros_like(p.weights)) for p in network.projections]
    return dataclasses.replace(network, projections=projections)


class DemoRun:
    """Builds the closed loop for a config; ``run()`` executes it. ``on_frame(run, world, events, t_us)``
    is called in the world's thread after every camera frame (for a window or a video)."""

    def __init__(self, config: DemoConfig, on_frame: Callable | None = None, on_report: Callable | None = None):
        self.config = config
        self.spec = spec = demo_spec(config)
        self.world = World(seed=config.seed)
        self._check_robot(spec)
        camera = self.world.camera
        self.chain = build_stages(spec, camera.width, camera.height)
        width, height = self.chain.output_resolution
        dt_us = spec.loop.dt_us
        self.command_period_us = dt_us * spec.loop.command_every_steps
        decoder_params = spec.decoder[1]
        drive = DifferentialDrive(decoder_params["wheel_radius_m"], decoder_params["track_m"],
                                  decoder_params["max_wheel_radps"])
        self.network = None
        if config.controller == "snn":
            self.network, self.runtime = build_network(spec, width, height)
            if config.zero_weights:
                self.network = zeroed(self.network)
                self.runtime = build(self.network, spec.network["backend"])
            self.decoder, _ = build_decoder(spec, self.network.n_outputs)
            decode = self._decode
            names = raster_names(self.network, self.decoder)
            self.recorder = DashboardRecorder(names, n_sensory=len(names) - self.network.n_outputs)
        else:
            self.runtime = BraitenbergVehicle(width, height, dt_us, drive)
            self.decoder = None
            self.recorder = DashboardRecorder([])
            decode = self._recorded(braitenberg_command)
        self._warm(width, height, dt_us)
        sinks = _open_emulated_sinks(spec)
        try:
            self.motors = next(s for s in sinks if hasattr(s, "controller"))
            wheels = ServoWheels(self.motors.controller, VELOCITY_UNIT_RAD_S)
            self.tap = CommandTap(stamp=wheels.interventions)
            realtime = config.mode == "paced"
            self.source = WorldSource(
                self.world, wheels, self.tap, frame_us=dt_us,
                duration_s=config.duration_s, command_period_us=self.command_period_us,
                realtime=realtime, speed=config.speed, packet_frames=spec.loop.command_every_steps,
                stale_us=int(next(v for _, k, v, _ in spec.sinks if k == "motors")["timeout_ms"] * 1000),
                on_frame=self._frame)
            self.latency = SensorLatency(dt_us, self.command_period_us, self.source.due_ns)
            loop_config = dataclasses.replace(spec.loop, mode="live" if realtime else "fast", speed=config.speed,
                                              idle_ms=0.0, duration_s=0.0,
                                              report_period_s=spec.loop.report_period_s if on_report else 0.0)
            self.loop = Loop(self.source, self.chain, StepBinner(dt_us, width, height, True, t0_us=0),
                             self.runtime, decode, [*sinks, self.tap, self.latency], loop_config,
                             on_report=on_report)
        except BaseException:
            for sink in sinks:
                sink.close()
            raise
        self.sinks = sinks
        self._on_frame = on_frame
        self._collisions_seen = 0

    def _warm(self, width: int, height: int, dt_us: int) -> None:
        """Compile (or load) every numba kernel before the motors open: a compile holds the GIL long enough
        (100s of ms) to starve the motor I/O thread, and the servos' bus watchdog would trip."""
        probe = World(seed=self.config.seed)
        probe.step(0.0, 0.0, dt_us * 1e-6)
        probe.render()
        DvsEmulator(probe.camera.width, probe.camera.height).warmup()
        self.runtime.warmup()
        self.chain.warmup()
        binner = StepBinner(dt_us, width, height, True)
        binner.push(dvs_events([0], [0], [0], [1]), 2 * dt_us)
        binner.flush()

    def _check_robot(self, spec: LaunchSpec) -> None:
        """The decoder's robot geometry must be the simulated robot's (the launch file describes that robot)."""
        robot = self.world.robot
        params = spec.decoder[1]
        for key, actual in (("wheel_radius_m", robot.wheel_radius_m), ("track_m", robot.track_m),
                            ("max_wheel_radps", robot.max_wheel_radps)):
            if not math.isclose(params[key], actual, rel_tol=1e-3):
                raise Context(spec.path, "decoder", spec.display).fail(
                    key, f"expected the simulated robot's {actual:.4g}, got {toml_value(params[key])}")

    def _decode(self, spikes: np.ndarray, t_us: int) -> np.ndarray:
        command = self.decoder.update(spikes, t_us)
        hidden = [self.runtime.spikes_of(p.name) for p in self.network.populations if p.name != self.network.output_name]
        self.recorder.add_step(t_us, np.concatenate(hidden + [spikes]), command)
        return command

    def _recorded(self, decode: Callable) -> Callable:
        def recorded(output, t_us: int) -> np.ndarray:
            command = decode(output, t_us)
            self.recorder.add_step(t_us, np.zeros(0, bool), command)
            return command

        return recorded

    def _frame(self, world: World, events: np.ndarray, t_us: int) -> None:
        self.latency.add_frame(events, t_us)
        self.recorder.add_frame(world, events, t_us, self._collisions_seen)
        self._collisions_seen = world.collisions
        if self._on_frame is not None:
            self._on_frame(self, world, events, t_us)

    def run(self) -> DemoResult:
        """Run to the configured duration (or until ``stop()``); motors are stopped and closed at the end."""
        self._collisions_seen = 0
        started = time.perf_counter()
        try:
            self.loop.warmup()
            report = self.loop.run()
        finally:
            self.tap.close()
            for sink in self.sinks:
                sink.close()
        wall_s = time.perf_counter() - started
        sim_s = self.world.time_s
        energy = static = None
        if self.network is not None and sim_s:
            estimate = estimate_runtime(self.runtime, map_network(self.network), total=True)
            energy, static = estimate.dynamic_pj * 1e-6 / sim_s, estimate.static_pj * 1e-6 / sim_s
        return DemoResult(
            seed=self.config.seed, sim_seconds=sim_s, collisions=self.world.collisions,
            distance_m=self.world.distance_m, mean_speed_mps=self.world.distance_m / sim_s if sim_s else 0.0,
            top_speed_mps=self.world.robot.top_speed_mps, events=self.source.events, steps=report.steps,
            commands=report.commands + report.commands_unwritten,
            latency_p50_us=_us(report.latency_p50_ms), latency_p99_us=_us(report.latency_p99_ms),
            sensor_latency_p50_us=self.latency.percentile_us(50), sensor_latency_p99_us=self.latency.percentile_us(99),
            realtime_factor=report.real_time_factor, wall_s=wall_s, energy_uj_per_s=energy,
            static_energy_uj_per_s=static,
            sync_timeouts=self.source.sync_timeouts, resends=self.source.resends,
            backend=self.spec.network["backend"] if self.network else "numpy",
            controller=self.config.controller, zero_weights=self.config.zero_weights, mode=self.config.mode,
            loop=report)

    def stop(self) -> None:
        """End the run early (thread- and signal-safe)."""
        self.source.close()
        self.loop.stop()


def _open_emulated_sinks(spec: LaunchSpec, attempts: int = 3) -> list:
    """The launch file's sinks (two wheel commands). The emulated servos answer the driver's bring-up from a
    thread of this process: on a machine busy enough to starve it past the driver's reply timeout the
    bring-up fails, so it is tried ``attempts`` times before the error is passed on."""
    for _ in range(attempts - 1):
        try:
            return open_sinks(spec, 2)
        except LaunchError as error:
            if "no reply" not in str(error):
                raise
    return open_sinks(spec, 2)


def _us(ms: float) -> float:
    return ms * 1000.0 if math.isfinite(ms) else float("nan")
