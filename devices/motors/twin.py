"""Emulated motor controllers served on a pseudo-terminal, so drivers run their real serial path.

A :class:`PtyTwin` owns a pty pair and a background thread that reads what the host writes to the slave
end, feeds it to a device model (``feed(data, now_s) -> reply bytes``; ``tick(now_s)`` for physics and
device-side watchdogs) and writes the replies back. The host opens :attr:`PtyTwin.path`, a stable
symlink to the current pty (like ``/dev/serial/by-id/...``), so :meth:`unplug` / :meth:`replug`
emulate a USB adapter leaving and coming back on the same path.
"""
from __future__ import annotations

import os
import select
import shutil
import tempfile
import threading
import time
import tty
from typing import Protocol


class DeviceModel(Protocol):
    def feed(self, data: bytes, now_s: float) -> bytes: ...

    def tick(self, now_s: float) -> None: ...

    def power_cycle(self) -> None: ...


class PtyTwin:
    """Serve ``device`` on a pty until :meth:`close`. ``tick_s`` is the physics/watchdog period (s).

    The device keeps running while unplugged (a servo stays powered when the USB adapter is pulled), so
    its own watchdog can stop it; :meth:`replug` can power-cycle it or bring the same state back.
    """

    RX_LOG_LIMIT = 1 << 20

    def __init__(self, device: DeviceModel, name: str = "twin", tick_s: float = 0.002) -> None:
        self.device = device
        self.tick_s = tick_s
        self._dir = tempfile.mkdtemp(prefix="spikeloop-twin-")
        self.path = os.path.join(self._dir, f"tty-{name}")
        self._lock = threading.Lock()
        self._rx_log = bytearray()
        self._master = -1
        self._slave = -1
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        self.plugged = False
        self._plug()
        self._thread = threading.Thread(target=self._serve, name=f"twin:{name}", daemon=True)
        self._thread.start()

    # -- plug state -------------------------------------------------------------------------------
    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        # Replies never block the serving thread (which holds the lock while it writes): when the host stops
        # reading, the slave's input queue fills and further reply bytes are dropped, as a real UART's receive
        # buffer overflows; a blocking write there hung close() and unplug() waiting for the lock.
        os.set_blocking(master, False)
        tmp = self.path + ".new"
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.path)
        with self._lock:
            self._master, self._slave = master, slave
            self.plugged = True

    def replug(self, power_cycle: bool = False) -> None:
        """Bring the port back at :attr:`path`; with ``power_cycle`` the device restarts from defaults."""
        if self.plugged:
            return
        with self._lock:
            if power_cycle:
                self.device.power_cycle()
        self._plug()
        os.write(self._wake_w, b"x")

    def unplug(self) -> None:
        """Close the pty and remove :attr:`path`: the host sees EIO, then ENOENT on reopen."""
        if not self.plugged:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        with self._lock:
            self.plugged = False
            master, slave, self._master, self._slave = self._master, self._slave, -1, -1
        os.write(self._wake_w, b"x")
        os.close(master)
        os.close(slave)

    def close(self) -> None:
        """Stop serving. Bytes the host wrote that the serving thread has not read yet are fed to the
        device first, as a real device receives everything on the wire before its cable is pulled (a
        driver's final stop written just before closing is not lost to the twin's scheduling)."""
        if self._closed:
            return
        with self._lock:
            master = self._master
            while master >= 0 and select.select([master], [], [], 0)[0]:
                if not self._receive_locked(master, time.monotonic()):
                    break
        self.unplug()
        self._closed = True
        os.write(self._wake_w, b"x")
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "PtyTwin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- inspection -------------------------------------------------------------------------------
    def received(self) -> bytes:
        """Every byte the host has written (the last ``RX_LOG_LIMIT`` bytes)."""
        with self._lock:
            return bytes(self._rx_log)

    def clear_received(self) -> None:
        with self._lock:
            self._rx_log.clear()

    # -- serving thread ---------------------------------------------------------------------------
    def _receive_locked(self, master: int, now_s: float) -> bool:
        """Read what the host wrote (up to 4 KiB), log it, feed it to the device and write its reply back.
        False when nothing could be read. Called with the lock held."""
        try:
            data = os.read(master, 4096)
        except OSError:
            return False
        if not data:
            return False
        self._rx_log += data
        if len(self._rx_log) > self.RX_LOG_LIMIT:
            del self._rx_log[: len(self._rx_log) - self.RX_LOG_LIMIT]
        reply = self.device.feed(data, now_s)
        if reply:
            try:
                os.write(master, reply)
            except OSError:
                pass
        return True

    def _serve(self) -> None:
        device = self.device
        while not self._closed:
            with self._lock:
                master = self._master
            fds = [self._wake_r] + ([master] if master >= 0 else [])
            try:
                ready, _, _ = select.select(fds, [], [], self.tick_s)
            except OSError:  # the pty was closed by unplug() while we waited on it
                ready = []
            now = time.monotonic()
            if self._wake_r in ready:
                os.read(self._wake_r, 64)
            with self._lock:
                if master >= 0 and master in ready and master == self._master:
                    self._receive_locked(master, now)
                device.tick(now)
