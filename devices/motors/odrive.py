"""ODrive ASCII protocol (firmware 0.5 era): pure line encoders and a reply-line decoder.

A line is ``command *CK`` + ``\\n`` where CK is the decimal XOR of every byte before ``*`` (the space
included); a line with a wrong checksum is silently ignored by the ODrive. Replies end in ``\\r\\n`` and
carry ``*CK`` (XOR of the reply text) when the request did. Velocity ``v <axis> <turns/s>``, feedback
``f <axis>`` -> ``<pos turns> <vel turns/s>``, ``u <axis>`` feeds the watchdog, ``r``/``w`` read/write a
property. ``v``/``w``/``u`` are not acknowledged; only bad input gets a reply.
"""
from __future__ import annotations

from .crc import xor_checksum

AXIS_STATE_IDLE = 1
AXIS_STATE_CLOSED_LOOP_CONTROL = 8
CONTROL_MODE_VELOCITY = 2
INPUT_MODE_PASSTHROUGH = 1
AXIS_ERROR_WATCHDOG_TIMER_EXPIRED = 0x800

#: reply lines that report a bad request instead of answering it
ERROR_REPLIES = ("invalid command format", "invalid motor", "invalid property", "unknown command",
                 "not implemented")


def line(command: str, checksum: bool = True) -> bytes:
    """One request line; with ``checksum`` the ``*CK`` suffix is added."""
    if "\n" in command or "*" in command or ";" in command:
        raise ValueError(f"ODrive command may not contain newline, '*' or ';': {command!r}")
    if not checksum:
        return (command + "\n").encode("ascii")
    text = (command + " ").encode("ascii")
    return text + b"*" + str(xor_checksum(text)).encode("ascii") + b"\n"


def velocity(axis: int, turns_s: float, checksum: bool = True) -> bytes:
    return line(f"v {axis} {turns_s:.6g}", checksum)


def feedback_request(axis: int, checksum: bool = True) -> bytes:
    return line(f"f {axis}", checksum)


def read(prop: str, checksum: bool = True) -> bytes:
    return line(f"r {prop}", checksum)


def write(prop: str, value, checksum: bool = True) -> bytes:
    return line(f"w {prop} {value}", checksum)


def reply_line(text: str, checksum: bool) -> bytes:
    """A reply as the ODrive sends it (used by the emulated twin)."""
    body = text.encode("ascii")
    if checksum:
        body += b"*" + str(xor_checksum(body)).encode("ascii")
    return body + b"\r\n"


class LineDecoder:
    """Splits received bytes into reply lines; checks and strips ``*CK`` (bad lines counted, dropped)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.checksum_errors = 0

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        out = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > 512:
                    self._buf.clear()
                return out
            raw = bytes(self._buf[:end]).rstrip(b"\r")
            del self._buf[:end + 1]
            star = raw.rfind(b"*")
            if star >= 0:
                try:
                    ok = int(raw[star + 1:]) == xor_checksum(raw[:star])
                except ValueError:
                    ok = False
                if not ok:
                    self.checksum_errors += 1
                    continue
                raw = raw[:star]
            out.append(raw.decode("ascii", "replace").strip())
