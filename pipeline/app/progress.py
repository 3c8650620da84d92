"""A progress line on stderr that works on a terminal and in a log.

On a terminal the line is redrawn in place (``\\r``) a few times a second; when stderr is a pipe or a file
(systemd, ``2> log``, CI) it is printed as a plain line every few seconds, so a log shows progress without
carriage returns.
"""
from __future__ import annotations

import sys
import time

#: Seconds between redraws on a terminal, and between lines in a pipe or file.
TTY_PERIOD_S = 0.25
PIPE_PERIOD_S = 5.0


class ProgressLine:
    """``show(text)`` at most every TTY_PERIOD_S (terminal, redrawn) or PIPE_PERIOD_S (pipe/file, one line
    each); ``done()`` ends a terminal line. ``quiet`` shows nothing."""

    def __init__(self, quiet: bool = False, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.period_s = TTY_PERIOD_S if self.tty else PIPE_PERIOD_S
        self.shown = time.monotonic() if not self.tty else 0.0  # a pipe's first line after one period
        self.drawn = False

    def due(self) -> bool:
        """Whether a line would be shown now (lets callers skip formatting it)."""
        return not self.quiet and time.monotonic() - self.shown >= self.period_s

    def show(self, text: str) -> None:
        if not self.due():
            return
        self.shown = time.monotonic()
        if self.tty:
            print(f"\r{text}", end="", file=self.stream, flush=True)
            self.drawn = True
        else:
            print(text, file=self.stream, flush=True)

    def done(self) -> None:
        if self.drawn:
            print(file=self.stream, flush=True)
            self.drawn = False
