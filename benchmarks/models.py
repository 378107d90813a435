"""The released architectures (256x256, and 320x512 where released) with random weights, built cheaply for timing.

Only the parts a denoising loop runs are materialised: the UNet and, for the camera models, the pose encoder. The
text/image encoders and the VAE stay on the meta device (they are the same for all three models and run once per
video, not per step). The base UNet weights are one set of tensors shared by all three models, and CameraCtrl and
CamI2V share one pose encoder: the architectures (and so the work per call) are exactly the released ones, while
the process holds one copy of what they have in common. Per-model memory is reported with each model's own weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cami2v_core.configs import PRESETS
from cami2v_core.model import CamI2VModel, schedule_buffers
from cami2v_core.modules.camera_encoder import CameraPoseEncoder

VARIANTS = ("dynamicrafter", "cameractrl", "cami2v")
PRESET_OF = {"dynamicrafter": "dynamicrafter-256", "cameractrl": "cameractrl-256", "cami2v": "cami2v-256"}


POOL_SIZE = 1 << 20


@torch.no_grad()
def random_init_(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Fill parameters in place: weights with variance 1/fan_in (activations stay O(1)), biases 0, norm scales 1.

    The weights are tiled from one pool of 2**20 uniform draws, scaled per tensor: drawing 1.4 billion numbers takes
    longer than the CPU quick benchmark may run, and kernel speed does not depend on the values (finite, not
    denormal) anyway.
    """
    pool = None
    for name, p in module.named_parameters():
        if p.dim() >= 2:
            if pool is None or pool.device != p.device:
                pool = (torch.rand(POOL_SIZE, generator=generator) * 2 - 1).to(p.device)  # U(-1, 1), variance 1/3
            bound = math.sqrt(3.0 / p[0].numel())
            flat = p.view(-1)
            for start in range(0, flat.numel(), POOL_SIZE):
                part = flat[start:start + POOL_SIZE]
                part.copy_(pool[:part.numel()]).mul_(bound)
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.fill_(1.0)


def _materialize(module: nn.Module, device, dtype, generator, shared: dict | None = None, prefix: str = "") -> None:
    """Give every meta parameter of `module` real storage: the tensor of the same name in `shared`, else random."""
    shared = shared or {}
    tied = {name: shared[prefix + name] for name, p in module.named_parameters()
            if prefix + name in shared and shared[prefix + name].shape == p.shape}
    if tied:
        module.load_state_dict(tied, strict=False, assign=True)
    own = [name for name, p in module.named_parameters() if p.device.type == "meta"]
    for name in own:
        owner, _, attr = name.rpartition(".")
        sub = module.get_submodule(owner) if owner else module
        old = getattr(sub, attr)
        setattr(sub, attr, nn.Parameter(torch.empty(old.shape, device=device, dtype=dtype), requires_grad=False))
    random_init_(_Subset(module, set(own)), generator)


class _Subset(nn.Module):
    """named_parameters() of `module` restricted to `names` (for initialising only the model's own weights)."""

    def __init__(self, module: nn.Module, names: set):
        super().__init__()
        self._names = names
        self._module = [module]

    def named_parameters(self, *args, **kwargs):
        for name, p in self._module[0].named_parameters():
            if name in self._names:
                yield name, p


SIZES = ("256", "512", "tiny", "tiny-wide")


def tiny_wide_config():
    """The tiny preset at 64x128 with its top level unmasked: the 512 model's shape (wide, ds 1 unmasked), small."""
    tiny = PRESETS["tiny"]
    return tiny.replace(image_size=(8, 16), epipolar=dict(tiny.epipolar, origin_h=64, origin_w=128,
                                                          attention_resolution=[4, 2]))


def family_configs(size: str = "256", variants=VARIANTS) -> dict:
    """{variant: ModelConfig}: the released 256 or 512 presets, or "tiny" / "tiny-wide" (miniatures, for tests)."""
    if size == "256":
        return {v: PRESETS[PRESET_OF[v]] for v in variants}
    if size == "512":
        missing = [v for v in variants if f"{v}-512" not in PRESETS]
        if missing:
            raise ValueError(f"no 320x512 release of {', '.join(missing)}; at 512 choose from "
                             f"{', '.join(v for v in VARIANTS if f'{v}-512' in PRESETS)}")
        return {v: PRESETS[f"{v}-512"] for v in variants}
    if size == "tiny":
        return {v: PRESETS["tiny"].with_variant(v) for v in variants}
    if size == "tiny-wide":
        return {v: tiny_wide_config().with_variant(v) for v in variants}
    raise ValueError(f"model size must be one of {', '.join(SIZES)}, got {size!r}")


def build_family(variants=VARIANTS, device="cpu", dtype=torch.float32, seed: int = 0, size: str = "256") -> dict:
    """{variant: CamI2VModel} with random weights; one shared base UNet and one shared pose encoder."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    configs = family_configs(size, variants)
    models, base, pose_encoder = {}, None, None
    for variant in variants:
        config = configs[variant]
        with torch.device("meta"):
            model = CamI2VModel(config)
        unet = model.model.diffusion_model
        _materialize(unet, device, dtype, generator, shared=base)
        if base is None:
            base = dict(unet.named_parameters())
        if config.pose_encoder is not None:
            if pose_encoder is None:
                pose_encoder = CameraPoseEncoder(**config.pose_encoder).to(device=device, dtype=dtype).eval()
                random_init_(pose_encoder, generator)
            model.pose_encoder = pose_encoder
        for name, value in schedule_buffers(config).items():  # the sampler reads these; built on meta above
            model.register_buffer(name, value.to(device))
        models[variant] = model.eval()
    return models
