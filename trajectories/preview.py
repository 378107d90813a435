"""Seeing a camera path before spending GPU time: a drawing of its frustums and a warped-picture animation (Pillow).

Both work in the first camera's frame (the model sees poses relative to the conditioning frame, spec §6.3), so a
path looks the same whatever world it was written in. The animation assumes the whole picture is one plane facing
the first camera `plane_depth` units ahead: real scenes have depth, so near things will move more than shown.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cami2v_core.video_io import load_rgb

from .errors import TrajectoryError
from .trajectory import Trajectory, finite_number

# Anchors of the viridis colour map (purple -> blue -> green -> yellow), interpolated linearly: frame 0 is purple.
_VIRIDIS = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float64)
MAX_FRUSTUMS = 12
_SUPERSAMPLE = 2  # draw at twice the size and downscale: Pillow's lines are not antialiased
_BACKGROUND = (255, 255, 255)
_INK = (40, 40, 40)
_GRID = (215, 215, 215)


def time_colour(fraction: float) -> tuple[int, int, int]:
    """Colour of a point in time, fraction in [0, 1] (viridis)."""
    x = min(max(float(fraction), 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(x), len(_VIRIDIS) - 2)
    c = _VIRIDIS[i] + (x - i) * (_VIRIDIS[i + 1] - _VIRIDIS[i])
    return tuple(int(round(v)) for v in c)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def frustum_corners(trajectory: Trajectory, depth: float) -> np.ndarray:
    """Image-corner points at `depth` ahead of each camera, relative to frame 0: [T,4,3] (top-left, clockwise)."""
    rel_c2w = trajectory.relative(0).c2w
    fx, fy, cx, cy = trajectory.intrinsics.T
    corners = []
    for u, v in ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)):
        cam = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(fx)], axis=-1) * depth
        corners.append(np.einsum("tij,tj->ti", rel_c2w[:, :3, :3], cam) + rel_c2w[:, :3, 3])
    return np.stack(corners, axis=1)


def draw_path(trajectory: Trajectory, size: tuple[int, int] = (960, 480), title: str | None = None) -> Image.Image:
    """Top and side views of the camera frustums, coloured by time (purple first, yellow last) -> RGB image."""
    if not isinstance(trajectory, Trajectory):
        raise TrajectoryError(f"draw_path needs a Trajectory, found {type(trajectory).__name__}")
    width, height = _size(size, minimum=(200, 120))
    s = _SUPERSAMPLE
    img = Image.new("RGB", (width * s, height * s), _BACKGROUND)
    draw = ImageDraw.Draw(img)
    font = _font(13 * s)
    centres = trajectory.relative(0).positions
    extent = float(np.ptp(centres, axis=0).max()) if len(trajectory) > 1 else 0.0
    depth = 0.15 * extent if extent > 1e-9 else 1.0
    corners = frustum_corners(trajectory, depth)
    header = 22 * s if title else 0
    bar = 34 * s
    if title:
        draw.text((8 * s, 4 * s), title, fill=_INK, font=font)
    panel_h = height * s - header - bar
    views = (("top view: x right, z forward", lambda p: np.stack([p[..., 0], p[..., 2]], -1)),
             ("side view: z forward, y up", lambda p: np.stack([p[..., 2], -p[..., 1]], -1)))
    for k, (label, project) in enumerate(views):
        box = (k * width * s // 2, header, (k + 1) * width * s // 2, header + panel_h)
        _draw_view(draw, box, label, project(centres), project(corners), font, s)
    _draw_colour_bar(draw, (0, height * s - bar, width * s, height * s), len(trajectory), font, s)
    return img.resize((width, height), Image.LANCZOS)


def _size(size, minimum: tuple[int, int]) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise TrajectoryError(f"size must be (width, height) in pixels, found {size!r}", field="size") from None
    if w < minimum[0] or h < minimum[1] or w > 8192 or h > 8192:
        raise TrajectoryError(f"size must be between {minimum} and (8192, 8192), found {(w, h)}", field="size")
    return w, h


def _draw_view(draw, box, label, centres2d, corners2d, font, s):
    """One panel: grid axes through the first camera, the path, then frustums in time order."""
    x0, y0, x1, y1 = box
    margin = 18 * s
    top = y0 + 20 * s
    points = np.concatenate([centres2d, corners2d.reshape(-1, 2)])
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = np.maximum(hi - lo, 1e-9)
    scale = min((x1 - x0 - 2 * margin) / span[0], (y1 - top - margin) / span[1])
    mid = (lo + hi) / 2
    cx, cy = (x0 + x1) / 2, (top + y1 - margin) / 2 + margin / 2

    def px(p):
        return (float(cx + (p[0] - mid[0]) * scale), float(cy - (p[1] - mid[1]) * scale))  # screen y points down

    ox, oy = px(np.zeros(2))
    draw.line([(x0 + margin / 2, oy), (x1 - margin / 2, oy)], fill=_GRID, width=s)
    draw.line([(ox, top), (ox, y1 - margin / 2)], fill=_GRID, width=s)
    draw.text((x0 + 8 * s, y0 + 2 * s), label, fill=_INK, font=font)
    count = len(centres2d)
    for t in range(count - 1):  # the path of the camera centre, coloured by time
        draw.line([px(centres2d[t]), px(centres2d[t + 1])], fill=time_colour(t / max(count - 2, 1)), width=2 * s)
    step = -(-count // MAX_FRUSTUMS)  # at most about MAX_FRUSTUMS frustums, always the first and the last
    for t in sorted(set(range(0, count, step)) | {count - 1}):
        colour = time_colour(t / (count - 1) if count > 1 else 0.0)
        c = px(centres2d[t])
        quad = [px(p) for p in corners2d[t]]
        for q in quad:
            draw.line([c, q], fill=colour, width=s)
        draw.line(quad + [quad[0]], fill=colour, width=s)
        draw.line([quad[0], quad[1]], fill=colour, width=3 * s)  # the image's top edge: shows roll and flips
    r = 3 * s
    first = px(centres2d[0])
    draw.ellipse([first[0] - r, first[1] - r, first[0] + r, first[1] + r], outline=_INK, width=s)
    draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=_GRID, width=s)


def _draw_colour_bar(draw, box, count, font, s):
    x0, y0, x1, y1 = box
    left, right = x0 + 70 * s, x1 - 90 * s
    for i in range(int(right - left)):
        colour = time_colour(i / max(right - left - 1, 1))
        draw.line([(left + i, y0 + 8 * s), (left + i, y1 - 12 * s)], fill=colour)
    draw.text((x0 + 8 * s, y0 + 8 * s), "frame 0", fill=_INK, font=font)
    draw.text((right + 8 * s, y0 + 8 * s), f"frame {count - 1}", fill=_INK, font=font)


# -- planar-scene animation ------------------------------------------------------------------------------------

def warp_preview(image, trajectory: Trajectory, plane_depth: float = 2.0, size: int = 256,
                 use_trajectory_intrinsics: bool = False, background=(40, 40, 40)) -> list[Image.Image]:
    """What each camera would see if the picture were a plane `plane_depth` ahead of the first one -> T RGB frames.

    image: PIL image or array [H,W,3|4] (uint8, or float in 0..1); scaled so its long side is `size`. Intrinsics as
    the pipeline uses them: by default the demo's (90° across the long side, every frame, spec §6.1, so focal zooms
    do not show), or the trajectory's own normalised intrinsics times the picture size.
    """
    if not isinstance(trajectory, Trajectory):
        raise TrajectoryError(f"warp_preview needs a Trajectory, found {type(trajectory).__name__}")
    depth = finite_number(plane_depth, "plane_depth")
    if depth <= 0:
        raise TrajectoryError(f"the picture plane must be ahead of the camera (> 0), found {depth}",
                              field="plane_depth")
    src = _rgb_array(image, size)
    h, w = src.shape[:2]
    if use_trajectory_intrinsics:
        k = trajectory.pixel_intrinsics(w, h)
    else:
        f = 0.5 * max(w, h)
        k = np.tile(np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]]), (len(trajectory), 1, 1))
    rel_w2c = trajectory.relative(0).w2c  # frame-0 camera coordinates -> frame-t camera coordinates
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    pix = np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3)
    frames = []
    for t in range(len(trajectory)):
        rot, trans = rel_w2c[t, :3, :3], rel_w2c[t, :3, 3]
        inv_rot = np.linalg.inv(rot)
        centre = -inv_rot @ trans  # camera t's centre in frame-0 coordinates
        rays = pix @ np.linalg.inv(k[t]).T @ inv_rot.T  # camera t's pixel rays in frame-0 axes
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = (depth - centre[2]) / rays[:, 2]  # where each ray meets the plane z = depth
        hit = np.isfinite(dist) & (dist > 0)
        points = centre + np.where(hit, dist, 0.0)[:, None] * rays
        proj = points @ k[0].T
        su, sv = proj[:, 0] / depth - 0.5, proj[:, 1] / depth - 0.5  # continuous source pixel indices
        frames.append(Image.fromarray(_bilinear(src, su, sv, hit, background).reshape(h, w, 3)))
    return frames


def _rgb_array(image, size) -> np.ndarray:
    """Any supported picture -> uint8 [H,W,3] with the long side `size`."""
    size = int(finite_number(size, "size"))
    if not 16 <= size <= 4096:
        raise TrajectoryError(f"size must be between 16 and 4096 pixels, found {size}", field="size")
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    if isinstance(image, Image.Image):
        arr = load_rgb(image)
    else:
        arr = np.asarray(image)
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
            raise TrajectoryError(f"expected a picture [H,W,3] or [H,W,4], found shape {list(arr.shape)}",
                                  field="image")
        if arr.dtype != np.uint8:
            arr = np.clip(np.nan_to_num(arr.astype(np.float64)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(arr[..., :3]))
    scale = size / max(image.size)
    new = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    return np.asarray(image.resize(new, Image.BICUBIC), dtype=np.float64)


def _bilinear(src: np.ndarray, x: np.ndarray, y: np.ndarray, valid: np.ndarray, background) -> np.ndarray:
    """Sample src [H,W,3] at continuous indices (x, y) [N]; outside the picture or invalid -> background."""
    h, w = src.shape[:2]
    inside = valid & (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)
    x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = src[y0, x0] * (1 - fx) + src[y0, x1] * fx
    bottom = src[y1, x0] * (1 - fx) + src[y1, x1] * fx
    out = top * (1 - fy) + bottom * fy
    out[~inside] = background
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def save_animation(frames: list[Image.Image], path, fps: float = 8.0) -> None:
    """Write frames as a looping GIF."""
    if not frames:
        raise TrajectoryError("no frames to save")
    fps = finite_number(fps, "fps")
    if fps <= 0:
        raise TrajectoryError(f"fps must be > 0, found {fps}", field="fps")
    frames[0].save(path, save_all=True, append_images=list(frames[1:]), duration=int(round(1000 / fps)), loop=0)
