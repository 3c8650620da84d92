"""The simulated world as an event source, closed through an emulated motor controller.

:class:`WorldSource` renders the robot's camera every ``frame_us`` of simulated time, turns the frames into
DVS events with the frame-to-event emulator and yields them as packets. Between frames it advances the
world's physics with the wheel speeds that the emulated motor controller *received over its pty*: the
loop's commands travel through the real driver, byte for byte, before they move the simulated robot.

Lockstep: before simulating frame k+1 the source waits until the command the loop wrote for frame k has
arrived in the emulated controller (:class:`CommandTap` tells which command that is). Simulated time
therefore never runs ahead of the controller, and a run is deterministic for a seed, whatever the
machine's speed. A command that does not arrive within ``sync_timeout_s`` (a stalled wire) is counted in
``sync_timeouts`` and the world moves on with what the controller has.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from devices.dvs_emulator import DvsEmulator, EmulatorConfig
from devices.world import World
from pipeline.core.packet import Packet, StreamInfo


class CommandTap:
    """A sink that remembers the last command written (put it after the motor sink in the loop's sinks).

    ``wait_for(t_us, timeout_s)`` blocks until a command for sensor time >= ``t_us`` has been written.
    """

    name = "command_tap"

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.command: np.ndarray | None = None
        self.t_us = -1

    def write(self, command: np.ndarray, t_us: int) -> int:
        with self._cond:
            self.command = np.array(command, dtype=float)
            self.t_us = int(t_us)
            self._cond.notify_all()
        return time.perf_counter_ns()

    def wait_for(self, t_us: int, timeout_s: float) -> np.ndarray | None:
        """The latest command once one for ``t_us`` or later exists; None on timeout."""
        with self._cond:
            if self._cond.wait_for(lambda: self.t_us >= t_us, timeout_s):
                return self.command
            return None

    def close(self) -> None:
        """Release anyone waiting."""
        with self._cond:
            self.t_us = 1 << 62
            self._cond.notify_all()


@dataclass
class WorldSource:
    """Simulated robot + camera + emulator as a Source of DVS packets (one per ``frame_us``).

    world: the simulation. received_wheels: callable returning the wheel speeds (rad/s, (2,)) the emulated
    motor controller currently has as its goal; command_period_us: how often the loop writes a command (the
    world waits for one at each multiple of it); expected_goal: the goal (rad/s, (2,)) the controller holds once
    it has received a command (its safety layer clips to the velocity limit, the protocol quantizes), so the
    world knows exactly when the new command has arrived. tap: the CommandTap in the loop's sinks (None = open loop:
    the world never waits). duration_s: simulated seconds to run (0 = forever). on_frame: called in this
    thread after each frame with (world, events, t_us), e.g. to draw a view.
    """

    world: World
    received_wheels: Callable[[], np.ndarray]
    tap: CommandTap | None = None
    frame_us: int = 1000
    duration_s: float = 0.0
    emulator_config: EmulatorConfig = field(default_factory=EmulatorConfig)
    sync_timeout_s: float = 0.5
    command_period_us: int = 1000
    expected_goal: Callable[[np.ndarray], np.ndarray] = np.asarray
    on_frame: Callable | None = None

    def __post_init__(self) -> None:
        camera = self.world.camera
        self.emulator = DvsEmulator(camera.width, camera.height, self.emulator_config)
        self.emulator.warmup()
        self.info = StreamInfo(kind="dvs", width=camera.width, height=camera.height, name=f"world:{self.world.seed}")
        self.sync_timeouts = 0
        self.events = 0
        self._closed = False

    def _wheels_for(self, t_us: int, command: np.ndarray | None) -> np.ndarray:
        """Wait until the controller holds ``command`` (as it will hold it: limited and quantized), then read it."""
        deadline = time.monotonic() + self.sync_timeout_s
        expected = None if command is None else np.asarray(self.expected_goal(command), dtype=float)
        while True:
            wheels = np.asarray(self.received_wheels(), dtype=float)
            if expected is None or self._closed or np.allclose(wheels, expected, rtol=0.0, atol=1e-9):
                return wheels
            if time.monotonic() > deadline:
                self.sync_timeouts += 1
                return wheels
            time.sleep(20e-6)

    def packets(self) -> Iterator[Packet]:
        """Frames at ``frame_us`` intervals of simulated time, until ``duration_s`` (or close())."""
        world = self.world
        dt_s = self.frame_us * 1e-6
        self.emulator.emulate(world.render(), 0)
        t_us = 0
        while not self._closed and (self.duration_s <= 0 or t_us < self.duration_s * 1e6):
            command = None
            if self.tap is not None and t_us > 0 and t_us % self.command_period_us == 0:
                command = self.tap.wait_for(t_us, self.sync_timeout_s)
                if command is None and not self._closed:
                    self.sync_timeouts += 1
            wheels = self._wheels_for(t_us, command)
            world.step(wheels[0], wheels[1], dt_s)
            t_us += self.frame_us
            events = self.emulator.emulate(world.render(), t_us)
            self.events += len(events)
            if self.on_frame is not None:
                self.on_frame(world, events, t_us)
            yield Packet(events=events, t_end_us=t_us)

    def close(self) -> None:
        """Stop producing frames (the generator ends at its next frame)."""
        self._closed = True
