"""Command sinks: where the loop's commands go.

A sink has ``name``, ``write(command, t_us) -> int`` and ``close()``. ``command`` is a float64 array
(shape (n,), e.g. wheel velocities in rad/s), ``t_us`` the sensor time (µs) of the network step it came
from; ``write`` must not wait for a device reply and returns ``time.perf_counter_ns()`` at the moment the
bytes were written, which the loop uses for event-to-command latency.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from devices.motors import open_motors
from pipeline.loop import SinkFatalError

LOG_FORMATS = ("csv", "jsonl")


class CommandLogSink:
    """Writes every command to a new text file: CSV (``t_us,c0,c1,...``) or JSON lines
    (``{"t_us": ..., "command": [...]}``). Floats are written with ``repr`` (shortest exact round trip), so
    two runs that produce the same commands produce byte-identical files. ``write`` returns the time the
    line entered the file's buffer (flushed on ``close``)."""

    def __init__(self, path: str | Path, format: str = "csv", name: str = "command_log") -> None:
        if format not in LOG_FORMATS:
            raise ValueError(f"format: expected one of {', '.join(LOG_FORMATS)}, got {format!r}")
        self.name = name
        self.path = Path(path)
        self.format = format
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", encoding="ascii", newline="\n")
        self._header_written = False

    def write(self, command: np.ndarray, t_us: int) -> int:
        values = [repr(float(v)) for v in command]
        if self.format == "csv":
            if not self._header_written:
                self._file.write("t_us," + ",".join(f"c{i}" for i in range(len(values))) + "\n")
                self._header_written = True
            self._file.write(f"{int(t_us)}," + ",".join(values) + "\n")
        else:
            self._file.write(json.dumps({"t_us": int(t_us), "command": [float(v) for v in command]}) + "\n")
        return time.perf_counter_ns()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def read_command_log(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a :class:`CommandLogSink` file back: (t_us int64 (n,), commands float64 (n, k))."""
    path = Path(path)
    text = path.read_text(encoding="ascii").splitlines()
    if path.suffix == ".jsonl" or (text and text[0].startswith("{")):
        rows = [json.loads(line) for line in text if line]
        t = np.array([r["t_us"] for r in rows], dtype=np.int64)
        c = np.array([r["command"] for r in rows], dtype=np.float64).reshape(len(rows), -1)
        return t, c
    rows = [line.split(",") for line in text[1:] if line]
    t = np.array([int(r[0]) for r in rows], dtype=np.int64)
    c = np.array([[float(v) for v in r[1:]] for r in rows], dtype=np.float64).reshape(len(rows), -1)
    return t, c


class MotorSink:
    """Sends each command (wheel/joint velocities in rad/s, one per id) to a motor controller opened with
    ``devices.motors.open_motors(protocol, port, ids, **options)``; ``port`` may be ``"emulated:<protocol>"``.

    The controller's safety layer (watchdog, limits, reconnect with backoff) stays in charge. A link that
    stays down for ``fatal_after_ms`` (0 = never give up) is declared lost for good:
    ``write`` raises :class:`SinkFatalError` and the loop stops. ``close`` stops the motors (zero
    velocity, torque off) and closes the port. ``write`` returns 0 when the controller queued or dropped
    the command instead of writing it.
    """

    def __init__(self, protocol: str, port: str, ids: Sequence[int], name: str = "motors",
                 fatal_after_ms: float = 2000.0, **options) -> None:
        self.name = name
        self.protocol = protocol
        self.port = port
        self.ids = tuple(int(i) for i in ids)
        self.fatal_after_ns = int(fatal_after_ms * 1e6)
        self.controller = open_motors(protocol, port, list(self.ids), **options)
        self._down_since_ns = 0

    def write(self, command: np.ndarray, t_us: int) -> int:
        if len(command) != len(self.ids):
            raise ValueError(f"{self.name}: command has {len(command)} values for {len(self.ids)} motor ids")
        if not self.controller.connected:
            now = time.perf_counter_ns()
            if not self._down_since_ns:
                self._down_since_ns = now
            elif self.fatal_after_ns and now - self._down_since_ns > self.fatal_after_ns:
                raise SinkFatalError(f"{self.protocol} on {self.port}: link down for more than "
                                     f"{self.fatal_after_ns / 1e6:g} ms")
        else:
            self._down_since_ns = 0
        return int(self.controller.send(command))

    def estop(self) -> None:
        """Latched emergency stop: zero velocity and torque off, until ``reset_estop``."""
        self.controller.estop()

    def reset_estop(self) -> None:
        """Release the e-stop; the controller re-initialises the device at zero velocity."""
        self.controller.reset_estop()

    def close(self) -> None:
        self.controller.close()


DECISION_FORMATS = ("jsonl", "text")


class DecisionLogSink:
    """Writes the classifier's decisions (commands laid out as pipeline.decoders.classifier.DECISION_FIELDS),
    one line each, to a new file or to stdout (``path`` "-"): JSON lines ``{"sample", "decision" ("early" |
    "end"), "class", "confidence", "latency_ms", "early_class", "early_latency_ms", "label", "correct"}`` or
    ``key=value`` text. ``classes``: class names by index; ``names(i)``: sample i's name. ``label`` and
    ``correct`` are null when the sample's class is unknown. Lines are flushed as written (a decision is
    read as it happens)."""

    def __init__(self, path: str | Path, classes: Sequence[str], names, format: str = "jsonl",
                 name: str = "decisions") -> None:
        if format not in DECISION_FORMATS:
            raise ValueError(f"format: expected one of {', '.join(DECISION_FORMATS)}, got {format!r}")
        self.name = name
        self.classes = tuple(classes)
        self.names = names
        self.format = format
        self.path = None if str(path) == "-" else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8", newline="\n")
        else:
            self._file = sys.stdout

    def record(self, command: np.ndarray) -> dict:
        """The line's fields for one decision command."""
        sample, final, index, confidence, latency_ms, label, early_index, early_ms = command.tolist()
        known = label >= 0
        return {"sample": self.names(int(sample)), "decision": "end" if final else "early",
                "class": self.classes[int(index)], "confidence": round(confidence, 6), "latency_ms": latency_ms,
                "early_class": self.classes[int(early_index)], "early_latency_ms": early_ms,
                "label": self.classes[int(label)] if known else None,
                "correct": bool(index == label) if known else None}

    def write(self, command: np.ndarray, t_us: int) -> int:
        fields = self.record(command)
        if self.format == "jsonl":
            line = json.dumps(fields)
        else:
            line = " ".join(f"{k}={'-' if v is None else str(v).lower() if isinstance(v, bool) else v}"
                            for k, v in fields.items())
        self._file.write(line + "\n")
        self._file.flush()
        return time.perf_counter_ns()

    def close(self) -> None:
        if self.path is not None and not self._file.closed:
            self._file.close()
