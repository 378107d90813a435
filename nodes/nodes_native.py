"""Native ComfyUI sampling: a CamI2V model as a ComfyUI MODEL, its conditioning, and a guider with separate scales.

Three nodes, in the pattern of ComfyUI's own video models (Wan camera: a MODEL, a conditioning node that returns
positive / negative / an empty LATENT, then KSampler or SamplerCustomAdvanced):

- CamI2V To ComfyUI Model: the UNet of a loaded CAMI2V_MODEL as a `comfy.model_base.BaseModel` in a `ModelPatcher`,
  so `comfy.model_management` loads and offloads it and ComfyUI's samplers and schedulers drive it.
- CamI2V Image To Video (conditioning): picture + camera + prompts, encoded once with the model's own CLIP, VAE and
  camera encoder (`pipeline.encode_conditioning`), stored in the conditioning entries the model reads.
- CamI2V Guider: a `comfy.samplers.CFGGuider` with separate text / image / camera scales, the camera schedule and
  guidance rescale, combined by `sampling.combine_guidance` and `sampling.rescale_guidance` as in the reference.

How the reference DDIM becomes a ComfyUI sampler (`SamplingCoordinates`). ComfyUI's `ddim` sampler is Euler, and
Euler takes the DDIM (eta 0) step exactly when the latent is written in coordinates that move linearly between the
point where sampling ends and the noise. The reference ends on ᾱ_0, not on a clean latent (spec §7.2), and its
512 and bundled models start from ᾱ = 0 (zero terminal SNR), where ComfyUI's usual sigma = sqrt((1-ᾱ)/ᾱ) is
infinite. So with d = √ᾱ_0, c = √(1-ᾱ_0) and P0 = d·x0 + c·eps (where DDIM's last step lands), the model's
"sigma" is s ∈ [0, 1] and its latent y = (1-s)·P0 + s·eps, a flow-style (CONST) parameterisation:
    s(t) = (d√(1-ᾱ_t) - c√ᾱ_t) / (d√(1-ᾱ_t) + (1-c)√ᾱ_t)
    x_t = γ(t)·y,  γ(t) = √(1-ᾱ_t) / (c + (1-c)·s(t))
s = 0 is ᾱ_0 and s = 1 is ᾱ = 0; "denoised" is P0. Every ComfyUI scheduler ends on s = 0, which is where the
reference ends, so KSampler's `ddim` with the `simple` scheduler (t = 999, 959, ..., the reference's
uniform_trailing grid when the step count divides 1000: 10, 20, 25, 50, ...) replays the reference step by step.
The 512 models' dynamic rescale moves x0 between the current and the next timestep's scale (spec §7.5), which
needs the next step: it is read from the sampler's sigma list, exact for Euler/ddim and approximate for others.
"""

from __future__ import annotations

import functools
import math

import torch
from einops import rearrange

from cami2v_core import pipeline
from cami2v_core.errors import CamI2VError
from cami2v_core.modules import attention
from cami2v_core.sampling import CAMERA_SCHEDULES, Guidance, combine_guidance, ddim_coefficients, rescale_guidance
from cami2v_core.settings import DEFAULTS

from . import comfy_bridge
from .nodes_sample import CamI2VSampler, placed, sampler_inputs
from .registry import node_name

CATEGORY = "CamI2V/native"
# Conditioning entry keys the model reads (ComfyUI passes every entry of a conditioning dict to `extra_conds`).
CONCAT_KEY, FS_KEY, CAMERA_KEY = "cami2v_concat", "cami2v_fs", "cami2v_camera"
IMAGE_CONTEXT_KEY = "cami2v_image_context"  # the positive's image-only branch context (negative text + picture)
# ComfyUI's guider branch names for the reference's guidance branches (sampling.BRANCHES).
GUIDER_CONDS = {"cond": "positive", "uncond": "negative", "image": "cami2v_image", "nocam": "cami2v_nocam"}


class NativeError(CamI2VError, ValueError):
    """Native-sampling inputs that cannot work; the message says what to connect or change."""


# -- the reference DDIM in ComfyUI's terms (pure torch, no comfy) ---------------------------------------------------

class SamplingCoordinates:
    """The (s, y) coordinates above for one model's ᾱ table [N], with DDIM's own float32 coefficients.

    `sigmas` [N] float32 is s(t), ComfyUI's sigma table (entry 0, where s = 0, is set half-way to entry 1 so the
    smallest sigma a scheduler sees stays positive). `coefficients` gives the per-sample (alpha, beta) of
    denoised = alpha·y + beta·model_output, including the dynamic rescale when a scale table is given.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, parameterization: str, scale_arr: torch.Tensor | None = None):
        if parameterization not in ("eps", "v"):
            raise NativeError(f"parameterization must be 'eps' or 'v'; got {parameterization!r}")
        abar = alphas_cumprod.detach().float().cpu()
        n = int(abar.numel())
        # The reference's own coefficient tables over every timestep, so x0 and eps use its very numbers.
        table = ddim_coefficients(abar, torch.arange(n), eta=0.0)
        a = abar.double()
        self.parameterization = parameterization
        self.num_timesteps = n
        self.d, self.c = math.sqrt(float(a[0])), math.sqrt(1.0 - float(a[0]))
        d, c = self.d, self.c
        s = (d * (1 - a).sqrt() - c * a.sqrt()) / (d * (1 - a).sqrt() + (1 - c) * a.sqrt())
        s[0] = 0.0  # exactly: t = 0 is where DDIM ends
        self.s = s                                              # [N] float64
        self.gamma = (1 - a).sqrt() / (c + (1 - c) * s)         # [N] float64, x_t = gamma·y
        sigmas = s.float().clone()
        sigmas[0] = sigmas[1] / 2
        self.sigmas = sigmas
        if parameterization == "v":
            sa, s1 = table.sqrt_alphas_cumprod.double(), table.sqrt_one_minus_alphas_cumprod.double()
            self._x0 = (sa, -s1)    # x0 = sa·x - s1·v
            self._eps = (s1, sa)    # eps = s1·x + sa·v
        else:
            sa = table.alphas.sqrt().double()  # the reference divides by a_t.sqrt() in float32
            s1 = table.sqrt_one_minus_alphas.double()
            self._x0 = (1 / sa, -s1 / sa)  # x0 = (x - s1·eps) / sa
            self._eps = (torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64))
        self.scale_arr = None if scale_arr is None else scale_arr.detach().float().cpu()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The timestep index of each sigma (the nearest table entry in log distance, as ComfyUI's): [B] long."""
        log_table = self.sigmas.double().log().to(sigma.device)
        dists = (sigma.double().log()[None] - log_table.reshape(-1, *([1] * sigma.ndim))).abs()
        return dists.argmin(dim=0).reshape(sigma.shape)

    def input_scale(self, t: torch.Tensor) -> torch.Tensor:
        """gamma(t): the UNet's latent is gamma·y. [B] long -> [B] float64."""
        return self.gamma.to(t.device)[t]

    def rescale_factor(self, t: torch.Tensor, s: torch.Tensor, s_next: torch.Tensor | None) -> torch.Tensor:
        """k with denoised = d·k·x0 + c·eps, so that Euler from s to s_next lands where the reference's DDIM step
        with dynamic rescale does (x0 · scale(t_next) / scale(t), eps kept; spec §7.5). 1 without a scale table."""
        ones = torch.ones(t.shape, dtype=torch.float64, device=t.device)
        if self.scale_arr is None or s_next is None:
            return ones
        s, s_next = s.double().to(t.device), s_next.double().to(t.device)
        t_next = torch.where(s_next > 0, self.timestep(s_next.clamp(min=float(self.sigmas[0]))), t)
        scales = self.scale_arr.to(t.device)
        # The ratio in float32, as the reference divides it; ratio 1 on the last step (to s = 0), as its k = 0.
        r = (scales[t_next] / scales[t]).double()
        span = s - s_next
        k = 1 + s * (1 - s_next) * (r - 1) / torch.where(span != 0, span, torch.ones_like(span))
        return torch.where(span != 0, k, r)

    def coefficients(self, t: torch.Tensor, s: torch.Tensor, s_next: torch.Tensor | None = None):
        """(alpha, beta) [B] float64 of denoised = alpha·y + beta·output at timesteps t [B] and sigmas s [B]."""
        k = self.rescale_factor(t, s, s_next)
        dev = t.device
        (px, po), (ux, uo) = [(a.to(dev)[t], b.to(dev)[t]) for a, b in (self._x0, self._eps)]
        # denoised = d·k·x0 + c·eps, with x0 = px·x + po·o, eps = ux·x + uo·o and x = gamma·y.
        alpha = self.input_scale(t) * (self.d * k * px + self.c * ux)
        beta = self.d * k * po + self.c * uo
        return alpha, beta

    def noise_scaling(self, s: torch.Tensor, noise: torch.Tensor, latent: torch.Tensor, max_denoise: bool):
        """The starting y: pure noise is x_T = noise (the reference's start), else the flow mix of latent and noise."""
        s4 = s.double().reshape(-1, *([1] * (noise.ndim - 1))).to(noise.device)
        if max_denoise:
            t = self.timestep(s.reshape(-1)).to(noise.device)
            inv_gamma = (1 / self.input_scale(t)).reshape(s4.shape)
            return (noise.double() * inv_gamma + (1 - s4) * latent.double()).to(noise.dtype)
        return (s4 * noise.double() + (1 - s4) * latent.double()).to(noise.dtype)


def next_sigmas(sigma: torch.Tensor, sample_sigmas: torch.Tensor | None) -> torch.Tensor | None:
    """The schedule's next (smaller) sigma after each sigma [B], from the sampler's list; None without a list."""
    if sample_sigmas is None:
        return None
    schedule = sample_sigmas.detach().float().cpu().tolist()
    out = []
    for value in sigma.detach().float().cpu().tolist():
        if value in schedule[:-1]:
            out.append(schedule[schedule.index(value) + 1])
        else:  # a sampler's in-between evaluation: the next smaller sigma of the schedule
            out.append(next((x for x in schedule if x < value), 0.0))
    return torch.tensor(out, dtype=torch.float64)


def videos(x: torch.Tensor, frames: int) -> torch.Tensor:
    """ComfyUI's SD-layout latent [(B T),C,h,w] -> the model's [B,C,T,h,w]."""
    if x.ndim != 4 or x.shape[0] % frames:
        raise NativeError(f"the latent must be [(videos x {frames} frames), 4, h, w] for this {frames}-frame model; "
                          f"got shape {tuple(x.shape)}. Use the LATENT of {node_name('CamI2VImageToVideo')}.")
    return rearrange(x, "(b t) c h w -> b c t h w", t=frames)


def frames_of(x: torch.Tensor) -> torch.Tensor:
    """[B,C,T,h,w] -> [(B T),C,h,w]."""
    return rearrange(x, "b c t h w -> (b t) c h w")


# -- the ComfyUI classes (built on first use, so the pack imports without ComfyUI) ---------------------------------

def require_comfy():
    """Import the comfy modules a native node needs, or say that it only works inside ComfyUI."""
    try:
        import comfy.conds
        import comfy.latent_formats
        import comfy.model_base
        import comfy.model_management
        import comfy.model_patcher
        import comfy.model_sampling
        import comfy.samplers
        import comfy.supported_models_base
        import comfy.utils
    except ImportError as e:
        raise NativeError(f"native sampling needs ComfyUI (could not import {e.name}); outside ComfyUI use "
                          f"{node_name('CamI2VSampler')} or `python -m cami2v_core generate`") from e
    return comfy


@functools.cache
def comfy_classes():
    """The BaseModel, model-sampling, cond and guider classes, defined against the running ComfyUI."""
    comfy = require_comfy()

    class PerVideo(comfy.conds.CONDRegular):
        """A per-video tensor [1, ...], repeated to the number of videos in the latent batch (not its frames)."""

        def __init__(self, cond, frames: int):
            super().__init__(cond)
            self.frames = frames

        def _copy_with(self, cond):
            return PerVideo(cond, self.frames)

        def process_cond(self, batch_size, **kwargs):
            return self._copy_with(comfy.utils.repeat_to_batch_size(self.cond, max(1, batch_size // self.frames)))

    class CameraCond(comfy.conds.CONDRegular):
        """The camera condition (a `camera.CameraCondition`, built once): batched only with the very same one."""

        def __init__(self, camera, frames: int, videos: int = 1):
            self.cond, self.frames, self.videos = camera, frames, videos

        def process_cond(self, batch_size, **kwargs):
            return CameraCond(self.cond, self.frames, max(1, batch_size // self.frames))

        def can_concat(self, other):
            return other.cond is self.cond

        def concat(self, others):
            n = self.videos + sum(o.videos for o in others)
            return self.cond if n == 1 else self.cond.repeat_batch(n)

        def size(self):
            return [1]

    class CamI2VConfig(comfy.supported_models_base.BASE):
        unet_config = {"disable_unet_model_creation": True}
        unet_extra_config = {}
        sampling_settings = {}
        latent_format = comfy.latent_formats.SD15
        memory_usage_factor = 2.0
        supported_inference_dtypes = [torch.float16, torch.bfloat16, torch.float32]

    class CamI2VModelSampling(torch.nn.Module, comfy.model_sampling.CONST):
        """ComfyUI model sampling in the (s, y) coordinates of `SamplingCoordinates`: sigma s, latent y."""

        def __init__(self, coords: SamplingCoordinates):
            super().__init__()
            self.coords = coords
            self.register_buffer("sigmas", coords.sigmas.clone())
            self.register_buffer("log_sigmas", coords.sigmas.log())

        @property
        def sigma_min(self):
            return self.sigmas[0]

        @property
        def sigma_max(self):
            return self.sigmas[-1]

        def timestep(self, sigma):
            return self.coords.timestep(sigma).to(sigma.device).float()

        def sigma(self, timestep):
            t = timestep.float().clamp(0, len(self.sigmas) - 1).to(self.log_sigmas.device)
            lo, hi, w = t.floor().long(), t.ceil().long(), t.frac()
            return ((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi]).exp().to(timestep.device)

        def percent_to_sigma(self, percent):
            if percent <= 0.0:
                return 999999999.9
            if percent >= 1.0:
                return 0.0
            return float(self.sigma(torch.tensor((1.0 - percent) * (len(self.sigmas) - 1))))

        def _t(self, sigma):
            return self.coords.timestep(sigma.reshape(-1))

        def calculate_input(self, sigma, noise):
            gamma = self.coords.input_scale(self._t(sigma).to(noise.device)).reshape(-1, *([1] * (noise.ndim - 1)))
            return (noise.double() * gamma).to(noise.dtype)

        def calculate_denoised(self, sigma, model_output, model_input):
            return denoise(self.coords, sigma, model_output, model_input, None)

        def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
            return self.coords.noise_scaling(sigma.reshape(-1), noise, latent_image, max_denoise)

        def inverse_noise_scaling(self, sigma, latent):
            s = float(sigma.reshape(-1)[0]) if torch.is_tensor(sigma) else float(sigma)
            return latent if s >= 1.0 else latent / (1.0 - s)

    class CamI2VBaseModel(comfy.model_base.BaseModel):
        """The UNet of a loaded CamI2V model (shared, not copied) under ComfyUI's model interface.

        Only the UNet is a submodule, so ComfyUI moves and measures just it; the encoders stay with the CamI2V
        model, which the conditioning node uses. The UNet call itself is `CamI2VModel.apply_model`."""

        def __init__(self, handle):
            net = handle.model
            config = CamI2VConfig({"disable_unet_model_creation": True})
            config.latent_format = comfy.latent_formats.SD15(scale_factor=float(net.config.scale_factor))
            if not math.isclose(net.config.scale_factor, 0.18215):
                config.latent_format.latent_rgb_factors = None  # SD's preview colours would mislead for this VAE
            super().__init__(config, model_type=comfy.model_base.ModelType.FLOW)
            self.cami2v = (net,)  # a tuple, so the whole CamI2V model is not registered as a submodule
            self.diffusion_model = net.model.diffusion_model
            self.frames = int(net.config.temporal_length)
            self.has_camera = net.config.camera is not None
            self.attention_backend = handle.attention
            scale_arr = getattr(net, "scale_arr", None) if net.config.use_dynamic_rescale else None
            self.model_sampling = CamI2VModelSampling(SamplingCoordinates(net.alphas_cumprod, net.parameterization,
                                                                          scale_arr))

        def get_dtype(self):
            return next(self.diffusion_model.parameters()).dtype

        def extra_conds(self, **kwargs):
            out = {}
            context = kwargs.get("cross_attn", None)
            concat = kwargs.get(CONCAT_KEY, None)
            if context is None or concat is None:
                raise NativeError(f"this conditioning was not made for a CamI2V model; connect positive and "
                                  f"negative from {node_name('CamI2VImageToVideo')}")
            out["c_crossattn"] = PerVideo(context, self.frames)
            out["c_concat"] = PerVideo(concat, self.frames)
            out["fs"] = PerVideo(kwargs[FS_KEY], self.frames)
            if kwargs.get(CAMERA_KEY) is not None:
                out["camera"] = CameraCond(kwargs[CAMERA_KEY], self.frames)
            return out

        def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={},
                         **kwargs):
            net = self.cami2v[0]
            sigma = t
            steps = self.model_sampling._t(sigma).to(x.device)
            x_t = videos(self.model_sampling.calculate_input(sigma, x), self.frames)
            n = x_t.shape[0]
            if c_concat is None or c_concat.shape[0] != n or c_concat.shape[-2:] != x_t.shape[-2:]:
                got = None if c_concat is None else tuple(c_concat.shape)
                raise NativeError(f"the latent ({n} video(s) of {tuple(x_t.shape[-2:])} latent cells) does not match "
                                  f"the conditioning picture (concat {got}); use the LATENT of "
                                  f"{node_name('CamI2VImageToVideo')} with its positive and negative")
            device, dtype = x.device, self.get_dtype()
            if getattr(self, "model_lowvram", False) or next(self.diffusion_model.parameters()).device != device:
                # Plain torch layers cannot be streamed by ComfyUI's partial loading, and the reference sampler may
                # have moved the UNet behind ComfyUI's back: either way, put all of it where the latent is.
                self.diffusion_model.to(device)
            camera = kwargs.get("camera", None)
            if camera is not None and camera.batch_size is not None:
                camera = camera.to(device)
            previous = attention.get_backend()
            attention.set_backend(self.attention_backend)
            try:
                out = net.apply_model(x_t.to(dtype), steps[::self.frames], c_crossattn.to(device, dtype),
                                      c_concat.to(device, dtype), kwargs["fs"].to(device), camera=camera).float()
            finally:
                attention.set_backend(previous)
            out = frames_of(out)
            if transformer_options.get("cami2v_raw_output", False):
                return out
            return denoise(self.model_sampling.coords, sigma, out, x, transformer_options.get("sample_sigmas"))

        def cami2v_coefficients(self, sigma, sample_sigmas=None):
            """(alpha, beta) [B] of denoised = alpha·y + beta·output at ComfyUI sigmas [B]."""
            coords = self.model_sampling.coords
            flat = sigma.reshape(-1)
            return coords.coefficients(coords.timestep(flat), flat, next_sigmas(flat, sample_sigmas))

    class CamI2VGuider(comfy.samplers.CFGGuider):
        """SamplerCustomAdvanced guider: the reference's branches and guidance (`sampling.combine_guidance`)."""

        def __init__(self, model_patcher, guidance: Guidance):
            super().__init__(model_patcher)
            self.guidance = guidance
            model = model_patcher.model
            if not isinstance(model, CamI2VBaseModel):
                raise NativeError(f"the CamI2V guider drives a MODEL from {node_name('CamI2VToComfyModel')}; got "
                                  f"{type(model).__name__}")
            if not model.has_camera and guidance.cfg_camera != 1:
                raise NativeError(f"this model has no camera input, so camera guidance cannot work; set cfg_camera "
                                  f"to 1 (got {guidance.cfg_camera})")
            self.branches = guidance.branches(camera=model.has_camera)
            self.frames = model.frames

        def set_conds(self, positive, negative):
            conds = {"positive": positive, "negative": negative}
            if "image" in self.branches:
                conds[GUIDER_CONDS["image"]] = image_branch(positive)
            if "nocam" in self.branches:
                conds[GUIDER_CONDS["nocam"]] = [[c, {k: v for k, v in d.items() if k != CAMERA_KEY}]
                                                for c, d in positive]
            self.inner_set_conds(conds)

        def predict_noise(self, x, timestep, model_options={}, seed=None):
            options = dict(model_options)
            options["transformer_options"] = {**model_options.get("transformer_options", {}),
                                              "cami2v_raw_output": True}
            conds = [self.conds[GUIDER_CONDS[b]] for b in self.branches]
            raw = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, options)
            outputs = {b: videos(o, self.frames) for b, o in zip(self.branches, raw)}
            coords = self.inner_model.model_sampling.coords
            t = coords.timestep(timestep.reshape(-1)).to(x.device)[::self.frames]
            e = combine_guidance(outputs, self.guidance, t, coords.num_timesteps)
            if self.guidance.rescale > 0 and len(self.branches) > 1:
                e = rescale_guidance(e, outputs["cond"], self.guidance.rescale)
            return denoise(coords, timestep, frames_of(e), x,
                           model_options.get("transformer_options", {}).get("sample_sigmas"))

    from types import SimpleNamespace
    return SimpleNamespace(PerVideo=PerVideo, CameraCond=CameraCond, ModelSampling=CamI2VModelSampling,
                           BaseModel=CamI2VBaseModel, Guider=CamI2VGuider)


def denoise(coords: SamplingCoordinates, sigma: torch.Tensor, output: torch.Tensor, y: torch.Tensor,
            sample_sigmas: torch.Tensor | None) -> torch.Tensor:
    """ComfyUI's "denoised" (P0, with the dynamic rescale) from the model output [N,...] at latent y [N,...]."""
    flat = sigma.reshape(-1).expand(y.shape[0]) if sigma.numel() == 1 else sigma.reshape(-1)
    s_next = next_sigmas(flat, sample_sigmas) if coords.scale_arr is not None else None
    alpha, beta = coords.coefficients(coords.timestep(flat).to(y.device), flat.to(y.device), s_next)
    shape = (-1,) + (1,) * (y.ndim - 1)
    return (alpha.reshape(shape) * y.double() + beta.reshape(shape) * output.double()).to(y.dtype)


def image_branch(positive):
    """The reference's "image" branch (negative text + image + camera) from a positive conditioning."""
    out = []
    for context, entry in positive:
        if IMAGE_CONTEXT_KEY not in entry:
            raise NativeError(f"separate text and image scales need the positive conditioning of "
                              f"{node_name('CamI2VImageToVideo')} (it carries the image-only branch)")
        out.append([entry[IMAGE_CONTEXT_KEY], {k: v for k, v in entry.items() if k != IMAGE_CONTEXT_KEY}])
    return out


def rescale_cfg_function(phi: float):
    """KSampler's CFG with the reference's guidance rescale (sampling.rescale_guidance) on the model output."""

    def cfg(args):
        y, sigma, scale = args["input"], args["sigma"], float(args["cond_scale"])
        cond, uncond = args["cond_denoised"], args["uncond_denoised"]
        if math.isclose(scale, 1.0):  # one branch: the reference rescales nothing
            return y - cond
        model = args["model"]
        frames = model.frames
        sample_sigmas = args["model_options"].get("transformer_options", {}).get("sample_sigmas")
        alpha, beta = model.cami2v_coefficients(sigma.expand(y.shape[0]) if sigma.numel() == 1 else sigma,
                                                sample_sigmas)
        shape = (-1,) + (1,) * (y.ndim - 1)
        alpha, beta = alpha.to(y.device).reshape(shape), beta.to(y.device).reshape(shape)
        if bool((beta.abs() < 1e-6).any()):  # at t = 0 denoised is y itself: nothing to guide
            return y - (uncond + scale * (cond - uncond))
        # Back to model outputs (eps or v) in float64, where the reference combines and rescales them.
        outputs = {name: videos((d.double() - alpha * y.double()) / beta, frames)
                   for name, d in (("cond", cond), ("uncond", uncond))}
        e = combine_guidance(outputs, Guidance(cfg_text=scale, rescale=phi))
        e = frames_of(rescale_guidance(e, outputs["cond"], phi))
        return y - (alpha * y.double() + beta * e).to(y.dtype)

    return cfg


def comfy_model(handle, guidance_rescale: float):
    """A ModelPatcher for a CAMI2V_MODEL's UNet: a clone of one patcher kept with the loaded model, so ComfyUI
    sees one model (the BaseModel lives as long as the CamI2V model, and the clones of each run refer to it)."""
    comfy = require_comfy()
    base = getattr(handle, "_comfy_patcher", None)
    if base is None:
        mm = comfy.model_management
        base = comfy.model_patcher.ModelPatcher(comfy_classes().BaseModel(handle), load_device=mm.get_torch_device(),
                                                offload_device=mm.unet_offload_device())
        handle._comfy_patcher = base
    patcher = base.clone()
    if guidance_rescale > 0:
        patcher.set_model_sampler_cfg_function(rescale_cfg_function(float(guidance_rescale)))
    return patcher


# -- nodes -----------------------------------------------------------------------------------------------------------

RESCALE = ("FLOAT", {"default": DEFAULTS.guidance_rescale, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                     "Guidance rescale: moves the guided prediction's spread to the conditional one's (0.7 "
                     "released, 0 = off), as the CamI2V Sampler does."})


class CamI2VToComfyModel:
    """A CamI2V model's UNet as a ComfyUI MODEL."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("CAMI2V_MODEL", {"tooltip": f"From {node_name('CamI2VModelLoader')}."}),
                "guidance_rescale": (RESCALE[0], {**RESCALE[1], "tooltip": RESCALE[1]["tooltip"] + " Used by "
                                     "KSampler's cfg; the CamI2V Guider has its own."}),
            },
        }

    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A ComfyUI MODEL for KSampler / SamplerCustomAdvanced (flow-style sigmas in [0, 1]); feed it "
                       f"the conditioning and latent of {node_name('CamI2VImageToVideo')}.",)
    FUNCTION = "convert"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Wraps the loaded model's UNet (shared, not copied) as a ComfyUI MODEL managed by ComfyUI's "
                   "memory manager, so ComfyUI's samplers and schedulers run it. KSampler with sampler 'ddim' and "
                   "scheduler 'simple' (eta 0) replays the CamI2V Sampler's DDIM; cfg is the joint text-and-image "
                   "scale. Use the CamI2V Guider for separate scales and camera guidance.")

    def convert(self, model, guidance_rescale):
        if not 0.0 <= guidance_rescale <= 1.0:
            raise ValueError(f"guidance_rescale must lie in [0, 1]; got {guidance_rescale}")
        return (comfy_model(model, guidance_rescale),)


class CamI2VImageToVideo:
    """Picture + camera + prompts -> conditioning and an empty video latent for a native CamI2V MODEL."""

    @classmethod
    def INPUT_TYPES(cls):
        ref = {**CamI2VSampler.INPUT_TYPES()["required"], **CamI2VSampler.INPUT_TYPES()["optional"]}
        seed = (ref["seed"][0], {**ref["seed"][1], "tooltip": "Seeds the picture's VAE latent and CamI2V's "
                "camera perturbation (the CamI2V Sampler's first draws); the sampler's own seed makes the noise."})
        return {
            "required": {
                "model": ("CAMI2V_MODEL", {"tooltip": f"From {node_name('CamI2VModelLoader')}: its CLIP, VAE and "
                          "camera encoder make the conditioning."}),
                "image": ref["image"], "prompt": ref["prompt"], "negative_prompt": ref["negative_prompt"],
                "seed": seed, "frame_stride": ref["frame_stride"], "trace_scale": ref["trace_scale"],
                "cond_frame": ref["cond_frame"],
            },
            "optional": {"camera": ref["camera"], "use_camera_intrinsics": ref["use_camera_intrinsics"],
                         "fit": ref["fit"]},
        }

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT", "STRING")
    RETURN_NAMES = ("positive", "negative", "latent", "report")
    OUTPUT_TOOLTIPS = ("Prompt + picture + camera (the reference's conditional branch).",
                       "Negative prompt + blank picture + camera (the unconditional branch).",
                       "An empty video latent of the right shape (frames on the batch axis).",
                       "What was adapted to fit the model (e.g. a camera path resampled to its frames).")
    FUNCTION = "encode"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Encodes the picture, prompts and camera path once, with the CamI2V model's own encoders, for "
                   f"KSampler or SamplerCustomAdvanced driving the MODEL of {node_name('CamI2VToComfyModel')}. "
                   f"Decode the sampled latent with {node_name('CamI2VDecode')}.")

    def encode(self, model, image, prompt, negative_prompt, seed, frame_stride, trace_scale, cond_frame, camera=None,
               use_camera_intrinsics=False, fit="crop"):
        net = model.model
        picture, w2c, intrinsics, trace_scale, notes = sampler_inputs(net, image, camera, cond_frame, fit,
                                                                      trace_scale, "CamI2VImageToVideo")
        with placed(model, comfy_bridge.torch_device()) as net:
            # Every branch's text once (the image branch shares the negative prompt), in the reference's order.
            cond = pipeline.encode_conditioning(
                net, picture, w2c, intrinsics if use_camera_intrinsics else None, prompt, negative_prompt,
                frame_stride, cond_frame, trace_scale, branches=("cond", "uncond", "image"),
                generator=pipeline.make_generator(seed), offload=not model.keep_loaded, fit=fit)
        frames = net.config.temporal_length
        shared = {CONCAT_KEY: cond.c_concat, FS_KEY: cond.fs}
        if cond.camera is not None:
            shared[CAMERA_KEY] = cond.camera  # one object in every branch, so ComfyUI batches the branches
        positive = [[cond.context["cond"], {**shared, IMAGE_CONTEXT_KEY: cond.context["image"]}]]
        negative = [[cond.context["uncond"], dict(shared)]]
        h, w = cond.c_concat.shape[-2:]
        latent = {"samples": torch.zeros(frames, net.config.channels, h, w), "cami2v_frames": frames,
                  "cami2v_fps": DEFAULTS.playback_fps(frame_stride), "cami2v_scaled": False}
        report = "\n".join(notes) if notes else f"{frames} frames; the picture and camera path fitted as they were"
        return {"ui": {"text": [report]}, "result": (positive, negative, latent, report)}


class CamI2VGuider:
    """A guider for SamplerCustomAdvanced with CamI2V's separate text, image and camera guidance."""

    @classmethod
    def INPUT_TYPES(cls):
        ref = CamI2VSampler.INPUT_TYPES()["required"]
        return {
            "required": {
                "model": ("MODEL", {"tooltip": f"From {node_name('CamI2VToComfyModel')}."}),
                "positive": ("CONDITIONING", {"tooltip": f"From {node_name('CamI2VImageToVideo')}."}),
                "negative": ("CONDITIONING", {"tooltip": f"From {node_name('CamI2VImageToVideo')}."}),
                "cfg_text": ref["cfg_text"], "cfg_image": ref["cfg_image"], "cfg_camera": ref["cfg_camera"],
                "camera_schedule": (list(CAMERA_SCHEDULES), ref["camera_schedule"][1]),
                "guidance_rescale": RESCALE,
            },
        }

    RETURN_TYPES = ("GUIDER",)
    RETURN_NAMES = ("guider",)
    OUTPUT_TOOLTIPS = ("For SamplerCustomAdvanced.",)
    FUNCTION = "get_guider"
    CATEGORY = CATEGORY
    DESCRIPTION = ("The CamI2V Sampler's guidance for ComfyUI's samplers: text, image and camera scales, the camera "
                   "schedule and guidance rescale, combined as the reference does. Equal text and image scales run "
                   "two branches per step; different ones add an image-only branch, cfg_camera != 1 a no-camera one.")

    def get_guider(self, model, positive, negative, cfg_text, cfg_image, cfg_camera, camera_schedule,
                   guidance_rescale):
        classes = comfy_classes()
        guidance = Guidance(cfg_text=cfg_text, cfg_image=cfg_image, cfg_camera=cfg_camera,
                            camera_schedule=camera_schedule, rescale=guidance_rescale)
        guider = classes.Guider(model, guidance)
        guider.set_conds(positive, negative)
        return (guider,)


NATIVE_NODES = {
    "CamI2VToComfyModel": CamI2VToComfyModel,
    "CamI2VImageToVideo": CamI2VImageToVideo,
    "CamI2VGuider": CamI2VGuider,
}

__all__ = ["NATIVE_NODES", "SamplingCoordinates", "comfy_classes", "comfy_model", "next_sigmas"]
