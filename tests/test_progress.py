"""pipeline.app.progress: redrawn in place on a terminal; in a pipe or log one plain line every few seconds
(issue 14: progress must also show when stderr is not a terminal, without carriage returns)."""
from __future__ import annotations

import io

from pipeline.app import progress
from pipeline.app.progress import ProgressLine


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def drive(line: ProgressLine, clock: Clock, seconds: float, step_s: float = 0.05) -> None:
    for i in range(int(seconds / step_s)):
        clock.now += step_s
        line.show(f"step {i}")


def test_a_pipe_gets_plain_lines_every_few_seconds(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    out = io.StringIO()
    line = ProgressLine(stream=out)
    drive(line, clock, 21.0)
    line.done()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == int(21.0 // progress.PIPE_PERIOD_S) and all(s.startswith("step ") for s in lines)


def test_a_terminal_line_is_redrawn_in_place_and_ended(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    out = Terminal()
    line = ProgressLine(stream=out)
    drive(line, clock, 2.0)
    line.done()
    text = out.getvalue()
    assert text.count("\r") >= 2.0 / progress.TTY_PERIOD_S - 1 and text.endswith("\n") and text.count("\n") == 1


def test_quiet_shows_nothing(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    out = io.StringIO()
    line = ProgressLine(quiet=True, stream=out)
    drive(line, clock, 20.0)
    line.done()
    assert out.getvalue() == ""
