"""trajectories builders and combinators: geometric properties checked with independent maths (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trajectories as tj
from trajectories import Trajectory, TrajectoryError

EXAMPLES = settings(max_examples=40, deadline=None)

finite = st.floats(-4, 4, allow_nan=False)
frames = st.integers(1, 24)
eases = st.sampled_from(sorted(tj.EASINGS))


@st.composite
def start_poses(draw):
    """A random start camera (position, a look-at point at least 0.5 away, a non-degenerate up), or None."""
    if draw(st.booleans()):
        return None
    position = np.array([draw(finite) for _ in range(3)])
    direction = np.array([draw(st.floats(-1, 1)) for _ in range(3)])
    if np.linalg.norm(direction) < 0.3:
        direction = np.array([0.0, 0.0, 1.0])
    up = np.array([0.0, -1.0, 0.0]) if abs(direction[1]) < 0.9 * np.linalg.norm(direction) else np.array([1.0, 0, 0])
    intr = [draw(st.floats(0.2, 2)), draw(st.floats(0.2, 2)), draw(st.floats(0.3, 0.7)), draw(st.floats(0.3, 0.7))]
    return tj.camera(position, position + 2 * direction / np.linalg.norm(direction), up, intrinsics=intr,
                     aspect=draw(st.floats(0.5, 2)))


def _in_start_axes(path: Trajectory, start) -> np.ndarray:
    """c2w of every frame expressed in the start camera's axes (computed with plain inverses)."""
    w2c0 = np.eye(4) if start is None else start.w2c[-1]
    return np.array([w2c0 @ np.linalg.inv(w) for w in path.w2c])


def _assert_rigid(path: Trajectory):
    r = path.w2c[:, :3, :3]
    np.testing.assert_allclose(r @ np.swapaxes(r, 1, 2), np.broadcast_to(np.eye(3), r.shape), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-9)
    np.testing.assert_array_equal(path.w2c[:, 3], np.broadcast_to([0, 0, 0, 1.0], (len(path), 4)))


def _eased(name, n):
    """The easing as documented (docs/trajectories.md), evaluated here independently."""
    s = np.linspace(0, 1, n) if n > 1 else np.zeros(1)
    return {"linear": s, "ease_in": 1 - np.cos(np.pi * s / 2), "ease_out": np.sin(np.pi * s / 2),
            "ease_in_out": (1 - np.cos(np.pi * s)) / 2}[name]


# -- builders --------------------------------------------------------------------------------------------------

@EXAMPLES
@given(start=start_poses(), direction=st.sampled_from(tj.builders.ORBIT_DIRECTIONS),
       degrees=st.floats(-170, 170), distance=st.floats(0.1, 10), n=frames, ease=eases)
def test_orbit_keeps_its_look_at_point_on_the_principal_point(start, direction, degrees, distance, n, ease):
    path = tj.orbit(direction, degrees, distance, frames=n, ease=ease, start=start)
    assert len(path) == n
    _assert_rigid(path)
    w2c0 = np.eye(4) if start is None else start.w2c[-1]
    target = np.linalg.inv(w2c0) @ np.array([0, 0, distance, 1.0])  # the point straight ahead of the start
    for t in range(n):
        cam = path.w2c[t] @ target
        np.testing.assert_allclose(cam[:3], [0, 0, distance], atol=1e-9 * max(1, distance))  # on the optical axis
    np.testing.assert_allclose(path.intrinsics, np.broadcast_to(path.intrinsics[0], path.intrinsics.shape))
    # The end pose has turned by |degrees| and moved the documented way round the point.
    rel = _in_start_axes(path, start)
    forward = rel[-1, :3, 2]
    assert math.degrees(math.acos(np.clip(forward[2], -1, 1))) == pytest.approx(abs(degrees), abs=1e-6) or n == 1
    centre = rel[-1, :3, 3]
    if n > 1 and abs(degrees) > 1:
        axis, sign = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}[direction]
        assert np.sign(centre[axis]) == sign * np.sign(degrees)


@EXAMPLES
@given(start=start_poses(), direction=st.sampled_from(sorted(tj.builders.PAN_DIRECTIONS)),
       distance=finite, n=frames, ease=eases)
def test_pan_keeps_orientation_and_moves_along_the_camera_axis(start, direction, distance, n, ease):
    path = tj.pan(direction, distance, frames=n, ease=ease, start=start)
    _assert_rigid(path)
    rel = _in_start_axes(path, start)
    np.testing.assert_allclose(rel[:, :3, :3], np.broadcast_to(np.eye(3), (n, 3, 3)), atol=1e-9)
    unit = {"left": [-1, 0, 0], "right": [1, 0, 0], "up": [0, -1, 0], "down": [0, 1, 0]}[direction]
    expected = np.outer(distance * _eased(ease, n), unit)
    np.testing.assert_allclose(rel[:, :3, 3], expected, atol=1e-9)


def test_pan_with_a_target_keeps_facing_it():
    path = tj.pan("up", 1.0, frames=5, target_distance=10.0)
    for w2c in path.w2c:
        cam = w2c @ np.array([0, 0, 10.0, 1])
        np.testing.assert_allclose(cam[:2], 0, atol=1e-12)
    pitch = math.degrees(math.atan2(path.c2w[-1, 1, 2], path.c2w[-1, 2, 2]))  # forward's y: + means looking down
    assert pitch == pytest.approx(math.degrees(math.atan(1 / 10)))


@EXAMPLES
@given(start=start_poses(), direction=st.sampled_from(["in", "out"]), distance=finite, n=frames, ease=eases)
def test_dolly_moves_along_the_optical_axis(start, direction, distance, n, ease):
    path = tj.zoom(direction, distance, frames=n, ease=ease, start=start)
    _assert_rigid(path)
    rel = _in_start_axes(path, start)
    np.testing.assert_allclose(rel[:, :3, :3], np.broadcast_to(np.eye(3), (n, 3, 3)), atol=1e-9)
    sign = 1 if direction == "in" else -1
    np.testing.assert_allclose(rel[:, :3, 3], np.outer(sign * distance * _eased(ease, n), [0, 0, 1]), atol=1e-9)
    assert tj.dolly is tj.zoom


@EXAMPLES
@given(start=start_poses(), yaw=st.floats(-179, 179), pitch=st.floats(-89, 89), n=frames)
def test_look_turns_in_place(start, yaw, pitch, n):
    path = tj.look(yaw, pitch, frames=n, start=start)
    _assert_rigid(path)
    rel = _in_start_axes(path, start)
    np.testing.assert_allclose(rel[:, :3, 3], 0, atol=1e-9)
    if n > 1:
        y, p = math.radians(yaw), math.radians(pitch)
        expected = [math.sin(y) * math.cos(p), -math.sin(p), math.cos(y) * math.cos(p)]  # + yaw right, + pitch up
        np.testing.assert_allclose(rel[-1, :3, 2], expected, atol=1e-9)
        assert abs(rel[-1, 1, 0]) < 1e-9  # the camera's x axis stays horizontal: no roll
    np.testing.assert_allclose(tj.tilt(pitch, frames=n, start=start).w2c, tj.look(0, pitch, n, start=start).w2c)


@EXAMPLES
@given(start=start_poses(), degrees=st.floats(-179, 179), n=st.integers(2, 20))
def test_roll_turns_about_the_optical_axis_and_the_picture_the_documented_way(start, degrees, n):
    path = tj.roll(degrees, frames=n, start=start)
    _assert_rigid(path)
    rel = _in_start_axes(path, start)
    np.testing.assert_allclose(rel[:, :3, 3], 0, atol=1e-9)
    np.testing.assert_allclose(rel[:, :3, 2], np.broadcast_to([0, 0, 1.0], (n, 3)), atol=1e-9)
    a = math.radians(degrees)
    np.testing.assert_allclose(rel[-1, :3, 0], [math.cos(a), math.sin(a), 0], atol=1e-9)
    if abs(degrees) > 1:
        # A point at the right edge moves up on screen (y < 0) when the picture turns anti-clockwise (+).
        right_point = np.array([1.0, 0, 1, 1])
        seen = np.linalg.inv(rel[-1]) @ right_point
        assert np.sign(seen[1]) == -np.sign(degrees)


@EXAMPLES
@given(start=start_poses(), factor=st.floats(0.2, 5), n=frames, ease=eases)
def test_focal_zoom_changes_only_focal_lengths_geometrically(start, factor, n, ease):
    path = tj.focal_zoom(factor, frames=n, ease=ease, start=start)
    base = np.eye(4) if start is None else start.w2c[-1]
    np.testing.assert_allclose(path.w2c, np.broadcast_to(base, (n, 4, 4)), atol=1e-12)
    intr0 = tj.default_intrinsics(1.0) if start is None else start.intrinsics[-1]
    np.testing.assert_allclose(path.intrinsics[:, :2], np.outer(factor ** _eased(ease, n), intr0[:2]), rtol=1e-12)
    np.testing.assert_allclose(path.intrinsics[:, 2:], np.broadcast_to(intr0[2:], (n, 2)))


def test_stationary_and_camera():
    cam = tj.camera(position=[1, 2, 3], look_at=[1, 2, 10])
    np.testing.assert_allclose(cam.positions[0], [1, 2, 3], atol=1e-12)
    held = tj.stationary(7, start=cam)
    assert len(held) == 7
    np.testing.assert_allclose(held.w2c, np.broadcast_to(cam.w2c[0], (7, 4, 4)), atol=1e-12)
    with pytest.raises(TrajectoryError, match="'look_at'"):
        tj.camera(position=[0, 0, 0], look_at=[0, 0, 0])


@pytest.mark.parametrize("call,match", [
    (lambda: tj.orbit("sideways"), r"'direction': 'sideways' is not one of left, right, up, down"),
    (lambda: tj.orbit(distance=0), r"'distance': the orbit radius must be > 0"),
    (lambda: tj.pan(frames=0), r"'frames': frames must be an integer >= 1"),
    (lambda: tj.pan(frames=2.5), r"'frames'"),
    (lambda: tj.zoom("forward"), r"'direction'"),
    (lambda: tj.look(yaw_deg=float("nan")), r"'yaw_deg': expected a finite number"),
    (lambda: tj.roll(ease="bouncy"), r"'ease': unknown easing 'bouncy'"),
    (lambda: tj.focal_zoom(0), r"'factor': the zoom factor must be > 0"),
    (lambda: tj.bezier(1.5, 0.5), r"'ease'"),
])
def test_builder_argument_errors_name_the_parameter(call, match):
    with pytest.raises(TrajectoryError, match=match):
        call()


def test_easing_curves_and_bezier():
    for name in tj.EASINGS:
        np.testing.assert_allclose(tj.progress(9, name), _eased(name, 9), atol=1e-12)
    linear_bezier = tj.bezier(1 / 3, 2 / 3)  # CSS cubic-bezier(1/3, 0, 2/3, 1) is not linear: it eases
    e = tj.progress(11, linear_bezier)
    assert e[0] == 0 and e[-1] == 1 and np.all(np.diff(e) > 0)
    # Control points (0,0), (a,0), (b,1), (1,1) with a = b = 0.5: symmetric, so the midpoint maps to 0.5.
    assert tj.bezier(0.5, 0.5)(np.array([0.5]))[0] == pytest.approx(0.5, abs=1e-12)
    assert tj.progress(1) .tolist() == [0.0]


# -- combinators -----------------------------------------------------------------------------------------------

@st.composite
def moves(draw, n=None):
    """A random builder path with a random start."""
    start = draw(start_poses())
    n = n or draw(st.integers(2, 12))
    kind = draw(st.sampled_from(["orbit", "pan", "zoom", "look", "roll", "focal"]))
    if kind == "orbit":
        return tj.orbit(draw(st.sampled_from(tj.builders.ORBIT_DIRECTIONS)), draw(st.floats(-120, 120)),
                        draw(st.floats(0.5, 5)), n, start=start)
    if kind == "pan":
        return tj.pan(draw(st.sampled_from(sorted(tj.builders.PAN_DIRECTIONS))), draw(finite), n, start=start)
    if kind == "zoom":
        return tj.zoom("in", draw(finite), n, start=start)
    if kind == "look":
        return tj.look(draw(st.floats(-90, 90)), draw(st.floats(-60, 60)), n, start=start)
    if kind == "roll":
        return tj.roll(draw(st.floats(-120, 120)), n, start=start)
    return tj.focal_zoom(draw(st.floats(0.5, 2)), n, start=start)


@EXAMPLES
@given(path=moves(), n=st.integers(1, 40))
def test_resample_keeps_endpoints_and_rigidity(path, n):
    out = tj.resample(path, n)
    assert len(out) == n
    _assert_rigid(out)
    np.testing.assert_array_equal(out.w2c[0], path.w2c[0])
    np.testing.assert_array_equal(out.intrinsics[0], path.intrinsics[0])
    if n > 1:
        np.testing.assert_array_equal(out.w2c[-1], path.w2c[-1])
        np.testing.assert_array_equal(out.intrinsics[-1], path.intrinsics[-1])
    if n == len(path):
        np.testing.assert_allclose(out.w2c, path.w2c, atol=1e-12)


def test_slerp_midpoint_halves_the_angle_and_lerps_the_centre():
    a = tj.camera([0, 0, 0], [0, 0, 1])
    b = tj.concatenate(a, tj.add(tj.pan("right", 2.0, 2), tj.look(80, 0, 2)))  # look after moving: centre on x
    mid = tj.resample(b, 3)
    forward = mid.c2w[1, :3, 2]
    assert math.degrees(math.atan2(forward[0], forward[2])) == pytest.approx(40)
    np.testing.assert_allclose(mid.positions[1], [1.0, 0, 0], atol=1e-12)


def test_demo_resample_is_elementwise_lerp_of_c2w_with_pythons_round():
    c2w1 = np.eye(4)
    a = math.radians(6)  # the lerp between neighbours this far apart stays within the kept band (not rigid)
    c2w1[:3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
    c2w1[:3, 3] = [1, 0, 2]
    path = Trajectory(np.stack([np.eye(4), np.linalg.inv(c2w1)]))
    out = tj.demo_resample(path, frames=4, ratio=0.5)  # round(4 / 0.5) = 8 samples over [0, 1], first 4 kept
    for i, w in enumerate(np.linspace(0, 1, 8)[:4]):
        np.testing.assert_allclose(out.c2w[i], (1 - w) * np.eye(4) + w * c2w1, atol=1e-12)
    with pytest.raises(TrajectoryError, match="not a rotation"):  # a 90° jump lerps into a squashed matrix
        tj.demo_resample(tj.look(90, 0, 2), frames=4, ratio=0.5)
    assert len(tj.demo_resample(path, frames=5, ratio=0.4)) == 5  # 12.5 rounds to 12 (half to even)
    long = tj.stationary(20)
    out = tj.demo_resample(long, frames=5, ratio=0.4)
    assert len(out) == 5
    with pytest.raises(TrajectoryError, match=r"'ratio': ratio 1.5 gives only 11 samples for 16 frames"):
        tj.demo_resample(path, 16, 1.5)
    with pytest.raises(TrajectoryError, match="'ratio'"):
        tj.demo_resample(path, 16, 0)


@EXAMPLES
@given(a=moves(), b=moves(), c=moves())
def test_concatenate_continues_each_motion_from_the_last_pose(a, b, c):
    out = tj.concatenate(a, b, c)
    assert len(out) == len(a) + len(b) + len(c) - 2
    _assert_rigid(out)
    np.testing.assert_array_equal(out.w2c[:len(a)], a.w2c)
    start = len(a) - 1
    for part in (b, c):
        joint = out.c2w[start]
        for t in range(len(part)):  # the part's motion relative to its first pose is reproduced from the joint
            np.testing.assert_allclose(np.linalg.inv(joint) @ out.c2w[start + t],
                                       np.linalg.inv(part.c2w[0]) @ part.c2w[t], atol=1e-8)
            np.testing.assert_allclose(out.intrinsics[start + t, :2] / out.intrinsics[start, :2],
                                       part.intrinsics[t, :2] / part.intrinsics[0, :2], rtol=1e-9)
        start += len(part) - 1
    stacked = tj.concatenate(a, b, continuous=False)
    np.testing.assert_array_equal(stacked.w2c, np.concatenate([a.w2c, b.w2c]))


def test_add_combines_two_moves():
    both = tj.add(tj.pan("right", 1.0, frames=5), tj.zoom("in", 2.0, frames=5))
    np.testing.assert_allclose(both.positions, np.outer(np.linspace(0, 1, 5), [1, 0, 2]), atol=1e-12)
    orbit = tj.orbit("left", 60, 3.0, frames=6)
    np.testing.assert_allclose(tj.add(orbit, tj.stationary(6)).w2c, orbit.w2c, atol=1e-12)
    zoomed = tj.add(tj.stationary(4), tj.focal_zoom(2.0, frames=4))
    np.testing.assert_allclose(zoomed.intrinsics[-1, :2], [1.0, 1.0])
    with pytest.raises(TrajectoryError, match="5 and 4 frames"):
        tj.add(tj.stationary(5), tj.stationary(4))


@EXAMPLES
@given(path=moves())
def test_reverse_loop_ease_speed(path):
    np.testing.assert_array_equal(tj.reverse(tj.reverse(path)).w2c, path.w2c)
    there_and_back = tj.loop(path)
    assert len(there_and_back) == 2 * len(path) - 1
    np.testing.assert_array_equal(there_and_back.w2c, there_and_back.w2c[::-1])  # a palindrome
    assert len(tj.loop(path, repeat_turn=True)) == 2 * len(path)  # the demo's loop repeats the turning pose
    eased = tj.ease(path, "ease_in_out")
    assert len(eased) == len(path)
    np.testing.assert_array_equal(eased.w2c[[0, -1]], path.w2c[[0, -1]])
    fast = tj.speed(path, 2.0)
    assert len(fast) == round((len(path) - 1) / 2) + 1 if len(path) > 2 else len(fast) == 2
    np.testing.assert_array_equal(fast.w2c[[0, -1]], path.w2c[[0, -1]])
    assert len(tj.speed(path, 0.5)) == 2 * (len(path) - 1) + 1


def test_ease_in_starts_slowly():
    path = tj.pan("right", 1.0, frames=11)
    slow = tj.ease(path, "ease_in")
    step = np.diff(slow.positions[:, 0])
    assert step[0] < 0.1 < step[-1]
    np.testing.assert_allclose(slow.positions[:, 0], _eased("ease_in", 11), atol=1e-12)
