"""Checksums used by the motor-controller protocols (pure functions over bytes).

* CRC-16/UMTS (poly 0x8005, init 0, no reflection): Dynamixel Protocol 2.0; check("123456789") = 0xFEE8.
* CRC-16/XMODEM (poly 0x1021, init 0, no reflection): RoboClaw packet serial; check("123456789") = 0x31C3.
* CRC-7 (Pololu Maestro, reflected poly 0x91): check(83 01) = 0x17.
* XOR checksum of an ODrive ASCII line (decimal, after ``*``).
"""
from __future__ import annotations

import binascii


def _msb_first_table(poly: int) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ poly) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_UMTS_TABLE = _msb_first_table(0x8005)


def crc16_umts(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-16/UMTS of ``data`` (continuing from ``crc``), as a 16-bit integer."""
    table = _UMTS_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ byte) & 0xFF]
    return crc


def crc16_xmodem(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-16/XMODEM of ``data`` (continuing from ``crc``), as a 16-bit integer (binascii's CRC-CCITT
    with the given initial value is exactly this, in C)."""
    return binascii.crc_hqx(bytes(data), crc)


def crc7_maestro(data: bytes | bytearray | memoryview) -> int:
    """Pololu Maestro CRC-7 of ``data`` (the byte appended when CRC mode is on)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc ^ 0x91) >> 1) if crc & 1 else (crc >> 1)
    return crc


def xor_checksum(text: bytes) -> int:
    """ODrive ASCII checksum: XOR of every byte of ``text`` (the part of the line before ``*``)."""
    ck = 0
    for byte in text:
        ck ^= byte
    return ck
