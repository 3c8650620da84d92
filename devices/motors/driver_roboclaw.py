"""RoboClaw (packet serial) two-channel motor controller in closed-loop speed mode.

ids are motor channels (1 = M1, 2 = M2) on controller ``address`` (0x80-0x87). Commands: cmd 37 (both
motors) or 35/36 (one), signed QPPS; ``qpps = omega / (2 pi) * counts_per_rev`` (quadrature counts per
wheel revolution, a property of your encoder and gearbox). Read-back: cmd 108 (both speeds, signed) and
cmd 78 (both encoder counts) each poll. Device watchdog: cmd 14 serial timeout, 100 ms units (armed at
``device_watchdog_ms``). Release: duty 0 on both channels (cmd 34). Every write is acknowledged with
``FF``; replies are matched to requests in wire order and CRC-checked, and a bad CRC, a wrong
acknowledgement or a missing reply resynchronises the stream.
"""
from __future__ import annotations

import math
import struct
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from pipeline.core.schema import toml_value

from . import roboclaw as rc
from .driver import Exchange, MotorDriver, MotorError, is_positive_number

TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class Reply:
    """A decoded reply: ``cmd`` is the command it answers (0xFF for a write acknowledgement)."""

    cmd: int
    data: bytes = b""


_ACK_KIND = -1


class RoboClawDriver(MotorDriver):
    """RoboClaw motor channels (ids 1, 2) in closed-loop speed mode; options (``--opt`` /
    ``[sinks.<label>.driver]``):

    counts_per_rev: quadrature encoder counts per wheel revolution (encoder counts, gearbox included)
    address: packet-serial address of the controller (128 .. 135, 0x80 .. 0x87)
    device_watchdog_ms: the controller's serial timeout: no command for this long stops it (ms, 100 ms steps)
    max_qpps: speed limit the device enforces (encoder counts/s; left out: none)
    """

    protocol = "roboclaw"
    default_baud = 38400
    emulated_baud = 460800
    reply_timeout_s = 0.05

    def __init__(self, ids: list[int], counts_per_rev: float, address: int = 0x80,
                 device_watchdog_ms: float = 100.0, max_qpps: int | None = None) -> None:
        super().__init__(ids)
        if any(i not in (1, 2) for i in ids):
            raise ValueError(f"roboclaw: ids are motor channels 1 and/or 2, got {ids}")
        if not is_positive_number(counts_per_rev):
            raise ValueError(f"roboclaw: counts_per_rev (encoder counts per wheel revolution) must be a number "
                             f"> 0, got {toml_value(counts_per_rev)}")
        rc.read_request(address, 0)
        self.address = address
        self.counts_per_rev = float(counts_per_rev)
        self.watchdog_tenths = max(1, math.ceil(device_watchdog_ms / 100.0))
        if self.watchdog_tenths > 255:
            raise ValueError(f"roboclaw: device_watchdog_ms={device_watchdog_ms} above 25500 ms")
        if max_qpps is not None:
            if max_qpps < 1:
                raise ValueError(f"roboclaw: max_qpps must be >= 1, got {max_qpps}")
            self.device_max_velocity[:] = max_qpps / self.counts_per_rev * TWO_PI
        self._expect: deque[tuple[int, int]] = deque()
        self._buf = bytearray()
        self.crc_errors = 0
        self.resyncs = 0
        self._position = np.full(len(ids), np.nan)

    def _qpps(self, omega: np.ndarray) -> list[int]:
        return np.rint(np.asarray(omega, dtype=float) / TWO_PI * self.counts_per_rev).astype(np.int64).tolist()

    # -- bytes ------------------------------------------------------------------------------------
    def encode_velocity(self, omega_rad_s: np.ndarray) -> bytes:
        qpps = self._qpps(omega_rad_s)
        if len(self.ids) == 1:
            return rc.speed_single(self.address, self.ids[0], qpps[0])
        by_motor = dict(zip(self.ids, qpps))
        return rc.speed_m1m2(self.address, by_motor[1], by_motor[2])

    def release_bytes(self) -> bytes:
        return rc.duty_m1m2(self.address, 0, 0)

    def on_command_written(self) -> None:
        self._expect.append((_ACK_KIND, time.perf_counter_ns()))

    def poll_bytes(self) -> bytes:
        self._expire()
        now = time.perf_counter_ns()
        self._expect.append((rc.READ_SPEEDS, now))
        self._expect.append((rc.READ_ENCODERS, now))
        return rc.read_request(self.address, rc.READ_SPEEDS) + rc.read_request(self.address, rc.READ_ENCODERS)

    def polls_expected_replies(self) -> int:
        return 2

    # -- replies ----------------------------------------------------------------------------------
    def reset_decoder(self) -> None:
        self._expect.clear()
        self._buf.clear()

    def _resync(self) -> None:
        self.resyncs += 1
        self.reset_decoder()

    def _expire(self) -> None:
        """Forget requests whose reply is overdue (the device ignored an invalid packet). Runs on the
        caller's thread, so it only pops from the queue; the byte buffer belongs to the I/O thread (a
        late reply then fails its CRC there and resynchronises)."""
        limit = time.perf_counter_ns() - int(self.reply_timeout_s * 4e9)
        while self._expect and self._expect[0][1] < limit:
            self._expect.popleft()
            self.resyncs += 1

    def decode(self, data: bytes) -> list[Reply]:
        buf = self._buf
        buf += data
        out: list[Reply] = []
        while buf:
            if not self._expect:
                buf.clear()  # nothing owed: a late or stray byte
                break
            kind = self._expect[0][0]
            if kind == _ACK_KIND:
                self._expect.popleft()
                if buf.pop(0) != rc.ACK:
                    self._resync()
                    break
                out.append(Reply(rc.ACK))
                continue
            if kind == rc.READ_VERSION:
                end = buf.find(b"\x00")
                if end < 0 or len(buf) < end + 3:
                    break
                size = end + 1
            else:
                size = rc.READ_SIZES[kind]
                if len(buf) < size + 2:
                    break
            chunk = bytes(buf[:size + 2])
            del buf[:size + 2]
            self._expect.popleft()
            if not rc.reply_ok(self.address, kind, chunk):
                self.crc_errors += 1
                self._resync()
                break
            out.append(Reply(kind, chunk[:-2]))
        return out

    def apply(self, reply: Reply) -> None:
        if reply.cmd not in (rc.READ_SPEEDS, rc.READ_ENCODERS):
            return
        values = struct.unpack(">ii", reply.data)
        for k, motor in enumerate(self.ids):
            value = values[motor - 1] / self.counts_per_rev * TWO_PI
            if reply.cmd == rc.READ_ENCODERS:
                self._position[k] = value
            else:
                self.feedback.update(k, value, self._position[k])

    # -- bring-up ---------------------------------------------------------------------------------
    def _write(self, link: Exchange, frame: bytes, what: str) -> None:
        self._expect.append((_ACK_KIND, time.perf_counter_ns()))
        if not link.request(frame, 1, self.reply_timeout_s * 4):
            self.reset_decoder()
            raise MotorError(f"roboclaw on {link.port}: no acknowledgement from address "
                             f"0x{self.address:02X} to {what}")

    def initialise(self, link: Exchange) -> None:
        self.reset_decoder()
        self._expect.append((rc.READ_VERSION, time.perf_counter_ns()))
        version = link.request(rc.read_request(self.address, rc.READ_VERSION), 1, self.reply_timeout_s * 4)
        if not version:
            self.reset_decoder()
            raise MotorError(f"roboclaw on {link.port}: no reply from address 0x{self.address:02X} to "
                             f"READ VERSION (21) (check packet-serial mode, address, baud rate)")
        self.version = version[0].data.rstrip(b"\x00\n").decode("ascii", "replace")
        self._write(link, rc.set_serial_timeout(self.address, self.watchdog_tenths),
                    f"SET SERIAL TIMEOUT (14) = {self.watchdog_tenths} x 100 ms")
        self._write(link, self.stop_bytes(), "zero speed")
