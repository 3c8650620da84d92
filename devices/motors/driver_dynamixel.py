"""Dynamixel X series in velocity mode over Protocol 2.0.

Commands: one SYNC_WRITE Goal Velocity (104) per send (no status reply). Read-back: SYNC_READ Present
Velocity + Present Position (128, 8 bytes) from all servos (one status packet each, in id order), and
every ``watchdog_check_every``-th poll SYNC_READ of the Bus Watchdog register (98), so a tripped
watchdog (register = 0xFF) is noticed and the servo re-initialised (which re-arms it).
Units: 1 Goal/Present Velocity unit = 0.229 rpm = 0.0239691227 rad/s; 4096 position pulses per turn.
"""
from __future__ import annotations

import math
import struct

import numpy as np

from . import dynamixel as dxl
from .driver import Exchange, MotorDriver, MotorError

STATUS_RETURN_LEVEL = (68, 1)


class DynamixelDriver(MotorDriver):
    """Dynamixel X servos (ids 0..252) in velocity mode; options (``--opt`` / ``[sinks.<label>.driver]``):

    device_watchdog_ms: the servos' Bus Watchdog: no command for this long stops them (ms, 20 .. 2540)
    watchdog_check_every: read the Bus Watchdog register every this many read-back polls
    """

    protocol = "dynamixel"
    default_baud = 57600
    emulated_baud = 1_000_000
    half_duplex = True
    reply_timeout_s = 0.03
    #: Return Delay Time (9) factory default: 250 x 2 us.
    return_delay_s = 0.0005

    def __init__(self, ids: list[int], device_watchdog_ms: float = 100.0,
                 watchdog_check_every: int = 10) -> None:
        super().__init__(ids)
        for dxl_id in ids:
            if not 0 <= dxl_id <= 252:
                raise ValueError(f"dynamixel: id {dxl_id} out of range 0..252")
        units = math.ceil(device_watchdog_ms / dxl.BUS_WATCHDOG_UNIT_MS)
        if not 1 <= units <= 127:
            raise ValueError(f"dynamixel: device_watchdog_ms={device_watchdog_ms} outside 20..2540 ms")
        self.watchdog_units = units
        if watchdog_check_every < 1:
            raise ValueError(f"dynamixel: watchdog_check_every must be >= 1, got {watchdog_check_every}")
        self.watchdog_check_every = watchdog_check_every
        self._decoder = dxl.PacketDecoder()
        self._index = {dxl_id: k for k, dxl_id in enumerate(ids)}
        self._poll_count = 0
        self._last_poll: tuple[int, int] | None = None  # (address, length) of the last SYNC_READ
        self.watchdog_tripped = False
        self.status_errors = 0

    # -- bytes ------------------------------------------------------------------------------------
    def encode_velocity(self, omega_rad_s: np.ndarray) -> bytes:
        raw = dxl.rad_s_to_raw(omega_rad_s)
        return dxl.sync_write_goal_velocity(self.ids, raw.tolist())

    def release_bytes(self) -> bytes:
        return dxl.sync_write(dxl.TORQUE_ENABLE[0], 1, [(i, b"\x00") for i in self.ids])

    def poll_bytes(self) -> bytes:
        """SYNC_READ of Present Velocity + Present Position (128, 8 bytes) from every servo; every
        ``watchdog_check_every``-th poll reads the Bus Watchdog register (98) instead."""
        check_watchdog = self._poll_count % self.watchdog_check_every == 0
        self._poll_count += 1
        self._last_poll = dxl.BUS_WATCHDOG if check_watchdog else (dxl.PRESENT_VELOCITY[0], 8)
        return dxl.sync_read(*self._last_poll, self.ids)

    def polls_expected_replies(self) -> int:
        return len(self.ids)

    def poll_reply_bytes(self) -> int:
        # One status packet per servo: 11 bytes + the data (stuffing may add a byte; within the guard).
        return 0 if self._last_poll is None else len(self.ids) * (11 + self._last_poll[1])

    # -- replies ----------------------------------------------------------------------------------
    def reset_decoder(self) -> None:
        self._decoder.reset()

    def decode(self, data: bytes) -> list[dxl.Packet]:
        return [p for p in self._decoder.feed(data) if p.instruction == dxl.STATUS]

    @property
    def crc_errors(self) -> int:
        return self._decoder.crc_errors

    def apply(self, reply: dxl.Packet) -> None:
        k = self._index.get(reply.dxl_id)
        if k is None:
            return
        if reply.error:
            self.status_errors += 1
            return
        if len(reply.params) == 1:
            if reply.params[0] == 0xFF:
                self.watchdog_tripped = True
        elif len(reply.params) == 8:
            vel, pos = struct.unpack("<ii", reply.params)
            self.feedback.update(k, vel * dxl.VELOCITY_UNIT_RAD_S, pos * dxl.POSITION_UNIT_RAD)

    def needs_reinitialise(self) -> bool:
        return self.watchdog_tripped

    # -- bring-up ---------------------------------------------------------------------------------
    def _ask(self, link: Exchange, dxl_id: int, request: bytes, what: str, n_params: int = 0) -> dxl.Packet:
        """Send ``request`` and wait for id's status packet with ``n_params`` parameter bytes (an error
        status has none); late replies to earlier requests are skipped."""
        def accept(reply: dxl.Packet) -> bool:
            return reply.dxl_id == dxl_id and (len(reply.params) == n_params or (reply.error & 0x7F) != 0)

        replies = link.request(request, 1, self.reply_timeout_s * 4, accept)
        if not replies:
            raise MotorError(f"dynamixel on {link.port}: no reply from id {dxl_id} to {what} "
                             f"(check id, baud rate, power and wiring)")
        reply = replies[0]
        if reply.error & 0x7F:
            raise MotorError(f"dynamixel on {link.port}: id {dxl_id} answered {what} with error "
                             f"{dxl.describe_error(reply.error)}")
        return reply

    def initialise(self, link: Exchange) -> None:
        """Per servo: PING, read Status Return Level (68) and Velocity Limit (44), torque off, clear the
        Bus Watchdog, velocity mode, Goal Velocity 0, arm the Bus Watchdog, torque on. WRITEs are
        checked through their status packets when Status Return Level is 2 (the default)."""
        self.reset_decoder()
        for k, dxl_id in enumerate(self.ids):
            self._ask(link, dxl_id, dxl.ping(dxl_id), "PING", n_params=3)
            try:
                level = self._ask(link, dxl_id, dxl.read(dxl_id, *STATUS_RETURN_LEVEL), "READ",
                                  n_params=1).params[0]
            except MotorError:
                raise MotorError(f"dynamixel on {link.port}: id {dxl_id} answers PING but not READ: its "
                                 f"Status Return Level (68) is 0; set it to 2 for read-back") from None
            limit = self._ask(link, dxl_id, dxl.read(dxl_id, *dxl.VELOCITY_LIMIT), "READ Velocity Limit (44)",
                              n_params=4)
            self.device_max_velocity[k] = struct.unpack("<i", limit.params[:4])[0] * dxl.VELOCITY_UNIT_RAD_S
            steps = (
                (dxl.write_u8(dxl_id, dxl.TORQUE_ENABLE, 0), "Torque Enable = 0 (64)"),
                (dxl.write_u8(dxl_id, dxl.BUS_WATCHDOG, 0), "Bus Watchdog = 0 (98)"),
                (dxl.write_u8(dxl_id, dxl.OPERATING_MODE, dxl.OPERATING_MODE_VELOCITY),
                 "Operating Mode = velocity (11)"),
                (dxl.write(dxl_id, dxl.GOAL_VELOCITY[0], struct.pack("<i", 0)), "Goal Velocity = 0 (104)"),
                (dxl.write_u8(dxl_id, dxl.BUS_WATCHDOG, self.watchdog_units),
                 f"Bus Watchdog = {self.watchdog_units} (98)"),
                (dxl.write_u8(dxl_id, dxl.TORQUE_ENABLE, 1), "Torque Enable = 1 (64)"),
            )
            for request, what in steps:
                if level >= 2:
                    self._ask(link, dxl_id, request, "WRITE " + what)
                else:
                    link.write(request)
        self.watchdog_tripped = False
        self._last_poll = None
