"""The simulated robot world: arenas from seeds, differential-drive physics, collisions, the camera."""
from __future__ import annotations

import math

import numpy as np
import pytest

from devices.world import ArenaConfig, RobotGeometry, World

EMPTY = ArenaConfig(pillars=0, movers=0)
IDEAL_MOTORS = RobotGeometry(motor_tau_s=0.0)


def test_same_seed_same_arena_different_seed_different_arena():
    a, b, c = World(seed=5), World(seed=5), World(seed=6)
    assert np.array_equal(a.cx, b.cx) and a.heading_rad == b.heading_rad
    assert not np.array_equal(a.cx, c.cx)


def test_arenas_start_with_the_robot_clear_of_everything():
    for seed in range(20):
        world = World(seed=seed)
        assert world.clearance_m() > world.arena.clearance_m - 1e-9


def test_straight_driving_speed_and_turn_rate_follow_the_wheel_speeds():
    world = World(seed=0, arena=EMPTY, robot=IDEAL_MOTORS)
    world.heading_rad = 0.0
    x0 = world.x_m
    for _ in range(1000):
        world.step(5.0, 5.0, 0.001)
    assert world.x_m - x0 == pytest.approx(world.robot.wheel_radius_m * 5.0, rel=1e-6)
    assert world.distance_m == pytest.approx(world.robot.wheel_radius_m * 5.0, rel=1e-6)
    for _ in range(1000):
        world.step(-2.0, 2.0, 0.001)
    expected = world.robot.wheel_radius_m * 4.0 / world.robot.track_m
    assert world.heading_rad == pytest.approx(expected, rel=1e-6)


def test_wheel_speeds_are_clipped_to_the_motor_limit():
    world = World(seed=0, arena=EMPTY, robot=IDEAL_MOTORS)
    world.heading_rad = 0.0
    x0 = world.x_m
    world.step(100.0, 100.0, 0.1)
    assert world.x_m - x0 == pytest.approx(world.robot.top_speed_mps * 0.1)


def test_a_robot_touching_a_wall_slides_along_it():
    world = World(seed=0, arena=EMPTY, robot=IDEAL_MOTORS)
    world.heading_rad = math.radians(45.0)
    world.x_m = world.arena.size_m - world.robot.body_radius_m - 0.001
    y0 = world.y_m
    for _ in range(1000):
        world.step(5.0, 5.0, 0.001)
    assert world.collisions == 1
    assert world.x_m <= world.arena.size_m - world.robot.body_radius_m
    assert world.y_m - y0 == pytest.approx(world.robot.wheel_radius_m * 5.0 * math.sqrt(0.5), rel=0.02)


def test_wheels_follow_commands_with_the_motor_time_constant():
    world = World(seed=0, arena=EMPTY)
    world.step(4.0, -4.0, world.robot.motor_tau_s)
    assert world.wheel_radps == pytest.approx([4.0 * (1 - math.exp(-1)), -4.0 * (1 - math.exp(-1))])


def test_driving_into_a_wall_is_one_collision_and_the_robot_is_blocked():
    world = World(seed=0, arena=EMPTY)
    world.heading_rad = 0.0
    for _ in range(20000):
        world.step(6.0, 6.0, 0.001)
    assert world.collisions == 1
    assert world.x_m <= world.arena.size_m - world.robot.body_radius_m
    for _ in range(2000):
        world.step(-6.0, -6.0, 0.001)
    for _ in range(4000):
        world.step(6.0, 6.0, 0.001)
    assert world.collisions == 2


def test_an_obstacle_ahead_fills_the_centre_of_the_view_and_looms():
    """The headlight makes a nearer surface brighter and its image larger."""
    world = World(seed=0, arena=EMPTY)
    world.heading_rad = 0.0
    world.cx, world.cy, world.cr = np.array([world.x_m + 1.0]), np.array([world.y_m]), np.array([0.2])
    far = world.render().copy()
    far_columns = int((world.depth_m < 1.2).sum())
    world.x_m += 0.5
    near = world.render().copy()
    near_columns = int((world.depth_m < 1.2).sum())
    centre = world.camera.width // 2
    assert world.depth_m[centre] == pytest.approx(0.3, abs=1e-3)
    assert near_columns > 2 * far_columns > 0
    row = world.camera.height // 2
    assert near[row, centre] > 2 * far[row, centre]
    assert (near[:, centre] > far[:, centre] + 10).sum() > (world.camera.height // 3)


def test_moving_obstacles_move_and_stay_inside():
    world = World(seed=3)
    start = (world.cx[-1], world.cy[-1])
    for _ in range(20000):
        world.step(0.0, 0.0, 0.005)
    assert (world.cx[-1], world.cy[-1]) != start
    movers = slice(world.n_static, None)
    assert np.all(world.cx[movers] >= world.cr[movers]) and np.all(world.cx[movers] <= world.arena.size_m - world.cr[movers])


def test_top_down_map_shape():
    world = World(seed=1)
    assert world.top_down(50.0).shape == (200, 200, 3)
    assert math.isfinite(world.clearance_m())


def test_a_moving_obstacle_keeps_its_path_through_the_robot_and_that_is_a_collision():
    """Movers take no notice of the robot: the same mover moves the same with or without a robot in its way,
    and running into a robot that stands still counts as the robot's collision (once per contact)."""
    arena = ArenaConfig(pillars=0, movers=1, mover_speed_mps=0.2)
    hit, clear = World(seed=0, arena=arena), World(seed=0, arena=arena)
    for world, y in ((hit, hit.y_m), (clear, 0.5)):
        world.cx[0], world.cy[0] = world.x_m - 1.0, y
        world.vx[0], world.vy[0] = 0.2, 0.0
    clear.y_m = 3.5
    path_hit, path_clear = [], []
    for _ in range(10_000):
        hit.step(0.0, 0.0, 0.001)
        clear.step(0.0, 0.0, 0.001)
        path_hit.append(hit.cx[0])
        path_clear.append(clear.cx[0])
    assert path_hit == path_clear
    assert path_hit[-1] == pytest.approx(hit.x_m + 1.0, abs=1e-9)
    assert hit.collisions == 1 and clear.collisions == 0


def test_a_robot_hit_by_a_mover_may_drive_out_of_the_overlap():
    """A robot that a mover ran into is not frozen: a move that reduces the overlap is taken."""
    world = World(seed=0, arena=ArenaConfig(pillars=0, movers=1, mover_speed_mps=0.0), robot=IDEAL_MOTORS)
    world.heading_rad = 0.0
    world.cx[0], world.cy[0] = world.x_m - world.robot.body_radius_m - world.cr[0] + 0.02, world.y_m
    x0 = world.x_m
    world.step(5.0, 5.0, 0.01)
    assert world.collisions == 1 and world.x_m > x0
    assert world.clearance_m() > -0.02


def test_a_world_snapshot_is_a_copy():
    world = World(seed=2)
    copy = world.snapshot()
    world.step(5.0, 5.0, 0.1)
    world.render()
    assert copy.x_m != world.x_m and copy.time_s == 0.0
    assert not np.shares_memory(copy.cx, world.cx) and not np.shares_memory(copy.image, world.image)
