"""DynamiCrafter's 3-D UNet (spec §2) with the camera inputs of CamI2V, CameraCtrl and MotionCtrl (spec §4.2, §5).

Layout: the UNet takes and returns `b c t h w`; inside, 2-D layers see frames folded into the batch as `(b t)`
(frame index fastest) and temporal layers unfold them again. Attribute names are the original's (`input_blocks`,
`init_attn`, `middle_block`, `output_blocks`, `out`, `time_embed`, `fps_embedding`, even `temopral_conv`) so the
released checkpoints load with `strict=True` after stripping `model.diffusion_model.`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from .epipolar import lookup_mask
from .transformer import (CAMERA_VARIANTS, MOTIONCTRL_POSE_DIM, TEXT_CONTEXT_LEN, BlockCamera, GroupNorm32,
                          SpatialTransformer, TemporalTransformer)

IMAGE_TOKENS_PER_FRAME = 16  # resampler queries per frame (spec §2.7)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [N] -> [N, dim] float32, laid out [cos(t f_k), sin(t f_k)] (spec §2.3).

    Always float32, as the original, whatever the model dtype; callers cast (golden README §6).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TemporalConvBlock(nn.Module):
    """Four GroupNorm -> SiLU -> [Dropout] -> Conv3d (3,1,1) stages along time, residual (spec §2.4)."""

    def __init__(self, channels: int, dropout: float = 0.1, spatial_aware: bool = False):
        super().__init__()
        # spatial_aware (tempspatial_aware) widens the kernels to (3,3,1) / (3,1,3), as the original's option
        k_h, p_h = ((3, 3, 1), (1, 1, 0)) if spatial_aware else ((3, 1, 1), (1, 0, 0))
        k_w, p_w = ((3, 1, 3), (1, 0, 1)) if spatial_aware else ((3, 1, 1), (1, 0, 0))

        def stage(kernel, padding, drop):
            layers = [GroupNorm32(32, channels), nn.SiLU()] + ([nn.Dropout(dropout)] if drop else [])
            return nn.Sequential(*layers, nn.Conv3d(channels, channels, kernel, padding=padding))

        self.conv1 = stage(k_h, p_h, False)
        self.conv2 = stage(k_w, p_w, True)
        self.conv3 = stage(k_h, p_h, True)
        self.conv4 = stage(k_w, p_w, True)
        nn.init.zeros_(self.conv4[-1].weight)  # starts as the identity
        nn.init.zeros_(self.conv4[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, T, h, w] -> same."""
        return x + self.conv4(self.conv3(self.conv2(self.conv1(x))))


class Downsample(nn.Module):
    """conv3x3 stride 2 (`op`), or 2x2 average pooling without `conv_resample`."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, h, w] -> [N, C, h/2, w/2]."""
        return self.op(x)


class Upsample(nn.Module):
    """Nearest x2, then conv3x3 (`conv`) with `conv_resample`."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, h, w] -> [N, C, 2h, 2w]."""
        x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + time embedding, GroupNorm-SiLU-Dropout-conv, + skip; then the temporal conv (§2.4)."""

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_scale_shift_norm: bool = False, use_checkpoint: bool = False, up: bool = False,
                 down: bool = False, use_temporal_conv: bool = False, tempspatial_aware: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(GroupNorm32(32, channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(32, out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        if out_channels != channels:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)
        else:
            self.skip_connection = nn.Identity()
        if use_temporal_conv:
            self.temopral_conv = TemporalConvBlock(out_channels, dropout=0.1, spatial_aware=tempspatial_aware)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, batch_size: int) -> torch.Tensor:
        """x [(B T), C_in, h, w], emb [(B T), E] -> [(B T), C_out, h', w']."""
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, batch_size, use_reentrant=False)
        return self._forward(x, emb, batch_size)

    def _forward(self, x, emb, batch_size):
        if self.updown:
            h = self.in_layers[:-1](x)
            h, x = self.h_upd(h), self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]  # broadcast over h, w
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        h = self.skip_connection(x) + h
        if hasattr(self, "temopral_conv"):
            h = rearrange(h, "(b t) c h w -> b c t h w", b=batch_size)
            h = rearrange(self.temopral_conv(h), "b c t h w -> (b t) c h w")
        return h


class TimestepEmbedSequential(nn.Sequential):
    """A block of the UNet: passes each layer what it needs (embedding, context, camera)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, batch_size: int,
                camera: BlockCamera | None = None) -> torch.Tensor:
        """x [(B T), C, h, w] -> [(B T), C', h', w']."""
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb, batch_size)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, TemporalTransformer):
                x = rearrange(x, "(b t) c h w -> b c t h w", b=batch_size)
                x = rearrange(layer(x, camera), "b c t h w -> (b t) c h w")
            else:
                x = layer(x)
        return x


# Original constructor options this implementation does not compute; a config that sets one is refused rather
# than silently run as something else. (name, the value every released config uses)
_UNSUPPORTED = (("dims", 2), ("use_relative_position", False), ("use_causal_attention", False),
                ("temporal_selfatt_only", True), ("use_fp16", False))


class UNetModel(nn.Module):
    """The DynamiCrafter UNet; keyword arguments are the original `unet_config.params` names (spec §2.1), plus
    `camera` in {None, "cami2v", "cameractrl", "motionctrl"} and `epipolar` = the original `epipolar_config`.

    Camera layers go where the original puts them (spec §4.2, §5): CamI2V/CameraCtrl in every temporal transformer
    except `init_attn`; MotionCtrl in every temporal transformer, `init_attn` included.

    Main arguments (released values in brackets; see spec §2.1):
        in_channels / out_channels: 8 (noisy latent ‖ image latent) / 4.
        model_channels, channel_mult, num_res_blocks: widths 320·(1,2,4,4), 2 ResBlocks per level.
        attention_resolutions: ds levels with spatial+temporal transformers [4,2,1]; the middle block always has them.
        num_head_channels (or num_heads): head width 64; heads = channels / 64.
        context_dim: cross-attention context width (1024); image_cross_attention: separate image-token attention,
            with a learnable `alpha` scale when image_cross_attention_scale_learnable (256 models only).
        temporal_conv / temporal_attention / addition_attention: temporal conv in ResBlocks, temporal
            transformers, and the extra `init_attn` after the first conv.
        fs_condition, default_fs: frame-stride (or fps) embedding added to the time embedding; default when fs=None.
        use_checkpoint: gradient checkpointing of ResBlocks and transformer blocks while gradients are enabled.
        camera: None, "cami2v", "cameractrl" or "motionctrl"; epipolar: the original `epipolar_config` (cami2v).
    Options the released configs never change and this code does not implement (`dims`, relative positions,
    causal temporal attention, temporal cross-attention, `use_fp16`) raise NotImplementedError if changed.
    """

    def __init__(self, in_channels: int, model_channels: int, out_channels: int, num_res_blocks: int,
                 attention_resolutions, dropout: float = 0.0, channel_mult=(1, 2, 4, 8), conv_resample: bool = True,
                 dims: int = 2, context_dim: int | None = None, use_scale_shift_norm: bool = False,
                 resblock_updown: bool = False, num_heads: int = -1, num_head_channels: int = -1,
                 transformer_depth: int = 1, use_linear: bool = False, use_checkpoint: bool = False,
                 temporal_conv: bool = False, tempspatial_aware: bool = False, temporal_attention: bool = True,
                 use_relative_position: bool = True, use_causal_attention: bool = False,
                 temporal_length: int | None = None, use_fp16: bool = False, addition_attention: bool = False,
                 temporal_selfatt_only: bool = True, image_cross_attention: bool = False,
                 image_cross_attention_scale_learnable: bool = False, default_fs: int = 4,
                 fs_condition: bool = False, camera: str | None = None, epipolar: dict | None = None):
        super().__init__()
        given = dict(dims=dims, use_relative_position=use_relative_position,
                     use_causal_attention=use_causal_attention, temporal_selfatt_only=temporal_selfatt_only,
                     use_fp16=use_fp16)
        for name, supported in _UNSUPPORTED:
            if given[name] != supported:
                hint = " (cast the model with .half() instead)" if name == "use_fp16" else ""
                raise NotImplementedError(f"UNet option {name}={given[name]!r} is not implemented; every released "
                                          f"DynamiCrafter/CamI2V config uses {name}={supported!r}{hint}")
        if num_heads == -1 and num_head_channels == -1:
            raise ValueError("set either num_heads or num_head_channels (the released configs use "
                             "num_head_channels: 64)")
        if camera is not None and camera not in CAMERA_VARIANTS:
            raise ValueError(f"camera must be None or one of {', '.join(CAMERA_VARIANTS)}, got {camera!r}")
        if epipolar is not None and camera != "cami2v":
            raise ValueError(f"epipolar attention exists only with camera='cami2v', got camera={camera!r}; "
                             "pass epipolar=None")
        if camera is not None and not temporal_attention:
            raise ValueError(f"camera={camera!r} needs temporal_attention=True: the camera enters the temporal "
                             "transformers")
        if addition_attention and num_head_channels == -1:
            raise ValueError("addition_attention (init_attn, 8 heads x num_head_channels) needs num_head_channels")

        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.attention_resolutions = list(attention_resolutions)
        self.channel_mult = list(channel_mult)
        self.temporal_length = temporal_length
        self.addition_attention = addition_attention
        self.default_fs = default_fs
        self.fs_condition = fs_condition
        self.camera = camera
        self.epipolar = dict(epipolar) if epipolar is not None else None
        time_embed_dim = model_channels * 4

        # CamI2V/CameraCtrl skip init_attn by the original's rule "temporal block whose width is not init_attn's
        # inner width (8 heads x num_head_channels)"; reproduced so any config gets the original's keys (spec §4.2).
        init_attn_width = 8 * num_head_channels if addition_attention else None

        def temporal(ch, heads, dim_head, is_init=False):
            if camera == "motionctrl" or (camera is not None and not is_init and ch != init_attn_width):
                block_camera, block_epipolar = camera, self.epipolar
            else:
                block_camera, block_epipolar = None, None
            return TemporalTransformer(ch, heads, dim_head, depth=transformer_depth,
                                       use_linear=use_linear and not is_init, use_checkpoint=use_checkpoint,
                                       camera=block_camera, epipolar=block_epipolar)

        def spatial(ch, heads, dim_head):
            return SpatialTransformer(ch, heads, dim_head, depth=transformer_depth, context_dim=context_dim,
                                      use_linear=use_linear, use_checkpoint=use_checkpoint,
                                      image_cross_attention=image_cross_attention,
                                      image_cross_attention_scale_learnable=image_cross_attention_scale_learnable)

        def heads_for(ch):
            return (ch // num_head_channels, num_head_channels) if num_head_channels != -1 else (num_heads,
                                                                                                 ch // num_heads)

        def res(ch_in, ch_out=None, **kw):
            return ResBlock(ch_in, time_embed_dim, dropout, ch_out, use_scale_shift_norm=use_scale_shift_norm,
                            use_checkpoint=use_checkpoint, **kw)

        def attention_layers(ch):
            heads, dim_head = heads_for(ch)
            layers = [spatial(ch, heads, dim_head)]
            if temporal_attention:
                layers.append(temporal(ch, heads, dim_head))
            return layers

        resblock_opts = dict(use_temporal_conv=temporal_conv, tempspatial_aware=tempspatial_aware)
        self.time_embed = nn.Sequential(nn.Linear(model_channels, time_embed_dim), nn.SiLU(),
                                        nn.Linear(time_embed_dim, time_embed_dim))
        if fs_condition:
            self.fps_embedding = nn.Sequential(nn.Linear(model_channels, time_embed_dim), nn.SiLU(),
                                               nn.Linear(time_embed_dim, time_embed_dim))
            nn.init.zeros_(self.fps_embedding[-1].weight)
            nn.init.zeros_(self.fps_embedding[-1].bias)

        # ---- encoder (spec §2.2); input_ds / output_ds: the ds each block's attention runs at ----
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, model_channels, 3,
                                                                             padding=1))])
        if addition_attention:
            self.init_attn = TimestepEmbedSequential(temporal(model_channels, 8, num_head_channels, is_init=True))
        skip_channels = [model_channels]
        ch, ds = model_channels, 1
        self.input_ds, self.output_ds = [ds], []
        for level, mult in enumerate(self.channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, mult * model_channels, **resblock_opts)]
                ch = mult * model_channels
                if ds in self.attention_resolutions:
                    layers += attention_layers(ch)
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                self.input_ds.append(ds)
                skip_channels.append(ch)
            if level != len(self.channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(TimestepEmbedSequential(down))
                self.input_ds.append(ds)
                skip_channels.append(ch)
                ds *= 2

        # ---- middle: attention always, whatever attention_resolutions says ----
        self.middle_block = TimestepEmbedSequential(res(ch, **resblock_opts), *attention_layers(ch),
                                                    res(ch, **resblock_opts))

        # ---- decoder: each block concatenates the matching encoder output first ----
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(self.channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), model_channels * mult, **resblock_opts)]
                ch = model_channels * mult
                if ds in self.attention_resolutions:
                    layers += attention_layers(ch)
                self.output_ds.append(ds)
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(GroupNorm32(32, ch), nn.SiLU(), nn.Conv2d(model_channels, out_channels, 3,
                                                                           padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                fs: torch.Tensor | None = None, camera: Any = None,
                block_outputs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """x [B, in_ch, T, h, w] (noisy latent ‖ image latent), timesteps [B], context [B, L, C_ctx], fs [B] or None
        -> [B, out_ch, T, h, w].

        `camera` is a CameraCondition-like object (attributes `pose_features`, `epipolar_masks`, `rt`, `origin_h`)
        or None; None, or all its fields None, is exactly base DynamiCrafter (spec §7.4). `block_outputs`, when a
        dict, receives the hidden state `[(B T), C, h, w]` after `init_attn`, `input_blocks.{i}`, `middle_block`
        and `output_blocks.{i}` (for parity tests and debugging).
        """
        b, t = self._check_inputs(x, context)
        dtype = self.input_blocks[0][0].weight.dtype
        timesteps = self._per_sample(timesteps, b, x.device, "timesteps")
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(dtype))
        if self.fs_condition:
            fs = torch.full((b,), self.default_fs, device=x.device) if fs is None else fs
            fs = self._per_sample(fs, b, x.device, "fs")
            emb = emb + self.fps_embedding(timestep_embedding(fs, self.model_channels).to(dtype))
        emb = emb.repeat_interleave(t, dim=0)  # [(B T), E]
        context = self._context_per_frame(context.to(dtype), t)
        cameras = _CameraRouter(self, camera, b, t, dtype)

        h = rearrange(x, "b c t h w -> (b t) c h w").to(dtype)
        skips = []
        for i, block in enumerate(self.input_blocks):
            h = block(h, emb, context, b, cameras.for_block(self.input_ds[i], h))
            if i == 0 and self.addition_attention:
                _record(block_outputs, "input_blocks.0", h)
                h = self.init_attn(h, emb, context, b, cameras.for_init_attn(h))
                _record(block_outputs, "init_attn", h)
            else:
                _record(block_outputs, f"input_blocks.{i}", h)
            skips.append(h)
        h = self.middle_block(h, emb, context, b, cameras.for_block(None, h))
        _record(block_outputs, "middle_block", h)
        for i, block in enumerate(self.output_blocks):
            h = torch.cat([h, skips.pop()], dim=1)
            h = block(h, emb, context, b, cameras.for_block(self.output_ds[i], h))
            _record(block_outputs, f"output_blocks.{i}", h)
        y = self.out(h)
        return rearrange(y, "(b t) c h w -> b c t h w", b=b).to(x.dtype)

    # -- input handling ---------------------------------------------------------------------------------------------

    def _check_inputs(self, x, context):
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet input must be [B, {self.in_channels}, T, h, w] (noisy latent and image latent "
                             f"concatenated on channels), got {list(x.shape)}")
        b, _, t, height, width = x.shape
        factor = 2 ** (len(self.channel_mult) - 1)
        if height % factor or width % factor:
            raise ValueError(f"latent size {height}x{width} must be divisible by {factor} (the UNet halves it "
                             f"{len(self.channel_mult) - 1} times); use an image size divisible by {8 * factor}")
        if context is None or context.dim() != 3 or context.shape[0] != b:
            found = None if context is None else list(context.shape)
            raise ValueError(f"context must be [B={b}, L, C] (77 text tokens, then image tokens), got {found}")
        return b, t

    @staticmethod
    def _per_sample(values, b, device, name):
        values = torch.as_tensor(values, device=device)
        if values.dim() == 0:
            values = values.expand(b)
        if values.shape != (b,):
            raise ValueError(f"{name} must be a scalar or one value per sample [B={b}], got shape {list(values.shape)}")
        return values

    @staticmethod
    def _context_per_frame(context: torch.Tensor, t: int) -> torch.Tensor:
        """[B, L, C] -> [(B T), L', C]: text repeated per frame, image tokens split 16 per frame (spec §2.7)."""
        if context.shape[1] == TEXT_CONTEXT_LEN + t * IMAGE_TOKENS_PER_FRAME:
            text = context[:, :TEXT_CONTEXT_LEN].repeat_interleave(t, dim=0)
            image = rearrange(context[:, TEXT_CONTEXT_LEN:], "b (t l) c -> (b t) l c", t=t)
            return torch.cat([text, image], dim=1)
        return context.repeat_interleave(t, dim=0)  # any other length: the whole context for every frame


def _record(store, name, h):
    if store is not None:
        store[name] = h


class _CameraRouter:
    """Turns one camera condition into the BlockCamera each temporal block needs, once per resolution."""

    def __init__(self, unet: UNetModel, camera: Any, batch_size: int, frames: int, dtype: torch.dtype):
        self.unet = unet
        self.b, self.t, self.dtype = batch_size, frames, dtype
        self.cache: dict = {}
        self.pose = self.masks = self.rt = None
        self.origin_h = None
        if camera is None or unet.camera is None:
            self.active = False
            return
        if unet.camera in ("cami2v", "cameractrl"):
            self.pose = getattr(camera, "pose_features", None)
        if unet.camera == "cami2v" and unet.epipolar is not None:
            self.masks = getattr(camera, "epipolar_masks", None)
            self.origin_h = getattr(camera, "origin_h", None) or unet.epipolar.get("origin_h")
        if unet.camera == "motionctrl":
            self.rt = getattr(camera, "rt", None)
            if self.rt is not None:
                self._check_rt(self.rt)
        # an object whose relevant fields are all None means "no camera" (spec §7.4)
        self.active = self.pose is not None or self.masks is not None or self.rt is not None

    def for_init_attn(self, h: torch.Tensor) -> BlockCamera | None:
        """init_attn gets the camera only in MotionCtrl (spec §5.2)."""
        if not self.active or self.unet.camera != "motionctrl":
            return None
        return self._cached(1, h)

    def for_block(self, ds: int | None, h: torch.Tensor) -> BlockCamera | None:
        """BlockCamera for a block at downsampling ds (None = middle block) with hidden state h [(B T), C, h, w]."""
        if not self.active:
            return None
        if ds is not None and ds not in self.unet.attention_resolutions:
            return None  # no temporal transformer there
        return self._cached(ds, h)

    def _cached(self, ds, h):
        height, width = h.shape[-2:]
        key = (ds, height, width)
        if key not in self.cache:
            self.cache[key] = self._build(ds, height, width)
        return self.cache[key]

    def _build(self, ds, height, width):
        block = BlockCamera(batch_size=self.b)
        if self.pose is not None:
            # level log2(ds) for encoder/decoder blocks, the last level for the middle block (spec §4.2)
            level = len(self.pose) - 1 if ds is None else int(math.log2(ds))
            if level >= len(self.pose):
                raise ValueError(f"the camera gives {len(self.pose)} pose-feature levels but the UNet block at ds "
                                 f"{ds} needs level {level}; the pose encoder must have one level per UNet level")
            feature = self.pose[level]
            mults = self.unet.channel_mult
            channels = self.unet.model_channels * (mults[-1] if ds is None else mults[int(math.log2(ds))])
            expected = (self.b, channels, self.t, height, width)
            if tuple(feature.shape) != expected:
                raise ValueError(f"pose feature level {level} has shape {list(feature.shape)}; the UNet block at "
                                 f"that level needs {list(expected)} (B, C, T, h, w): compute the Plücker "
                                 f"embedding at the latent's image size and batch, with a pose encoder whose "
                                 f"channels equal the UNet widths")
            # contiguous once per resolution: the blocks add these tokens to theirs, and the strided view (channels
            # T*h*w apart) made every such add an order of magnitude slower than the copy
            block.pose_tokens = rearrange(feature.to(self.dtype), "b c t h w -> (b h w) t c").contiguous()
        if self.masks is not None and not self.unet.epipolar.get("is_3d_full_attn"):
            # as the condition holds it: the dense kernel's padded form (and bias off the CPU) is cached on the
            # mask at its first use (epipolar.dense_attention_mask), so it is made once per camera path, not per
            # call or block (these masks are big, §11)
            block.epipolar_mask = lookup_mask(self.masks, self.origin_h, height)
        if self.rt is not None:
            block.rt_tokens = self.rt.to(self.dtype).repeat_interleave(height * width, dim=0)  # [(B h w), T, 12]
        return block

    def _check_rt(self, rt):
        if rt.dim() != 3 or rt.shape != (self.b, self.t, MOTIONCTRL_POSE_DIM):
            raise ValueError(f"MotionCtrl camera rt must be [B={self.b}, T={self.t}, {MOTIONCTRL_POSE_DIM}] (relative "
                             f"w2c 3x4 per frame, row-major), got {list(rt.shape)}")


__all__ = ["UNetModel", "ResBlock", "TemporalConvBlock", "Downsample", "Upsample", "TimestepEmbedSequential",
           "timestep_embedding"]
