"""The demo's summary PNG: the whole run in one picture, for a reader who sees nothing else.

(540, 960, 3) uint8 BGR:

* left: the arena from above (pillars grey, moving obstacles orange at their final place, the robot at its
  final pose) with the whole path driven, coloured from its start (dark purple) to its end (yellow) by
  distance along it, the start marked by a ring and every collision by a numbered red cross;
* right: the run's headline numbers (the ones ``spikeloop demo`` prints): simulated time, collisions,
  distance, mean speed (m/s and share of top speed), events, latencies (µs), real-time factor, the Loihi
  energy estimate (µJ/s) when the SNN ran, controller/backend, seed; sync timeouts and sink errors when
  there were any.
"""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.app.dashboard import BG, DIM, FG, HEIGHT, WIDTH

#: Arena square (px) and its top-left corner.
MAP_SIDE = 470
MAP_X, MAP_Y = 20, 44
#: Left edge of the numbers column (px).
TEXT_X = 520
COLLISION = (0, 0, 255)
GOOD = (90, 230, 90)


def path_colours(n: int) -> np.ndarray:
    """(n, 3) uint8 BGR colours from the path's start (dark purple) to its end (yellow): OpenCV's viridis."""
    ramp = np.linspace(0, 255, max(n, 1)).astype(np.uint8).reshape(-1, 1)
    return cv2.applyColorMap(ramp, cv2.COLORMAP_VIRIDIS).reshape(-1, 3)[:n]


def headline(summary: dict) -> list[tuple[str, str, tuple]]:
    """(label, value, colour) rows from ``DemoResult.summary()`` (a plain dict)."""
    s = summary
    seconds = max(s["sim_seconds"] or 0.0, 1e-9)
    rows = [
        ("simulated", f"{s['sim_seconds']:.1f} s", FG),
        ("collisions", f"{s['collisions']}", COLLISION if s["collisions"] else GOOD),
        ("distance", f"{s['distance_m']:.1f} m", FG),
        ("mean speed", f"{s['mean_speed_mps']:.3f} m/s ({100 * s['mean_speed_fraction']:.0f} % of top "
                       f"{s['top_speed_mps']:.2f})", FG),
        ("DVS events", f"{s['events']:,} ({s['events'] / seconds / 1000:.1f} k/s)", FG),
        ("latency p50 / p99", f"{s['latency_p50_us']:.0f} / {s['latency_p99_us']:.0f} us from arrival", FG),
        ("", f"{s['sensor_latency_p50_us']:.0f} / {s['sensor_latency_p99_us']:.0f} us from sensor time", FG),
        ("speed vs real time", f"{s['realtime_factor']:.2f}x ({s['mode']})", FG),
    ]
    if s.get("energy_uj_per_s") is not None:
        rows.append(("Loihi 1 estimate", f"{s['energy_uj_per_s']:.2f} uJ/s dynamic + "
                                         f"{s['static_energy_uj_per_s']:.0f} uJ/s static", FG))
    controller = f"SNN ({s['backend']})" if s["controller"] == "snn" else "Braitenberg (numpy)"
    rows.append(("controller", controller + (", weights zeroed" if s.get("zero_weights") else ""), FG))
    problems = [f"{s[k]} {k.replace('_', ' ')}" for k in ("sync_timeouts", "sink_errors") if s.get(k)]
    if problems:
        rows.append(("problems", ", ".join(problems), COLLISION))
    return rows


def draw_summary(world, path: list[tuple[float, float]], collision_points: list[tuple[float, float]],
                 summary: dict) -> np.ndarray:
    """The summary image for the ``world`` at the end of a run, the ``path`` driven and ``collision_points``
    (metres, arena frame, y up) and the run's ``summary`` dict."""
    image = np.full((HEIGHT, WIDTH, 3), BG, np.uint8)
    title = (f"spikeloop demo, arena {summary['seed']}: {summary['sim_seconds']:.0f} s, "
             f"{summary['collisions']} collision{'s' if summary['collisions'] != 1 else ''}, "
             f"mean speed {summary['mean_speed_mps']:.2f} m/s")
    cv2.putText(image, title, (MAP_X, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.6, FG, 1, cv2.LINE_AA)
    scale = MAP_SIDE / world.arena.size_m
    arena = cv2.resize(world.top_down(scale), (MAP_SIDE, MAP_SIDE))

    def px(point) -> tuple[int, int]:
        return int(point[0] * scale), int(MAP_SIDE - 1 - point[1] * scale)

    points = np.array([px(p) for p in path], np.int32).reshape(-1, 2)
    for (a, b), colour in zip(zip(points[:-1], points[1:]), path_colours(max(len(points) - 1, 0))):
        cv2.line(arena, tuple(map(int, a)), tuple(map(int, b)), tuple(map(int, colour)), 2, cv2.LINE_AA)
    if len(points):
        cv2.circle(arena, tuple(map(int, points[0])), 7, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(arena, "start", (int(points[0][0]) + 9, int(points[0][1]) - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 0, 0), 1, cv2.LINE_AA)
    for number, point in enumerate(collision_points, 1):
        c = px(point)
        cv2.drawMarker(arena, c, COLLISION, cv2.MARKER_TILTED_CROSS, 16, 3)
        cv2.putText(arena, str(number), (c[0] + 8, c[1] + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, COLLISION, 1,
                    cv2.LINE_AA)
    image[MAP_Y:MAP_Y + MAP_SIDE, MAP_X:MAP_X + MAP_SIDE] = arena
    # Colour key of the path, under the map.
    key_y = MAP_Y + MAP_SIDE + 12
    ramp = path_colours(200)
    image[key_y:key_y + 8, MAP_X + 60:MAP_X + 260] = ramp[None, :, :]
    cv2.putText(image, "path: start", (MAP_X, key_y + 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, DIM, 1, cv2.LINE_AA)
    cv2.putText(image, f"end ({summary['distance_m']:.1f} m)   x collision   {world.arena.size_m:g} m arena",
                (MAP_X + 268, key_y + 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, DIM, 1, cv2.LINE_AA)
    y = MAP_Y + 14
    for label, value, colour in headline(summary):
        if label:
            cv2.putText(image, label, (TEXT_X, y), cv2.FONT_HERSHEY_SIMPLEX, 0.42, DIM, 1, cv2.LINE_AA)
            y += 18
        cv2.putText(image, value, (TEXT_X + 8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.52, colour, 1, cv2.LINE_AA)
        y += 24
    return image
