"""Generate ``moving_bars.aedat4``: a small deterministic synthetic DVS recording shipped with spikeloop.

Scene (128 x 128 sensor, 3 s, grey background): a bright vertical bar sweeping left to right, a dark
horizontal bar sweeping top to bottom and a bright square circling the centre. The scene is rendered
every 1 ms; a pixel whose log intensity rises emits an ON event and one whose log intensity falls an
OFF event (bright objects: ON at the leading edge, OFF at the trailing edge; the dark bar the reverse),
at the frame time plus a per-event latency of 0-500 µs. Uniform background noise adds ~200 events/s.
The same seed always gives the same file (~25 k events, ~0.4 MB).

    python recordings/samples/generate.py [OUT.aedat4]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pipeline.core.events import DVS_EVENT_DTYPE
from recordings.aedat4_writer import Aedat4Writer

WIDTH = HEIGHT = 128
DURATION_US = 3_000_000
FRAME_US = 1000
#: Events are written in packets of this much sensor time (µs), like a camera's 10 ms packets.
PACKET_US = 10_000
SEED = 20240601
BACKGROUND, BRIGHT, DARK = 0.3, 1.0, 0.05
NOISE_RATE_HZ = 200.0
MAX_LATENCY_US = 500
OUTPUT = Path(__file__).with_name("moving_bars.aedat4")


def render(t_us: int) -> np.ndarray:
    """Scene intensity (HEIGHT, WIDTH) float32 at time ``t_us`` (µs)."""
    t = t_us / 1e6
    image = np.full((HEIGHT, WIDTH), BACKGROUND, dtype=np.float32)
    x = int(np.floor(-10 + 48.0 * t))
    image[40:88, max(x, 0):max(x + 6, 0)] = BRIGHT
    y = int(np.floor(-8 + 46.0 * t))
    image[max(y, 0):max(y + 6, 0), 44:84] = DARK
    angle = 2 * np.pi * 0.4 * t
    cx = int(np.floor(64 + 34 * np.cos(angle)))
    cy = int(np.floor(64 + 34 * np.sin(angle)))
    image[cy - 3:cy + 3, cx - 3:cx + 3] = BRIGHT
    return image


def scene_events(rng: np.random.Generator) -> np.ndarray:
    """All events of the scene, sorted by timestamp (DVS_EVENT_DTYPE, (n,))."""
    parts = []
    previous = np.log(render(0))
    for t in range(FRAME_US, DURATION_US + 1, FRAME_US):
        current = np.log(render(t))
        ys, xs = np.nonzero(current != previous)
        if len(xs):
            part = np.zeros(len(xs), dtype=DVS_EVENT_DTYPE)
            part["timestamp"] = t - FRAME_US + rng.integers(0, MAX_LATENCY_US, len(xs))
            part["x"] = xs
            part["y"] = ys
            part["polarity"] = current[ys, xs] > previous[ys, xs]
            parts.append(part)
        previous = current
    n_noise = rng.poisson(NOISE_RATE_HZ * DURATION_US / 1e6)
    noise = np.zeros(n_noise, dtype=DVS_EVENT_DTYPE)
    noise["timestamp"] = rng.integers(0, DURATION_US, n_noise)
    noise["x"] = rng.integers(0, WIDTH, n_noise)
    noise["y"] = rng.integers(0, HEIGHT, n_noise)
    noise["polarity"] = rng.integers(0, 2, n_noise)
    events = np.concatenate(parts + [noise], dtype=DVS_EVENT_DTYPE)
    events = events[np.argsort(events["timestamp"], kind="stable")]
    out = np.zeros(len(events), dtype=DVS_EVENT_DTYPE)  # zeroed padding: byte-identical files
    for name in DVS_EVENT_DTYPE.names:
        out[name] = events[name]
    return out


def generate(path: Path = OUTPUT) -> int:
    """Write the sample recording to ``path``; returns the event count."""
    events = scene_events(np.random.default_rng(SEED))
    cuts = np.searchsorted(events["timestamp"], np.arange(PACKET_US, DURATION_US, PACKET_US))
    with Aedat4Writer(path, WIDTH, HEIGHT, source="spikeloop moving_bars (synthetic)") as writer:
        for packet in np.split(events, cuts):
            writer.write(packet)
    return len(events)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT
    count = generate(target)
    print(f"{target}: {count:,} events, {target.stat().st_size / 1e3:.0f} kB")
