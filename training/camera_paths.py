"""Camera paths for the synthetic dataset, built from a position, a look-at point and a roll angle per frame.

Paths come in the families of the demo presets (spec §6.4): orbit left / right / up / down around the look-at
point, pan, dolly in / out, look (yaw / pitch in place), roll, stationary, plus random smooth 6-DoF paths. Every
family is written as positions + look-at targets (+ roll), so `sample_path` can check that the camera stays inside
the room, keeps clear of the objects and starts out looking at one of them.

Axes as in `training.render`: world y up; cameras are world-to-camera with OpenCV axes (x right, y down,
z forward). Roll is a rotation about the viewing direction; a positive angle turns the camera's x axis towards
its y axis, i.e. clockwise for someone standing behind the camera ("roll_cw").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .render import WORLD_UP, Scene, clearance, first_hits
from cami2v_core.errors import CamI2VError
from trajectories import geometry

FAMILIES = (
    "orbit_left", "orbit_right", "orbit_up", "orbit_down",
    "pan_left", "pan_right", "pan_up", "pan_down",
    "dolly_in", "dolly_out",
    "look_left", "look_right", "look_up", "look_down",
    "roll_cw", "roll_ccw",
    "stationary", "random",
)

# Range of the motion's size per family: degrees for orbit / look / roll, metres for pan / dolly / random.
AMOUNT_RANGE = {
    "orbit_left": (15.0, 50.0), "orbit_right": (15.0, 50.0), "orbit_up": (8.0, 25.0), "orbit_down": (8.0, 25.0),
    "pan_left": (0.3, 1.0), "pan_right": (0.3, 1.0), "pan_up": (0.2, 0.6), "pan_down": (0.2, 0.6),
    "dolly_in": (0.3, 1.2), "dolly_out": (0.3, 1.2),
    "look_left": (15.0, 40.0), "look_right": (15.0, 40.0), "look_up": (8.0, 25.0), "look_down": (8.0, 25.0),
    "roll_cw": (10.0, 40.0), "roll_ccw": (10.0, 40.0),
    "stationary": (0.0, 0.0), "random": (0.4, 1.2),
}

# Never look closer than this to straight up or down, where "look at with world up" has no defined roll.
_MAX_ABS_UP_COS = 0.9


class CameraPathError(CamI2VError, ValueError):
    """A path that cannot be built; the message says which input to change."""


@dataclass
class CameraPath:
    """Per-frame camera centres [T,3], look-at points [T,3] and roll angles [T] (degrees) of one family."""

    family: str
    positions: np.ndarray
    targets: np.ndarray
    roll_deg: np.ndarray
    amount: float

    def w2c(self) -> np.ndarray:
        """World-to-camera matrices [T,4,4] (OpenCV axes)."""
        return look_at_w2c(self.positions, self.targets, self.roll_deg)


def _normalize(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def look_at_w2c(positions, targets, roll_deg=0.0, up=WORLD_UP) -> np.ndarray:
    """World-to-camera [T,4,4] (OpenCV axes) of cameras at positions [T,3] looking at targets [T,3], rolled by
    roll_deg ([T] or scalar) about the viewing direction; `up` [3] is the world's up direction. The look-at itself
    is `trajectories.geometry.look_at_rotation`, the one the trajectory builders use."""
    positions = np.atleast_2d(np.asarray(positions, dtype=np.float64))
    targets = np.atleast_2d(np.asarray(targets, dtype=np.float64))
    rot_c2w = np.empty((len(positions), 3, 3))
    for i, (position, target) in enumerate(zip(positions, targets)):
        rotation = geometry.look_at_rotation(position, target, up)
        if rotation is None:
            if np.linalg.norm(target - position) < 1e-9:
                raise CameraPathError(f"camera {i} sits on its look-at point; move one of them")
            raise CameraPathError(f"camera {i} looks straight along the up direction, where roll is undefined; "
                                  f"tilt the look-at point away from the vertical")
        rot_c2w[i] = rotation
    # Roll about the viewing direction (the z column): x and y turn within the image plane.
    roll = np.deg2rad(np.broadcast_to(np.asarray(roll_deg, dtype=np.float64), (len(positions),)))[:, None]
    x_axis, y_axis = rot_c2w[:, :, 0].copy(), rot_c2w[:, :, 1].copy()
    rot_c2w[:, :, 0] = np.cos(roll) * x_axis + np.sin(roll) * y_axis
    rot_c2w[:, :, 1] = -np.sin(roll) * x_axis + np.cos(roll) * y_axis
    w2c = np.zeros((len(positions), 4, 4))
    w2c[:, :3, :3] = np.swapaxes(rot_c2w, 1, 2)
    w2c[:, :3, 3] = -np.einsum("tij,tj->ti", w2c[:, :3, :3], positions)
    w2c[:, 3, 3] = 1.0
    return w2c


def _rotate(v, axis, angle_rad):
    """Rodrigues: vector v [3] rotated about the unit axis [3] by each angle [T] (right-hand rule) -> [T,3]."""
    axis = axis / np.linalg.norm(axis)
    c, s = np.cos(angle_rad)[:, None], np.sin(angle_rad)[:, None]
    return v * c + np.cross(axis, v) * s + axis * (axis @ v) * (1 - c)


def _bezier(control, s):
    """Cubic Bézier curve through 4 control points [4,D] at parameters s [T] -> [T,D]."""
    s = s[:, None]
    weights = [(1 - s) ** 3, 3 * s * (1 - s) ** 2, 3 * s ** 2 * (1 - s), s ** 3]
    return sum(w * c for w, c in zip(weights, control))


def build_path(family: str, start, target, amount: float, frames: int, rng=None) -> CameraPath:
    """Path of `frames` cameras of one family from a camera at start [3] looking at target [3]; amount is degrees
    (orbit, look, roll) or metres (pan, dolly, random); the motion is uniform in time. `random` needs rng."""
    if family not in FAMILIES:
        raise CameraPathError(f"unknown camera path family {family!r}; expected one of {FAMILIES}")
    start = np.asarray(start, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    s = np.linspace(0.0, 1.0, frames)
    forward = _normalize(target - start)
    right = _normalize(np.cross(forward, WORLD_UP))
    down = np.cross(forward, right)
    positions = np.repeat(start[None], frames, axis=0)
    targets = np.repeat(target[None], frames, axis=0)
    roll = np.zeros(frames)
    angle = np.deg2rad(amount) * s
    if family in ("orbit_left", "orbit_right"):
        # About the vertical through the target: d/da R(a) v = up x v, and up x (start - target) points to the
        # camera's right, so a positive angle orbits to the right.
        sign = 1.0 if family == "orbit_right" else -1.0
        positions = target + _rotate(start - target, WORLD_UP, sign * angle)
    elif family in ("orbit_up", "orbit_down"):
        # About the camera's right axis through the target: right x (start - target) points down.
        sign = 1.0 if family == "orbit_down" else -1.0
        positions = target + _rotate(start - target, right, sign * angle)
    elif family.startswith("pan_") or family.startswith("dolly_"):
        direction = {"pan_left": -right, "pan_right": right, "pan_up": -down, "pan_down": down,
                     "dolly_in": forward, "dolly_out": -forward}[family]
        # The look-at point moves with the camera: orientation stays exactly the same, as in a pan or a dolly.
        offset = amount * s[:, None] * direction
        positions, targets = start + offset, target + offset
    elif family in ("look_left", "look_right"):
        # up x forward points to the camera's left, so a positive angle about up turns left.
        sign = 1.0 if family == "look_left" else -1.0
        targets = start + _rotate(target - start, WORLD_UP, sign * angle)
    elif family in ("look_up", "look_down"):
        # right x forward points up (against the camera's y), so a positive angle about right tilts up.
        sign = 1.0 if family == "look_up" else -1.0
        targets = start + _rotate(target - start, right, sign * angle)
    elif family in ("roll_cw", "roll_ccw"):
        roll = (1.0 if family == "roll_cw" else -1.0) * amount * s
    elif family == "random":
        if rng is None:
            raise CameraPathError("the 'random' family needs a numpy Generator (rng=...)")
        positions, targets, roll = _random_motion(start, target, amount, s, rng)
    return CameraPath(family, positions, targets, roll, float(amount))


def _random_motion(start, target, amount, s, rng):
    """Smooth 6-DoF motion: Bézier curves for the position (control points within `amount` metres of the start),
    for the look-at point and for the roll."""
    def ball(n, radius):
        v = rng.normal(size=(n, 3))
        return v / np.linalg.norm(v, axis=1, keepdims=True) * radius * rng.uniform(0.3, 1.0, size=(n, 1))

    pos_ctrl = np.concatenate([start[None], start + ball(3, amount)])
    tgt_ctrl = np.concatenate([target[None], target + ball(3, 0.6 * amount)])
    roll_ctrl = np.concatenate([[0.0], rng.normal(0.0, 6.0, size=3)])[:, None]
    return _bezier(pos_ctrl, s), _bezier(tgt_ctrl, s), _bezier(roll_ctrl, s)[:, 0]


def sample_intrinsics(rng, height: int, width: int, hfov_deg_range=(50.0, 80.0)) -> np.ndarray:
    """Normalised pinhole intrinsics (fx, fy, cx, cy) [4]: square pixels, centred principal point, random field of
    view across the width."""
    hfov = np.deg2rad(rng.uniform(*hfov_deg_range))
    fx = 0.5 / np.tan(hfov / 2)
    return np.array([fx, fx * width / height, 0.5, 0.5])


def path_problem(scene: Scene, path: CameraPath, margin: float) -> str | None:
    """Why a path is unusable (a camera too close to a wall or an object, looking too steeply, sitting on its
    look-at point), or None when it is fine."""
    gap = clearance(scene, path.positions)
    if np.any(gap < margin):
        k = int(np.argmin(gap))
        return f"camera {k} is {gap[k]:.2f} m from a surface (need {margin})"
    view = path.targets - path.positions
    dist = np.linalg.norm(view, axis=1)
    if np.any(dist < 0.3):
        return "a look-at point is closer than 0.3 m"
    if np.any(np.abs(view @ WORLD_UP) / dist > _MAX_ABS_UP_COS):
        return "a camera looks too steeply up or down"
    return None


def _sample_view(scene: Scene, rng, margin: float):
    """A start position and a look-at point on an object (or on a wall) that the start position can see."""
    sx, sy, sz = scene.room_size
    lo = np.array([-sx / 2, 0.0, -sz / 2])
    hi = np.array([sx / 2, sy, sz / 2])
    if scene.objects and rng.random() < 0.8:
        k = int(rng.integers(len(scene.objects)))
        target = np.asarray(scene.objects[k].center, dtype=np.float64)
        aim = k
    else:
        # A point on a wall at a height a person might look at.
        axis = int(rng.choice([0, 2]))
        target = rng.uniform(lo + 0.3, hi - 0.3)
        target[axis] = lo[axis] if rng.random() < 0.5 else hi[axis]
        target[1] = rng.uniform(0.4, max(0.5, sy - 0.4))
        aim = -1
    start = rng.uniform(lo + margin, hi - margin)
    start[1] = rng.uniform(0.5, max(0.6, min(2.2, sy - 0.5)))
    view = target - start
    dist = float(np.linalg.norm(view))
    if not 1.0 <= dist <= 5.5 or clearance(scene, start)[0] < margin + 0.15:
        return None
    if abs(view @ WORLD_UP) / dist > 0.75:
        return None
    # The aimed-at surface must be the first thing along the line of sight.
    _, surface = first_hits(scene, start, view[None])
    if surface[0] != aim:
        return None
    return start, target


def sample_path(scene: Scene, rng, frames: int, family: str | None = None, margin: float = 0.3,
                attempts: int = 400) -> CameraPath:
    """A random valid path [T cameras] of `family` (drawn uniformly from FAMILIES when None) inside `scene`."""
    if family is None:
        family = FAMILIES[int(rng.integers(len(FAMILIES)))]
    if family not in FAMILIES:
        raise CameraPathError(f"unknown camera path family {family!r}; expected one of {FAMILIES}")
    low, high = AMOUNT_RANGE[family]
    for _ in range(attempts):
        view = _sample_view(scene, rng, margin)
        if view is None:
            continue
        amount = rng.uniform(low, high)
        # Large motions run into walls more often: try the drawn size, then smaller ones from the same start.
        for shrink in (1.0, 0.6, 0.35):
            path = build_path(family, view[0], view[1], amount * shrink, frames, rng)
            if path_problem(scene, path, margin) is None:
                return path
    raise CameraPathError(f"found no valid {family!r} path in {attempts} attempts; the room may be too small or "
                          f"too crowded for the {margin} m clearance")
