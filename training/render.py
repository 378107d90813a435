"""Procedural rooms and an exact pinhole ray caster in numpy, for the synthetic multi-view dataset (issue 6).

Conventions (the same as the rest of the project, spec §6.2-6.4):

* World: metres, y up, floor at y = 0. The room is the box x in [-sx/2, sx/2], y in [0, sy], z in [-sz/2, sz/2];
  cameras must stay inside it.
* Cameras: world-to-camera 4x4 `w2c` with OpenCV axes (x right, y down, z forward). Intrinsics are normalised:
  fx and cx by the image width, fy and cy by the height.
* Pixels: column i / row j covers [i, i+1) x [j, j+1) in pixel units and its centre is (i + 0.5, j + 0.5), the
  rule of the Plücker embedding (spec §6.2). A point that projects to (u, v) = (fx*W*x/z + cx*W, fy*H*y/z + cy*H)
  therefore lands in pixel (floor(u), floor(v)).

A `Scene` is plain data (JSON round trip with `scene_to_dict` / `scene_from_dict`): the room size, one material
per room face, a list of boxes, spheres and vertical cylinders, and the lights. Textures are procedural and
derived from each material's integer seed, so a scene file is enough to re-render any view bit for bit; the
evaluation renders ground-truth frames for arbitrary cameras with `render_views`.

Shading is Lambertian (ambient + directional "sun" lights + one ceiling lamp with distance fall-off), no shadows
or reflections: the appearance of a surface point does not depend on the viewpoint, which is what SIFT matching
and a static-scene reconstruction assume.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cami2v_core.errors import CamI2VError
from cami2v_core.files import write_text_atomic

SCENE_FORMAT_VERSION = 1
PATTERNS = ("flat", "noise", "checker", "brick", "blobs", "stripes")
SHAPES = ("box", "sphere", "cylinder")
# Room faces in the order of the ray caster: axis * 2 + (0 for the low wall, 1 for the high one).
ROOM_FACES = ("wall_x-", "wall_x+", "floor", "ceiling", "wall_z-", "wall_z+")
WORLD_UP = np.array([0.0, 1.0, 0.0])

_TABLE_SIZE = 64  # texture lattice period in cells: large enough that repeats are rarely in view
_TABLE_LAYERS = 12
_EPS = 1e-6


class SceneError(CamI2VError, ValueError):
    """A scene description or a camera that cannot be rendered; the message says what to fix."""


@dataclass
class Material:
    """A procedural surface texture.

    pattern: one of PATTERNS. colors: RGB triples in 0..1 (display values); which ones a pattern uses:
    flat/checker/stripes/noise use colors[0], colors[1]; brick uses [0], [1] for bricks and [2] for mortar;
    blobs uses [0] as background and random hues for the blobs. scale: metres per pattern cell.
    seed: integer that fixes the random lattice of the noise and of per-cell variations.
    detail: strength of the fine brightness noise laid over every pattern (gives SIFT corners everywhere).
    emissive: unlit, the pixel is colors[0] exactly (markers in tests and debugging).
    """

    pattern: str
    colors: list
    scale: float = 0.25
    seed: int = 0
    detail: float = 0.3
    emissive: bool = False


@dataclass
class Shape:
    """A solid object. box: size = half extents (x, y, z) before the yaw; sphere: size = [radius];
    cylinder (vertical axis): size = [radius, half_height]. center is the middle of the solid; yaw_deg turns boxes
    and cylinders about the vertical axis. label names it in captions ("red box")."""

    kind: str
    center: list
    size: list
    material: Material
    yaw_deg: float = 0.0
    label: str = ""


@dataclass
class DirectionalLight:
    """Light from infinitely far away; direction points from the surface towards the light."""

    direction: list
    intensity: float


@dataclass
class PointLight:
    """A lamp: intensity / (1 + (distance / falloff_m)^2) on a surface facing it."""

    position: list
    intensity: float
    falloff_m: float = 2.5


@dataclass
class Scene:
    """A textured room with objects and lights (see the module docstring for the axes)."""

    room_size: list
    room_materials: dict
    objects: list = field(default_factory=list)
    ambient: float = 0.35
    directional_lights: list = field(default_factory=list)
    point_lights: list = field(default_factory=list)
    caption: str = ""
    info: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------
# JSON round trip


def scene_to_dict(scene: Scene) -> dict:
    """Scene -> JSON-ready dict (with a format version)."""
    return {"format_version": SCENE_FORMAT_VERSION, **dataclasses.asdict(scene)}


def _material_from_dict(d: dict, where: str) -> Material:
    try:
        mat = Material(**d)
    except TypeError as e:
        raise SceneError(f"{where}: not a material description ({e}); expected keys "
                         f"{[f.name for f in dataclasses.fields(Material)]}") from e
    if mat.pattern not in PATTERNS:
        raise SceneError(f"{where}: unknown pattern {mat.pattern!r}; expected one of {PATTERNS}")
    colors = np.asarray(mat.colors, dtype=np.float64)
    if colors.ndim != 2 or colors.shape[1] != 3 or len(colors) < 1:
        raise SceneError(f"{where}: colors must be a list of RGB triples; got {mat.colors!r}")
    if not mat.scale > 0:
        raise SceneError(f"{where}: scale must be positive metres; got {mat.scale}")
    return mat


def scene_from_dict(d: dict) -> Scene:
    """JSON dict (from `scene_to_dict`) -> Scene, checking what the renderer relies on."""
    if not isinstance(d, dict):
        raise SceneError(f"a scene description must be a JSON object; got {type(d).__name__}")
    version = d.get("format_version")
    if version != SCENE_FORMAT_VERSION:
        raise SceneError(f"scene format version {version!r} is not supported (this code reads version "
                         f"{SCENE_FORMAT_VERSION}); re-generate the dataset with this version of training.synthetic")
    try:
        room_materials = {face: _material_from_dict(m, f"room face {face!r}")
                          for face, m in d["room_materials"].items()}
        missing = [f for f in ROOM_FACES if f not in room_materials]
        if missing:
            raise SceneError(f"room_materials lacks the faces {missing}; expected all of {ROOM_FACES}")
        objects = []
        for k, o in enumerate(d.get("objects", [])):
            o = dict(o)
            o["material"] = _material_from_dict(o["material"], f"object {k}")
            shape = Shape(**o)
            _check_shape(shape, k)
            objects.append(shape)
        scene = Scene(
            room_size=[float(v) for v in d["room_size"]],
            room_materials=room_materials,
            objects=objects,
            ambient=float(d.get("ambient", 0.35)),
            directional_lights=[DirectionalLight(**x) for x in d.get("directional_lights", [])],
            point_lights=[PointLight(**x) for x in d.get("point_lights", [])],
            caption=d.get("caption", ""),
            info=dict(d.get("info", {})),
        )
    except KeyError as e:
        raise SceneError(f"scene description lacks the key {e}; was it written by scene_to_dict?") from e
    except TypeError as e:
        raise SceneError(f"scene description has an unexpected field: {e}") from e
    if len(scene.room_size) != 3 or not all(v > 0 for v in scene.room_size):
        raise SceneError(f"room_size must be three positive lengths (x, y, z) in metres; got {scene.room_size}")
    return scene


def _check_shape(shape: Shape, k: int) -> None:
    if shape.kind not in SHAPES:
        raise SceneError(f"object {k}: unknown kind {shape.kind!r}; expected one of {SHAPES}")
    n_size = {"box": 3, "sphere": 1, "cylinder": 2}[shape.kind]
    if len(shape.size) != n_size or not all(v > 0 for v in shape.size):
        raise SceneError(f"object {k} ({shape.kind}): size must be {n_size} positive numbers; got {shape.size}")
    if len(shape.center) != 3:
        raise SceneError(f"object {k}: center must be (x, y, z); got {shape.center}")


def save_scene(scene: Scene, path: str | os.PathLike) -> None:
    """Write a scene as JSON, atomically (temporary file, then rename)."""
    write_text_atomic(path, json.dumps(scene_to_dict(scene), indent=1) + "\n")


def load_scene(path: str | os.PathLike) -> Scene:
    """Read a scene JSON written by `save_scene`."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise SceneError(f"scene file {str(path)!r} does not exist; test scenes are under <out>/scenes/<split>/") from e
    except json.JSONDecodeError as e:
        raise SceneError(f"scene file {str(path)!r} is not valid JSON ({e}); re-generate it") from e
    return scene_from_dict(d)


# ----------------------------------------------------------------------------------------------------------------
# Geometry: ray intersections. Rays of one frame share the origin o [3]; directions d [N,3] have unit length, so
# every t is a distance in metres.


def _yaw_matrix(yaw_deg: float) -> np.ndarray:
    """Rotation about world +y; columns are the object's local axes in world coordinates."""
    a = np.deg2rad(yaw_deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _room_bounds(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    sx, sy, sz = scene.room_size
    return np.array([-sx / 2, 0.0, -sz / 2]), np.array([sx / 2, sy, sz / 2])


def _intersect_room(o, d, lo, hi):
    """Exit distance t [N] and face index [N] (see ROOM_FACES) of rays starting inside the room."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t_axis = np.where(d > 0, (hi - o) / d, np.where(d < 0, (lo - o) / d, np.inf))
    axis = np.argmin(t_axis, axis=1)
    rows = np.arange(len(d))
    return t_axis[rows, axis], axis * 2 + (d[rows, axis] > 0)


def _intersect_sphere(o, d, center, radius):
    oc = o - center
    b = d @ oc
    c = oc @ oc - radius * radius
    disc = b * b - c
    with np.errstate(invalid="ignore"):
        t = -b - np.sqrt(disc)
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


def _box_local(o, d, shape):
    rot = _yaw_matrix(shape.yaw_deg)
    return rot.T @ (o - np.asarray(shape.center, float)), d @ rot, rot


def _intersect_box(o, d, shape):
    o_l, d_l, _ = _box_local(o, d, shape)
    h = np.asarray(shape.size, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-h - o_l) / d_l
        t2 = (h - o_l) / d_l
    t_near = np.fmin(t1, t2).max(axis=1)
    t_far = np.fmax(t1, t2).min(axis=1)
    return np.where((t_near <= t_far) & (t_near > _EPS), t_near, np.inf)


def _cylinder_parts(o, d, shape):
    """Distances to the side and to the facing cap of a vertical cylinder (inf where missed)."""
    cx, cy, cz = shape.center
    r, hh = shape.size
    ox, oy, oz = o[0] - cx, o[1] - cy, o[2] - cz
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    a = dx * dx + dz * dz
    b = ox * dx + oz * dz
    c = ox * ox + oz * oz - r * r
    disc = b * b - a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-b - np.sqrt(disc)) / a
        y_side = oy + t_side * dy
        t_side = np.where((disc >= 0) & (a > 0) & (t_side > _EPS) & (np.abs(y_side) <= hh), t_side, np.inf)
        # Only the cap on the camera's side can be the first hit from outside.
        cap_y = hh if oy > 0 else -hh
        t_cap = (cap_y - oy) / dy
        xc, zc = ox + t_cap * dx, oz + t_cap * dz
        t_cap = np.where((t_cap > _EPS) & (xc * xc + zc * zc <= r * r), t_cap, np.inf)
    return t_side, t_cap


def _intersect_cylinder(o, d, shape):
    return np.fmin(*_cylinder_parts(o, d, shape))


def _intersect_sphere_shape(o, d, shape):
    return _intersect_sphere(o, d, np.asarray(shape.center, float), shape.size[0])


_INTERSECT = {"box": _intersect_box, "sphere": _intersect_sphere_shape, "cylinder": _intersect_cylinder}


def first_hits(scene: Scene, origin, directions) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of rays from one inside point: distance [N] (metres) and surface id [N] (-1 = room, k = object)."""
    o = np.asarray(origin, dtype=np.float64)
    d = np.asarray(directions, dtype=np.float64)
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    lo, hi = _room_bounds(scene)
    t_room, _ = _intersect_room(o, d, lo, hi)
    if not scene.objects:
        return t_room, np.full(len(d), -1)
    t_obj = np.stack([_INTERSECT[s.kind](o, d, s) for s in scene.objects])  # [P, N]
    k = np.argmin(t_obj, axis=0)
    t_best = t_obj[k, np.arange(len(d))]
    room_first = t_room <= t_best
    return np.where(room_first, t_room, t_best), np.where(room_first, -1, k)


def clearance(scene: Scene, points) -> np.ndarray:
    """Distance [K] (metres) from points [K,3] to the nearest wall or object surface; negative inside a solid or
    outside the room."""
    p = np.atleast_2d(np.asarray(points, dtype=np.float64))
    lo, hi = _room_bounds(scene)
    dist = np.minimum(p - lo, hi - p).min(axis=1)
    for s in scene.objects:
        c = np.asarray(s.center, float)
        if s.kind == "sphere":
            dist_s = np.linalg.norm(p - c, axis=1) - s.size[0]
        elif s.kind == "box":
            local = (p - c) @ _yaw_matrix(s.yaw_deg)
            q = np.abs(local) - np.asarray(s.size, float)
            dist_s = np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0)
        else:
            r, hh = s.size
            q = np.stack([np.hypot(p[:, 0] - c[0], p[:, 2] - c[2]) - r, np.abs(p[:, 1] - c[1]) - hh], axis=1)
            dist_s = np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0)
        dist = np.minimum(dist, dist_s)
    return dist


# ----------------------------------------------------------------------------------------------------------------
# Surfaces: normal and 2-D texture coordinates (metres along the surface) of the hit points of one surface.


def _room_surface(p, face):
    """Inward normals [M,3] and uv [M,2] on room faces."""
    axis = face // 2
    n = np.zeros_like(p)
    n[np.arange(len(p)), axis] = np.where(face % 2 == 0, 1.0, -1.0)  # the low wall faces +axis
    # Floor/ceiling use (x, z); walls use the horizontal coordinate along them and the height.
    u = np.where(axis == 0, p[:, 2], p[:, 0])
    v = np.where(axis == 1, p[:, 2], p[:, 1])
    return n, np.stack([u, v], axis=1)


def _object_surface(o, d, t, shape):
    """Outward normals [M,3] and uv [M,2] of rays d [M,3] hitting `shape` at distances t [M]."""
    p = o + t[:, None] * d
    c = np.asarray(shape.center, float)
    if shape.kind == "sphere":
        n = (p - c) / shape.size[0]
        r = shape.size[0]
        lon = np.arctan2(n[:, 2], n[:, 0])
        lat = np.arccos(np.clip(n[:, 1], -1, 1))
        return n, np.stack([r * lon, r * lat], axis=1)
    rot = _yaw_matrix(shape.yaw_deg)
    local = (p - c) @ rot
    if shape.kind == "box":
        h = np.asarray(shape.size, float)
        axis = np.argmax(np.abs(local) / h, axis=1)
        sign = np.sign(local[np.arange(len(p)), axis])
        n_local = np.zeros_like(p)
        n_local[np.arange(len(p)), axis] = sign
        # The two coordinates across the face, shifted per face so that faces do not repeat each other.
        other = np.array([[1, 2], [0, 2], [0, 1]])[axis]
        uv = np.take_along_axis(local, other, axis=1) + (axis * 7.3 + sign * 3.1)[:, None]
        return n_local @ rot.T, uv
    r, hh = shape.size
    on_cap = np.abs(np.abs(local[:, 1]) - hh) < 1e-6 * max(1.0, hh) + 1e-9
    on_cap &= np.hypot(local[:, 0], local[:, 2]) < r * (1 - 1e-9)
    radial = local * np.array([1.0, 0.0, 1.0]) / r
    n_local = np.where(on_cap[:, None], np.array([0.0, 1.0, 0.0]) * np.sign(local[:, 1:2]), radial)
    side_uv = np.stack([r * np.arctan2(local[:, 2], local[:, 0]), local[:, 1]], axis=1)
    uv = np.where(on_cap[:, None], local[:, [0, 2]] + 11.7, side_uv)
    return n_local @ rot.T, uv


# ----------------------------------------------------------------------------------------------------------------
# Textures


@functools.lru_cache(maxsize=256)
def _lattice(seed: int) -> np.ndarray:
    """Random values [P,P,L] in [0,1) that define a material's noise and per-cell variations."""
    table = np.random.default_rng(seed).random((_TABLE_SIZE, _TABLE_SIZE, _TABLE_LAYERS))
    table.setflags(write=False)
    return table


def _cell_values(table, cells, layer):
    """Per-cell random values [M] for integer cells [M,2] (the lattice repeats every _TABLE_SIZE cells)."""
    idx = np.mod(cells, _TABLE_SIZE)
    return table[idx[:, 0], idx[:, 1], layer]


def _value_noise(table, q, layer):
    """Smooth value noise [M] in [0,1] at lattice coordinates q [M,2]."""
    cell = np.floor(q)
    f = q - cell
    f = f * f * (3 - 2 * f)  # smoothstep: C1-continuous across cells, no grid creases
    cell = cell.astype(np.int64)
    v00 = _cell_values(table, cell, layer)
    v10 = _cell_values(table, cell + [1, 0], layer)
    v01 = _cell_values(table, cell + [0, 1], layer)
    v11 = _cell_values(table, cell + [1, 1], layer)
    top = v00 + (v10 - v00) * f[:, 0]
    bottom = v01 + (v11 - v01) * f[:, 0]
    return top + (bottom - top) * f[:, 1]


def _fbm(table, q, footprint, octaves, first_layer):
    """Fractal noise [M] in about [0,1]: octaves of value noise, each faded to its mean where the pixel footprint
    (in lattice units, [M]) is too coarse to resolve it, which removes the shimmer of aliased detail."""
    total = np.zeros(len(q))
    norm = 0.0
    for k in range(octaves):
        amp = 0.5 ** k
        spacing = 0.5 ** k  # lattice spacing of this octave in units of q
        visible = np.clip(spacing / np.maximum(footprint, 1e-12) - 1.0, 0.0, 1.0)
        n = _value_noise(table, q * 2 ** k + 17.31 * k, (first_layer + k) % _TABLE_LAYERS)
        total += amp * (0.5 + visible * (n - 0.5))
        norm += amp
    return total / norm


def _hsv_to_rgb(h, s, v):
    """Vectorised HSV (all [M], in 0..1) -> RGB [M,3]."""
    k = np.mod(np.array([5.0, 3.0, 1.0])[None, :] + h[:, None] * 6, 6)
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def _albedo(mat: Material, uv, footprint_m):
    """Surface colour [M,3] in 0..1 of `mat` at texture coordinates uv [M,2] (metres)."""
    colors = np.asarray(mat.colors, dtype=np.float64)
    c0 = colors[0]
    c1 = colors[1] if len(colors) > 1 else colors[0] * 0.6
    q = uv / mat.scale
    fp = footprint_m / mat.scale
    table = _lattice(int(mat.seed))
    m = len(uv)
    if mat.pattern == "flat":
        base = np.broadcast_to(c0, (m, 3)).copy()
    elif mat.pattern == "noise":
        # A narrow threshold on fractal noise: patches with crisp, irregular borders (stone, terrazzo), whose
        # corners a feature detector finds at any distance; the fading of fine octaves keeps them alias-free.
        n = _fbm(table, q, fp, octaves=4, first_layer=0)
        w = np.clip((n - 0.44) / 0.12, 0, 1)
        base = c0 + (c1 - c0) * w[:, None]
    elif mat.pattern == "checker":
        parity = np.mod(np.floor(q[:, 0]) + np.floor(q[:, 1]), 2)[:, None]
        base = c0 + (c1 - c0) * parity
    elif mat.pattern == "stripes":
        band = np.floor(q[:, 0] + 0.3 * np.sin(q[:, 1] * 0.7))
        tint = _cell_values(table, np.stack([band, np.zeros_like(band)], 1).astype(np.int64), 4)
        base = c0 + (c1 - c0) * tint[:, None]
    elif mat.pattern == "brick":
        # Bricks twice as long as high, every other row shifted by half a brick; mortar joints between them.
        row = np.floor(q[:, 1])
        x = q[:, 0] / 2 + 0.5 * np.mod(row, 2)
        col = np.floor(x)
        mortar = (x - col < 0.04) | (q[:, 1] - row < 0.08)
        tint = _cell_values(table, np.stack([col, row], 1).astype(np.int64), 5)
        brick = c0 + (c1 - c0) * tint[:, None]
        mortar_color = colors[2] if len(colors) > 2 else np.full(3, 0.8)
        base = np.where(mortar[:, None], mortar_color, brick)
    elif mat.pattern == "blobs":
        # One disc per lattice cell, at a random place inside it, in a random bright colour (or none at all).
        cell = np.floor(q)
        f = q - cell
        cell = cell.astype(np.int64)
        centre = 0.3 + 0.4 * np.stack([_cell_values(table, cell, 6), _cell_values(table, cell, 7)], axis=1)
        radius = 0.1 + 0.18 * _cell_values(table, cell, 8)
        inside = (np.sum((f - centre) ** 2, axis=1) < radius ** 2) & (_cell_values(table, cell, 9) < 0.8)
        hue_color = _hsv_to_rgb(_cell_values(table, cell, 10), 0.55 + 0.4 * _cell_values(table, cell, 11),
                                0.45 + 0.5 * _cell_values(table, cell, 6))
        base = np.where(inside[:, None], hue_color, c0)
    else:
        raise SceneError(f"unknown pattern {mat.pattern!r}; expected one of {PATTERNS}")
    if mat.detail > 0:
        # Fine brightness noise at half the pattern scale and below: texture for SIFT even inside flat areas.
        n = _fbm(table, q * 2.0 + 101.7, fp * 2.0, octaves=3, first_layer=6)
        base = base * (1.0 + 2.0 * mat.detail * (n - 0.5))[:, None]
    return base


def _irradiance(scene: Scene, p, n):
    """Lambertian light [M] reaching surface points p [M,3] with unit normals n [M,3]."""
    light = np.full(len(p), float(scene.ambient))
    for sun in scene.directional_lights:
        l = np.asarray(sun.direction, float)
        l = l / np.linalg.norm(l)
        light += sun.intensity * np.clip(n @ l, 0, None)
    for lamp in scene.point_lights:
        to_lamp = np.asarray(lamp.position, float) - p
        dist = np.linalg.norm(to_lamp, axis=1)
        cos = np.clip(np.sum(n * to_lamp, axis=1) / np.maximum(dist, 1e-9), 0, None)
        light += lamp.intensity * cos / (1.0 + (dist / lamp.falloff_m) ** 2)
    return light


# ----------------------------------------------------------------------------------------------------------------
# Rendering


def camera_rays(w2c, intrinsics, height: int, width: int, supersample: int = 1):
    """Camera centre [3] and unit world ray directions [H*s, W*s, 3] of one camera (s = supersample sub-pixels per
    pixel side, placed at the centres of an s x s grid inside each pixel)."""
    w2c = np.asarray(w2c, dtype=np.float64)
    fx, fy, cx, cy = np.asarray(intrinsics, dtype=np.float64)
    rot_w2c, t_w2c = w2c[:3, :3], w2c[:3, 3]
    centre = -rot_w2c.T @ t_w2c
    u = (np.arange(width * supersample) + 0.5) / supersample  # pixel units, centres at i + 0.5 when s = 1
    v = (np.arange(height * supersample) + 0.5) / supersample
    x = (u - cx * width) / (fx * width)
    y = (v - cy * height) / (fy * height)
    d_cam = np.stack(np.broadcast_arrays(x[None, :], y[:, None], np.ones((1, 1))), axis=-1)
    # Row vectors: d_world = R_c2w d_cam = R_w2c^T d_cam, i.e. d_cam @ R_w2c.
    d_world = d_cam @ rot_w2c
    return centre, d_world / np.linalg.norm(d_world, axis=-1, keepdims=True)


def _check_views(scene, w2c, intrinsics, height, width, supersample):
    w2c = np.asarray(w2c, dtype=np.float64)
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    if w2c.ndim != 3 or w2c.shape[1:] not in ((4, 4), (3, 4)):
        raise SceneError(f"w2c must be [T,4,4] (or [T,3,4]) world-to-camera matrices; got shape {w2c.shape}")
    if intrinsics.shape != (len(w2c), 4):
        raise SceneError(f"intrinsics must be [T,4] normalised (fx, fy, cx, cy) with T = {len(w2c)} like w2c; "
                         f"got shape {intrinsics.shape}")
    if not np.all(np.isfinite(w2c)) or not np.all(np.isfinite(intrinsics)):
        raise SceneError("w2c and intrinsics must be finite numbers; found NaN or inf")
    if np.any(intrinsics[:, :2] <= 0):
        raise SceneError(f"focal lengths fx, fy must be positive (normalised by width / height); "
                         f"got {intrinsics[:, :2].min()}")
    rot = w2c[:, :3, :3]
    err = np.abs(rot @ np.swapaxes(rot, 1, 2) - np.eye(3)).max(axis=(1, 2))
    if np.any(err > 1e-4) or np.any(np.linalg.det(rot) < 0):
        k = int(np.argmax(err > 1e-4) if np.any(err > 1e-4) else np.argmax(np.linalg.det(rot) < 0))
        raise SceneError(f"w2c[{k}] does not hold a proper rotation (max |R R^T - I| = {err[k]:.2g}, "
                         f"det = {np.linalg.det(rot[k]):.3f}); pass rigid world-to-camera matrices")
    if int(height) < 1 or int(width) < 1 or int(supersample) < 1:
        raise SceneError(f"height, width and supersample must be >= 1; got {height}, {width}, {supersample}")
    centres = -np.einsum("tji,tj->ti", rot, w2c[:, :3, 3])
    lo, hi = _room_bounds(scene)
    outside = np.any((centres <= lo) | (centres >= hi), axis=1)
    if np.any(outside):
        k = int(np.argmax(outside))
        raise SceneError(f"camera {k} is at {np.round(centres[k], 3).tolist()}, outside the room "
                         f"{lo.tolist()} .. {hi.tolist()}; this renderer only draws views from inside the room")
    return w2c, intrinsics


def render_views(scene: Scene, w2c, intrinsics, height: int, width: int, supersample: int = 2) -> np.ndarray:
    """Pictures of `scene` from cameras w2c [T,4,4] (OpenCV axes) with normalised intrinsics [T,4]
    -> uint8 [T,H,W,3]."""
    w2c, intrinsics = _check_views(scene, w2c, intrinsics, height, width, supersample)
    s = int(supersample)
    out = np.empty((len(w2c), height, width, 3), dtype=np.uint8)
    for k in range(len(w2c)):
        rgb = _render_linear(scene, w2c[k], intrinsics[k], int(height), int(width), s)
        # Box filter: the mean over each pixel's s x s sub-pixels, as a sensor integrates over the pixel's area.
        rgb = rgb.reshape(height, s, width, s, 3).mean(axis=(1, 3))
        out[k] = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out


def _render_linear(scene, w2c, intrinsics, height, width, s):
    """Colours [H*s, W*s, 3] (float, unclipped) of one camera."""
    o, d = camera_rays(w2c, intrinsics, height, width, s)
    d = d.reshape(-1, 3)
    t, surface = first_hits(scene, o, d)
    # World size of one sub-pixel at the hit (before the slant correction below), for texture anti-aliasing.
    focal_px = min(intrinsics[0] * width, intrinsics[1] * height) * s
    color = np.empty((len(d), 3))
    lo, hi = _room_bounds(scene)

    def shade(mask, n, uv, mat):
        idx = np.flatnonzero(mask)
        if mat.emissive:
            color[idx] = np.asarray(mat.colors[0], float)
            return
        slant = np.maximum(np.abs(np.sum(n * d[idx], axis=1)), 0.2)
        footprint = t[idx] / focal_px / slant
        p = o + t[idx, None] * d[idx]
        color[idx] = _albedo(mat, uv, footprint) * _irradiance(scene, p, n)[:, None]

    room = surface == -1
    if np.any(room):
        _, face = _intersect_room(o, d[room], lo, hi)
        p = o + t[room, None] * d[room]
        n, uv = _room_surface(p, face)
        room_idx = np.flatnonzero(room)
        for f, name in enumerate(ROOM_FACES):
            sel = face == f
            if np.any(sel):
                mask = np.zeros(len(d), dtype=bool)
                mask[room_idx[sel]] = True
                shade(mask, n[sel], uv[sel], scene.room_materials[name])
    for k, shape in enumerate(scene.objects):
        mask = surface == k
        if np.any(mask):
            n, uv = _object_surface(o, d[mask], t[mask], shape)
            shade(mask, n, uv, shape.material)
    return color.reshape(height * s, width * s, 3)
