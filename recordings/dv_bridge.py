"""numpy DVS events <-> ``dv_processing.EventStore`` without per-event Python.

* Out: ``store.numpy()`` already returns DVS_EVENT_DTYPE bytes (one C++ copy, ~20-90 Mev/s).
* In: dv-processing 2.0.4 has no numpy constructor and ``push_back`` per event runs at 1-2 Mev/s.
  Instead the events are laid out as an uncompressed AEDAT 4 stream (a 40-byte EVTS packet head before
  each slice of raw event bytes, formats.md §3/§9.4) in a RAM-backed temporary ``.aedat4`` file, which
  dv-processing's own ``MonoCameraRecording`` parses; its packets are appended to one EventStore (shallow,
  no copy). ~40 Mev/s for 10 M events on the 2-core VM (``python bench/recordings.py``).
  Tiny arrays (< ``PUSH_BACK_MAX`` events) use ``push_back``, which wins below the file's fixed cost.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import dv_processing as dv
import numpy as np

from pipeline.core.events import DVS_EVENT_DTYPE
from recordings.aedat4_writer import dvs_layout, stream_bytes

#: Events per EVTS packet in the temporary stream (4 MiB); measured fastest between 64 k and 256 k.
BRIDGE_PACKET_EVENTS = 1 << 18
#: Below this many events ``push_back`` is cheaper than the temporary file (~0.3 ms fixed cost).
PUSH_BACK_MAX = 256


def _scratch_dir() -> str:
    """/dev/shm (RAM) when writable, else the system temp dir."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return str(shm)
    return tempfile.gettempdir()


def to_numpy(store: dv.EventStore) -> np.ndarray:
    """Copy a dv EventStore into a DVS_EVENT_DTYPE array, shape (store.size(),)."""
    if store.size() == 0:
        return np.zeros(0, dtype=DVS_EVENT_DTYPE)
    return store.numpy().view(DVS_EVENT_DTYPE)


def to_event_store(events: np.ndarray, width: int = 65535, height: int = 65535) -> dv.EventStore:
    """Build a dv EventStore holding ``events`` (DVS_EVENT_DTYPE, shape (n,), timestamps sorted, µs).

    ``width``/``height`` only label the temporary stream; dv-processing does not clip events to them.
    Raises ValueError for unsorted timestamps (dv-processing's EventStore requires monotonic time).
    """
    events = dvs_layout(events)
    store = dv.EventStore()
    n = len(events)
    if n == 0:
        return store
    if n > 1 and np.any(np.diff(events["timestamp"]) < 0):
        raise ValueError("event timestamps must be sorted (non-decreasing) for a dv EventStore")
    if n < PUSH_BACK_MAX:
        for t, x, y, p in zip(events["timestamp"].tolist(), events["x"].tolist(), events["y"].tolist(),
                              events["polarity"].tolist()):
            store.push_back(t, x, y, bool(p))
        return store
    fd, path = tempfile.mkstemp(prefix="spikeloop-bridge-", suffix=".aedat4", dir=_scratch_dir())
    try:
        with os.fdopen(fd, "wb", buffering=0) as f:
            for piece in stream_bytes(events, width, height, BRIDGE_PACKET_EVENTS):
                f.write(piece)
        reader = dv.io.MonoCameraRecording(path)
    finally:
        os.unlink(path)
    while (batch := reader.getNextEventBatch()) is not None:
        store.add(batch)
    if store.size() != n:
        raise RuntimeError(f"dv-processing parsed {store.size()} of {n} events from the bridge stream")
    return store


#: ``spikeloop convert --compression`` names -> dv-processing's packet compression (as DV writes files).
COMPRESSIONS = {"none": dv.CompressionType.NONE, "lz4": dv.CompressionType.LZ4, "lz4_high": dv.CompressionType.LZ4_HIGH,
                "zstd": dv.CompressionType.ZSTD, "zstd_high": dv.CompressionType.ZSTD_HIGH}


class CompressedAedat4Writer:
    """DVS events (DVS_EVENT_DTYPE, time-ordered, µs) to an AEDAT 4 file with LZ4, ZSTD or no compression,
    written by dv-processing's own ``MonoCameraWriter`` (the encoder DV uses) under ``camera`` as the
    camera name. Same interface as :class:`recordings.aedat4_writer.Aedat4Writer`: ``write``, ``close``,
    ``events_written``, a context manager. ``path`` must end in .aedat4 (dv-processing requires it).

    Optional streams, as DV names them: ``frames=(width, height)`` adds a ``frames`` stream
    (:meth:`write_frame`), ``imu=True`` an ``imu`` stream (:meth:`write_imu`), ``triggers=True`` a
    ``triggers`` stream (:meth:`write_triggers`); ``holds`` names the streams this writer carries.
    """

    def __init__(self, path: str | Path, width: int, height: int, *, camera: str, compression: str = "lz4",
                 frames: tuple[int, int] | None = None, imu: bool = False, triggers: bool = False):
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}, got {compression!r}")
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        config = dv.io.MonoCameraWriter.Config(camera, COMPRESSIONS[compression])
        config.addEventStream((self.width, self.height))
        if frames is not None:
            config.addFrameStream((int(frames[0]), int(frames[1])))
        if imu:
            config.addImuStream()
        if triggers:
            config.addTriggerStream()
        self.holds = frozenset(name for name, on in (("frames", frames is not None), ("imu", imu),
                                                     ("triggers", triggers)) if on)
        self._writer = dv.io.MonoCameraWriter(str(self.path), config)
        self.events_written = 0

    def write(self, events: np.ndarray) -> None:
        """Append time-ordered events inside the declared sensor (ValueError otherwise)."""
        events = dvs_layout(events)
        if not len(events):
            return
        if (events["x"].min() < 0 or events["x"].max() >= self.width or events["y"].min() < 0
                or events["y"].max() >= self.height):
            raise ValueError(f"{self.path}: events outside the declared {self.width}x{self.height} sensor")
        self._writer.writeEvents(to_event_store(events, self.width, self.height))
        self.events_written += len(events)

    def write_frame(self, frame) -> None:
        """Append one frame (recordings.aedat4.Frame: image uint8 (H, W) or (H, W, 3), timestamp/exposure µs)."""
        image = np.ascontiguousarray(frame.image, dtype=np.uint8)
        self._writer.writeFrame(dv.Frame(int(frame.timestamp), int(frame.exposure_us), 0, 0, image,
                                         dv.FrameSource.SENSOR))

    def write_imu(self, samples: np.ndarray) -> None:
        """Append IMU samples (recordings.aedat4.IMU_DTYPE, shape (n,))."""
        packet = dv.IMUPacket()
        columns = ("temperature", "accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z",
                   "mag_x", "mag_y", "mag_z")
        for row in zip(samples["timestamp"].tolist(), *(samples[c].tolist() for c in columns)):
            packet.elements.append(dv.IMU(*row))
        if len(samples):
            self._writer.writeImuPacket(packet)

    def write_triggers(self, triggers: np.ndarray) -> None:
        """Append triggers (recordings.aedat4.TRIGGER_DTYPE, shape (n,))."""
        packet = dv.TriggerPacket()
        for t, kind in zip(triggers["timestamp"].tolist(), triggers["type"].tolist()):
            packet.elements.append(dv.Trigger(t, dv.TriggerType(kind)))
        if len(triggers):
            self._writer.writeTriggerPacket(packet)

    def close(self) -> None:
        """Flush and finish the file (dv-processing writes its table when the writer is released)."""
        self._writer = None

    def __enter__(self) -> "CompressedAedat4Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
