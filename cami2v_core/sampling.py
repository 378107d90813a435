"""Noise schedules, DDIM, fewer-step ODE solvers and multi-condition guidance (spec §7). Imports nothing from
`modules/`.

The samplers never see a network: they call `denoise_fn(x_t, t, branches)`, which returns one raw model output per
guidance branch; `guided_denoiser` combines them with the pure function `combine_guidance` and guidance rescale,
so every sampler gets the same guided output. DDIM (`sample_ddim`, the exact reference path) converts it to (eps, x0)
with the parameterisation chosen before the loop (eps or v, spec §7.5) and takes one DDIM step (DDIM paper eq. 12).
`sample_dpmpp_2m` and `sample_unipc` solve the same probability-flow ODE in fewer steps (see their section below).

Legend, following spec §7.2-7.5 (k indexes the ascending DDIM grid, the loop visits k = S-1 .. 0):
    a_t      ᾱ at timestep τ_k                       (float32, as the original reads it from its buffer)
    a_prev   ᾱ at τ_{k-1}; ᾱ_0 for the lowest step   (kept in float64, read as float32 each step)
    sigma    η·sqrt((1-a_prev)/(1-a_t)·(1-a_t/a_prev)), the DDIM noise std (float64, read as float32)
    eps, x0  predicted noise and predicted clean latent
Precision follows the original sampler operation by operation, so the golden runs replay within fp32 round-off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .errors import CamI2VError

SPACINGS = ("uniform_trailing", "uniform", "quad")
CAMERA_SCHEDULES = ("constant", "cosine")
PREDICTIONS = ("eps", "v")
BRANCHES = ("cond", "uncond", "image", "nocam")

# `denoise_fn(x_t [B,C,T,h,w], t [B] long, branches) -> {branch: raw model output [B,C,T,h,w]}`. The branches
# (see `Guidance.branches`): "cond" = text + image + camera, "uncond" = negative text + zero image + camera,
# "image" = negative text + image + camera, "nocam" = text + image without any camera input (spec §7.3, §7.4).
DenoiseFn = Callable[[torch.Tensor, torch.Tensor, tuple], dict]


class SamplingError(CamI2VError, ValueError):
    """Sampler settings that cannot work; the message says what was expected, what was found and what to do."""


# -- noise schedules (spec §7.2) -----------------------------------------------------------------------------------

def make_beta_schedule(linear_start: float = 0.00085, linear_end: float = 0.012,
                       timesteps: int = 1000) -> torch.Tensor:
    """β of the "linear" LDM schedule: linspace(√start, √end, N)² in float64 -> [N]."""
    return torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """β rescaled so that ᾱ_{N-1} = 0 (Lin et al. 2023, alg. 1; 512 models, spec §7.2): [N] -> [N] float64."""
    sqrt_abar = torch.cumprod(1.0 - betas.double(), dim=0).sqrt()
    first, last = sqrt_abar[0].clone(), sqrt_abar[-1].clone()
    # Shift so the last √ᾱ is 0, then scale so the first keeps its value.
    sqrt_abar = (sqrt_abar - last) * (first / (first - last))
    abar = sqrt_abar ** 2
    alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ_t = Π_{s≤t}(1-β_s) in float64: [N] -> [N]."""
    return torch.cumprod(1.0 - betas.double(), dim=0)


def schedule_alphas_cumprod(linear_start: float = 0.00085, linear_end: float = 0.012, timesteps: int = 1000,
                            zero_terminal_snr: bool = False) -> torch.Tensor:
    """The model's ᾱ buffer as the original registers it (float64 maths, stored float32): [N] float32."""
    betas = make_beta_schedule(linear_start, linear_end, timesteps)
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return alphas_cumprod_from_betas(betas).float()


def dynamic_rescale_table(base_scale: float = 0.7, turning_step: int = 400, timesteps: int = 1000) -> torch.Tensor:
    """The 512 models' `scale_arr`: [linspace(1, base, turning_step), base × timesteps] (spec §7.5) -> float32."""
    ramp = np.linspace(1.0, base_scale, turning_step)
    table = np.concatenate([ramp, np.full(timesteps, ramp[-1])])
    return torch.from_numpy(table).float()


def ddim_timesteps(spacing: str, steps: int, num_train_timesteps: int = 1000) -> torch.Tensor:
    """The DDIM grid, ascending, for one of `SPACINGS` (the original's discretisations): [S] long."""
    if spacing not in SPACINGS:
        raise SamplingError(f"timestep spacing must be one of {', '.join(map(repr, SPACINGS))}; got {spacing!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= num_train_timesteps:
        raise SamplingError(f"steps must be an integer from 1 to {num_train_timesteps}; got {steps!r}. "
                            "25 or 50 are the released settings (spec §7.6).")
    n = num_train_timesteps
    if spacing == "uniform_trailing":
        # Spec §7.2: the grid ends on the last training step (999), so sampling starts from pure noise.
        c = n / steps
        grid = np.flip(np.round(np.arange(n, 0, -c))).astype(np.int64) - 1
    elif spacing == "uniform":
        grid = np.arange(0, n, n // steps, dtype=np.int64) + 1
    else:  # "quad"
        grid = (np.linspace(0, np.sqrt(n * 0.8), steps) ** 2).astype(np.int64) + 1
    if grid.min() < 0 or grid.max() >= n:
        raise SamplingError(f"{spacing!r} spacing with {steps} steps gives timesteps outside 0..{n - 1} "
                            f"(got {grid.min()}..{grid.max()}); use 'uniform_trailing' or another step count")
    return torch.from_numpy(np.ascontiguousarray(grid))


@dataclass
class DDIMSchedule:
    """Per-step DDIM coefficients on the ascending grid (index k); see the module legend for precisions."""

    timesteps: torch.Tensor                 # [S] long, ascending
    alphas: torch.Tensor                    # [S] float32, a_t
    alphas_prev: torch.Tensor               # [S] float64, a_prev (ᾱ_0 at k = 0)
    sigmas: torch.Tensor                    # [S] float64
    sqrt_one_minus_alphas: torch.Tensor     # [S] float32, sqrt(1 - a_t) computed in float32
    sqrt_alphas_cumprod: torch.Tensor       # [S] float32, √ᾱ_t of the model buffer (v-prediction)
    sqrt_one_minus_alphas_cumprod: torch.Tensor  # [S] float32, √(1-ᾱ_t) of the model buffer (v-prediction)
    scales: torch.Tensor | None = None      # [S] float32, dynamic-rescale s_k (512 models) or None
    scales_prev: torch.Tensor | None = None  # [S] float32, s_{k-1} (s_0 at k = 0)
    num_train_timesteps: int = 1000

    def __len__(self) -> int:
        return int(self.timesteps.numel())


def ddim_coefficients(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, eta: float = 1.0,
                      scale_arr: torch.Tensor | None = None) -> DDIMSchedule:
    """DDIM coefficients from the model's ᾱ [N] and an ascending grid [S] (spec §7.2, §7.5)."""
    if not math.isfinite(float(eta)) or eta < 0:
        raise SamplingError(f"eta must be a finite number >= 0 (0 = deterministic DDIM, 1 = the released setting); "
                            f"got {eta!r}")
    abar = alphas_cumprod.detach().float().cpu()
    ts = timesteps.long().cpu()
    a_t = abar[ts]
    # The lowest step's previous ᾱ is ᾱ_0, not 1 (spec §7.2): the last update keeps a trace of noise.
    a_prev = torch.cat([abar[:1], abar[ts[:-1]]]).double()
    # σ of DDIM eq. 16 in float64, except that 1/(1 - a_t) is taken in float32: the original divides a float64
    # array by a float32 tensor, which torch evaluates as reciprocal-then-multiply. Matching it keeps σ bit-exact.
    inv_1m_a_t = (1.0 - a_t).reciprocal().double()
    sigmas = eta * torch.sqrt(inv_1m_a_t * (1 - a_prev) * (1 - a_t.double() / a_prev))
    sqrt_abar = abar.double().sqrt().float()[ts]
    sqrt_1m_abar = (1.0 - abar.double()).sqrt().float()[ts]
    scales = scales_prev = None
    if scale_arr is not None:
        scales = scale_arr.detach().float().cpu()[ts]
        scales_prev = torch.cat([scales[:1], scales[:-1]])
    # sqrt(1 - a_t): the subtraction in float32, then a correctly rounded root (numpy's, which the original used;
    # torch's vectorised float32 sqrt can be one ulp off).
    sqrt_1m_a_t = (1.0 - a_t).double().sqrt().float()
    return DDIMSchedule(ts, a_t, a_prev, sigmas, sqrt_1m_a_t, sqrt_abar, sqrt_1m_abar, scales, scales_prev,
                        int(abar.numel()))


def make_ddim_schedule(alphas_cumprod: torch.Tensor, steps: int, eta: float = 1.0,
                       spacing: str = "uniform_trailing", scale_arr: torch.Tensor | None = None) -> DDIMSchedule:
    """`ddim_timesteps` + `ddim_coefficients` for a model's ᾱ [N]."""
    return ddim_coefficients(alphas_cumprod, ddim_timesteps(spacing, steps, int(alphas_cumprod.numel())), eta,
                             scale_arr)


# -- guidance (spec §7.3, design.md §2) ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Guidance:
    """Guidance settings: text, image and camera scales, camera schedule, and guidance rescale φ.

    `cfg_image=None` means "same as cfg_text": the original's single joint scale (spec §7.3).
    """

    cfg_text: float = 7.5
    cfg_image: float | None = None
    cfg_camera: float = 1.0
    camera_schedule: str = "constant"
    rescale: float = 0.7

    def __post_init__(self):
        if self.camera_schedule not in CAMERA_SCHEDULES:
            raise SamplingError(f"camera_schedule must be one of {', '.join(map(repr, CAMERA_SCHEDULES))}; "
                                f"got {self.camera_schedule!r}")
        for name in ("cfg_text", "cfg_image", "cfg_camera", "rescale"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(float(value)):
                raise SamplingError(f"{name} must be a finite number; got {value!r}")
        if not 0.0 <= self.rescale <= 1.0:
            raise SamplingError(f"rescale (guidance rescale φ) must lie in [0, 1]; got {self.rescale!r}. "
                                "0.7 is the released setting, 0 turns it off.")

    @property
    def image_scale(self) -> float:
        return self.cfg_text if self.cfg_image is None else self.cfg_image

    def branches(self, camera: bool = True) -> tuple[str, ...]:
        """The UNet branches these scales need; a branch whose scale cancels it is never run."""
        s_txt, s_img = self.cfg_text, self.image_scale
        out = ["cond"]
        if s_txt != s_img:
            out.append("image")
            if s_img != 1:
                out.append("uncond")
        elif s_txt != 1:
            out.append("uncond")
        if camera and self.cfg_camera != 1:
            out.append("nocam")
        return tuple(out)


def camera_guidance_weight(t: torch.Tensor, schedule: str, num_train_timesteps: int = 1000):
    """Camera-CFG weight w(t) (spec §7.3): 1 ("constant") or cos((1 - t/(N-1))·π/2) ("cosine"): float | [B,1,1,1,1]."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        # Per-sample weight broadcast over (C,T,h,w); strongest at t = N-1, zero at t = 0.
        w = ((1.0 - t / (num_train_timesteps - 1)) * math.pi / 2).cos()
        return w.reshape(-1, 1, 1, 1, 1)
    raise SamplingError(f"camera schedule must be one of {', '.join(map(repr, CAMERA_SCHEDULES))}; got {schedule!r}")


def combine_guidance(outputs: dict, guidance: Guidance, t: torch.Tensor | None = None,
                     num_train_timesteps: int = 1000) -> torch.Tensor:
    """Guided model output from the branch outputs {name: [B,C,T,h,w]} (spec §7.3, design.md §2), before rescale."""
    e_c = outputs["cond"]
    s_txt, s_img = guidance.cfg_text, guidance.image_scale
    if s_txt == s_img:
        # Exactly the original single-scale update; scale 1 is the plain conditional output.
        e = e_c if s_txt == 1 else outputs["uncond"] + s_txt * (e_c - outputs["uncond"])
    elif s_img == 1:
        # e_u + 1·(e_img - e_u) + s_txt·(e_c - e_img): e_u cancels, so its pass is skipped.
        e = outputs["image"] + s_txt * (e_c - outputs["image"])
    else:
        # Separate scales (DynamiCrafter's multiple-condition CFG): image guidance from e_u towards the image-only
        # branch, text guidance from there towards the full condition.
        e_u, e_img = outputs["uncond"], outputs["image"]
        e = e_u + s_img * (e_img - e_u) + s_txt * (e_c - e_img)
    if guidance.cfg_camera != 1:
        if "nocam" not in outputs:
            raise SamplingError("cfg_camera != 1 needs the 'nocam' branch, but the denoiser did not return it; "
                                "a model without camera input cannot use camera guidance: set cfg_camera to 1")
        if guidance.camera_schedule != "constant" and t is None:
            raise SamplingError("the cosine camera schedule needs the timestep t")
        w = camera_guidance_weight(t, guidance.camera_schedule, num_train_timesteps)
        e = e + (guidance.cfg_camera - 1.0) * w * (e_c - outputs["nocam"])
    return e


def rescale_guidance(e: torch.Tensor, e_cond: torch.Tensor, phi: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2023 eq. 15-16, spec §7.3): e's per-sample std moved to e_cond's. [B,...] -> same"""
    dims = list(range(1, e.ndim))
    # Unbiased std (torch default), as the original.
    std_cond = e_cond.std(dim=dims, keepdim=True)
    std_e = e.std(dim=dims, keepdim=True)
    # A constant guided prediction (std 0, e.g. a freshly initialised UNet, whose output conv starts at zero) has
    # no spread to rescale: keep it as it is instead of dividing by zero (the original gives NaN there).
    ratio = torch.where(std_e > 0, std_cond / torch.where(std_e > 0, std_e, torch.ones_like(std_e)),
                        torch.ones_like(std_e))
    return phi * (e * ratio) + (1 - phi) * e


# -- parameterisation (spec §7.5) -------------------------------------------------------------------------------------

def _full(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """One coefficient as a float32 [B,1,...,1] tensor on like's device (the original reads them with torch.full)."""
    return torch.full((like.shape[0],) + (1,) * (like.ndim - 1), float(value), dtype=torch.float32,
                      device=like.device)


def eps_prediction(output: torch.Tensor, x: torch.Tensor, schedule: DDIMSchedule, k: int):
    """(eps, x0) from an eps-predicting model's output at grid index k: x0 = (x - √(1-a_t)·eps)/√a_t."""
    a_t = _full(schedule.alphas[k], x)
    sqrt_one_minus_a_t = _full(schedule.sqrt_one_minus_alphas[k], x)
    return output, (x - sqrt_one_minus_a_t * output) / a_t.sqrt()


def v_prediction(output: torch.Tensor, x: torch.Tensor, schedule: DDIMSchedule, k: int):
    """(eps, x0) from a v-model's output (spec §7.5): eps = √ᾱ·v + √(1-ᾱ)·x, x0 = √ᾱ·x - √(1-ᾱ)·v."""
    sqrt_abar = _full(schedule.sqrt_alphas_cumprod[k], x)
    sqrt_1m_abar = _full(schedule.sqrt_one_minus_alphas_cumprod[k], x)
    return sqrt_abar * output + sqrt_1m_abar * x, sqrt_abar * x - sqrt_1m_abar * output


PREDICTION_FNS = {"eps": eps_prediction, "v": v_prediction}


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, schedule: DDIMSchedule, k: int,
              noise: torch.Tensor) -> torch.Tensor:
    """x_{τ_{k-1}} = √a_prev·x0 + √max(0, 1-a_prev-σ²)·eps + σ·noise (DDIM paper eq. 12): tensors [B,...]."""
    a_prev = _full(schedule.alphas_prev[k], x0)
    sigma = _full(schedule.sigmas[k], x0)
    dir_xt = (1.0 - a_prev - sigma ** 2).clamp(min=0).sqrt() * eps
    return a_prev.sqrt() * x0 + dir_xt + sigma * noise


def q_sample(x0: torch.Tensor, t: torch.Tensor, sqrt_alphas_cumprod: torch.Tensor,
             sqrt_one_minus_alphas_cumprod: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Forward diffusion x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·noise (DDPM eq. 4) from the model's float32 buffers [N]:
    x0 and noise [B,...], t [B] long -> [B,...]."""
    shape = (x0.shape[0],) + (1,) * (x0.ndim - 1)
    a = sqrt_alphas_cumprod.to(x0.device)[t.to(x0.device)].reshape(shape).to(x0.dtype)
    b = sqrt_one_minus_alphas_cumprod.to(x0.device)[t.to(x0.device)].reshape(shape).to(x0.dtype)
    return a * x0 + b * noise


def randn(shape, generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """N(0, I) drawn on the generator's device (CPU by default) and moved to `device`, so a seed means the same
    numbers on every device."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype).to(device)


# -- the guided denoiser: what every sampler calls ----------------------------------------------------------------

GuidedFn = Callable[[torch.Tensor, torch.Tensor], tuple]


def guided_denoiser(denoise_fn: DenoiseFn, guidance: Guidance, camera: bool = True,
                    num_train_timesteps: int = 1000) -> GuidedFn:
    """`(x_t [B,C,T,h,w], t [B]) -> (guided model output [B,C,T,h,w], raw branch outputs)`.

    Runs the branches the scales need, combines them (text, image and camera scales, camera schedule, spec §7.3)
    and applies guidance rescale: everything a guidance setting changes happens here, so DDIM and every solver
    below see the same guided eps or v and differ only in how they step.
    """
    branches = guidance.branches(camera=camera)

    def guided(x, t):
        outputs = denoise_fn(x, t, branches)
        out = combine_guidance(outputs, guidance, t, num_train_timesteps)
        if guidance.rescale > 0 and len(branches) > 1:
            out = rescale_guidance(out, outputs["cond"], guidance.rescale)
        return out, outputs

    return guided


def _check_sampler_inputs(prediction: str, schedule: DDIMSchedule) -> None:
    if prediction not in PREDICTION_FNS:
        raise SamplingError(f"prediction must be one of {', '.join(map(repr, PREDICTIONS))}; got {prediction!r}")
    if len(schedule) < 1:
        raise SamplingError("the DDIM schedule is empty; ask for at least 1 step")


def _timestep(schedule: DDIMSchedule, k: int, like: torch.Tensor) -> torch.Tensor:
    """Grid index k's timestep as the [B] long tensor the denoiser takes."""
    return torch.full((like.shape[0],), int(schedule.timesteps[k]), dtype=torch.long, device=like.device)


# -- the sampler ----------------------------------------------------------------------------------------------------

@dataclass
class StepInfo:
    """What the per-step callback receives (tensors are [B,C,T,h,w])."""

    i: int                    # 0-based step number in visiting order
    steps: int                # total number of steps
    t: int                    # timestep of this step
    x_t: torch.Tensor         # latent before the step
    x_prev: torch.Tensor      # latent after the step
    pred_x0: torch.Tensor     # predicted clean latent (after dynamic rescale): use it for previews
    outputs: dict = field(default_factory=dict)  # raw branch outputs of the denoiser
    latent_rgb: torch.Tensor | None = None  # [C+1,3] latent -> RGB projection for previews (set by the pipeline)


def sample_ddim(denoise_fn: DenoiseFn, x_T: torch.Tensor, schedule: DDIMSchedule, guidance: Guidance = Guidance(),
                prediction: str = "eps", callback: Callable[[StepInfo], None] | None = None,
                noise_fn: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
                generator: torch.Generator | None = None, camera: bool = True,
                latent_hook: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """DDIM from x_T [B,C,T,h,w] over `schedule` with multi-condition guidance -> x_0 latent [B,C,T,h,w].

    `noise_fn(i, x)` supplies step i's N(0, I) draw (default: from `generator`); it is drawn every step, even when
    σ = 0, as the original does (spec §7.7). The callback runs after every step; raising in it cancels sampling.
    `camera=False` (a model without camera input) never asks for the no-camera branch. `latent_hook(x_t, t)`, when
    given, replaces x_t before each step's denoiser call (RealCam-I2V's noise shaping, `scene.noise_shaping_hook`);
    the callback's `x_t` is the replaced one.
    """
    _check_sampler_inputs(prediction, schedule)
    to_eps_x0 = PREDICTION_FNS[prediction]
    guided = guided_denoiser(denoise_fn, guidance, camera, schedule.num_train_timesteps)
    if noise_fn is None:
        def noise_fn(i, x):
            return randn(x.shape, generator, x.device, x.dtype)
    x = x_T
    steps = len(schedule)
    for i, k in enumerate(reversed(range(steps))):
        t = _timestep(schedule, k, x)
        if latent_hook is not None:
            x = latent_hook(x, t)
        out, outputs = guided(x, t)
        eps, x0 = to_eps_x0(out, x, schedule, k)
        if schedule.scales is not None:
            # Dynamic rescale (spec §7.5): the model was trained on x0·scale_arr[t]; move x0 to the next step's scale.
            x0 = x0 * (_full(schedule.scales_prev[k], x0) / _full(schedule.scales[k], x0))
        x_prev = ddim_step(x0, eps, schedule, k, noise_fn(i, x))
        if callback is not None:
            callback(StepInfo(i, steps, int(schedule.timesteps[k]), x, x_prev, x0, outputs))
        x = x_prev
    return x


# -- fewer-step ODE solvers ------------------------------------------------------------------------------------------
#
# Both solvers integrate the probability-flow ODE of the model's schedule in its data-prediction form
# (Lu et al. 2022, DPM-Solver++ eq. 9):  x_t = (σ_t/σ_s)·x_s + σ_t ∫_{λ_s}^{λ_t} e^λ x̂0(λ) dλ,  λ = log(α/σ).
# They visit the same grid as DDIM (`DDIMSchedule.timesteps`, one guided model call per step) and end on the same
# level, ᾱ_0, so with eta = 0 all three approximate one and the same ODE solution.
#
# Legend (j = 0 .. S indexes the levels in visiting order; level j < S is grid index k = S-1-j, level S is ᾱ_0):
#     alpha_j   α_j = √ᾱ_j · s_j        s_j the dynamic-rescale scale (1 without it, spec §7.5)
#     sigma_j   σ_j = √(1-ᾱ_j)
#     lam_j     λ_j = log(α_j/σ_j);  -inf at zero terminal SNR (ᾱ_999 = 0, the 512 models)
#     h         λ_{j+1} - λ_j, the step in log-SNR; +inf for a step that starts from zero SNR
#     x0        the guided data prediction divided by s_j (the scale-free clean latent)
# Dynamic rescale: the 512 models are trained on x0·s_t, i.e. on the process x_t = (√ᾱ_t s_t)·x0 + σ_t·eps, so the
# solvers integrate that process (α_j above). Its first-order step is exactly DDIM's rescaled update (√ᾱ_prev·x0·
# s_prev/s_t + σ_prev·eps), so DDIM with eta = 0 is the first-order member of the same family.
# Every coefficient is a float64 Python number; a zero-SNR first step gives h = inf, e^{-h} = 0 and ratios
# h/h_prev = 0, which the formulas below take as limits, never as inf - inf.

SAMPLERS = ("ddim", "dpmpp_2m", "unipc")


@dataclass
class SolverLevels:
    """The noise levels the ODE solvers step between, in visiting order (see the legend above): [S+1] float64."""

    alpha: torch.Tensor
    sigma: torch.Tensor
    lam: torch.Tensor
    scale: torch.Tensor


def solver_levels(schedule: DDIMSchedule) -> SolverLevels:
    """Levels 0..S of a DDIM schedule: its grid from the highest timestep down, then ᾱ_0 (where DDIM ends)."""
    abar = torch.cat([schedule.alphas.double().flip(0), schedule.alphas_prev[:1].double()])
    if schedule.scales is not None:
        scale = torch.cat([schedule.scales.double().flip(0), schedule.scales_prev[:1].double()])
    else:
        scale = torch.ones_like(abar)
    alpha = abar.sqrt() * scale
    sigma = (1.0 - abar).sqrt()
    return SolverLevels(alpha, sigma, alpha.log() - sigma.log(), scale)


def _solver_setup(denoise_fn: DenoiseFn, schedule: DDIMSchedule, guidance: Guidance, prediction: str,
                  camera: bool):
    """The guided denoiser as `(x, j) -> (x0 at level j [B,C,T,h,w], raw branch outputs)`, and the levels."""
    _check_sampler_inputs(prediction, schedule)
    levels = solver_levels(schedule)
    if prediction == "eps" and float(levels.alpha[0]) == 0.0:
        raise SamplingError("an eps-predicting model cannot start from zero SNR (ᾱ = 0 at the first timestep): its "
                            "clean-latent estimate divides by √ᾱ. Zero-terminal-SNR schedules go with v-prediction; "
                            "check the model config (parameterization / rescale_betas_zero_snr)")
    to_eps_x0 = PREDICTION_FNS[prediction]
    guided = guided_denoiser(denoise_fn, guidance, camera, schedule.num_train_timesteps)
    steps = len(schedule)

    def data_prediction(x, j):
        k = steps - 1 - j
        out, outputs = guided(x, _timestep(schedule, k, x))
        _, x0 = to_eps_x0(out, x, schedule, k)
        if schedule.scales is not None:
            x0 = x0 / float(levels.scale[j])
        return x0, outputs

    return data_prediction, levels


def _multistep_update(x: torch.Tensor, levels: SolverLevels, j: int, x0: torch.Tensor,
                      x0_prev: torch.Tensor | None) -> torch.Tensor:
    """Level j -> j+1: x = (σ_{j+1}/σ_j)·x + α_{j+1}(1 - e^{-h})·D, D = x0 + (h/(2h_prev))·(x0 - x0_prev).

    D is DPM-Solver++(2M)'s (Lu et al. 2022, alg. 2: 1/(2r) with r = h_prev/h) and equally UniPC's UniP-2 with
    B(h) = e^h - 1 (its ρ = 1/2 gives the same D). Without x0_prev (the first step) it is the first-order step,
    i.e. DDIM with eta = 0.
    """
    lam, alpha, sigma = levels.lam.tolist(), levels.alpha.tolist(), levels.sigma.tolist()
    h = lam[j + 1] - lam[j]
    d = x0
    if x0_prev is not None:
        c = h / (2.0 * (lam[j] - lam[j - 1]))  # 0 when the previous step started at zero SNR (h_prev = inf)
        d = x0 + c * (x0 - x0_prev)
    return (sigma[j + 1] / sigma[j]) * x + (alpha[j + 1] * -math.expm1(-h)) * d


def sample_dpmpp_2m(denoise_fn: DenoiseFn, x_T: torch.Tensor, schedule: DDIMSchedule,
                    guidance: Guidance = Guidance(), prediction: str = "eps",
                    callback: Callable[[StepInfo], None] | None = None, camera: bool = True) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095, algorithm 2) from x_T [B,C,T,h,w] -> latent [B,C,T,h,w].

    Multistep, second order, data prediction; deterministic (no eta, no noise draws). One guided model call per
    step of `schedule`; every step but the first reuses the previous call's x0. The first and the last step are
    first order: the last one (down to ᾱ_0) is several times longer in λ than the one before it on these grids, and
    extrapolating x0 that far overshoots (the "lower order final" of the reference implementations; a single
    first-order step keeps the global order 2).
    """
    data_prediction, levels = _solver_setup(denoise_fn, schedule, guidance, prediction, camera)
    steps = len(schedule)
    x, x0_prev = x_T, None
    for j in range(steps):
        x0, outputs = data_prediction(x, j)
        x_next = _multistep_update(x, levels, j, x0, x0_prev if j < steps - 1 else None)
        if callback is not None:
            callback(StepInfo(j, steps, int(schedule.timesteps[steps - 1 - j]), x, x_next,
                              x0 * float(levels.scale[j + 1]), outputs))
        x, x0_prev = x_next, x0
    return x


def _unic_update(x: torch.Tensor, levels: SolverLevels, j: int, x0: torch.Tensor, x0_new: torch.Tensor,
                 x0_prev: torch.Tensor | None) -> torch.Tensor:
    """UniC corrector of the step level j -> j+1 (Zhao et al. 2023, arXiv 2302.04867, alg. 2, B(h) = e^h - 1).

    x: the latent at level j the step started from; x0, x0_new: predictions at levels j and j+1 (x0_new from the
    predicted latent, the call the next step needs anyway); x0_prev: at level j-1 when that step was second order.
    The weights ρ solve the order conditions R·ρ = b, written out for one or two differences. For one difference
    the reference code uses ρ = 1/2, the small-h limit of the exact b1; b1 is kept here since it stays right for a
    step from zero SNR (h = inf, b1 = 1, where 1/2 would average in the prediction at pure noise).
    """
    lam, alpha, sigma = levels.lam.tolist(), levels.alpha.tolist(), levels.sigma.tolist()
    h = lam[j + 1] - lam[j]
    hh = -h  # data prediction integrates in -λ
    b_h = math.expm1(hh)
    phi = b_h / hh - 1.0   # h·φ_2-type term of the paper's b vector; the limits at h = inf are exact in floats
    b1 = phi / b_h
    x_t = (sigma[j + 1] / sigma[j]) * x - (alpha[j + 1] * b_h) * x0
    d1_t = x0_new - x0
    if x0_prev is None:
        corr = b1 * d1_t
    else:
        b2 = (phi / hh - 0.5) * 2.0 / b_h
        r1 = (lam[j - 1] - lam[j]) / h          # < 0; -inf when step j-1 started at zero SNR
        rho0 = (b1 - b2) / (1.0 - r1)
        rho1 = b1 - rho0
        corr = (rho0 / r1) * (x0_prev - x0) + rho1 * d1_t   # ρ0·D1 with D1 = (x0_prev - x0)/r1
    return x_t - (alpha[j + 1] * b_h) * corr


def sample_unipc(denoise_fn: DenoiseFn, x_T: torch.Tensor, schedule: DDIMSchedule, guidance: Guidance = Guidance(),
                 prediction: str = "eps", callback: Callable[[StepInfo], None] | None = None,
                 camera: bool = True) -> torch.Tensor:
    """UniPC, variant bh2, order 2 (Zhao et al. 2023, arXiv 2302.04867) from x_T [B,C,T,h,w] -> latent [B,C,T,h,w].

    Each step: one guided call at the current latent, the UniC corrector applied to the step that led here (it
    reuses this call, so correction is free), then the UniP-2 predictor (`_multistep_update`). The first and the
    last predictor step are first order (see `sample_dpmpp_2m`), and the last step is not corrected, as that would
    need one more call. Data prediction, deterministic.
    """
    data_prediction, levels = _solver_setup(denoise_fn, schedule, guidance, prediction, camera)
    steps = len(schedule)
    x = x_T
    x_last = x0_last = x0_before = None   # the previous step's start latent and the two previous predictions
    for j in range(steps):
        x0, outputs = data_prediction(x, j)
        if j > 0:
            x = _unic_update(x_last, levels, j - 1, x0_last, x0, x0_before)
        x_next = _multistep_update(x, levels, j, x0, x0_last if j < steps - 1 else None)
        if callback is not None:
            callback(StepInfo(j, steps, int(schedule.timesteps[steps - 1 - j]), x, x_next,
                              x0 * float(levels.scale[j + 1]), outputs))
        x_last, x0_before, x0_last = x, x0_last, x0
        x = x_next
    return x
