"""Train CamI2V (or CameraCtrl / MotionCtrl / DynamiCrafter) with the paper's recipe (spec §8).

Runbook:

    # one process (CPU or one GPU)
    python -m training.train --config training/configs/tiny_synthetic.yaml max_steps=100 output_dir=runs/tiny
    # one node, 8 GPUs (PyTorch DDP; add train.distributed=fsdp to shard large models)
    torchrun --standalone --nproc_per_node 8 -m training.train --config training/configs/cami2v_256.yaml
    # two nodes: run on each, with the first node's address
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \
        -m training.train --config training/configs/cami2v_256.yaml
    # resume the latest checkpoint of a run (the default `resume=auto` already does this)
    python -m training.train --config CONFIG.yaml output_dir=runs/x resume=auto

Arguments after the config are omegaconf dot-list overrides (`train.lr=5e-5`, `data.root=/data/re10k`); the
top-level shortcuts `max_steps=`, `output_dir=`, `resume=`, `seed=` set the `train.` keys of the same name.

A run directory holds `config.yaml`, `metrics.jsonl` (and TensorBoard events when tensorboard is installed) and
`checkpoints/step_XXXXXXXX/` folders written atomically (temp folder + rename): `model.safetensors` is the whole
model in the released key layout with its config in the header, so `cami2v_core.load_model` and the ComfyUI loader
read it directly; `ema.safetensors` the EMA weights (optional); `trainer.pt` the optimizer, scheduler, grad-scaler
and EMA state; `rng_rank<r>.pt` each rank's RNG states. `checkpoints/latest` names the newest one.

Every random draw of a training step (data sample, conditioning frame, dropout, timestep, noise, UNet dropout) is
seeded from (seed, rank, step), so a resumed run repeats exactly the steps an uninterrupted one would have taken
(bit for bit on CPU; training/README.md says what else that needs). On resume `metrics.jsonl` keeps only the rows
up to the checkpoint's step.

On a fresh clone the first command above renders `runs/synth64` (the synthetic data set) and, since stage 1's
`runs/vae/vae.safetensors` is missing, trains on the bundled model's VAE (exported to runs/vae_bundled/); see
supply_vae and supply_data.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange, repeat
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cami2v_core.checkpoint import CONFIG_METADATA_KEY, load_state_dict, save_safetensors
from cami2v_core.configs import ModelConfig, resolve_config
from cami2v_core.model import CamI2VModel, build_model
from cami2v_core.errors import CamI2VError
from cami2v_core.modules.vae import posterior_sample

log = logging.getLogger("training.train")

PRECISIONS = ("fp32", "bf16", "fp16")
DISTRIBUTED = ("ddp", "fsdp")
LR_SCHEDULES = ("constant", "cosine")
TRAINABLE_PRESETS = ("cami2v", "cameractrl", "motionctrl", "all")
SHORTCUTS = ("max_steps", "output_dir", "resume", "seed")  # top-level overrides that mean train.<key>

# Every key a training config may set, with the paper's values as defaults (spec §8).
DEFAULTS = {
    "model": {
        "preset": "cami2v-256",      # preset name or original YAML / model JSON
        "overrides": {},             # fields of ModelConfig changed on top of the preset (nested dicts merge)
        "init": None,                # checkpoint whose matching keys initialise the model (DynamiCrafter base)
        "init_parts": [],            # extra partial checkpoints loaded after `init`, e.g. a pretrained VAE
        "scale_factor_from": None,   # safetensors whose `latent_std` metadata sets scale_factor = 1/std
    },
    "data": {
        "kind": "realestate10k",     # the RealEstate10K layout (real or synthetic data alike)
        "root": None,
        "split": "train",
        "video_length": None,        # default: the model's temporal_length
        "resolution": None,          # default: the model's resolution
        "frame_stride": [1, 10],
        "num_workers": 0,
        "max_clips": None,
    },
    "train": {
        "output_dir": "runs/train",
        "max_steps": 50000,
        "batch_size": 1,             # per process and micro-step
        "grad_accum": 8,             # 8 GPUs x 1 x 8 = the paper's effective batch 64
        "lr": 1.0e-4,
        "lr_schedule": "constant",
        "warmup_steps": 0,
        "min_lr_ratio": 0.1,         # cosine floor
        "weight_decay": 0.01,
        "betas": [0.9, 0.999],
        "grad_clip": 0.5,
        "precision": "fp16",         # the original's 16-mixed
        "trainable": "cami2v",       # one of TRAINABLE_PRESETS or a list of parameter-name prefixes
        "uncond_prob": 0.05,
        "rand_cond_frame": None,     # default: the model config's rand_cond_frame
        "ema_decay": 0.0,            # 0 disables EMA
        "seed": 0,
        "resume": "auto",            # auto | none | a checkpoint folder
        "save_every": 1000,
        "keep_last": 3,
        "save_dtype": "fp32",
        "log_every": 10,
        "distributed": "ddp",
        "find_unused_parameters": False,
        "cache_frozen": False,       # cache VAE moments and text contexts of the frozen encoders
        "threads": None,             # torch.set_num_threads on CPU
        "device": None,              # default: cuda:<local rank> if available else cpu
        "progress": True,
        "tensorboard": True,
    },
}


class TrainConfigError(CamI2VError, ValueError):
    """A training configuration that cannot run; the message says what to change."""


# -- configuration ------------------------------------------------------------------------------------------------

def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> DictConfig:
    """DEFAULTS <- YAML file (after the files it `extends`) <- dot-list overrides (`max_steps=` means
    `train.max_steps=`). A key DEFAULTS does not know is an error naming the closest known key (a misspelled key
    would otherwise train with the default silently); only `model.overrides` is free-form (ModelConfig checks it)."""
    cfg = OmegaConf.create(DEFAULTS)
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_struct(cfg.model.overrides, False)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise TrainConfigError(f"training config {path} does not exist; see training/configs/ for examples")
        cfg = _merge_known(cfg, read_config_file(path), str(path))
    fixed = []
    for item in overrides:
        key = item.split("=", 1)[0]
        if "=" not in item:
            raise TrainConfigError(f"override {item!r} is not key=value (e.g. max_steps=100 or train.lr=1e-5)")
        fixed.append(f"train.{item}" if key in SHORTCUTS else item)
    cfg = _merge_known(cfg, OmegaConf.from_dotlist(fixed), "the command line")
    OmegaConf.set_struct(cfg, False)
    _check_choice("train.precision", cfg.train.precision, PRECISIONS)
    _check_choice("train.distributed", cfg.train.distributed, DISTRIBUTED)
    _check_choice("train.lr_schedule", cfg.train.lr_schedule, LR_SCHEDULES)
    if isinstance(cfg.train.trainable, str):
        _check_choice("train.trainable", cfg.train.trainable, TRAINABLE_PRESETS)
    return cfg


def read_config_file(path: Path, _seen: tuple = ()) -> DictConfig:
    """One training YAML with the files it extends merged under it (`extends: base.yaml`, relative to the file),
    so an experiment's variants are small overlays of one base and differ only where they say."""
    path = Path(path).resolve()
    if path in _seen:
        raise TrainConfigError(f"{path} extends itself (through {' -> '.join(p.name for p in _seen)})")
    try:
        raw = OmegaConf.load(path)
    except Exception as e:  # YAML syntax errors become one line naming the file
        raise TrainConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(raw, DictConfig):
        raise TrainConfigError(f"{path} must hold a mapping (model:, data:, train:), not a {type(raw).__name__}")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    base_path = path.parent / str(parent)
    if not base_path.is_file():
        raise TrainConfigError(f"{path} extends {parent}, which does not exist (looked for {base_path})")
    return OmegaConf.merge(read_config_file(base_path, _seen + (path,)), raw)


def _merge_known(cfg: DictConfig, extra, source: str) -> DictConfig:
    """cfg <- extra, refusing keys that are not in the schema (DEFAULTS) with the closest known key."""
    import difflib

    from omegaconf.errors import ConfigKeyError

    try:
        return OmegaConf.merge(cfg, extra)
    except ConfigKeyError as e:
        key = str(getattr(e, "full_key", "") or "").strip() or str(e).split("\n")[0]
        parent, _, leaf = key.rpartition(".")
        section = OmegaConf.select(cfg, parent) if parent else cfg
        known = list(section.keys()) if isinstance(section, DictConfig) else []
        close = difflib.get_close_matches(leaf, known, n=1)
        hint = f"; did you mean {(parent + '.' if parent else '') + close[0]!r}?" if close else \
            f"; known keys there: {', '.join(known)}"
        raise TrainConfigError(f"{source} sets {key!r}, which training configs do not have{hint}") from None


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise TrainConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def model_config_from_section(section) -> ModelConfig:
    """The ModelConfig of a config's `model` section: preset + overrides (+ scale factor from a VAE file)."""
    section = OmegaConf.create(section) if isinstance(section, dict) else section
    base = resolve_config(section.get("preset", "cami2v-256")).to_dict()
    raw = section.get("overrides")
    overrides = OmegaConf.to_container(raw, resolve=True) if OmegaConf.is_config(raw) else dict(raw or {})
    merged = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(overrides)))
    merged["image_size"] = tuple(merged["image_size"])
    cfg = ModelConfig.from_dict(merged)
    src = section.get("scale_factor_from")
    if src:
        from safetensors import safe_open
        with safe_open(str(src), framework="pt") as f:
            std = (f.metadata() or {}).get("latent_std")
        if std is None:
            raise TrainConfigError(f"{src} has no 'latent_std' metadata; write it with `python -m "
                                   "training.train_vae` or set model.overrides.scale_factor instead")
        # LDM's scale-by-std: latents of unit variance suit the noise schedule (spec §3.4 uses 0.18215 for SD's VAE)
        cfg = cfg.replace(scale_factor=round(1.0 / float(std), 5))
    cfg.validate()
    return cfg


def trainable_parameter_names(model: CamI2VModel, spec) -> list[str]:
    """Names of the parameters to train: a paper preset (spec §1.4, §8) or a list of name prefixes."""
    names = [n for n, _ in model.named_parameters()]
    unet = "model.diffusion_model."
    if isinstance(spec, str):
        if spec == "all":
            # Everything the loss reaches; the frozen text/image towers and the VAE stay frozen (spec §8).
            chosen = [n for n in names if n.startswith((unet, "pose_encoder.", "image_proj_model."))]
        elif spec == "cami2v":
            chosen = [n for n in names if n.startswith("pose_encoder.") or ".pluker_projection." in n
                      or ".epipolar." in n]
        elif spec == "cameractrl":
            chosen = [n for n in names if n.startswith("pose_encoder.") or ".cc_projection." in n]
        else:  # motionctrl: cc_projection + attn2 of the 17 temporal transformers (input/middle/output .2, init_attn)
            chosen = [n for n in names if ".cc_projection." in n or (".attn2." in n and _is_temporal(n))]
    else:
        prefixes = [str(p) for p in spec]
        chosen = [n for n in names if n.startswith(tuple(prefixes))]
        unmatched = [p for p in prefixes if not any(n.startswith(p) for n in names)]
        if unmatched:
            raise TrainConfigError(f"train.trainable prefixes {unmatched} match no parameter; names look like "
                                   f"{names[0]!r}, {names[-1]!r}")
    if not chosen:
        raise TrainConfigError(f"train.trainable={spec!r} selects no parameter of variant {model.variant!r}")
    return chosen


def _is_temporal(name: str) -> bool:
    """True for parameters inside a temporal transformer (block slot .2, or init_attn)."""
    parts = name.split(".")
    if "init_attn" in parts:
        return True
    for i, p in enumerate(parts[:-1]):
        if p in ("input_blocks", "output_blocks") and i + 2 < len(parts) and parts[i + 2] == "2":
            return True
        if p == "middle_block" and parts[i + 1] == "2":
            return True
    return False


# -- model initialisation -----------------------------------------------------------------------------------------

def initialise(model: CamI2VModel, init: str | None, parts: list[str]) -> None:
    """Load matching keys of a base checkpoint and partial checkpoints; zero-init new camera outputs (spec §8)."""
    own = model.state_dict()
    loaded: set[str] = set()
    for path in ([init] if init else []) + list(parts or []):
        sd, _ = load_state_dict(path)
        bad = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
        if bad:
            raise TrainConfigError(f"{path}: shapes differ from the model for {bad[:3]} (e.g. {bad[0]}: file "
                                   f"{tuple(sd[bad[0]].shape)} vs model {tuple(own[bad[0]].shape)}); is it for "
                                   "another resolution or preset?")
        usable = {k: v for k, v in sd.items() if k in own}
        if not usable:
            raise TrainConfigError(f"{path} shares no key with the model; expected original key names such as "
                                   f"{next(iter(own))!r}")
        model.load_state_dict(usable, strict=False)
        loaded |= set(usable)
        log.info("initialised %d tensors from %s (%d of its keys unused)", len(usable), path, len(sd) - len(usable))
    if init:
        # New camera modules start as a no-op so the base model's behaviour is kept (spec §8 initialisation).
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in loaded:
                    continue
                if ".pluker_projection." in name or ".epipolar.epipolar_attn.to_out." in name:
                    p.zero_()
                elif ".cc_projection." in name and model.variant == "cameractrl":
                    p.zero_()
                elif ".cc_projection." in name and model.variant == "motionctrl":
                    # MotionCtrl's projection of [features, RT] starts as the identity on the features
                    p.zero_()
                    if p.dim() == 2:
                        p[:, :p.shape[0]].copy_(torch.eye(p.shape[0], dtype=p.dtype))


# -- a fresh clone's first run ------------------------------------------------------------------------------------

# VAE files that the shipped synthetic configs name: stage 1's output (tiny_synthetic.yaml) and the bundled model's
# VAE copied out (training/experiments/compare/). Where one is missing and the model's VAE has the bundled model's architecture,
# the bundled model's VAE is written to BUNDLED_VAE and used instead, so the first command of training/README.md
# runs on a fresh clone. Any other missing VAE file is an error that names the command making it.
SHIPPED_VAE_FILES = ("runs/vae/vae.safetensors", "runs/vae_bundled/vae.safetensors")
BUNDLED_VAE = "runs/vae_bundled/vae.safetensors"
# The shipped configs' synthetic data set and training/README.md's settings for it (step 1 of the bundled model);
# rendered with exactly these when it is missing, so the README's own command later finds it complete.
SYNTHETIC_ROOT = "runs/synth64"
SYNTHETIC_SETTINGS = {"scenes": 300, "seed": 0, "frames": 16, "height": 64, "width": 64, "split": "train"}


def _same_path(a, b) -> bool:
    return os.path.normpath(str(a)) == os.path.normpath(str(b))


def synthetic_command(root, settings: dict = SYNTHETIC_SETTINGS) -> str:
    """The `python -m training.synthetic` command that renders `settings` into `root`."""
    s = settings
    return (f"python -m training.synthetic --out {root} --scenes {s['scenes']} --seed {s['seed']} "
            f"--frames {s['frames']} --size {s['height']} {s['width']} --split {s['split']}")


def _data_missing(d) -> bool:
    """True when data.root has no clip list for data.split (nothing there, or an interrupted render)."""
    return bool(d.root) and not (Path(str(d.root)) / f"{d.split}_valid_list.txt").is_file()


def _renders_synthetic(d) -> bool:
    """True when the missing data set is the shipped configs' synthetic one, which train() renders itself."""
    root = Path(str(d.root))
    return (_same_path(root, SYNTHETIC_ROOT) and d.split == SYNTHETIC_SETTINGS["split"]
            and (not root.exists() or (root / "manifest.json").is_file()))


def _bundled_vae_fits(section) -> bool:
    """True when the bundled model exists and its VAE has the architecture of this config's model."""
    from cami2v_core.bundled import bundled_model_path
    from cami2v_core.checkpoint import read_safetensors_header
    bundled = bundled_model_path()
    if bundled is None:
        return False
    theirs = json.loads(read_safetensors_header(bundled)[1][CONFIG_METADATA_KEY])["first_stage"]
    ours = model_config_from_section(OmegaConf.merge(section, {"scale_factor_from": None})).first_stage
    return json.loads(json.dumps(ours)) == theirs  # tuples -> lists, as in the header


def supply_vae(cfg: DictConfig, rank: int, world: int, config_path: str | None = None) -> DictConfig:
    """`cfg` with a missing shipped VAE file replaced by the bundled model's VAE, or a TrainConfigError naming
    the command that trains the missing file."""
    m = cfg.model
    refs = [("init_parts", str(p)) for p in (m.init_parts or [])]
    if m.scale_factor_from:
        refs.append(("scale_factor_from", str(m.scale_factor_from)))
    missing = {p for _, p in refs if not Path(p).is_file()}
    if not missing:
        return cfg
    if not all(any(_same_path(p, f) for f in SHIPPED_VAE_FILES) for p in missing) or not _bundled_vae_fits(m):
        key, path = next((k, p) for k, p in refs if p in missing)
        data = cfg.data.root or "DATA"
        first = (f"render the data with `{synthetic_command(data)}`, then "
                 if cfg.data.root and _data_missing(cfg.data) and _renders_synthetic(cfg.data) else "")
        raise TrainConfigError(
            f"the VAE file {path} (model.{key}) does not exist: {first}train it with `python -m training.train_vae "
            f"--data {data} --model {config_path or m.preset} --out {path}` (options: training/README.md), or start "
            "from a random VAE with model.init_parts=[] model.scale_factor_from=null")
    if rank == 0 and not Path(BUNDLED_VAE).is_file():
        from cami2v_core.bundled import BUNDLED_MODEL
        from training.export import export_vae
        export_vae(BUNDLED_MODEL, Path(BUNDLED_VAE), "fp32")  # the same tensors and latent_std as the bundled model
    barrier(world)
    if rank == 0:
        log.info("%s does not exist: using the bundled model's VAE, %s (train your own with `python -m "
                 "training.train_vae`, training/README.md)", " and ".join(sorted(missing)), BUNDLED_VAE)
    cfg = copy.deepcopy(cfg)
    cfg.model.init_parts = [BUNDLED_VAE if str(p) in missing else str(p) for p in (m.init_parts or [])]
    if m.scale_factor_from and str(m.scale_factor_from) in missing:
        cfg.model.scale_factor_from = BUNDLED_VAE
    return cfg


def supply_data(cfg: DictConfig, model_cfg: ModelConfig, rank: int, world: int) -> None:
    """Render the shipped synthetic data set when it is missing; any other missing data.root is a
    TrainConfigError naming the command that makes it."""
    d = cfg.data
    if not _data_missing(d):
        return
    root = Path(str(d.root))
    if not _renders_synthetic(d):
        if root.exists():
            return  # a folder of clips without a list file: the loader reads valid_metadata/ itself
        h, w = (d.resolution or model_cfg.resolution)
        settings = dict(SYNTHETIC_SETTINGS, frames=max(16, int(d.video_length or model_cfg.temporal_length)),
                        height=h, width=w, split=d.split)
        raise TrainConfigError(f"data.root {root} does not exist: render a synthetic data set with "
                               f"`{synthetic_command(root, settings)}`, or convert RealEstate10K with `python -m "
                               f"training.preprocess --out {root} --split {d.split} ...` (training/README.md)")
    if rank == 0:
        _render_synthetic(root)
    barrier(world)


def _render_synthetic(root: Path) -> None:
    """Render SYNTHETIC_SETTINGS into root with one progress line on stderr."""
    from training.synthetic import generate
    s = SYNTHETIC_SETTINGS
    log.info("%s has no training clips: rendering them first (`%s`; 300 scenes take a few minutes on 2 CPU "
             "cores, and an interrupted render continues where it stopped)", root, synthetic_command(root))
    tty = sys.stderr.isatty()
    done = 0

    def progress(_line: str) -> None:
        nonlocal done
        done += 1
        if tty:
            print(f"\rrendering {root}: {done}/{s['scenes']} scenes", end="\n" if done == s["scenes"] else "",
                  file=sys.stderr, flush=True)
        elif done == s["scenes"] or done % max(1, s["scenes"] // 10) == 0:
            print(f"rendering {root}: {done}/{s['scenes']} scenes", file=sys.stderr, flush=True)

    generate(root, s["scenes"], s["seed"], s["frames"], s["height"], s["width"], split=s["split"],
             workers=max(1, min(4, os.cpu_count() or 1, s["scenes"])), log=progress)


# -- the loss -----------------------------------------------------------------------------------------------------

class DiffusionObjective(nn.Module):
    """One training micro-step's loss as a module, so DDP/FSDP see the whole forward (spec §8)."""

    def __init__(self, net: CamI2VModel, uncond_prob: float, rand_cond_frame: bool, cache_frozen: bool = False,
                 t_range: tuple[int, int] | None = None):
        super().__init__()
        self.net = net
        # Timesteps are drawn uniformly from [lo, hi) (default: all of them, as training does); a narrower range
        # scores one noise band (training.camera_sensitivity --t-bins).
        lo, hi = t_range if t_range is not None else (0, net.num_timesteps)
        if not 0 <= int(lo) < int(hi) <= net.num_timesteps:
            raise ValueError(f"t_range must satisfy 0 <= lo < hi <= {net.num_timesteps}; got {t_range!r}")
        self.t_range = (int(lo), int(hi))
        self.uncond_prob = float(uncond_prob)
        self.rand_cond_frame = bool(rand_cond_frame)
        # The VAE and text tower are frozen, so their outputs for a (clip, frame) or a caption never change:
        # caching them saves most of a small model's step time. The posterior *sample* is still drawn per step.
        self.latent_cache: dict | None = {} if cache_frozen else None
        self.text_cache: dict | None = {} if cache_frozen else None

    def _moments(self, batch: dict, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """VAE posterior (mean, logvar) [(B T),4,h,w] of the frames, through the cache when enabled."""
        vae = self.net.first_stage_model
        if self.latent_cache is None or "frame_indices" not in batch:
            return vae.encode(frames.to(self.net.dtype))
        keys = [(cid, int(i)) for cid, row in zip(batch["clip_id"], batch["frame_indices"].tolist()) for i in row]
        first = {}
        for n, k in enumerate(keys):
            if k not in self.latent_cache:
                first.setdefault(k, n)
        # One frame per encoder call: a convolution's last bits depend on the batch it runs in (oneDNN blocks by
        # batch size), so frames encoded together with whatever else happened to be missing would make the cache,
        # and every later step, depend on the run's history, and a resumed run (empty cache) would drift by ~1e-7.
        for k, n in first.items():
            mean, logvar = vae.encode(frames[n:n + 1].to(self.net.dtype))
            self.latent_cache[k] = (mean[0].detach(), logvar[0].detach())
        mean = torch.stack([self.latent_cache[k][0] for k in keys])
        logvar = torch.stack([self.latent_cache[k][1] for k in keys])
        return mean, logvar

    def _text(self, captions: list[str]) -> torch.Tensor:
        """Text context [B,77,C] of the frozen text tower, through the cache when enabled."""
        if self.text_cache is None:
            return self.net.encode_text(captions)
        missing = list(dict.fromkeys(c for c in captions if c not in self.text_cache))
        with torch.no_grad():
            for c in missing:  # one caption per call, for the same reason as the frames in _moments
                self.text_cache[c] = self.net.encode_text([c])[0].detach()
        return torch.stack([self.text_cache[c] for c in captions])

    def forward(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """MSE between the UNet output and eps / v for a batch of clips (video [B,3,T,H,W] in [-1,1])."""
        net = self.net
        cfg = net.config
        device = net.device
        video = batch["video"].to(device)
        b, _, t_len, height, width = video.shape
        draw = lambda *shape: torch.rand(shape, generator=generator)  # noqa: E731 -- CPU draws, seeded per step
        # Conditioning frame: random per sample for CamI2V (rand_cond_frame), else frame 0 (spec §8).
        if self.rand_cond_frame:
            cond_idx = torch.randint(0, t_len, (b,), generator=generator)
        else:
            cond_idx = torch.zeros(b, dtype=torch.long)
        with torch.no_grad():
            frames = rearrange(video, "b c t h w -> (b t) c h w")
            post_noise = torch.randn((b * t_len, cfg.channels, height // cfg.vae_downsample,
                                      width // cfg.vae_downsample), generator=generator)
            # VAE frozen (spec §8); posterior sample mean + std * noise, scaled (spec §3.4)
            mean, logvar = self._moments(batch, frames)
            z = net.scale_factor * posterior_sample(mean, logvar, post_noise)
            z = rearrange(z, "(b t) c h w -> b c t h w", b=b).float()
            # Condition dropout (spec §8): r < p text; p <= r < 2p text+image; 2p <= r < 3p image.
            r = draw(b)
            p = self.uncond_prob
            drop_text = r < 2 * p
            drop_image = (r >= p) & (r < 3 * p)
            captions = [("" if drop_text[i] else c) for i, c in enumerate(batch["caption"])]
            cond_image = video[torch.arange(b), :, cond_idx.to(device)]  # [B,3,H,W]
            cond_image = torch.where(drop_image.to(device)[:, None, None, None], torch.zeros_like(cond_image),
                                     cond_image)
        text = self._text(captions)
        image_tokens = net.encode_image_tokens(cond_image)  # resampler may be trainable
        context = torch.cat([text, image_tokens], dim=1)  # [B, 77 + 16*T, C] (spec §7.1)
        c_concat = repeat(z[torch.arange(b), :, cond_idx.to(device)], "b c h w -> b c t h w", t=t_len)
        camera = net.prepare_camera(batch["w2c"].to(device), batch["K"].to(device), cond_idx.to(device),
                                    generator=generator, height=height, width=width)
        fs_key = "frame_stride" if cfg.fps_condition_type == "fs" else "fps"
        fs = batch[fs_key].to(device).long()

        t = torch.randint(*self.t_range, (b,), generator=generator).to(device)
        noise = torch.randn(z.shape, generator=generator).to(device)
        a = net.alphas_cumprod[t].float().view(b, 1, 1, 1, 1)
        x0 = z
        if cfg.use_dynamic_rescale:  # v-models scale the clean latent by scale_arr[t] before noising (spec §7.5)
            x0 = z * net.scale_arr[t].float().view(b, 1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = noise if net.parameterization == "eps" else a.sqrt() * noise - (1 - a).sqrt() * x0
        out = net.apply_model(x_t.to(net.dtype), t, context, c_concat.to(net.dtype), fs, camera=camera)
        return F.mse_loss(out.float(), target)  # all frames, the conditioning frame included (spec §8)


# -- distributed setup --------------------------------------------------------------------------------------------

def setup_distributed(device_opt: str | None) -> tuple[int, int, int, torch.device]:
    """(rank, world size, local rank, device); initialises the process group under torchrun (RANK set)."""
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and (device_opt is None or str(device_opt).startswith("cuda"))
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        device = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        return rank, world, local, device
    device = torch.device(device_opt) if device_opt else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return 0, 1, 0, device


def barrier(world: int) -> None:
    """dist.barrier when running distributed."""
    if world > 1:
        dist.barrier()


def step_seed(seed: int, rank: int, step: int, micro: int) -> int:
    """The seed of one micro-step's random draws: a function of (seed, rank, step, micro) only."""
    return int(np.random.SeedSequence([seed, rank, step, micro]).generate_state(1)[0])


# -- checkpoints --------------------------------------------------------------------------------------------------

def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def rng_state() -> dict:
    """Python, numpy and torch RNG states as tensors and plain types (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of rng_state."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def export_state_dict(model: CamI2VModel, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """The model's state dict in the released key layout, on CPU, optionally cast (floating tensors only)."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.contiguous()
    return out


def find_checkpoint(output_dir: Path, resume) -> Path | None:
    """The checkpoint folder to resume from, or None (resume=none, or auto with nothing saved yet)."""
    if resume in (None, False, "none", "None", "", "false"):
        return None
    if resume == "auto":
        latest = output_dir / "checkpoints" / "latest"
        if not latest.is_file():
            return None
        path = output_dir / "checkpoints" / latest.read_text().strip()
    else:
        path = Path(str(resume))
    if not (path / "model.safetensors").is_file() or not (path / "trainer.pt").is_file():
        raise TrainConfigError(f"resume={resume!r}: {path} is not a checkpoint folder (expected model.safetensors "
                               "and trainer.pt inside); pass a checkpoints/step_XXXXXXXX folder or resume=none")
    return path


class Checkpointer:
    """Writes and reads the run's checkpoint folders (rank-0 I/O, atomic folder rename)."""

    def __init__(self, output_dir: Path, rank: int, world: int, keep_last: int, save_dtype: torch.dtype | None):
        self.dir = output_dir / "checkpoints"
        self.rank, self.world, self.keep_last, self.save_dtype = rank, world, keep_last, save_dtype

    def save(self, step: int, model: CamI2VModel, trainer_state: dict, ema: dict | None,
             full_state: dict | None = None, rank_state: dict | None = None) -> Path:
        """Write checkpoints/step_<step>/ atomically; every rank contributes its RNG file (+ `rank_state`)."""
        name = f"step_{step:08d}"
        final = self.dir / name
        tmp = self.dir / f".tmp-{name}"
        if self.rank == 0:
            self.dir.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)  # a leftover of a crash during an earlier save of this step
            tmp.mkdir()
        barrier(self.world)
        _atomic_torch_save(dict(rng_state(), **(rank_state or {})), tmp / f"rng_rank{self.rank}.pt")
        if self.rank == 0:
            sd = full_state if full_state is not None else export_state_dict(model, None)
            meta = {CONFIG_METADATA_KEY: model.config.to_json(), "format": "cami2v-training",
                    "training_step": str(step)}
            save_safetensors(_cast_sd(sd, self.save_dtype), tmp / "model.safetensors", metadata=meta)
            if ema is not None:
                ema_sd = dict(sd)
                ema_sd.update({k: v.detach().cpu() for k, v in ema.items()})
                save_safetensors(_cast_sd(ema_sd, self.save_dtype), tmp / "ema.safetensors",
                                 metadata=dict(meta, ema="true"))
            _atomic_torch_save(dict(trainer_state, world_size=self.world), tmp / "trainer.pt")
        barrier(self.world)
        if self.rank == 0:
            if final.exists():  # re-saving the same step (e.g. a rerun): move the old one aside first
                old = self.dir / f".old-{name}"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                shutil.rmtree(old)
            os.replace(tmp, final)
            _atomic_write_text(self.dir / "latest", name + "\n")
            self._prune()
        barrier(self.world)
        return final

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        done = sorted(p for p in self.dir.glob("step_*") if p.is_dir())
        for old in done[:-self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)

    def load_rng(self, path: Path) -> dict | None:
        """Restore this rank's RNG states if the checkpoint has them (same world size); returns the rank's file."""
        f = path / f"rng_rank{self.rank}.pt"
        if not f.is_file():
            return None
        state = torch.load(f, map_location="cpu", weights_only=True)
        set_rng_state(state)
        return state


def _cast_sd(sd: dict, dtype: torch.dtype | None) -> dict:
    if dtype is None:
        return sd
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}


# -- metrics ------------------------------------------------------------------------------------------------------

class MetricLogger:
    """Rank-0 metrics: metrics.jsonl always, TensorBoard when installed and enabled."""

    def __init__(self, output_dir: Path, enabled: bool, tensorboard: bool, resumed_at: int | None = None):
        self.enabled = enabled
        self.file = None
        self.tb = None
        if not enabled:
            return
        self.file = open(output_dir / "metrics.jsonl", "a", buffering=1)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                # purge_step drops the events a killed run wrote after the checkpoint it is resumed from
                self.tb = SummaryWriter(str(output_dir / "tensorboard"),
                                        purge_step=None if resumed_at is None else resumed_at + 1)
            except ImportError:
                log.info("tensorboard is not installed; metrics go to metrics.jsonl only")

    def log(self, step: int, values: dict) -> None:
        """Append one line (and TensorBoard scalars)."""
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        """Flush and close."""
        if self.file:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def truncate_metrics(path: Path, step: int) -> int:
    """Rewrite metrics.jsonl (atomically) with only the rows of steps <= `step`; returns the rows dropped.

    A run killed after its last checkpoint logged steps that the resumed run logs again. Where a step appears
    twice (a file written before this rule), the later row is the one of the run that reached the checkpoint.
    A line that is not JSON can only be a row half-written when the process died, after the checkpoint.
    """
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    rows: dict = {}  # step (or line number for rows without one) -> line, in file order of the kept row
    for n, line in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        at = row.get("step") if isinstance(row, dict) else None
        if not isinstance(at, (int, float)):
            rows[("line", n)] = line
        elif at <= step:
            rows.pop(at, None)
            rows[at] = line
    if len(rows) == len(lines):
        return 0
    _atomic_write_text(path, "".join(line + "\n" for line in rows.values()))
    return len(lines) - len(rows)


# -- the loop -----------------------------------------------------------------------------------------------------

def lr_factor(step: int, cfg: DictConfig) -> float:
    """Multiplier of the base LR at an optimizer step: linear warm-up, then constant or cosine to min_lr_ratio."""
    warm = int(cfg.warmup_steps)
    if warm and step < warm:
        return (step + 1) / warm
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warm) / max(1, int(cfg.max_steps) - warm))
    floor = float(cfg.min_lr_ratio)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_dataset(cfg: DictConfig, model_cfg: ModelConfig):
    """The training dataset of the config's `data` section."""
    from training.data import RealEstate10KDataset

    d = cfg.data
    if d.kind != "realestate10k":
        raise TrainConfigError(f"data.kind must be 'realestate10k' (also used for synthetic data); got {d.kind!r}")
    if not d.root:
        raise TrainConfigError("data.root is not set: give the dataset folder, e.g. data.root=runs/synth64 "
                               "(render one with `python -m training.synthetic`)")
    try:
        return RealEstate10KDataset(d.root, d.split, video_length=d.video_length or model_cfg.temporal_length,
                                    resolution=tuple(d.resolution or model_cfg.resolution),
                                    frame_stride=tuple(d.frame_stride), max_clips=d.max_clips)
    except FileNotFoundError as e:  # no clips there: the message says how to make them
        raise TrainConfigError(str(e)) from None


def train(cfg: DictConfig, config_path: str | None = None) -> dict:
    """Run (or resume) a training run; returns the last logged metrics and the run's paths.

    A missing VAE or synthetic data set of the shipped synthetic configs is supplied first (supply_vae,
    supply_data); `config_path` only makes the error for other missing files name the exact command."""
    tc = cfg.train
    rank, world, local, device = setup_distributed(tc.device)
    if tc.threads and device.type == "cpu":
        torch.set_num_threads(int(tc.threads))
    out_dir = Path(tc.output_dir)
    if rank == 0:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # Inputs first: a config that cannot run leaves no empty run folder behind.
    cfg = supply_vae(cfg, rank, world, config_path)
    model_cfg = model_config_from_section(cfg.model)
    supply_data(cfg, model_cfg, rank, world)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    barrier(world)
    torch.manual_seed(int(tc.seed))  # identical initial weights on every rank
    model = build_model(model_cfg, device=device)
    initialise(model, cfg.model.init, list(cfg.model.init_parts or []))
    names = set(trainable_parameter_names(model, OmegaConf.to_container(tc.trainable)
                                          if not isinstance(tc.trainable, str) else tc.trainable))
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    model.train()
    # Frozen encoders run in eval mode (no dropout), as the original's frozen stages (spec §8).
    for part in (model.first_stage_model, model.cond_stage_model, model.embedder):
        part.eval()
    n_train = sum(p.numel() for n, p in model.named_parameters() if n in names)
    rand_cond = model_cfg.rand_cond_frame if tc.rand_cond_frame is None else bool(tc.rand_cond_frame)
    frozen = not any(n.startswith(("first_stage_model.", "cond_stage_model.")) for n in names)
    if tc.cache_frozen and not frozen:
        raise TrainConfigError("train.cache_frozen needs the VAE and text tower frozen; remove them from "
                               "train.trainable or set train.cache_frozen=false")
    objective = DiffusionObjective(model, tc.uncond_prob, rand_cond, cache_frozen=bool(tc.cache_frozen))

    if world > 1 and tc.distributed == "fsdp":
        # FSDP2 (per-parameter sharding): works with frozen and trainable parameters side by side and on CPU/gloo.
        # Each UNet block is its own unit, so only one block's full weights exist at a time; the rest is the root.
        # FSDP2 cannot shard 0-dim parameters (the 256 UNet's attn2.alpha): they stay replicated and their
        # gradients are averaged by hand in _sync_replicated_grads.
        from torch.distributed.fsdp import fully_shard
        scalars = {p for p in objective.parameters() if p.dim() == 0}
        unet = model.model.diffusion_model
        for block in [*unet.input_blocks, unet.middle_block, *unet.output_blocks]:
            fully_shard(block, ignored_params=scalars)
        wrapped = fully_shard(objective, ignored_params=scalars)
        replicated = [p for p in scalars if p.requires_grad]
    elif world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device] if device.type == "cuda" else None, broadcast_buffers=False,
            find_unused_parameters=bool(tc.find_unused_parameters))
    else:
        wrapped = objective
    if not (world > 1 and tc.distributed == "fsdp"):
        replicated = []
    params = [p for p in wrapped.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(tc.lr), betas=tuple(tc.betas), weight_decay=float(tc.weight_decay))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, tc))
    scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "fp16")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tc.precision)
    # EMA of the trainable weights: on rank 0 (replicated weights), or on every rank as shards under FSDP.
    fsdp = world > 1 and tc.distributed == "fsdp"
    ema = ({n: p.detach().float().clone() for n, p in model.named_parameters() if n in names}
           if tc.ema_decay and (rank == 0 or fsdp) else None)

    save_dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[str(tc.save_dtype)]
    ckpt = Checkpointer(out_dir, rank, world, int(tc.keep_last), save_dtype)
    start = 0
    window: list[float] = []  # this rank's losses since the last logged step
    resume_from = find_checkpoint(out_dir, tc.resume)
    if resume_from is not None:
        start, window = _resume(resume_from, model, wrapped, optimizer, scheduler, scaler, ema, ckpt, tc)
        if rank == 0:
            dropped = truncate_metrics(out_dir / "metrics.jsonl", start)
            log.info("resumed from %s at step %d%s", resume_from, start,
                     f" ({dropped} rows after it dropped from metrics.jsonl)" if dropped else "")
    if rank == 0:
        _atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg))
        log.info("model %s, %d trainable parameters of %d, world size %d, device %s", model_cfg.variant, n_train,
                 sum(p.numel() for p in model.parameters()), world, device)

    dataset = build_dataset(cfg, model_cfg)
    from training.data import KeyedSampler, collate
    bs, accum = int(tc.batch_size), int(tc.grad_accum)
    sampler = KeyedSampler(len(dataset), bs, int(tc.seed), rank)

    def batches_for(step: int, micro: int) -> dict:
        return collate([dataset[k] for k in sampler.keys_for_step(step * accum + micro)])

    metrics = MetricLogger(out_dir, rank == 0, bool(tc.tensorboard),
                           resumed_at=start if resume_from is not None else None)
    bar = None
    if rank == 0 and tc.progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=int(tc.max_steps), initial=start, desc="train", dynamic_ncols=True)
        except ImportError:
            bar = None
    last: dict = {}
    t0 = time.time()
    step = start
    try:
        while step < int(tc.max_steps):
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for micro in range(accum):
                seed = step_seed(int(tc.seed), rank, step, micro)
                torch.manual_seed(seed)  # the UNet's dropout draws from the global generator
                gen = torch.Generator().manual_seed(seed)
                batch = batches_for(step, micro)
                last_micro = micro == accum - 1 or world == 1
                if tc.distributed == "fsdp" and world > 1:
                    wrapped.set_requires_gradient_sync(last_micro)
                    sync = contextlib.nullcontext()
                else:
                    sync = contextlib.nullcontext() if last_micro else wrapped.no_sync()
                with sync:
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                        loss = wrapped(batch, gen)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower train.lr or use "
                                                 "train.precision=bf16/fp32")
                    scaler.scale(loss / accum).backward()
                total += loss.item() / accum
            scaler.unscale_(optimizer)
            _sync_replicated_grads(replicated, world)
            grad_norm = clip_grad_norm(params, float(tc.grad_clip) if tc.grad_clip else float("inf"))
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            if ema is not None:
                d = float(tc.ema_decay)
                with torch.no_grad():
                    for n, p in model.named_parameters():
                        if n in ema:
                            ema[n].mul_(d).add_(p.detach().float(), alpha=1 - d)
            window.append(total)
            if step % int(tc.log_every) == 0 or step == int(tc.max_steps):
                mean = torch.tensor(sum(window) / len(window), device=device)
                if world > 1:
                    dist.all_reduce(mean)
                    mean /= world
                last = {"loss": mean.item(), "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                        "elapsed_s": round(time.time() - t0, 2)}
                window = []
                metrics.log(step, last)
                if bar is not None:
                    bar.set_postfix(loss=f"{last['loss']:.4f}")
            if bar is not None:
                bar.update(1)
            if step % int(tc.save_every) == 0 or step == int(tc.max_steps):
                _save(ckpt, step, model, wrapped, optimizer, scheduler, scaler, ema, tc, world, window)
    finally:
        if bar is not None:
            bar.close()
        metrics.close()
    return {"step": step, "metrics": last, "output_dir": str(out_dir), "rank": rank, "model": model}


def _sync_replicated_grads(params: list[nn.Parameter], world: int) -> None:
    """Average the gradients of parameters FSDP leaves replicated (0-dim ones) over the ranks."""
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm of plain, DDP and FSDP2 (DTensor) gradients alike; returns the norm."""
    norms = []
    for p in params:
        if p.grad is None:
            continue
        n = p.grad.detach().float().norm()
        norms.append(n.full_tensor() if hasattr(n, "full_tensor") else n)  # a sharded grad's norm is partial
    if not norms:
        return torch.tensor(0.0)
    total = torch.stack(norms).norm()
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for p in params:
        if p.grad is not None:
            p.grad.mul_(coef.to(p.grad.device))
    return total


def _trainer_state(step, optimizer, scheduler, scaler, ema) -> dict:
    return {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "ema": ema}


def _save(ckpt: Checkpointer, step, model, wrapped, optimizer, scheduler, scaler, ema, tc, world,
          window: list[float]) -> None:
    # The losses since the last logged step are per rank: the next logged mean must average the same steps as
    # an uninterrupted run's, whatever step the checkpoint fell on.
    rank_state = {"loss_window": [float(x) for x in window]}
    if world > 1 and tc.distributed == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        msd, osd = get_state_dict(wrapped, optimizer, options=opts)
        full = {k.removeprefix("net."): v for k, v in msd.items()}
        ema_full = None
        if ema is not None:  # gathering is collective: every rank takes part
            ema_full = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).cpu() for k, v in ema.items()}
        state = {"step": step, "optimizer_full": osd, "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict(), "ema": ema_full}
        ckpt.save(step, model, state, ema_full, full_state=full, rank_state=rank_state)
    else:
        ckpt.save(step, model, _trainer_state(step, optimizer, scheduler, scaler, ema), ema, rank_state=rank_state)


def _resume(path: Path, model, wrapped, optimizer, scheduler, scaler, ema, ckpt: Checkpointer,
            tc) -> tuple[int, list[float]]:
    """Restore model, optimizer, scheduler, scaler, EMA, RNG; returns (step to continue from, loss window)."""
    sd, meta = load_state_dict(path / "model.safetensors")
    state = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
    distributed_fsdp = tc.distributed == "fsdp" and dist.is_initialized() and dist.get_world_size() > 1
    if distributed_fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict
        opts = StateDictOptions(full_state_dict=True)
        set_state_dict(wrapped, optimizer, model_state_dict={f"net.{k}": v for k, v in sd.items()},
                       optim_state_dict=state["optimizer_full"], options=opts)
    else:
        own = model.state_dict()
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)
        if "optimizer" not in state:
            raise TrainConfigError(f"{path} was saved by an FSDP run; resume it with train.distributed=fsdp")
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    if ema is not None and state.get("ema"):
        for k, v in state["ema"].items():
            if hasattr(ema[k], "device_mesh"):  # FSDP: keep this rank's shard of the full EMA tensor
                from torch.distributed.tensor import distribute_tensor
                ema[k] = distribute_tensor(v.to(ema[k].dtype), ema[k].device_mesh, ema[k].placements)
            else:
                ema[k].copy_(v)
    own_state = ckpt.load_rng(path)
    if own_state is None:
        log.warning("%s has no RNG state for rank %d (different world size); per-step seeding still makes the "
                    "data and noise reproducible", path, ckpt.rank)
        own_state = {}
    return int(state["step"]), [float(x) for x in own_state.get("loss_window", [])]


def main(argv: list[str] | None = None) -> int:
    """Command line: python -m training.train --config CONFIG.yaml [key=value ...]"""
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="overrides: omegaconf dot-list, e.g. max_steps=100 output_dir=runs/x "
                                       "resume=none train.lr=5e-5 data.root=/data/re10k")
    p.add_argument("--config", help="training YAML (training/configs/*.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        train(cfg, args.config)
    except CamI2VError as e:  # any error the user can act on (config, data, checkpoint), in one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
