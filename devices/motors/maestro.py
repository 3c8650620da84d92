"""Pololu Maestro compact serial protocol: pure encoders.

Command bytes have the MSB set, data bytes are 7-bit. Set Target: ``84 channel target&7F (target>>7)&7F``
with the target in quarter-microseconds (0 = pulses off). For continuous-rotation servos and RC ESCs
the pulse width is the velocity command: ``neutral_us`` (typically 1500 us) = stop. The Pololu protocol
(for several devices on one line) frames the same command as ``AA device command&7F data...``.
"""
from __future__ import annotations

POLOLU_START = 0xAA
DEFAULT_DEVICE_NUMBER = 12

SET_TARGET = 0x84
SET_SPEED = 0x87
SET_ACCELERATION = 0x89
GET_POSITION = 0x90        #: reply: 2 bytes LE, the output pulse in quarter-us
GET_MOVING_STATE = 0x93    #: reply: 1 byte
GET_ERRORS = 0xA1          #: reply: 2 bytes LE; reading clears the error register
GO_HOME = 0xA2

ERROR_SERIAL_TIMEOUT = 1 << 5
ERROR_BITS = {0: "serial signal", 1: "serial overrun", 2: "serial buffer full", 3: "serial CRC",
              4: "serial protocol", 5: "serial timeout", 6: "script stack", 7: "script call stack",
              8: "script program counter"}


def _channel(channel: int) -> int:
    if not 0 <= channel <= 23:
        raise ValueError(f"Maestro channel {channel} outside 0..23")
    return channel


def set_target(channel: int, quarter_us: int) -> bytes:
    if not 0 <= quarter_us <= 0x3FFF:
        raise ValueError(f"Maestro target {quarter_us} quarter-us outside 0..16383")
    return bytes((SET_TARGET, _channel(channel), quarter_us & 0x7F, (quarter_us >> 7) & 0x7F))


def get_position(channel: int) -> bytes:
    return bytes((GET_POSITION, _channel(channel)))


def get_errors() -> bytes:
    return bytes((GET_ERRORS,))


def pololu(device_number: int, compact: bytes) -> bytes:
    """One compact-protocol command re-framed for the Pololu protocol."""
    if not 0 <= device_number <= 127:
        raise ValueError(f"Maestro device number {device_number} outside 0..127")
    return bytes((POLOLU_START, device_number, compact[0] & 0x7F)) + compact[1:]


def describe_errors(bits: int) -> str:
    return ", ".join(name for bit, name in ERROR_BITS.items() if bits & (1 << bit)) or "none"
