"""COLMAP text models (a folder with cameras.txt, images.txt and points3D.txt) as camera paths.

cameras.txt: one line per camera, `CAMERA_ID MODEL WIDTH HEIGHT PARAMS...` (pixels).
images.txt:  two lines per image: `IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`, then its 2D points
             `X Y POINT3D_ID ...` (that line may be empty). Lines starting with '#' are comments.
The quaternion (w, x, y, z) and translation are world-to-camera in OpenCV axes (x right, y down, z forward),
X_cam = R X_world + t: exactly our `w2c`, so no axis change is needed. Images become frames in natural order of
NAME (frame_2 before frame_10), whatever their IMAGE_IDs. Camera models read: SIMPLE_PINHOLE, PINHOLE,
SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV; their distortion terms are ignored with a TrajectoryWarning (CamI2V
uses pinhole cameras). Fisheye models are refused.
The writer makes one PINHOLE camera per distinct intrinsics and an empty points3D.txt, so COLMAP tools load it.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from . import geometry
from .errors import TrajectoryError, TrajectoryWarning
from .formats import _check_text, image_size, natural_key, read_text
from .trajectory import MAX_FRAMES, Trajectory

# model -> parameter names (COLMAP's src/colmap/sensor/models.h); the first ones are the pinhole part.
MODEL_PARAMS = {
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fx", "fy", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k"),
    "RADIAL": ("f", "cx", "cy", "k1", "k2"),
    "OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2"),
    "FULL_OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6"),
}
FILES = ("cameras.txt", "images.txt")
RIGID_WRITE_TOL = 1e-9
_IMAGE_FIELDS = ("IMAGE_ID", "QW", "QX", "QY", "QZ", "TX", "TY", "TZ", "CAMERA_ID", "NAME")


# -- reading ---------------------------------------------------------------------------------------------------

def read_colmap(path) -> Trajectory:
    """A COLMAP text model folder (or its cameras.txt / images.txt) -> Trajectory."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise TrajectoryError(f"COLMAP model folder {folder} not found")
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        if (folder / "cameras.bin").is_file():
            hint = (f"it holds a binary model: convert it with `colmap model_converter --input_path {folder} "
                    f"--output_path {folder} --output_type TXT`")
        elif (folder / "sparse").is_dir():
            models = sorted(p.name for p in (folder / "sparse").iterdir() if p.is_dir())
            hint = f"point at the model inside sparse/ ({', '.join(models) or 'sparse itself'})"
        else:
            hint = "a COLMAP text model has cameras.txt and images.txt"
        raise TrajectoryError(f"{folder} has no {' or '.join(missing)}; {hint}")
    return from_colmap_text(read_text(folder / "cameras.txt"), read_text(folder / "images.txt"))


def from_colmap_text(cameras_txt, images_txt) -> Trajectory:
    """cameras.txt and images.txt contents -> Trajectory (frames by image name, see module docstring)."""
    cameras = _parse_cameras(_check_text(cameras_txt, "cameras.txt"))
    images = _parse_images(_check_text(images_txt, "images.txt"))
    images.sort(key=lambda image: natural_key(image["name"]))
    for a, b in zip(images, images[1:]):
        if a["name"] == b["name"]:
            raise TrajectoryError(f"images.txt lines {a['line']} and {b['line']} both name {a['name'][:80]!r}; "
                                  f"image names must be unique")
    w2c = np.empty((len(images), 4, 4))
    intrinsics = np.empty((len(images), 4))
    aspects = np.empty(len(images))
    distorted = set()
    for t, image in enumerate(images):
        camera = cameras.get(image["camera_id"])
        if camera is None:
            raise TrajectoryError(f"images.txt line {image['line']}: CAMERA_ID {image['camera_id']} is not in "
                                  f"cameras.txt (cameras: {sorted(cameras)[:10]})")
        w2c[t] = geometry.rigid(geometry.quaternion_to_matrix(image["q"]), image["t"])
        intrinsics[t], aspects[t] = camera["intrinsics"], camera["aspect"]
        if camera["distorted"]:
            distorted.add(image["camera_id"])
    differs = np.abs(aspects - aspects[0]) > 1e-3 * aspects[0]
    if differs.any():
        t = int(np.argmax(differs))
        raise TrajectoryError(f"image {images[t]['name'][:80]!r} (images.txt line {images[t]['line']}) has a camera "
                              f"of aspect {aspects[t]:.6g}, the first image's has {aspects[0]:.6g}; a camera path "
                              f"has one image shape")
    if distorted:
        warnings.warn(f"COLMAP cameras {sorted(distorted)[:8]} have lens distortion; it is ignored: CamI2V uses "
                      f"pinhole cameras", TrajectoryWarning, stacklevel=2)
    return Trajectory(w2c, intrinsics, float(aspects[0]))


def _data_lines(text: str):
    """(line number, words) of lines that are neither blank nor comments."""
    for line_no, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if words and not words[0].startswith("#"):
            yield line_no, words


def _parse_cameras(text: str) -> dict:
    cameras = {}
    for line_no, words in _data_lines(text):
        where = f"cameras.txt line {line_no}"
        if len(words) < 4:
            raise TrajectoryError(f"{where}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS..., found {len(words)} "
                                  f"values")
        camera_id = _integer(words[0], where, "CAMERA_ID")
        model = words[1].upper()
        if model not in MODEL_PARAMS:
            raise TrajectoryError(f"{where}: camera model {words[1][:40]!r} is not supported; supported: "
                                  f"{', '.join(MODEL_PARAMS)}. Fisheye models must be undistorted first (colmap "
                                  f"image_undistorter writes a PINHOLE model)")
        names = MODEL_PARAMS[model]
        if len(words) != 4 + len(names):
            raise TrajectoryError(f"{where}: a {model} camera has {len(names)} parameters ({' '.join(names)}) after "
                                  f"CAMERA_ID MODEL WIDTH HEIGHT; found {len(words) - 4}")
        width = _integer(words[2], where, "WIDTH")
        height = _integer(words[3], where, "HEIGHT")
        if width < 1 or height < 1:
            raise TrajectoryError(f"{where}: WIDTH and HEIGHT must be >= 1 pixel, found {width} x {height}")
        p = dict(zip(names, (_float(w, where, n) for w, n in zip(words[4:], names))))
        fx, fy = (p["f"], p["f"]) if "f" in p else (p["fx"], p["fy"])
        if fx <= 0 or fy <= 0:
            raise TrajectoryError(f"{where}: focal lengths must be > 0, found {fx} and {fy}")
        if camera_id in cameras:
            raise TrajectoryError(f"{where}: CAMERA_ID {camera_id} is already defined on line "
                                  f"{cameras[camera_id]['line']}")
        distortion = [p[n] for n in names if n not in ("f", "fx", "fy", "cx", "cy")]
        cameras[camera_id] = {"line": line_no, "aspect": width / height, "distorted": any(distortion),
                              "intrinsics": np.array([fx / width, fy / height, p["cx"] / width, p["cy"] / height])}
    if not cameras:
        raise TrajectoryError("cameras.txt has no cameras; expected lines CAMERA_ID MODEL WIDTH HEIGHT PARAMS...")
    return cameras


def _parse_images(text: str) -> list[dict]:
    # The line after an image line is always its 2D points, even when empty: that is how COLMAP reads the file,
    # so blank lines cannot be skipped there.
    lines = text.splitlines()
    images, ids = [], {}
    i = 0
    while i < len(lines):
        line_no, words = i + 1, lines[i].split()
        i += 1
        if not words or words[0].startswith("#"):
            continue
        where = f"images.txt line {line_no}"
        if len(words) < len(_IMAGE_FIELDS):
            raise TrajectoryError(f"{where}: expected {' '.join(_IMAGE_FIELDS)}, found {len(words)} values")
        image_id = _integer(words[0], where, "IMAGE_ID")
        if image_id in ids:
            raise TrajectoryError(f"{where}: IMAGE_ID {image_id} is already used on line {ids[image_id]}")
        ids[image_id] = line_no
        values = [_float(w, where, n) for w, n in zip(words[1:8], _IMAGE_FIELDS[1:8])]
        q = np.array(values[:4])
        if not np.linalg.norm(q) > 1e-6:
            raise TrajectoryError(f"{where}: the quaternion QW QX QY QZ is {values[:4]}, which is not a rotation")
        images.append({"line": line_no, "q": q, "t": np.array(values[4:7]),
                       "camera_id": _integer(words[8], where, "CAMERA_ID"), "name": " ".join(words[9:])})
        if len(images) > MAX_FRAMES:
            raise TrajectoryError(f"images.txt has more than {MAX_FRAMES} images; a camera path has at most "
                                  f"{MAX_FRAMES} frames")
        if i < len(lines):  # the points line (the last image may lack it)
            _check_points(lines[i], i + 1, image_id)
            i += 1
    if not images:
        raise TrajectoryError("images.txt has no images; expected two lines per image: IMAGE_ID QW QX QY QZ TX TY "
                              "TZ CAMERA_ID NAME, then its 2D points (possibly an empty line)")
    return images


def _check_points(line: str, line_no: int, image_id: int) -> None:
    words = line.split()
    if len(words) % 3 or not all(_is_number(w) for w in words):
        raise TrajectoryError(f"images.txt line {line_no}: expected the 2D points of image {image_id} (X Y "
                              f"POINT3D_ID triples, or an empty line), found {len(words)} values starting "
                              f"{' '.join(words[:3])[:60]!r}. images.txt has two lines per image; the second may be "
                              f"empty but must be there")


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _integer(word: str, where: str, field: str) -> int:
    try:
        return int(word)
    except ValueError:
        raise TrajectoryError(f"{where}: {field} must be a whole number, found {word[:30]!r}") from None


def _float(word: str, where: str, field: str) -> float:
    try:
        value = float(word)
    except ValueError:
        raise TrajectoryError(f"{where}: {field} must be a number, found {word[:30]!r}") from None
    if not math.isfinite(value):
        raise TrajectoryError(f"{where}: {field} must be a finite number, found {word[:30]}")
    return value


# -- writing ---------------------------------------------------------------------------------------------------

def to_colmap_text(trajectory: Trajectory, width: int | None = None, height: int | None = None) -> dict[str, str]:
    """Trajectory -> {"cameras.txt", "images.txt", "points3D.txt": text}; image names frame_00001.png, ...

    Quaternions hold rotations only, so a slightly non-rigid pose (the demo's element-wise interpolation keeps
    those, see trajectory.py) is written as its nearest rotation with the camera centre kept, with a warning.
    """
    w, h = image_size(trajectory.aspect, width, height)
    rot = trajectory.w2c[:, :3, :3]
    trans = trajectory.w2c[:, :3, 3]
    off = geometry.rigidity_error(rot) > RIGID_WRITE_TOL
    if off.any():
        centres = trajectory.positions[off]
        rot = rot.copy()
        trans = trans.copy()
        rot[off] = geometry.nearest_rotation(rot[off])
        trans[off] = -np.einsum("tij,tj->ti", rot[off], centres)
        frames = np.flatnonzero(off)
        warnings.warn(f"frames {frames[:8].tolist()}{'...' if len(frames) > 8 else ''}: COLMAP stores rotations "
                      f"as quaternions, so these slightly non-rigid poses are written as their nearest rotations "
                      f"(camera centres kept)", TrajectoryWarning, stacklevel=2)
    quats = geometry.matrix_to_quaternion(rot)
    camera_ids, camera_lines = {}, []
    for intr in trajectory.intrinsics:
        key = tuple(intr.tolist())
        if key not in camera_ids:
            camera_ids[key] = len(camera_ids) + 1
            fx, fy, cx, cy = intr * np.array([w, h, w, h])
            camera_lines.append(" ".join([str(camera_ids[key]), "PINHOLE", str(w), str(h),
                                          *map(repr, map(float, (fx, fy, cx, cy)))]))
    image_lines = []
    for t, (q, tr, intr) in enumerate(zip(quats, trans, trajectory.intrinsics)):
        image_lines.append(" ".join([str(t + 1), *map(repr, map(float, (*q, *tr))),
                                     str(camera_ids[tuple(intr.tolist())]), f"frame_{t + 1:05d}.png"]))
        image_lines.append("")  # no 2D points
    return {
        "cameras.txt": "# Camera list with one line of data per camera:\n"
                       "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
                       f"# Number of cameras: {len(camera_lines)}\n" + "\n".join(camera_lines) + "\n",
        "images.txt": "# Image list with two lines of data per image:\n"
                      "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n"
                      "#   POINTS2D[] as (X, Y, POINT3D_ID)\n"
                      f"# Number of images: {len(trajectory)}, mean observations per image: 0\n"
                      + "\n".join(image_lines) + "\n",
        "points3D.txt": "# 3D point list with one line of data per point:\n"
                        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n"
                        "# Number of points: 0, mean track length: 0\n",
    }


def write_colmap(trajectory: Trajectory, folder, width: int | None = None, height: int | None = None) -> Path:
    """Write the text model into `folder` (created if needed); returns the folder."""
    folder = Path(folder)
    files = to_colmap_text(trajectory, width, height)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
    except OSError as e:
        raise TrajectoryError(f"cannot write the COLMAP model to {folder}: {e.strerror or e}") from None
    return folder
