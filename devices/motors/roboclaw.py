"""Basicmicro RoboClaw packet serial: pure encoders and reply checks.

Command frame: ``[address 0x80-0x87][command][data..., big-endian][CRC16 hi][CRC16 lo]``, CRC-16/XMODEM
over address, command and data; a valid write is acknowledged with one ``FF`` byte, an invalid one gets
no reply. A read request is ``[address][command]`` only; the reply is the data followed by a CRC over
the request's address and command plus the data. Speeds are signed int32 quadrature pulses per second
(QPPS); ``qpps = omega_rad_s / (2 pi) * counts_per_rev``.
"""
from __future__ import annotations

import struct

from .crc import crc16_xmodem

ACK = 0xFF

# Commands used here.
SET_SERIAL_TIMEOUT = 14   #: byte, 100 ms units; both motors stop when no byte arrives in time
READ_VERSION = 21         #: reply: text, NUL, CRC
M1_DUTY, M2_DUTY, MIXED_DUTY = 32, 33, 34   #: signed int16 duty (+-32767)
M1_SPEED, M2_SPEED, MIXED_SPEED = 35, 36, 37  #: signed int32 QPPS
READ_ENCODERS = 78        #: reply: 2 x int32 counts
READ_SPEEDS = 108         #: reply: 2 x int32 QPPS, signed

#: Data bytes in the reply to each fixed-size read command.
READ_SIZES = {READ_ENCODERS: 8, READ_SPEEDS: 8, 18: 5, 19: 5, 16: 5, 17: 5}


def command(address: int, cmd: int, data: bytes = b"") -> bytes:
    """A write command frame with its CRC (high byte first)."""
    if not 0x80 <= address <= 0x87:
        raise ValueError(f"RoboClaw address 0x{address:02X} outside 0x80..0x87")
    frame = bytes((address, cmd)) + bytes(data)
    return frame + struct.pack(">H", crc16_xmodem(frame))


def read_request(address: int, cmd: int) -> bytes:
    """A read request (address + command, no CRC)."""
    if not 0x80 <= address <= 0x87:
        raise ValueError(f"RoboClaw address 0x{address:02X} outside 0x80..0x87")
    return bytes((address, cmd))


def speed_m1m2(address: int, qpps_m1: int, qpps_m2: int) -> bytes:
    return command(address, MIXED_SPEED, struct.pack(">ii", qpps_m1, qpps_m2))


def speed_single(address: int, motor: int, qpps: int) -> bytes:
    return command(address, M1_SPEED if motor == 1 else M2_SPEED, struct.pack(">i", qpps))


def duty_m1m2(address: int, duty_m1: int, duty_m2: int) -> bytes:
    return command(address, MIXED_DUTY, struct.pack(">hh", duty_m1, duty_m2))


def set_serial_timeout(address: int, tenths_s: int) -> bytes:
    if not 0 <= tenths_s <= 255:
        raise ValueError(f"RoboClaw serial timeout {tenths_s} x 100 ms outside 0..255")
    return command(address, SET_SERIAL_TIMEOUT, bytes((tenths_s,)))


def reply(address: int, cmd: int, data: bytes) -> bytes:
    """What the controller sends back for a read: data + CRC over address, command and data."""
    return bytes(data) + struct.pack(">H", crc16_xmodem(bytes((address, cmd)) + bytes(data)))


def reply_ok(address: int, cmd: int, data_and_crc: bytes) -> bool:
    """CRC check of a read reply (``data_and_crc`` ends with the 2 CRC bytes)."""
    data, crc = data_and_crc[:-2], data_and_crc[-2:]
    return crc16_xmodem(bytes((address, cmd)) + data) == struct.unpack(">H", crc)[0]


def frame_ok(frame: bytes) -> bool:
    """CRC check of a command frame (address ... CRC)."""
    return len(frame) >= 4 and crc16_xmodem(frame[:-2]) == struct.unpack(">H", frame[-2:])[0]
