"""The two frozen OpenCLIP towers: the ViT-H-14 text encoder (spec §3.1) and image encoder (spec §3.2).

Each class holds a child `model` whose parameter names and order are those of open_clip's `CLIP` (2.22) after the
original deleted the other tower, so `cond_stage_model.model.*` and `embedder.model.*` load unchanged:
- text:  positional_embedding, text_projection, logit_scale, transformer.resblocks.N.*, token_embedding, ln_final
- image: the same minus `transformer`, plus `visual.*` (class/positional embedding, proj, conv1, ln_pre,
  transformer.resblocks.N.*, ln_post). The image side keeps the unused text leftovers because the original does.
`text_projection`, `logit_scale`, `visual.ln_post` and `visual.proj` are stored but never used: the UNet wants
token sequences, not pooled embeddings.

A residual block is open_clip's `ResidualAttentionBlock`: x + attn(ln_1(x)), then x + mlp(ln_2(x)); attention is
nn.MultiheadAttention (packed q,k,v `in_proj`, scale head_dim^-0.5), the MLP is Linear-GELU(exact erf)-Linear with
ratio 4, LayerNorm eps 1e-5 in the activation dtype. ViT-H-14 and the tiny archs use GELU, not QuickGELU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention, merge_heads, split_heads
from .tokenizer import tokenize

VIT_H_14 = "ViT-H-14"
# open_clip's model config for ViT-H-14 (model_configs/ViT-H-14.json), the arch of every released checkpoint.
VIT_H_14_ARCH = {
    "embed_dim": 1024,
    "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24},
}
# open_clip's CLIPVisionCfg / CLIPTextCfg defaults, used for keys an arch dict leaves out.
VISION_DEFAULTS = {"image_size": 224, "layers": 12, "width": 768, "head_width": 64, "mlp_ratio": 4.0, "patch_size": 16}
TEXT_DEFAULTS = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}
# Options that change the architecture or key names; only their open_clip default is supported here.
_VISION_FIXED = {"ls_init_value": None, "input_patchnorm": False, "attentional_pool": False, "timm_model_name": None}
_TEXT_FIXED = {"ls_init_value": None, "hf_model_name": None, "embed_cls": False}
_TOP_FIXED = {"quick_gelu": False, "custom_text": False, "init_logit_bias": None}
# Options that do not affect the token outputs or the state dict (training-only, pooled-output-only, tokenizer).
_VISION_IGNORED = {"patch_dropout", "global_average_pool", "n_queries", "attn_pooler_heads", "output_tokens",
                   "timm_model_pretrained", "timm_pool", "timm_proj", "timm_proj_bias", "timm_drop", "timm_drop_path"}
_TEXT_IGNORED = {"pad_id", "output_tokens", "proj", "pooler_type", "hf_tokenizer_name", "hf_model_pretrained"}
_TOP_IGNORED = {"cast_dtype", "output_dict"}

# Preprocessing of FrozenOpenCLIPImageEmbedderV2 (spec §3.2): a fixed 224x224 squash and CLIP's normalisation.
PREPROCESS_SIZE = (224, 224)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# -- architecture dicts ----------------------------------------------------------------------------------------------

def clip_kwargs_from_arch(arch: str | dict | None) -> dict:
    """Constructor kwargs shared by OpenCLIPTextEncoder and OpenCLIPImageEncoder from an open_clip arch name/dict.

    None or "ViT-H-14" gives the released models' sizes; a dict is an open_clip model config
    (`{"embed_dim", "vision_cfg", "text_cfg"}`, e.g. the golden tiny JSON files). Text sizes come back as
    width/heads/layers/vocab_size/context_length, vision sizes with a `vision_` prefix; each tower ignores the
    other's (the original deletes the other tower but builds both from one arch).
    """
    if arch is None or arch == VIT_H_14:
        arch = VIT_H_14_ARCH
    elif isinstance(arch, str):
        raise ValueError(f"unknown OpenCLIP arch name {arch!r}: only {VIT_H_14!r} is built in; pass the open_clip "
                         "model-config dict instead (the JSON with embed_dim, vision_cfg and text_cfg)")
    if not isinstance(arch, dict):
        raise TypeError(f"OpenCLIP arch must be None, {VIT_H_14!r} or an open_clip model-config dict, "
                        f"got {type(arch).__name__}")
    if "embed_dim" not in arch:
        raise ValueError(f"OpenCLIP arch dict has no 'embed_dim' (keys: {sorted(arch)}); an open_clip model config "
                         "has embed_dim, vision_cfg and text_cfg")
    _check_options("arch", arch, {"embed_dim", "vision_cfg", "text_cfg"}, _TOP_FIXED, _TOP_IGNORED)
    vision = {**VISION_DEFAULTS, **_sub_config(arch, "vision_cfg")}
    text = {**TEXT_DEFAULTS, **_sub_config(arch, "text_cfg")}
    _check_options("vision_cfg", vision, set(VISION_DEFAULTS), _VISION_FIXED, _VISION_IGNORED)
    _check_options("text_cfg", text, set(TEXT_DEFAULTS), _TEXT_FIXED, _TEXT_IGNORED)
    if not isinstance(vision["layers"], int):
        raise ValueError(f"vision_cfg.layers={vision['layers']!r} describes a ModifiedResNet; only ViT image towers "
                         "(an int layer count) are supported")
    return dict(
        embed_dim=int(arch["embed_dim"]),
        width=int(text["width"]), heads=int(text["heads"]), layers=int(text["layers"]),
        vocab_size=int(text["vocab_size"]), context_length=int(text["context_length"]),
        vision_width=int(vision["width"]), vision_layers=int(vision["layers"]),
        vision_head_width=int(vision["head_width"]), vision_patch_size=_pair(vision["patch_size"]),
        vision_image_size=_pair(vision["image_size"]), vision_mlp_ratio=float(vision["mlp_ratio"]),
    )


def _sub_config(arch: dict, name: str) -> dict:
    sub = arch.get(name, {})
    if not isinstance(sub, dict):
        raise TypeError(f"OpenCLIP arch '{name}' must be a dict, got {type(sub).__name__}")
    return sub


def _check_options(where: str, cfg: dict, used: set, fixed: dict, ignored: set) -> None:
    """Refuse keys we would silently get wrong: unknown ones, and architecture switches away from their default."""
    for key, value in cfg.items():
        if key in fixed and value != fixed[key]:
            raise ValueError(f"OpenCLIP {where}.{key}={value!r} is not supported (only {fixed[key]!r}); the CamI2V "
                             "encoders are plain ViT towers, remove the option or use ViT-H-14")
        if key not in used and key not in fixed and key not in ignored:
            known = sorted(used | set(fixed) | ignored)
            raise ValueError(f"OpenCLIP {where} has an unknown key {key!r}; expected some of {', '.join(known)}")


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"expected an int or an (h, w) pair, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


# -- shared blocks ---------------------------------------------------------------------------------------------------

class MultiheadSelfAttention(nn.Module):
    """nn.MultiheadAttention's parameters (packed `in_proj_weight/bias`, `out_proj`) run through `attention`."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, C] (mask bool [L, L], True = attend) -> [B, L, C]."""
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        # split_heads: [B, L, h*d] -> [B, h, L, d]; scale defaults to d^-0.5 as in nn.MultiheadAttention
        out = attention(split_heads(q, self.heads), split_heads(k, self.heads), split_heads(v, self.heads), mask=mask)
        return self.out_proj(merge_heads(out))


class MLP(nn.Module):
    """c_fc -> GELU (exact) -> c_proj, open_clip's block MLP."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., C] -> [..., C]."""
        return self.c_proj(F.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)); x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = MultiheadSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, C] -> [B, L, C]."""
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of ResidualAttentionBlocks under the original name `resblocks`."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, skip_last: int = 0) -> torch.Tensor:
        """Run all blocks but the last `skip_last`. [B, L, C] -> [B, L, C]."""
        for block in self.resblocks[:len(self.resblocks) - skip_last]:
            x = block(x, mask)
        return x


def _text_parameters(module: nn.Module, width: int, context_length: int, embed_dim: int) -> None:
    """Register the text-side parameters every open_clip CLIP has, in its state_dict order."""
    # Plain parameters come first in a state_dict, in registration order: positional_embedding, text_projection,
    # logit_scale (as open_clip's CLIP.__init__ assigns them).
    module.positional_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
    module.text_projection = nn.Parameter(torch.randn(width, embed_dim) * width ** -0.5)
    module.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


def _text_modules(module: nn.Module, width: int, vocab_size: int) -> None:
    """Register token_embedding and ln_final (they follow the transformer / visual children)."""
    module.token_embedding = nn.Embedding(vocab_size, width)
    nn.init.normal_(module.token_embedding.weight, std=0.02)
    module.ln_final = nn.LayerNorm(width)


# -- text tower (spec §3.1) ------------------------------------------------------------------------------------------

class OpenCLIPTextModel(nn.Module):
    """open_clip CLIP without `visual`: the module under `cond_stage_model.model`."""

    def __init__(self, width: int, heads: int, layers: int, vocab_size: int, context_length: int, embed_dim: int):
        super().__init__()
        self.context_length = context_length
        _text_parameters(self, width, context_length, embed_dim)
        self.transformer = Transformer(width, layers, heads)
        _text_modules(self, width, vocab_size)


class OpenCLIPTextEncoder(nn.Module):
    """FrozenOpenCLIPEmbedder: tokens -> token + positional embedding -> causal blocks (all but the last for
    layer="penultimate") -> ln_final, no projection (spec §3.1).

    The `vision_*` keywords of clip_kwargs_from_arch are accepted and ignored: the original builds the whole
    CLIP from one arch and deletes `visual`.
    """

    LAYERS = ("last", "penultimate")

    def __init__(self, width: int = 1024, heads: int = 16, layers: int = 24, vocab_size: int = 49408,
                 context_length: int = 77, embed_dim: int = 1024, layer: str = "penultimate", **vision_kwargs):
        super().__init__()
        _check_vision_kwargs(vision_kwargs, "OpenCLIPTextEncoder")
        if layer not in self.LAYERS:
            raise ValueError(f"text encoder layer must be one of {', '.join(self.LAYERS)}, got {layer!r}")
        self.layer = layer
        self.skip_last = self.LAYERS.index(layer)  # "penultimate" drops the last block
        self.model = OpenCLIPTextModel(width, heads, layers, vocab_size, context_length, embed_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids [B, 77] int64 -> hidden states [B, 77, width] (layer per `self.layer`, then ln_final)."""
        ctx = self.model.context_length
        if tokens.ndim != 2 or tokens.shape[1] != ctx:
            raise ValueError(f"text encoder expects token ids of shape [batch, {ctx}] (from tokenize), "
                             f"got {tuple(tokens.shape)}")
        x = self.model.token_embedding(tokens) + self.model.positional_embedding  # [B, 77, C]
        causal = torch.ones(ctx, ctx, dtype=torch.bool, device=x.device).tril()  # token i sees tokens <= i
        x = self.model.transformer(x, causal, skip_last=self.skip_last)
        return self.model.ln_final(x)

    @torch.no_grad()
    def encode(self, prompts: str | list[str]) -> torch.Tensor:
        """Tokenize and encode prompts on the weights' device. -> [B, 77, width]"""
        if isinstance(prompts, str):
            prompts = [prompts]
        tokens = tokenize(list(prompts), self.model.context_length)
        return self(tokens.to(self.model.token_embedding.weight.device))


def _check_vision_kwargs(kwargs: dict, owner: str) -> None:
    unknown = sorted(k for k in kwargs if not k.startswith("vision_"))
    if unknown:
        raise TypeError(f"{owner} got unexpected keyword arguments {unknown}; it takes the text sizes of "
                        "clip_kwargs_from_arch (width, heads, layers, vocab_size, context_length, embed_dim)")


# -- image tower (spec §3.2) -----------------------------------------------------------------------------------------

class VisionTransformer(nn.Module):
    """open_clip's ViT image tower under `visual` (conv1 patches, CLS token, ln_pre, blocks, ln_post, proj)."""

    def __init__(self, width: int, layers: int, head_width: int, patch_size: tuple[int, int],
                 image_size: tuple[int, int], mlp_ratio: float, embed_dim: int):
        super().__init__()
        if width % head_width:
            raise ValueError(f"vision width {width} is not a multiple of head_width {head_width}")
        grid = (image_size[0] // patch_size[0], image_size[1] // patch_size[1])
        scale = width ** -0.5
        # Parameter order of open_clip's VisionTransformer state_dict: class_embedding, positional_embedding, proj.
        self.class_embedding = nn.Parameter(torch.randn(width) * scale)
        self.positional_embedding = nn.Parameter(torch.randn(grid[0] * grid[1] + 1, width) * scale)
        self.proj = nn.Parameter(torch.randn(width, embed_dim) * scale)
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, width // head_width, mlp_ratio)
        self.ln_post = nn.LayerNorm(width)

    def forward_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [B, 3, 224, 224] -> all tokens of the last block [B, 1 + grid^2, width] (no ln_post)."""
        x = self.conv1(pixels).flatten(2).transpose(1, 2)  # [B, C, gh, gw] -> [B, gh*gw, C]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # [B, 1, C]
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.transformer(self.ln_pre(x))


class OpenCLIPImageModel(nn.Module):
    """open_clip CLIP without the text `transformer`: the module under `embedder.model`."""

    def __init__(self, vision: dict, width: int, vocab_size: int, context_length: int, embed_dim: int):
        super().__init__()
        _text_parameters(self, width, context_length, embed_dim)
        self.visual = VisionTransformer(embed_dim=embed_dim, **vision)
        _text_modules(self, width, vocab_size)


class OpenCLIPImageEncoder(nn.Module):
    """FrozenOpenCLIPImageEmbedderV2: image in [-1,1] -> kornia-style 224x224 bicubic resize -> CLIP normalisation
    -> ViT -> all tokens before ln_post, no projection (spec §3.2).

    Text sizes (`width`, `vocab_size`, `context_length`) shape only the unused text leftovers the original keeps;
    `heads` and `layers` are accepted and ignored (their transformer was deleted).
    """

    def __init__(self, vision_width: int = 1280, vision_layers: int = 32, vision_head_width: int = 80,
                 vision_patch_size: int | tuple[int, int] = 14, vision_image_size: int | tuple[int, int] = 224,
                 vision_mlp_ratio: float = 4.0, embed_dim: int = 1024, width: int = 1024, vocab_size: int = 49408,
                 context_length: int = 77, heads: int | None = None, layers: int | None = None,
                 antialias: bool = True):
        super().__init__()
        self.antialias = antialias
        vision = dict(width=vision_width, layers=vision_layers, head_width=vision_head_width,
                      patch_size=_pair(vision_patch_size), image_size=_pair(vision_image_size),
                      mlp_ratio=vision_mlp_ratio)
        self.model = OpenCLIPImageModel(vision, width, vocab_size, context_length, embed_dim)

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1,1] -> [B, 3, 224, 224] CLIP-normalised, float32 or wider."""
        x = image if image.dtype in (torch.float32, torch.float64) else image.float()
        x = resize_antialiased_bicubic(x, PREPROCESS_SIZE, antialias=self.antialias)
        x = (x + 1.0) / 2.0
        mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std  # kornia.enhance.normalize divides (not multiplies by 1/std)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image [B, 3, H, W] in [-1, 1] -> tokens [B, 257, vision_width] (ViT-H-14: [B, 257, 1280])."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image encoder expects [batch, 3, H, W] in [-1, 1], got shape {tuple(image.shape)}; "
                             "convert a ComfyUI IMAGE [B,H,W,C] in 0..1 with x.permute(0, 3, 1, 2) * 2 - 1")
        weight = self.model.visual.conv1.weight
        # The resize and normalisation run in float32 (as the original's buffers do), then the tower's dtype.
        pixels = self.preprocess(image.to(weight.device)).to(weight.dtype)
        return self.model.visual.forward_tokens(pixels)


# -- kornia's resize, reproduced (spec §3.2) -------------------------------------------------------------------------

def resize_antialiased_bicubic(x: torch.Tensor, size: tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """kornia.geometry.resize(x, size, 'bicubic', align_corners=True, antialias) of kornia 0.9. [B,C,H,W] -> [B,C,h,w]

    kornia blurs only when some side shrinks: a separable Gaussian per axis with sigma = max((factor - 1) / 2,
    0.001) and kernel size int(max(4 * sigma, 3)) rounded up to odd (both axes get one as soon as either shrinks),
    reflect-padded, horizontal pass first; then torch's bicubic (A = -0.75) with align_corners=True.
    """
    h, w = x.shape[-2:]
    factors = (h / size[0], w / size[1])
    if antialias and max(factors) > 1:
        sigmas = tuple(max((f - 1.0) / 2.0, 0.001) for f in factors)
        ksizes = tuple(_odd(int(max(4.0 * s, 3))) for s in sigmas)
        x = _blur_1d(x, ksizes[1], sigmas[1], dim=-1)
        x = _blur_1d(x, ksizes[0], sigmas[0], dim=-2)
    return F.interpolate(x, size=size, mode="bicubic", align_corners=True)


def _odd(n: int) -> int:
    return n if n % 2 else n + 1


def gaussian_kernel1d(size: int, sigma: float, dtype: torch.dtype, device=None) -> torch.Tensor:
    """Normalised Gaussian taps at offsets -(size//2)..size//2, computed in `dtype` like kornia. -> [size]"""
    sigma_t = torch.tensor(sigma, dtype=dtype, device=device)  # kornia holds sigma as a tensor of the input dtype
    offsets = torch.arange(size, dtype=dtype, device=device) - float(size // 2)
    taps = torch.exp(-offsets.pow(2.0) / (2 * sigma_t.pow(2.0)))
    return taps / taps.sum()


def _blur_1d(x: torch.Tensor, size: int, sigma: float, dim: int) -> torch.Tensor:
    """Depthwise 1-D Gaussian along W (dim -1) or H (dim -2) with reflect padding. [B,C,H,W] -> [B,C,H,W]"""
    channels, pad = x.shape[1], size // 2
    taps = gaussian_kernel1d(size, sigma, x.dtype, x.device)
    if dim == -1:
        kernel = taps.view(1, 1, 1, size).expand(channels, 1, 1, size)
        x = F.pad(x, (pad, pad, 0, 0), mode="reflect")
    else:
        kernel = taps.view(1, 1, size, 1).expand(channels, 1, size, 1)
        x = F.pad(x, (0, 0, pad, pad), mode="reflect")
    return F.conv2d(x, kernel, groups=channels)


__all__ = ["OpenCLIPTextEncoder", "OpenCLIPImageEncoder", "clip_kwargs_from_arch", "tokenize",
           "resize_antialiased_bicubic", "gaussian_kernel1d", "VIT_H_14", "VIT_H_14_ARCH", "CLIP_MEAN", "CLIP_STD"]
