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
    """Serve ``device`` on a pty until :meth:`close`. ``tick_s`` is the physics/watchdog period (s)."""

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
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.plugged = False
        self.replug()

    # -- plug state -------------------------------------------------------------------------------
    def replug(self, power_cycle: bool = True) -> None:
        """(Re)create the pty at :attr:`path`; with ``power_cycle`` the device restarts from defaults."""
        if self.plugged:
            return
        if power_cycle:
            self.device.power_cycle()
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        self._master, self._slave = master, slave
        tmp = self.path + ".new"
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.path)
        self._stop.clear()
        self.plugged = True
        self._thread = threading.Thread(target=self._serve, name=f"twin:{self.path}", daemon=True)
        self._thread.start()

    def unplug(self) -> None:
        """Close the pty and remove :attr:`path`: the host sees EIO, then ENOENT on reopen."""
        if not self.plugged:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.plugged = False
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._master)
        os.close(self._slave)

    def close(self) -> None:
        self.unplug()
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
    def _serve(self) -> None:
        master = self._master
        device = self.device
        while not self._stop.is_set():
            ready, _, _ = select.select([master], [], [], self.tick_s)
            now = time.monotonic()
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:
                    data = b""
                if data:
                    with self._lock:
                        self._rx_log += data
                        if len(self._rx_log) > self.RX_LOG_LIMIT:
                            del self._rx_log[: len(self._rx_log) - self.RX_LOG_LIMIT]
                    reply = device.feed(data, now)
                    if reply:
                        try:
                            os.write(master, reply)
                        except OSError:
                            pass
            device.tick(now)
