"""The simulated world as an event source, closed through an emulated motor controller.

:class:`WorldSource` renders the robot's camera every ``frame_us`` of simulated time, turns the frames into
DVS events with the frame-to-event emulator and yields them as packets. The world's physics moves the
robot with the wheel speeds that the emulated motor controller *received over its pty*
(:class:`ServoWheels`): the loop's commands travel through the real driver and safety layer, byte for
byte, before they move the simulated robot. Two clocks:

* lockstep (``realtime=False``, for fast and headless runs): at every command instant (a multiple of
  ``command_period_us``) the world blocks until the command the loop wrote for that instant (seen by the
  :class:`CommandTap` in the loop's sinks) is what the servos hold, and holds it until the next command
  instant. The wait has no timeout: simulated time never runs ahead of the controller, so a run is the
  same for a seed on any machine under any load. It ends at once when the source is closed (the loop
  closes its source when it stops or dies). Only a safety action of the motor layer taken after the
  command was written (its command watchdog, the servos' bus watchdog, a lost link: all on the wall
  clock, e.g. after the process stalled for 200 ms) can keep it from landing: the world then goes on
  with what the servos hold and counts it in ``sync_timeouts``. Safety actions between commands do not
  reach the robot: no simulated time passes while the loop is stalled.
* real time (``realtime=True``, for a window): frames are due every ``frame_us / speed`` of wall time, like
  a camera's, and each step uses what the servos hold at that moment (a late command is late for the
  robot too; a command instant with no command for ``stale_us``, so long that the servos' command
  watchdog stops a real robot, counts in ``sync_timeouts``). ``pause()`` stops the world's clock,
  ``resume()`` starts it again.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from devices.dvs_emulator import DvsEmulator, EmulatorConfig
from devices.world import World
from pipeline.core.clock import wait_until
from pipeline.core.packet import Packet, StreamInfo

#: Wall time (s) between looks at the servos while the world waits for a command to land.
POLL_S = 20e-6
#: Lockstep: a command not landed after this much wall time (s) is sent again, the same bytes.
RESEND_S = 0.05


class CommandTap:
    """A sink that remembers the last command written (put it after the motor sink in the loop's sinks).

    ``wait_for(t_us)`` blocks until a command for sensor time >= ``t_us`` has been written, or the tap is
    closed (then it returns None). ``stamp``: called as each command is written (right after the motor
    sink wrote it), its value kept with the command (e.g. the motor layer's safety-action count).
    """

    name = "command_tap"

    def __init__(self, stamp: Callable[[], int] | None = None) -> None:
        self._cond = threading.Condition()
        self._stamp = stamp
        self.command: np.ndarray | None = None
        self.stamp = 0
        self.t_us = -1
        self.closed = False

    def write(self, command: np.ndarray, t_us: int) -> int:
        stamp = self._stamp() if self._stamp is not None else 0
        with self._cond:
            self.command = np.array(command, dtype=float)
            self.stamp = stamp
            self.t_us = int(t_us)
            self._cond.notify_all()
        return time.perf_counter_ns()

    def wait_for(self, t_us: int) -> tuple[np.ndarray, int] | None:
        """(the latest command, its stamp) once one for ``t_us`` or later exists; None once the tap is closed."""
        with self._cond:
            self._cond.wait_for(lambda: self.t_us >= t_us or self.closed)
            return None if self.closed else (self.command, self.stamp)

    def close(self) -> None:
        """Release anyone waiting, now and later."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class ServoWheels:
    """The robot's two wheel servos: an emulated controller from ``devices.motors.open_motors(...,
    "emulated:<protocol>", ...)`` whose twin holds the goal velocities it received over its pty.

    controller: the safety-wrapped controller (``.twin.device.physics.target`` is the servos' goal, rad/s).
    unit_radps: the protocol's velocity quantum (rad/s per register unit; Dynamixel: 0.229 rpm).
    """

    def __init__(self, controller, unit_radps: float) -> None:
        if getattr(controller, "twin", None) is None:
            raise ValueError("ServoWheels: expected an emulated controller (port 'emulated:<protocol>')")
        self.controller = controller
        self.unit_radps = float(unit_radps)
        self._device = controller.twin.device

    def goal_radps(self) -> np.ndarray:
        """The goal velocities (rad/s, (2,)) the servos hold now."""
        return np.array(self._device.physics.target, dtype=float)

    def expected_radps(self, command: np.ndarray) -> np.ndarray:
        """The goal (rad/s, (2,)) the servos hold once ``command`` (rad/s) has landed: clipped to the safety
        layer's velocity limit, then quantized to register units as the driver encodes it."""
        limit = self.controller.velocity_limit
        clipped = np.clip(np.asarray(command, dtype=float), -limit, limit)
        return np.rint(clipped / self.unit_radps) * self.unit_radps

    def accepting(self) -> bool:
        """Whether every servo takes goal writes now (torque on, its bus watchdog not tripped); a command
        written while one does not is refused by the servo and cannot land until the host re-initialises it."""
        device = self._device
        if not hasattr(device, "torque_on"):
            return True
        return all(device.torque_on(k) and not device.watchdog_tripped(k) for k in range(len(device.ids)))

    def resend(self, command: np.ndarray) -> None:
        """Send ``command`` (rad/s) again through the controller (its safety layer, driver and wire)."""
        self.controller.send(np.asarray(command, dtype=float))

    def interventions(self) -> int:
        """Safety actions so far that may override a command: command watchdog stops, e-stops, refused or
        dropped commands, link errors, reconnections and re-initialisations, servo bus watchdog trips."""
        safety = self.controller.safety_counters
        link = self.controller.link.counters
        return (safety.watchdog_stops + safety.estops + safety.refused + link.dropped + link.errors
                + link.reconnects + link.reinitialisations + int(getattr(self._device, "watchdog_trips", 0)))


@dataclass
class WorldSource:
    """Simulated robot + camera + emulator as a Source of DVS packets (one per ``frame_us``).

    world: the simulation. wheels: the servos the robot's wheels follow. tap: the CommandTap in the loop's
    sinks (lockstep: the world waits for each command; None = open loop, the world never waits).
    command_period_us: how often the loop writes a command (sensor µs). duration_s: simulated seconds to
    run (0 = until closed). realtime / speed: wall-clock frames at ``speed`` simulated seconds per second
    (see the module docstring). packet_frames: frames per packet (a camera ships packets, not frames; one
    packet per command period hands the loop its work in one piece, with no added command latency).
    stale_us: real time, a command instant at which the newest command is older than this (sensor µs)
    counts in ``sync_timeouts`` (default 200 ms: the servos' command watchdog would have stopped the robot).
    on_frame: called in this thread after each frame with (world, events, t_us).
    """

    world: World
    wheels: ServoWheels
    tap: CommandTap | None = None
    frame_us: int = 1000
    duration_s: float = 0.0
    emulator_config: EmulatorConfig = field(default_factory=EmulatorConfig)
    command_period_us: int = 1000
    realtime: bool = False
    speed: float = 1.0
    packet_frames: int = 1
    stale_us: int = 200_000
    on_frame: Callable | None = None

    def __post_init__(self) -> None:
        if self.frame_us <= 0 or self.command_period_us <= 0 or self.command_period_us % self.frame_us:
            raise ValueError(f"WorldSource: expected a positive frame_us dividing command_period_us, got "
                             f"{self.frame_us} and {self.command_period_us}")
        if not self.speed > 0:
            raise ValueError(f"WorldSource: speed: expected a positive number, got {self.speed}")
        if self.packet_frames < 1:
            raise ValueError(f"WorldSource: packet_frames: expected an integer >= 1, got {self.packet_frames}")
        camera = self.world.camera
        self.emulator = DvsEmulator(camera.width, camera.height, self.emulator_config)
        self.emulator.warmup()
        self.info = StreamInfo(kind="dvs", width=camera.width, height=camera.height, name=f"world:{self.world.seed}")
        self.sync_timeouts = 0
        self.resends = 0
        self.events = 0
        #: Real time: (perf_counter_ns, sensor µs) of the world clock's origin (None until it starts).
        self.clock: tuple[int, int] | None = None
        self._closed = False
        self._running = threading.Event()
        self._running.set()

    # -- control (any thread) ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop producing frames: the generator ends at its next frame, or at once if it is waiting."""
        self._closed = True
        if self.tap is not None:
            self.tap.close()
        self._running.set()

    def pause(self) -> None:
        """Real time: stop the world's clock after the current frame (the robot stands still in time)."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def due_ns(self, t_us: int) -> int | None:
        """Real time: the wall time (perf_counter_ns) at which sensor time ``t_us`` is due; None in lockstep
        or before the clock starts."""
        clock = self.clock
        if clock is None:
            return None
        return clock[0] + int((t_us - clock[1]) * 1000 / self.speed)

    # -- frames -----------------------------------------------------------------------------------------

    def packets(self) -> Iterator[Packet]:
        """Packets of ``packet_frames`` frames (``frame_us`` each) of simulated time, until ``duration_s``
        (or close())."""
        world = self.world
        dt_s = self.frame_us * 1e-6
        self.emulator.emulate(world.render(), 0)
        held = self.wheels.goal_radps()
        pending: list[np.ndarray] = []
        t_us = 0
        if self.realtime:
            self.clock = (time.perf_counter_ns(), 0)
        while not self._closed and (self.duration_s <= 0 or t_us < self.duration_s * 1e6):
            command_instant = t_us > 0 and t_us % self.command_period_us == 0
            if self.realtime:
                self._wait_due(t_us + self.frame_us)
                if self._closed:
                    return
                held = self.wheels.goal_radps()
                if command_instant and self.tap is not None and self.tap.t_us < t_us - self.stale_us:
                    self.sync_timeouts += 1
            elif command_instant and self.tap is not None:
                written = self.tap.wait_for(t_us)
                if written is None:
                    return
                held = self._landed(*written)
                if self._closed:
                    return
            world.step(held[0], held[1], dt_s)
            t_us += self.frame_us
            events = self.emulator.emulate(world.render(), t_us)
            self.events += len(events)
            if self.on_frame is not None:
                self.on_frame(world, events, t_us)
            pending.append(events)
            end = self.duration_s > 0 and t_us >= self.duration_s * 1e6
            if len(pending) == self.packet_frames or end:
                yield Packet(events=np.concatenate(pending) if len(pending) > 1 else pending[0], t_end_us=t_us)
                pending = []

    def _landed(self, command: np.ndarray, interventions_at_write: int) -> np.ndarray:
        """Lockstep: block until the servos hold ``command`` (as they will hold it: limited and quantized)
        and return it. A command that has not landed after ``RESEND_S`` of wall time is sent again (the
        same goal, so the outcome does not depend on it; counted in ``resends``): under CPU contention the
        emulated wire has been seen to lose one. Only a safety action of the motor layer after the command
        was written (``interventions_at_write``, the tap's stamp) can override it, and servos that refuse
        goal writes (tripped bus watchdog, torque off) cannot take it: then what the servos hold instead."""
        expected = self.wheels.expected_radps(command)
        resend_at = time.monotonic() + RESEND_S
        while not self._closed:
            goal = self.wheels.goal_radps()
            if np.allclose(goal, expected, rtol=0.0, atol=1e-9):
                return goal
            if self.wheels.interventions() > interventions_at_write or not self.wheels.accepting():
                self.sync_timeouts += 1
                return goal
            if time.monotonic() > resend_at:
                self.wheels.resend(command)
                self.resends += 1
                resend_at = time.monotonic() + RESEND_S
            time.sleep(POLL_S)
        return expected

    def _wait_due(self, t_us: int) -> None:
        """Real time: wait until frame ``t_us`` is due; a pause shifts the clock by its length."""
        if not self._running.is_set():
            paused_ns = time.perf_counter_ns()
            self._running.wait()
            start, origin_us = self.clock
            self.clock = (start + time.perf_counter_ns() - paused_ns, origin_us)
        wait_until(self.due_ns(t_us), spin_ns=0)
