"""Evaluation metrics (issue 7, spec §10): camera errors, PSNR / SSIM, Fréchet distance and FVD.

Camera errors compare a generated video's recovered cameras with the requested ones, both as camera-to-world
matrices [T,4,4] (OpenCV axes). As in CamI2V's evaluation, each trajectory is first made relative to its frame 0
(C_t = c2w_0^-1 c2w_t), which removes any rigid change of the reconstruction's world frame, and its translations
are then divided by its own largest translation norm (+1e-9), which removes the reconstruction's unknown scale.
Per video, summed over the frames (frame 0 contributes 0):

* RotErr = sum_t arccos((tr(R_gt^T R_gen) - 1) / 2), radians;
* TransErr = sum_t || t_gt - t_gen ||_2 on the normalised translations;
* CamMC = sum_t || [R|t]_gt - [R|t]_gen ||_F on the same normalised 3x4 matrices.

A similarity transform of the reconstructed world (x -> s R x + t, s > 0) therefore leaves all three unchanged.

SSIM uses scikit-image and the Fréchet distance scipy; both are imported when first needed, so the ComfyUI node
pack never needs them (`pip install scipy scikit-image`).

FVD takes the TorchScript I3D used by StyleGAN-V / DynamiCrafter's evaluation (`i3d_torchscript.pt`, loaded with
`torch.jit.load`), called as `detector(x, rescale=False, resize=False, return_features=True)` on videos
[N,3,T,224,224] in [-1, 1] (shorter side resized to 224 bilinearly, centre crop), giving 400 features per video;
the distance between the two Gaussians fitted to the features is computed here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cami2v_core.errors import CamI2VError

__all__ = ["MetricsError", "relative_c2w", "normalize_translations", "camera_errors", "psnr", "ssim",
           "frechet_distance", "gaussian_stats", "load_i3d", "i3d_features", "fvd"]

TRANSLATION_EPS = 1e-9


class MetricsError(CamI2VError, ValueError):
    """A metric that cannot be computed as asked; the message says what to do."""


def _need(module: str, pip_name: str, what: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        raise MetricsError(f"{what} needs {pip_name}: pip install {pip_name} (or pip install -r "
                           f"requirements-dev.txt)") from e


# ----------------------------------------------------------------------------------------------------------------
# Camera errors


def _as_c2w(c2w) -> np.ndarray:
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.ndim != 3 or c2w.shape[1:] not in ((4, 4), (3, 4)):
        raise MetricsError(f"cameras must be camera-to-world matrices [T,4,4] or [T,3,4]; got {c2w.shape}")
    if c2w.shape[1] == 3:
        full = np.zeros((len(c2w), 4, 4))
        full[:, :3], full[:, 3, 3] = c2w, 1.0
        c2w = full
    if not np.isfinite(c2w).all():
        raise MetricsError("cameras contain NaN or infinite values")
    return c2w


def relative_c2w(c2w) -> np.ndarray:
    """Camera-to-world matrices [T,4,4] relative to frame 0: C_t = c2w_0^-1 c2w_t (C_0 = identity)."""
    c2w = _as_c2w(c2w)
    return np.linalg.inv(c2w[0])[None] @ c2w


def normalize_translations(rel_c2w) -> np.ndarray:
    """Translations divided by the trajectory's own largest translation norm (+1e-9, so a path without
    translation keeps its zeros): the scale-free ("rel") normalisation of CamI2V's evaluation."""
    rel = np.array(rel_c2w, dtype=np.float64)
    scale = np.linalg.norm(rel[:, :3, 3], axis=-1).max() + TRANSLATION_EPS
    rel[:, :3, 3] /= scale
    return rel


def rotation_angles(r_a, r_b) -> np.ndarray:
    """Geodesic angles [T] (radians) between rotation matrices r_a [T,3,3] and r_b [T,3,3]."""
    cos = (np.einsum("tji,tji->t", r_a, r_b) - 1.0) / 2.0  # tr(R_a^T R_b)
    return np.arccos(np.clip(cos, -1.0, 1.0))


def camera_errors(gt_c2w, est_c2w) -> dict:
    """RotErr / TransErr / CamMC of estimated cameras against the requested ones (both c2w [T,4,4] in any world
    frame and scale); also the per-frame rotation angles in degrees."""
    gt, est = relative_c2w(gt_c2w), relative_c2w(est_c2w)
    if gt.shape != est.shape:
        raise MetricsError(f"{len(gt)} requested cameras but {len(est)} estimated ones")
    angles = rotation_angles(gt[:, :3, :3], est[:, :3, :3])
    gt_n, est_n = normalize_translations(gt), normalize_translations(est)
    trans = np.linalg.norm(gt_n[:, :3, 3] - est_n[:, :3, 3], axis=-1)
    mc = np.linalg.norm((gt_n[:, :3, :4] - est_n[:, :3, :4]).reshape(len(gt), 12), axis=-1)
    return {"rot_err": float(angles.sum()), "trans_err": float(trans.sum()), "cam_mc": float(mc.sum()),
            "rot_err_deg_per_frame": np.degrees(angles).round(4).tolist()}


# ----------------------------------------------------------------------------------------------------------------
# Image quality


def _as_float_frames(frames, name: str) -> np.ndarray:
    """[T,H,W,C] (or [H,W,C]) uint8 0..255 or float 0..1 -> float64 0..1 with a leading frame axis."""
    a = np.asarray(frames)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise MetricsError(f"{name} must be frames [T,H,W,C] (or one frame [H,W,C]); got shape {a.shape}")
    return a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64)


def psnr(frames, reference) -> np.ndarray:
    """Per-frame PSNR in dB [T] for images in 0..1 (or uint8): 10 log10(1 / MSE); inf for identical frames."""
    a, b = _as_float_frames(frames, "frames"), _as_float_frames(reference, "reference")
    if a.shape != b.shape:
        raise MetricsError(f"frames {a.shape} and reference {b.shape} differ in shape")
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(-1)
    with np.errstate(divide="ignore"):
        return np.where(mse == 0, np.inf, 10.0 * np.log10(1.0 / np.maximum(mse, 1e-300)))


def ssim(frames, reference) -> np.ndarray:
    """Per-frame SSIM [T] (scikit-image; Gaussian window sigma 1.5, population covariances, data range 1 -- the
    settings of Wang et al. 2004), averaged over colour channels; 1 for identical frames."""
    metrics = _need("skimage.metrics", "scikit-image", "SSIM")
    a, b = _as_float_frames(frames, "frames"), _as_float_frames(reference, "reference")
    if a.shape != b.shape:
        raise MetricsError(f"frames {a.shape} and reference {b.shape} differ in shape")
    return np.array([metrics.structural_similarity(x, y, data_range=1.0, channel_axis=-1, gaussian_weights=True,
                                                   sigma=1.5, use_sample_covariance=False) for x, y in zip(a, b)])


# ----------------------------------------------------------------------------------------------------------------
# Fréchet distance and FVD


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and sample covariance [D,D] of features [N,D] (N >= 2)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise MetricsError(f"need features [N,D] with N >= 2 to fit a Gaussian; got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)): the Fréchet (2-Wasserstein squared) distance of two
    Gaussians. A singular product gets a 1e-6 ridge on both covariances before its square root."""
    linalg = _need("scipy.linalg", "scipy", "the Fréchet distance")
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise MetricsError(f"shapes do not fit: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}")
    root = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(root).all():
        ridge = 1e-6 * np.eye(len(s1))
        root = linalg.sqrtm((s1 + ridge) @ (s2 + ridge))
    root = root.real  # imaginary parts are round-off of a product of PSD matrices
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(root))


def load_i3d(path):
    """The TorchScript I3D feature network from a user-supplied file (never downloaded here)."""
    import torch

    if path is None or not Path(path).is_file():
        raise MetricsError(f"I3D weights not found at {path!r}: FVD needs the TorchScript I3D 'i3d_torchscript.pt' "
                           f"(the file StyleGAN-V and DynamiCrafter's evaluation use); download it yourself and pass "
                           f"its path, or leave the FVD option out")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:  # noqa: BLE001 - any load failure means the same thing to the user
        raise MetricsError(f"{path} is not a TorchScript module torch.jit.load can read ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}); pass the TorchScript 'i3d_torchscript.pt'")


def _i3d_input(videos, resolution: int):
    """Videos [N,T,H,W,3] in 0..1 -> [N,3,T,res,res] in [-1,1]: shorter side to `res` (bilinear), centre crop."""
    import torch
    import torch.nn.functional as F

    v = torch.as_tensor(np.asarray(videos, dtype=np.float32))
    n, t, h, w, c = v.shape
    x = v.permute(0, 1, 4, 2, 3).reshape(n * t, c, h, w)
    scale = resolution / min(h, w)
    size = (max(resolution, math.ceil(h * scale)), max(resolution, math.ceil(w * scale)))
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    x = x[:, :, top:top + resolution, left:left + resolution]
    x = x.reshape(n, t, c, resolution, resolution).permute(0, 2, 1, 3, 4)
    return (x * 2.0 - 1.0).contiguous()


def i3d_features(videos, detector, batch_size: int = 8, resolution: int = 224) -> np.ndarray:
    """Features [N,D] of videos [N,T,H,W,3] (float 0..1 or uint8) from the TorchScript I3D."""
    import torch

    v = np.asarray(videos)
    if v.ndim != 5 or v.shape[-1] != 3:
        raise MetricsError(f"videos must be [N,T,H,W,3]; got shape {v.shape}")
    v = v.astype(np.float32) / 255.0 if v.dtype == np.uint8 else v.astype(np.float32)
    out = []
    with torch.no_grad():
        for i in range(0, len(v), batch_size):
            try:
                f = detector(_i3d_input(v[i:i + batch_size], resolution), rescale=False, resize=False,
                             return_features=True)
            except RuntimeError as e:
                raise MetricsError(f"the I3D network rejected videos of shape {v.shape[1:4]} (T, H, W): "
                                   f"{str(e).splitlines()[0] if str(e) else type(e).__name__}; the usual I3D "
                                   f"needs at least 16 frames") from e
            out.append(f.detach().double().cpu().numpy().reshape(len(f), -1))
    return np.concatenate(out)


def fvd(real_videos, fake_videos, detector, batch_size: int = 8) -> float:
    """Fréchet video distance between two sets of videos [N,T,H,W,3] (N >= 2 each) under the I3D features."""
    real = gaussian_stats(i3d_features(real_videos, detector, batch_size))
    fake = gaussian_stats(i3d_features(fake_videos, detector, batch_size))
    return frechet_distance(*real, *fake)
