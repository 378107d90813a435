"""Paths from paths: concatenate, add, reverse, loop, ease, speed, resample, and the demo's "ratio" resampling.

Two interpolations between stored poses:
    "slerp"  rotations by spherical interpolation, camera centres and intrinsics linearly; every pose stays rigid.
    "lerp"   the original demo's element-wise linear interpolation of the 4x4 camera-to-world matrices (spec §6.5):
             not rigid in between (by up to ~(1 - cos Δθ)/2 for neighbours Δθ apart), kept for faithful
             reproduction; `Trajectory` keeps such poses as they are (see trajectory.py).
"""

from __future__ import annotations

import numpy as np

from . import geometry
from .builders import Easing, frame_count, progress
from .errors import TrajectoryError
from .trajectory import Trajectory, finite_number

METHODS = ("slerp", "lerp")


def interpolate(trajectory: Trajectory, positions, method: str = "slerp") -> Trajectory:
    """Poses at fractional frame positions [N] within [0, T-1] (integer positions copy the stored pose exactly)."""
    if method not in METHODS:
        raise TrajectoryError(f"unknown interpolation {method!r}; choose one of {', '.join(METHODS)}", field="method")
    positions = np.asarray(positions, dtype=np.float64)
    last = len(trajectory) - 1
    if positions.ndim != 1 or not len(positions) or not np.isfinite(positions).all() \
            or positions.min() < 0 or positions.max() > last:
        raise TrajectoryError(f"positions must be finite frame positions within [0, {last}]", field="positions")
    left = np.floor(positions).astype(int)
    right = np.ceil(positions).astype(int)
    frac = positions - left
    intr = trajectory.intrinsics
    intrinsics = intr[left] + frac[:, None] * (intr[right] - intr[left])
    c2w = trajectory.c2w
    if method == "lerp":
        # torch.lerp(a, b, w) = a + w·(b - a), on the whole 4x4 c2w, as camera_pose_lerp does (spec §6.5 step 3).
        lerped = c2w[left] + frac[:, None, None] * (c2w[right] - c2w[left])
        w2c = np.linalg.inv(lerped)
    else:
        rotation = geometry.slerp(_proper(c2w[left, :3, :3]), _proper(c2w[right, :3, :3]), frac)
        centres = c2w[left, :3, 3] + frac[:, None] * (c2w[right, :3, 3] - c2w[left, :3, 3])
        w2c = geometry.invert_rigid(geometry.rigid(rotation, centres))
    exact = frac == 0  # stored poses come through bit for bit, so endpoints are kept exactly
    w2c[exact] = trajectory.w2c[left[exact]]
    return Trajectory(w2c, intrinsics, trajectory.aspect, trajectory.unit)


def _proper(rotation: np.ndarray) -> np.ndarray:
    """Near-rigid rotation blocks (kept from element-wise interpolation) projected onto rotations for SLERP."""
    if geometry.rigidity_error(rotation).max(initial=0.0) < 1e-12:
        return rotation
    return geometry.nearest_rotation(rotation)


def resample(trajectory: Trajectory, frames: int, method: str = "slerp") -> Trajectory:
    """The whole path at `frames` evenly spaced positions (first and last pose kept exactly) -> [frames] poses."""
    frames = frame_count(frames)
    last = len(trajectory) - 1
    positions = np.linspace(0.0, last, frames) if frames > 1 else np.zeros(1)
    return interpolate(trajectory, positions, method)


def fit_frames(trajectory: Trajectory, frames: int) -> tuple[Trajectory, str | None]:
    """The path with exactly `frames` poses: unchanged, or resampled over its whole length (`resample`), with a
    one-line note saying what was done (None when nothing was) -> (trajectory, note)."""
    frames = frame_count(frames)
    if len(trajectory) == frames:
        return trajectory, None
    note = (f"the camera path has {len(trajectory)} poses and the model makes {frames} frames: resampled the whole "
            f"path to {frames} evenly spaced poses")
    return resample(trajectory, frames), note


def demo_resample(trajectory: Trajectory, frames: int = 16, ratio: float = 1.0) -> Trajectory:
    """The demo's "ratio" (trace_extract_ratio, spec §6.5 step 3): round(frames / ratio) element-wise lerped
    samples over the whole path, of which the first `frames` are kept -> [frames] poses."""
    frames = frame_count(frames)
    ratio = finite_number(ratio, "ratio")
    if ratio <= 0:
        raise TrajectoryError(f"ratio must be > 0 (the fraction of the path the frames cover), found {ratio}",
                              field="ratio")
    count = round(frames / ratio)  # Python's round (half to even), as the demo
    if count < frames:
        raise TrajectoryError(f"ratio {ratio} gives only {count} samples for {frames} frames; use a ratio of at most "
                              f"1 (1 covers the whole path)", field="ratio")
    last = len(trajectory) - 1
    positions = np.linspace(0.0, last, count)[:frames] if count > 1 else np.zeros(1)
    return interpolate(trajectory, positions, "lerp")


def ease(trajectory: Trajectory, easing: str | Easing = "ease_in_out", method: str = "slerp") -> Trajectory:
    """Re-time the path with an easing curve (same frame count, same first and last pose)."""
    return interpolate(trajectory, progress(len(trajectory), easing) * (len(trajectory) - 1), method)


def speed(trajectory: Trajectory, factor: float, method: str = "slerp") -> Trajectory:
    """Play the path `factor` times faster (fewer frames) or slower (more), endpoints kept -> round((T-1)/factor)+1."""
    factor = finite_number(factor, "factor")
    if factor <= 0:
        raise TrajectoryError(f"speed factor must be > 0, found {factor}", field="factor")
    steps = len(trajectory) - 1
    frames = max(1, round(steps / factor)) + 1 if steps else 1
    if frames > 10_000:
        raise TrajectoryError(f"speed {factor} would make {frames} frames; use a larger factor", field="factor")
    return resample(trajectory, frames, method)


def reverse(trajectory: Trajectory) -> Trajectory:
    """The path played backwards."""
    return trajectory[::-1]


def loop(trajectory: Trajectory, repeat_turn: bool = False) -> Trajectory:
    """There and back: the path, then reversed. The demo's loop repeats the turning pose (repeat_turn=True, 2T
    frames); by default it is shown once (2T - 1 frames)."""
    back = reverse(trajectory)
    return _stack([trajectory, back if repeat_turn or len(trajectory) == 1 else back[1:]])


def _stack(parts: list[Trajectory]) -> Trajectory:
    return Trajectory(np.concatenate([p.w2c for p in parts]), np.concatenate([p.intrinsics for p in parts]),
                      parts[0].aspect, common_unit(parts))


def common_unit(parts) -> str | None:
    """The unit all parts share; mixing "relative" and "metre" paths is an error (their sizes do not compare)."""
    units = {p.unit for p in parts} - {None}
    if len(units) > 1:
        raise TrajectoryError("one path is in metres and the other scale-free (relative); their sizes do not "
                              "compare, so convert one first (Trajectory.with_unit)", field="unit")
    return units.pop() if units else None


def concatenate(*parts: Trajectory, continuous: bool = True) -> Trajectory:
    """Paths one after another.

    continuous=True: each later part continues from where the path so far ends: its motion relative to its own
    first pose is applied to the last pose so far (focal lengths scale, principal points shift, likewise), and its
    first pose, now equal to that last pose, is dropped. continuous=False stacks the poses exactly as they are.
    The result has the first part's aspect.
    """
    if not parts:
        raise TrajectoryError("nothing to concatenate; give at least one path")
    for i, p in enumerate(parts):
        if not isinstance(p, Trajectory):
            raise TrajectoryError(f"part {i} is a {type(p).__name__}, not a Trajectory")
    if not continuous:
        return _stack(list(parts))
    out = [parts[0]]
    for part in parts[1:]:
        if len(part) == 1:
            continue
        out.append(_rebase(part, out[-1].w2c[-1], out[-1].intrinsics[-1])[1:])
    return _stack(out)


def _rebase(part: Trajectory, w2c_anchor: np.ndarray, intr_anchor: np.ndarray) -> Trajectory:
    """`part` moved so that its first pose lands on the anchor: w2c_t · c2w_0 · w2c_anchor; intrinsics likewise."""
    w2c = part.w2c @ part.c2w[0] @ w2c_anchor
    w2c[0] = w2c_anchor  # exactly the anchor, not a round-off copy of it
    intr = part.intrinsics
    intrinsics = np.concatenate([intr[:, :2] / intr[0, :2] * intr_anchor[:2],
                                 intr[:, 2:] - intr[0, 2:] + intr_anchor[2:]], axis=1)
    return Trajectory(w2c, intrinsics, part.aspect, part.unit)


def add(base: Trajectory, extra: Trajectory) -> Trajectory:
    """Two moves at once (same frame count): base's pose at t, then moved by extra's motion from its first frame.

    c2w_t = c2w_base[t] · inv(c2w_extra[0]) · c2w_extra[t]; focal lengths multiply, principal points add offsets.
    E.g. add(orbit(...), zoom(...)) orbits while moving in.
    """
    if not isinstance(base, Trajectory) or not isinstance(extra, Trajectory):
        raise TrajectoryError("add() takes two Trajectory values")
    if len(base) != len(extra):
        raise TrajectoryError(f"the paths have {len(base)} and {len(extra)} frames; resample one to the other's count "
                              f"first", field="frames")
    motion_w2c = extra.w2c @ extra.c2w[0]  # inverse of the extra motion inv(c2w_e0) · c2w_e(t)
    w2c = motion_w2c @ base.w2c
    ei, bi = extra.intrinsics, base.intrinsics
    intrinsics = np.concatenate([bi[:, :2] * ei[:, :2] / ei[0, :2], bi[:, 2:] + ei[:, 2:] - ei[0, 2:]], axis=1)
    return Trajectory(w2c, intrinsics, base.aspect, common_unit([base, extra]))


def scale(trajectory: Trajectory, factor: float) -> Trajectory:
    """Camera centres x factor: the demo's "scale" applied to every relative translation (spec §6.3)."""
    return trajectory.scaled(factor)
