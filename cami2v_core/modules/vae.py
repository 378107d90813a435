"""The KL-f8 autoencoder of Latent Diffusion, as DynamiCrafter and CamI2V use it (spec §3.4, golden README §8).

Attribute names are LDM's (`encoder.down.i.block.j`, `encoder.mid.attn_1`, `decoder.up.i.upsample`, `quant_conv`,
`post_quant_conv`), the layout of the SD 1.x/2.x VAE, so the `first_stage_model.*` keys of every released checkpoint
load with `strict=True` once the prefix is stripped. Images are `[N, 3, H, W]` in [-1, 1]; a video is its frames
folded into N. Every op works on one image at a time, which is why encoding and decoding may run in chunks of
frames without changing a single value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .attention import attention

LOGVAR_RANGE = (-30.0, 20.0)  # the posterior's log-variance clamp (spec §3.4)


def posterior_sample(mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """A draw of the diagonal Gaussian posterior: mean + exp(logvar / 2) * noise (unscaled latent, spec §3.4)."""
    return mean + torch.exp(0.5 * logvar) * noise.to(mean.device, mean.dtype)

# ddconfig keys of the original Encoder/Decoder: required ones, and optional ones with the original defaults.
_DDCONFIG_REQUIRED = ("ch", "out_ch", "num_res_blocks", "attn_resolutions", "in_channels", "resolution",
                      "z_channels")
_DDCONFIG_DEFAULTS = dict(ch_mult=(1, 2, 4, 8), dropout=0.0, resamp_with_conv=True, double_z=True,
                          use_linear_attn=False, attn_type="vanilla", give_pre_end=False, tanh_out=False)
_ATTN_TYPES = ("vanilla", "none")


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm(32 groups, eps 1e-6) of every VAE norm layer (spec §3.4).

    No fp32 island is needed here in fp16 / bf16: PyTorch accumulates a group's mean and variance in fp32."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm-swish-conv3x3 twice plus a skip (1x1 `nin_shortcut` or 3x3 `conv_shortcut` when channels change)."""

    def __init__(self, in_channels: int, out_channels: int | None = None, conv_shortcut: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = None
        if in_channels != out_channels:
            # The attribute name is part of the checkpoint key, so it follows the original's two spellings.
            name = "conv_shortcut" if conv_shortcut else "nin_shortcut"
            kernel = 3 if conv_shortcut else 1
            setattr(self, name, nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2))
            self.skip = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C_in, H, W] -> [N, C_out, H, W]."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.skip is not None:
            x = getattr(self, self.skip)(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W pixels of one image, 1x1-conv projections, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, C, H, W]."""
        n = self.norm(x)
        height, width = x.shape[-2:]
        # one head of width C, softmax scale C^-0.5 (the attention default for d = C)
        q, k, v = (rearrange(conv(n), "n c h w -> n 1 (h w) c") for conv in (self.q, self.k, self.v))
        if q.dtype == torch.float16:
            # fp32 island: one head of C = 512 channels, so q.k sums 512 products of unnormalised projections and
            # can pass fp16's 65504 before the softmax wherever the product is formed in fp16 (the math backend,
            # SDPA's fallback for a head wider than its fused kernels take). This runs once, at 1/8 resolution.
            h = attention(q.float(), k.float(), v.float()).to(x.dtype)
        else:
            h = attention(q, k, v)
        h = rearrange(h, "n 1 (h w) c -> n c h w", h=height, w=width)
        return x + self.proj_out(h)


def make_attn(channels: int, attn_type: str) -> nn.Module:
    """The attention block of a level: AttnBlock ('vanilla') or nothing ('none')."""
    return AttnBlock(channels) if attn_type == "vanilla" else nn.Identity()


class Downsample(nn.Module):
    """Halve H and W: zero-pad right/bottom by one, conv3x3 stride 2 (`conv`); or 2x2 average pooling."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, C, H/2, W/2]."""
        if not self.with_conv:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        # asymmetric padding (0,1,0,1): torch convs only pad symmetrically (spec §3.4)
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour x2, then conv3x3 (`conv`) when with_conv."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, C, 2H, 2W]."""
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.with_conv else x


def _level(blocks: list[nn.Module], attns: list[nn.Module], resample: nn.Module | None, name: str) -> nn.Module:
    """One resolution level holding `block`, `attn` and optionally `downsample`/`upsample` (the key layout)."""
    level = nn.Module()
    level.block = nn.ModuleList(blocks)
    level.attn = nn.ModuleList(attns)
    if resample is not None:
        setattr(level, name, resample)
    return level


def _middle(channels: int, dropout: float, attn_type: str) -> nn.Module:
    """The mid section `block_1`, `attn_1`, `block_2` at the lowest resolution."""
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, dropout=dropout)
    mid.attn_1 = make_attn(channels, attn_type)
    mid.block_2 = ResnetBlock(channels, channels, dropout=dropout)
    return mid


class Encoder(nn.Module):
    """Image [N, in_channels, H, W] -> moments [N, 2*z_channels (double_z) or z_channels, H/f, W/f]."""

    def __init__(self, ch: int, ch_mult, num_res_blocks: int, attn_resolutions, dropout: float,
                 resamp_with_conv: bool, in_channels: int, resolution: int, z_channels: int, double_z: bool,
                 attn_type: str):
        super().__init__()
        self.num_res_blocks = num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        in_mult = (1,) + tuple(ch_mult)
        curr_res = resolution  # attention is placed by the nominal resolution of a level, as the original
        self.down = nn.ModuleList()
        for i, mult in enumerate(ch_mult):
            block_in, block_out = ch * in_mult[i], ch * mult
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, dropout=dropout))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attns.append(make_attn(block_in, attn_type))
            last = i == len(ch_mult) - 1
            self.down.append(_level(blocks, attns, None if last else Downsample(block_in, resamp_with_conv),
                                    "downsample"))
            if not last:
                curr_res //= 2
        self.mid = _middle(block_in, dropout, attn_type)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C_in, H, W] -> [N, C_z, H/f, W/f]."""
        h = self.conv_in(x)
        for level in self.down:
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent [N, z_channels, h, w] -> image [N, out_ch, h*f, w*f]; num_res_blocks + 1 blocks per level."""

    def __init__(self, ch: int, out_ch: int, ch_mult, num_res_blocks: int, attn_resolutions, dropout: float,
                 resamp_with_conv: bool, resolution: int, z_channels: int, attn_type: str,
                 give_pre_end: bool = False, tanh_out: bool = False):
        super().__init__()
        self.give_pre_end = give_pre_end
        self.tanh_out = tanh_out
        levels = len(ch_mult)
        block_in = ch * ch_mult[-1]
        curr_res = resolution // 2 ** (levels - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = _middle(block_in, dropout, attn_type)
        # Built from the lowest resolution up, but stored so that up[i] is level i (same index as encoder.down[i]).
        up: list[nn.Module] = []
        for i in reversed(range(levels)):
            block_out = ch * ch_mult[i]
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, dropout=dropout))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attns.append(make_attn(block_in, attn_type))
            up.insert(0, _level(blocks, attns, Upsample(block_in, resamp_with_conv) if i != 0 else None, "upsample"))
            if i != 0:
                curr_res *= 2
        self.up = nn.ModuleList(up)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """[N, z_channels, h, w] -> [N, out_ch, h*f, w*f]."""
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(self.up):
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        if self.give_pre_end:
            return h
        h = self.conv_out(F.silu(self.norm_out(h)))
        return torch.tanh(h) if self.tanh_out else h


def _check_ddconfig(ddconfig) -> dict:
    """The original ddconfig with defaults filled in; unknown, missing or unsupported entries raise."""
    if not isinstance(ddconfig, dict):
        raise TypeError(f"ddconfig must be a dict (the original first_stage_config.params.ddconfig), "
                        f"got {type(ddconfig).__name__}")
    unknown = sorted(set(ddconfig) - set(_DDCONFIG_REQUIRED) - set(_DDCONFIG_DEFAULTS))
    if unknown:
        raise TypeError(f"ddconfig has unknown keys {unknown}; expected some of "
                        f"{', '.join(_DDCONFIG_REQUIRED + tuple(_DDCONFIG_DEFAULTS))}")
    missing = [k for k in _DDCONFIG_REQUIRED if k not in ddconfig]
    if missing:
        raise TypeError(f"ddconfig is missing {missing}; the original configs always set "
                        f"{', '.join(_DDCONFIG_REQUIRED)}")
    cfg = {**_DDCONFIG_DEFAULTS, **ddconfig}
    if not cfg["double_z"]:
        raise ValueError("ddconfig double_z must be true: AutoencoderKL needs the mean and the log-variance "
                         "(the original asserts it too)")
    if cfg["use_linear_attn"] or cfg["attn_type"] not in _ATTN_TYPES:
        kind = "linear" if cfg["use_linear_attn"] else repr(cfg["attn_type"])
        raise NotImplementedError(f"VAE attention type {kind} is not implemented; supported attn_type values are "
                                  f"{', '.join(map(repr, _ATTN_TYPES))} (every released config uses 'vanilla')")
    return cfg


class AutoencoderKL(nn.Module):
    """LDM AutoencoderKL: `encode` -> posterior (mean, clamped logvar), `decode` of an unscaled latent.

    Arguments are the original `first_stage_config.params`: `embed_dim` (4) and `ddconfig` (ch 128,
    ch_mult (1,2,4,4), num_res_blocks 2, z_channels 4, double_z, attn_resolutions [] for KL-f8). The training-only
    arguments of the original (`lossconfig`, `monitor`, `image_key`, ...) are accepted and ignored; `ckpt_path`
    and `colorize_nlabels` would change what the module holds and are refused.
    The 0.18215 scale factor is applied by the caller (`CamI2VModel`), not here.
    """

    def __init__(self, embed_dim: int, ddconfig: dict, lossconfig=None, monitor=None, image_key: str = "image",
                 input_dim: int = 4, ignore_keys=(), test: bool = False, logdir=None, test_args=None,
                 ckpt_path=None, colorize_nlabels=None):
        super().__init__()
        if ckpt_path is not None:
            raise ValueError(f"AutoencoderKL(ckpt_path={ckpt_path!r}) is not supported: build the module, then load "
                             "weights with cami2v_core.checkpoint / load_model (safe loading, strict keys)")
        if colorize_nlabels is not None:
            raise ValueError("colorize_nlabels is for segmentation autoencoders and adds a `colorize` buffer no "
                             "released checkpoint has; leave it unset")
        cfg = _check_ddconfig(ddconfig)
        self.embed_dim = embed_dim
        self.z_channels = cfg["z_channels"]
        self.in_channels = cfg["in_channels"]
        self.downsample_factor = 2 ** (len(cfg["ch_mult"]) - 1)
        common = dict(ch=cfg["ch"], ch_mult=tuple(cfg["ch_mult"]), num_res_blocks=cfg["num_res_blocks"],
                      attn_resolutions=list(cfg["attn_resolutions"]), dropout=cfg["dropout"],
                      resamp_with_conv=cfg["resamp_with_conv"], resolution=cfg["resolution"],
                      z_channels=cfg["z_channels"], attn_type=cfg["attn_type"])
        self.encoder = Encoder(in_channels=cfg["in_channels"], double_z=True, **common)
        self.decoder = Decoder(out_ch=cfg["out_ch"], give_pre_end=cfg["give_pre_end"], tanh_out=cfg["tanh_out"],
                               **common)
        self.quant_conv = nn.Conv2d(2 * cfg["z_channels"], 2 * embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, cfg["z_channels"], 1)

    def encode(self, x: torch.Tensor, chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior of images [N,C,H,W] in [-1,1] -> (mean, logvar clamped to [-30,20]), each [N,embed_dim,h,w]."""
        _check_batch(x, self.in_channels, "images", "encode", self.downsample_factor)
        moments = _chunked(self._encode_moments, x, chunk_size)
        mean, logvar = moments.chunk(2, dim=1)  # mean first (golden README §8)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Unscaled latent [N,embed_dim,h,w] -> images [N,out_ch,h*f,w*f], `chunk_size` frames at a time if given."""
        _check_batch(z, self.embed_dim, "latents", "decode")
        return _chunked(self._decode, z, chunk_size)

    def _encode_moments(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))


def _chunked(fn, x: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
    """fn over the batch in pieces of chunk_size (all at once when None); fn must treat images independently."""
    if chunk_size is None:
        return fn(x)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int (frames per piece) or None for all at once; "
                         f"got {chunk_size!r}")
    if chunk_size >= x.shape[0]:
        return fn(x)
    return torch.cat([fn(piece) for piece in x.split(chunk_size)], dim=0)


def _check_batch(x: torch.Tensor, channels: int, what: str, method: str, multiple: int = 1) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"AutoencoderKL.{method} expects {what} [N, {channels}, H, W] (frames folded into N, e.g. "
                         f"rearrange(x, 'b c t h w -> (b t) c h w')); got shape {tuple(x.shape)}")
    if multiple > 1 and (x.shape[-2] % multiple or x.shape[-1] % multiple):
        raise ValueError(f"AutoencoderKL.{method}: height and width must be multiples of {multiple} (the VAE "
                         f"downsampling factor); got {tuple(x.shape[-2:])}. Resize or crop the image first")


__all__ = ["AutoencoderKL", "Encoder", "Decoder", "ResnetBlock", "AttnBlock", "LOGVAR_RANGE"]
