"""The demo's dashboard: one BGR image showing what the robot sees, thinks and does.

Panels (960 x 540 px, four panels and a status column):

* camera: the robot's camera frame (grey) with the last ``event_window_ms`` of DVS events drawn on top
  (ON green, OFF magenta);
* map: the arena from above with the robot, its field of view and the path it drove (red crosses mark
  collisions);
* spikes: a raster of the network's neurons over the last second (one row per neuron, labelled);
* wheels: the wheel commands (rad/s) over the last five seconds;
* a status line: simulated time, speed, events/s, collisions.

:class:`DashboardRecorder` keeps the recent history (filled from the loop's decode step and the world
source's frames); :func:`draw` renders it. Writing to a window or an MP4 is up to the caller.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

WIDTH, HEIGHT = 960, 540
BG = (24, 24, 28)
FG = (235, 235, 235)
DIM = (120, 120, 120)
ON = (90, 230, 90)
OFF = (220, 80, 220)
LEFT_WHEEL = (80, 180, 255)
RIGHT_WHEEL = (255, 170, 60)


@dataclass
class Layout:
    """Panel rectangles (x, y, w, h) in dashboard pixels (a 30 px title bar, 18 px panel captions)."""

    camera = (10, 50, 432, 324)
    map = (452, 50, 324, 324)
    side = (786, 50, 164, 324)
    spikes = (10, 400, 432, 130)
    wheels = (452, 400, 498, 130)


class StepHistory:
    """The last ``capacity`` network steps as arrays (a ring): step times (µs, int64) and one row per step
    (``dtype``; the row length is set by the first row, and a row of another length starts afresh). One
    thread appends, another reads; the caller holds the lock."""

    def __init__(self, capacity: int, dtype) -> None:
        self.capacity = capacity
        self.dtype = dtype
        self.times = np.zeros(capacity, dtype=np.int64)
        self.values = np.zeros((capacity, 0), dtype=dtype)
        self.count = 0

    def append(self, t_us: int, row: np.ndarray) -> None:
        if self.values.shape[1] != len(row):
            self.values = np.zeros((self.capacity, len(row)), dtype=self.dtype)
            self.count = 0
        i = self.count % self.capacity
        self.times[i] = t_us
        self.values[i] = row
        self.count += 1

    def last(self, window_us: float) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the steps within ``window_us`` of the newest, oldest first: times (k,), rows (k, n)."""
        k = min(self.count, self.capacity)
        order = (self.count - k + np.arange(k)) % self.capacity
        times, values = self.times[order], self.values[order]
        keep = times > times[-1] - window_us if k else slice(None)
        return times[keep], values[keep]


class DashboardRecorder:
    """History for the dashboard. Thread-safe: the loop thread adds spikes and commands, the source thread
    adds frames and events.

    neuron_names: one label per recorded neuron (rows of the raster); the first ``n_sensory`` are drawn in
    the sensory colour, the rest in the motor colour. raster_ms / plot_s: history kept.
    """

    def __init__(self, neuron_names: list[str], n_sensory: int = 0, raster_ms: int = 1000, plot_s: float = 5.0,
                 event_window_ms: int = 30):
        self.neuron_names = list(neuron_names)
        self.n_sensory = n_sensory
        self.raster_ms = raster_ms
        self.event_window_us = event_window_ms * 1000
        self._lock = threading.RLock()
        self._spikes = StepHistory(raster_ms, bool)
        self._commands = StepHistory(int(plot_s * 1000), np.float64)
        self._frames: deque[tuple[int, np.ndarray]] = deque()
        self.path: list[tuple[float, float]] = []
        self.collision_points: list[tuple[float, float]] = []
        self.events_total = 0
        self.plot_s = plot_s

    def add_step(self, t_us: int, spikes: np.ndarray, command: np.ndarray | None) -> None:
        """One network step: spikes of the recorded neurons (n,) and the command (wheel rad/s) if any."""
        with self._lock:
            self._spikes.append(t_us, spikes)
            if command is not None:
                self._commands.append(t_us, command[:2])

    def add_frame(self, world, events: np.ndarray, t_us: int, collisions_before: int) -> None:
        """One camera frame of the world source (called in its thread)."""
        with self._lock:
            self._frames.append((t_us, events))
            self.events_total += len(events)
            while self._frames[0][0] <= t_us - self.event_window_us:
                self._frames.popleft()
            if not self.path or np.hypot(world.x_m - self.path[-1][0], world.y_m - self.path[-1][1]) > 0.01:
                self.path.append((world.x_m, world.y_m))
            if world.collisions > collisions_before:
                self.collision_points.append((world.x_m, world.y_m))

    def snapshot(self):
        """Copies of the histories for drawing: spikes (times µs (k,), fired bool (k, n)) over the last
        ``raster_ms``, commands (m, 3) rows of (t_us, left, right) over the last ``plot_s``, events or None."""
        with self._lock:
            events = np.concatenate([e for _, e in self._frames]) if self._frames else None
            commands = np.column_stack(self._commands.last(self.plot_s * 1e6))
            return self._spikes.last(self.raster_ms * 1000), commands, events

    def track(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """Copies of the whole path driven (points 1 cm apart) and the collision points, metres (x, y up)."""
        with self._lock:
            return list(self.path), list(self.collision_points)

    def view(self) -> "DashboardView":
        """A copy of everything :func:`draw` reads, to draw later or in another thread."""
        with self._lock:
            spikes, commands, events = self.snapshot()
            return DashboardView(self.neuron_names, self.n_sensory, self.raster_ms, self.plot_s, spikes, commands,
                                 events, list(self.path[-4000:]), list(self.collision_points), self.events_total)


@dataclass(frozen=True)
class DashboardView:
    """What the dashboard shows at one moment (see :meth:`DashboardRecorder.view`); draws like a recorder."""

    neuron_names: list
    n_sensory: int
    raster_ms: int
    plot_s: float
    spikes: tuple
    commands: np.ndarray
    events: np.ndarray | None
    path: list
    collision_points: list
    events_total: int

    def snapshot(self):
        return self.spikes, self.commands, self.events


def has_display() -> bool:
    """True when an OpenCV window can open (an X11/Wayland display is set)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _panel(image: np.ndarray, rect, title: str) -> np.ndarray:
    x, y, w, h = rect
    cv2.rectangle(image, (x - 1, y - 1), (x + w, y + h), (60, 60, 66), 1)
    cv2.putText(image, title, (x, y - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, DIM, 1, cv2.LINE_AA)
    return image[y:y + h, x:x + w]


#: Display gamma for the camera panel: the arena is dark but for the robot's headlight.
_BRIGHTEN = np.clip(255.0 * (np.arange(256) / 255.0) ** 0.5, 0, 255).astype(np.uint8)


def _camera(view: np.ndarray, frame: np.ndarray, events: np.ndarray | None) -> None:
    rgb = cv2.cvtColor(cv2.LUT(frame, _BRIGHTEN), cv2.COLOR_GRAY2BGR)
    if events is not None and len(events):
        on = events["polarity"] == 1
        rgb[events["y"][on], events["x"][on]] = ON
        rgb[events["y"][~on], events["x"][~on]] = OFF
    view[:] = cv2.resize(rgb, (view.shape[1], view.shape[0]), interpolation=cv2.INTER_NEAREST)


def _map(view: np.ndarray, world, recorder: DashboardRecorder) -> None:
    side = view.shape[0]
    scale = side / world.arena.size_m
    top = world.top_down(scale)
    view[:] = cv2.resize(top, (view.shape[1], view.shape[0]))

    def px(p):
        return int(p[0] * scale), int(side - 1 - p[1] * scale)

    path = [px(p) for p in recorder.path[-4000:]]
    if len(path) > 1:
        cv2.polylines(view, [np.array(path, np.int32)], False, (200, 120, 40), 1, cv2.LINE_AA)
    for point in recorder.collision_points:
        c = px(point)
        cv2.drawMarker(view, c, (0, 0, 255), cv2.MARKER_TILTED_CROSS, 14, 2)


#: Vertical space (px) one raster label needs: rows closer than this are not all labelled.
LABEL_PX = 12


def _raster(view: np.ndarray, times: np.ndarray, fired: np.ndarray, names: list[str], n_sensory: int, raster_ms: int,
            label_w: int = 80) -> None:
    """Spike raster of steps at ``times`` (µs int64 (k,), newest last) with spikes ``fired`` (bool (k, n)),
    drawn over the last ``raster_ms`` ms right-aligned; one row per name (label in the left ``label_w`` px)."""
    view[:] = BG
    n = len(names)
    if len(times) == 0 or n == 0:
        return
    row_h = view.shape[0] / n
    t_end = times[-1]
    width = view.shape[1] - label_w
    # rows shorter than a line of text: label only those a line below the last label (and the first one
    # half a line down, so its text is not cut off at the top)
    labelled_y = LABEL_PX // 2 - LABEL_PX
    for i, name in enumerate(names):
        cy = int((i + 0.5) * row_h)
        if cy - labelled_y >= LABEL_PX:
            cv2.putText(view, name, (4, cy + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, FG, 1, cv2.LINE_AA)
            labelled_y = cy
    xs = label_w + (width - 1 - (t_end - times) / 1000 * width / raster_ms).astype(np.int64)
    inside = (xs >= 0) & (xs < view.shape[1])
    gap = 3 if row_h >= 9 else 0   # a thin row is drawn whole (with a 3 px gap it would be empty)
    for i in range(n):
        columns = np.unique(xs[inside & fired[:, i]])
        top = int(i * row_h + gap)
        bottom = max(top + 1, int((i + 1) * row_h - gap) + (gap > 0))
        view[top:bottom, columns] = ON if i < n_sensory else (80, 200, 255)


def _wheels(view: np.ndarray, commands, limit: float, plot_s: float, names=("left", "right"),
            colours=(LEFT_WHEEL, RIGHT_WHEEL), legend: bool = True) -> None:
    """Command plot: ``commands`` is a list of (t_us, c0, c1, ...) rows, newest last, drawn over the last
    ``plot_s`` s between -limit and +limit; one line per name (colours cycle), legend top right (unless
    ``legend`` is False)."""
    view[:] = BG
    h, w = view.shape[:2]
    mid = h // 2
    cv2.line(view, (0, mid), (w, mid), (60, 60, 66), 1)
    if len(commands) == 0:
        return
    t_end = commands[-1][0]
    pts = np.asarray(commands, dtype=float)
    xs = (w - 1 - (t_end - pts[:, 0]) / 1e6 * w / plot_s).astype(np.int32)
    for column in range(1, min(len(names), pts.shape[1] - 1) + 1):
        ys = (mid - np.clip(pts[:, column] / limit, -1, 1) * (mid - 6)).astype(np.int32)
        colour = colours[(column - 1) % len(colours)]
        cv2.polylines(view, [np.stack([xs, ys], axis=1)], False, colour, 1, cv2.LINE_AA)
    cv2.putText(view, f"+{limit:.1f}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, DIM, 1, cv2.LINE_AA)
    cv2.putText(view, f"-{limit:.1f}", (4, h - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, DIM, 1, cv2.LINE_AA)
    x = w - 6
    for i in reversed(range(len(names) if legend else 0)):
        x -= cv2.getTextSize(names[i], cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0]
        cv2.putText(view, names[i], (x, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colours[i % len(colours)], 1,
                    cv2.LINE_AA)
        x -= 12


def _side(view: np.ndarray, lines: list[tuple[str, str]]) -> None:
    view[:] = BG
    y = 18
    for label, value in lines:
        cv2.putText(view, label, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.38, DIM, 1, cv2.LINE_AA)
        cv2.putText(view, value, (6, y + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, FG, 1, cv2.LINE_AA)
        y += 44


#: The empty dashboard, copied for every frame (np.full with a colour costs ~4 ms and holds the GIL).
_BLANK = np.full((HEIGHT, WIDTH, 3), BG, np.uint8)


def draw(world, recorder: DashboardRecorder | DashboardView, t_us: int, title: str, status: list[tuple[str, str]]) -> np.ndarray:
    """The dashboard for the world's current state: (540, 960, 3) uint8 BGR."""
    image = _BLANK.copy()
    cv2.putText(image, title, (10, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.5, FG, 1, cv2.LINE_AA)
    (times, fired), commands, events = recorder.snapshot()
    layout = Layout()
    _camera(_panel(image, layout.camera, "robot camera + DVS events (ON green, OFF magenta)"), world.image, events)
    _map(_panel(image, layout.map, "arena (path, collisions x)"), world, recorder)
    _side(_panel(image, layout.side, "status"), [("sim time", f"{t_us / 1e6:6.1f} s")] + status)
    if fired.shape[1] != len(recorder.neuron_names):
        fired = np.zeros((0, len(recorder.neuron_names)), bool)
        times = np.zeros(0, np.int64)
    _raster(_panel(image, layout.spikes, f"SNN spikes, last {recorder.raster_ms} ms"), times, fired,
            recorder.neuron_names, recorder.n_sensory, recorder.raster_ms)
    _wheels(_panel(image, layout.wheels, f"wheel commands (rad/s), last {recorder.plot_s:g} s"), commands,
            world.robot.max_wheel_radps, recorder.plot_s)
    return image
