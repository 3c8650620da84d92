"""Event packet dtypes shared by every part of the pipeline.

DVS events use dv-processing's own memory layout (``dv.EventStore.numpy()``), so packets pass to and
from dv-processing without per-event work. Audio and neural spikes use a small AER layout.

All timestamps are integer microseconds (µs).
"""
from __future__ import annotations

import numpy as np

#: DVS event, byte-identical to dv-processing's ``EventStore.numpy()`` and the AEDAT 4 ``Event`` struct:
#: timestamp int64 µs @0, x int16 @8, y int16 @10, polarity int8 @12 (1 = ON), 3 padding bytes; 16 B.
#: The origin is the upper-left pixel.
DVS_EVENT_DTYPE = np.dtype(
    {
        "names": ["timestamp", "x", "y", "polarity"],
        "formats": ["<i8", "<i2", "<i2", "i1"],
        "offsets": [0, 8, 10, 12],
        "itemsize": 16,
    }
)

#: Address-event (AER) spike: timestamp int64 µs, channel int32 (cochlea channel, neural unit, ...).
SPIKE_DTYPE = np.dtype([("timestamp", "<i8"), ("channel", "<i4")])


def empty_dvs(n: int = 0) -> np.ndarray:
    """A zeroed DVS event array of length ``n`` (shape (n,), DVS_EVENT_DTYPE)."""
    return np.zeros(n, dtype=DVS_EVENT_DTYPE)


def empty_spikes(n: int = 0) -> np.ndarray:
    """A zeroed AER spike array of length ``n`` (shape (n,), SPIKE_DTYPE)."""
    return np.zeros(n, dtype=SPIKE_DTYPE)


def dvs_events(timestamp, x, y, polarity) -> np.ndarray:
    """Build a DVS event array from four equal-length columns (µs, px, px, 0/1)."""
    timestamp = np.asarray(timestamp)
    out = empty_dvs(len(timestamp))
    out["timestamp"] = timestamp
    out["x"] = x
    out["y"] = y
    out["polarity"] = polarity
    return out


def spikes(timestamp, channel) -> np.ndarray:
    """Build an AER spike array from two equal-length columns (µs, channel index)."""
    timestamp = np.asarray(timestamp)
    out = empty_spikes(len(timestamp))
    out["timestamp"] = timestamp
    out["channel"] = channel
    return out
