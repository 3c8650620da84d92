"""An ordinary camera or a video file as a DVS: OpenCV capture -> grey frames -> frame-to-event emulator.

``WebcamSource(0)`` opens the first camera, ``WebcamSource("clip.mp4")`` a video file. Frames are grabbed
on a background thread (off the loop's hot path) and emulated into DVS events; each frame gives one
:class:`~pipeline.core.packet.Packet` whose events are spread between the previous frame time and this one.

Sensor time: for files, the frame's position in the video (µs); for cameras, the monotonic clock at grab.
"""
from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from devices.dvs_emulator import DvsEmulator, EmulatorConfig
from devices.errors import CameraError
from pipeline.core.clock import wait_until
from pipeline.core.packet import Packet, StreamInfo


def open_capture(device: int | str) -> cv2.VideoCapture:
    """Open a camera index or a video path; raise CameraError with what went wrong (OpenCV's own
    backend chatter is silenced: the error says it once)."""
    if isinstance(device, str) and not device.isdigit() and not Path(device).is_file():
        raise CameraError(f"video file {device} does not exist")
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        is_path = isinstance(device, str) and not device.isdigit()
        capture = cv2.VideoCapture(device if is_path else int(device))
    finally:
        cv2.utils.logging.setLogLevel(previous)
    if not capture.isOpened():
        what = f"camera {device}" if not isinstance(device, str) or device.isdigit() else f"video file {device}"
        raise CameraError(f"{what} could not be opened by OpenCV (no such device, or no permission/codec)")
    return capture


class WebcamSource:
    """Camera or video file -> DVS events (implements pipeline.core.packet.Source).

    device: camera index (int or "0") or video path. size: (width, height) to resize frames to, or None
    for the native size. config: emulator pixel model. queue_frames: frames buffered between the grab
    thread and the consumer; when full (consumer too slow on a live camera) the oldest frame is dropped and
    counted in ``dropped_frames``. speed: a video file stands in for a camera, so its frames are released
    at their own timestamps (x ``speed``); None releases them as fast as they are emulated.
    """

    def __init__(self, device: int | str = 0, size: tuple[int, int] | None = None,
                 config: EmulatorConfig = EmulatorConfig(), queue_frames: int = 4, speed: float | None = 1.0):
        if speed is not None and speed <= 0:
            raise ValueError(f"webcam speed: expected a positive number or None, got {speed}")
        self.speed = speed
        self._capture = open_capture(device)
        self._is_file = isinstance(device, str) and not device.isdigit()
        ok, frame = self._capture.read()
        if not ok:
            self._capture.release()
            raise CameraError(f"{device}: opened, but no frame could be read")
        self._size = size or (frame.shape[1], frame.shape[0])
        self._first = self._grey(frame)
        self._first_t = self._frame_time_us()
        self.emulator = DvsEmulator(self._size[0], self._size[1], config)
        self.emulator.warmup()
        self.info = StreamInfo(kind="dvs", width=self._size[0], height=self._size[1], name=f"webcam:{device}")
        self.dropped_frames = 0
        self._frames: queue.Queue = queue.Queue(maxsize=queue_frames)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _grey(self, frame: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        if (grey.shape[1], grey.shape[0]) != self._size:
            grey = cv2.resize(grey, self._size, interpolation=cv2.INTER_AREA)
        return grey

    def _frame_time_us(self) -> int:
        if self._is_file:
            return int(round(self._capture.get(cv2.CAP_PROP_POS_MSEC) * 1000))
        return time.monotonic_ns() // 1000

    def _grab_loop(self) -> None:
        while not self._stop.is_set():
            ok, frame = self._capture.read()
            if not ok:
                self._frames.put(None)
                return
            item = (self._grey(frame), self._frame_time_us())
            if self._is_file:
                while not self._stop.is_set():
                    try:
                        self._frames.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
            else:
                if self._frames.full():
                    self._frames.get_nowait()
                    self.dropped_frames += 1
                self._frames.put(item)

    def packets(self) -> Iterator[Packet]:
        """One packet per frame after the first; ends at the end of a video file (cameras run until close)."""
        self.emulator.emulate(self._first, self._first_t)
        last_t = self._first_t
        started_ns = time.perf_counter_ns()
        self._thread = threading.Thread(target=self._grab_loop, name="webcam-grab", daemon=True)
        self._thread.start()
        while True:
            item = self._frames.get()
            if item is None:
                return
            grey, t_us = item
            if t_us <= last_t:
                t_us = last_t + 1
            events = self.emulator.emulate(grey, t_us)
            last_t = t_us
            if self._is_file and self.speed is not None:
                wait_until(started_ns + int((t_us - self._first_t) * 1000 / self.speed))
            yield Packet(events=events, t_end_us=t_us)

    def close(self) -> None:
        """Stop the grab thread and release the camera."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self._capture.release()
