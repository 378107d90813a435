"""RealCam-I2V's scene: metric depth of the input picture, a depth-aware preview along the camera path, and
scene-constrained noise shaping (realcam spec §3, §4). Pure torch; `transformers` is imported only to load a depth
model, and nothing here needs Open3D or a display.

Conventions are camera.py's: OpenCV axes (x right, y down, z forward), trajectories hold world-to-camera `w2c`, K is
in pixels of the H x W model frame. Two points of this module's own:
    Unprojection  pixel (column u, row v) with its integer indices, no +0.5 (realcam spec §4.1, §8):
                  X = depth·((u - cx)/fx, (v - cy)/fy, 1), in the conditioning camera's frame.
    Preview poses the scene lives in the conditioning camera's frame, so frame i is rendered with
                  w2c_i = inv(rel_c2w_i), rel_c2w the trajectory relative to the conditioning frame with its
                  translation × trace_scale (camera.relative_c2w, the model's own camera input, realcam spec §4.2).
                  RealCam-I2V reads those translations as metres (realcam spec §3), so the depth must be metric.

Depth models (Depth Anything V2 metric, fine-tuned on Hypersim = "Indoor", max depth 20 m, realcam spec §3). Pick by
licence: `small` (25 M parameters, 99 MB) is Apache-2.0; `base` (98 M, 390 MB) and `large` (335 M, 1.34 GB, the one
RealCam-I2V runs) are CC-BY-NC-4.0, non-commercial only (realcam spec §6).

Noise shaping (off unless asked for, as upstream): at every DDIM step whose DDPM timestep t >= `from_timestep`
(900 by default: 3 of 25 trailing steps), before the UNet call, the latent pixels the render sees are replaced by
q_sample(S, t): x_t <- M·q(S, t) + (1 - M)·x_t, S the VAE latent of the renders (the conditioning frame's replaced by
the picture's own latent) and M the visibility eroded 5x5, resized to the latent grid and kept where >= 0.9
(realcam spec §4.3-4.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from .camera import relative_c2w
from .errors import CamI2VError
from .sampling import q_sample, randn

# Hugging Face repositories (transformers format) of Depth Anything V2 metric-indoor (Hypersim), by licence note.
DEPTH_MODELS = {
    "small": "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf",  # Apache-2.0
    "base": "depth-anything/Depth-Anything-V2-Metric-Indoor-Base-hf",    # CC-BY-NC-4.0 (non-commercial)
    "large": "depth-anything/Depth-Anything-V2-Metric-Indoor-Large-hf",  # CC-BY-NC-4.0; RealCam-I2V's own
}
DEPTH_LICENCES = {"small": "Apache-2.0", "base": "CC-BY-NC-4.0", "large": "CC-BY-NC-4.0"}
# The depth network's input: ImageNet statistics, sides rounded to a multiple of its 14-pixel patches (spec §3).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEPTH_PATCH = 14
# Upstream's noise-shaping settings (realcam spec §4.4-4.5).
NOISE_SHAPING_FROM_TIMESTEP = 900
MASK_ERODE = 5
MASK_THRESHOLD = 0.9
# Open3D's statistical outlier removal as upstream calls it (realcam spec §4.1).
OUTLIER_NEIGHBOURS = 16
OUTLIER_STD_RATIO = 3.0
OUTLIER_WINDOW = 9  # neighbours are looked for in this image window around each pixel (see remove_outliers)


class SceneError(CamI2VError, ValueError):
    """Depth, picture or camera inputs the scene code cannot use; the message says what to do."""


# -- metric depth (realcam spec §3) ----------------------------------------------------------------------------------

def load_depth_model(name: str = "small", device=None, dtype: torch.dtype = torch.float32,
                     local_files_only: bool = False, cache_dir=None):
    """A Depth Anything V2 metric model through transformers: `name` is small / base / large (`DEPTH_MODELS`; small
    is Apache-2.0, base and large CC-BY-NC-4.0), a Hugging Face repository id or a local folder."""
    try:
        from transformers import AutoModelForDepthEstimation
    except ImportError:
        raise SceneError("metric depth needs the transformers package: pip install transformers") from None
    repo = DEPTH_MODELS.get(name, name)
    try:
        model = AutoModelForDepthEstimation.from_pretrained(str(repo), local_files_only=local_files_only,
                                                            cache_dir=cache_dir)
    except (OSError, ValueError) as e:
        raise SceneError(f"could not load the depth model {str(repo)!r} ({type(e).__name__}: {e}). Use one of "
                         f"{', '.join(DEPTH_MODELS)}, a Hugging Face repository id, or a folder holding its "
                         f"config.json and model.safetensors (download it once with network access).") from None
    check_depth_model(model)
    return model.to(device, dtype).eval()


def check_depth_model(model) -> None:
    """Refuse a depth model that does not predict metres (a relative Depth Anything gives disparity)."""
    kind = getattr(getattr(model, "config", None), "depth_estimation_type", "metric")
    if kind != "metric":
        raise SceneError(f"the depth model predicts {kind!r} depth, not metres; RealCam-I2V's scene needs a metric "
                         f"model such as {DEPTH_MODELS['small']}")


def depth_input_size(height: int, width: int) -> tuple[int, int]:
    """The depth network's input size: each side rounded to the nearest multiple of 14 (252 for 256, 322x518 for
    320x512; realcam spec §3), at least 14."""
    # Round half to even, as numpy's round in the original.
    return tuple(max(DEPTH_PATCH, DEPTH_PATCH * round(s / DEPTH_PATCH)) for s in (height, width))


def estimate_depth(depth_model, pixels: torch.Tensor) -> torch.Tensor:
    """Metric depth in metres of pictures [B,3,H,W] in [-1,1] -> [B,H,W] float32 on the pictures' device.

    As RealCam-I2V (realcam spec §3): to [0,1], bilinear (align_corners) to `depth_input_size`, ImageNet-normalised;
    the prediction is resized back bilinearly (align_corners). `depth_model(x)` returns a tensor [B,h,w] or an
    output with `.predicted_depth` (transformers)."""
    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[1] != 3:
        raise SceneError(f"pictures must be a tensor [B,3,H,W] in [-1,1]; got "
                         f"{tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__}")
    check_depth_model(depth_model)
    height, width = pixels.shape[-2:]
    param = next(iter(depth_model.parameters()), None) if hasattr(depth_model, "parameters") else None
    device = param.device if param is not None else pixels.device
    dtype = param.dtype if param is not None else torch.float32
    x = (pixels.float() + 1) / 2
    x = F.interpolate(x, size=depth_input_size(height, width), mode="bilinear", align_corners=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).reshape(1, 3, 1, 1)
    x = (x - mean) / std
    with torch.no_grad():
        out = depth_model(x.to(device, dtype))
    depth = getattr(out, "predicted_depth", out)
    if depth.ndim == 4 and depth.shape[1] == 1:
        depth = depth[:, 0]
    depth = F.interpolate(depth[:, None].float(), size=(height, width), mode="bilinear", align_corners=True)
    return depth[:, 0].to(pixels.device)


# -- point cloud (realcam spec §4.1) ----------------------------------------------------------------------------------

def unproject(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera-frame points of a depth map [H,W] with intrinsics K [3,3], integer pixel indices -> [H,W,3]."""
    height, width = depth.shape
    K = K.to(depth.device, depth.dtype)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    v, u = torch.meshgrid(torch.arange(height, device=depth.device, dtype=depth.dtype),
                          torch.arange(width, device=depth.device, dtype=depth.dtype), indexing="ij")
    return torch.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], dim=-1)


def remove_outliers(points: torch.Tensor, neighbours: int = OUTLIER_NEIGHBOURS,
                    std_ratio: float = OUTLIER_STD_RATIO, window: int = OUTLIER_WINDOW) -> torch.Tensor:
    """Statistical outlier removal of a depth-map point cloud [H,W,3] -> keep mask [H,W] bool.

    Open3D's rule (realcam spec §4.1): a point stays when its mean distance to its `neighbours` nearest points is
    at most mean + std_ratio·std of that quantity over the cloud. The neighbours are looked for among the points of
    the window x window image neighbourhood rather than the whole cloud: a depth map's 3-D neighbours are its image
    neighbours except across depth edges, where a point's distances grow all the same, which is what flags it."""
    height, width, _ = points.shape
    r = window // 2
    padded = F.pad(rearrange(points, "h w c -> 1 c h w"), (r, r, r, r), value=float("nan"))[0]
    dists = []
    for dy in range(window):
        for dx in range(window):
            if dy == r and dx == r:
                continue
            other = padded[:, dy:dy + height, dx:dx + width]
            dists.append((points - rearrange(other, "c h w -> h w c")).norm(dim=-1))
    dists = torch.stack(dists)  # [window²-1, H, W]; NaN outside the picture
    dists = torch.where(torch.isfinite(dists), dists, torch.full_like(dists, math.inf))
    k = min(neighbours, dists.shape[0])
    mean_dist = dists.topk(k, dim=0, largest=False).values.mean(dim=0)  # [H,W], inf with fewer than k neighbours
    finite = torch.isfinite(mean_dist)
    if int(finite.sum()) < 2:
        return finite
    values = mean_dist[finite]
    threshold = values.mean() + std_ratio * values.std()
    return finite & (mean_dist <= threshold)


# -- point splatting -------------------------------------------------------------------------------------------------

def render_points(points: torch.Tensor, colors: torch.Tensor, w2c: torch.Tensor, K: torch.Tensor, height: int,
                  width: int, point_size: int = 2, depth_tolerance: float = 0.01):
    """Splat coloured points [N,3], colours [N,C] seen by cameras w2c [T,4,4] with K [3,3] into H x W pictures
    -> (frames [T,H,W,C] on a black background, visibility masks [T,H,W] bool).

    Each point covers a point_size x point_size square of pixels around its projection (Open3D's point size,
    realcam spec §4.2). A z-buffer keeps, per pixel, the nearest depth (scatter_reduce amin); among the points within
    `depth_tolerance` (relative) of it, the one projecting closest to the pixel wins, then the lowest index, so a
    surface seen from its own camera comes back pixel for pixel while a nearer surface still hides a farther one."""
    if points.ndim != 2 or points.shape[-1] != 3 or colors.ndim != 2 or colors.shape[0] != points.shape[0]:
        raise SceneError(f"points must be [N,3] with colours [N,C]; got {tuple(points.shape)} and "
                         f"{tuple(colors.shape)}")
    if w2c.ndim != 3 or w2c.shape[-2:] != (4, 4):
        raise SceneError(f"w2c must be per-frame world-to-camera matrices [T,4,4]; got {tuple(w2c.shape)}")
    if isinstance(point_size, bool) or int(point_size) != point_size or point_size < 1:
        raise SceneError(f"point_size must be a whole number of pixels >= 1; got {point_size!r}")
    point_size = int(point_size)
    device, dtype = points.device, points.dtype if points.dtype == torch.float64 else torch.float32
    points, w2c, K = points.to(dtype), w2c.to(device, dtype), K.to(device, dtype)
    n_pix = height * width
    offsets = torch.arange(point_size, device=device)
    oy, ox = (o.reshape(-1) for o in torch.meshgrid(offsets, offsets, indexing="ij"))  # [s²]
    point_index = torch.arange(points.shape[0], device=device).repeat_interleave(point_size ** 2)
    frames = colors.new_zeros(w2c.shape[0], n_pix, colors.shape[-1])
    masks = torch.zeros(w2c.shape[0], n_pix, dtype=torch.bool, device=device)
    for i, pose in enumerate(w2c):
        cam = points @ pose[:3, :3].T + pose[:3, 3]  # [N,3] camera coordinates
        z = cam[:, 2]
        uvw = cam @ K.T
        # Points on or behind the camera plane project nowhere (their z is replaced so the division stays finite).
        front = z > 1e-6
        safe_z = torch.where(front, uvw[:, 2], torch.ones_like(z))
        u, v = uvw[:, 0] / safe_z, uvw[:, 1] / safe_z
        # The s x s pixels whose centres lie within s/2 of the projection: s=1 is the nearest pixel.
        u0 = torch.floor(u + 1 - point_size / 2)
        v0 = torch.floor(v + 1 - point_size / 2)
        px = (u0[:, None] + ox).reshape(-1)  # [N·s²]
        py = (v0[:, None] + oy).reshape(-1)
        dist2 = ((px - u.repeat_interleave(point_size ** 2)) ** 2 + (py - v.repeat_interleave(point_size ** 2)) ** 2)
        zs = z.repeat_interleave(point_size ** 2)
        ok = front.repeat_interleave(point_size ** 2) & (px >= 0) & (px < width) & (py >= 0) & (py < height)
        # Samples off the picture go to one extra bin (index n_pix), dropped at the end: no boolean indexing.
        pix = torch.where(ok, py * width + px, torch.full_like(px, n_pix)).long()
        inf = torch.full((n_pix + 1,), math.inf, device=device, dtype=dtype)
        zmin = inf.scatter_reduce(0, pix, zs, "amin")
        near = zs <= zmin[pix] * (1 + depth_tolerance)
        dmin = inf.scatter_reduce(0, pix, torch.where(near, dist2, torch.full_like(dist2, math.inf)), "amin")
        win = near & (dist2 == dmin[pix])
        none = points.shape[0]
        best = torch.full((n_pix + 1,), none, device=device, dtype=torch.long)
        best = best.scatter_reduce(0, pix, torch.where(win, point_index, torch.full_like(point_index, none)),
                                   "amin")[:n_pix]
        seen = best < none
        if none:
            frames[i] = torch.where(seen[:, None], colors[best.clamp(max=none - 1)], frames[i])
        masks[i] = seen
    return (rearrange(frames, "t (h w) c -> t h w c", h=height),
            rearrange(masks, "t (h w) -> t h w", h=height))


# -- the preview -----------------------------------------------------------------------------------------------------

@dataclass
class ScenePreview:
    """The input picture's point cloud rendered along the camera path (realcam spec §4.1-4.2)."""

    frames: torch.Tensor   # [T,H,W,3] float 0..1, black where nothing is seen
    masks: torch.Tensor    # [T,H,W] bool, pixels some point landed on
    depth: torch.Tensor    # [H,W] metres, the depth the scene was built from
    K: torch.Tensor        # [3,3] pixel intrinsics of the picture and of every render
    w2c: torch.Tensor      # [T,4,4] render poses, in the conditioning camera's frame (metric with trace_scale)
    cond_frame_index: int = 0


def preview_poses(w2c: torch.Tensor, cond_frame_index: int = 0, trace_scale: float = 1.0) -> torch.Tensor:
    """Render poses of a trajectory w2c [T,4,4]: inv(rel_c2w) relative to the conditioning frame, translation ×
    trace_scale (the model's own relative poses, camera.relative_c2w) -> [T,4,4]; the conditioning frame's is I."""
    rel = relative_c2w(w2c[None], torch.tensor([int(cond_frame_index)]), trace_scale)[0]
    return torch.linalg.inv(rel)


def preview_scene(colors: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor,
                  cond_frame_index: int = 0, trace_scale: float = 1.0, point_size: int = 2,
                  outliers: bool = True) -> ScenePreview:
    """Depth-aware preview: picture colours [H,W,3] in 0..1 with metric depth [H,W] and intrinsics K [3,3],
    unprojected and rendered along the trajectory w2c [T,4,4] seen from its conditioning frame -> ScenePreview.

    `outliers=True` drops flying points first (`remove_outliers`), as upstream."""
    if colors.ndim != 3 or colors.shape[-1] != 3:
        raise SceneError(f"the picture must be [H,W,3] colours in 0..1; got shape {tuple(colors.shape)}")
    if tuple(depth.shape) != tuple(colors.shape[:2]):
        raise SceneError(f"the depth map must be [H,W] = {tuple(colors.shape[:2])}, the picture's size; got "
                         f"{tuple(depth.shape)}. Estimate it from the same picture (estimate_depth).")
    if tuple(K.shape) != (3, 3):
        raise SceneError(f"K must be the 3x3 pixel intrinsics of the picture; got shape {tuple(K.shape)}")
    w2c = torch.as_tensor(w2c)
    if w2c.ndim != 3 or w2c.shape[-2:] != (4, 4) or not 0 <= int(cond_frame_index) < w2c.shape[0]:
        raise SceneError(f"w2c must be [T,4,4] with cond_frame_index in 0..T-1; got {tuple(w2c.shape)} and "
                         f"{cond_frame_index!r}")
    depth = depth.float()
    height, width = depth.shape
    points = unproject(depth, K.float())
    keep = torch.isfinite(depth) & (depth > 0)
    if outliers:
        keep &= remove_outliers(points)
    poses = preview_poses(w2c.float().to(depth.device), cond_frame_index, trace_scale)
    frames, masks = render_points(points[keep], colors.float().to(depth.device)[keep], poses, K.float(), height,
                                  width, point_size)
    return ScenePreview(frames, masks, depth, K.float(), poses, int(cond_frame_index))


# -- noise shaping (realcam spec §4.3-4.5) ---------------------------------------------------------------------------

def latent_mask(masks: torch.Tensor, latent_hw: tuple[int, int], erode: int = MASK_ERODE,
                threshold: float = MASK_THRESHOLD) -> torch.Tensor:
    """Latent pixels to shape, from render visibility [T,H,W]: eroded erode x erode (a pixel stays when all its
    neighbours are seen, reflect padding), bilinear (align_corners) to the latent grid, kept >= threshold -> [T,h,w]
    bool (realcam spec §4.4)."""
    m = masks.float()[:, None]  # [T,1,H,W]
    if erode > 1:
        r = erode // 2
        m = -F.max_pool2d(-F.pad(m, (r, r, r, r), mode="reflect"), erode, stride=1)
    m = F.interpolate(m, size=tuple(latent_hw), mode="bilinear", align_corners=True)
    return m[:, 0] >= threshold


@dataclass
class NoiseShaping:
    """Scene-constrained noise shaping for `pipeline.sample_latent` (off when not given; realcam spec §4.5)."""

    preview: ScenePreview
    from_timestep: int = NOISE_SHAPING_FROM_TIMESTEP  # shape every DDIM step whose DDPM timestep t >= this
    # q_sample's noise for a shaped step, noise_fn(t, x) -> like x; None draws it from the shaping generator
    # (pipeline.shaping_generator). For replays and tests.
    noise_fn: Callable[[int, torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self):
        if isinstance(self.from_timestep, bool) or int(self.from_timestep) != self.from_timestep \
                or self.from_timestep < 0:
            raise SceneError(f"from_timestep must be a whole DDPM timestep >= 0 (900 is upstream's, 1000 shapes "
                             f"nothing); got {self.from_timestep!r}")


def noise_shaping_hook(scene_latent: torch.Tensor, mask: torch.Tensor, sqrt_alphas_cumprod: torch.Tensor,
                       sqrt_one_minus_alphas_cumprod: torch.Tensor, from_timestep: int = NOISE_SHAPING_FROM_TIMESTEP,
                       noise_fn: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
                       generator: torch.Generator | None = None):
    """The `latent_hook(x_t, t) -> x_t` of `sampling.sample_ddim` that shapes the noise: for t >= from_timestep,
    x_t <- where(mask, q_sample(scene_latent, t), x_t) (realcam spec §4.5, ratio 1).

    scene_latent [B,C,T,h,w] scaled; mask broadcastable to it (e.g. [T,h,w] from `latent_mask`); the schedule's
    float32 √ᾱ and √(1-ᾱ) [N] (the model's buffers). The noise is fresh each shaped step: noise_fn(t, x) or a
    draw from `generator`."""
    mask = mask.bool()

    def hook(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        step = int(t.reshape(-1)[0])
        if step < from_timestep:
            return x
        noise = noise_fn(step, x) if noise_fn is not None else randn(x.shape, generator, x.device, x.dtype)
        target = q_sample(scene_latent.to(x.device, x.dtype), t, sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod,
                          noise.to(x.device, x.dtype))
        return torch.where(mask.to(x.device), target, x)

    return hook
