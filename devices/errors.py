"""Errors raised by device drivers (shared so callers catch one type per kind of failure)."""


class CameraError(RuntimeError):
    """No camera (or the wrong one), a video that cannot be opened, or a stream that stopped delivering."""
