"""MP4 video files of drawn frames (BGR uint8 (height, width, 3)): H.264 that browsers play when PyAV is
installed (``pip install 'spikeloop[video]'``: its wheel ships FFmpeg with libx264), else OpenCV's MPEG-4
Part 2 (``mp4v``), which desktop players open but browsers do not.

The file is written beside its final name and renamed when closed, so an interrupted run never leaves a
truncated MP4 under the name the user gave (the frames written so far are kept: close() finishes the file).
"""
from __future__ import annotations

import importlib.util
import os
from fractions import Fraction
from pathlib import Path

import numpy as np


def h264_available() -> bool:
    """Whether PyAV (and with it an H.264 encoder) can be imported."""
    return importlib.util.find_spec("av") is not None


class VideoWriter:
    """``write(frame)`` BGR frames of ``size`` = (width, height) px at ``fps``; ``close()`` finishes the file.
    ``codec``: "h264" (PyAV) or "mp4v" (OpenCV), chosen by :func:`h264_available` unless given. Raises
    OSError when the file cannot be opened."""

    def __init__(self, path: str | Path, size: tuple[int, int], fps: float = 30.0, codec: str | None = None):
        self.path = Path(path)
        self.size = (int(size[0]), int(size[1]))
        self.codec = codec or ("h264" if h264_available() else "mp4v")
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp{self.path.suffix or '.mp4'}")
        self.frames = 0
        if self.codec == "h264":
            import av

            self._container = av.open(str(self.tmp), mode="w", format="mp4")
            stream = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            stream.width, stream.height = self.size  # libx264 with yuv420p needs even sides
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "23", "preset": "veryfast", "movflags": "+faststart"}
            self._stream = stream
        elif self.codec == "mp4v":
            import cv2

            self._cv = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, self.size)
            if not self._cv.isOpened():
                raise OSError(f"{self.path}: OpenCV's mp4v writer could not open the file")
        else:
            raise ValueError(f"codec must be 'h264' or 'mp4v', got {codec!r}")

    def write(self, frame: np.ndarray) -> None:
        """Append one BGR frame (uint8 (height, width, 3), the writer's size)."""
        if self.codec == "h264":
            import av

            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
            for packet in self._stream.encode(picture):
                self._container.mux(packet)
        else:
            self._cv.write(frame)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder, finish the MP4 and rename it to its final name. Idempotent."""
        if self.tmp is None:
            return
        try:
            if self.codec == "h264":
                for packet in self._stream.encode():
                    self._container.mux(packet)
                self._container.close()
            else:
                self._cv.release()
            os.replace(self.tmp, self.path)
        finally:
            if self.tmp.exists():
                self.tmp.unlink()
            self.tmp = None
