"""Camera moves with physical parameters: orbit, pan, zoom/dolly, focal zoom, look, tilt, roll, stationary.

Every builder returns `frames` poses whose frame 0 is the start pose (the last frame of `start`, or the identity
camera with `default_intrinsics` when start is None); the move is described in that start camera's own axes
(OpenCV: x right, y down, z forward), so it means the same whatever the world is. `ease` shapes the progress over
time: a name in EASINGS or a function mapping [0, 1] onto [0, 1]. Lengths are in the path's units: the model
sees them relative to the conditioning frame, multiplied by the demo's "scale" (spec §6.3).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from . import geometry
from .errors import TrajectoryError
from .trajectory import Trajectory, finite_number

Easing = Callable[[np.ndarray], np.ndarray]

EASINGS: dict[str, Easing] = {
    "linear": lambda s: s,
    "ease_in": lambda s: 1.0 - np.cos(0.5 * np.pi * s),  # starts slowly (sine easing)
    "ease_out": lambda s: np.sin(0.5 * np.pi * s),  # ends slowly
    "ease_in_out": lambda s: 0.5 - 0.5 * np.cos(np.pi * s),  # starts and ends slowly
}


def bezier(a: float = 0.5, b: float = 0.5) -> Easing:
    """The demo's Bézier time curve (control points (0,0), (a,0), (b,1), (1,1); CSS cubic-bezier(a,0,b,1)).

    Evaluated exactly (bisection on x), where the demo interpolated linearly between its frame samples.
    """
    a, b = finite_number(a, "a"), finite_number(b, "b")
    if not (0 <= a <= 1 and 0 <= b <= 1):
        raise TrajectoryError(f"Bézier control x values must lie in [0, 1], found a={a}, b={b}", field="ease")

    def curve(u, p1, p2):
        return 3 * u * (1 - u) ** 2 * p1 + 3 * u ** 2 * (1 - u) * p2 + u ** 3

    def ease(s):
        s = np.asarray(s, dtype=np.float64)
        lo, hi = np.zeros_like(s), np.ones_like(s)
        for _ in range(60):  # x(u) is monotone for control x in [0, 1]; 60 halvings reach float64 resolution
            mid = 0.5 * (lo + hi)
            below = curve(mid, a, b) < s
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return curve(0.5 * (lo + hi), 0.0, 1.0)

    return ease


def progress(frames: int, ease: str | Easing = "linear") -> np.ndarray:
    """Eased progress of each frame [frames]: 0 at frame 0, 1 at the last (a single frame stays at 0)."""
    frames = frame_count(frames)
    fn = easing(ease)
    s = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    e = np.asarray(fn(s), dtype=np.float64)
    if e.shape != s.shape or not np.isfinite(e).all():
        raise TrajectoryError("the easing function must map each progress value in [0, 1] to one finite number",
                              field="ease")
    e = e.copy()
    e[0], e[-1] = (0.0, 1.0) if frames > 1 else (0.0, 0.0)  # endpoints exact whatever the curve's round-off
    return e


def easing(ease: str | Easing) -> Easing:
    """An easing function from its name in EASINGS, or the callable itself."""
    if callable(ease):
        return ease
    if isinstance(ease, str) and ease in EASINGS:
        return EASINGS[ease]
    raise TrajectoryError(f"unknown easing {str(ease)[:40]!r}; choose one of {', '.join(EASINGS)} or pass a "
                          f"function", field="ease")


def frame_count(frames) -> int:
    """Check a pose count: an integer >= 1."""
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
        raise TrajectoryError(f"frames must be an integer >= 1, found {frames!r}", field="frames")
    return int(frames)


def _choice(value, choices: tuple, field: str) -> str:
    if value not in choices:
        raise TrajectoryError(f"{value!r} is not one of {', '.join(choices)}", field=field)
    return value


def start_pose(start) -> tuple[np.ndarray, np.ndarray, float]:
    """(w2c [4,4], intrinsics [4], aspect) of the pose a move starts from: a Trajectory's last frame, a w2c, or None."""
    if start is None:
        start = Trajectory(np.eye(4))
    elif not isinstance(start, Trajectory):
        start = Trajectory(start)
    return start.w2c[-1], start.intrinsics[-1], start.aspect


def from_motion(start, motion_c2w: np.ndarray, focal_scale: np.ndarray | None = None) -> Trajectory:
    """Start pose moved by motion_c2w [T,4,4] (rigid, in the start camera's axes): c2w_t = c2w_start · motion_t."""
    w2c0, intr0, aspect = start_pose(start)
    w2c = geometry.invert_rigid(motion_c2w) @ w2c0  # inv(c2w0 · M) = inv(M) · w2c0: no inverse of the start needed
    intrinsics = np.tile(intr0, (len(motion_c2w), 1))
    if focal_scale is not None:
        intrinsics[:, :2] *= focal_scale[:, None]
    return Trajectory(w2c, intrinsics, aspect)


def _about_point(rotation: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Rigid motions [T,4,4] rotating by rotation [T,3,3] about `point` [3]: x -> R (x - p) + p."""
    return geometry.rigid(rotation, point - rotation @ point)


# -- the moves -------------------------------------------------------------------------------------------------

ORBIT_DIRECTIONS = ("left", "right", "up", "down")


def orbit(direction: str = "left", degrees: float = 90.0, distance: float = 3.0, frames: int = 16,
          ease: str | Easing = "linear", start=None) -> Trajectory:
    """Circle the point `distance` ahead of the start camera by `degrees`, always facing it -> [frames] poses.

    left/right: the camera moves towards its -x/+x around the vertical (y) axis through the point; up/down: towards
    its -y/+y around the horizontal (x) axis. The point stays on the principal ray in every frame.
    """
    _choice(direction, ORBIT_DIRECTIONS, "direction")
    degrees, distance = finite_number(degrees, "degrees"), finite_number(distance, "distance")
    if distance <= 0:
        raise TrajectoryError(f"the orbit radius must be > 0, found {distance}", field="distance")
    angle = degrees * progress(frames, ease)
    # Moving left round a point ahead means turning right (+y) to keep facing it; moving up means tilting down.
    rotation = {"left": lambda: geometry.rot_y(angle), "right": lambda: geometry.rot_y(-angle),
                "up": lambda: geometry.rot_x(-angle), "down": lambda: geometry.rot_x(angle)}[direction]()
    return from_motion(start, _about_point(rotation, np.array([0.0, 0.0, distance])))


PAN_DIRECTIONS = {"left": (-1.0, 0.0, 0.0), "right": (1.0, 0.0, 0.0), "up": (0.0, -1.0, 0.0), "down": (0.0, 1.0, 0.0)}


def pan(direction: str = "right", distance: float = 1.0, frames: int = 16, ease: str | Easing = "linear",
        start=None, target_distance: float | None = None) -> Trajectory:
    """Slide sideways (left/right along x) or vertically (up/down along y) by `distance` -> [frames] poses.

    The orientation stays fixed, unless `target_distance` is given: then the camera keeps facing the point that far
    ahead of its start (the demo's pan up/down turn so, by up to atan(1/10) = 5.7°).
    """
    _choice(direction, tuple(PAN_DIRECTIONS), "direction")
    distance = finite_number(distance, "distance")
    centres = np.outer(distance * progress(frames, ease), PAN_DIRECTIONS[direction])
    if target_distance is None:
        rotation = np.broadcast_to(np.eye(3), (len(centres), 3, 3))
    else:
        target_distance = finite_number(target_distance, "target_distance")
        if target_distance <= 0:
            raise TrajectoryError(f"must be > 0, found {target_distance}", field="target_distance")
        target = np.array([0.0, 0.0, target_distance])
        rotation = np.stack([geometry.look_at_rotation(c, target, (0.0, -1.0, 0.0)) for c in centres])
    return from_motion(start, geometry.rigid(rotation, centres))


ZOOM_DIRECTIONS = ("in", "out")


def zoom(direction: str = "in", distance: float = 1.0, frames: int = 16, ease: str | Easing = "linear",
         start=None) -> Trajectory:
    """Move along the optical axis (in = forward, +z) by `distance`: the demo's "zoom" (a dolly) -> [frames] poses.

    For a change of focal length instead, see `focal_zoom`.
    """
    _choice(direction, ZOOM_DIRECTIONS, "direction")
    distance = finite_number(distance, "distance")
    sign = 1.0 if direction == "in" else -1.0
    centres = np.outer(sign * distance * progress(frames, ease), (0.0, 0.0, 1.0))
    return from_motion(start, geometry.rigid(np.broadcast_to(np.eye(3), (len(centres), 3, 3)), centres))


dolly = zoom


def focal_zoom(factor: float = 2.0, frames: int = 16, ease: str | Easing = "linear", start=None) -> Trajectory:
    """Change the focal length (fx, fy) by `factor` over the path, camera fixed -> [frames] poses.

    The focal length grows geometrically (factor ** progress) so the apparent zoom speed is even. The demo
    ignores trajectory intrinsics (spec §6.1): this reaches the model only with trajectory intrinsics switched on.
    """
    factor = finite_number(factor, "factor")
    if factor <= 0:
        raise TrajectoryError(f"the zoom factor must be > 0, found {factor}", field="factor")
    e = progress(frames, ease)
    still = geometry.rigid(np.broadcast_to(np.eye(3), (len(e), 3, 3)), np.zeros((len(e), 3)))
    return from_motion(start, still, focal_scale=factor ** e)


def look(yaw_deg: float = 0.0, pitch_deg: float = 0.0, frames: int = 16, ease: str | Easing = "linear",
         start=None) -> Trajectory:
    """Turn in place: yaw right (+) / left (-), then pitch up (+) / down (-), in degrees -> [frames] poses.

    Yaw is about the start camera's vertical axis and pitch about the turned camera's x axis, so the horizon
    stays level.
    """
    yaw, pitch = finite_number(yaw_deg, "yaw_deg"), finite_number(pitch_deg, "pitch_deg")
    e = progress(frames, ease)
    rotation = geometry.rot_y(yaw * e) @ geometry.rot_x(pitch * e)
    return from_motion(start, geometry.rigid(rotation, np.zeros((len(e), 3))))


def tilt(degrees: float = 30.0, frames: int = 16, ease: str | Easing = "linear", start=None) -> Trajectory:
    """Tilt in place: up (+) or down (-) by `degrees` (a pitch-only `look`) -> [frames] poses."""
    return look(pitch_deg=degrees, frames=frames, ease=ease, start=start)


def roll(degrees: float = 90.0, frames: int = 16, ease: str | Easing = "linear", start=None) -> Trajectory:
    """Roll about the optical axis; + turns the picture anti-clockwise on screen (the demo's "rotate
    anti-clockwise"), - clockwise -> [frames] poses."""
    degrees = finite_number(degrees, "degrees")
    e = progress(frames, ease)
    return from_motion(start, geometry.rigid(geometry.rot_z(degrees * e), np.zeros((len(e), 3))))


def stationary(frames: int = 16, start=None) -> Trajectory:
    """The start pose held for `frames` frames."""
    n = frame_count(frames)
    return from_motion(start, np.broadcast_to(np.eye(4), (n, 4, 4)).copy())


def camera(position=(0.0, 0.0, 0.0), look_at=(0.0, 0.0, 1.0), up=(0.0, -1.0, 0.0), intrinsics=None,
           aspect: float = 1.0) -> Trajectory:
    """A one-frame path: a camera at `position` facing `look_at` (world up `up`, default OpenCV's -y)."""
    values = {}
    for name, v in (("position", position), ("look_at", look_at), ("up", up)):
        try:
            arr = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            arr = np.empty(0)
        if arr.shape != (3,) or not np.isfinite(arr).all():
            raise TrajectoryError(f"expected 3 finite numbers, found {v!r}", field=name)
        values[name] = arr
    rotation = geometry.look_at_rotation(values["position"], values["look_at"], values["up"])
    if rotation is None:
        raise TrajectoryError("position and look_at must differ and up must not be along the view direction",
                              field="look_at")
    w2c = geometry.invert_rigid(geometry.rigid(rotation, values["position"]))
    return Trajectory(w2c, intrinsics, aspect)

