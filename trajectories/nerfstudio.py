"""nerfstudio / instant-ngp `transforms.json`: camera-to-world matrices in OpenGL camera axes + pixel intrinsics.

    {"camera_model": "PINHOLE", "w": 912, "h": 513, "fl_x": 456.0, "fl_y": 456.0, "cx": 456.0, "cy": 256.5,
     "frames": [{"file_path": "images/frame_00001.png", "transform_matrix": [[...], [...], [...], [0, 0, 0, 1]]}]}

`transform_matrix` is camera-to-world with OpenGL camera axes (x right, y up, z back: the camera looks down -z),
as nerfstudio's data conventions and the original NeRF/instant-ngp files define it; we turn it into our OpenCV
world-to-camera with `geometry.CV_FROM_GL`. The world is kept as the file has it.
Intrinsics are in pixels, at the top level or per frame (a frame's keys win): fl_x, fl_y, cx, cy, w, h, or
instant-ngp's camera_angle_x / camera_angle_y (full field of view in radians). Missing fl_y means square pixels,
missing cx, cy the image centre. Distortion (k1..k4, p1, p2) is ignored with a TrajectoryWarning; fisheye and
panoramic models are refused. Frames are read in natural order of `file_path` (frame_2 before frame_10), as
nerfstudio sorts them; frames without file paths keep the file's order.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np

from . import geometry
from .errors import TrajectoryError, TrajectoryWarning
from .formats import _matrix, _parse_json, finite_number, image_size, natural_key, w2c_from_c2w
from .trajectory import MAX_FRAMES, Trajectory

PERSPECTIVE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y")


def is_transforms(data) -> bool:
    """True for a parsed transforms.json (frames carrying `transform_matrix`), which our pose JSON never has."""
    frames = data.get("frames") if isinstance(data, dict) else None
    return isinstance(frames, list) and any(isinstance(f, dict) and "transform_matrix" in f for f in frames)


def from_transforms_json(source) -> Trajectory:
    """transforms.json text, bytes or parsed dict -> Trajectory (frames sorted by file_path, see module docstring)."""
    data = _parse_json(source) if isinstance(source, (str, bytes, bytearray)) else source
    if not isinstance(data, dict):
        raise TrajectoryError(f"expected a transforms.json object with a 'frames' list, found {type(data).__name__}")
    _check_model(data.get("camera_model"), None)
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise TrajectoryError("expected 'frames': a non-empty list of {\"file_path\", \"transform_matrix\"} objects, "
                              f"found {type(frames).__name__ if 'frames' in data else 'nothing'}", field="frames")
    if len(frames) > MAX_FRAMES:
        raise TrajectoryError(f"{len(frames)} frames is more than the {MAX_FRAMES} allowed", field="frames")
    for f, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise TrajectoryError(f"expected an object with 'transform_matrix', found {type(frame).__name__}", f,
                                  "frames")
        if "file_path" in frame and not isinstance(frame["file_path"], str):
            raise TrajectoryError(f"expected text, found {type(frame['file_path']).__name__}", f, "file_path")
    order = list(range(len(frames)))
    if all("file_path" in frame for frame in frames):
        order.sort(key=lambda i: natural_key(frames[i]["file_path"]))
    w2c = np.empty((len(frames), 4, 4))
    intrinsics = np.empty((len(frames), 4))
    aspects = np.empty(len(frames))
    distorted = []
    for t, f in enumerate(order):
        frame = frames[f]
        if "transform_matrix" not in frame:
            raise TrajectoryError("has no 'transform_matrix' (the camera-to-world 4x4, OpenGL axes)", f,
                                  "transform_matrix")
        _check_model(frame.get("camera_model"), f)
        c2w_gl = _matrix(frame["transform_matrix"], f, "transform_matrix")
        w2c[t] = w2c_from_c2w(c2w_gl @ geometry.CV_FROM_GL, f, "transform_matrix")
        intrinsics[t], aspects[t] = _frame_intrinsics({**data, **frame}, f)
        if any(_number({**data, **frame}, k, f, 0.0) != 0.0 for k in DISTORTION_KEYS):
            distorted.append(f)
    differs = np.abs(aspects - aspects[0]) > 1e-3 * aspects[0]
    if differs.any():
        t = int(np.argmax(differs))
        raise TrajectoryError(f"image aspect {aspects[t]:.6g} differs from the first frame's {aspects[0]:.6g}; a "
                              f"camera path has one image shape", order[t], "w/h")
    if distorted:
        warnings.warn(f"transforms.json frames {distorted[:8]}{'...' if len(distorted) > 8 else ''} have lens "
                      f"distortion (k1..k4, p1, p2); it is ignored: CamI2V uses pinhole cameras", TrajectoryWarning,
                      stacklevel=2)
    return Trajectory(w2c, intrinsics, float(aspects[0]))


def _check_model(model, f: int | None) -> None:
    if model is None or model in PERSPECTIVE_MODELS:
        return
    raise TrajectoryError(f"camera_model {str(model)[:40]!r} is not a perspective camera; supported: "
                          f"{', '.join(PERSPECTIVE_MODELS)}. Undistort the images to a pinhole camera first "
                          f"(e.g. COLMAP's image_undistorter, then ns-process-data)", f, "camera_model")


def _number(obj: dict, key: str, f: int | None, default=None):
    if key not in obj:
        return default
    return finite_number(obj[key], key, f)


def _frame_intrinsics(obj: dict, f: int) -> tuple[np.ndarray, float]:
    """Merged top-level + frame keys -> normalised (fx, fy, cx, cy) [4] and the image aspect w / h."""
    num = {k: _number(obj, k, f) for k in INTRINSIC_KEYS if k in obj}
    for key in ("fl_x", "fl_y", "w", "h"):
        if key in num and num[key] <= 0:
            raise TrajectoryError(f"must be > 0, found {num[key]}", f, key)
    for key in ("camera_angle_x", "camera_angle_y"):
        if key in num and not 0 < num[key] < math.pi:
            raise TrajectoryError(f"is a full field of view in radians, between 0 and pi; found {num[key]}", f, key)
    if ("w" in num) != ("h" in num):
        raise TrajectoryError("give both the image width 'w' and height 'h' in pixels, or neither", f,
                              "h" if "w" in num else "w")
    if "w" not in num:
        # NeRF-synthetic style: only fields of view, image size unknown. Normalised focals need no size.
        for key in ("fl_x", "fl_y", "cx", "cy"):
            if key in num:
                raise TrajectoryError(f"'{key}' is in pixels, so the image size 'w' and 'h' must be given too", f,
                                      key)
        if "camera_angle_x" not in num:
            raise TrajectoryError("no focal length: give 'fl_x' with 'w' and 'h' (pixels), or 'camera_angle_x' "
                                  "(radians)", f, "fl_x")
        fx = 0.5 / math.tan(num["camera_angle_x"] / 2)
        if "camera_angle_y" in num:
            fy = 0.5 / math.tan(num["camera_angle_y"] / 2)
            aspect = fy / fx  # square pixels: fx·W = fy·H
        else:
            aspect, fy = 1.0, fx
            if f == 0:
                warnings.warn("transforms.json gives neither the image size (w, h) nor camera_angle_y; assuming "
                              "square images, as the NeRF synthetic scenes are", TrajectoryWarning, stacklevel=3)
        return np.array([fx, fy, 0.5, 0.5]), aspect
    width, height = num["w"], num["h"]
    if "fl_x" in num:
        fx_px = num["fl_x"]
    elif "camera_angle_x" in num:
        fx_px = 0.5 * width / math.tan(num["camera_angle_x"] / 2)
    else:
        raise TrajectoryError("no focal length: give 'fl_x' (pixels) or 'camera_angle_x' (radians)", f, "fl_x")
    if "fl_y" in num:
        fy_px = num["fl_y"]
    elif "camera_angle_y" in num:
        fy_px = 0.5 * height / math.tan(num["camera_angle_y"] / 2)
    else:
        fy_px = fx_px
    cx_px, cy_px = num.get("cx", width / 2), num.get("cy", height / 2)
    return np.array([fx_px / width, fy_px / height, cx_px / width, cy_px / height]), width / height


def to_transforms_json(trajectory: Trajectory, width: int | None = None, height: int | None = None,
                       image_dir: str = "images") -> str:
    """Trajectory -> transforms.json text (nerfstudio / instant-ngp), PINHOLE, pixel size from `formats.image_size`.

    Intrinsics go at the top level when every frame shares them, else per frame. File paths are
    `{image_dir}/frame_00001.png`, ... (names only: no images are written). Floats round-trip exactly.
    """
    w, h = image_size(trajectory.aspect, width, height)
    pixel = trajectory.intrinsics * np.array([w, h, w, h])
    shared = bool((trajectory.intrinsics == trajectory.intrinsics[0]).all())
    keys = ("fl_x", "fl_y", "cx", "cy")
    head = {"camera_model": "PINHOLE", "w": w, "h": h}
    if shared:
        head.update(zip(keys, map(float, pixel[0])))
    c2w_gl = trajectory.c2w @ geometry.CV_FROM_GL
    frames = []
    for t, (pose, px) in enumerate(zip(c2w_gl, pixel)):
        frame = {"file_path": f"{image_dir}/frame_{t + 1:05d}.png", "transform_matrix": pose.tolist()}
        if not shared:
            frame.update(zip(keys, map(float, px)))
        frames.append(json.dumps(frame, allow_nan=False))
    return json.dumps(head, allow_nan=False)[:-1] + ', "frames": [\n  ' + ",\n  ".join(frames) + "\n]}\n"
