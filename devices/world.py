"""A 2-D simulated robot world: a differential-drive robot among walls and obstacles, seen by a camera.

The world is a square arena (walls on its four sides) with static round pillars and moving round
obstacles, placed at random from a seed. The movers keep straight paths, bouncing off the walls and
pillars but taking no notice of the robot: one that runs into it is the robot's collision. The robot is a
TurtleBot3-Burger sized differential drive (wheel radius 33 mm, track 160 mm, body radius 105 mm) with XL430 wheel motors
up to their default velocity limit of 6.355 rad/s, i.e. 0.21 m/s. It carries a forward camera (horizontal
field of view ``fov_rad``) rendered by ray casting one ray per image column in numba: walls and obstacles
are drawn with height inversely proportional to their distance, lit by the robot's headlight (see
:class:`CameraConfig`), so motion produces brightness changes that the frame-to-event emulator turns into
DVS events (looming obstacles brighten and expand, passing walls stream).

Units: metres, seconds, radians; wheel speeds in rad/s; image uint8 (height, width).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

#: A contact episode ends (and the next touch counts as a new collision) once the robot is this far clear (m).
CONTACT_RELEASE_M = 0.02


@dataclass(frozen=True)
class RobotGeometry:
    """Differential-drive geometry (TurtleBot3 Burger; metres, rad/s) and the wheel motors' time constant (s)."""

    wheel_radius_m: float = 0.033
    track_m: float = 0.160
    body_radius_m: float = 0.105
    max_wheel_radps: float = 265 * 0.229 * 2 * math.pi / 60  # XL430 default Velocity Limit: 6.355 rad/s
    motor_tau_s: float = 0.05

    @property
    def top_speed_mps(self) -> float:
        """Forward speed with both wheels at their limit (m/s)."""
        return self.wheel_radius_m * self.max_wheel_radps


@dataclass(frozen=True)
class ArenaConfig:
    """How random arenas are made. Sizes in metres, speeds in m/s."""

    size_m: float = 4.0
    pillars: int = 6
    pillar_radius_m: tuple[float, float] = (0.12, 0.25)
    movers: int = 2
    mover_radius_m: float = 0.15
    mover_speed_mps: float = 0.12
    clearance_m: float = 0.5


@dataclass(frozen=True)
class CameraConfig:
    """Forward camera: image size (pixels), horizontal field of view (rad), wall and camera height (m).

    The arena is dark but for ``ambient`` grey levels, and the robot carries a headlight: a surface of
    albedo ``shade`` at distance d shows ``ambient + shade min(1, headlight_m / d)``. Driving towards a
    surface at speed v then raises its log brightness at about ``v / d`` per second, so the DVS event rate
    of what lies ahead grows as the time to contact shrinks (and its image grows as 1/d^2): the looming
    cue the obstacle network reads. Surfaces carry faint stripes so turning shows them too.
    """

    width: int = 64
    height: int = 48
    fov_rad: float = math.radians(140.0)
    wall_height_m: float = 0.5
    camera_height_m: float = 0.12
    ambient: float = 6.0
    headlight_m: float = 0.12

    @property
    def focal_px(self) -> float:
        """Focal length in pixels for the horizontal field of view."""
        return (self.width / 2) / math.tan(self.fov_rad / 2)


@njit(cache=True)
def _render(image, x, y, heading, focal, size, cx, cy, cr, wall_h, cam_h, ambient, headlight_m, depth):
    """Ray-cast one column per pixel column; fill ``image`` (H, W) uint8 and ``depth`` (W,) metres."""
    height, width = image.shape
    horizon = height / 2.0
    for col in range(width):
        offset = (width / 2.0 - (col + 0.5)) / focal
        angle = heading + math.atan(offset)
        dx = math.cos(angle)
        dy = math.sin(angle)
        best = 1e9
        shade = 0.0
        # the four walls x=0, x=size, y=0, y=size
        if dx > 1e-9:
            t = (size - x) / dx
            if t < best:
                best = t
                shade = 150.0 + 70.0 * ((int((y + t * dy) * 10.0) & 1))
        elif dx < -1e-9:
            t = -x / dx
            if t < best:
                best = t
                shade = 150.0 + 70.0 * ((int((y + t * dy) * 10.0) & 1))
        if dy > 1e-9:
            t = (size - y) / dy
            if t < best:
                best = t
                shade = 140.0 + 70.0 * ((int((x + t * dx) * 10.0) & 1))
        elif dy < -1e-9:
            t = -y / dy
            if t < best:
                best = t
                shade = 140.0 + 70.0 * ((int((x + t * dx) * 10.0) & 1))
        for k in range(cx.shape[0]):
            ox = cx[k] - x
            oy = cy[k] - y
            along = ox * dx + oy * dy
            if along <= 0.0:
                continue
            miss2 = ox * ox + oy * oy - along * along
            r2 = cr[k] * cr[k]
            if miss2 >= r2:
                continue
            t = along - math.sqrt(r2 - miss2)
            if 0.0 < t < best:
                best = t
                hit_angle = math.atan2(y + t * dy - cy[k], x + t * dx - cx[k])
                shade = 200.0 + 30.0 * ((int((hit_angle + math.pi) * 4.0) & 1))
        depth[col] = best
        dist = best * math.cos(math.atan(offset))
        top = horizon - focal * (wall_h - cam_h) / max(dist, 1e-3)
        bottom = horizon + focal * cam_h / max(dist, 1e-3)
        lit = ambient + shade * min(1.0, headlight_m / max(best, 1e-3))
        for row in range(height):
            if row < top:
                image[row, col] = 30
            elif row > bottom:
                image[row, col] = 60
            else:
                image[row, col] = np.uint8(min(255.0, lit))


@njit(cache=True)
def _clearance(x, y, body_r, size, cx, cy, cr):
    """Gap (m) between a robot body at (x, y) and the nearest wall or obstacle; < 0 when overlapping."""
    gap = min(min(x, y), min(size - x, size - y)) - body_r
    for k in range(cx.shape[0]):
        d = math.sqrt((cx[k] - x) ** 2 + (cy[k] - y) ** 2) - cr[k] - body_r
        if d < gap:
            gap = d
    return gap


@njit(cache=True)
def _contact_normal(x, y, size, cx, cy, cr):
    """Unit normal (nx, ny) of the surface nearest to (x, y), pointing from the surface towards the point."""
    best = x
    nx, ny = 1.0, 0.0
    if size - x < best:
        best, nx, ny = size - x, -1.0, 0.0
    if y < best:
        best, nx, ny = y, 0.0, 1.0
    if size - y < best:
        best, nx, ny = size - y, 0.0, -1.0
    for k in range(cx.shape[0]):
        dx = x - cx[k]
        dy = y - cy[k]
        distance = math.sqrt(dx * dx + dy * dy)
        if distance - cr[k] < best and distance > 0:
            best, nx, ny = distance - cr[k], dx / distance, dy / distance
    return nx, ny


@njit(cache=True)
def _move_obstacles(cx, cy, cr, vx, vy, n_static, size, dt):
    """Move the obstacles after the first ``n_static`` by (vx, vy) * dt on their own straight paths; they
    bounce off the walls (that velocity component reversed) and off the static pillars (velocity reversed),
    with no move that step. They take no notice of the robot: one that runs into it collides with it."""
    for k in range(vx.shape[0]):
        i = n_static + k
        nx = cx[i] + vx[k] * dt
        ny = cy[i] + vy[k] * dt
        if not (cr[i] < nx < size - cr[i]):
            vx[k] = -vx[k]
            nx = cx[i]
        if not (cr[i] < ny < size - cr[i]):
            vy[k] = -vy[k]
            ny = cy[i]
        blocked = False
        for j in range(n_static):
            if math.sqrt((cx[j] - nx) ** 2 + (cy[j] - ny) ** 2) < cr[j] + cr[i]:
                blocked = True
        if blocked:
            vx[k] = -vx[k]
            vy[k] = -vy[k]
        else:
            cx[i] = nx
            cy[i] = ny


@dataclass
class World:
    """The arena, its obstacles and the robot; ``step(left, right, dt)`` integrates, ``render()`` draws.

    State: robot pose (x_m, y_m, heading_rad), obstacles as circles (cx, cy, r) of which the last
    ``arena.movers`` move with (vx, vy). ``collisions`` counts contact episodes (touching an obstacle or a
    wall counts once until the robot is clear again); ``distance_m`` the path length driven forward.
    """

    seed: int = 0
    arena: ArenaConfig = field(default_factory=ArenaConfig)
    robot: RobotGeometry = field(default_factory=RobotGeometry)
    camera: CameraConfig = field(default_factory=CameraConfig)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        size = self.arena.size_m
        self.x_m, self.y_m = size / 2, size / 2
        self.heading_rad = float(rng.uniform(-math.pi, math.pi))
        radii = list(rng.uniform(*self.arena.pillar_radius_m, self.arena.pillars))
        radii += [self.arena.mover_radius_m] * self.arena.movers
        centres: list[tuple[float, float]] = []
        for r in radii:
            for _ in range(1000):
                c = rng.uniform(r + 0.05, size - r - 0.05, 2)
                clear_of_robot = math.hypot(c[0] - self.x_m, c[1] - self.y_m) > r + self.robot.body_radius_m + self.arena.clearance_m
                clear_of_others = all(math.hypot(c[0] - o[0], c[1] - o[1]) > r + radii[i] + 0.3 for i, o in enumerate(centres))
                if clear_of_robot and clear_of_others:
                    break
            centres.append((float(c[0]), float(c[1])))
        self.cx = np.array([c[0] for c in centres])
        self.cy = np.array([c[1] for c in centres])
        self.cr = np.array(radii)
        angles = rng.uniform(-math.pi, math.pi, self.arena.movers)
        self.vx = self.arena.mover_speed_mps * np.cos(angles)
        self.vy = self.arena.mover_speed_mps * np.sin(angles)
        self.wheel_radps = np.zeros(2)
        self.time_s = 0.0
        self.collisions = 0
        self.distance_m = 0.0
        self._in_contact = False
        self.image = np.zeros((self.camera.height, self.camera.width), np.uint8)
        self.depth_m = np.zeros(self.camera.width)

    @property
    def n_static(self) -> int:
        """Number of static pillars (the first obstacles); the rest move."""
        return len(self.cr) - self.arena.movers

    def render(self) -> np.ndarray:
        """Draw the robot's camera view into ``self.image`` (H, W) uint8 and return it."""
        _render(self.image, self.x_m, self.y_m, self.heading_rad, self.camera.focal_px, self.arena.size_m,
                self.cx, self.cy, self.cr, self.camera.wall_height_m, self.camera.camera_height_m,
                self.camera.ambient, self.camera.headlight_m, self.depth_m)
        return self.image

    def clearance_m(self) -> float:
        """Distance from the robot's body to the nearest wall or obstacle surface (m; < 0 when overlapping)."""
        return _clearance(self.x_m, self.y_m, self.robot.body_radius_m, self.arena.size_m, self.cx, self.cy, self.cr)

    def step(self, left_radps: float, right_radps: float, dt_s: float) -> None:
        """Advance physics by ``dt_s`` with the given wheel speed commands (rad/s, clipped to the motor limit).

        The wheels follow their commands with the motors' first-order lag (``robot.motor_tau_s``; 0 = at
        once); ``wheel_radps`` holds their speeds. The moving obstacles move first, on their own paths (one
        may run into the robot). A robot move that would go deeper into an obstacle or wall keeps only the
        part of the move along the surface (frictionless sliding), or none if even that goes deeper. Any
        overlap, whoever caused it, counts as one collision until the robot is clear again.
        """
        robot = self.robot
        limit = robot.max_wheel_radps
        follow = 1.0 - math.exp(-dt_s / robot.motor_tau_s) if robot.motor_tau_s > 0 else 1.0
        wheels = self.wheel_radps
        wheels[0] += (min(max(left_radps, -limit), limit) - wheels[0]) * follow
        wheels[1] += (min(max(right_radps, -limit), limit) - wheels[1]) * follow
        v = robot.wheel_radius_m * (wheels[0] + wheels[1]) / 2
        omega = robot.wheel_radius_m * (wheels[1] - wheels[0]) / robot.track_m
        _move_obstacles(self.cx, self.cy, self.cr, self.vx, self.vy, self.n_static, self.arena.size_m, dt_s)
        before = self.clearance_m()
        old_x, old_y = self.x_m, self.y_m
        heading = self.heading_rad + omega * dt_s / 2
        self.x_m += v * math.cos(heading) * dt_s
        self.y_m += v * math.sin(heading) * dt_s
        self.heading_rad = math.remainder(self.heading_rad + omega * dt_s, math.tau)
        clearance = self.clearance_m()
        if clearance < 0 or before < 0:
            if clearance < min(before, 0.0):
                self._slide(old_x, old_y, min(before, 0.0))
            if not self._in_contact:
                self.collisions += 1
                self._in_contact = True
        else:
            self.distance_m += max(v, 0.0) * dt_s
            if self._in_contact and clearance > CONTACT_RELEASE_M:
                self._in_contact = False
        self.time_s += dt_s

    def _slide(self, old_x: float, old_y: float, floor_m: float) -> None:
        """A move that went deeper into a surface than ``floor_m`` (the clearance before it, <= 0) keeps only
        its part along that surface (frictionless contact); if even that goes deeper, the robot stays put."""
        nx, ny = _contact_normal(old_x, old_y, self.arena.size_m, self.cx, self.cy, self.cr)
        dx, dy = self.x_m - old_x, self.y_m - old_y
        into = dx * nx + dy * ny
        if into < 0:
            dx, dy = dx - into * nx, dy - into * ny
        self.x_m, self.y_m = old_x + dx, old_y + dy
        if self.clearance_m() < floor_m:
            self.x_m, self.y_m = old_x, old_y

    def snapshot(self) -> "World":
        """A copy of the world's current state (its arrays copied), e.g. to draw it in another thread while
        this one moves on."""
        copy = object.__new__(World)
        copy.__dict__.update({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()})
        return copy

    def top_down(self, scale_px_per_m: float = 100.0) -> np.ndarray:
        """A map of the arena: (S, S, 3) uint8 BGR with obstacles, the robot and its field of view."""
        import cv2

        side = int(self.arena.size_m * scale_px_per_m)
        canvas = np.full((side, side, 3), 245, np.uint8)

        def px(x: float, y: float) -> tuple[int, int]:
            return int(x * scale_px_per_m), int(side - 1 - y * scale_px_per_m)

        for i in range(len(self.cr)):
            colour = (90, 90, 90) if i < self.n_static else (40, 120, 230)
            cv2.circle(canvas, px(self.cx[i], self.cy[i]), int(self.cr[i] * scale_px_per_m), colour, -1, cv2.LINE_AA)
        for side_angle in (-self.camera.fov_rad / 2, self.camera.fov_rad / 2):
            a = self.heading_rad + side_angle
            cv2.line(canvas, px(self.x_m, self.y_m), px(self.x_m + 0.6 * math.cos(a), self.y_m + 0.6 * math.sin(a)),
                     (200, 200, 120), 1, cv2.LINE_AA)
        body = int(self.robot.body_radius_m * scale_px_per_m)
        cv2.circle(canvas, px(self.x_m, self.y_m), body, (40, 160, 40), -1, cv2.LINE_AA)
        nose = px(self.x_m + self.robot.body_radius_m * math.cos(self.heading_rad),
                  self.y_m + self.robot.body_radius_m * math.sin(self.heading_rad))
        cv2.line(canvas, px(self.x_m, self.y_m), nose, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.rectangle(canvas, (0, 0), (side - 1, side - 1), (0, 0, 0), 2)
        return canvas
