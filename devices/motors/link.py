"""The serial link of one motor controller: non-blocking hot-path writes, an I/O thread for read-back,
and reconnection with backoff.

* ``write_command(bytes)`` (hot path) never waits: one ``os.write`` on the port's non-blocking fd. When
  more than 1 ms of earlier bytes is still waiting for the wire (estimated from the baud rate: 10 bits
  per byte), a half-duplex bus is still carrying a reply (request + return delay + reply length, computed, not
  waited for), or the kernel buffer is full, the command is *coalesced*: it replaces any older unsent
  command and the I/O thread writes it as soon as the wire is free (``write_command`` then returns 0
  instead of a timestamp). A due feedback request rides in the same write as the command.
* The I/O thread reads and decodes replies into the driver's feedback, sends feedback requests itself
  when no commands flow (every ``1 / feedback_hz`` s), re-initialises the device when its read-back
  says so (e.g. a tripped device watchdog), and after a serial error (``SerialException``, ``OSError`` such as EIO, ``termios.error``)
  closes the port, reopens it with exponential backoff and re-runs the driver's ``initialise`` (which
  re-arms the device watchdog). pyserial opens and configures the port (exclusive lock, raw mode, baud);
  the reads and writes go straight to its file descriptor because pyserial's ``write`` with
  ``write_timeout=0`` spins on EAGAIN.
"""
from __future__ import annotations

import errno
import os
import select
import termios
import threading
import time
from dataclasses import dataclass, fields
from typing import Any, Callable

import serial

from .driver import MotorDriver, MotorError

#: What a lost or broken port raises (pyserial 3.5 on Linux; see the motor protocol reference).
SERIAL_ERRORS = (serial.SerialException, OSError, termios.error)

#: longest the I/O thread sleeps with nothing due (the hot path wakes it through a pipe when it queues)
_IDLE_WAIT_S = 0.1
#: the I/O thread sends a feedback request on its own only after this long without a command
_POLL_IDLE_NS = 2_000_000
#: margin after the expected end of a half-duplex reply before the host may transmit again
_BUS_GUARD_NS = 200_000
#: a command may be queued behind at most this much unsent wire time (older bytes still going out)
_BACKLOG_NS = 1_000_000


@dataclass
class LinkCounters:
    commands_sent: int = 0      #: velocity commands fully handed to the OS
    bytes_written: int = 0      #: all bytes written (commands, polls, init, stops)
    coalesced: int = 0          #: commands deferred to the I/O thread (wire busy / reply due)
    dropped: int = 0            #: commands refused because the link was down or initialising
    errors: int = 0             #: serial errors (each one takes the link down)
    reconnects: int = 0         #: successful re-initialisations after a link loss
    reinitialisations: int = 0  #: re-initialisations requested by device read-back (watchdog trip)
    polls: int = 0              #: feedback requests sent
    replies: int = 0            #: replies decoded
    reply_timeouts: int = 0     #: feedback requests left unanswered

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class SerialLink:
    """Owns the port of one controller. ``on_up`` runs (in the I/O thread) after every (re)initialisation."""

    def __init__(self, driver: MotorDriver, port: str, baud: int, *, feedback_hz: float = 50.0,
                 backoff_s: tuple[float, float] = (0.05, 1.0),
                 on_up: Callable[[], None] | None = None) -> None:
        self.driver = driver
        self.port = port
        self.baud = int(baud)
        self.feedback_period_ns = int(1e9 / feedback_hz) if feedback_hz > 0 else 0
        self.backoff_s = backoff_s
        self.on_up = on_up
        self.counters = LinkCounters()
        self.last_error: str = ""
        self._ns_per_byte = int(10e9 / self.baud)
        self._lock = threading.RLock()
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._up = False
        self._fault = False
        self._tail = b""
        self._tail_is_command = False
        self._latest = b""
        self._urgent = b""
        self._wire_free_ns = 0
        self._bus_free_ns = 0
        self._replies_due = 0
        self._reply_deadline_ns = 0
        self._last_command_ns = 0
        self._next_poll_ns = 0
        self._reinit_requested = False
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Open the port and initialise the device (raises MotorError with the reason), then run the I/O thread."""
        try:
            self._open()
        except SERIAL_ERRORS as exc:
            self._close_wake_pipe()
            raise MotorError(f"{self.driver.protocol}: cannot open serial port {self.port!r}: {exc}") from exc
        try:
            self._initialise()
        except BaseException:
            self._close_port()
            self._close_wake_pipe()
            raise
        self._thread = threading.Thread(target=self._run, name=f"motors:{self.port}", daemon=True)
        self._thread.start()

    @property
    def up(self) -> bool:
        """Initialised and accepting commands (False while reconnecting or re-initialising)."""
        return self._up

    @property
    def lost(self) -> bool:
        """The port itself failed and is not (yet) back; a re-initialisation alone is not a loss."""
        return self._fault or self._serial is None

    def close(self, final: bytes = b"") -> bool:
        """Stop the I/O thread, write ``final`` (stop + release), close the port. A link that is down (a
        serial error, a failed re-initialisation, between reconnect attempts) gets its port reopened once
        for ``final``: a garbled reply must not leave the drive enabled. Returns True when ``final`` was
        written completely; otherwise ``last_error`` says why (e.g. the port is gone)."""
        self._stop.set()
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        written = not final
        with self._lock:
            if self._urgent:
                self._write_urgent_locked(self._urgent)
            if final and (self._serial is None or self._fault):
                self._close_port()
                try:
                    self._open()
                except SERIAL_ERRORS as exc:
                    self.last_error = f"cannot reopen {self.port} for the final stop: {type(exc).__name__}: {exc}"
            if final and self._serial is not None and not self._fault:
                written = self._write_all(final, timeout_s=0.2)
                time.sleep(min(0.05, len(final) * self._ns_per_byte / 1e9 + 0.002))
            self._close_port()
        if not self._thread or not self._thread.is_alive():
            self._close_wake_pipe()
        return written

    def _close_wake_pipe(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    def _wake(self) -> None:
        """Wake the I/O thread from its select (async-signal-safe: one non-blocking pipe write)."""
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass

    # -- hot path ---------------------------------------------------------------------------------
    def write_command(self, data: bytes) -> int:
        """Write one velocity command now if the wire is free; returns perf_counter_ns after the write,
        or 0 when it was coalesced (sent later by the I/O thread) or dropped (link down)."""
        with self._lock:
            if not self._up:
                self.counters.dropped += 1
                return 0
            now = time.perf_counter_ns()
            if self._tail or now < self._wire_free_ns - _BACKLOG_NS or now < self._bus_free_ns:
                if not self._latest:
                    self._wake()
                self._latest = data
                self.counters.coalesced += 1
                return 0
            self._latest = b""
            written = self._send(data, now, with_poll=self._poll_due(now, idle_only=False))
            if self._urgent:
                self._write_urgent_locked(self._urgent)
                return 0
            return time.perf_counter_ns() if written else 0

    def write_urgent(self, data: bytes) -> None:
        """Write ``data`` now, ahead of anything queued (e-stop); waits at most 50 ms for buffer space.

        Safe from a signal handler: when the handler interrupted this same thread inside the link (in
        the middle of a command write), the bytes are written as soon as that write is complete, so an
        interrupted command can never reach the wire after the stop."""
        if self._lock._is_owned():
            self._urgent = data
            self._wake()
            return
        with self._lock:
            self._write_urgent_locked(data)

    def _write_urgent_locked(self, data: bytes) -> None:
        self._urgent = b""
        self._latest = b""
        if self._serial is None or self._fault:
            return
        if self._tail:
            self._write_all(self._tail, 0.05)
            self._tail = b""
        self._write_all(data, 0.05)

    def request_reinitialise(self) -> None:
        """Ask the I/O thread to run the driver's initialise again (e.g. after an e-stop reset)."""
        self._reinit_requested = True
        self._wake()

    # -- Exchange (initialisation only) -----------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not self._write_all(data, timeout_s=0.5):
            raise MotorError(f"{self.driver.protocol}: write to {self.port} failed: {self.last_error}")

    def request(self, data: bytes, n_replies: int, timeout_s: float,
                accept: Callable[[Any], bool] | None = None) -> list[Any]:
        self.write(data)
        replies: list[Any] = []
        deadline = time.monotonic() + timeout_s + len(data) * self._ns_per_byte / 1e9
        while len(replies) < n_replies:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                chunk = self._raw_read()
                if chunk is None:
                    raise MotorError(f"{self.driver.protocol}: read from {self.port} failed: {self.last_error}")
                replies += [r for r in self.driver.decode(chunk) if accept is None or accept(r)]
        return replies

    # -- internals --------------------------------------------------------------------------------
    def _open(self) -> None:
        ser = serial.Serial(self.port, self.baud, timeout=0, write_timeout=0, exclusive=True)
        try:
            ser.set_low_latency_mode(True)
        except (ValueError, OSError, AttributeError, NotImplementedError, termios.error):
            pass
        ser.reset_input_buffer()
        self._serial, self._fd = ser, ser.fd
        self._fault = False
        self._tail = self._latest = b""
        self._replies_due = 0
        self._bus_free_ns = 0

    def _close_port(self) -> None:
        self._up = False
        ser, self._serial, self._fd = self._serial, None, -1
        if ser is not None:
            try:
                ser.close()
            except SERIAL_ERRORS:
                pass

    def _initialise(self) -> None:
        self.driver.reset_decoder()
        self.driver.initialise(self)
        self._next_poll_ns = time.perf_counter_ns() + self.feedback_period_ns
        self._up = True
        if self.on_up is not None:
            self.on_up()

    def _fail(self, exc: BaseException) -> None:
        self.counters.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._fault = True
        self._up = False

    def _raw_write(self, data: bytes, now_ns: int) -> int:
        """One non-blocking write; bytes written (0 if the buffer is full), -1 on a serial error."""
        try:
            n = os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except SERIAL_ERRORS as exc:
            self._fail(exc)
            return -1
        self.counters.bytes_written += n
        self._wire_free_ns = max(now_ns, self._wire_free_ns) + n * self._ns_per_byte
        return n

    def _write_all(self, data: bytes, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while data:
            n = self._raw_write(data, time.perf_counter_ns())
            if n < 0:
                return False
            data = data[n:]
            if data:
                if time.monotonic() > deadline:
                    self.last_error = "timed out waiting for the output buffer"
                    return False
                select.select([], [self._fd], [], 0.005)
        return True

    def _raw_read(self) -> bytes | None:
        try:
            chunk = os.read(self._fd, 4096)
        except BlockingIOError:
            return b""
        except SERIAL_ERRORS as exc:
            self._fail(exc)
            return None
        if not chunk:
            self._fail(OSError(errno.EIO, "device reports readiness to read but returned no data"))
            return None
        return chunk

    def _run(self) -> None:
        delay = self.backoff_s[0]
        while not self._stop.is_set():
            if self._fault or self._serial is None:
                with self._lock:
                    self._close_port()
                if self._reconnect():
                    delay = self.backoff_s[0]
                    self.counters.reconnects += 1
                else:
                    self._stop.wait(delay)
                    delay = min(delay * 2.0, self.backoff_s[1])
                continue
            try:
                self._service()
            except SERIAL_ERRORS as exc:
                with self._lock:
                    self._fail(exc)
            except Exception as exc:  # a malformed reply must not kill the thread: resync via reconnect
                with self._lock:
                    self._fail(exc)

    def _reconnect(self) -> bool:
        """Reopen and re-initialise; the lock is not held while waiting for the device's replies
        (the hot path sees the link down and drops commands meanwhile)."""
        try:
            with self._lock:
                self._open()
            self._initialise()
            return True
        except Exception as exc:  # MotorError, serial errors, or a malformed reply: retry with backoff
            self.last_error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._close_port()
            return False

    def _poll_due(self, now: int, idle_only: bool) -> bool:
        """A feedback request is due. The hot path piggybacks it on a command; the I/O thread sends it
        alone only when no command went out for 2 ms (or the request is half a period overdue)."""
        if not self.feedback_period_ns or now < self._next_poll_ns:
            return False
        if not idle_only:
            return True
        return (now - self._last_command_ns > _POLL_IDLE_NS
                or now >= self._next_poll_ns + self.feedback_period_ns // 2)

    def _send(self, command: bytes, now: int, with_poll: bool) -> bool:
        """Write ``command`` (may be b"") plus, if asked, a feedback request in one write. True when the
        command went out completely; a remainder is kept in the tail for the I/O thread."""
        if command:
            self.driver.on_command_written()
        poll = self.driver.poll_bytes() if with_poll else b""
        if with_poll:
            self._next_poll_ns = now + self.feedback_period_ns
        data = command + poll
        if not data:
            return False
        n = self._raw_write(data, now)
        if n < 0:
            return False
        if poll:
            self.counters.polls += 1
            if self.driver.half_duplex:
                reply_ns = (self.driver.return_delay_s * 1e9 + self.driver.poll_reply_bytes() * self._ns_per_byte
                            + _BUS_GUARD_NS)
                self._bus_free_ns = self._wire_free_ns + int(reply_ns)
            self._replies_due = self.driver.polls_expected_replies()
            self._reply_deadline_ns = max(self._wire_free_ns, self._bus_free_ns) + int(self.driver.reply_timeout_s * 1e9)
        if n < len(data):
            self._tail, self._tail_is_command = data[n:], n < len(command)
        if command:
            self._last_command_ns = now
            if n >= len(command):
                self.counters.commands_sent += 1
                return True
        return False

    def _service(self) -> None:
        now = time.perf_counter_ns()
        wake = [now + int(_IDLE_WAIT_S * 1e9)]
        if not self._tail:
            free_at = max(self._wire_free_ns - _BACKLOG_NS, self._bus_free_ns)
            if self._latest:
                wake.append(free_at)
            if self.feedback_period_ns:
                # While commands flow they carry the requests; wake only for the overdue fallback.
                flowing = now - self._last_command_ns <= _POLL_IDLE_NS
                poll_at = self._next_poll_ns + (self.feedback_period_ns // 2 if flowing else 0)
                wake.append(max(poll_at, free_at))
        if self._replies_due:
            wake.append(self._reply_deadline_ns)
        wait_s = max(0.0, (min(wake) - now) / 1e9)
        want_write = [self._fd] if self._tail else []
        ready, _, _ = select.select([self._fd, self._wake_r], want_write, [], wait_s)
        if self._wake_r in ready:
            try:
                os.read(self._wake_r, 64)
            except BlockingIOError:
                pass
        if self._fd in ready:
            chunk = self._raw_read()
            if chunk is None:
                return
            for reply in self.driver.decode(chunk):
                self.counters.replies += 1
                self.driver.apply(reply)
                if self._replies_due:
                    self._replies_due -= 1
        with self._lock:
            if self._urgent:
                self._write_urgent_locked(self._urgent)
            now = time.perf_counter_ns()
            if self._replies_due and now >= self._reply_deadline_ns:
                self.counters.reply_timeouts += 1
                self._replies_due = 0
            self._flush(now)
            reinitialise = self._reinit_requested or self.driver.needs_reinitialise()
            self._reinit_requested = False
            if reinitialise:
                self._up = False
                self._latest = b""
        if reinitialise:
            self.counters.reinitialisations += 1
            try:
                self._initialise()
            except MotorError as exc:
                with self._lock:
                    self._fail(exc)

    def _flush(self, now: int) -> None:
        """Finish a partial write, then send the newest coalesced command and/or a due feedback request."""
        if self._tail:
            n = self._raw_write(self._tail, now)
            if n < 0:
                return
            if n >= len(self._tail) and self._tail_is_command:
                self.counters.commands_sent += 1
            self._tail = self._tail[n:]
            if self._tail:
                return
        if now < self._wire_free_ns - _BACKLOG_NS or now < self._bus_free_ns:
            return
        if self._latest:
            data, self._latest = self._latest, b""
            self._send(data, now, with_poll=self._poll_due(now, idle_only=False))
        elif self._poll_due(now, idle_only=True):
            self._send(b"", now, with_poll=True)
