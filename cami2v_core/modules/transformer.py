"""DynamiCrafter's spatial and temporal transformers (spec §2.5-2.6) with the camera injections of CamI2V (§4.2),
CameraCtrl (§5.1) and MotionCtrl (§5.2).

Attribute names follow the original (`attn1`, `attn2`, `ff.net.0.proj`, `norm1..3`, `pluker_projection`,
`epipolar.epipolar_attn`, `cc_projection`) so checkpoints load without renames. The camera lives only in the single
BasicTransformerBlock of a TemporalTransformer; spatial blocks never see it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import attention, merge_heads, split_heads
from .epipolar import EpipolarAttention

CAMERA_VARIANTS = ("cami2v", "cameractrl", "motionctrl")
MOTIONCTRL_POSE_DIM = 12  # relative w2c 3x4, row-major (spec §5.2)
TEXT_CONTEXT_LEN = 77  # the first 77 context tokens are text, the rest image tokens (spec §2.7)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back (the original's GroupNormSpecific); float64 stays float64."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, ...] -> same shape and dtype."""
        if x.dtype == torch.float64:
            return super().forward(x)
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


class GEGLU(nn.Module):
    """Linear to 2*dim_out, split into (value, gate), value * GELU(gate) with the exact erf GELU (spec §2.5)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., dim_in] -> [..., dim_out]."""
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward C -> 4C -> C; keys `net.0.proj`, `net.2`."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(dropout), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., C] -> [..., C]."""
        return self.net(x)


class CrossAttention(nn.Module):
    """Self- or cross-attention; with `image_cross_attention` the context is [77 text ; image] tokens and the two
    parts are attended separately with the same queries, out = out_text + lambda * out_image (spec §2.5), where
    lambda = tanh(alpha) + 1 when the scale is learnable and 1 otherwise."""

    def __init__(self, query_dim: int, context_dim: int | None = None, heads: int = 8, dim_head: int = 64,
                 dropout: float = 0.0, image_cross_attention: bool = False,
                 image_cross_attention_scale_learnable: bool = False):
        super().__init__()
        inner = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(dropout))
        self.image_cross_attention = image_cross_attention
        self.image_cross_attention_scale_learnable = image_cross_attention_scale_learnable
        if image_cross_attention:
            self.to_k_ip = nn.Linear(context_dim, inner, bias=False)
            self.to_v_ip = nn.Linear(context_dim, inner, bias=False)
            if image_cross_attention_scale_learnable:
                self.alpha = nn.Parameter(torch.tensor(0.0))  # tanh(0) + 1 = 1: starts at the fixed-scale model

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x [N, L, C], context [N, L_ctx, C_ctx] or None (self-attention) -> [N, L, C]."""
        q = split_heads(self.to_q(x), self.heads)
        if context is None:
            out = self._attend(q, x, self.to_k, self.to_v)
            return self.to_out(out)
        # Like the original, text-only cross-attention also drops everything after the first 77 tokens.
        text, image = context[:, :TEXT_CONTEXT_LEN], context[:, TEXT_CONTEXT_LEN:]
        out = self._attend(q, text, self.to_k, self.to_v)
        if self.image_cross_attention:
            out_image = self._attend(q, image, self.to_k_ip, self.to_v_ip)
            if self.image_cross_attention_scale_learnable:
                out_image = out_image * (torch.tanh(self.alpha) + 1)
            out = out + out_image
        return self.to_out(out)

    def _attend(self, q, context, to_k, to_v):
        k = split_heads(to_k(context), self.heads)
        v = split_heads(to_v(context), self.heads)
        return merge_heads(attention(q, k, v, scale=self.scale))


@dataclass
class BlockCamera:
    """The camera inputs of one temporal block, prepared by the UNet for that block's resolution.

    The UNet passes a BlockCamera only when the camera is on; None means base DynamiCrafter (spec §7.4).
    """

    batch_size: int
    pose_tokens: torch.Tensor | None = None  # [(B h w), T, C]: pose-encoder feature at this level (CamI2V/CameraCtrl)
    epipolar_mask: torch.Tensor | None = None  # bool [B, L, L] or [B, L, R+L]; None = unmasked (CamI2V)
    rt_tokens: torch.Tensor | None = None  # [(B h w), T, 12]: relative w2c 3x4 per frame (MotionCtrl)


class BasicTransformerBlock(nn.Module):
    """x += attn1(LN1 x); x += attn2(LN2 x, context); x += FF(LN3 x) (spec §2.5), plus the camera injection of
    `camera` in {None, "cami2v", "cameractrl", "motionctrl"} for temporal blocks (spec §4.2, §5.1, §5.2)."""

    def __init__(self, dim: int, n_heads: int, d_head: int, dropout: float = 0.0, context_dim: int | None = None,
                 image_cross_attention: bool = False, image_cross_attention_scale_learnable: bool = False,
                 use_checkpoint: bool = False, camera: str | None = None, epipolar: dict | None = None):
        super().__init__()
        # registration order = the original's, so state_dict() lists keys in the checkpoint's order
        self.attn1 = CrossAttention(dim, None, n_heads, d_head, dropout)
        self.ff = FeedForward(dim, dropout=dropout)
        self.attn2 = CrossAttention(dim, context_dim, n_heads, d_head, dropout, image_cross_attention,
                                    image_cross_attention_scale_learnable)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.use_checkpoint = use_checkpoint
        if camera is not None and camera not in CAMERA_VARIANTS:
            raise ValueError(f"camera must be None or one of {', '.join(CAMERA_VARIANTS)}, got {camera!r}")
        if epipolar is not None and camera != "cami2v":
            raise ValueError(f"epipolar attention exists only with camera='cami2v', got camera={camera!r}")
        self.camera = camera
        # New layers are zero-initialised (MotionCtrl: identity) so that they start as the base model (spec §8).
        if camera == "cami2v":
            self.pluker_projection = _zero_linear(dim, dim)
            if epipolar is not None:
                self.epipolar = EpipolarAttention(dim, n_heads, **epipolar)
        elif camera == "cameractrl":
            self.cc_projection = _zero_linear(dim, dim)
        elif camera == "motionctrl":
            self.cc_projection = _zero_linear(dim + MOTIONCTRL_POSE_DIM, dim)
            with torch.no_grad():
                self.cc_projection.weight[:, :dim].copy_(torch.eye(dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                camera: BlockCamera | None = None) -> torch.Tensor:
        """x [N, L, C], context [N, L_ctx, C_ctx] or None, camera for temporal blocks -> [N, L, C]."""
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, context, camera, use_reentrant=False)
        return self._forward(x, context, camera)

    def _forward(self, x, context, camera):
        n = self.norm1(x)
        if camera is not None and self.camera == "cami2v":
            # "add_to_main_branch" (spec §4.2); one fresh sum, then in place (never into a module's own output,
            # which forward hooks may hold)
            x = torch.add(x, self.attn1(n)).add_(self._cami2v_term(n, camera))
        elif camera is not None and self.camera == "cameractrl" and camera.pose_tokens is not None:
            p = camera.pose_tokens.to(n.dtype)
            x = self.attn1(n + self.cc_projection(n + p)) + x  # camera enters attn1's input (spec §5.1)
        else:
            x = self.attn1(n) + x
        if camera is not None and self.camera == "motionctrl" and camera.rt_tokens is not None:
            # replaces x (not residual); cc_projection starts as the identity on x (spec §5.2)
            x = self.cc_projection(torch.cat([x, camera.rt_tokens.to(x.dtype)], dim=-1))
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x

    def _cami2v_term(self, n: torch.Tensor, camera: BlockCamera) -> torch.Tensor:
        """pluker_projection(N + P) + Epipolar(N + P) on [(B h w), T, C] tokens (spec §4.2)."""
        if camera.pose_tokens is None:
            # no pose features: the original still runs the epipolar branch, on the normed tokens alone
            term = torch.zeros_like(n)
            features = n
        else:
            features = n + camera.pose_tokens.to(n.dtype)
            term = self.pluker_projection(features)
        if hasattr(self, "epipolar"):
            term = term + self.epipolar(features, camera.epipolar_mask, camera.batch_size)
        return term


class SpatialTransformer(nn.Module):
    """GroupNorm -> proj_in -> BasicTransformerBlock over the h*w tokens of each frame -> proj_out -> + input."""

    def __init__(self, in_channels: int, n_heads: int, d_head: int, depth: int = 1, dropout: float = 0.0,
                 context_dim: int | None = None, use_linear: bool = False, use_checkpoint: bool = False,
                 image_cross_attention: bool = False, image_cross_attention_scale_learnable: bool = False):
        super().__init__()
        inner = n_heads * d_head
        self.use_linear = use_linear
        self.norm = GroupNorm32(32, in_channels, eps=1e-6)
        self.proj_in = nn.Linear(in_channels, inner) if use_linear else nn.Conv2d(in_channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, n_heads, d_head, dropout, context_dim, image_cross_attention,
                                  image_cross_attention_scale_learnable, use_checkpoint)
            for _ in range(depth))
        self.proj_out = nn.Linear(inner, in_channels) if use_linear else nn.Conv2d(inner, in_channels, 1)
        _zero_(self.proj_out)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x [(B T), C, h, w], context [(B T), L_ctx, C_ctx] -> [(B T), C, h, w]."""
        _, _, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = rearrange(x, "n c h w -> n (h w) c")
        if self.use_linear:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context)
        if self.use_linear:
            x = self.proj_out(x)
        x = rearrange(x, "n (h w) c -> n c h w", h=h, w=w)
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


class TemporalTransformer(nn.Module):
    """GroupNorm -> proj_in -> self-attention along the T frames of every pixel -> proj_out -> + input (spec §2.6).

    `camera` puts that variant's injection in the BasicTransformerBlock (spec §4.2); `use_linear=False` gives
    kernel-1 Conv1d projections (init_attn).
    """

    def __init__(self, in_channels: int, n_heads: int, d_head: int, depth: int = 1, dropout: float = 0.0,
                 use_linear: bool = False, use_checkpoint: bool = False, camera: str | None = None,
                 epipolar: dict | None = None):
        super().__init__()
        inner = n_heads * d_head
        self.use_linear = use_linear
        self.norm = GroupNorm32(32, in_channels, eps=1e-6)
        self.proj_in = nn.Linear(in_channels, inner) if use_linear else nn.Conv1d(in_channels, inner, 1)
        # temporal attention is self-only: attn1 and attn2 both attend over the frames, no context
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, n_heads, d_head, dropout, None, use_checkpoint=use_checkpoint,
                                  camera=camera, epipolar=epipolar)
            for _ in range(depth))
        self.proj_out = nn.Linear(inner, in_channels) if use_linear else nn.Conv1d(inner, in_channels, 1)
        _zero_(self.proj_out)

    def forward(self, x: torch.Tensor, camera: BlockCamera | None = None) -> torch.Tensor:
        """x [B, C, T, h, w] -> [B, C, T, h, w]; one sequence of T tokens per (b, y, x)."""
        b, _, _, h, w = x.shape
        x_in = x
        x = self.norm(x)  # over (C/32, T, h, w) per sample
        if self.use_linear:
            x = self.proj_in(rearrange(x, "b c t h w -> (b h w) t c"))
        else:
            x = rearrange(self.proj_in(rearrange(x, "b c t h w -> (b h w) c t")), "n c t -> n t c")
        for block in self.transformer_blocks:
            x = block(x, None, camera)
        if self.use_linear:
            return rearrange(self.proj_out(x), "(b h w) t c -> b c t h w", b=b, h=h, w=w) + x_in
        x = self.proj_out(rearrange(x, "n t c -> n c t"))
        return rearrange(x, "(b h w) c t -> b c t h w", b=b, h=h, w=w) + x_in


def _zero_linear(dim_in: int, dim_out: int) -> nn.Linear:
    return _zero_(nn.Linear(dim_in, dim_out))


def _zero_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


__all__ = ["GroupNorm32", "GEGLU", "FeedForward", "CrossAttention", "BlockCamera", "BasicTransformerBlock",
           "SpatialTransformer", "TemporalTransformer", "CAMERA_VARIANTS", "MOTIONCTRL_POSE_DIM", "TEXT_CONTEXT_LEN"]
