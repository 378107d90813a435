"""The whole model: UNet + VAE + both OpenCLIP towers + resampler + pose encoder + diffusion schedule buffers.

`CamI2VModel` assembles the modules of `cami2v_core.modules` under the attribute names of the original
LightningModule, so its `state_dict()` keys are exactly those of the released checkpoints (spec §1.3,
`reference/keys/*.json`) and they load with `strict=True`. It offers the building blocks a sampler or a trainer
needs (encode text / image / first stage, prepare the camera condition once, one denoiser call); the sampling loop
itself lives in `sampling.py` and the image-to-video path in `pipeline.py`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from . import camera as camera_maths
from .camera import CameraCondition
from .checkpoint import CheckpointError, check_state_dict, config_for, load_with_base, parse_dtype
from .configs import ModelConfig, epipolar_attention_kind, resolve_config
from .errors import CamI2VError
from .modules import epipolar as epipolar_kernels
from .modules.camera_encoder import CameraPoseEncoder
from .modules.clip import OpenCLIPImageEncoder, OpenCLIPTextEncoder, clip_kwargs_from_arch, tokenize
from .modules.resampler import Resampler
from .modules.unet import UNetModel
from .modules.vae import AutoencoderKL, posterior_sample
from .sampling import dynamic_rescale_table, make_beta_schedule, rescale_zero_terminal_snr

# The 12 schedule buffers every checkpoint stores, in the original's order (spec §1.3).
SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2")


class VAEPrecisionError(CamI2VError, FloatingPointError):
    """The VAE's output left the range of its dtype (fp16 tops out at 65504); the message names the dtype to use."""


class DiffusionWrapper(nn.Module):
    """Holds the UNet as `diffusion_model`, which puts its keys under `model.diffusion_model.*`."""

    def __init__(self, diffusion_model: nn.Module):
        super().__init__()
        self.diffusion_model = diffusion_model


class CamI2VModel(nn.Module):
    """CamI2V, CameraCtrl, MotionCtrl or plain DynamiCrafter, chosen by `config.variant`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.variant = config.variant
        self.parameterization = config.parameterization
        self.scale_factor = config.scale_factor
        # Registration order = the original state_dict order: schedule buffers, model, first_stage_model,
        # cond_stage_model, embedder, image_proj_model, pose_encoder.
        self.register_schedule()
        self.model = DiffusionWrapper(UNetModel(**config.unet, camera=config.camera, epipolar=config.epipolar))
        self.first_stage_model = AutoencoderKL(**config.first_stage)
        self.cond_stage_model = OpenCLIPTextEncoder(**clip_kwargs_from_arch(config.text_encoder_arch),
                                                    layer=config.text_encoder_layer)
        self.embedder = OpenCLIPImageEncoder(**clip_kwargs_from_arch(config.image_encoder_arch))
        self.image_proj_model = Resampler(**config.image_proj)
        self.pose_encoder = CameraPoseEncoder(**config.pose_encoder) if config.pose_encoder is not None else None

    # -- diffusion schedule (spec §1.3, §7.2, §7.5) --------------------------------------------------------------

    @torch.no_grad()
    def register_schedule(self) -> None:
        """(Re)compute the 12 schedule buffers (+ `scale_arr`) like the original: float64, then stored as float32."""
        for name, value in schedule_buffers(self.config).items():
            device = getattr(self, name).device if hasattr(self, name) else None
            self.register_buffer(name, value if device is None else value.to(device))

    @property
    def num_timesteps(self) -> int:
        """Training timesteps (1000)."""
        return int(self.config.timesteps)

    # -- conditioning --------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Device of the UNet weights."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the UNet weights."""
        return next(self.model.parameters()).dtype

    @property
    def vae_dtype(self) -> torch.dtype:
        """Floating dtype of the VAE weights: the UNet's unless loaded with another `vae_dtype`."""
        return next(self.first_stage_model.parameters()).dtype

    def set_vae_dtype(self, dtype: str | torch.dtype | None) -> "CamI2VModel":
        """Cast the VAE alone to 'fp32' / 'fp16' / 'bf16' (None: the UNet's dtype); the rest keeps its dtype."""
        self.first_stage_model.to(parse_dtype(dtype) or self.dtype)
        return self

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Text context of the OpenCLIP text tower (penultimate layer + ln_final, spec §3.1). -> [B,77,C]"""
        if isinstance(prompts, str):
            prompts = [prompts]
        tokens = tokenize(list(prompts)).to(self.device)
        return self.cond_stage_model(tokens)

    def encode_image_tokens(self, image: torch.Tensor) -> torch.Tensor:
        """Image context: CLIP image tower (all 257 tokens) + resampler (spec §3.2, §3.3). [B,3,H,W] in [-1,1] -> [B,16*T,C]"""
        tokens = self.embedder(image.to(self.device, self.dtype))
        return self.image_proj_model(tokens)

    def encode_first_stage(self, x: torch.Tensor, noise: torch.Tensor | None = None,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        """Scaled VAE posterior sample (spec §3.4). [N,3,H,W] in [-1,1] -> 0.18215 * z [N,4,h,w] in the UNet's dtype"""
        mean, logvar = self.first_stage_model.encode(x.to(self.device, self.vae_dtype))
        if noise is None:
            # The original draws the posterior noise in float32 on the CPU and then moves it (spec §7.7); drawing
            # on the generator's device with the same shape keeps a seeded CPU generator bit-compatible.
            gen_device = generator.device if generator is not None else torch.device("cpu")
            noise = torch.randn(mean.shape, generator=generator, device=gen_device, dtype=torch.float32)
        # the UNet's input (c_concat) whatever the VAE's dtype
        return (self.scale_factor * posterior_sample(mean, logvar, noise)).to(self.dtype)

    def decode_first_stage(self, z: torch.Tensor) -> torch.Tensor:
        """VAE decode of a scaled latent, frames independent. [N,4,h,w] -> [N,3,H,W] in about [-1,1] (VAE dtype)"""
        dtype = self.vae_dtype
        pixels = self.first_stage_model.decode(z.to(self.device, dtype) / self.scale_factor)
        # Only fp16 can overflow (bf16 has fp32's range); checked here, once per decoded chunk, never per step.
        if dtype == torch.float16 and not bool(torch.isfinite(pixels).all()):
            raise VAEPrecisionError("the VAE decode overflowed in fp16 (values past 65504 became inf/NaN); load "
                                    "the model with vae_dtype='bf16' (or 'fp32' on GPUs without bf16), "
                                    "`--vae-dtype bf16` on the command line")
        return pixels

    def prepare_camera(self, w2c: torch.Tensor, K: torch.Tensor, cond_frame_index: torch.Tensor,
                       trace_scale: float = 1.0, generator: torch.Generator | None = None,
                       pair_t: torch.Tensor | None = None, height: int | None = None,
                       width: int | None = None) -> CameraCondition | None:
        """The camera condition of a trajectory in its final form, built once and reused by every step and branch.

        w2c [B,T,4,4] world-to-camera (OpenCV axes), K [B,T,3,3] in pixels of the height x width image (default:
        the model's resolution), cond_frame_index [B]. `generator` drives CamI2V's zero-translation perturbation
        (spec §4.4 step 2); `pair_t` [B,T,T,3,1] injects a recorded draw instead. None for dynamicrafter.
        """
        if self.variant == "dynamicrafter":
            return None
        height = height or self.config.resolution[0]
        width = width or self.config.resolution[1]
        # Camera maths run in float32 whatever the model dtype, as in the original (spec §6.2).
        w2c = w2c.to(self.device, torch.float32)
        K = K.to(self.device, torch.float32)
        cond_frame_index = torch.as_tensor(cond_frame_index, device=self.device).long().reshape(-1)
        rel_c2w = camera_maths.relative_c2w(w2c, cond_frame_index, trace_scale)  # [B,T,4,4] (spec §6.3)

        pose_features = masks = rt = None
        attends = epipolar_attention_kind(self.config.epipolar)
        # The 3-D full attention ablation uses no mask, and (as the original) builds none and draws nothing.
        if attends in ("epipolar", "cond_frame"):
            # Masks at pixel strides 8·r (spec §4.4.7); the perturbation draw comes before anything else random.
            strides = [8 * int(r) for r in self.config.epipolar["attention_resolution"]]
            if pair_t is not None:
                pair_t = pair_t.to(self.device, torch.float32)
            masks, _ = camera_maths.epipolar_structures(rel_c2w, K, height, width, strides, generator=generator,
                                                        pair_t=pair_t)
            if attends == "cond_frame":
                frames = w2c.shape[1]
                masks = {d: camera_maths.keep_key_frame(m, frames, cond_frame_index) for d, m in masks.items()}
        if self.pose_encoder is not None:
            plucker = camera_maths.plucker_embedding(rel_c2w, K, height, width)  # [B,6,T,H,W]
            pose_features = self.pose_encoder(plucker.to(self.dtype))  # list of [B,C_l,T,h_l,w_l]
        if self.variant == "motionctrl":
            rt = camera_maths.motionctrl_rt(rel_c2w).to(self.dtype)  # [B,T,12]
        # The UNet looks a mask up by origin_h // feature height, origin_h taken from the config (spec §4.4.7).
        origin_h = int(self.config.epipolar["origin_h"]) if self.config.epipolar is not None else height
        if masks is not None:
            # The final form: each mask the attention kernel gathers is replaced by its gathered layout, built
            # here once per trajectory (every layer, step and guidance branch reuses it; the dense mask it replaces
            # is freed). Sampling, training and the benchmarks all receive this same form.
            registers = int(self.config.epipolar.get("num_register_tokens", 0))
            masks = epipolar_kernels.compact_masks(masks, w2c.shape[1], registers, self.device)
        return CameraCondition(pose_features=pose_features, epipolar_masks=masks, rt=rt, origin_h=origin_h)

    # -- denoiser ------------------------------------------------------------------------------------------------

    def apply_model(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor, c_concat: torch.Tensor,
                    fs: torch.Tensor | None, camera: CameraCondition | None = None) -> torch.Tensor:
        """One UNet call: eps (or v) for x_t [B,4,T,h,w] at t [B] with context [B,L,C], c_concat [B,4,T,h,w], fs [B]."""
        # "hybrid" conditioning: the noisy latent first, the conditioning-image latent after it (spec §2.1, §7.1).
        x = torch.cat([x_t, c_concat], dim=1)  # [B,8,T,h,w]
        return self.model.diffusion_model(x, t, context=context, fs=fs, camera=camera)


def schedule_buffers(config: ModelConfig) -> dict[str, torch.Tensor]:
    """The schedule buffers of a config, float64 maths stored as float32 (spec §1.3, §7.2, §7.5)."""
    # CPU explicitly: build_model(device="meta") runs this under a meta default device.
    with torch.device("cpu"):
        betas = make_beta_schedule(config.linear_start, config.linear_end, config.timesteps)
        if config.rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        scale_arr = (dynamic_rescale_table(config.base_scale, config.turning_step, config.timesteps)
                     if config.use_dynamic_rescale else None)
    # The rest follows the original's numpy float64 formulas (DDPM.register_schedule).
    betas = betas.double().numpy()
    n = len(betas)
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas, axis=0)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    # With zero terminal SNR the last alphas_cumprod is 0; the divisions below then give inf only in buffers
    # the original also fills with inf (eps) or zeros (v).
    with np.errstate(divide="ignore"):
        if config.parameterization == "v":
            # The original stores zeros for these two under v-prediction (spec §1.3).
            sqrt_recip = np.zeros(n)
            sqrt_recipm1 = np.zeros(n)
        else:
            sqrt_recip = np.sqrt(1.0 / alphas_cumprod)
            sqrt_recipm1 = np.sqrt(1.0 / alphas_cumprod - 1)
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        values = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
            "log_one_minus_alphas_cumprod": np.log(1.0 - alphas_cumprod),
            "sqrt_recip_alphas_cumprod": sqrt_recip,
            "sqrt_recipm1_alphas_cumprod": sqrt_recipm1,
            "posterior_variance": posterior_variance,
            # clipped because the posterior variance is 0 at t = 0
            "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
            "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
        }
    out = {name: torch.tensor(values[name], dtype=torch.float32) for name in SCHEDULE_BUFFERS}
    if scale_arr is not None:
        out["scale_arr"] = torch.tensor(scale_arr.numpy(), dtype=torch.float32)  # x0 scale per timestep (§7.5)
    return out


# -- building and loading -------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _parameters_on_meta():
    """Create every nn.Parameter on the meta device while keeping buffers real (accelerate's init_empty_weights).

    Loading then assigns the checkpoint's tensors as the parameters, so a multi-GB model never exists twice in
    memory; buffers that are not in the checkpoint (CLIP attention mask, normalisation constants) stay computed.
    Not thread-safe: it patches nn.Module.register_parameter for the duration.
    """
    original = nn.Module.register_parameter

    def register_on_meta(module, name, param):
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def _finish(model: CamI2VModel, device, dtype) -> CamI2VModel:
    """Move/cast the model, keeping the schedule buffers in float32 (the sampler reads them in float32)."""
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    for name in (*SCHEDULE_BUFFERS, "scale_arr"):
        if hasattr(model, name):
            setattr(model, name, getattr(model, name).float())
    return model.eval()


def build_model(preset_or_yaml: str | os.PathLike | ModelConfig | dict, device: str | torch.device | None = None,
                dtype: str | torch.dtype | None = None, vae_dtype: str | torch.dtype | None = None) -> CamI2VModel:
    """A freshly initialised model from a preset name, original YAML, JSON or ModelConfig (device='meta' is free).

    vae_dtype: the VAE's own dtype (None: the model's), as in `load_model`."""
    config = resolve_config(preset_or_yaml)
    vae_dtype = parse_dtype(vae_dtype)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = CamI2VModel(config)
    model = _finish(model, None, parse_dtype(dtype))
    return model.set_vae_dtype(vae_dtype) if vae_dtype is not None else model


def load_model(path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
               device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
               config: str | os.PathLike | ModelConfig | None = None,
               base: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
               search_dirs: tuple[str | os.PathLike, ...] | list = (),
               vae_dtype: str | torch.dtype | None = None) -> CamI2VModel:
    """Build the model a checkpoint holds and load it strictly (config from the file header, else detected).

    dtype None keeps the stored dtype (the released .pt files are fp16); 'fp32' / 'fp16' / 'bf16' cast on load.
    vae_dtype: the VAE's dtype (None: the same as the model). bf16 has fp32's range at half the memory; in fp16
    the VAE's attention runs in fp32 (modules/vae.py) and a decode that still overflows raises VAEPrecisionError.
    A partial file (RealCam-I2V's camera layers) is merged over its DynamiCrafter base: `base` when given, else the
    one found next to it or in `search_dirs` (checkpoint.base_candidates); without one it is a CheckpointError.
    """
    dtype = parse_dtype(dtype)
    vae_dtype = parse_dtype(vae_dtype)
    device = torch.device(device) if device is not None else torch.device("cpu")
    source = "the given state dict" if isinstance(path_or_state_dict, Mapping) else str(path_or_state_dict)
    sd, metadata, partial = load_with_base(path_or_state_dict, base=base, search_dirs=search_dirs, dtype=dtype,
                                           device=device)
    cfg = resolve_config(config) if config is not None else config_for(sd, metadata, partial, source)
    with _parameters_on_meta():
        model = CamI2VModel(cfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    check_state_dict(sd, expected, _model_name(cfg), source)
    model.load_state_dict(sd, strict=True, assign=True)
    leftovers = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if leftovers:  # every parameter is a state_dict key, so this means a module registered one oddly
        raise CheckpointError(f"parameters {leftovers[:5]} were not filled by the checkpoint")
    if cfg.rescale_betas_zero_snr:
        # The original recomputes the schedule after loading when zero-terminal-SNR is on (spec §1.2 step 3);
        # 256 models keep the (fp16-rounded) buffers of the file.
        model.register_schedule()
    model = _finish(model, device, dtype or _dominant_dtype(sd))
    return model.set_vae_dtype(vae_dtype) if vae_dtype is not None else model


def _dominant_dtype(sd: Mapping[str, torch.Tensor]) -> torch.dtype:
    """The floating dtype holding most elements (non-persistent buffers are cast to it)."""
    count: dict[torch.dtype, int] = {}
    for v in sd.values():
        if v.is_floating_point():
            count[v.dtype] = count.get(v.dtype, 0) + v.numel()
    return max(count, key=count.get) if count else torch.float32


def _model_name(cfg: ModelConfig) -> str:
    h, w = cfg.resolution
    return f"{cfg.variant} {h}x{w}"


__all__ = ["CamI2VModel", "build_model", "load_model", "schedule_buffers", "SCHEDULE_BUFFERS", "VAEPrecisionError"]
