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

from pipeline.core.packet import Source

SOURCE_KINDS = ("PATH", "camera[:SERIAL]", "webcam[:N]", "video:PATH", "tcp://HOST:PORT")


class SourceSpecError(ValueError):
    """A source specification that names nothing usable."""


def parse_source_spec(spec: str) -> dict:
    """A source specification as a launch file's ``[source]`` table: ``{"type": "replay", "path": ...}``,
    ``{"type": "webcam", "device": ...}`` (cameras and video files), ``{"type": "camera", "serial": ...}`` or
    ``{"type": "tcp", "host": ..., "port": ...}``; keys left out take the launch file's defaults."""
    name, _, rest = spec.partition(":")
    if name == "webcam":
        return {"type": "webcam", **({"device": rest} if rest else {})}
    if name == "video":
        return {"type": "webcam", "device": str(Path(rest).expanduser().resolve())}
    if name == "camera":
        return {"type": "camera", **({"serial": rest} if rest else {})}
    if spec.startswith("tcp://"):
        host, _, port = spec[len("tcp://"):].rpartition(":")
        if not host or not port.isdigit():
            raise SourceSpecError(f"source {spec!r}: expected tcp://HOST:PORT")
        return {"type": "tcp", "host": host, "port": int(port)}
    return {"type": "replay", "path": str(Path(spec).expanduser().resolve())}


def open_source(spec: str, *, speed: float = 1.0, fast: bool = False, loop: bool = False,
                start_us: int | None = None, chunk_us: int = 1000, strict: bool = False) -> Source:
    """Open the source that ``spec`` names (see the module docstring). Replay options apply to files."""
    table = parse_source_spec(spec)
    kind = table["type"]
    if kind == "camera":
        from devices.dvs import DvsCameraSource

        return DvsCameraSource(table.get("serial"))
    if kind == "webcam":
        from devices.webcam import WebcamSource

        device = table.get("device", "0")
        return WebcamSource(int(device) if device.isdigit() else device)
    if kind == "tcp":
        from devices.dvs import NetworkEventSource

        return NetworkEventSource(table["host"], table["port"])
    if not Path(table["path"]).exists():
        raise SourceSpecError(f"source {spec!r}: no such file (expected one of {', '.join(SOURCE_KINDS)})")
    from recordings.replay import ReplaySource

    return ReplaySource(table["path"], speed=speed, fast=fast, loop=loop, start_us=start_us, chunk_us=chunk_us,
                        strict=strict)
