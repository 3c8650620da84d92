"""Emulated Dynamixel X-series servos (XL430-W250 control table) behind one Protocol 2.0 bus.

Parses the real byte stream (CRC checked, stuffing removed), answers PING/READ/WRITE/SYNC_READ with
status packets (status return level 2), applies SYNC_WRITE, enforces the torque-enable lock on the
EEPROM area (Access error), Velocity Limit (Data Limit error) and the Bus Watchdog (98): with torque on,
no instruction packet for ``value x 20 ms`` stops the servo, the register reads 0xFF and Goal writes fail
with Data Range until 0 is written.
"""
from __future__ import annotations

import struct

from . import dynamixel as dxl
from .physics import MotorPhysics

MODEL_XL430_W250 = 1060
FIRMWARE_VERSION = 46
DEFAULT_VELOCITY_LIMIT = 265
EEPROM_END = 64


class DynamixelBus:
    """Servos with ``ids`` on one bus; ``physics`` holds their velocity (rad/s) and position (rad)."""

    def __init__(self, ids: list[int], tau_s: float = 0.05) -> None:
        self.ids = list(ids)
        self.physics = MotorPhysics(len(self.ids), tau_s)
        self._index = {dxl_id: k for k, dxl_id in enumerate(self.ids)}
        self.decoder = dxl.PacketDecoder()
        self.power_cycle()

    def power_cycle(self) -> None:
        """Factory state: torque off, position mode, watchdog off, motors at rest."""
        self.tables = [bytearray(256) for _ in self.ids]
        for dxl_id, table in zip(self.ids, self.tables):
            struct.pack_into("<H", table, dxl.MODEL_NUMBER[0], MODEL_XL430_W250)
            table[6] = FIRMWARE_VERSION
            table[7] = dxl_id
            table[dxl.OPERATING_MODE[0]] = 3
            struct.pack_into("<i", table, dxl.VELOCITY_LIMIT[0], DEFAULT_VELOCITY_LIMIT)
            table[68] = 2
        self.last_instruction_s = [None] * len(self.ids)
        self.watchdog_trips = 0
        self.decoder.reset()
        self.physics.target[:] = 0.0
        self.physics.velocity[:] = 0.0

    # -- register access ------------------------------------------------------------------------
    def _i32(self, k: int, field: tuple[int, int]) -> int:
        return struct.unpack_from("<i", self.tables[k], field[0])[0]

    def torque_on(self, k: int) -> bool:
        return self.tables[k][dxl.TORQUE_ENABLE[0]] == 1

    def watchdog_tripped(self, k: int) -> bool:
        return self.tables[k][dxl.BUS_WATCHDOG[0]] == 0xFF

    def velocity_rad_s(self, dxl_id: int) -> float:
        return float(self.physics.velocity[self._index[dxl_id]])

    def _update_target(self, k: int) -> None:
        active = (self.torque_on(k) and self.tables[k][dxl.OPERATING_MODE[0]] == dxl.OPERATING_MODE_VELOCITY
                  and not self.watchdog_tripped(k))
        goal = self._i32(k, dxl.GOAL_VELOCITY) if active else 0
        self.physics.target[k] = goal * dxl.VELOCITY_UNIT_RAD_S

    def _write(self, k: int, address: int, data: bytes) -> int:
        """Apply a WRITE to servo ``k``; returns the status error code (0 = ok)."""
        table = self.tables[k]
        end = address + len(data)
        if end > len(table) or not data:
            return 5
        if address < EEPROM_END and self.torque_on(k) and not (address <= dxl.TORQUE_ENABLE[0] < end):
            return 7
        goal_fields = (dxl.GOAL_VELOCITY[0], dxl.GOAL_POSITION[0], 100, 102)
        touches_goal = any(address <= g < end for g in goal_fields)
        if touches_goal and self.watchdog_tripped(k) and not (address <= dxl.BUS_WATCHDOG[0] < end):
            return dxl.ERR_DATA_RANGE
        if address <= dxl.GOAL_VELOCITY[0] and end >= dxl.GOAL_VELOCITY[0] + 4:
            goal = struct.unpack_from("<i", data, dxl.GOAL_VELOCITY[0] - address)[0]
            if abs(goal) > self._i32(k, dxl.VELOCITY_LIMIT):
                return 6
        table[address:end] = data
        self._update_target(k)
        return 0

    def _read(self, k: int, address: int, length: int) -> bytes:
        struct.pack_into("<i", self.tables[k], dxl.PRESENT_VELOCITY[0],
                         int(round(self.physics.velocity[k] / dxl.VELOCITY_UNIT_RAD_S)))
        struct.pack_into("<i", self.tables[k], dxl.PRESENT_POSITION[0],
                         int(round(self.physics.position[k] / dxl.POSITION_UNIT_RAD)))
        return bytes(self.tables[k][address:address + length])

    # -- DeviceModel ----------------------------------------------------------------------------
    def feed(self, data: bytes, now_s: float) -> bytes:
        self.physics.advance(now_s)
        replies = bytearray()
        for pkt in self.decoder.feed(data):
            if pkt.instruction == dxl.STATUS:
                continue
            replies += self._handle(pkt, now_s)
        return bytes(replies)

    def _handle(self, pkt: dxl.Packet, now_s: float) -> bytes:
        targets = range(len(self.ids)) if pkt.dxl_id == dxl.BROADCAST_ID else (
            [self._index[pkt.dxl_id]] if pkt.dxl_id in self._index else [])
        for k in targets:
            self.last_instruction_s[k] = now_s
        if pkt.instruction == dxl.SYNC_WRITE:
            address, length = struct.unpack_from("<HH", pkt.params)
            body = pkt.params[4:]
            for off in range(0, len(body) - length, length + 1):
                if body[off] in self._index:
                    self._write(self._index[body[off]], address, body[off + 1: off + 1 + length])
            return b""
        if pkt.instruction == dxl.SYNC_READ:
            address, length = struct.unpack_from("<HH", pkt.params)
            return b"".join(dxl.status(i, 0, self._read(self._index[i], address, length))
                            for i in pkt.params[4:] if i in self._index)
        if pkt.dxl_id == dxl.BROADCAST_ID or not targets:
            return b""
        k = targets[0]
        if pkt.instruction == dxl.PING:
            return dxl.status(pkt.dxl_id, 0, self._read(k, 0, 2) + bytes((FIRMWARE_VERSION,)))
        if pkt.instruction == dxl.READ and len(pkt.params) == 4:
            address, length = struct.unpack("<HH", pkt.params)
            if address + length > 256:
                return dxl.status(pkt.dxl_id, 4)
            return dxl.status(pkt.dxl_id, 0, self._read(k, address, length))
        if pkt.instruction == dxl.WRITE and len(pkt.params) > 2:
            address = pkt.params[0] | (pkt.params[1] << 8)
            return dxl.status(pkt.dxl_id, self._write(k, address, pkt.params[2:]))
        return dxl.status(pkt.dxl_id, 2)

    def tick(self, now_s: float) -> None:
        self.physics.advance(now_s)
        for k, table in enumerate(self.tables):
            period = table[dxl.BUS_WATCHDOG[0]]
            last = self.last_instruction_s[k]
            if (0 < period < 0xFF and self.torque_on(k) and last is not None
                    and now_s - last > period * dxl.BUS_WATCHDOG_UNIT_MS / 1000.0):
                table[dxl.BUS_WATCHDOG[0]] = 0xFF
                struct.pack_into("<i", table, dxl.GOAL_VELOCITY[0], 0)
                self.watchdog_trips += 1
                self._update_target(k)
