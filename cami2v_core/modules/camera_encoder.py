"""The Plücker camera pose encoder of CamI2V and CameraCtrl (`pose_encoder`, spec §4.1).

A Plücker video [B, 6, T, H, W] at image resolution becomes one feature map per UNet level, [B, C_l, T, h_l, w_l]
at the latent's ds 1, 2, 4, 8 with the UNet's channel widths. Each level is a few (conv ResnetBlock, temporal
transformer) pairs: the convs mix space within a frame, the transformers mix the T frames of each pixel.

The original builds its temporal attention from diffusers' `Attention` and `FeedForward`, so the keys are
diffusers-style (`attention_blocks.0.to_out.0`, `pos_encoder.pe`, `ff.net.0.proj`); they are kept as they are so
checkpoints load unchanged. Layouts: `b c t h w` outside, frames folded into the batch `(b t)` for the convs, one
sequence per pixel `(b h w) t c` for the temporal attention.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from .attention import attention, merge_heads, split_heads
from .transformer import FeedForward

ATTENTION_BLOCK_TYPES = ("Temporal_Self",)  # the only kind the original accepts


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed table `pe` [1, max_len, C]: even channels sin(p w_i), odd cos(p w_i), w_i = 10000^(-2i/C)."""

    def __init__(self, dim: int, max_len: int = 32):
        super().__init__()
        if dim % 2:
            raise ValueError(f"the temporal positional encoding needs an even width (sin/cos pairs); got {dim}")
        position = torch.arange(max_len, dtype=torch.float32)[:, None]  # [max_len, 1]
        freqs = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # [C/2]
        pe = torch.zeros(1, max_len, dim)
        pe[0, :, 0::2] = torch.sin(position * freqs)
        pe[0, :, 1::2] = torch.cos(position * freqs)
        # persistent: the checkpoints store it (spec §1.3, "pos_encoder.pe")
        self.register_buffer("pe", pe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, T, C] -> [N, T, C] with pe[:T] added."""
        t = x.shape[1]
        if t > self.pe.shape[1]:
            raise ValueError(f"the pose encoder's temporal positional encoding covers {self.pe.shape[1]} frames "
                             f"(temporal_position_encoding_max_len) but got {t}; use at most {self.pe.shape[1]} "
                             "frames, as the model was trained with")
        return x + self.pe[:, :t].to(x.dtype)


class TemporalSelfAttention(nn.Module):
    """Self-attention over the T frames of each pixel, positional encoding added to its input first (spec §4.1)."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0,
                 temporal_position_encoding: bool = False, temporal_position_encoding_max_len: int = 32,
                 rescale_output_factor: float = 1.0):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.rescale_output_factor = rescale_output_factor
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(dropout)])
        self.pos_encoder = (SinusoidalPositionalEncoding(dim, temporal_position_encoding_max_len)
                            if temporal_position_encoding else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, T, C] (normed tokens) -> [N, T, C] update; q, k and v all see the position-encoded tokens."""
        if self.pos_encoder is not None:
            x = self.pos_encoder(x)
        q, k, v = (split_heads(proj(x), self.heads) for proj in (self.to_q, self.to_k, self.to_v))  # [N, h, T, d]
        out = merge_heads(attention(q, k, v))  # scale dim_head^-0.5
        out = self.to_out[1](self.to_out[0](out))
        return out / self.rescale_output_factor


class TemporalTransformerBlock(nn.Module):
    """x += attn_i(norms_i(x)) for each attention block, then x += ff(ff_norm(x)) with a GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, dim_head: int, attention_block_types=ATTENTION_BLOCK_TYPES,
                 dropout: float = 0.0, temporal_position_encoding: bool = False,
                 temporal_position_encoding_max_len: int = 32, rescale_output_factor: float = 1.0):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            TemporalSelfAttention(dim, heads, dim_head, dropout=dropout,
                                  temporal_position_encoding=temporal_position_encoding,
                                  temporal_position_encoding_max_len=temporal_position_encoding_max_len,
                                  rescale_output_factor=rescale_output_factor)
            for _ in attention_block_types)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in attention_block_types)
        self.ff = FeedForward(dim, mult=4, dropout=dropout)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, T, C] -> [N, T, C]."""
        for attn, norm in zip(self.attention_blocks, self.norms):
            x = attn(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class PoseResnetBlock(nn.Module):
    """[avg-pool or strided conv] -> [`in_conv`] -> x + block2(ReLU(block1(x))) [+ `skep` conv]; no norms."""

    def __init__(self, in_c: int, out_c: int, down: bool, ksize: int = 3, sk: bool = False, use_conv: bool = True):
        super().__init__()
        pad = ksize // 2
        self.in_conv = nn.Conv2d(in_c, out_c, ksize, 1, pad) if (in_c != out_c or not sk) else None
        self.block1 = nn.Conv2d(out_c, out_c, 3, 1, 1)
        self.act = nn.ReLU()
        self.block2 = nn.Conv2d(out_c, out_c, ksize, 1, pad)
        if not sk and in_c != out_c:
            # The original builds `skep` for in_c channels but applies it after in_conv (out_c channels), so this
            # combination cannot run there either.
            raise ValueError(f"sk=False with a channel change ({in_c} -> {out_c}) does not work in the original "
                             "pose encoder; use sk=True (the released configs do) or equal channels")
        self.skep = nn.Conv2d(in_c, out_c, ksize, 1, pad) if not sk else None
        self.down = down
        if down:
            # `down_opt.op`: a strided conv3x3 with use_conv, else 2x2 average pooling (no parameters)
            self.down_opt = nn.Module()
            self.down_opt.op = nn.Conv2d(in_c, in_c, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, in_c, h, w] -> [N, out_c, h', w'] (h' = h/2 when down)."""
        if self.down:
            x = self.down_opt.op(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        h = self.block2(self.act(self.block1(x)))
        return h + (self.skep(x) if self.skep is not None else x)


class CameraPoseEncoder(nn.Module):
    """Plücker [B, 6, T, H, W] -> per-level features [B, C_l, T, H/(f*2^l), W/(f*2^l)] (spec §4.1).

    Arguments are the original `pose_encoder_config.params` (released: downscale_factor 8, channels
    [320, 640, 1280, 1280], nums_rb 2, cin 384 = 6*8*8, ksize 1, sk true, use_conv false, compression_factor 1,
    temporal_attention_nhead 8, attention_block_types [Temporal_Self], temporal_position_encoding true,
    temporal_position_encoding_max_len 16); defaults are the original constructor's.
    """

    def __init__(self, downscale_factor: int, channels=(320, 640, 1280, 1280), nums_rb: int = 3, cin: int = 64,
                 ksize: int = 3, sk: bool = False, use_conv: bool = True, compression_factor: float = 1,
                 temporal_attention_nhead: int = 8, attention_block_types=ATTENTION_BLOCK_TYPES,
                 temporal_position_encoding: bool = False, temporal_position_encoding_max_len: int = 16,
                 rescale_output_factor: float = 1.0):
        super().__init__()
        bad = [t for t in attention_block_types if t not in ATTENTION_BLOCK_TYPES]
        if bad or not attention_block_types:
            raise ValueError(f"attention_block_types must be a non-empty list of {', '.join(ATTENTION_BLOCK_TYPES)}; "
                             f"got {list(attention_block_types)!r}")
        if cin % (downscale_factor ** 2):
            raise ValueError(f"cin ({cin}) must be the Plücker channels times downscale_factor^2 "
                             f"({downscale_factor}^2); the released configs use 6*8*8 = 384")
        self.downscale_factor = downscale_factor
        self.cin = cin
        self.channels = list(channels)
        self.encoder_down_conv_blocks = nn.ModuleList()
        self.encoder_down_attention_blocks = nn.ModuleList()
        for i, ch in enumerate(self.channels):
            squeezed = int(ch / compression_factor)
            convs, attns = nn.ModuleList(), nn.ModuleList()
            for j in range(nums_rb):
                # The first block of a level changes the width (and pools, except at level 0), the last one restores
                # `ch` after `compression_factor` squeezed it; those in between keep the squeezed width.
                if j == 0:
                    in_dim, out_dim, down = (self.channels[i - 1] if i > 0 else self.channels[0]), squeezed, i > 0
                elif j == nums_rb - 1:
                    in_dim, out_dim, down = squeezed, ch, False
                else:
                    in_dim, out_dim, down = squeezed, squeezed, False
                convs.append(PoseResnetBlock(in_dim, out_dim, down=down, ksize=ksize, sk=sk, use_conv=use_conv))
                attns.append(TemporalTransformerBlock(
                    out_dim, temporal_attention_nhead, int(out_dim / temporal_attention_nhead),
                    attention_block_types=attention_block_types, dropout=0.0,
                    temporal_position_encoding=temporal_position_encoding,
                    temporal_position_encoding_max_len=temporal_position_encoding_max_len,
                    rescale_output_factor=rescale_output_factor))
            self.encoder_down_conv_blocks.append(convs)
            self.encoder_down_attention_blocks.append(attns)
        # registered last, as in the original, so the state_dict order matches the checkpoints
        self.encoder_conv_in = nn.Conv2d(cin, self.channels[0], 3, 1, 1)

    def forward(self, plucker: torch.Tensor) -> list[torch.Tensor]:
        """Plücker [B, 6, T, H, W] -> list of [B, C_l, T, h_l, w_l], one per level (h_0 = H / downscale_factor)."""
        self._check_input(plucker)
        b = plucker.shape[0]
        x = rearrange(plucker, "b c t h w -> (b t) c h w")
        # channel index of the unshuffled map = c * f^2 + dy * f + dx (spec §4.1)
        x = nn.functional.pixel_unshuffle(x, self.downscale_factor)  # [(b t), 6 f^2, H/f, W/f]
        x = self.encoder_conv_in(x)
        features = []
        for convs, attns in zip(self.encoder_down_conv_blocks, self.encoder_down_attention_blocks):
            for conv, attn in zip(convs, attns):
                x = conv(x)
                h, w = x.shape[-2:]
                x = rearrange(x, "(b t) c h w -> (b h w) t c", b=b)
                x = attn(x)
                x = rearrange(x, "(b h w) t c -> (b t) c h w", b=b, h=h, w=w)
            features.append(rearrange(x, "(b t) c h w -> b c t h w", b=b))
        return features

    def _check_input(self, plucker: torch.Tensor) -> None:
        f = self.downscale_factor
        in_channels = self.cin // (f * f)
        if plucker.ndim != 5 or plucker.shape[1] != in_channels:
            raise ValueError(f"CameraPoseEncoder expects a Plücker embedding [B, {in_channels}, T, H, W] (see "
                             f"cami2v_core.camera.plucker_embedding); got shape {tuple(plucker.shape)}")
        height, width = plucker.shape[-2:]
        if height % f or width % f:
            raise ValueError(f"CameraPoseEncoder: the Plücker height and width must be multiples of "
                             f"downscale_factor={f} (the image size, not the latent size); got {height}x{width}")


__all__ = ["CameraPoseEncoder", "TemporalTransformerBlock", "TemporalSelfAttention", "PoseResnetBlock",
           "SinusoidalPositionalEncoding"]
