"""Image + prompt + camera trajectory -> video frames: the one path the command line, the nodes and the tests share.

Steps (spec §6.1, §7.1, §7.7): the picture is resized to cover the model resolution and centre-cropped; intrinsics
default to the demo's (90° across the long side); text and image contexts are encoded for every guidance branch
that will run; the conditioning frame's latent is a VAE posterior sample; the camera condition is built once; then
DDIM (`sampling.sample_ddim`, the reference) or a fewer-step solver (`sampler="dpmpp_2m"` or `"unipc"`) runs and the
latent is decoded in chunks of frames.

Random draws come from one seeded generator in the original's order (spec §7.7): VAE posterior noise for all T
frames, CamI2V's zero-translation perturbation, x_T, then one N(0, I) per DDIM step (the deterministic solvers draw
none after x_T, so a seed gives every sampler the same x_T). `Draws` injects recorded values instead (golden
replay). The generator lives on the CPU, so a seed gives the same video on any device. RealCam-I2V's noise shaping
(`scene.NoiseShaping`, off by default) draws from a second stream (`shaping_generator`), so it leaves those draws
unchanged.

For ComfyUI the steps are also exposed separately: `sample_latent` returns the final latent, `decode_latent` decodes
one, and `to_comfy_latent` / `from_comfy_latent` convert to and from the SD-style LATENT dict.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat

from . import camera as camera_maths
from . import scene, settings
from .sampling import (SAMPLERS, Guidance, StepInfo, make_ddim_schedule, randn, sample_ddim, sample_dpmpp_2m,
                       sample_unipc)
from .errors import CamI2VError
from .settings import DEFAULTS
from .video_io import load_rgb

# The gradio demo's prompts (spec §6.5 step 5), defined with the presets whose defaults they are.
DEMO_NEGATIVE_PROMPT = settings.DEMO_NEGATIVE_PROMPT
DEMO_PROMPT_SUFFIX = settings.DEMO_PROMPT_SUFFIX
# The 512 models are conditioned on fps = floor(source fps / frame stride), with the demo's source fps (spec §7.1).
SOURCE_FPS = DEFAULTS.source_fps
# Submodules that only run before (encoders, pose encoder) or after (VAE decoder) the denoising loop.
ENCODER_MODULES = ("cond_stage_model", "embedder", "image_proj_model", "first_stage_model", "pose_encoder")
# ComfyUI's SD1.x latent -> RGB projection (comfy/latent_formats.py, SD15): DynamiCrafter uses the same KL-f8 VAE.
LATENT_RGB_FACTORS = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
                      (-0.2120, -0.2616, -0.7177))


class PipelineError(CamI2VError, ValueError):
    """Inputs the pipeline cannot use; the message says what was expected, what was found and what to do."""


# -- image preprocessing (spec §6.1) ---------------------------------------------------------------------------------

@dataclass
class PreparedImage:
    """The conditioning picture at model resolution and its default intrinsics."""

    pixels: torch.Tensor          # [1,3,H,W] float32 in [-1, 1]
    K: torch.Tensor               # [3,3] float32 intrinsics in pixels of the H x W crop (spec §6.1)
    resized_hw: tuple[int, int]   # size after the resize, before the centre crop

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[-2]), int(self.pixels.shape[-1])


def image_to_uint8(image) -> torch.Tensor:
    """A picture (PIL image, uint8 or 0..1 float array/tensor [H,W,C] or [1,H,W,C]) -> uint8 [3,H,W] on the CPU."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image
        image = load_rgb(image)
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.array(image, copy=True))
    if not isinstance(image, torch.Tensor):
        raise PipelineError("the image must be a PIL image, a numpy array or a torch tensor; got "
                            f"{type(image).__name__}")
    image = image.detach().cpu()
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise PipelineError(f"the image must be [H,W,C] (or [1,H,W,C]) with 1, 3 or 4 channels; got shape "
                            f"{tuple(image.shape)}. For a batch of images, run one at a time.")
    if image.is_floating_point():
        if not bool(torch.isfinite(image).all()):
            raise PipelineError("the image contains NaN or infinite values")
        # Float pictures (ComfyUI IMAGE) are 0..1; the original resizes uint8 pictures, so quantise first.
        image = image.float().clamp(0, 1).mul(255).round().to(torch.uint8)
    elif image.dtype != torch.uint8:
        image = image.clamp(0, 255).to(torch.uint8)
    if image.shape[-1] == 1:
        image = image.expand(-1, -1, 3)
    return rearrange(image[..., :3], "h w c -> c h w").contiguous()


def target_size(image_hw: tuple[int, int], model_hw: tuple[int, int]) -> tuple[int, int]:
    """The (H, W) to generate at: the model's, swapped for a portrait picture (spec §6.1)."""
    h0, w0 = image_hw
    height, width = model_hw
    if w0 / h0 < 1 and width > height:
        return width, height
    return height, width


FIT_MODES = ("crop", "pad", "stretch")


def prepare_image(image, height: int, width: int, fit: str = "crop") -> PreparedImage:
    """Fit a picture to H x W, map to [-1,1] and give its default intrinsics (spec §6.1 for fit="crop").

    crop: resize to cover H x W (bilinear + antialias) and centre-crop (the original's). pad: resize to fit inside
    and fill the borders by repeating the picture's edge pixels (nothing cut). stretch: resize to exactly H x W
    (nothing cut, proportions changed). `describe_fit` says in words what a mode does to a given picture."""
    return _prepare_uint8(image_to_uint8(image), height, width, fit)


def _check_fit(fit: str) -> None:
    if fit not in FIT_MODES:
        raise PipelineError(f"fit must be one of {', '.join(FIT_MODES)} (how a picture of another shape is fitted "
                            f"to the model's frame); got {fit!r}")


def _resize(u8: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(u8.shape[-2:]) == tuple(hw):
        return u8
    # torchvision's tensor resize (what the original calls) is this very kernel: torch's antialiased bilinear, run
    # on the uint8 picture on the CPU. torchvision itself is not needed.
    return F.interpolate(u8[None], size=hw, mode="bilinear", antialias=True, align_corners=False)[0]


def _prepare_uint8(u8: torch.Tensor, height: int, width: int, fit: str = "crop") -> PreparedImage:
    """prepare_image for a uint8 [3,h0,w0] picture."""
    _check_fit(fit)
    if min(height, width) < 1:
        raise PipelineError(f"the target size must be positive; got {height}x{width}")
    h0, w0 = u8.shape[-2:]
    covers = w0 / h0 > width / height
    if fit == "stretch":
        new_hw = (height, width)
    elif covers == (fit == "crop"):
        new_hw = (height, max(1, int(w0 * height / h0)))
    else:
        new_hw = (max(1, int(h0 * width / w0)), width)
    u8 = _resize(u8, new_hw)
    rh, rw = u8.shape[-2:]
    if fit == "pad":
        top, left = (height - rh) // 2, (width - rw) // 2
        u8 = F.pad(u8[None].float(), (left, width - rw - left, top, height - rh - top), mode="replicate")[0]
        u8 = u8.to(torch.uint8)
    else:
        top, left = (rh - height) // 2, (rw - width) // 2
        u8 = u8[:, top:top + height, left:left + width]
    pixels = (u8[None] / 255 - 0.5) * 2  # [1,3,H,W], the original's exact arithmetic
    f = 0.5 * max(rh, rw)  # 90° field of view across the long side of the resized picture (uncropped)
    K = torch.tensor([[f, 0.0, 0.5 * width], [0.0, f, 0.5 * height], [0.0, 0.0, 1.0]], dtype=torch.float32)
    return PreparedImage(pixels.float(), K, (int(rh), int(rw)))


def describe_fit(image_hw: tuple[int, int], model_hw: tuple[int, int], fit: str = "crop") -> str | None:
    """What fitting an H x W picture to the model does, in one sentence; None when nothing notable happens.

    Said when a crop cuts more than a tenth of the picture, a pad fills more than a tenth of the frame, or a stretch
    changes the proportions by more than a tenth."""
    _check_fit(fit)
    h0, w0 = int(image_hw[0]), int(image_hw[1])
    height, width = target_size((h0, w0), model_hw)
    ratio_in, ratio_out = w0 / h0, width / height
    change = max(ratio_in, ratio_out) / min(ratio_in, ratio_out)  # >= 1
    if change <= 1.1:
        return None
    lost = 1 - 1 / change
    shape = f"the {w0}x{h0} picture ({ratio_in:.2f}:1)"
    frame = f"the model's {width}x{height} frame ({ratio_out:.2f}:1)"
    if fit == "crop":
        side = "left and right" if ratio_in > ratio_out else "top and bottom"
        return (f"{shape} was centre-cropped to {frame}: {lost:.0%} of it was cut from the {side}; choose fit 'pad' "
                f"to keep all of it or 'stretch' to squeeze it")
    if fit == "pad":
        side = "top and bottom" if ratio_in > ratio_out else "left and right"
        return (f"{shape} was fitted inside {frame}: {lost:.0%} of the frame ({side}) is filled by repeating its "
                f"edge pixels")
    return f"{shape} was stretched to {frame}, changing its proportions {change:.2f}x"


def intrinsics_from_normalized(intrinsics, prepared: PreparedImage) -> torch.Tensor:
    """Normalised (fx, fy, cx, cy) [T,4] -> pixel K [T,3,3] the way the dataset path scales them (spec §6.1)."""
    norm = torch.as_tensor(np.array(intrinsics, dtype=np.float64)).float()
    if norm.ndim != 2 or norm.shape[-1] != 4:
        raise PipelineError(f"intrinsics must be [T,4] normalised (fx, fy, cx, cy); got shape {tuple(norm.shape)}")
    (rh, rw), (height, width) = prepared.resized_hw, prepared.size
    return camera_maths.normalized_to_pixel_intrinsics(norm, height, width, rh, rw).float()


# -- trajectories --------------------------------------------------------------------------------------------------

def trajectory_arrays(trajectory) -> tuple[np.ndarray, np.ndarray | None]:
    """(w2c [T,4,4], normalised intrinsics [T,4] or None) from a Trajectory, a (w2c, intrinsics) pair or a w2c array."""
    if hasattr(trajectory, "w2c"):
        return np.asarray(trajectory.w2c, dtype=np.float64), getattr(trajectory, "intrinsics", None)
    if isinstance(trajectory, (tuple, list)) and len(trajectory) == 2 and np.ndim(trajectory[0]) == 3:
        return np.asarray(trajectory[0], dtype=np.float64), trajectory[1]
    if isinstance(trajectory, torch.Tensor):
        trajectory = trajectory.detach().cpu().double().numpy()
    return np.asarray(trajectory, dtype=np.float64), None


def camera_scale(trajectory, model_unit: str, trace_scale: float = DEFAULTS.trace_scale) -> tuple[float, str | None]:
    """(the translation factor to sample with, a note) for a path with a unit (`Trajectory.unit`) on a model with
    its `translation_unit` ("relative" or "metre").

    A metric model (RealCam-I2V) takes a metric path literally and reads any other path as its demo does, 1 unit =
    0.5 m (settings.REALCAM_METRES_PER_UNIT) x trace_scale; the note says how far the camera moves in metres. A
    scale-free model (CamI2V and its baselines) takes every path as it is; a metric path gets a note that its size
    in metres means nothing to it."""
    path_unit = getattr(trajectory, "unit", None)
    w2c = trajectory_arrays(trajectory)[0]
    c2w = np.linalg.inv(w2c)
    travel = float(np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=-1).sum())
    if model_unit == "metre":
        factor = float(trace_scale) * (1.0 if path_unit == "metre" else settings.REALCAM_METRES_PER_UNIT)
        if path_unit == "metre":
            return factor, (f"RealCam-I2V reads translations as metres: this metric path moves the camera "
                            f"{travel * factor:.2f} m (trace_scale {trace_scale:g})")
        kind = "scale-free (CamI2V's convention, as the demo presets)" if path_unit == "relative" else "unit-less"
        return factor, (f"this camera path is {kind}; RealCam-I2V reads 1 unit as {settings.REALCAM_METRES_PER_UNIT:g} "
                        f"m (its demo's) x trace_scale {trace_scale:g}, so the camera moves {travel * factor:.2f} m")
    if path_unit == "metre":
        return float(trace_scale), ("this camera path is in metres, but this model is scale-free (CamI2V's "
                                    "convention): only the path's size relative to the scene matters, so its "
                                    "metres are read as plain units (RealCam-I2V takes metres)")
    return float(trace_scale), None


def check_w2c(w2c, frames: int) -> torch.Tensor:
    """Validate per-frame world-to-camera matrices [T,4,4] (or [T,3,4]) for a T-frame model -> float32 [1,T,4,4]."""
    w2c = torch.as_tensor(np.array(w2c, dtype=np.float64))
    if w2c.ndim == 4 and w2c.shape[0] == 1:
        w2c = w2c[0]
    if w2c.ndim != 3 or w2c.shape[-2:] not in ((4, 4), (3, 4)):
        raise PipelineError(f"the trajectory must be per-frame world-to-camera matrices [T,4,4] (or [T,3,4]); "
                            f"got shape {tuple(w2c.shape)}")
    if w2c.shape[0] != frames:
        raise PipelineError(f"the trajectory has {w2c.shape[0]} poses but the model makes {frames} frames; resample "
                            f"it to {frames} poses first (the command line does this for you)")
    if not bool(torch.isfinite(w2c).all()):
        raise PipelineError("the trajectory contains NaN or infinite values")
    if w2c.shape[-2] == 3:
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=w2c.dtype).expand(frames, 1, 4)
        w2c = torch.cat([w2c, bottom], dim=1)
    if bool((torch.linalg.det(w2c[:, :3, :3]).abs() < 1e-6).any()):
        raise PipelineError("a trajectory pose has a singular rotation block (determinant ~ 0); every w2c must be "
                            "invertible")
    return w2c.float()[None]


# -- conditioning (spec §7.1) -----------------------------------------------------------------------------------------

@dataclass
class Draws:
    """Recorded random draws to use instead of the generator (any left None is drawn); shapes for B = 1."""

    posterior_noise: torch.Tensor | None = None  # [T,4,h,w] VAE posterior noise of all T input frames
    pair_t: torch.Tensor | None = None           # [1,T,T,3,1] CamI2V pair translations after the perturbation
    x_T: torch.Tensor | None = None              # [1,4,T,h,w]
    step_noise: list | None = None               # S tensors [1,4,T,h,w], in visiting order


@dataclass
class Conditioning:
    """Everything the denoiser needs, built once per video and shared by every step and branch."""

    context: dict             # branch name -> cross-attention context [1, 77 + 16*T, C]
    c_concat: torch.Tensor    # [1,4,T,h,w] the conditioning frame's scaled latent, repeated over T
    fs: torch.Tensor          # [1] long, frame stride (256 models) or fps (512 models)
    camera: Any               # camera.CameraCondition, or None for DynamiCrafter
    image: PreparedImage
    K: torch.Tensor           # [1,T,3,3] pixel intrinsics used for the camera


def frame_condition(model, frame_stride: int | None) -> int:
    """The UNet's fs input: the frame stride (fs models) or floor(29.97 / stride) (fps models), spec §7.1."""
    if frame_stride is None:
        return int(model.config.default_fs)
    if isinstance(frame_stride, bool) or int(frame_stride) != frame_stride or frame_stride < 1:
        raise PipelineError(f"frame_stride must be a whole number >= 1 (larger = more motion); got {frame_stride!r}")
    if model.config.fps_condition_type == "fps":
        return max(1, int(SOURCE_FPS // int(frame_stride)))
    return int(frame_stride)


@contextlib.contextmanager
def _modules_on(model, names, device, offload: bool):
    """Move the named submodules to `device` for the block and back to the CPU after it when offloading."""
    modules = [getattr(model, n) for n in names if getattr(model, n, None) is not None]
    if offload:
        for m in modules:
            m.to(device)
    try:
        yield
    finally:
        if offload:
            for m in modules:
                m.to("cpu")
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()


def encode_conditioning(model, image, w2c, intrinsics=None, prompt: str = "", negative_prompt: str = "",
                        frame_stride: int | None = None, cond_frame_index: int = 0, trace_scale: float = 1.0,
                        branches=("cond", "uncond"), generator: torch.Generator | None = None,
                        draws: Draws | None = None, offload: bool = False, fit: str = "crop") -> Conditioning:
    """Encode picture, prompts and trajectory for the given guidance branches (spec §7.1, draws in §7.7 order).

    fit: how a picture of another shape meets the model's frame (`prepare_image`)."""
    config = model.config
    frames = config.temporal_length
    draws = draws or Draws()
    if isinstance(cond_frame_index, bool) or int(cond_frame_index) != cond_frame_index \
            or not 0 <= int(cond_frame_index) < frames:
        raise PipelineError(f"cond_frame_index must be a frame index from 0 to {frames - 1}; got {cond_frame_index!r}")
    if not math.isfinite(float(trace_scale)):
        raise PipelineError(f"trace_scale must be a finite number; got {trace_scale!r}")
    if not isinstance(prompt, str) or not isinstance(negative_prompt, str):
        raise PipelineError("prompt and negative_prompt must be strings")
    _check_fit(fit)
    w2c = check_w2c(w2c, frames)
    fs = frame_condition(model, frame_stride)
    u8 = image_to_uint8(image)
    height, width = target_size(tuple(u8.shape[-2:]), config.resolution)
    prepared = _prepare_uint8(u8, height, width, fit)
    K = prepared.K.expand(frames, 3, 3) if intrinsics is None else intrinsics_from_normalized(intrinsics, prepared)
    if K.shape[0] != frames:
        raise PipelineError(f"intrinsics have {K.shape[0]} rows but the trajectory has {frames} poses")
    K = K[None].float()
    device = model.device
    down = config.vae_downsample
    latent_hw = (height // down, width // down)

    with torch.no_grad(), _modules_on(model, ENCODER_MODULES, device, offload):
        pixels = prepared.pixels.to(device)
        # Text for the branches that run: "cond" uses the prompt; "uncond" and "image" the negative prompt.
        texts = {"cond": prompt, "uncond": negative_prompt, "image": negative_prompt, "nocam": prompt}
        needed = list(dict.fromkeys(texts[b] for b in branches))  # each distinct prompt once, in branch order
        text_emb = dict(zip(needed, model.encode_text(needed).unbind(0)))
        image_tokens = model.encode_image_tokens(pixels)
        if "uncond" in branches:
            # The unconditional image is all zeros in [-1,1] space, i.e. mid-grey (spec §7.1).
            zero_tokens = model.encode_image_tokens(torch.zeros_like(pixels))
        context = {}
        for b in branches:
            tokens = zero_tokens if b == "uncond" else image_tokens
            context[b] = torch.cat([text_emb[texts[b]][None], tokens], dim=1)  # [1, 77 + 16*T, C]

        # (1) VAE posterior noise: the original encodes all T copies of the picture and draws noise for each;
        # only the conditioning frame's latent is used, so encode one copy with that frame's draw.
        noise = draws.posterior_noise
        if noise is None:
            noise = randn((frames, config.channels, *latent_hw), generator)
        z = model.encode_first_stage(pixels, noise=noise[cond_frame_index:cond_frame_index + 1])  # [1,4,h,w]
        c_concat = repeat(z, "b c h w -> b c t h w", t=frames)
        # (2) camera condition, with CamI2V's zero-translation perturbation draw.
        camera = model.prepare_camera(w2c.to(device), K.to(device), torch.tensor([int(cond_frame_index)]),
                                      trace_scale=float(trace_scale), generator=generator, pair_t=draws.pair_t,
                                      height=height, width=width)
    fs_tensor = torch.tensor([fs], dtype=torch.long, device=device)
    return Conditioning(context, c_concat, fs_tensor, camera, prepared, K)


def make_denoiser(model, cond: Conditioning, batch_branches: bool = True):
    """The `denoise_fn` of `sample_ddim` for one video: branch outputs [1,4,T,h,w], as float32.

    Branches that share the camera condition (cond, uncond, image) go through the UNet as one batch when
    `batch_branches` is set; if that runs out of GPU memory they are run one by one from then on. The no-camera
    branch is always its own call, since the camera condition is per call.
    """
    state = {"batch": batch_branches}
    dtype = model.dtype

    def run(x, t, names, camera):
        n = len(names)
        context = torch.cat([cond.context[b] for b in names])
        x_in = torch.cat([x] * n).to(dtype)
        c_concat = torch.cat([cond.c_concat] * n)
        fs = torch.cat([cond.fs] * n)
        if camera is not None and n > 1:
            camera = camera.repeat_batch(n)
        out = model.apply_model(x_in, torch.cat([t] * n), context, c_concat, fs, camera=camera).float()
        return dict(zip(names, out.chunk(n)))

    def denoise(x, t, branches):
        shared = [b for b in branches if b != "nocam"]
        outputs = {}
        with torch.no_grad():
            if state["batch"] and len(shared) > 1:
                try:
                    outputs.update(run(x, t, shared, cond.camera))
                except torch.OutOfMemoryError:
                    state["batch"] = False
                    torch.cuda.empty_cache()
            for b in shared:
                if b not in outputs:
                    outputs.update(run(x, t, [b], cond.camera))
            if "nocam" in branches:
                outputs.update(run(x, t, ["nocam"], None))
        return outputs

    return denoise


# -- sampling and decoding -------------------------------------------------------------------------------------------

def make_generator(seed: int | None = None) -> torch.Generator:
    """A CPU generator seeded with `seed` (a random seed when None)."""
    g = torch.Generator(device="cpu")
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


def sample_latent(model, image, w2c, intrinsics=None, prompt: str = "", negative_prompt: str = "", *,
                  steps: int = DEFAULTS.steps, cfg_text: float = DEFAULTS.cfg_text, cfg_image: float | None = None,
                  cfg_camera: float = DEFAULTS.cfg_camera, camera_schedule: str = DEFAULTS.camera_schedule,
                  guidance_rescale: float = DEFAULTS.guidance_rescale, eta: float = DEFAULTS.eta,
                  spacing: str = "uniform_trailing", seed: int | None = None,
                  generator: torch.Generator | None = None, frame_stride: int | None = DEFAULTS.frame_stride,
                  cond_frame_index: int = DEFAULTS.cond_frame, trace_scale: float = DEFAULTS.trace_scale,
                  callback: Callable[[StepInfo], None] | None = None, draws: Draws | None = None,
                  batch_branches: bool = True, offload: bool = False, fit: str = "crop",
                  noise_shaping: scene.NoiseShaping | None = None, sampler: str = "ddim") -> torch.Tensor:
    """Sample a video latent for one picture and trajectory w2c [T,4,4] -> scaled latent [1,4,T,h,w] (float32).

    intrinsics: None for the demo's default (spec §6.1) or normalised (fx, fy, cx, cy) [T,4]. The callback gets a
    `sampling.StepInfo` after every step; raise in it to cancel. `offload` keeps encoders and VAE on the CPU
    except while they run. `fit` (crop / pad / stretch) is how a picture of another shape meets the model's frame
    (`describe_fit` says what it did). Defaults are `settings.DEFAULTS` (the demo's); frame_stride=None uses the
    UNet's own default fs value. `noise_shaping` (RealCam-I2V, off by default): a `scene.NoiseShaping` holding the
    `preview_scene` of the same picture, trajectory and fit; its renders pin the visible latents for t >= 900.
    `sampler`: one of `sampling.SAMPLERS`; "ddim" is the original's sampler, "dpmpp_2m" and "unipc" are
    deterministic ODE solvers meant for fewer steps (8-16) that ignore `eta`. All share the guidance.
    """
    if sampler not in SAMPLERS:
        raise PipelineError(f"sampler must be one of {', '.join(map(repr, SAMPLERS))}; got {sampler!r}")
    if noise_shaping is not None and sampler != "ddim":
        raise PipelineError(f"RealCam-I2V's noise shaping runs with the DDIM sampler (as the original); got sampler "
                            f"{sampler!r}: use 'ddim' or leave the scene out")
    guidance = Guidance(cfg_text=cfg_text, cfg_image=cfg_image, cfg_camera=cfg_camera,
                        camera_schedule=camera_schedule, rescale=guidance_rescale)
    has_camera = model.config.camera is not None
    if not has_camera and cfg_camera != 1:
        raise PipelineError(f"this {model.config.variant} model has no camera input, so camera guidance cannot "
                            f"work; set cfg_camera to 1 (got {cfg_camera})")
    schedule = make_ddim_schedule(model.alphas_cumprod, steps, eta, spacing, getattr(model, "scale_arr", None)
                                  if model.config.use_dynamic_rescale else None)
    if generator is None:
        generator = make_generator(seed)
    draws = draws or Draws()
    branches = guidance.branches(camera=has_camera)
    cond = encode_conditioning(model, image, w2c, intrinsics, prompt, negative_prompt, frame_stride,
                               cond_frame_index, trace_scale, branches, generator, draws, offload, fit)
    device = model.device
    shape = (1, model.config.channels, model.config.temporal_length, *cond.c_concat.shape[-2:])
    # (3) x_T, then (4) one draw per step: the order of spec §7.7.
    x_T = draws.x_T if draws.x_T is not None else randn(shape, generator)
    if tuple(x_T.shape) != shape:
        raise PipelineError(f"injected x_T has shape {tuple(x_T.shape)}; expected {shape}")
    noise_fn = None
    if draws.step_noise is not None:
        if sampler != "ddim":
            raise PipelineError(f"injected step noises are DDIM's; the {sampler!r} solver draws none. Leave "
                                "Draws.step_noise unset or use sampler='ddim'")
        if len(draws.step_noise) != len(schedule):
            raise PipelineError(f"{len(draws.step_noise)} injected step noises for {len(schedule)} steps")
        noise_fn = lambda i, x: draws.step_noise[i].to(x.device, x.dtype)  # noqa: E731
    latent_hook = None
    if noise_shaping is not None:
        if noise_shaping.preview.cond_frame_index != int(cond_frame_index):
            raise PipelineError(f"the scene preview was rendered from frame {noise_shaping.preview.cond_frame_index} "
                                f"but cond_frame_index is {cond_frame_index}; make both with the same frame")
        latent_hook = noise_shaping_hook(model, cond, noise_shaping, shaping_generator(generator), offload)
    denoise = make_denoiser(model, cond, batch_branches)
    if callback is not None:
        # Previews in this VAE's own colours: the projection fitted on the picture and its latent (no extra encode).
        latent_rgb = fit_latent_rgb(cond.c_concat[:, :, 0].float().cpu(), (cond.image.pixels.cpu() + 1) / 2)
        user_callback = callback
        callback = lambda info: user_callback(dataclasses.replace(info, latent_rgb=latent_rgb))  # noqa: E731
    if sampler == "ddim":
        return sample_ddim(denoise, x_T.float().to(device), schedule, guidance, prediction=model.parameterization,
                           callback=callback, noise_fn=noise_fn, generator=generator, camera=has_camera,
                           latent_hook=latent_hook)
    solver = {"dpmpp_2m": sample_dpmpp_2m, "unipc": sample_unipc}[sampler]
    return solver(denoise, x_T.float().to(device), schedule, guidance, prediction=model.parameterization,
                  callback=callback, camera=has_camera)


# -- RealCam-I2V's scene (realcam spec §3-4; the maths is in scene.py) ----------------------------------------------

def preview_scene(model, image, w2c, depth, intrinsics=None, *, cond_frame_index: int = DEFAULTS.cond_frame,
                  trace_scale: float = DEFAULTS.trace_scale, fit: str = "crop", point_size: int = 2,
                  outliers: bool = True) -> scene.ScenePreview:
    """Depth-aware preview of one picture along a trajectory w2c [T,4,4], at the model's frame -> scene.ScenePreview.

    The picture is fitted exactly as `sample_latent` fits it (same `fit`, intrinsics and trace_scale), so the renders
    line up with the latents. depth: a metric depth model (`scene.load_depth_model`) or a depth map [H,W] in metres
    of the fitted picture."""
    config = model.config
    w2c = check_w2c(w2c, config.temporal_length)[0]
    _check_fit(fit)
    if isinstance(cond_frame_index, bool) or int(cond_frame_index) != cond_frame_index \
            or not 0 <= int(cond_frame_index) < config.temporal_length:
        raise PipelineError(f"cond_frame_index must be a frame index from 0 to {config.temporal_length - 1}; got "
                            f"{cond_frame_index!r}")
    u8 = image_to_uint8(image)
    prepared = _prepare_uint8(u8, *target_size(tuple(u8.shape[-2:]), config.resolution), fit)
    K = prepared.K if intrinsics is None else intrinsics_from_normalized(intrinsics, prepared)[int(cond_frame_index)]
    if callable(depth):  # a depth model (tensors and arrays are not callable)
        depth = scene.estimate_depth(depth, prepared.pixels)[0]
    depth = torch.as_tensor(depth).float().cpu()
    if depth.ndim == 3 and depth.shape[0] == 1:
        depth = depth[0]
    if tuple(depth.shape) != prepared.size:
        raise PipelineError(f"the depth map must be [H,W] = {prepared.size}, the fitted picture's size; got "
                            f"{tuple(depth.shape)}. Pass the depth model instead and it is estimated at that size.")
    colors = rearrange((prepared.pixels[0] + 1) / 2, "c h w -> h w c")
    return scene.preview_scene(colors, depth, K, w2c, int(cond_frame_index), float(trace_scale), point_size,
                               outliers)


def shaping_generator(generator: torch.Generator) -> torch.Generator:
    """The generator of noise shaping's own draws: a CPU generator seeded with the sampler's initial seed + 1.

    Upstream draws them from the global RNG between the sampler's own draws; a stream of their own keeps x_T and every
    step's noise those of the same seed without shaping, so shaping on and off compare like for like."""
    return make_generator((generator.initial_seed() + 1) % 2 ** 64)


def noise_shaping_hook(model, cond: Conditioning, shaping: scene.NoiseShaping, generator: torch.Generator | None,
                       offload: bool = False, chunk_size: int = 4):
    """The sampler's latent hook for `shaping` (realcam spec §4.3-4.5): the renders' VAE latents with the
    conditioning frame's latent put back, masked by their eroded visibility. `generator` draws, in this order, the
    renders' posterior noise [T,C,h,w] and then, at each shaped step, q_sample's noise (unless shaping.noise_fn)."""
    preview = shaping.preview
    frames = model.config.temporal_length
    want = (frames, *cond.image.size)
    if tuple(preview.frames.shape[:3]) != want or tuple(preview.masks.shape) != want:
        raise PipelineError(f"the scene preview is {tuple(preview.frames.shape[:3])} (frames, H, W) but this video "
                            f"is {want}; make it with pipeline.preview_scene from the same picture, trajectory and "
                            f"fit")
    c, (h, w) = model.config.channels, cond.c_concat.shape[-2:]
    noise = randn((frames, c, h, w), generator)
    pixels = rearrange(preview.frames.float().cpu() * 2 - 1, "t h w c -> t c h w")
    latents = []
    with torch.no_grad(), _modules_on(model, ("first_stage_model",), model.device, offload):
        for chunk, chunk_noise in zip(pixels.split(chunk_size), noise.split(chunk_size)):
            latents.append(model.encode_first_stage(chunk, noise=chunk_noise).float())
    scene_latent = rearrange(torch.cat(latents), "t c h w -> 1 c t h w")
    # The conditioning frame is the picture itself: its own latent, not the render's (realcam spec §4.3).
    k = preview.cond_frame_index
    scene_latent[:, :, k] = cond.c_concat[:, :, k].float()
    mask = scene.latent_mask(preview.masks.cpu(), (h, w)).to(model.device)  # [T,h,w], broadcast over B and C
    return scene.noise_shaping_hook(scene_latent.to(model.device), mask, model.sqrt_alphas_cumprod,
                                    model.sqrt_one_minus_alphas_cumprod, shaping.from_timestep, shaping.noise_fn,
                                    generator)


def decode_latent(model, latent: torch.Tensor, chunk_size: int = 4, offload: bool = False) -> torch.Tensor:
    """Decode a scaled latent [B,4,T,h,w] or [N,4,h,w] in chunks of frames -> frames [N,H,W,3] float32 0..1 (CPU)."""
    if latent.ndim == 5:
        latent = rearrange(latent, "b c t h w -> (b t) c h w")
    if latent.ndim != 4:
        raise PipelineError(f"a latent must be [B,4,T,h,w] or [N,4,h,w]; got shape {tuple(latent.shape)}")
    if chunk_size < 1:
        raise PipelineError(f"chunk_size must be >= 1; got {chunk_size}")
    out = []
    with torch.no_grad(), _modules_on(model, ("first_stage_model",), model.device, offload):
        # Every VAE op is per frame (spec §3.4), so chunking changes memory, not results.
        for chunk in latent.split(chunk_size):
            pixels = model.decode_first_stage(chunk).float().clamp(-1, 1)
            out.append(rearrange((pixels + 1) / 2, "n c h w -> n h w c").cpu())
    return torch.cat(out)


def to_comfy_latent(latent: torch.Tensor) -> dict:
    """[B,4,T,h,w] -> ComfyUI LATENT {"samples": [(B T),4,h,w]} (already scaled by 0.18215, frame index fastest)."""
    return {"samples": rearrange(latent, "b c t h w -> (b t) c h w")}


def from_comfy_latent(latent: dict | torch.Tensor, frames: int) -> torch.Tensor:
    """ComfyUI LATENT {"samples": [(B T),4,h,w]} -> [B,4,T,h,w]."""
    samples = latent["samples"] if isinstance(latent, dict) else latent
    if samples.ndim != 4 or samples.shape[0] % frames:
        raise PipelineError(f"LATENT samples must be [(B*{frames}),4,h,w]; got shape {tuple(samples.shape)}")
    return rearrange(samples, "(b t) c h w -> b c t h w", t=frames)


def fit_latent_rgb(latent: torch.Tensor, rgb: torch.Tensor, strength: float = 0.01) -> torch.Tensor:
    """Least-squares latent -> RGB projection [C+1,3] (last row: bias) from pairs of a latent [N,C,h,w] and the
    picture it encodes, [N,3,H,W] in 0..1 (averaged down to h x w).

    Ridge-regularised towards the KL-f8 projection (4 channels) or a grey picture (other VAEs), so directions a
    picture does not excite (a monochrome picture has none in colour) keep a sensible default. This is how every
    VAE, the bundled tiny one included, gets a preview in its own colours without a table per VAE."""
    n, c, h, w = latent.shape
    target = F.adaptive_avg_pool2d(rgb.float(), (h, w))
    A = torch.cat([rearrange(latent.float(), "n c h w -> (n h w) c"), torch.ones(n * h * w, 1)], dim=1)
    Y = rearrange(target, "n r h w -> (n h w) r")
    prior = torch.zeros(c + 1, 3)
    if c == len(LATENT_RGB_FACTORS):
        prior[:c] = torch.tensor(LATENT_RGB_FACTORS) / 2
    prior[c] = 0.5
    lam = strength * A.shape[0]
    lhs = A.T @ A + lam * torch.eye(c + 1)
    return torch.linalg.solve(lhs, A.T @ Y + lam * prior)


def latent_preview(latent: torch.Tensor, projection: torch.Tensor | None = None) -> torch.Tensor:
    """Cheap RGB preview without the VAE: [B,C,T,h,w] or [N,C,h,w] -> [N,h,w,3] float 0..1.

    projection: a [C+1,3] map from `fit_latent_rgb`; None = ComfyUI's SD1.x factors for the KL-f8 VAE."""
    if latent.ndim == 5:
        latent = rearrange(latent, "b c t h w -> (b t) c h w")
    if projection is None:
        if latent.shape[1] != len(LATENT_RGB_FACTORS):
            raise PipelineError(f"no default preview for a {latent.shape[1]}-channel latent; pass a projection "
                                f"from fit_latent_rgb")
        factors = torch.tensor(LATENT_RGB_FACTORS, dtype=torch.float32, device=latent.device)
        rgb = torch.einsum("nchw,cr->nhwr", latent.float(), factors)
        return ((rgb + 1) / 2).clamp(0, 1)
    projection = projection.to(latent.device, torch.float32)
    rgb = torch.einsum("nchw,cr->nhwr", latent.float(), projection[:-1]) + projection[-1]
    return rgb.clamp(0, 1)


def generate(model, image, trajectory, prompt: str = "", negative_prompt: str = "", *,
             use_trajectory_intrinsics: bool = False, decode_chunk: int = 4, offload: bool = False,
             **sampling_kwargs) -> torch.Tensor:
    """Picture + trajectory + prompt -> video frames [T,H,W,3] float32 in 0..1 (CPU).

    trajectory: a `trajectories.Trajectory`, a (w2c [T,4,4], intrinsics [T,4]) pair or w2c [T,4,4]. Its intrinsics
    are used only with `use_trajectory_intrinsics` (the demo ignores them, spec §6.1). Its unit meets the model's as
    `camera_scale` says (RealCam-I2V reads a path that is not metric as 0.5 m per unit, its demo's). Other keyword
    arguments go to `sample_latent` (sampler, steps, cfg_text, cfg_image, cfg_camera, eta, seed, frame_stride,
    callback, ...).
    """
    w2c, intrinsics = trajectory_arrays(trajectory)
    trace_scale, _ = camera_scale(trajectory, model.config.translation_unit,
                                  sampling_kwargs.pop("trace_scale", DEFAULTS.trace_scale))
    latent = sample_latent(model, image, w2c, intrinsics if use_trajectory_intrinsics else None, prompt,
                           negative_prompt, offload=offload, trace_scale=trace_scale, **sampling_kwargs)
    return decode_latent(model, latent, decode_chunk, offload=offload)
