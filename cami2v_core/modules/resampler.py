"""DynamiCrafter's image-token Resampler (`image_proj_model`, spec §3.3): a Perceiver-style query transformer that
turns the 257 CLIP image tokens into `num_queries` tokens per frame for the UNet's image cross-attention.

Attribute names are the original's (`latents`, `proj_in`, `proj_out`, `norm_out`, `layers.N.0` attention with
`norm1`, `norm2`, `to_q`, `to_kv`, `to_out`, `layers.N.1` feed-forward `{0,1,3}`), so checkpoints load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import attention, merge_heads, split_heads


def feed_forward(dim: int, mult: float = 4) -> nn.Sequential:
    """LayerNorm -> Linear dim->mult*dim (no bias) -> exact GELU -> Linear back (no bias); keys `0`, `1`, `3`."""
    inner = int(dim * mult)
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(),
                         nn.Linear(inner, dim, bias=False))


class PerceiverAttention(nn.Module):
    """Latent queries attend to [image tokens ; latents] (spec §3.3)."""

    def __init__(self, dim: int, dim_head: int = 64, heads: int = 8):
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.dim_head = dim_head
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """x [B, N, dim] image features, latents [B, L, dim] -> update [B, L, dim] (residual added by the caller)."""
        x = self.norm1(x)
        latents = self.norm2(latents)
        q = self.to_q(latents)
        # keys and values see the image tokens followed by the latents themselves
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))  # [B, heads, L or N+L, dim_head]
        # The original scales q and k by dim_head^-1/4 each before the product (kinder to fp16 than one
        # dim_head^-1/2 afterwards); the attention itself then runs with scale 1.
        s = self.dim_head ** -0.25
        out = attention(q * s, k * s, v, scale=1.0)
        return self.to_out(merge_heads(out))  # [B, L, heads*dim_head] -> [B, L, dim]


class Resampler(nn.Module):
    """CLIP image tokens [B, N, embedding_dim] -> [B, num_queries * video_length, output_dim] (spec §3.3).

    Arguments are the original `image_proj_stage_config.params` (released: dim 1024, depth 4, dim_head 64, heads
    12, num_queries 16, embedding_dim 1280, output_dim 1024, ff_mult 4, video_length 16). With `video_length` set
    there are `num_queries` learned queries per frame, so frame t owns output tokens [t*num_queries, (t+1)*num_queries).
    """

    def __init__(self, dim: int = 1024, depth: int = 8, dim_head: int = 64, heads: int = 16, num_queries: int = 8,
                 embedding_dim: int = 768, output_dim: int = 1024, ff_mult: float = 4, video_length: int | None = None):
        super().__init__()
        self.num_queries = num_queries
        self.video_length = video_length
        self.embedding_dim = embedding_dim
        total = num_queries * video_length if video_length is not None else num_queries
        # the original's init: N(0, 1/dim)
        self.latents = nn.Parameter(torch.randn(1, total, dim) / dim ** 0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, dim_head=dim_head, heads=heads), feed_forward(dim, ff_mult)])
            for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, embedding_dim] (all 257 CLIP tokens) -> [B, num_queries * video_length, output_dim]."""
        if x.ndim != 3 or x.shape[-1] != self.embedding_dim:
            raise ValueError(f"Resampler expects CLIP image tokens [B, N, {self.embedding_dim}] (the image tower's "
                             f"output before ln_post); got shape {tuple(x.shape)}")
        latents = self.latents.expand(x.shape[0], -1, -1)  # [B, L, dim]
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


__all__ = ["Resampler", "PerceiverAttention", "feed_forward"]
