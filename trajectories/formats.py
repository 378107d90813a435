"""Reading and writing camera paths: pose JSON, RealEstate10K text (spec §6.4) and CAMERACTRL_POSES.

3D tools' formats live beside this module: nerfstudio.py (transforms.json) and colmap.py (COLMAP text models);
`load` and `from_json` recognise them.

CAMERACTRL_POSES (ComfyUI type of AnimateDiff-Evolved's CameraCtrl nodes): one list of 19 floats per frame,
    [0] t          frame index (readers ignore it; RealEstate10K files hold a timestamp in microseconds here)
    [1:5] fx fy cx cy   normalised intrinsics (fx, cx by the pose image width; fy, cy by its height)
    [5:7] pose_w pose_h size of the image the intrinsics refer to; readers use only the ratio. We write
                   (aspect, 1). Zeros (RealEstate10K's k1 k2 slots, as raw file lines carry) mean "not given":
                   the aspect is then inferred as fy / fx (square pixels).
    [7:19] the world-to-camera 3x4 matrix, row-major: r11 r12 r13 t1 r21 r22 r23 t2 r31 r32 r33 t3
RealEstate10K text is the same 19 numbers per line with k1 k2 in [5:7] (written as 0), after a first line holding
the source URL; lines whose first word starts with "http" are skipped like the demo does, and so are blank lines.
The pose JSON format is documented in docs/trajectories.md and trajectories/schema/pose.schema.json.
"""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction
from pathlib import Path

import numpy as np

from . import geometry
from .errors import TrajectoryError
from .trajectory import (BOTTOM_ROW_TOL, INTRINSIC_FIELDS, MAX_FRAMES, RIGID_REPAIR_TOL, UNITS, Trajectory,
                         check_aspect, default_intrinsics, finite_number)

JSON_FORMAT = "cami2v-trajectory"
JSON_VERSION = 1
MAX_TEXT_BYTES = 8 * 1024 * 1024
POSE_VALUES = 19
DEFAULT_URL = "https://example.invalid/cami2v-trajectory"  # RealEstate10K's first line is the clip's URL
DEFAULT_UP = (0.0, -1.0, 0.0)  # OpenCV worlds have y pointing down, so "up" is -y
SENSOR_WIDTH_MM = 36.0  # focal_mm is a 35 mm-equivalent focal length unless sensor_width_mm says otherwise
_FRAME_KEYS = ("w2c", "c2w", "position", "look_at", "up", "intrinsics")
_TOP_KEYS = ("format", "version", "name", "description", "aspect", "unit", "intrinsics", "frames")
_INTRINSIC_KEYS = ("fx", "fy", "cx", "cy", "fov_x_deg", "fov_y_deg", "focal_mm", "sensor_width_mm")


# -- CAMERACTRL_POSES ------------------------------------------------------------------------------------------

class CameraPoses(list):
    """A CAMERACTRL_POSES list that also says its unit (a plain list to every other pack's node)."""

    unit: str | None = None


def to_cameractrl_poses(trajectory: Trajectory) -> list[list[float]]:
    """Trajectory -> CAMERACTRL_POSES [T][19] (layout in the module docstring), carrying the path's unit."""
    rows = CameraPoses()
    rows.unit = trajectory.unit
    for t, (w2c, intr) in enumerate(zip(trajectory.w2c, trajectory.intrinsics)):
        rows.append([float(t), *map(float, intr), float(trajectory.aspect), 1.0, *map(float, w2c[:3].reshape(12))])
    return rows


def from_cameractrl_poses(poses) -> Trajectory:
    """CAMERACTRL_POSES [T][19] (lists, tuples or an array) -> Trajectory; the aspect comes from pose_w / pose_h,
    the unit from a list our nodes made (None from any other)."""
    rows = _pose_rows(poses, "CAMERACTRL_POSES frame")
    values = np.array(rows)
    return Trajectory(_w2c_from_rows(values), values[:, 1:5], _aspect_from_pose_size(values),
                      getattr(poses, "unit", None))


def _pose_rows(poses, what: str) -> list[list[float]]:
    """Check [T][19] numbers, naming the frame and slot of the first problem."""
    if hasattr(poses, "tolist") and not isinstance(poses, (list, tuple)):
        poses = poses.tolist()
    if not isinstance(poses, (list, tuple)):
        raise TrajectoryError(f"expected a list of poses (one list of {POSE_VALUES} numbers per frame), found "
                              f"{type(poses).__name__}")
    if not poses:
        raise TrajectoryError("the pose list is empty; give at least one frame")
    if len(poses) > MAX_FRAMES:
        raise TrajectoryError(f"{len(poses)} poses is more than the {MAX_FRAMES} allowed")
    rows = []
    for f, row in enumerate(poses):
        if not isinstance(row, (list, tuple)):
            raise TrajectoryError(f"expected a list of {POSE_VALUES} numbers, found {type(row).__name__}", f, "pose")
        if len(row) != POSE_VALUES:
            raise TrajectoryError(f"has {len(row)} numbers; a {what.split()[0]} pose has {POSE_VALUES}: t, fx, fy, cx, "
                                  f"cy, pose_w, pose_h and the 3x4 world-to-camera matrix row-major", f, "pose")
        rows.append([finite_number(v, _slot_name(i), f) for i, v in enumerate(row)])
    return rows


def _slot_name(i: int) -> str:
    if i < 7:
        return ("t", "fx", "fy", "cx", "cy", "pose_w", "pose_h")[i]
    r, c = divmod(i - 7, 4)
    return f"w2c[{r}][{c}]"


def _w2c_from_rows(values: np.ndarray) -> np.ndarray:
    return values[:, 7:19].reshape(-1, 3, 4)


def _aspect_from_pose_size(values: np.ndarray) -> float:
    """Aspect from slots 5, 6 (pose_w / pose_h); both zero means unknown: fy / fx of frame 0 (square pixels)."""
    size = values[:, 5:7]
    if (size == 0).all():
        return _aspect_from_focal(values[0, 1:5])
    for f, (w, h) in enumerate(size):
        if w <= 0 or h <= 0:
            raise TrajectoryError(f"pose_w and pose_h must both be > 0 (or both 0 when unknown), found {w} and {h}",
                                  f, "pose_w/pose_h")
    aspect = size[:, 0] / size[:, 1]
    differs = np.abs(aspect - aspect[0]) > 1e-9 * aspect[0]
    if differs.any():
        f = int(np.argmax(differs))
        raise TrajectoryError(f"pose aspect {aspect[f]:.6g} differs from frame 0's {aspect[0]:.6g}; a path has one "
                              f"pose image size", f, "pose_w/pose_h")
    return float(aspect[0])


def _aspect_from_focal(intrinsics: np.ndarray) -> float:
    """Square pixels: fx·W = fy·H, so W / H = fy / fx. Non-positive focals are left to Trajectory to report."""
    fx, fy = intrinsics[0], intrinsics[1]
    return float(fy / fx) if fx > 0 and fy > 0 else 1.0


# -- RealEstate10K text ----------------------------------------------------------------------------------------

def to_realestate10k(trajectory: Trajectory, url: str = DEFAULT_URL) -> str:
    """Trajectory -> RealEstate10K pose text: URL line, then `t fx fy cx cy 0 0 w2c(3x4)` per frame (spec §6.4)."""
    if "\n" in url or "\r" in url:
        raise TrajectoryError("the URL line must be a single line", field="url")
    lines = [url]
    for t, (w2c, intr) in enumerate(zip(trajectory.w2c, trajectory.intrinsics)):
        numbers = [*map(float, intr), 0.0, 0.0, *map(float, w2c[:3].reshape(12))]
        lines.append(" ".join([str(t), *map(repr, numbers)]))
    return "\n".join(lines) + "\n"


def from_realestate10k(text: str) -> Trajectory:
    """RealEstate10K pose text -> Trajectory (aspect = fy / fx of the first frame, i.e. square pixels)."""
    values = realestate10k_rows(text, max_rows=MAX_FRAMES)
    return Trajectory(_w2c_from_rows(values), values[:, 1:5], _aspect_from_focal(values[0, 1:5]))


def realestate10k_rows(text: str, max_rows: int | None = None) -> np.ndarray:
    """The pose lines of RealEstate10K text as numbers [N,19] (timestamp fx fy cx cy k1 k2 w2c 3x4 row-major).

    The one parser of the format: the camera-path reader above and the training data reader both use it. Blank
    lines and the clip's URL line are skipped; anything else that is not 19 finite numbers is an error naming the
    line."""
    text = _check_text(text)
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words or words[0].lower().startswith("http"):
            continue  # blank, or the clip URL (the demo skips lines starting with "https" as comments)
        frame = len(rows)
        if max_rows is not None and frame >= max_rows:
            raise TrajectoryError(f"more than {max_rows} pose lines; resample the path first")
        if len(words) != POSE_VALUES:
            raise TrajectoryError(f"line {line_no} has {len(words)} values; RealEstate10K pose lines have "
                                  f"{POSE_VALUES}: timestamp fx fy cx cy k1 k2 and the 3x4 world-to-camera matrix "
                                  f"row-major", frame, "line")
        row = []
        for i, word in enumerate(words):
            field = ("timestamp", "fx", "fy", "cx", "cy", "k1", "k2")[i] if i < 7 else _slot_name(i)
            try:
                number = float(word)
            except ValueError:
                raise TrajectoryError(f"line {line_no}: {word[:30]!r} is not a number", frame, field) from None
            if not math.isfinite(number):
                raise TrajectoryError(f"line {line_no}: expected a finite number, found {word[:30]}", frame, field)
            row.append(number)
        rows.append(row)
    if not rows:
        raise TrajectoryError("no pose lines found; RealEstate10K text has a URL line, then one line of "
                              f"{POSE_VALUES} numbers per frame")
    return np.array(rows, dtype=np.float64)


# -- pose JSON -------------------------------------------------------------------------------------------------

def to_json(trajectory: Trajectory, name: str | None = None, description: str | None = None) -> str:
    """Trajectory -> pose JSON text, one frame per line, w2c as 3 rows of 4; floats round-trip exactly."""
    head = {"format": JSON_FORMAT, "version": JSON_VERSION}
    if name is not None:
        head["name"] = str(name)
    if description is not None:
        head["description"] = str(description)
    head["aspect"] = float(trajectory.aspect)
    if trajectory.unit is not None:
        head["unit"] = trajectory.unit
    frames = []
    for w2c, intr in zip(trajectory.w2c, trajectory.intrinsics):
        frame = {"w2c": w2c[:3].tolist(), "intrinsics": dict(zip(INTRINSIC_FIELDS, map(float, intr)))}
        frames.append(json.dumps(frame, allow_nan=False))
    header = json.dumps(head, allow_nan=False)[:-1]
    return header + ', "frames": [\n  ' + ",\n  ".join(frames) + "\n]}\n"


def from_json(source) -> Trajectory:
    """Pose JSON (text, bytes, or a parsed dict) -> Trajectory; a JSON list is read as CAMERACTRL_POSES."""
    data = _parse_json(source) if isinstance(source, (str, bytes, bytearray)) else source
    if isinstance(data, (list, tuple)):
        return from_cameractrl_poses(data)
    if not isinstance(data, dict):
        raise TrajectoryError(f"expected a pose JSON object with a 'frames' list (or a CAMERACTRL_POSES list), "
                              f"found {type(data).__name__}")
    _no_unknown_keys(data, _TOP_KEYS, None, "the top level")
    if "format" in data and data["format"] != JSON_FORMAT:
        raise TrajectoryError(f"'format' must be {JSON_FORMAT!r}, found {str(data['format'])[:40]!r}", field="format")
    if "version" in data and (isinstance(data["version"], bool) or data["version"] != JSON_VERSION):
        raise TrajectoryError(f"this reader knows version {JSON_VERSION}, found {str(data['version'])[:20]}",
                              field="version")
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise TrajectoryError(f"expected text, found {type(data[key]).__name__}", field=key)
    aspect = check_aspect(data["aspect"]) if "aspect" in data else 1.0
    unit = data.get("unit")
    if unit is not None and unit not in UNITS:
        raise TrajectoryError(f"'unit' must be one of {', '.join(UNITS)}, found {str(unit)[:20]!r}", field="unit")
    default = _intrinsics(data["intrinsics"], aspect, None, "intrinsics") if "intrinsics" in data else None
    frames = data.get("frames")
    if not isinstance(frames, list):
        raise TrajectoryError(f"expected 'frames': a list with one object per frame, found "
                              f"{type(frames).__name__ if 'frames' in data else 'nothing'}", field="frames")
    if not frames:
        raise TrajectoryError("'frames' is empty; give at least one frame", field="frames")
    if len(frames) > MAX_FRAMES:
        raise TrajectoryError(f"{len(frames)} frames is more than the {MAX_FRAMES} allowed", field="frames")
    w2c = np.empty((len(frames), 4, 4))
    intrinsics = np.empty((len(frames), 4))
    fallback = default if default is not None else default_intrinsics(aspect)
    for f, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise TrajectoryError(f"expected an object with 'w2c', 'c2w' or 'position' + 'look_at', found "
                                  f"{type(frame).__name__}", f, "frames")
        _no_unknown_keys(frame, _FRAME_KEYS, f, "a frame")
        w2c[f] = _frame_pose(frame, f)
        intrinsics[f] = _intrinsics(frame["intrinsics"], aspect, f, "intrinsics") if "intrinsics" in frame \
            else fallback
    return Trajectory(w2c, intrinsics, aspect, unit)


def _parse_json(text) -> object:
    text = _check_text(text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TrajectoryError(f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise TrajectoryError("not a pose file: JSON nested too deeply") from None
    except ValueError as e:  # e.g. an integer literal longer than Python's digit limit
        raise TrajectoryError(f"not valid JSON: {e}") from None


def _no_unknown_keys(obj: dict, allowed: tuple, frame: int | None, where: str) -> None:
    for key in obj:
        if key not in allowed:
            raise TrajectoryError(f"unknown key {str(key)[:40]!r} in {where}; allowed keys: {', '.join(allowed)}",
                                  frame, str(key)[:40])


def _frame_pose(frame: dict, f: int) -> np.ndarray:
    """One frame's w2c [4,4] from exactly one of: w2c, c2w, or position + look_at (+ up)."""
    given = [k for k in ("w2c", "c2w", "position") if k in frame]
    if len(given) != 1:
        raise TrajectoryError(f"give exactly one of 'w2c', 'c2w' or 'position' + 'look_at', found "
                              f"{given or 'none'}", f, "pose")
    if ("look_at" in frame or "up" in frame) and given != ["position"]:
        raise TrajectoryError("'look_at' and 'up' go with 'position', not with a matrix", f, "look_at")
    key = given[0]
    if key == "position":
        if "look_at" not in frame:
            raise TrajectoryError("'position' needs a 'look_at' point (and optionally 'up')", f, "look_at")
        position = _vector(frame["position"], f, "position")
        target = _vector(frame["look_at"], f, "look_at")
        up = _vector(frame["up"], f, "up") if "up" in frame else np.array(DEFAULT_UP)
        rot_c2w = geometry.look_at_rotation(position, target, up)
        if rot_c2w is None:
            what = "is the same point as 'position'" if np.allclose(position, target, rtol=0, atol=0) else \
                "makes a view direction parallel to 'up'"
            raise TrajectoryError(f"{what}; the camera needs a direction to look in and an 'up' not along it", f,
                                  "look_at" if "is the same" in what else "up")
        return geometry.invert_rigid(geometry.rigid(rot_c2w, position))
    matrix = _matrix(frame[key], f, key)
    return matrix if key == "w2c" else w2c_from_c2w(matrix, f, key)


def w2c_from_c2w(c2w: np.ndarray, f: int | None, field: str = "c2w") -> np.ndarray:
    """One camera-to-world [4,4] -> its inverse, refusing what cannot be a camera (before a LinAlgError could)."""
    if np.abs(c2w[3] - np.array([0.0, 0.0, 0.0, 1.0])).max() > BOTTOM_ROW_TOL:
        raise TrajectoryError(f"the last row must be [0, 0, 0, 1], found {c2w[3].tolist()}", f, field)
    err = geometry.rigidity_error(c2w[:3, :3])
    if not err <= RIGID_REPAIR_TOL:
        raise TrajectoryError(f"the rotation block is not a rotation: max|R R^T - I| = {err:.3g} (allowed "
                              f"{RIGID_REPAIR_TOL}); check the matrix has no scale or shear", f, field)
    return np.linalg.inv(c2w)


def _matrix(value, f: int, field: str) -> np.ndarray:
    """3x4 or 4x4 as rows, or 12 / 16 numbers row-major -> [4,4] (bottom row checked by Trajectory)."""
    if not isinstance(value, list) or not value:
        raise TrajectoryError(f"expected a 3x4 or 4x4 matrix as a list of rows (or 12 / 16 numbers row-major), found "
                              f"{_kind(value)}", f, field)
    if all(isinstance(r, list) for r in value):
        if len(value) not in (3, 4) or any(len(r) != 4 for r in value):
            raise TrajectoryError(f"expected 3 or 4 rows of 4 numbers, found row lengths {[len(r) for r in value][:6]}",
                                  f, field)
        flat = [v for r in value for v in r]
    else:
        if len(value) not in (12, 16):
            raise TrajectoryError(f"expected 12 or 16 numbers row-major (or a list of rows), found {len(value)} "
                                  f"values", f, field)
        flat = value
    numbers = np.array([finite_number(v, field, f) for v in flat])
    m = np.eye(4)
    m[:len(numbers) // 4] = numbers.reshape(-1, 4)
    return m


def _vector(value, f: int, field: str) -> np.ndarray:
    if not isinstance(value, list) or len(value) != 3:
        raise TrajectoryError(f"expected 3 numbers [x, y, z], found {_kind(value)}", f, field)
    return np.array([finite_number(v, field, f) for v in value])


def _kind(value) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return type(value).__name__


def _intrinsics(obj, aspect: float, f: int | None, field: str) -> np.ndarray:
    """An intrinsics object -> normalised (fx, fy, cx, cy); focal from fx/fy, a field of view, or focal_mm."""
    if not isinstance(obj, dict):
        raise TrajectoryError(f"expected an object such as {{\"fov_x_deg\": 60}} or {{\"fx\": 0.5, \"fy\": 0.5}}, "
                              f"found {type(obj).__name__}", f, field)
    _no_unknown_keys(obj, _INTRINSIC_KEYS, f, field)
    num = {k: finite_number(v, f"{field}.{k}", f) for k, v in obj.items()}
    ways = [k for k in ("fx", "fov_x_deg", "fov_y_deg", "focal_mm") if k in num]
    if "fy" in num and "fx" not in num:
        ways.append("fy")
    if len(ways) != 1:
        raise TrajectoryError(f"give the focal length one way: 'fx' (and/or 'fy'), 'fov_x_deg', 'fov_y_deg' or "
                              f"'focal_mm'; found {ways or 'none'}", f, field)
    if "sensor_width_mm" in num and ways != ["focal_mm"]:
        raise TrajectoryError("'sensor_width_mm' goes with 'focal_mm'", f, f"{field}.sensor_width_mm")
    for key in ("fov_x_deg", "fov_y_deg"):
        if key in num and not 0 < num[key] < 180:
            raise TrajectoryError(f"a field of view must be between 0 and 180 degrees, found {num[key]}", f,
                                  f"{field}.{key}")
    for key in ("fx", "fy", "focal_mm", "sensor_width_mm"):
        if key in num and num[key] <= 0:
            raise TrajectoryError(f"must be > 0, found {num[key]}", f, f"{field}.{key}")
    # Normalised focals with square pixels: fx·W = fy·H, so fy = fx·aspect.
    if ways == ["fy"]:
        fx, fy = num["fy"] / aspect, num["fy"]
    elif "fov_y_deg" in num:
        fy = 0.5 / math.tan(math.radians(num["fov_y_deg"]) / 2)
        fx = fy / aspect
    else:
        if "fov_x_deg" in num:
            fx = 0.5 / math.tan(math.radians(num["fov_x_deg"]) / 2)
        elif "focal_mm" in num:
            fx = num["focal_mm"] / num.get("sensor_width_mm", SENSOR_WIDTH_MM)
        else:
            fx = num["fx"]
        fy = num.get("fy", fx * aspect)
    return np.array([fx, fy, num.get("cx", 0.5), num.get("cy", 0.5)])


# -- helpers shared by the 3D tools' formats (nerfstudio.py, colmap.py) ---------------------------------------

def image_size(aspect: float, width: int | None = None, height: int | None = None) -> tuple[int, int]:
    """Whole-pixel (width, height) for files that store pixel intrinsics.

    Both given: they must match the path's aspect (1e-6). One given: the other follows from the aspect, rounded.
    None: the smallest multiple of the aspect's fraction (denominator <= 100000) that is at least 512 pixels high,
    so width / height reproduces the aspect to ~1e-10 (1.0 -> 512x512, 16/9 -> 912x513).
    """
    for name, value in (("width", width), ("height", height)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise TrajectoryError(f"the image {name} must be a whole number of pixels >= 1, found {value!r}")
    if width is not None and height is not None:
        if abs(width / height - aspect) > 1e-6 * aspect:
            raise TrajectoryError(f"a {width}x{height} image has aspect {width / height:.6g}, but this path's "
                                  f"intrinsics refer to an image of aspect {aspect:.6g}; give a size of that "
                                  f"aspect, or only the width or the height")
        return int(width), int(height)
    if width is not None:
        return int(width), max(1, round(width / aspect))
    if height is not None:
        return max(1, round(height * aspect)), int(height)
    frac = Fraction(aspect).limit_denominator(100_000)
    k = -(-512 // frac.denominator)
    return frac.numerator * k, frac.denominator * k


def natural_key(name: str) -> list:
    """Sort key that orders runs of digits by value: 'frame_2' before 'frame_10'."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part]


# -- any source ------------------------------------------------------------------------------------------------

def read_text(path) -> str:
    """A pose file's text: at most MAX_TEXT_BYTES, UTF-8 (a byte-order mark is allowed)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise TrajectoryError(f"{path} is {size / 2**20:.1f} MiB; pose files are limited to "
                                  f"{MAX_TEXT_BYTES // 2**20} MiB. Resample the path or split the file")
        with open(path, "rb") as fh:
            data = fh.read(MAX_TEXT_BYTES + 1)
    except FileNotFoundError:
        raise TrajectoryError(f"pose file {path} not found") from None
    except IsADirectoryError:
        raise TrajectoryError(f"{path} is a folder, not a pose file") from None
    except OSError as e:
        raise TrajectoryError(f"cannot read pose file {path}: {e.strerror or e}") from None
    return _check_text(data, str(path))


def _check_text(text, name: str = "the pose text") -> str:
    """Bytes or str -> str, refusing oversized or non-UTF-8 input."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) > MAX_TEXT_BYTES:
            raise TrajectoryError(f"{name} is larger than the {MAX_TEXT_BYTES // 2**20} MiB limit")
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise TrajectoryError(f"{name} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                                  f"save it as UTF-8") from None
    if not isinstance(text, str):
        raise TrajectoryError(f"expected text, found {type(text).__name__}")
    if len(text) > MAX_TEXT_BYTES:
        raise TrajectoryError(f"{name} is larger than the {MAX_TEXT_BYTES // 2**20} MiB limit")
    return text.lstrip("\ufeff")
