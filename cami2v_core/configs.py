"""Model configurations: the named presets and import of the original YAML configs.

A `ModelConfig` holds everything needed to build one model of the CamI2V family. Its field names follow the original
YAML (`model.params` of `configs/inference/00*_*.yaml`), and the nested dicts (`unet`, `first_stage`, `image_proj`,
`pose_encoder`, `epipolar`) are passed unchanged as keyword arguments to the module constructors, so an original
config and a preset describe the same model in the same words. Values of the full-size presets: spec §2.1, §3, §4,
§5 and `reference/keys/README.md`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CamI2VError

VARIANTS = ("cami2v", "cameractrl", "motionctrl", "dynamicrafter")
PARAMETERIZATIONS = ("eps", "v")
FPS_CONDITION_TYPES = ("fs", "fps")
ADD_TYPES = ("add_to_main_branch", "add_into_temporal_attn")
# "relative": a camera path's translations have no unit (CamI2V's training data is scale-free, so its paths are
# scaled by eye); "metre": the model was trained on metric-scaled translations (RealCam-I2V, realcam spec §3).
TRANSLATION_UNITS = ("relative", "metre")
VIT_H_14 = "ViT-H-14"

# The `target` class of the original configs -> our variant name (CamI2V repo and the DynamiCrafter repo itself).
_TARGET_VARIANTS = {
    "CamI2V": "cami2v",
    "CameraCtrl": "cameractrl",
    "MotionCtrl": "motionctrl",
    "DynamiCrafter": "dynamicrafter",
    "LatentVisualDiffusion": "dynamicrafter",
}

# The switches of the original's `epipolar_config` (CameraControl/CamI2V/cami2v.py sets each to False when absent;
# every released config leaves them so). This is the one list of them: `configs` validates with it and
# `modules.epipolar` refuses with it.
# Supported: the two ablation rows of the paper's Table 3 that differ from CamI2V only in which keys attend.
#   only_on_cond_frame: every query attends only to the conditioning frame's tokens on its epipolar line (+ the
#       register tokens); "+Plücker + epipolar attention on the reference frame" (CamCo-like).
#   is_3d_full_attn: no mask at all, every token attends to every token of every frame (+ the register tokens);
#       "+Plücker + 3D full attention".
EPIPOLAR_SWITCHES = ("only_on_cond_frame", "is_3d_full_attn")
# Not supported (no released model and no ablation row uses them): a config that turns one on is refused instead
# of silently computing something else.
UNSUPPORTED_EPIPOLAR_SWITCHES = ("apply_epipolar_soft_mask", "epipolar_hybrid_attention",
                                 "epipolar_hybrid_attention_v2", "only_self_pixel_on_current_frame",
                                 "current_frame_as_register_token")


class ConfigError(CamI2VError, ValueError):
    """A model configuration that cannot be built; the message says what was expected and what to change."""


def check_epipolar_switches(epipolar: dict) -> None:
    """Raise ConfigError if an `epipolar_config` turns on an unsupported switch or both supported ones."""
    on = [k for k in UNSUPPORTED_EPIPOLAR_SWITCHES if epipolar.get(k)]
    if on:
        raise ConfigError(f"epipolar_config switches {on} are not supported (no released model or ablation uses "
                          f"them); set them to false or remove them. Supported: {', '.join(EPIPOLAR_SWITCHES)}")
    both = [k for k in EPIPOLAR_SWITCHES if epipolar.get(k)]
    if len(both) > 1:
        raise ConfigError(f"epipolar_config switches {both} are each one ablation (reference-frame epipolar "
                          "attention, or unmasked 3-D attention); turn on at most one of them")


def epipolar_attention_kind(epipolar: dict | None) -> str | None:
    """Which keys the epipolar branch attends: "epipolar" (CamI2V), "cond_frame", "full", or None (no branch)."""
    if epipolar is None:
        return None
    if epipolar.get("only_on_cond_frame"):
        return "cond_frame"
    return "full" if epipolar.get("is_3d_full_attn") else "epipolar"


@dataclass
class ModelConfig:
    r"""Everything needed to build one CamI2V-family model. Names follow the original YAML `model.params`.

    Args:
        variant (`str`):
            Which model: one of `VARIANTS`. It decides which camera parts exist: `cami2v` has the Plücker pose
            encoder and epipolar attention (spec §4), `cameractrl` the pose encoder only (§5.1), `motionctrl` the
            12-number RT projection (§5.2), `dynamicrafter` no camera at all (§5.3).
        image_size (`tuple[int, int]`):
            Latent height and width (pixels / 8): (32, 32) for the 256 models, (40, 64) for the 512 models.
        unet (`dict`):
            The original `unet_config.params`: keyword arguments of `modules.unet.UNetModel` (spec §2.1),
            e.g. `model_channels`, `channel_mult`, `attention_resolutions`, `temporal_length`, `default_fs`,
            `image_cross_attention_scale_learnable` (True at 256: the `attn2.alpha` scalars; False at 512).
        first_stage (`dict`):
            The VAE (`first_stage_config.params`): `embed_dim` and `ddconfig` of `modules.vae.AutoencoderKL`
            (spec §3.4).
        text_encoder_arch (`str | dict`):
            OpenCLIP architecture of the text tower (`cond_stage_config.params.arch`): the name `"ViT-H-14"`
            (the real models) or an open_clip model-config dict with `embed_dim`, `vision_cfg`, `text_cfg`.
        text_encoder_layer (`str`):
            Which text-transformer output is the context: `"penultimate"` (every released model, spec §3.1) or
            `"last"`.
        image_encoder_arch (`str | dict`):
            OpenCLIP architecture of the image tower (`img_cond_stage_config.params.arch`), as above.
        image_proj (`dict`):
            The Resampler (`image_proj_stage_config.params`, spec §3.3): `dim`, `depth`, `dim_head`, `heads`,
            `num_queries`, `embedding_dim`, `output_dim`, `ff_mult`, `video_length`.
        pose_encoder (`dict | None`):
            The Plücker pose encoder (`pose_encoder_config.params`, spec §4.1) for `cami2v` and `cameractrl`;
            None otherwise.
        epipolar (`dict | None`):
            The original `epipolar_config` (spec §4.3, §4.4): `origin_h`, `origin_w`, `num_register_tokens`,
            `attention_resolution` (masks are built at pixel strides 8·r), `add_small_perturbation_on_zero_T`,
            and at most one of the ablation switches `EPIPOLAR_SWITCHES`: `only_on_cond_frame` (keys: the
            conditioning frame only) or `is_3d_full_attn` (no mask). Only `cami2v`; None disables the branch.
        pose_dim (`int | None`):
            Width of MotionCtrl's per-frame camera vector (12 = relative w2c 3x4, spec §5.2); None otherwise.
        add_type (`str`):
            How CamI2V adds its camera term (spec §4.2): `"add_to_main_branch"` in every released config.
        parameterization (`str`):
            What the UNet predicts: `"eps"` (256 models) or `"v"` (512 models, spec §7.5).
        rescale_betas_zero_snr (`bool`):
            Rescale the schedule to zero terminal SNR (spec §7.2); True for the 512 models.
        linear_start (`float`), linear_end (`float`), timesteps (`int`):
            The beta schedule: betas = linspace(sqrt(start), sqrt(end), timesteps)² (spec §7.2).
        scale_factor (`float`):
            Latent scale: the UNet sees 0.18215 · VAE latent (spec §3.4).
        channels (`int`):
            Latent channels (4).
        use_dynamic_rescale (`bool`), base_scale (`float`), turning_step (`int`):
            The 512 models' `scale_arr` buffer = [linspace(1, base_scale, turning_step), base_scale × timesteps]
            (spec §7.5); off for the 256 models.
        fps_condition_type (`str`):
            What the UNet's frame-rate input means: `"fs"` = frame stride (256 models) or `"fps"` (512 models),
            spec §2.1 and §7.1.
        uncond_type (`str`):
            Unconditional text of the original trainer (`"empty_seq"`); kept for training.
        rand_cond_frame (`bool`):
            Training draws the conditioning frame at random (CamI2V, DynamiCrafter) or uses frame 0 (spec §8).
        perframe_ae (`bool`):
            The original's "encode one frame at a time" switch; numerically identical either way (spec §3.4).
        translation_unit (`str`):
            What a camera path's translations mean to this model: `"relative"` (CamI2V and its baselines, trained
            on scale-free poses) or `"metre"` (RealCam-I2V, trained on metric-scaled poses, realcam spec §3).
    """

    variant: str
    image_size: tuple[int, int]
    unet: dict
    first_stage: dict
    image_proj: dict
    text_encoder_arch: str | dict = VIT_H_14
    text_encoder_layer: str = "penultimate"
    image_encoder_arch: str | dict = VIT_H_14
    pose_encoder: dict | None = None
    epipolar: dict | None = None
    pose_dim: int | None = None
    add_type: str = "add_to_main_branch"
    parameterization: str = "eps"
    rescale_betas_zero_snr: bool = False
    linear_start: float = 0.00085
    linear_end: float = 0.012
    timesteps: int = 1000
    scale_factor: float = 0.18215
    channels: int = 4
    use_dynamic_rescale: bool = False
    base_scale: float = 1.0
    turning_step: int = 400
    fps_condition_type: str = "fs"
    uncond_type: str = "empty_seq"
    rand_cond_frame: bool = False
    perframe_ae: bool = False
    translation_unit: str = "relative"

    def __post_init__(self):
        # JSON-normalise the nested dicts (tuples -> lists) so a config equals itself after a JSON round trip.
        for name in ("unet", "first_stage", "image_proj", "pose_encoder", "epipolar"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, _json_copy(value, name))
        for name in ("text_encoder_arch", "image_encoder_arch"):
            value = getattr(self, name)
            setattr(self, name, VIT_H_14 if value is None else (_json_copy(value, name) if isinstance(value, dict)
                                                                 else value))
        self.image_size = tuple(int(s) for s in self.image_size)
        self.validate()

    # -- derived values ------------------------------------------------------------------------------------------

    @property
    def vae_downsample(self) -> int:
        """Pixels per latent cell: 2 ** (number of VAE levels - 1), 8 for every released model."""
        return 2 ** (len(self.first_stage["ddconfig"]["ch_mult"]) - 1)

    @property
    def resolution(self) -> tuple[int, int]:
        """Pixel (height, width) the model was trained at: (256, 256) or (320, 512)."""
        return (self.image_size[0] * self.vae_downsample, self.image_size[1] * self.vae_downsample)

    @property
    def temporal_length(self) -> int:
        """Frames per video (16 for the released models)."""
        return int(self.unet["temporal_length"])

    @property
    def default_fs(self) -> int:
        """Frame-stride (or fps) value the UNet uses when none is given: 3 at 256, 10 at 512."""
        return int(self.unet.get("default_fs", 3))

    @property
    def camera(self) -> str | None:
        """The UNet's `camera` argument: the variant name, or None for plain DynamiCrafter."""
        return None if self.variant == "dynamicrafter" else self.variant

    # -- checks and conversions ----------------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise ConfigError naming the first inconsistent field (what was expected, what was found)."""
        _check_choice("variant", self.variant, VARIANTS)
        _check_choice("parameterization", self.parameterization, PARAMETERIZATIONS)
        _check_choice("fps_condition_type", self.fps_condition_type, FPS_CONDITION_TYPES)
        _check_choice("add_type", self.add_type, ADD_TYPES)
        _check_choice("translation_unit", self.translation_unit, TRANSLATION_UNITS)
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ConfigError(f"image_size must be the latent (height, width), two positive ints; got {self.image_size}")
        for name in ("unet", "first_stage", "image_proj"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{name} must be a dict of the original constructor arguments; "
                                  f"got {type(getattr(self, name)).__name__}")
        if "ddconfig" not in self.first_stage:
            raise ConfigError("first_stage must hold 'embed_dim' and 'ddconfig' (the original first_stage_config.params); "
                              f"found keys {sorted(self.first_stage)}")
        if "temporal_length" not in self.unet:
            raise ConfigError("unet must give temporal_length (frames per video, 16 for the released models)")
        needs_pose_encoder = self.variant in ("cami2v", "cameractrl")
        if needs_pose_encoder and self.pose_encoder is None:
            raise ConfigError(f"variant {self.variant!r} needs pose_encoder (the Plücker pose-encoder params, spec §4.1); "
                              "it is None. Copy it from the 'cami2v-256' preset or the original YAML.")
        if not needs_pose_encoder and self.pose_encoder is not None:
            raise ConfigError(f"variant {self.variant!r} has no pose encoder, but pose_encoder is set; set it to None "
                              "or choose variant 'cami2v' / 'cameractrl'")
        if self.epipolar is not None and self.variant != "cami2v":
            raise ConfigError(f"epipolar attention exists only in variant 'cami2v'; variant {self.variant!r} has "
                              "epipolar set. Set it to None.")
        if self.variant == "motionctrl" and not self.pose_dim:
            raise ConfigError("variant 'motionctrl' needs pose_dim (12: the relative w2c 3x4 per frame, spec §5.2)")
        if self.variant != "motionctrl" and self.pose_dim is not None:
            raise ConfigError(f"pose_dim belongs to variant 'motionctrl' only; variant {self.variant!r} has pose_dim="
                              f"{self.pose_dim}. Set it to None.")
        if self.epipolar is not None:
            for key in ("origin_h", "origin_w", "attention_resolution"):
                if key not in self.epipolar:
                    raise ConfigError(f"epipolar must give {key!r} (see spec §4.4); found keys {sorted(self.epipolar)}")
            check_epipolar_switches(self.epipolar)
            if self.epipolar.get("only_on_cond_frame"):
                self._check_every_level_masked()
        if self.use_dynamic_rescale and self.turning_step > self.timesteps:
            raise ConfigError(f"turning_step ({self.turning_step}) must not exceed timesteps ({self.timesteps})")

    def _check_every_level_masked(self) -> None:
        """only_on_cond_frame needs a mask at every temporal block: unmasked, a block would attend all frames."""
        mults = self.unet.get("channel_mult", [])
        levels = sorted(set(int(ds) for ds in self.unet.get("attention_resolutions", [])) | {2 ** (len(mults) - 1)})
        built = {8 * int(r) for r in self.epipolar["attention_resolution"]}  # pixel strides of the masks (§4.4.7)
        origin_h = int(self.epipolar["origin_h"])
        # the lookup rule of the UNet: stride = origin_h // feature height (spec §4.4.7)
        missing = [ds for ds in levels if origin_h // max(1, self.image_size[0] // ds) not in built]
        if missing:
            raise ConfigError(f"epipolar only_on_cond_frame needs an epipolar mask at every UNet level with a temporal "
                              f"block, but levels ds={missing} have none (attention_resolution "
                              f"{self.epipolar['attention_resolution']}); add {missing} to "
                              "epipolar.attention_resolution")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field (nested dicts copied)."""
        out = dataclasses.asdict(self)
        out["image_size"] = list(self.image_size)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of to_dict; unknown keys are an error naming the valid ones."""
        if not isinstance(data, dict):
            raise ConfigError(f"a model config must be a JSON object / dict, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"unknown model-config field(s) {unknown}; valid fields are: {', '.join(names)}")
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [n for n in required if n not in data]
        if missing:
            raise ConfigError(f"model config is missing required field(s) {missing}")
        return cls(**copy.deepcopy(data))

    def to_json(self, indent: int | None = None) -> str:
        """JSON text of to_dict() (what a safetensors header stores under `cami2v_config`)."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        """Parse JSON written by to_json."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"model config is not valid JSON ({e}); expected the output of ModelConfig.to_json()") from e
        return cls.from_dict(data)

    def replace(self, **changes) -> ModelConfig:
        """A validated copy with some fields changed (dataclasses.replace)."""
        return dataclasses.replace(copy.deepcopy(self), **changes)

    def with_variant(self, variant: str, pose_encoder: dict | None = None, epipolar: dict | None = None,
                     pose_dim: int = 12) -> ModelConfig:
        """The same base model as another variant: camera parts this config lacks must be passed in."""
        _check_choice("variant", variant, VARIANTS)
        pose_encoder = pose_encoder if pose_encoder is not None else self.pose_encoder
        epipolar = epipolar if epipolar is not None else self.epipolar
        if variant in ("cami2v", "cameractrl") and pose_encoder is None:
            raise ConfigError(f"cannot turn a {self.variant!r} config into {variant!r}: it has no pose_encoder; pass "
                              "pose_encoder=... (see the 'cami2v-256' preset)")
        if variant == "cami2v" and epipolar is None:
            raise ConfigError(f"cannot turn a {self.variant!r} config into 'cami2v': it has no epipolar config; pass "
                              "epipolar=... (see the 'cami2v-256' preset)")
        return self.replace(
            variant=variant,
            pose_encoder=pose_encoder if variant in ("cami2v", "cameractrl") else None,
            epipolar=epipolar if variant == "cami2v" else None,
            pose_dim=pose_dim if variant == "motionctrl" else None,
            # Training draws the conditioning frame at random only for CamI2V and DynamiCrafter (spec §8).
            rand_cond_frame=variant in ("cami2v", "dynamicrafter"),
        )


def _json_copy(value, name):
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name} must hold only JSON values (numbers, strings, lists, dicts); {e}") from e


def _check_choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


# -- presets --------------------------------------------------------------------------------------------------------

def _unet(temporal_length=16, default_fs=3, alpha=True, **changes) -> dict:
    """The DynamiCrafter UNet of spec §2.1 (identical at both resolutions except the `alpha` scalars)."""
    params = dict(
        in_channels=8, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1], num_res_blocks=2,
        channel_mult=[1, 2, 4, 4], dropout=0.1, num_head_channels=64, transformer_depth=1, context_dim=1024,
        use_linear=True, use_checkpoint=False, temporal_conv=True, temporal_attention=True,
        temporal_selfatt_only=True, use_relative_position=False, use_causal_attention=False,
        temporal_length=temporal_length, addition_attention=True, image_cross_attention=True,
        image_cross_attention_scale_learnable=alpha, default_fs=default_fs, fs_condition=True,
    )
    params.update(changes)
    return params


def _vae(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, resolution=256) -> dict:
    """KL-f8 AutoencoderKL of spec §3.4."""
    return dict(embed_dim=4, ddconfig=dict(double_z=True, z_channels=4, resolution=resolution, in_channels=3,
                                           out_ch=3, ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks,
                                           attn_resolutions=[], dropout=0.0))


_RESAMPLER = dict(dim=1024, depth=4, dim_head=64, heads=12, num_queries=16, embedding_dim=1280, output_dim=1024,
                  ff_mult=4, video_length=16)

_POSE_ENCODER = dict(downscale_factor=8, channels=[320, 640, 1280, 1280], nums_rb=2, cin=384, ksize=1, sk=True,
                     use_conv=False, compression_factor=1, temporal_attention_nhead=8,
                     attention_block_types=["Temporal_Self"], temporal_position_encoding=True,
                     temporal_position_encoding_max_len=16)


def _epipolar(origin_h, origin_w, attention_resolution) -> dict:
    return dict(origin_h=origin_h, origin_w=origin_w, num_register_tokens=4,
                attention_resolution=list(attention_resolution), add_small_perturbation_on_zero_T=True)


def _dynamicrafter_256() -> ModelConfig:
    return ModelConfig(variant="dynamicrafter", image_size=(32, 32), unet=_unet(), first_stage=_vae(),
                       image_proj=dict(_RESAMPLER), rand_cond_frame=True)


def _dynamicrafter_512() -> ModelConfig:
    # 512 models: v-prediction on a zero-terminal-SNR schedule with dynamic rescale, fps conditioning (default 10)
    # and a fixed image-cross-attention scale, i.e. no attn2.alpha (spec §2.1, §7.5).
    return ModelConfig(variant="dynamicrafter", image_size=(40, 64), unet=_unet(default_fs=10, alpha=False),
                       first_stage=_vae(), image_proj=dict(_RESAMPLER), parameterization="v",
                       rescale_betas_zero_snr=True, use_dynamic_rescale=True, base_scale=0.7,
                       fps_condition_type="fps", rand_cond_frame=True)


def _tiny() -> ModelConfig:
    """The golden fixtures' tiny CamI2V (golden README §2), values embedded so it needs no fixture folder."""
    text_arch = {"embed_dim": 32,
                 "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "head_width": 16, "patch_size": 56},
                 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}}
    vision_arch = {"embed_dim": 32,
                   "vision_cfg": {"image_size": 224, "layers": 2, "width": 48, "head_width": 16, "patch_size": 14},
                   "text_cfg": {"context_length": 77, "vocab_size": 8, "width": 16, "heads": 2, "layers": 1}}
    return ModelConfig(
        variant="cami2v", image_size=(8, 8),
        unet=_unet(temporal_length=8, model_channels=32, attention_resolutions=[2, 1], num_res_blocks=1,
                   channel_mult=[1, 2, 2], num_head_channels=16, context_dim=64),
        first_stage=_vae(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1, resolution=64),
        image_proj=dict(dim=64, depth=2, dim_head=16, heads=3, num_queries=16, embedding_dim=48, output_dim=64,
                        ff_mult=4, video_length=8),
        text_encoder_arch=text_arch, image_encoder_arch=vision_arch,
        pose_encoder=dict(_POSE_ENCODER, channels=[32, 64, 64]),
        epipolar=_epipolar(64, 64, [4, 2, 1]),
        rand_cond_frame=True,
    )


def _small() -> ModelConfig:
    """A CamI2V sized for one GPU and the ablation table (issue 23): 128x128 pictures, 16x16 latents with 16
    channels (the 16-channel VAE recipe of training/experiments/compare2), 16 frames, a 64-channel UNet with
    epipolar attention at every level; v-prediction on a zero-terminal-SNR schedule as the bundled model. The CLIP
    towers are the tiny ones (text and image conditioning matter little on the synthetic benchmark)."""
    tiny = _tiny()
    vae = _vae(ch=64, ch_mult=(1, 2, 2, 4), num_res_blocks=1, resolution=128)
    vae["embed_dim"] = vae["ddconfig"]["z_channels"] = 16
    return tiny.replace(
        image_size=(16, 16), channels=16, parameterization="v", rescale_betas_zero_snr=True,
        unet=_unet(temporal_length=16, in_channels=32, out_channels=16, model_channels=64,
                   attention_resolutions=[4, 2, 1], num_res_blocks=2, channel_mult=[1, 2, 4],
                   num_head_channels=32, context_dim=64, dropout=0.0, default_fs=2),
        first_stage=vae,
        image_proj=dict(tiny.image_proj, video_length=16),
        pose_encoder=dict(_POSE_ENCODER, channels=[64, 128, 256]),
        epipolar=_epipolar(128, 128, [1, 2, 4]),
    )


def _build_presets() -> dict[str, ModelConfig]:
    dc256, dc512 = _dynamicrafter_256(), _dynamicrafter_512()
    presets = {
        "cami2v-256": dc256.with_variant("cami2v", pose_encoder=dict(_POSE_ENCODER),
                                         epipolar=_epipolar(256, 256, [8, 4, 2, 1])),
        # The released 512 config builds masks only for strides 64/32/16: the ds-1 level runs unmasked (spec §4.4.7).
        "cami2v-512": dc512.with_variant("cami2v", pose_encoder=dict(_POSE_ENCODER),
                                         epipolar=_epipolar(320, 512, [8, 4, 2])),
        "cameractrl-256": dc256.with_variant("cameractrl", pose_encoder=dict(_POSE_ENCODER)),
        "motionctrl-256": dc256.with_variant("motionctrl"),
        "dynamicrafter-256": dc256,
        "dynamicrafter-512": dc512,
        "tiny": _tiny(),
        "small": _small(),
    }
    # RealCam-I2V is CamI2V's network trained on metric-scaled translations; its released files hold only the camera
    # layers and merge over DynamiCrafter (realcam spec §1, §2). Its demo's sampling defaults (cfg 5.5, the same
    # negative prompt, realcam spec §5) are CamI2V's demo's too: settings.DEFAULTS holds them for both.
    for res in ("256", "512"):
        presets[f"realcam-i2v-{res}"] = presets[f"cami2v-{res}"].replace(translation_unit="metre")
    return presets


PRESETS: dict[str, ModelConfig] = _build_presets()


def get_preset(name: str) -> ModelConfig:
    """A fresh copy of a named preset (one of PRESETS)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)} or give an original YAML path")
    return copy.deepcopy(PRESETS[name])


def resolve_config(preset_or_yaml: str | Path | ModelConfig | dict) -> ModelConfig:
    """A ModelConfig from a preset name, a YAML/JSON path, a ModelConfig or its dict."""
    if isinstance(preset_or_yaml, ModelConfig):
        return copy.deepcopy(preset_or_yaml)
    if isinstance(preset_or_yaml, dict):
        return ModelConfig.from_dict(preset_or_yaml)
    text = str(preset_or_yaml)
    if text in PRESETS:
        return get_preset(text)
    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml"):
        return from_yaml(path)
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return ModelConfig.from_json(path.read_text())
    raise ConfigError(f"{text!r} is neither a preset ({', '.join(PRESETS)}) nor a .yaml/.json config file")


# -- original YAML ----------------------------------------------------------------------------------------------------

def from_yaml(path: str | Path) -> ModelConfig:
    """Read an original CamI2V / DynamiCrafter YAML (`model: {target, params}`) into a ModelConfig."""
    from omegaconf import OmegaConf  # only needed here; keeps `import configs` light

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:  # omegaconf raises several parser error types
        raise ConfigError(f"{path} is not readable YAML: {e}") from e
    model = raw.get("model", raw) if isinstance(raw, dict) else None
    if not isinstance(model, dict) or "params" not in model:
        raise ConfigError(f"{path}: expected the original layout 'model: {{target: ..., params: ...}}'; "
                          f"found top-level keys {sorted(raw) if isinstance(raw, dict) else type(raw).__name__}")
    target = str(model.get("target", ""))
    cls_name = target.rsplit(".", 1)[-1]
    if cls_name not in _TARGET_VARIANTS:
        raise ConfigError(f"{path}: model target {target!r} is not a supported model; expected one of the classes "
                          f"{', '.join(sorted(_TARGET_VARIANTS))}")
    variant = _TARGET_VARIANTS[cls_name]
    p = model["params"]

    def params_of(key, required=True):
        section = p.get(key)
        if section is None:
            if required:
                raise ConfigError(f"{path}: model.params.{key} is missing; the original configs always have it")
            return None
        return dict(section.get("params", {}))

    unet = params_of("unet_config")
    first_stage = params_of("first_stage_config")
    first_stage = {"embed_dim": first_stage["embed_dim"], "ddconfig": first_stage["ddconfig"]}
    text = params_of("cond_stage_config")
    image = params_of("img_cond_stage_config")
    pose_encoder = params_of("pose_encoder_config", required=False) if variant in ("cami2v", "cameractrl") else None
    if pose_encoder is not None:
        pose_encoder.pop("target", None)
    image_size = p.get("image_size", unet.get("image_size"))
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    fields = dict(
        variant=variant,
        image_size=image_size,
        unet=unet,
        first_stage=first_stage,
        image_proj=params_of("image_proj_stage_config"),
        text_encoder_arch=_resolve_arch(text.get("arch"), path),
        # FrozenOpenCLIPEmbedder's own default layer is "last".
        text_encoder_layer=text.get("layer", "last"),
        image_encoder_arch=_resolve_arch(image.get("arch"), path),
        pose_encoder=pose_encoder,
        epipolar=p.get("epipolar_config") if variant == "cami2v" else None,
        pose_dim=p.get("pose_dim", 12) if variant == "motionctrl" else None,
    )
    # Scalars keep the original names; defaults are those of the original constructors.
    for name in ("add_type", "parameterization", "rescale_betas_zero_snr", "linear_start", "linear_end", "timesteps",
                 "scale_factor", "channels", "use_dynamic_rescale", "base_scale", "turning_step",
                 "fps_condition_type", "uncond_type", "rand_cond_frame", "perframe_ae"):
        if name in p:
            fields[name] = p[name]
    if "add_type" not in p:
        fields["add_type"] = "add_to_main_branch"  # CameraCtrl/MotionCtrl configs omit it; it is unused there
    if p.get("beta_schedule", "linear") != "linear":
        raise ConfigError(f"{path}: beta_schedule {p['beta_schedule']!r} is not supported; every released model "
                          "uses 'linear'")
    if p.get("conditioning_key", "hybrid") != "hybrid":
        raise ConfigError(f"{path}: conditioning_key {p['conditioning_key']!r} is not supported; expected 'hybrid' "
                          "(image latent concatenated + cross-attention)")
    return ModelConfig(**fields)


def _resolve_arch(arch, yaml_path: Path) -> str | dict:
    """An OpenCLIP `arch` value: None / "ViT-H-14" stay the name; another name is a JSON file next to the YAML."""
    if arch is None or arch == VIT_H_14:
        return VIT_H_14
    if isinstance(arch, dict):
        return arch
    name = str(arch)
    # The golden fixtures register "cami2v-tiny-text" from "open_clip_tiny_text_arch.json" (golden README §1).
    stem = name.removeprefix("cami2v-").replace("-", "_")
    candidates = [yaml_path.parent / f"open_clip_{stem}_arch.json", yaml_path.parent / f"{name}.json"]
    for candidate in candidates:
        if candidate.is_file():
            return json.loads(candidate.read_text())
    raise ConfigError(f"{yaml_path}: OpenCLIP arch {name!r} is neither 'ViT-H-14' nor found as "
                      f"{' or '.join(str(c) for c in candidates)}; put its open_clip model-config JSON there")
