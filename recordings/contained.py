"""Run a risky library call in a forked child first, so that a hang or a crash inside C code (which Python
cannot interrupt) becomes an error instead of taking the whole process with it.

Used before libhdf5 parses a file's metadata (recordings.hdf5_reader): libhdf5 can loop forever or crash
on a damaged object header or heap. The child is a ``fork`` of the caller (a few ms; h5py's own fork
handlers keep its global lock consistent), its stdout/stderr go to /dev/null, and it ends with
``os._exit`` (no atexit handlers, no flushing of the caller's buffers). Where ``os.fork`` does not exist
(Windows) the work is not contained and :func:`run_contained` returns None without running it.
"""
from __future__ import annotations

import faulthandler
import gc
import os
import signal
import time
from typing import Callable

#: Longest pause (s) between two checks whether the child has ended.
POLL_MAX_S = 0.002


def run_contained(work: Callable[[], None], timeout_s: float) -> str | None:
    """Run ``work()`` in a forked child; None when it returned or raised (an exception is the caller's to
    meet again in-process), else why not: "did not finish within N s" (the child is killed) or "crashed
    (SIGSEGV)" / "exited with status N"."""
    if not hasattr(os, "fork"):
        return None
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        gc.disable()  # a collection would touch (and so copy) every page of the caller's heap
        faulthandler.disable()  # a crash is the caller's to report, not a traceback on the terminal
        try:
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            work()
        except BaseException:  # noqa: BLE001  (an exception is a finished walk; the caller reports it)
            pass
        os._exit(0)
    deadline = time.monotonic() + timeout_s
    pause = 0.0002
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return f"did not finish within {timeout_s:g} s"
        time.sleep(pause)
        pause = min(pause * 2, POLL_MAX_S)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        return f"crashed ({signal.Signals(number).name if number in signal.valid_signals() else number})"
    code = os.waitstatus_to_exitcode(status)
    return None if code == 0 else f"exited with status {code}"
