"""Turn a source specification string into a Source: the one place the CLI and launch files name sources.

Specifications:
  PATH                   a recording in any supported format (replayed; ``speed``/``fast``/``loop`` apply)
  camera                 the first attached iniVation camera;  camera:SERIAL  a specific one
  webcam                 the first ordinary camera through the frame-to-event emulator;  webcam:N  camera N
  video:PATH             a video file through the frame-to-event emulator
  tcp://HOST:PORT        an AEDAT 4 network stream (dv-processing NetworkWriter / DV software)
"""
from __future__ import annotations

from pathlib import Path

from pipeline.source import Source

SOURCE_KINDS = ("PATH", "camera[:SERIAL]", "webcam[:N]", "video:PATH", "tcp://HOST:PORT")


class SourceSpecError(ValueError):
    """A source specification that names nothing usable."""


def open_source(spec: str, *, speed: float = 1.0, fast: bool = False, loop: bool = False,
                start_us: int | None = None, chunk_us: int = 1000, strict: bool = False) -> Source:
    """Open the source that ``spec`` names (see the module docstring). Replay options apply to files."""
    if spec == "camera" or spec.startswith("camera:"):
        from devices.dvs import DvsCameraSource

        return DvsCameraSource(spec.partition(":")[2] or None)
    if spec == "webcam" or spec.startswith("webcam:"):
        from devices.webcam import WebcamSource

        return WebcamSource(int(spec.partition(":")[2] or 0))
    if spec.startswith("video:"):
        from devices.webcam import WebcamSource

        return WebcamSource(spec.partition(":")[2])
    if spec.startswith("tcp://"):
        from devices.dvs import NetworkEventSource

        host, _, port = spec[len("tcp://"):].rpartition(":")
        if not host or not port.isdigit():
            raise SourceSpecError(f"source {spec!r}: expected tcp://HOST:PORT")
        return NetworkEventSource(host, int(port))
    if not Path(spec).exists():
        raise SourceSpecError(f"source {spec!r}: no such file (expected one of {', '.join(SOURCE_KINDS)})")
    from recordings.replay import ReplaySource

    return ReplaySource(spec, speed=speed, fast=fast, loop=loop, start_us=start_us, chunk_us=chunk_us, strict=strict)
