"""Events, frames, IMU samples and triggers to HDF5, in the layout of the DSEC dataset (Gehrig et al. 2021,
dsec.ifi.uzh.ch "events.h5"), which tonic's DSEC loader and the DSEC tools read:

* ``/events/t`` int64 µs (relative to ``/t_offset``; DSEC stores uint32, which caps a recording at
  71.6 min), ``/events/x`` uint16, ``/events/y`` uint16 (origin top-left), ``/events/p`` uint8 (1 = ON);
* ``/t_offset`` int64 µs: the earliest time written (given by the caller, else the first item's time);
  absolute time = t + t_offset, and every t is >= 0 as the DSEC tools assume (an item earlier than
  t_offset is refused);
* ``/ms_to_idx`` uint64, shape (ceil(duration ms) + 1,): index of the first event with t >= i ms.

Added by spikeloop (absent from DSEC): root attributes ``width``, ``height`` (pixels), ``camera`` and
``layout = "dsec"``; and, when the source holds them,

* ``/frames/t`` int64 µs (start of exposure, relative to t_offset), ``/frames/exposure_us`` int64,
  ``/frames/images`` uint8 (n, H, W) or (n, H, W, 3) BGR;
* ``/imu/t`` int64 µs, ``/imu/temperature`` float32 °C, ``/imu/accelerometer`` float32 (n, 3) g,
  ``/imu/gyroscope`` float32 (n, 3) deg/s, ``/imu/magnetometer`` float32 (n, 3) µT;
* ``/triggers/t`` int64 µs, ``/triggers/type`` int8 (dv-processing's TriggerType value).

Datasets are chunked and grow as data arrives (memory bounded by one chunk). h5py is a default dependency
(also used for Lava-dl netx files); if it is missing, opening the writer says how to install it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

#: Elements per HDF5 chunk of a 1-D event/IMU/trigger dataset.
CHUNK = 1 << 16


def _import_h5py():
    try:
        import h5py
    except ImportError as exc:
        raise RuntimeError("HDF5 output needs h5py: python3 -m pip install h5py") from exc
    return h5py


class Hdf5Writer:
    """``write`` (DVS_EVENT_DTYPE events), ``write_frame`` (recordings.aedat4.Frame), ``write_imu``
    (recordings.aedat4.IMU_DTYPE), ``write_triggers`` (TRIGGER_DTYPE); ``close``. The file is complete
    after ``close`` (``ms_to_idx`` is written then)."""

    holds = frozenset({"frames", "imu", "triggers"})

    def __init__(self, path: str | Path, width: int, height: int, camera: str = "", t_offset: int | None = None):
        """t_offset: µs subtracted from every time written, at most the earliest time of anything that will be
        written (events, frames, IMU, triggers; spikeloop convert passes it); None: the first item's time,
        which suits a caller writing in time order."""
        h5py = _import_h5py()
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.events_written = 0
        self.t_offset: int | None = None if t_offset is None else int(t_offset)
        self._file = h5py.File(self.path, "w")
        self._file.attrs.update({"width": self.width, "height": self.height, "camera": camera, "layout": "dsec"})
        group = self._file.create_group("events")
        self._events = {name: group.create_dataset(name, (0,), dtype=dtype, maxshape=(None,), chunks=(CHUNK,))
                        for name, dtype in (("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1"))}
        #: ms_to_idx entries found so far (a list of small arrays: one entry per ms of recording).
        self._ms_to_idx: list[np.ndarray] = []
        self._ms_next = 0

    def _offset(self, earliest: int, what: str) -> int:
        """t_offset (µs), set by the first item when not given; ValueError if ``earliest`` (the item's
        earliest time, µs) is before it (a time < 0 would be written)."""
        if self.t_offset is None:
            self.t_offset = int(earliest)
        if earliest < self.t_offset:
            raise ValueError(f"{self.path}: {what} at {int(earliest)} µs is earlier than t_offset {self.t_offset} "
                             f"µs (HDF5 times are written relative to it and must be >= 0)")
        return self.t_offset

    @staticmethod
    def _append(dataset, values: np.ndarray) -> None:
        start = dataset.shape[0]
        dataset.resize(start + len(values), axis=0)
        dataset[start:] = values

    def _group(self, name: str, columns: dict) -> dict:
        """The datasets of group ``name`` (created at first use): column -> (dtype, trailing shape)."""
        if name not in self._file:
            group = self._file.create_group(name)
            for column, (dtype, shape) in columns.items():
                group.create_dataset(column, (0, *shape), dtype=dtype, maxshape=(None, *shape),
                                     chunks=(CHUNK if not shape or len(shape) == 1 else 1, *shape))
        return self._file[name]

    def write(self, events: np.ndarray) -> None:
        """Append time-ordered events inside the declared sensor (ValueError otherwise)."""
        if not len(events):
            return
        x, y = events["x"], events["y"]
        if x.min() < 0 or x.max() >= self.width or y.min() < 0 or y.max() >= self.height:
            raise ValueError(f"{self.path}: events outside the declared {self.width}x{self.height} sensor")
        t = events["timestamp"].astype(np.int64)
        t -= self._offset(int(t.min()), "an event")
        self._append(self._events["t"], t)
        self._append(self._events["x"], x.astype(np.uint16))
        self._append(self._events["y"], y.astype(np.uint16))
        self._append(self._events["p"], events["polarity"].astype(np.uint8))
        # ms_to_idx[i] = first event with t >= i ms; events may step back a few µs, so search the running max.
        last_ms = int(t.max()) // 1000
        if last_ms >= self._ms_next:
            bounds = np.arange(self._ms_next, last_ms + 1, dtype=np.int64) * 1000
            index = np.searchsorted(np.maximum.accumulate(t), bounds, side="left") + self.events_written
            self._ms_to_idx.append(index.astype(np.uint64))
            self._ms_next = last_ms + 1
        self.events_written += len(t)

    def write_frame(self, frame) -> None:
        """Append one frame (image uint8 (H, W) or (H, W, 3); timestamp and exposure µs)."""
        image = np.asarray(frame.image, dtype=np.uint8)
        group = self._group("frames", {"t": ("<i8", ()), "exposure_us": ("<i8", ()), "images": ("u1", image.shape)})
        if group["images"].shape[1:] != image.shape:
            raise ValueError(f"{self.path}: frame of shape {image.shape} after frames of {group['images'].shape[1:]}")
        self._append(group["t"], np.array([frame.timestamp - self._offset(frame.timestamp, "a frame")], dtype=np.int64))
        self._append(group["exposure_us"], np.array([frame.exposure_us], dtype=np.int64))
        self._append(group["images"], image[None])

    def write_imu(self, samples: np.ndarray) -> None:
        """Append IMU samples (recordings.aedat4.IMU_DTYPE, shape (n,))."""
        if not len(samples):
            return
        group = self._group("imu", {"t": ("<i8", ()), "temperature": ("<f4", ()), "accelerometer": ("<f4", (3,)),
                                    "gyroscope": ("<f4", (3,)), "magnetometer": ("<f4", (3,))})
        offset = self._offset(int(samples["timestamp"].min()), "an IMU sample")
        self._append(group["t"], samples["timestamp"].astype(np.int64) - offset)
        self._append(group["temperature"], samples["temperature"])
        for column, prefix in (("accelerometer", "accel"), ("gyroscope", "gyro"), ("magnetometer", "mag")):
            self._append(group[column], np.stack([samples[f"{prefix}_{axis}"] for axis in "xyz"], axis=1))

    def write_triggers(self, triggers: np.ndarray) -> None:
        """Append triggers (recordings.aedat4.TRIGGER_DTYPE, shape (n,))."""
        if not len(triggers):
            return
        group = self._group("triggers", {"t": ("<i8", ()), "type": ("i1", ())})
        offset = self._offset(int(triggers["timestamp"].min()), "a trigger")
        self._append(group["t"], triggers["timestamp"].astype(np.int64) - offset)
        self._append(group["type"], triggers["type"])

    def close(self) -> None:
        """Write ``t_offset`` and ``ms_to_idx`` and close the file."""
        if not self._file:
            return
        ms_to_idx = np.concatenate(self._ms_to_idx) if self._ms_to_idx else np.zeros(0, dtype=np.uint64)
        self._file.create_dataset("ms_to_idx", data=ms_to_idx)
        self._file.create_dataset("t_offset", data=np.int64(self.t_offset or 0))
        self._file.close()

    def __enter__(self) -> "Hdf5Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
