"""Firmata (StandardFirmata 2.5) messages for PWM and servo outputs: pure encoders and a decoder.

MIDI-like: command bytes have the MSB set, data bytes are 7-bit, 14-bit values go LSB7 then MSB7.
ANALOG_MESSAGE ``E0|pin lsb msb`` (pins 0-15; others use EXTENDED_ANALOG ``F0 6F pin lsb msb F7``) sets a
PWM duty (0-255) or a servo angle (0-180 degrees). StandardFirmata has no host timeout.
"""
from __future__ import annotations

ANALOG_MESSAGE = 0xE0
DIGITAL_MESSAGE = 0x90
REPORT_ANALOG = 0xC0
REPORT_DIGITAL = 0xD0
SET_PIN_MODE = 0xF4
SET_DIGITAL_PIN_VALUE = 0xF5
REPORT_VERSION = 0xF9
SYSTEM_RESET = 0xFF
START_SYSEX = 0xF0
END_SYSEX = 0xF7

# Sysex commands.
EXTENDED_ANALOG = 0x6F
PIN_STATE_QUERY = 0x6D
PIN_STATE_RESPONSE = 0x6E
SERVO_CONFIG = 0x70
REPORT_FIRMWARE = 0x79

# Pin modes.
OUTPUT = 1
PWM = 3
SERVO = 4


def _pin(pin: int) -> int:
    if not 0 <= pin <= 127:
        raise ValueError(f"Firmata pin {pin} outside 0..127")
    return pin


def seven_bit(value: int, n: int = 2) -> bytes:
    """``value`` as ``n`` 7-bit bytes, least significant first."""
    return bytes((value >> (7 * i)) & 0x7F for i in range(n))


def set_pin_mode(pin: int, mode: int) -> bytes:
    return bytes((SET_PIN_MODE, _pin(pin), mode))


def set_digital_pin_value(pin: int, value: int) -> bytes:
    return bytes((SET_DIGITAL_PIN_VALUE, _pin(pin), 1 if value else 0))


def analog_write(pin: int, value: int) -> bytes:
    """PWM duty (0-255) or servo angle (0-180) on ``pin``; extended analog above pin 15."""
    if not 0 <= value <= 0x3FFF:
        raise ValueError(f"Firmata analog value {value} outside 0..16383")
    if _pin(pin) < 16:
        return bytes((ANALOG_MESSAGE | pin,)) + seven_bit(value)
    return bytes((START_SYSEX, EXTENDED_ANALOG, pin)) + seven_bit(value) + bytes((END_SYSEX,))


def servo_config(pin: int, min_us: int, max_us: int) -> bytes:
    return (bytes((START_SYSEX, SERVO_CONFIG, _pin(pin))) + seven_bit(min_us) + seven_bit(max_us)
            + bytes((END_SYSEX,)))


def report_firmware() -> bytes:
    return bytes((START_SYSEX, REPORT_FIRMWARE, END_SYSEX))


def pin_state_query(pin: int) -> bytes:
    return bytes((START_SYSEX, PIN_STATE_QUERY, _pin(pin), END_SYSEX))


def sysex(command: int, payload: bytes) -> bytes:
    return bytes((START_SYSEX, command)) + bytes(payload) + bytes((END_SYSEX,))


def from_seven_bit(data: bytes) -> int:
    return sum((b & 0x7F) << (7 * i) for i, b in enumerate(data))


class SysexDecoder:
    """Collects ``F0 ... F7`` frames from a byte stream as ``(command, payload)``; other bytes are skipped."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out = []
        while True:
            start = self._buf.find(START_SYSEX)
            if start < 0:
                self._buf.clear()
                return out
            end = self._buf.find(END_SYSEX, start)
            if end < 0:
                del self._buf[:start]
                return out
            frame = bytes(self._buf[start + 1:end])
            del self._buf[:end + 1]
            if frame and all(b < 0x80 for b in frame):
                out.append((frame[0], frame[1:]))
