"""Prophesee RAW header parsing shared by the EVT 2.0 and EVT 3.0 readers.

A RAW file starts with ``%`` text lines (ended by ``% end`` when present), then binary words. The
encoding is named by ``% evt 2.0`` / ``% evt 3.0`` or ``% format EVT3;height=720;width=1280``; the
geometry by ``% geometry 1280x720``, the ``% format`` options, or (older files) only by the camera
plugin (``% plugin_name hal_plugin_gen41_evk3``) whose sensor has a known resolution.
"""
from __future__ import annotations

import re
from pathlib import Path

from recordings._blocks import read_text_header
from recordings.base import RecordingError, RecordingHeader

#: Plugin-name fragments (sensor generations) -> (width, height) in pixels.
PLUGIN_GEOMETRY: tuple[tuple[str, int, int], ...] = (
    ("gen41", 1280, 720),
    ("imx636", 1280, 720),
    ("gen4", 1280, 720),
    ("gen31", 640, 480),
    ("gen3", 640, 480),
    ("imx8", 640, 480),
    ("genx320", 320, 320),
    ("sony_cx3", 1280, 720),
)


def sniff_encoding(head: bytes) -> str | None:
    """'evt2', 'evt3', 'evt21' ... for a head that is a Prophesee RAW header, else None."""
    if not head.startswith(b"%"):
        return None
    match = re.search(rb"^% evt (\d)\.(\d)\s*$", head, re.MULTILINE)
    if match:
        return f"evt{match.group(1).decode()}" + ("" if match.group(2) == b"0" else match.group(2).decode())
    match = re.search(rb"^% format EVT(\d+)", head, re.MULTILINE)
    if match:
        return f"evt{match.group(1).decode()}"
    return None


def read_raw_header(path: Path, format_name: str, encoding: str) -> tuple[RecordingHeader, int]:
    """Parse a RAW header and check it declares ``encoding`` ('evt2' or 'evt3').

    Returns (header, byte offset of the first data word). Width/height are 0 when nothing names them.
    """
    lines, data_offset = read_text_header(path, b"%", end_line=b"% end")
    text = "\n".join("% " + line for line in lines).encode("latin-1")
    found = sniff_encoding(text)
    if found != encoding:
        raise RecordingError(path, f"RAW header declares encoding {found or 'none'}, expected {encoding}", 0)
    fields = {}
    for line in lines:
        key, _, value = line.partition(" ")
        if key:
            fields[key] = value.strip()
    width = height = 0
    if "geometry" in fields:
        match = re.fullmatch(r"(\d+)x(\d+)", fields["geometry"])
        if match:
            width, height = int(match.group(1)), int(match.group(2))
    if not width and "format" in fields:
        options = dict(part.split("=", 1) for part in fields["format"].split(";")[1:] if "=" in part)
        if options.get("width", "").isdigit() and options.get("height", "").isdigit():
            width, height = int(options["width"]), int(options["height"])
    plugin = fields.get("plugin_name", "")
    if not width and plugin:
        match = next((g for g in PLUGIN_GEOMETRY if g[0] in plugin.lower()), None)
        if match:
            width, height = match[1], match[2]
    extra = {key: fields[key] for key in ("plugin_name", "serial_number", "system_ID", "Date") if key in fields}
    extra["data_offset"] = data_offset
    return RecordingHeader(format_name, width, height, extra), data_offset
