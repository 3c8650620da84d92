"""Frame-to-event emulator: intensity frames -> DVS events, on the v2e/ESIM pixel model.

Per pixel (written from the equations in shared/reference/formats.md §10):

* log intensity ``L = log(I/255 + eps)`` (or v2e's lin-log below 20 DN), looked up from a 256-entry table;
* a reference level ``L_ref``; ON when ``L`` rises ``C_on`` above it, OFF when it falls ``C_off`` below it,
  ``L_ref`` moving by one threshold per event (several events per frame when the change is large);
* per-pixel thresholds ``C ~ N(C_nom, sigma)`` clamped to >= 0.01 (fixed-pattern mismatch);
* ESIM-style timestamps: the brightness is interpolated linearly between the two frame times and each
  crossing gets the time it is reached, so a 30 fps camera gives events spread through each 33 ms;
* refractory period: a pixel drops events closer than ``refractory_us`` to its previous event;
* leak: ``L_ref`` drifts down by ``leak_rate_hz * C_on`` per second, so static pixels emit rare ON events;
* shot noise: Poisson noise events at ``shot_noise_hz`` per pixel, split ON/OFF.

Events of a frame are returned sorted by timestamp (a counting sort over the frame interval).
Timestamps are µs. Frames are uint8 (H, W) grey images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from pipeline.core.events import DVS_EVENT_DTYPE

#: Upper bound of events one pixel can emit in one frame: log range ~6.9 over the 0.01 minimum threshold.
MAX_EVENTS_PER_PIXEL = 1024


@dataclass(frozen=True)
class EmulatorConfig:
    """Pixel model parameters (v2e CLI defaults where they exist).

    c_on, c_off: nominal ON/OFF contrast thresholds (log units). sigma: per-pixel threshold spread.
    refractory_us: per-pixel dead time (µs). leak_rate_hz: reference drift (events/s of a static pixel).
    shot_noise_hz: noise events per pixel per second. log_eps: offset inside the log (I in [0, 1]).
    lin_log: use v2e's linear segment below 20 DN instead of log(I + eps). seed: mismatch and noise seed.
    """

    c_on: float = 0.2
    c_off: float = 0.2
    sigma: float = 0.03
    refractory_us: int = 500
    leak_rate_hz: float = 0.01
    shot_noise_hz: float = 0.001
    log_eps: float = 1e-3
    lin_log: bool = False
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError naming an impossible parameter."""
        for name in ("c_on", "c_off", "log_eps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"emulator {name}: expected > 0, got {getattr(self, name)}")
        for name in ("sigma", "refractory_us", "leak_rate_hz", "shot_noise_hz"):
            if getattr(self, name) < 0:
                raise ValueError(f"emulator {name}: expected >= 0, got {getattr(self, name)}")


def log_table(config: EmulatorConfig) -> np.ndarray:
    """Log intensity for each 8-bit grey level: float32 (256,)."""
    levels = np.arange(256, dtype=np.float64)
    if config.lin_log:
        linear = levels * np.log(20.0) / 20.0
        table = np.where(levels <= 20, linear, np.log(np.maximum(levels, 1.0)))
    else:
        table = np.log(levels / 255.0 + config.log_eps)
    return np.round(table, 8).astype(np.float32)


@njit(cache=True)
def _crossings(frame, table, l_prev, l_ref, c_on, c_off, last_t, t0, dt, refractory, leak, start, buf_dt, buf_xy, buf_p, count):
    """Emit threshold crossings of pixels ``start..`` into the buffers until they are full.

    frame (H*W,) uint8 (flattened); l_prev, l_ref, c_on, c_off (H*W,) float32; last_t (H*W,) int64 µs;
    buf_dt: µs offset of each event within the frame; buf_xy: flat pixel index; buf_p: polarity.
    Returns (next pixel to process, events in the buffers); next pixel == H*W when the frame is done.
    """
    n_pixels = frame.shape[0]
    capacity = buf_dt.shape[0]
    for i in range(start, n_pixels):
        if count + MAX_EVENTS_PER_PIXEL > capacity:
            return i, count
        new = table[frame[i]]
        old = l_prev[i]
        l_prev[i] = new
        ref = l_ref[i] - leak * c_on[i]
        change = new - old
        if new - ref >= c_on[i]:
            us_per_log = dt / change if change > 0 else 0.0
            step = c_on[i]
            cross = ref + step
            while cross <= new and count + 1 < capacity:
                offset = 0
                if (cross - old) * us_per_log > 0:
                    offset = np.int64((cross - old) * us_per_log)
                t = t0 + offset
                if t - last_t[i] > refractory:
                    buf_dt[count] = offset
                    buf_xy[count] = i
                    buf_p[count] = 1
                    count += 1
                    last_t[i] = t
                ref = cross
                cross += step
        elif ref - new >= c_off[i]:
            us_per_log = dt / change if change < 0 else 0.0
            step = c_off[i]
            cross = ref - step
            while cross >= new and count + 1 < capacity:
                offset = 0
                if (cross - old) * us_per_log > 0:
                    offset = np.int64((cross - old) * us_per_log)
                t = t0 + offset
                if t - last_t[i] > refractory:
                    buf_dt[count] = offset
                    buf_xy[count] = i
                    buf_p[count] = 0
                    count += 1
                    last_t[i] = t
                ref = cross
                cross -= step
        l_ref[i] = ref
    return n_pixels, count


@njit(cache=True)
def _add_shot_noise(pixels, on, l_prev, l_ref, offsets, last_t, t0, buf_dt, buf_xy, buf_p, count):
    """Append noise events (pixel, polarity, µs offset); a noise event resets the pixel's reference."""
    for k in range(pixels.shape[0]):
        if count >= buf_dt.shape[0]:
            break
        i = pixels[k]
        buf_dt[count] = offsets[k]
        buf_xy[count] = i
        buf_p[count] = on[k]
        count += 1
        l_ref[i] = l_prev[i]
        last_t[i] = t0 + offsets[k]
    return count


@njit(cache=True)
def _sorted_events(buf_dt, buf_xy, buf_p, count, dt, t0, width, out):
    """Counting sort of ``count`` buffered events by µs offset into ``out`` (DVS records)."""
    hist = np.zeros(dt + 2, dtype=np.int64)
    for k in range(count):
        hist[buf_dt[k] + 1] += 1
    for j in range(1, dt + 2):
        hist[j] += hist[j - 1]
    for k in range(count):
        slot = hist[buf_dt[k]]
        hist[buf_dt[k]] += 1
        out[slot].timestamp = t0 + buf_dt[k]
        out[slot].x = buf_xy[k] % width
        out[slot].y = buf_xy[k] // width
        out[slot].polarity = buf_p[k]


class DvsEmulator:
    """Streaming emulator for one camera: ``emulate(frame, t_us)`` -> events since the previous frame.

    width, height: frame size in pixels. The first frame only initialises the reference levels.
    """

    def __init__(self, width: int, height: int, config: EmulatorConfig = EmulatorConfig()):
        config.validate()
        if width < 1 or height < 1:
            raise ValueError(f"emulator frame size: expected positive width and height, got {width}x{height}")
        self.width, self.height, self.config = int(width), int(height), config
        self._table = log_table(config)
        n = self.width * self.height
        rng = np.random.default_rng(config.seed)
        self._c_on = np.maximum(rng.normal(config.c_on, config.sigma, n), 0.01).astype(np.float32)
        self._c_off = np.maximum(rng.normal(config.c_off, config.sigma, n), 0.01).astype(np.float32)
        self._noise_rng = np.random.default_rng(config.seed + 1)
        self._l_prev = np.zeros(n, dtype=np.float32)
        self._l_ref = np.zeros(n, dtype=np.float32)
        self._last_t = np.full(n, np.iinfo(np.int64).min // 2, dtype=np.int64)
        self._grow(max(4 * MAX_EVENTS_PER_PIXEL, n // 4))
        self._t_prev: int | None = None
        self.frames = 0

    def _grow(self, capacity: int) -> None:
        self._buf_dt = np.empty(capacity, dtype=np.int64)
        self._buf_xy = np.empty(capacity, dtype=np.int64)
        self._buf_p = np.empty(capacity, dtype=np.int8)

    def warmup(self) -> None:
        """Compile the kernels on a throw-away frame (call before any real-time clock starts)."""
        probe = DvsEmulator(4, 4, self.config)
        probe.emulate(np.zeros((4, 4), np.uint8), 0)
        probe.emulate(np.full((4, 4), 200, np.uint8), 1000)

    def emulate(self, frame: np.ndarray, t_us: int) -> np.ndarray:
        """Grey frame (H, W) uint8 at sensor time ``t_us`` -> DVS events in (t_prev, t_us], time-ordered."""
        if frame.shape != (self.height, self.width) or frame.dtype != np.uint8:
            raise ValueError(
                f"emulator frame: expected uint8 ({self.height}, {self.width}), got {frame.dtype} {frame.shape}"
            )
        t_us = int(t_us)
        self.frames += 1
        if self._t_prev is None:
            self._l_prev[:] = self._table[frame.ravel()]
            self._l_ref[:] = self._l_prev
            self._t_prev = t_us
            return np.zeros(0, dtype=DVS_EVENT_DTYPE)
        dt = t_us - self._t_prev
        if dt <= 0:
            raise ValueError(f"emulator frame time {t_us} µs is not after the previous frame ({self._t_prev} µs)")
        t0 = self._t_prev
        leak = np.float32(self.config.leak_rate_hz * dt * 1e-6)
        frame = np.ascontiguousarray(frame).ravel()
        start, count = 0, 0
        n_pixels = self.width * self.height
        while start < n_pixels:
            start, count = _crossings(
                frame, self._table, self._l_prev, self._l_ref, self._c_on, self._c_off, self._last_t,
                t0, dt, self.config.refractory_us, leak, start, self._buf_dt, self._buf_xy, self._buf_p, count,
            )
            if start < n_pixels:
                self._grow_keep(count)
        count = self._shot_noise(t0, dt, count)
        out = np.empty(count, dtype=DVS_EVENT_DTYPE)
        _sorted_events(self._buf_dt, self._buf_xy, self._buf_p, count, dt, t0, self.width, out)
        self._t_prev = t_us
        return out

    def _grow_keep(self, count: int) -> None:
        old = (self._buf_dt, self._buf_xy, self._buf_p)
        self._grow(2 * len(old[0]))
        self._buf_dt[:count], self._buf_xy[:count], self._buf_p[:count] = (a[:count] for a in old)

    def _shot_noise(self, t0: int, dt: int, count: int) -> int:
        rate = self.config.shot_noise_hz
        if rate <= 0:
            return count
        n = int(self._noise_rng.poisson(rate * self.width * self.height * dt * 1e-6))
        if n == 0:
            return count
        while count + n > len(self._buf_dt):
            self._grow_keep(count)
        pixels = self._noise_rng.integers(0, self.width * self.height, n)
        on = self._noise_rng.integers(0, 2, n).astype(np.int8)
        offsets = self._noise_rng.integers(0, dt, n)
        return _add_shot_noise(pixels, on, self._l_prev, self._l_ref, offsets, self._last_t, t0,
                               self._buf_dt, self._buf_xy, self._buf_p, count)
