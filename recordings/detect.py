"""Format detection by header (not only by extension) and the one entry point ``open_recording``."""
from __future__ import annotations

import importlib
from pathlib import Path

from recordings.base import DEFAULT_CHUNK_EVENTS, RecordingError, RecordingReader, not_a_file

#: Reader modules, in the order they are asked. Each module defines exactly one ``Reader`` class
#: (a RecordingReader subclass). Headerless formats (N-MNIST) come last.
FORMAT_MODULES: tuple[str, ...] = (
    "aedat4",
    "aedat3",
    "aedat2",
    "eventstream",
    "evt2",
    "evt3",
    "prophesee_dat",
    "rosbag2",
    "hdf5_reader",
    "npy_reader",
    "nmnist",
)

HEAD_BYTES = 4096


def reader_classes() -> list[type[RecordingReader]]:
    """All reader classes, in detection order."""
    return [importlib.import_module(f"recordings.{name}").Reader for name in FORMAT_MODULES]


def detect_format(path: str | Path) -> type[RecordingReader]:
    """The reader class for a file, chosen from its first bytes (extension only breaks ties).

    Raises RecordingError naming the file when it is missing, empty or of no known format.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordingError(path, not_a_file(path))
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    if not head:
        raise RecordingError(path, "file is empty", 0)
    candidates = [cls for cls in reader_classes() if cls.sniff(head, path)]
    if not candidates:
        known = ", ".join(cls.format_name for cls in reader_classes())
        raise RecordingError(path, f"not a recording format spikeloop knows (known: {known})", 0)
    suffix = path.suffix.lower()
    for cls in candidates:
        if suffix in cls.extensions:
            return cls
    return candidates[0]


def open_recording(
    path: str | Path, *, strict: bool = False, chunk_events: int = DEFAULT_CHUNK_EVENTS
) -> RecordingReader:
    """Open any supported event recording; the header is parsed now, events stream from ``chunks()``."""
    return detect_format(path)(path, strict=strict, chunk_events=chunk_events)
