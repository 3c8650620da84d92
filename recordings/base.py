"""The reader interface every recording format implements, and how damage is reported.

A reader opens one file, parses its header eagerly (so errors surface at open time) and then streams
time-ordered chunks of at most ``chunk_events`` events, so an hour-long file replays in bounded memory.

Damage (a truncated file, flipped bytes, an impossible field) never crashes and never hangs: the reader
yields the events decoded before the damage and then either warns (:class:`RecordingDamageWarning`,
naming the file and byte offset) and stops, or, with ``strict=True``, raises :class:`RecordingError`.
"""
from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np

#: Default upper bound on events per chunk (16 B each -> 16 MiB per chunk at most).
DEFAULT_CHUNK_EVENTS = 1 << 20


class RecordingError(Exception):
    """A recording cannot be read (unknown format, bad header) or is damaged in strict mode.

    ``path`` and ``offset`` (byte offset into the file, or None) say where.
    """

    def __init__(self, path: str | Path, message: str, offset: int | None = None):
        self.path = str(path)
        self.offset = offset
        where = f"{self.path}" + (f" at byte {offset}" if offset is not None else "")
        super().__init__(f"{where}: {message}")


def not_a_file(path: str | Path) -> str:
    """Why ``path`` (which is not a regular file) cannot be read as a recording, for a RecordingError."""
    path = Path(path)
    if path.is_dir():
        return "is a directory (expected a recording file)"
    if path.exists():
        return "not a regular file (a device or a pipe; expected a recording file)"
    return "no such file"


class RecordingDamageWarning(UserWarning):
    """A damaged recording was read up to the damage; the events after it were not decoded."""


@dataclass(frozen=True)
class RecordingHeader:
    """What a file's header says (before any event is decoded).

    width, height: sensor resolution in pixels (0 when the format does not record it).
    extra: anything else the header carries that is worth showing (camera name, stream list, ...).
    """

    format: str
    width: int
    height: int
    extra: dict = field(default_factory=dict)


class RecordingReader(ABC):
    """Base class of one format's reader. Subclasses set ``format_name`` and implement
    ``sniff``, ``_read_header`` and ``_chunks``.

    path: the file. strict: raise RecordingError on damage instead of warning.
    chunk_events: upper bound on the length of each yielded chunk.
    """

    format_name: ClassVar[str]
    #: File extensions this format commonly uses (lower case, with the dot); used only as a tie-breaker.
    extensions: ClassVar[tuple[str, ...]] = ()

    def __init__(self, path: str | Path, *, strict: bool = False, chunk_events: int = DEFAULT_CHUNK_EVENTS):
        if chunk_events < 1:
            raise ValueError(f"chunk_events must be >= 1, got {chunk_events}")
        self.path = Path(path)
        self.strict = strict
        self.chunk_events = int(chunk_events)
        self.damage: RecordingError | None = None
        self.header: RecordingHeader = self._read_header()

    @classmethod
    @abstractmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        """True if the first bytes of a file (``head``, up to 4 KiB) belong to this format."""

    @abstractmethod
    def _read_header(self) -> RecordingHeader:
        """Parse the header; raise RecordingError if it is not this format or unreadable."""

    @abstractmethod
    def _chunks(self) -> Iterator[np.ndarray]:
        """Yield DVS_EVENT_DTYPE chunks (len <= chunk_events); call ``self.report_damage`` on damage."""

    def chunks(self) -> Iterator[np.ndarray]:
        """Yield time-ordered DVS event chunks (DVS_EVENT_DTYPE), each at most ``chunk_events`` long."""
        self.damage = None
        for chunk in self._chunks():
            if len(chunk):
                yield chunk

    def report_damage(self, offset: int | None, message: str) -> None:
        """Record damage at a byte offset: raise in strict mode, otherwise warn once (caller then stops)."""
        error = RecordingError(self.path, message, offset)
        self.damage = error
        if self.strict:
            raise error
        warnings.warn(f"{error}; events before the damage were kept", RecordingDamageWarning, stacklevel=3)

    def close(self) -> None:
        """Release file handles (readers that keep files open override this)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
