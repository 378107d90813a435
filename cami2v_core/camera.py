"""Camera maths of CamI2V: relative poses, intrinsics, Plücker rays, fundamental matrices, epipolar masks.

Spec §4.4 (epipolar mask), §5.2 (MotionCtrl RT), §6 (intrinsics, Plücker, pose conventions).

Conventions (read these before touching a pose):
    Axes      OpenCV: x right, y down, z forward (into the scene). A camera looks along its +z.
    Poses     Trajectories hold world-to-camera matrices `w2c` [.., 4, 4]: X_cam = R·X_world + t (RealEstate10K,
              the original batch key `RT`). The model works with camera-to-world `c2w` = inv(w2c), made relative to
              the conditioning frame: rel_c2w[t] = inv(c2w[cond]) · c2w[t], translation × trace_scale (spec §6.3).
              That conversion happens in one place, `relative_c2w`; every variable name says its direction.
    Pairs     pairs[b, i, j] = inv(rel_c2w[j]) · rel_c2w[i] maps camera-i coordinates to camera-j coordinates; i is
              the query frame and j the key frame (spec §4.4 step 1).
    Intrinsics  `K` [.., 3, 3] is in pixels of the H×W model image. Normalised intrinsics are (fx/W, fy/H, cx/W,
              cy/H), as in RealEstate10K files and CAMERACTRL_POSES; see the `*_intrinsics` helpers (spec §6.1).
    Pixel centres  Two rules, both kept as the original has them:
              Plücker grid (spec §6.2): pixel (column i, row j) is at (i + 0.5, j + 0.5).
              Epipolar cells (spec §4.4 step 4): cell (x, y) of stride d is at (x·d + d/2 − 0.5, y·d + d/2 − 0.5)
              in pixels, i.e. the centre of its d×d block when pixel k is centred on k.
    Plücker   6 channels per pixel: [o × d, d] (moment first), o = camera centre, d = unit ray direction in the
              relative world frame; layout `b c t h w` (spec §6.2).
    Tokens    Epipolar masks index tokens frame-major, then y, then x: flat index = t·h·w + y·w + x (spec §4.3).

Precision: the original runs all of this in float32 outside autocast; the functions here compute in the dtype they
are given (float32 or float64; half precision is upcast to float32), so pass float32 to reproduce the original.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from einops import rearrange

# Spec §4.4 step 2: a pair translation counts as zero when all three |t| are below this, and is then replaced by
# this many times a standard normal draw.
ZERO_TRANSLATION_EPS = 1e-6
# Float temporaries of `epipolar_mask` are kept below this many elements per chunk (2**24 float32 = 64 MiB).
MASK_CHUNK_ELEMENTS = 2 ** 24


# -- input checks ------------------------------------------------------------------------------------------------

def _check_shape(name: str, tensor: torch.Tensor, trailing: tuple, leading: int, layout: str) -> None:
    """Raise a ValueError naming the expected layout unless `tensor` has `leading` dims then these trailing dims."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}; got {type(tensor).__name__}")
    ok = tensor.dim() == leading + len(trailing) and all(
        want is None or got == want for got, want in zip(tensor.shape[leading:], trailing))
    if not ok:
        raise ValueError(f"{name} must have shape {layout}; got {list(tensor.shape)}")


def _real(tensor: torch.Tensor) -> torch.Tensor:
    """float32/float64 stay as they are; anything else (half, bfloat16, integers) becomes float32."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


# -- poses (spec §6.3, §5.2) -------------------------------------------------------------------------------------

def relative_c2w(w2c: torch.Tensor, cond_frame_index: torch.Tensor, trace_scale: float = 1.0) -> torch.Tensor:
    """c2w relative to the conditioning frame, translation × trace_scale: w2c [B,T,4,4], index [B] -> [B,T,4,4]."""
    _check_shape("w2c", w2c, (None, 4, 4), 1, "[B, T, 4, 4] (per-frame world-to-camera)")
    w2c = _real(w2c)
    batch, frames = w2c.shape[:2]
    index = torch.as_tensor(cond_frame_index, device=w2c.device).long().reshape(-1)
    if index.numel() == 1 and batch > 1:
        index = index.expand(batch)
    if index.numel() != batch:
        raise ValueError(f"cond_frame_index must hold one frame index per sample ({batch}); got {index.numel()}")
    if bool(((index < 0) | (index >= frames)).any()):
        raise ValueError(f"cond_frame_index must lie in 0..{frames - 1} for {frames} frames; got {index.tolist()}")
    c2w = torch.linalg.inv(w2c)  # [B,T,4,4]
    c2w_ref = c2w[torch.arange(batch, device=w2c.device), index].unsqueeze(1)  # [B,1,4,4]
    rel = torch.linalg.inv(c2w_ref) @ c2w  # "left" mode: inv(c2w_ref)·c2w_t (spec §6.3)
    # Only the translation column is scaled (the gallery's "scale"); rotations are untouched.
    scale = torch.ones(4, 4, dtype=rel.dtype, device=rel.device)
    scale[:3, 3] = trace_scale
    return rel * scale


def relative_pairs(rel_c2w: torch.Tensor) -> torch.Tensor:
    """All ordered frame pairs: rel_c2w [B,T,4,4] -> [B,T,T,4,4], pairs[b,i,j] = inv(C_j)·C_i (camera i -> j)."""
    _check_shape("rel_c2w", rel_c2w, (None, 4, 4), 1, "[B, T, 4, 4] (relative camera-to-world)")
    rel_c2w = _real(rel_c2w)
    inv_j = rearrange(torch.linalg.inv(rel_c2w), "b t r c -> b 1 t r c")  # key frame j on axis 2
    c2w_i = rearrange(rel_c2w, "b t r c -> b t 1 r c")  # query frame i on axis 1
    return inv_j @ c2w_i


def motionctrl_rt(rel_c2w: torch.Tensor) -> torch.Tensor:
    """MotionCtrl's camera input: relative w2c 3x4 flattened row-major (spec §5.2): [B,T,4,4] -> [B,T,12]."""
    _check_shape("rel_c2w", rel_c2w, (None, 4, 4), 1, "[B, T, 4, 4] (relative camera-to-world)")
    rel_w2c = torch.linalg.inv(_real(rel_c2w))
    return rearrange(rel_w2c[:, :, :3, :4], "b t r c -> b t (r c)")


# -- intrinsics (spec §6.1) --------------------------------------------------------------------------------------

def intrinsics_matrix(fx, fy, cx, cy) -> torch.Tensor:
    """Pinhole matrix [[fx,0,cx],[0,fy,cy],[0,0,1]] from broadcastable numbers or tensors [...] -> [...,3,3]."""
    values = [torch.as_tensor(v) for v in (fx, fy, cx, cy)]
    dtype = torch.promote_types(torch.promote_types(values[0].dtype, values[1].dtype),
                                torch.promote_types(values[2].dtype, values[3].dtype))
    dtype = dtype if dtype.is_floating_point else torch.float32
    fx, fy, cx, cy = torch.broadcast_tensors(*(v.to(dtype) for v in values))
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    rows = [torch.stack([fx, zero, cx], -1), torch.stack([zero, fy, cy], -1), torch.stack([zero, zero, one], -1)]
    return torch.stack(rows, dim=-2)


def default_intrinsics(height: int, width: int, resized_height: int | None = None,
                       resized_width: int | None = None) -> torch.Tensor:
    """The demo's K for a height x width crop of a resized_height x resized_width picture (spec §6.1) -> float32 [3,3].

    fx = fy = 0.5·max(resized H, W), a 90° field of view across the long side of the uncropped resized picture;
    the principal point is the crop's centre. Without a resize size the crop is the whole picture.
    """
    resized_height = height if resized_height is None else resized_height
    resized_width = width if resized_width is None else resized_width
    for name, value in (("height", height), ("width", width), ("resized_height", resized_height),
                        ("resized_width", resized_width)):
        if value <= 0:
            raise ValueError(f"{name} must be a positive number of pixels; got {value}")
    focal = 0.5 * max(resized_height, resized_width)
    return intrinsics_matrix(focal, focal, 0.5 * width, 0.5 * height).float()


def normalized_to_pixel_intrinsics(normalized: torch.Tensor, height: int, width: int,
                                   resized_height: int | None = None,
                                   resized_width: int | None = None) -> torch.Tensor:
    """Normalised (fx, fy, cx, cy) [...,4] -> pixel K [...,3,3] for a height x width crop (spec §6.1, dataset path).

    As the original's dataset: focal lengths scale with the resized picture (before the centre crop), the
    principal point with the crop. Without a resize size the two are the same and this inverts
    `pixel_to_normalized_intrinsics`.
    """
    normalized = torch.as_tensor(normalized)
    _check_shape("normalized intrinsics", normalized, (4,), normalized.dim() - 1, "[..., 4] (fx, fy, cx, cy)")
    normalized = _real(normalized)
    resized_height = height if resized_height is None else resized_height
    resized_width = width if resized_width is None else resized_width
    fx, fy, cx, cy = normalized.unbind(-1)
    return intrinsics_matrix(fx * resized_width, fy * resized_height, cx * width, cy * height)


def pixel_to_normalized_intrinsics(K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel K [...,3,3] of a height x width image -> normalised (fx/W, fy/H, cx/W, cy/H) [...,4]."""
    _check_shape("K", K, (3, 3), K.dim() - 2, "[..., 3, 3] (pixel intrinsics)")
    K = _real(K)
    return torch.stack([K[..., 0, 0] / width, K[..., 1, 1] / height, K[..., 0, 2] / width, K[..., 1, 2] / height], -1)


# -- Plücker embedding (spec §6.2) -------------------------------------------------------------------------------

def plucker_embedding(rel_c2w: torch.Tensor, K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-pixel Plücker rays [o × d, d] of each frame: rel_c2w [B,T,4,4], K [B,T,3,3] px -> [B,6,T,H,W]."""
    _check_shape("rel_c2w", rel_c2w, (None, 4, 4), 1, "[B, T, 4, 4] (relative camera-to-world)")
    _check_shape("K", K, rel_c2w.shape[:2] + (3, 3), 0, f"[B, T, 3, 3] = {list(rel_c2w.shape[:2]) + [3, 3]} (pixels)")
    rel_c2w = _real(rel_c2w)
    K = K.to(rel_c2w.device, rel_c2w.dtype)
    dtype, device = rel_c2w.dtype, rel_c2w.device
    # Pixel (column i, row j) at its continuous centre (i + 0.5, j + 0.5), spec §6.2.
    rows, cols = torch.meshgrid(torch.arange(height, dtype=dtype, device=device) + 0.5,
                                torch.arange(width, dtype=dtype, device=device) + 0.5, indexing="ij")
    u, v = cols.reshape(1, 1, -1), rows.reshape(1, 1, -1)  # [1,1,H*W]
    fx, fy = K[..., 0, 0, None], K[..., 1, 1, None]  # [B,T,1]
    cx, cy = K[..., 0, 2, None], K[..., 1, 2, None]
    x_cam = (u - cx) / fx  # [B,T,H*W]
    y_cam = (v - cy) / fy
    dirs_cam = torch.stack([x_cam, y_cam, torch.ones_like(x_cam)], dim=-1)  # [B,T,H*W,3]
    dirs_cam = dirs_cam / dirs_cam.norm(dim=-1, keepdim=True)
    dirs = dirs_cam @ rel_c2w[..., :3, :3].transpose(-1, -2)  # R_c2w·d_cam for each pixel: [B,T,H*W,3]
    origins = rel_c2w[..., None, :3, 3].expand_as(dirs)  # camera centre, same for every pixel: [B,T,H*W,3]
    moments = torch.linalg.cross(origins, dirs, dim=-1)  # o × d (not d × o)
    plucker = torch.cat([moments, dirs], dim=-1)  # [B,T,H*W,6]
    return rearrange(plucker, "b t (h w) c -> b c t h w", h=height, w=width)


# -- epipolar geometry (spec §4.4) -------------------------------------------------------------------------------

def perturb_zero_translations(t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace pair translations with all |t| < 1e-6 by 1e-6·N(0, I) (spec §4.4 step 2): [B,T,T,3,1] -> same.

    One draw the shape of the whole tensor, like the original's `randn_like(t)`: with `generator=None` it consumes
    the global RNG of t's device exactly as the original does (spec §7.7); a generator draws on its own device and
    the result is moved to t's device. Non-zero translations are returned unchanged.
    """
    _check_shape("t", t, (None, None, 3, 1), 1, "[B, T, T, 3, 1] (pair translations)")
    is_zero = (t.abs() < ZERO_TRANSLATION_EPS).all(dim=-2, keepdim=True)  # [B,T,T,1,1]
    if generator is None:
        noise = torch.randn_like(t)
    else:
        noise = torch.randn(t.shape, generator=generator, dtype=t.dtype, device=generator.device).to(t.device)
    return torch.where(is_zero, noise * ZERO_TRANSLATION_EPS, t)


def fundamental_matrices(pairs: torch.Tensor, K: torch.Tensor, pair_t: torch.Tensor | None = None) -> torch.Tensor:
    """F_ij = K_j^-T [t_ij]x R_ij K_j^-1 for every pair: pairs [B,T,T,4,4], K [B,T,3,3] px -> [B,T,T,3,3].

    `pair_t` [B,T,T,3,1] replaces the pairs' translations (the perturbed ones, spec §4.4 step 2). The key frame j's
    K is used on both sides, as the original does (spec §4.4 step 3; visible only with per-frame intrinsics).
    """
    _check_shape("pairs", pairs, (None, None, 4, 4), 1, "[B, T, T, 4, 4] (relative pair poses)")
    batch, frames = pairs.shape[:2]
    _check_shape("K", K, (batch, frames, 3, 3), 0, f"[B, T, 3, 3] = {[batch, frames, 3, 3]} (pixels)")
    pairs = _real(pairs)
    rotation = pairs[..., :3, :3]  # [B,T,T,3,3]
    if pair_t is None:
        pair_t = pairs[..., :3, 3:4]
    _check_shape("pair_t", pair_t, (batch, frames, frames, 3, 1), 0,
                 f"[B, T, T, 3, 1] = {[batch, frames, frames, 3, 1]}")
    pair_t = pair_t.to(pairs.device, pairs.dtype)
    # [t]x R: t crossed with each column of R (cross product along the row axis).
    essential = torch.linalg.cross(pair_t.expand_as(rotation), rotation, dim=-2)  # [B,T,T,3,3]
    K_inv = torch.linalg.inv(K.to(pairs.device, pairs.dtype)).unsqueeze(1)  # [B,1,T,3,3]: indexed by key frame j
    return K_inv.transpose(-1, -2) @ essential @ K_inv


def cell_centres(height: int, width: int, stride: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """Homogeneous pixel centres of the stride-d cells, row-major (spec §4.4 step 4) -> [h*w, 3] (x, y, 1)."""
    ys = torch.arange(height // stride, dtype=dtype, device=device) * stride + stride / 2.0 - 0.5
    xs = torch.arange(width // stride, dtype=dtype, device=device) * stride + stride / 2.0 - 0.5
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # [h, w]
    return torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], dim=-1).reshape(-1, 3)


def epipolar_mask(F: torch.Tensor, height: int, width: int, stride: int,
                  chunk_elements: int = MASK_CHUNK_ELEMENTS) -> torch.Tensor:
    """Key cells within half a cell diagonal of each query's epipolar line: F [B,T,T,3,3] -> bool [B, T*h*w, T*h*w].

    h, w = height // stride, width // stride. mask[b, i·h·w + p, j·h·w + q] is True iff the centre of cell q of
    frame j lies at distance < stride·√2/2 pixels from the line F_ij·p (spec §4.4 steps 4-5); a NaN distance (a
    zero-length line) is False. Memory: the result is a dense bool tensor of B·L² bytes (L = T·h·w; at 256x256,
    T=16, stride 8: L = 16384, 268 MB per sample). It is filled in chunks of query rows so that each float
    temporary (two at a time) has at most `chunk_elements` elements (default 2**24, 64 MiB in float32) however
    large L is; the result does not depend on the chunk size.
    """
    _check_shape("F", F, (None, None, 3, 3), 1, "[B, T, T, 3, 3] (fundamental matrices)")
    batch, frames = F.shape[:2]
    if F.shape[2] != frames:
        raise ValueError(f"F must pair every frame with every frame, [B, T, T, 3, 3]; got {list(F.shape)}")
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a whole number of pixels >= 1; got {stride!r}")
    stride = int(stride)
    if height < stride or width < stride:
        raise ValueError(f"a {height}x{width} image has no cells of stride {stride} px; use a stride <= "
                         f"{min(height, width)} or a larger image")
    F = _real(F)
    grid = cell_centres(height, width, stride, F.dtype, F.device)  # [hw, 3]
    cells = grid.shape[0]
    length = frames * cells
    threshold = stride * math.sqrt(2) / 2  # half a cell diagonal, in pixels

    # Lines of every query cell in every key frame, normalised by the norm of (a, b): [B,T1,T2,3,hw]. Small.
    lines = F @ grid.transpose(0, 1)
    lines = lines / lines[..., :2, :].norm(dim=-2, keepdim=True)
    lines = rearrange(lines, "b i j abc p -> b (i p) j abc")  # query rows in token order: [B, L, T2, 3]

    key_x, key_y = grid[:, 0], grid[:, 1]  # [hw]
    mask = torch.empty(batch, length, length, dtype=torch.bool, device=F.device)
    rows_per_chunk = max(1, chunk_elements // max(1, batch * length))
    for start in range(0, length, rows_per_chunk):
        a, b, c = lines[:, start:start + rows_per_chunk, :, :, None].unbind(-2)  # each [B, n, T2, 1]
        # |a·x + b·y + c| for every key cell q, written out elementwise rather than as a matmul: every entry then
        # rounds the same way whatever the chunk size or device (a matmul's kernel, and so its rounding, changes
        # with the batch shape; that can flip entries lying on the threshold, golden README §4 "exact ties").
        dist = a * key_x  # [B, n, T2, hw]
        dist += b * key_y
        dist += c
        mask[:, start:start + rows_per_chunk] = rearrange(dist.abs_() < threshold, "b n j q -> b n (j q)")
    return mask


def epipolar_structures(rel_c2w: torch.Tensor, K: torch.Tensor, height: int, width: int, strides,
                        generator: torch.Generator | None = None,
                        pair_t: torch.Tensor | None = None) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Masks for several strides from one perturbation draw: rel_c2w [B,T,4,4], K [B,T,3,3] px -> (masks, pair_t).

    Returns ({stride d: bool [B, L_d, L_d]}, pair_t [B,T,T,3,1]) with L_d = T·(height // d)·(width // d).

    The zero-translation perturbation is drawn once (spec §4.4 step 2, with `generator` or the global RNG) and
    shared by all strides; `pair_t` injects a recorded draw instead. The translations used are returned so a run
    can be replayed. Memory per mask: see `epipolar_mask`.
    """
    pairs = relative_pairs(rel_c2w)  # [B,T,T,4,4]
    if pair_t is None:
        pair_t = perturb_zero_translations(pairs[..., :3, 3:4], generator)
    F = fundamental_matrices(pairs, K, pair_t)
    masks = {int(d): epipolar_mask(F, height, width, int(d)) for d in strides}
    return masks, pair_t.to(pairs.device, pairs.dtype)


def keep_key_frame(mask: torch.Tensor, frames: int, frame_index: torch.Tensor) -> torch.Tensor:
    """Only the key columns of one frame per sample: mask bool [B, L, L], frame_index [B] -> bool [B, L, L].

    The reference-frame ablation (`only_on_cond_frame`, the paper's CamCo-like row): every query keeps its
    epipolar band in the conditioning frame and nothing in the other frames. The original attends to that frame's
    tokens alone (keys = registers + the frame's h·w tokens, its mask = these columns); masking the other columns
    off gives the same softmax over the same keys, and lets every kernel run it unchanged. A query of the
    conditioning frame keeps its own-frame band, which passes through itself (spec §4.4.6).
    """
    _check_shape("mask", mask, (None, None), 1, "[B, L, L] (bool epipolar mask)")
    batch, length = mask.shape[:2]
    if mask.shape[2] != length or length % frames:
        raise ValueError(f"mask must be [B, L, L] with L = frames·h·w ({frames} frames); got {list(mask.shape)}")
    index = torch.as_tensor(frame_index, device=mask.device).long().reshape(-1)
    if index.numel() == 1 and batch > 1:
        index = index.expand(batch)
    if index.numel() != batch or bool(((index < 0) | (index >= frames)).any()):
        raise ValueError(f"frame_index must hold one frame in 0..{frames - 1} per sample ({batch}); got "
                         f"{index.tolist()}")
    keep = torch.arange(frames, device=mask.device)[None] == index[:, None]  # [B, T]: the key frame of each sample
    by_frame = rearrange(mask, "b l (t n) -> b l t n", t=frames)
    return rearrange(by_frame & keep[:, None, :, None], "b l t n -> b l (t n)")


# -- the condition the UNet receives -----------------------------------------------------------------------------

def _repeat(tensor: torch.Tensor, n: int) -> torch.Tensor:
    """[B, ...] -> [n*B, ...] as torch.cat([tensor] * n); a view (no copy) when B is 1."""
    if tensor.shape[0] == 1:
        return tensor.expand(n, *tensor.shape[1:])
    return tensor.repeat(n, *([1] * (tensor.dim() - 1)))


@dataclass
class CameraCondition:
    """Everything camera-related the UNet receives, built once per trajectory and shared by every layer and step.

    pose_features: pose-encoder outputs, one [B, C_l, T, h_l, w_l] per level (CamI2V, CameraCtrl), or None.
    epipolar_masks: pixel stride -> bool [B, L, L] (True = attend, L = T·h·w) (CamI2V), or None.
    rt: MotionCtrl's relative w2c 3x4 rows [B, T, 12], or None.
    origin_h: the pixel height the strides refer to; a block of feature height h_f uses masks[origin_h // h_f].
    """

    pose_features: list[torch.Tensor] | None = None
    epipolar_masks: dict[int, torch.Tensor] | None = None
    rt: torch.Tensor | None = None
    origin_h: int = 256

    def _map(self, fn_float, fn_mask) -> "CameraCondition":
        return dataclasses.replace(
            self,
            pose_features=None if self.pose_features is None else [fn_float(f) for f in self.pose_features],
            epipolar_masks=None if self.epipolar_masks is None else {
                d: fn_mask(m) for d, m in self.epipolar_masks.items()},
            rt=None if self.rt is None else fn_float(self.rt))

    @property
    def batch_size(self) -> int | None:
        """B of the tensors held, or None when the condition holds none."""
        for tensor in (self.rt, *(self.pose_features or ()), *(self.epipolar_masks or {}).values()):
            if tensor is not None:
                return tensor.shape[0]
        return None

    def to(self, device=None, dtype: torch.dtype | None = None) -> "CameraCondition":
        """A copy on `device` with float tensors cast to `dtype`; masks stay bool."""
        return self._map(lambda t: t.to(device=device, dtype=dtype), lambda m: m.to(device=device))

    def repeat_batch(self, n: int) -> "CameraCondition":
        """The condition for n guidance branches batched as torch.cat([x] * n): every [B, ...] -> [n*B, ...]."""
        if int(n) != n or n < 1:
            raise ValueError(f"repeat_batch needs a whole number of copies >= 1; got {n!r}")
        return self._map(lambda t: _repeat(t, int(n)), lambda m: _repeat(m, int(n)))

    def select(self, index) -> "CameraCondition":
        """The samples at `index` (an int, slice, list or long tensor) of every tensor, batch dim kept."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        elif not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long)
        return self._map(lambda t: t[index.to(t.device) if torch.is_tensor(index) else index],
                         lambda m: m[index.to(m.device) if torch.is_tensor(index) else index])


__all__ = ["CameraCondition", "relative_c2w", "relative_pairs", "motionctrl_rt", "intrinsics_matrix",
           "default_intrinsics", "normalized_to_pixel_intrinsics", "pixel_to_normalized_intrinsics",
           "plucker_embedding", "perturb_zero_translations", "fundamental_matrices", "cell_centres",
           "epipolar_mask", "epipolar_structures", "keep_key_frame", "ZERO_TRANSLATION_EPS"]
