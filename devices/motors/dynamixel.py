"""ROBOTIS Dynamixel Protocol 2.0 packets (X series): pure encoders and an incremental decoder.

Layout (multi-byte fields little-endian)::

    instruction  FF FF FD 00 ID LEN_L LEN_H INST  params...       CRC_L CRC_H
    status       FF FF FD 00 ID LEN_L LEN_H 55    ERR params...   CRC_L CRC_H

LEN counts the bytes after LEN (instruction, params, CRC). Byte stuffing (e-Manual "Packet Process"):
on transmit, after every ``FF FF FD`` from INST through the last param one ``FD`` is inserted, LEN is
updated and the CRC (CRC-16/UMTS) is computed over the stuffed bytes; on receive the CRC is checked over
the bytes as received and only then the stuffing is removed.

Velocity unit: Goal/Present Velocity are signed int32 in 0.229 rpm = 0.0239691227 rad/s.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from .crc import crc16_umts

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE

# Instructions.
PING = 0x01
READ = 0x02
WRITE = 0x03
SYNC_READ = 0x82
SYNC_WRITE = 0x83
STATUS = 0x55

# X-series control table (XL430-W250 / XM430): (address, size in bytes).
MODEL_NUMBER = (0, 2)
OPERATING_MODE = (11, 1)
VELOCITY_LIMIT = (44, 4)
TORQUE_ENABLE = (64, 1)
HARDWARE_ERROR_STATUS = (70, 1)
BUS_WATCHDOG = (98, 1)
GOAL_VELOCITY = (104, 4)
GOAL_POSITION = (116, 4)
PRESENT_VELOCITY = (128, 4)
PRESENT_POSITION = (132, 4)

OPERATING_MODE_VELOCITY = 1
BUS_WATCHDOG_UNIT_MS = 20
#: 0.229 rpm in rad/s: the unit of Goal/Present Velocity and Velocity Limit.
VELOCITY_UNIT_RAD_S = 0.229 * 2.0 * 3.141592653589793 / 60.0
#: Present Position unit: 4096 pulses per revolution, in rad.
POSITION_UNIT_RAD = 2.0 * 3.141592653589793 / 4096.0

# Status error codes (bits 0-6 of ERR); bit 7 is the hardware Alert.
ERROR_NAMES = {1: "Result Fail", 2: "Instruction", 3: "CRC", 4: "Data Range", 5: "Data Length",
               6: "Data Limit", 7: "Access"}
ERR_DATA_RANGE = 4
ERR_ALERT = 0x80

_MAX_LEN = 1024


def add_stuffing(body: bytes) -> bytes:
    """Insert an ``FD`` after every ``FF FF FD`` in ``body`` (INST through the last param)."""
    if b"\xff\xff\xfd" not in body:
        return bytes(body)
    out = bytearray()
    ff_run = 0
    for byte in body:
        out.append(byte)
        if byte == 0xFD and ff_run >= 2:
            out.append(0xFD)
            ff_run = 0
        else:
            ff_run = ff_run + 1 if byte == 0xFF else 0
    return bytes(out)


def remove_stuffing(body: bytes) -> bytes:
    """Undo :func:`add_stuffing`: drop the ``FD`` that follows each ``FF FF FD``."""
    if b"\xff\xff\xfd\xfd" not in body:
        return bytes(body)
    out = bytearray()
    ff_run = 0
    skip = False
    for byte in body:
        if skip:
            skip = False
            ff_run = 0
            if byte == 0xFD:
                continue
        out.append(byte)
        if byte == 0xFD and ff_run >= 2:
            skip = True
        ff_run = ff_run + 1 if byte == 0xFF else 0
    return bytes(out)


def packet(dxl_id: int, instruction: int, params: bytes = b"") -> bytes:
    """One complete, stuffed Protocol 2.0 packet (instruction or, with 0x55, status)."""
    if not 0 <= dxl_id <= 0xFE or dxl_id in (0xFD,):
        raise ValueError(f"Dynamixel id {dxl_id} out of range 0..252 (or 254 broadcast)")
    body = add_stuffing(bytes((instruction,)) + bytes(params))
    frame = HEADER + bytes((dxl_id,)) + struct.pack("<H", len(body) + 2) + body
    return frame + struct.pack("<H", crc16_umts(frame))


def ping(dxl_id: int) -> bytes:
    return packet(dxl_id, PING)


def read(dxl_id: int, address: int, length: int) -> bytes:
    return packet(dxl_id, READ, struct.pack("<HH", address, length))


def write(dxl_id: int, address: int, data: bytes) -> bytes:
    return packet(dxl_id, WRITE, struct.pack("<H", address) + bytes(data))


def write_u8(dxl_id: int, field: tuple[int, int], value: int) -> bytes:
    """WRITE of a 1-byte control-table field (e.g. TORQUE_ENABLE)."""
    return write(dxl_id, field[0], bytes((value & 0xFF,)))


def sync_read(address: int, length: int, ids: list[int]) -> bytes:
    """SYNC_READ (broadcast): each listed servo answers with a status packet, in list order."""
    return packet(BROADCAST_ID, SYNC_READ, struct.pack("<HH", address, length) + bytes(ids))


def sync_write(address: int, length: int, data_by_id: list[tuple[int, bytes]]) -> bytes:
    """SYNC_WRITE (broadcast, no status reply) of ``length`` bytes at ``address`` to each id."""
    params = bytearray(struct.pack("<HH", address, length))
    for dxl_id, data in data_by_id:
        if len(data) != length:
            raise ValueError(f"SYNC_WRITE data for id {dxl_id} is {len(data)} bytes, expected {length}")
        params.append(dxl_id)
        params += data
    return packet(BROADCAST_ID, SYNC_WRITE, bytes(params))


def sync_write_goal_velocity(ids: list[int], raw: list[int]) -> bytes:
    """SYNC_WRITE Goal Velocity (104, int32, 0.229 rpm units) for each id."""
    return sync_write(GOAL_VELOCITY[0], 4, [(i, struct.pack("<i", r)) for i, r in zip(ids, raw)])


def status(dxl_id: int, error: int, params: bytes = b"") -> bytes:
    """A status packet (what a servo sends back)."""
    return packet(dxl_id, STATUS, bytes((error,)) + bytes(params))


def rad_s_to_raw(omega_rad_s) -> np.ndarray:
    """Goal Velocity register values (int64, same shape) for velocities in rad/s: the nearest 0.229 rpm."""
    return np.rint(np.asarray(omega_rad_s, dtype=float) / VELOCITY_UNIT_RAD_S).astype(np.int64)


@dataclass(frozen=True)
class Packet:
    """A decoded packet: ``params`` are unstuffed; for a status packet ``error`` is the ERR byte."""

    dxl_id: int
    instruction: int
    params: bytes
    error: int = 0


class PacketDecoder:
    """Incremental decoder for a byte stream in either direction.

    ``feed(data)`` returns the complete packets found so far; garbage before a header is skipped and
    packets with a bad CRC are dropped and counted in ``crc_errors`` (``skipped_bytes`` counts the rest).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.crc_errors = 0
        self.skipped_bytes = 0

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[Packet]:
        buf = self._buf
        buf += data
        out: list[Packet] = []
        while True:
            start = buf.find(HEADER)
            if start < 0:
                keep = 3 if len(buf) >= 3 else len(buf)
                self.skipped_bytes += len(buf) - keep
                del buf[: len(buf) - keep]
                return out
            if start:
                self.skipped_bytes += start
                del buf[:start]
            if len(buf) < 7:
                return out
            length = buf[5] | (buf[6] << 8)
            if length < 3 or length > _MAX_LEN:
                self.skipped_bytes += 1
                del buf[:1]
                continue
            total = 7 + length
            if len(buf) < total:
                return out
            frame = bytes(buf[:total])
            if crc16_umts(frame[:-2]) != (frame[-2] | (frame[-1] << 8)):
                self.crc_errors += 1
                del buf[:1]
                continue
            del buf[:total]
            body = remove_stuffing(frame[7:-2])
            inst = body[0]
            if inst == STATUS and len(body) >= 2:
                out.append(Packet(frame[4], inst, body[2:], body[1]))
            else:
                out.append(Packet(frame[4], inst, body[1:]))


def describe_error(error: int) -> str:
    """Human-readable text for a status ERR byte."""
    parts = []
    if error & 0x7F:
        parts.append(ERROR_NAMES.get(error & 0x7F, f"code {error & 0x7F}"))
    if error & ERR_ALERT:
        parts.append("Alert (hardware error, see address 70)")
    return ", ".join(parts) or "ok"
