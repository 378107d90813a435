"""`Trajectory`: per-frame world-to-camera poses + normalised intrinsics + pose aspect, validated in one place.

Conventions: OpenCV camera axes (x right, y down, z forward); `w2c` maps world points into the camera,
X_cam = R·X_world + t (RealEstate10K and the model's `RT`, spec §6.3-6.4). Intrinsics are normalised: fx and cx
divided by the pose image width, fy and cy by its height (spec §6.4). `aspect` is that pose image's width / height.

Rotation blocks (spec §6.5 explains why they may be slightly non-rigid): the original demo interpolates 4x4
matrices element-wise, so its poses are rotations only up to about 1e-3, and the model inverts the whole matrix as
given. Hence three bands on max|R R^T - I|:
    <= RIGID_KEEP_TOL     kept exactly as given (float round-off, rounded decimals, the demo's interpolation)
    <= RIGID_REPAIR_TOL   replaced by the nearest rotation (camera centre kept), with a TrajectoryWarning
    larger, or singular   TrajectoryError naming the frame
A path whose every rotation is a reflection (det -1; several original demo files are stored so) is re-expressed
in a mirrored world (world x negated), with a warning: every relative pose, the only thing the model sees, is
unchanged. Mixed signs are an error.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from . import geometry
from .errors import TrajectoryError, TrajectoryWarning

RIGID_KEEP_TOL = 5e-3
RIGID_REPAIR_TOL = 5e-2
BOTTOM_ROW_TOL = 1e-6
MAX_FRAMES = 10_000
INTRINSIC_FIELDS = ("fx", "fy", "cx", "cy")
# What a translation of 1 means: "relative" (scale-free, as CamI2V's training poses and the demo presets), "metre"
# (RealCam-I2V's metric convention), or None (not said: builders' distances are in whatever unit you mean).
UNITS = ("relative", "metre")
_MIRROR_X = np.diag([-1.0, 1.0, 1.0, 1.0])


def default_intrinsics(aspect: float = 1.0) -> np.ndarray:
    """Normalised (fx, fy, cx, cy) [4] of a 90° field of view across the long side, square pixels (spec §6.1)."""
    if aspect >= 1.0:
        return np.array([0.5, 0.5 * aspect, 0.5, 0.5])
    return np.array([0.5 / aspect, 0.5, 0.5, 0.5])


@dataclass(frozen=True, eq=False, repr=False)
class Trajectory:
    """A camera path: w2c [T,4,4] float64, intrinsics [T,4] normalised (fx, fy, cx, cy), aspect = pose width/height.

    Construct with any array-likes ([T,3,4] is completed to [T,4,4]; intrinsics [4] apply to every frame; None
    means `default_intrinsics(aspect)`). The stored arrays are read-only float64 copies; the value never changes,
    and every transformation returns a new Trajectory (`dataclasses.replace` re-validates too).
    """

    w2c: np.ndarray
    intrinsics: np.ndarray | None = None
    aspect: float = 1.0
    unit: str | None = None  # one of UNITS, or None when the path does not say

    def __post_init__(self):
        if self.unit is not None and self.unit not in UNITS:
            raise TrajectoryError(f"unit must be one of {', '.join(UNITS)} (or none); found {str(self.unit)[:20]!r}",
                                  field="unit")
        aspect = check_aspect(self.aspect)
        w2c = _check_w2c(self.w2c)
        intrinsics = _check_intrinsics(self.intrinsics, len(w2c), aspect)
        w2c.setflags(write=False)
        intrinsics.setflags(write=False)
        object.__setattr__(self, "w2c", w2c)
        object.__setattr__(self, "intrinsics", intrinsics)
        object.__setattr__(self, "aspect", aspect)

    # -- views ---------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.w2c.shape[0]

    def __getitem__(self, index) -> "Trajectory":
        """Frames by int, slice or index list -> a Trajectory (an int gives a one-frame path)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        w2c = self.w2c[index]
        return Trajectory(w2c, self.intrinsics[index], self.aspect, self.unit)

    @property
    def c2w(self) -> np.ndarray:
        """Camera-to-world [T,4,4] (the general inverse, so element-wise interpolated poses invert as in the demo)."""
        return np.linalg.inv(self.w2c)

    @property
    def positions(self) -> np.ndarray:
        """Camera centres in world coordinates [T,3]."""
        return self.c2w[:, :3, 3]

    def pixel_intrinsics(self, width: int, height: int) -> np.ndarray:
        """Intrinsics in pixels of a width x height image: K [T,3,3]."""
        fx, fy, cx, cy = self.intrinsics.T
        k = np.zeros((len(self), 3, 3))
        k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = fx * width, fy * height, cx * width, cy * height, 1
        return k

    def relative(self, ref: int = 0) -> "Trajectory":
        """The same path seen from frame `ref`: that frame becomes the identity (as the model sees it, spec §6.3)."""
        if not -len(self) <= ref < len(self):
            raise TrajectoryError(f"reference frame {ref} is outside the path's {len(self)} frames")
        return Trajectory(self.w2c @ self.c2w[ref], self.intrinsics, self.aspect, self.unit)

    def scaled(self, factor: float) -> "Trajectory":
        """Camera centres x factor: the demo's "scale" (trace_scale_factor) applied to every relative pose (§6.3)."""
        factor = finite_number(factor, "scale")
        w2c = self.w2c.copy()
        w2c[:, :3, 3] *= factor
        return Trajectory(w2c, self.intrinsics, self.aspect, self.unit)

    def with_unit(self, unit: str | None) -> "Trajectory":
        """The same poses, saying what a translation of 1 means ("relative", "metre" or None)."""
        return Trajectory(self.w2c, self.intrinsics, self.aspect, unit)

    def allclose(self, other: "Trajectory", atol: float = 1e-9) -> bool:
        """Same frame count, poses, intrinsics and aspect within atol."""
        return (len(self) == len(other) and abs(self.aspect - other.aspect) <= atol
                and np.allclose(self.w2c, other.w2c, rtol=0, atol=atol)
                and np.allclose(self.intrinsics, other.intrinsics, rtol=0, atol=atol))

    def __repr__(self) -> str:
        travel = float(np.linalg.norm(np.diff(self.positions, axis=0), axis=-1).sum()) if len(self) > 1 else 0.0
        unit = f", unit={self.unit}" if self.unit else ""
        return f"Trajectory(frames={len(self)}, aspect={self.aspect:.4g}, travel={travel:.4g}{unit})"


# -- validation (the one place) --------------------------------------------------------------------------------

def finite_number(value, field: str, frame: int | None = None) -> float:
    """A real number (not bool) that is finite, as float; TrajectoryError otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TrajectoryError(f"expected a number, found {_describe(value)}", frame, field)
    try:
        number = float(value)
    except OverflowError:
        raise TrajectoryError(f"number {str(value)[:20]}... is too large", frame, field) from None
    if not math.isfinite(number):
        raise TrajectoryError(f"expected a finite number, found {number}", frame, field)
    return number


def _describe(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def check_aspect(aspect) -> float:
    aspect = finite_number(aspect, "aspect")
    if aspect <= 0:
        raise TrajectoryError(f"the pose aspect (width / height) must be > 0, found {aspect}", field="aspect")
    return aspect


def _as_float_array(value, field: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor: no torch import needed
        value = value.detach().cpu().double().numpy()
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as e:
        raise TrajectoryError(f"expected an array of numbers; {e}", field=field) from None
    return array


def _check_w2c(value) -> np.ndarray:
    w2c = _as_float_array(value, "w2c")
    if w2c.ndim == 2 and w2c.shape in ((4, 4), (3, 4)):
        w2c = w2c[None]
    if w2c.ndim != 3 or w2c.shape[1:] not in ((4, 4), (3, 4)):
        raise TrajectoryError(f"expected per-frame world-to-camera matrices [T,4,4] or [T,3,4], found shape "
                              f"{list(w2c.shape)}", field="w2c")
    if w2c.shape[0] == 0:
        raise TrajectoryError("the path has no frames; give at least one pose", field="w2c")
    if w2c.shape[0] > MAX_FRAMES:
        raise TrajectoryError(f"the path has {w2c.shape[0]} frames, more than the {MAX_FRAMES} allowed; "
                              f"resample it first", field="w2c")
    if w2c.shape[1] == 3:
        bottom = np.broadcast_to(np.array([0.0, 0.0, 0.0, 1.0]), (w2c.shape[0], 1, 4))
        w2c = np.concatenate([w2c, bottom], axis=1)
    bad = ~np.isfinite(w2c)
    if bad.any():
        f, r, c = np.argwhere(bad)[0]
        raise TrajectoryError(f"entry [{r}][{c}] is {w2c[f, r, c]}; every matrix entry must be a finite number",
                              int(f), "w2c")
    off = np.abs(w2c[:, 3] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=-1)
    if (off > BOTTOM_ROW_TOL).any():
        f = int(np.argmax(off > BOTTOM_ROW_TOL))
        raise TrajectoryError(f"the last row must be [0, 0, 0, 1], found {w2c[f, 3].tolist()}", f, "w2c")
    w2c[:, 3] = [0.0, 0.0, 0.0, 1.0]
    return _check_rotations(w2c)


def _check_rotations(w2c: np.ndarray) -> np.ndarray:
    """Apply the rigidity bands and the mirrored-world rule of the module docstring to w2c [T,4,4] (in place)."""
    rot = w2c[:, :3, :3]
    err = geometry.rigidity_error(rot)
    too_far = ~(err <= RIGID_REPAIR_TOL)
    if too_far.any():
        f = int(np.argmax(too_far))
        raise TrajectoryError(
            f"the rotation block is not a rotation: max|R R^T - I| = {err[f]:.3g} (allowed {RIGID_REPAIR_TOL}; up "
            f"to {RIGID_KEEP_TOL} is kept as is, more is re-orthonormalised). Check that the matrix is world-to-camera "
            f"without scale or shear, and that rows and columns are not swapped", f, "w2c")
    det = np.linalg.det(rot)
    if (det < 0).any():
        if not (det < 0).all():
            f = int(np.argmax((det < 0) != (det[0] < 0)))
            raise TrajectoryError(
                f"the rotation is {'a reflection (det -1)' if det[f] < 0 else 'proper (det +1)'} but frame 0's is "
                f"{'a reflection' if det[0] < 0 else 'proper'}; all frames must share one handedness", f, "w2c")
        warnings.warn("every pose of this path is a reflection (det -1), as in some original demo pose files; "
                      "re-expressed in a mirrored world (world x negated). Relative poses, which are all the model "
                      "uses, are unchanged.", TrajectoryWarning, stacklevel=5)
        w2c[:] = w2c @ _MIRROR_X
        rot = w2c[:, :3, :3]
    repair = err > RIGID_KEEP_TOL
    if repair.any():
        frames = np.flatnonzero(repair)
        centres = -np.linalg.solve(rot[frames], w2c[frames, :3, 3][..., None])[..., 0]  # the point seen at 0
        fixed = geometry.nearest_rotation(rot[frames])
        w2c[frames, :3, :3] = fixed
        w2c[frames, :3, 3] = -np.einsum("tij,tj->ti", fixed, centres)
        warnings.warn(f"frames {frames[:8].tolist()}{'...' if len(frames) > 8 else ''}: rotation blocks were up to "
                      f"{err[frames].max():.3g} away from orthonormal (kept as is up to {RIGID_KEEP_TOL}); replaced "
                      f"by the nearest rotations, camera centres kept", TrajectoryWarning, stacklevel=5)
    return w2c


def _check_intrinsics(value, frames: int, aspect: float) -> np.ndarray:
    if value is None:
        return np.tile(default_intrinsics(aspect), (frames, 1))
    intr = _as_float_array(value, "intrinsics")
    if intr.shape == (4,):
        intr = np.tile(intr, (frames, 1))
    if intr.shape != (frames, 4):
        raise TrajectoryError(f"expected normalised (fx, fy, cx, cy) as [{frames},4] (one row per pose) or [4], "
                              f"found shape {list(intr.shape)}", field="intrinsics")
    bad = ~np.isfinite(intr)
    if bad.any():
        f, c = np.argwhere(bad)[0]
        raise TrajectoryError(f"is {intr[f, c]}; intrinsics must be finite numbers", int(f), INTRINSIC_FIELDS[c])
    nonpositive = intr[:, :2] <= 0
    if nonpositive.any():
        f, c = np.argwhere(nonpositive)[0]
        raise TrajectoryError(f"focal length must be > 0, found {intr[f, c]} (normalised: focal in pixels / image "
                              f"{'width' if c == 0 else 'height'})", int(f), INTRINSIC_FIELDS[c])
    return intr.copy()
