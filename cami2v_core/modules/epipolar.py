"""CamI2V's epipolar attention branch (spec §4.3): a full 3-D attention over all frames and pixels of a video,
restricted by a boolean epipolar mask, with learned register tokens prepended to the keys.

The mask itself is camera maths and is built in `cami2v_core.camera` (spec §4.4); this module only looks it up by
pixel stride and applies it. Layout: the host temporal block holds tokens as `(b h w) t c`; the attention runs on
one sequence per video of L = t*h*w tokens in frame-major order, `b (t h w) c`.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..configs import UNSUPPORTED_EPIPOLAR_SWITCHES, check_epipolar_switches
from ..errors import CamI2VError
from .attention import attention, merge_heads, split_heads
from .epipolar_sparse import MIN_SPARSE_TOKENS, EpipolarBlockMask, _version, cached_block_mask, gathered_attention_kvr

# Keys the original epipolar_config may hold: those this module uses, and those that only matter elsewhere (mask
# building in camera.py, the model class) or are inert. The switches and which are supported: configs.py.
_OWN_KEYS = ("origin_h", "num_register_tokens", "attention_resolution", "is_3d_full_attn", "only_on_cond_frame",
             "compression_factor")
_CONFIG_KEYS_ELSEWHERE = ("origin_w", "add_small_perturbation_on_zero_T", "soft_mask_temperature", "pluker_add_type")


class EpipolarMaskError(CamI2VError, ValueError):
    """A camera condition whose epipolar masks do not fit the block; the message says what to build instead."""


# How a masked epipolar attention runs: "auto" on a CPU gathers the allowed keys when the cost model (calibrated on
# a CPU) says it is cheaper (large, sparse masks: the 256 model's 32x32 and 16x16 levels); on CUDA with Triton it runs
# the large masks (MIN_SPARSE_TOKENS and up) through compiled FlexAttention, which skips the empty 128x128 tiles, and
# the small ones densely; anywhere else, or if FlexAttention fails to compile, it attends densely with the bias built
# once per camera path (the gathered kernel's per-block Python loop launches tens of thousands of small kernels per
# UNet call, which a GPU pays for in launch latency, not in FLOPs);
# "gathered" always gathers, "dense" never does (the reference path: one SDPA call over all L x (R+L) pairs),
# "flex" runs PyTorch's FlexAttention with a BlockMask of the epipolar tiles, built once per camera path, on every
# masked level (compiled on CUDA; eager elsewhere, which forms the full scores: for checking only) and fails loudly.
# All give the same result up to float round-off. (Keep "dense" last: benchmarks run KERNELS reversed, the
# reference first.)
KERNELS = ("auto", "gathered", "flex", "dense")
_kernel = os.environ.get("CAMI2V_EPIPOLAR_KERNEL", "auto")


def set_kernel(name: str) -> None:
    """Choose how masked epipolar attention runs for the whole process: one of KERNELS."""
    global _kernel
    if name not in KERNELS:
        raise ValueError(f"epipolar kernel must be one of {', '.join(KERNELS)}, got {name!r}")
    if name == "flex" and not flex_available():
        raise ValueError(f"epipolar kernel 'flex' needs torch.nn.attention.flex_attention (PyTorch >= 2.5; this is "
                         f"{torch.__version__}): upgrade torch or use 'auto'")
    _kernel = name


def flex_available() -> bool:
    """Whether this PyTorch has FlexAttention (torch.nn.attention.flex_attention, PyTorch >= 2.5)."""
    import importlib.util

    try:
        return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None
    except ModuleNotFoundError:
        return False


def get_kernel() -> str:
    """The epipolar kernel in force (see KERNELS)."""
    if _kernel not in KERNELS:
        raise ValueError(f"CAMI2V_EPIPOLAR_KERNEL must be one of {', '.join(KERNELS)}, got {_kernel!r}")
    return _kernel


# The dense kernel attends with the mask padded by its R always-True register columns, [B, L, R+L]. Made on every
# UNet call, that padded copy (0.54 GB for the two guidance branches of a 256 video at 32x32) and, off the CPU, the
# float bias SDPA turns a bool mask into (about 1 GB in fp16, copied once more to 16-aligned rows) cost more than
# the attention they feed. `dense_attention_mask` builds that final form once per mask (per dtype and device) and
# keeps it on the tensor owning the mask's storage, as `cached_block_mask` keeps the gathered layouts: the camera
# condition holds the mask, so the form lives as long as the camera path, and the guidance branches (views of one
# video's mask) share it.
BIAS_ALIGN = 16  # elements per bias row a multiple of this: what SDPA's fused kernels read without a padded copy


def dense_attention_mask(mask: torch.Tensor, num_register_tokens: int, dtype: torch.dtype,
                         device=None) -> torch.Tensor:
    """bool [B, L, L] (or [B, L, R+L] with the register columns) -> the mask the dense kernel attends with.

    [B, L, R+L]: bool on the CPU (the padded mask the reference path always used) and where there are no registers
    (a row could then allow no key, which a bias would make all -inf); else an additive bias in `dtype` (0 attend,
    -inf not) with 16-aligned rows. Built once per distinct video of the batch and cached on the mask (an in-place
    change rebuilds it); the result is a view when the batch is one video's branches."""
    device = torch.device(device) if device is not None else mask.device
    registers = int(num_register_tokens)
    as_bias = device.type != "cpu" and registers > 0
    owner = mask if mask._base is None else mask._base
    cache = owner.__dict__.setdefault("_cami2v_dense_forms", {})
    finals = []
    for b in range(mask.shape[0]):
        element = mask[b]
        if not as_bias and element.shape[1] == element.shape[0] + registers:
            finals.append(element.to(device))  # already in its final form (padded bool)
            continue
        key = (element.data_ptr(), element.stride(), tuple(element.shape), registers,
               dtype if as_bias else torch.bool, str(device), _version(owner))
        final = cache.get(key)
        if final is None:
            final = cache[key] = _final_dense_form(element.to(device), registers, dtype if as_bias else None)
        finals.append(final)
    if all(f is finals[0] for f in finals):
        return finals[0][None].expand(len(finals), -1, -1)  # one video's branches: a view
    return torch.stack(finals)


def _final_dense_form(mask: torch.Tensor, registers: int, bias_dtype: torch.dtype | None) -> torch.Tensor:
    """bool [L, L] or [L, R+L] -> bool [L, R+L] padded, or (bias_dtype) its additive bias in aligned rows."""
    length, width = mask.shape
    if width != length + registers:
        mask = torch.cat([mask.new_ones(length, registers), mask], dim=-1)
    if bias_dtype is None:
        return mask
    storage = torch.zeros(length, -(-mask.shape[1] // BIAS_ALIGN) * BIAS_ALIGN, dtype=bias_dtype,
                          device=mask.device)
    bias = storage[:, :mask.shape[1]]
    bias.masked_fill_(~mask, float("-inf"))
    return bias


def auto_gathers_on(device) -> bool:
    """Whether the "auto" kernel considers the gathered path on this device: on CPUs only (see KERNELS)."""
    return torch.device(device).type == "cpu"


class FlexAttentionFailed(CamI2VError, RuntimeError):
    """FlexAttention could not compile or run here; the message says which kernel to use instead."""


# Distinct (batch, heads, tokens, head width, dtype) calls compiled per process before a new one is refused, instead
# of torch.compile's default of 8 after which it silently runs flex_attention eagerly (which forms every score: tens
# of GB at the 32x32 level). A 256 and a 512 model with 1-3 guidance branches need about a dozen.
FLEX_RECOMPILE_LIMIT = 64
_flex_failure: list = []  # the first failure of a compiled FlexAttention call in this process ("auto" then stays dense)


def _has_triton() -> bool:
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        return False
    try:
        return bool(has_triton())
    except Exception:  # a broken Triton install: the same as none
        return False


def flex_compiles_on(device) -> bool:
    """Whether FlexAttention runs compiled on `device`: CUDA with Triton. Only compiled does it skip the empty tiles;
    eager it forms every score, as dense does."""
    return torch.device(device).type == "cuda" and flex_available() and _has_triton()


def auto_runs_flex(tokens: int, device) -> bool:
    """Whether "auto" runs a mask of `tokens` queries through FlexAttention on `device`: a large mask (a small one
    gains nothing from skipped tiles and would cost a compile per shape) where FlexAttention compiles, unless it
    has failed in this process."""
    return tokens >= MIN_SPARSE_TOKENS and not _flex_failure and flex_compiles_on(device)


def flex_failure() -> str | None:
    """Why a compiled FlexAttention call failed in this process ("auto" has been dense since), or None."""
    return _flex_failure[0] if _flex_failure else None


def takes_flex(mask, num_register_tokens: int, device) -> bool:
    """Whether a bool mask takes FlexAttention on `device` under the kernel in force ("flex" always; "auto" for a
    large mask where it compiles; registers are needed, as for gathering: without them a row can have no key)."""
    kernel = get_kernel()
    return kernel == "flex" or (kernel == "auto" and num_register_tokens > 0
                                and auto_runs_flex(int(mask.shape[-2]), device))


FLEX_BLOCK = 128  # FlexAttention's tile (queries x keys) that a BlockMask marks empty, partial or full


def flex_block_mask(mask: torch.Tensor, num_register_tokens: int, device=None):
    """bool [B, L, L] (or [B, L, R+L]) -> the FlexAttention BlockMask of the padded mask (register columns first,
    always attended), built once per distinct video of the batch and cached on the mask like the dense forms
    (`dense_attention_mask`); the guidance branches of one video share one (batch-broadcast) BlockMask."""
    from torch.nn.attention.flex_attention import create_block_mask

    device = torch.device(device) if device is not None else mask.device
    registers = int(num_register_tokens)
    owner = mask if mask._base is None else mask._base
    cache = owner.__dict__.setdefault("_cami2v_flex_forms", {})
    elements = [mask[b] for b in range(mask.shape[0])]
    shared = all(e.data_ptr() == elements[0].data_ptr() and e.stride() == elements[0].stride() for e in elements)
    chosen = elements[:1] if shared else elements
    key = (tuple((e.data_ptr(), e.stride()) for e in chosen), len(elements), tuple(mask.shape[1:]), registers,
           str(device), _version(owner))
    block_mask = cache.get(key)
    if block_mask is None:
        padded = torch.stack([_final_dense_form(e.to(device), registers, None) for e in chosen])  # [B', L, R+L]
        length, width = padded.shape[1:]
        if shared:
            def mask_mod(b, h, q_index, kv_index):
                return padded[0, q_index, kv_index]
        else:
            def mask_mod(b, h, q_index, kv_index):
                return padded[b, q_index, kv_index]
        block_mask = cache[key] = create_block_mask(mask_mod, None if shared else len(chosen), None, length, width,
                                                    device=str(device), BLOCK_SIZE=FLEX_BLOCK)
    return block_mask


@functools.cache
def _compiled_flex():
    """flex_attention compiled once per process (torch.compile then keeps one graph per input shape)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask, fallback: bool = False):
    """FlexAttention of q [B, h, L, d] over k, v [B, h, R+L, d] with a BlockMask from `flex_block_mask`: compiled on
    CUDA with Triton (one graph per shape; the empty tiles are skipped), eager elsewhere (exact, but it forms the
    scores). A compiled call that fails raises FlexAttentionFailed, or with `fallback` (the "auto" kernel) warns once,
    returns None and keeps "auto" dense for the rest of the process. Running out of memory is never a fallback."""
    from torch.nn.attention import flex_attention as flex

    if flex_compiles_on(q.device):
        import torch._dynamo

        try:
            with torch.inference_mode(False), torch._dynamo.config.patch(recompile_limit=FLEX_RECOMPILE_LIMIT,
                                                                         fail_on_recompile_limit_hit=True):
                return _compiled_flex()(q, k, v, block_mask=block_mask)  # traced: inference tensors read fine
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # Triton / inductor errors have no common base class
            reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
            if not fallback:
                raise FlexAttentionFailed(
                    f"FlexAttention failed on {q.device} for a [{', '.join(map(str, q.shape))}] {q.dtype} query "
                    f"({reason}): use the epipolar kernel 'auto' or 'dense' (CAMI2V_EPIPOLAR_KERNEL=dense, or "
                    "--kernel dense)") from error
            if not _flex_failure:
                _flex_failure.append(reason)
                warnings.warn(f"CamI2V: FlexAttention failed on {q.device} ({reason}); the epipolar attention runs "
                              "densely from now on in this process (CAMI2V_EPIPOLAR_KERNEL=dense skips the attempt)",
                              RuntimeWarning, stacklevel=2)
            return None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex.flex_attention(q, k, v, block_mask=block_mask)


def _may_gather(mask, device=None) -> bool:
    """Whether a mask could take the gathered path on `device` (default: the mask's); then its register columns
    are never padded densely."""
    if isinstance(mask, EpipolarBlockMask):
        return True
    kernel = get_kernel()
    if kernel == "gathered":
        return True
    return (kernel == "auto" and mask.shape[-2] >= MIN_SPARSE_TOKENS
            and auto_gathers_on(device if device is not None else mask.device))


def gathered_form(mask: torch.Tensor, frames: int, num_register_tokens: int, device=None) -> EpipolarBlockMask | None:
    """The cached EpipolarBlockMask of a bool mask [B, L, L] if the kernel in force gathers it, else None (dense).

    "auto" gathers on a CPU when the cost model of epipolar_sparse (calibrated in docs/performance.md) says the
    gathered blocks beat one dense SDPA call, and never on another device (`device`, default the mask's).
    Registers are needed: without them a row can have nothing to attend.
    """
    if isinstance(mask, EpipolarBlockMask):
        return mask
    if num_register_tokens == 0 or not _may_gather(mask, device):
        return None
    blocks = cached_block_mask(mask, frames, num_register_tokens, device=device)
    if get_kernel() == "gathered" or blocks.relative_cost < 1:
        return blocks
    return None


def prepare_masks(masks: dict | None, frames: int, num_register_tokens: int, device=None) -> dict:
    """Build the gathered form of every mask the kernel will gather, before the first UNet call needs it.

    masks {stride: bool [B, L, L]} -> {stride: {"tokens", "density", "scored_fraction", "kernel", "layout",
    "relative_cost"}} for reports (relative_cost: modelled gathered time over dense time).
    The forms are cached on the masks, so the UNet finds them; calling this is optional.
    """
    info = {}
    for stride, mask in (masks or {}).items():
        if isinstance(mask, EpipolarBlockMask):
            info[int(stride)] = {"tokens": mask.length, "kernel": "gathered", "density": mask.density,
                                 "scored_fraction": mask.scored_fraction, "bytes": mask.nbytes,
                                 "layout": sorted(set(mask.kinds)), "relative_cost": mask.relative_cost}
            continue
        blocks = gathered_form(mask, frames, num_register_tokens, device)
        flex = blocks is None and takes_flex(mask, num_register_tokens, device if device is not None else mask.device)
        entry = {"tokens": int(mask.shape[-2]), "kernel": "gathered" if blocks is not None else
                 "flex" if flex else "dense"}
        probe = blocks if blocks is not None else (
            cached_block_mask(mask, frames, num_register_tokens, device) if _may_gather(mask, device) else None)
        if probe is not None:
            entry.update(density=probe.density, scored_fraction=probe.scored_fraction, bytes=probe.nbytes,
                         layout=sorted(set(probe.kinds)), relative_cost=probe.relative_cost)
        else:
            entry.update(density=int(torch.count_nonzero(mask)) / mask.numel())
        info[int(stride)] = entry
    return info


def compact_masks(masks: dict | None, frames: int, num_register_tokens: int, device=None) -> dict | None:
    """{stride: bool [B, L, L]} -> the same dict with every mask the kernel gathers replaced by its gathered form.

    A camera condition holding the result no longer holds the dense masks (268 MB per video at the 256 model's
    32x32 level; the gathered form of that level takes about 20 MB), and every UNet call finds the gathered form
    ready. `EpipolarBlockMask` supports what CameraCondition does to its masks (to, repeat_batch, select). The
    masks kept dense get their final form (`dense_attention_mask`) at the first UNet call, cached on them.
    """
    if masks is None:
        return None
    out = {}
    for stride, mask in masks.items():
        blocks = mask if isinstance(mask, EpipolarBlockMask) else gathered_form(mask, frames, num_register_tokens,
                                                                                  device)
        out[stride] = blocks if blocks is not None else mask
    return out


def lookup_mask(masks: dict[int, torch.Tensor] | None, origin_h: int, feature_height: int) -> torch.Tensor | None:
    """The epipolar mask for a feature map of `feature_height` rows: masks[origin_h // feature_height] or None.

    A missing stride means "unmasked": this is the released 512 model's behaviour at ds 1 (spec §4.4.7), so it is
    not an error.
    """
    if masks is None:
        return None
    return masks.get(origin_h // feature_height)


def pad_register_columns(mask: torch.Tensor, num_register_tokens: int, device=None) -> torch.Tensor:
    """bool [B, L, L] -> [B, L, R+L] with the R register columns always True (spec §4.3).

    A mask that may take the gathered path (`EpipolarBlockMask`, or a large one under the "auto"/"gathered"
    kernels) is returned as it is: that path adds the registers itself, and the padded copy would be as big as the
    mask (268 MB per video at the 256 model's 32x32 level) and made again on every UNet call. (The UNet itself
    never pads: the dense kernel takes its padded form from `dense_attention_mask`, built once per mask.)
    """
    if num_register_tokens == 0 or _may_gather(mask, device):
        return mask
    registers = mask.new_ones(mask.shape[0], mask.shape[1], num_register_tokens)
    return torch.cat([registers, mask], dim=-1)


class RegisterTokenAttention(nn.Module):
    """Multi-head attention whose keys/values are [register tokens ; context] (the original's `epipolar_attn`)."""

    def __init__(self, dim: int, heads: int, dim_head: int, num_register_tokens: int = 0, dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.num_register_tokens = num_register_tokens
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
        if num_register_tokens > 0:
            # learned, N(0, 1) init like the original; the output layer is zero-initialised so that a freshly
            # added branch leaves the base model unchanged (spec §8)
            self.register_tokens = nn.Parameter(torch.randn(1, num_register_tokens, dim))
        nn.init.zeros_(self.to_out[0].weight)
        nn.init.zeros_(self.to_out[0].bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | EpipolarBlockMask | None = None) -> torch.Tensor:
        """x [B, L, C], mask bool [B, L, L] or [B, L, R+L] (True = attend), additive [B, L, R+L], EpipolarBlockMask
        or None -> [B, L, C].

        The gathered path is inference only (its gathers write into reused buffers); with autograd recording, a
        block mask is expanded back to the dense mask it stands for."""
        if isinstance(mask, EpipolarBlockMask):
            if self.gathers(x):
                return self._forward_gathered(x, mask)
            mask = mask.to_dense().to(x.device)
            if self.num_register_tokens > 0:
                mask = torch.cat([mask.new_ones(*mask.shape[:2], self.num_register_tokens), mask], dim=-1)
        context = x
        if self.num_register_tokens > 0:
            registers = self.register_tokens.to(x.dtype).expand(x.shape[0], -1, -1)
            context = torch.cat([registers, x], dim=1)  # [B, R+L, C]
        q = split_heads(self.to_q(x), self.heads)  # [B, h, L, d]
        k = split_heads(self.to_k(context), self.heads)  # [B, h, R+L, d]
        v = split_heads(self.to_v(context), self.heads)
        if mask is not None and mask.dtype == torch.bool and takes_flex(mask, self.num_register_tokens, q.device):
            out = flex_attend(q, k, v, flex_block_mask(mask, self.num_register_tokens, q.device),
                              fallback=get_kernel() == "auto")
            if out is not None:
                return self.to_out(merge_heads(out))
        if mask is not None and mask.dtype == torch.bool:
            # padded (and off the CPU biased) once per mask, then a view per call
            mask = dense_attention_mask(mask, self.num_register_tokens, q.dtype, q.device)
        if mask is not None:
            mask = mask.unsqueeze(1)  # [B, 1, L, R+L]: a broadcast view over heads, never a per-head copy
        out = attention(q, k, v, mask=mask)  # default scale dim_head^-0.5, as the original's SDPA call
        return self.to_out(merge_heads(out))

    def gathers(self, x: torch.Tensor) -> bool:
        """Whether a block mask takes the gathered path for input x: only when autograd records nothing."""
        return not (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())))

    def _forward_gathered(self, x: torch.Tensor, blocks: EpipolarBlockMask) -> torch.Tensor:
        """The same attention with only the allowed pairs scored (epipolar_sparse.py). x [B, L, C] -> [B, L, C].

        One video of the batch at a time (guidance branches are a batch): the projections and gathers of a video
        are tens of MB at the 32x32 level, and holding those of one video at a time keeps the extra memory of
        CamI2V over DynamiCrafter small."""
        b, length, _ = x.shape
        inner = self.to_q.weight.shape[0]
        R = self.num_register_tokens
        blocks = blocks.to(x.device)
        w_kv = torch.cat([self.to_k.weight, self.to_v.weight])  # [2*inner, C]
        register_kv = F.linear(self.register_tokens[0].to(x.dtype), w_kv)  # [R, 2*inner]
        out_layer = self.to_out[0]
        out = x.new_empty(b, length, out_layer.weight.shape[0])
        for e in range(b):
            # q alone and k, v in one GEMM, each into its own contiguous tensor: the gathers read rows of them, and
            # index_select copies a strided source whole before every gather. The register tokens' keys and values
            # go in the rows after the tokens', so one gather fetches both.
            q = self.to_q(x[e]).view(1, length, self.heads, -1)
            kvr = x.new_empty(1, length + R, 2 * inner)
            torch.mm(x[e], w_kv.t(), out=kvr[0, :length])
            kvr[0, length:] = register_kv
            o = gathered_attention_kvr(q, kvr.view(1, length + R, 2, self.heads, -1), R, blocks[e])
            del q, kvr
            torch.addmm(out_layer.bias, o.reshape(length, inner), out_layer.weight.t(), out=out[e])
        return out  # to_out's dropout is inactive at inference, and this path only runs there (no autograd)


class EpipolarAttention(nn.Module):
    """The `epipolar` child of a camera-enabled temporal block; takes the original `epipolar_config` entries.

    Args:
        dim: channel width C of the host temporal block.
        heads: heads of the host block (C / num_head_channels); head width is dim // heads // compression_factor.
        origin_h: image height in pixels the mask strides refer to (used when the camera condition gives none).
        num_register_tokens: learned tokens prepended to the keys, always attended (4 in every release).
        attention_resolution: the UNet ds levels masks are built for (mask building lives in camera.py).
        is_3d_full_attn: ignore masks and attend to everything (the paper's "3D full attention" ablation).
        only_on_cond_frame: the masks hold keys of the conditioning frame only (camera.keep_key_frame, the
            reference-frame ablation); the block then refuses to run without a mask, which would attend all frames.
    Every kernel runs both: the full one has no mask (plain SDPA), the reference-frame one is an ordinary mask.
    """

    def __init__(self, dim: int, heads: int, origin_h: int = 256, num_register_tokens: int = 0,
                 attention_resolution=(8, 4, 2, 1), is_3d_full_attn: bool = False, only_on_cond_frame: bool = False,
                 compression_factor: int = 1, **config):
        super().__init__()
        unknown = sorted(set(config) - set(UNSUPPORTED_EPIPOLAR_SWITCHES) - set(_CONFIG_KEYS_ELSEWHERE))
        if unknown:
            known = _OWN_KEYS + _CONFIG_KEYS_ELSEWHERE + UNSUPPORTED_EPIPOLAR_SWITCHES
            raise TypeError(f"unknown epipolar_config entries {unknown}; the original's entries are "
                            f"{', '.join(known)}")
        check_epipolar_switches(dict(config, is_3d_full_attn=is_3d_full_attn, only_on_cond_frame=only_on_cond_frame))
        self.origin_h = int(origin_h)
        self.attention_resolution = list(attention_resolution)
        self.is_3d_full_attn = bool(is_3d_full_attn)
        self.only_on_cond_frame = bool(only_on_cond_frame)
        self.num_register_tokens = int(num_register_tokens)
        dim_head = int(dim // heads // compression_factor)
        self.epipolar_attn = RegisterTokenAttention(dim, heads, dim_head, self.num_register_tokens)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """x [(B h w), T, C] + mask bool [B, L, L] or [B, L, R+L] (L = T*h*w) or None (unmasked) -> [(B h w), T, C]."""
        hw = x.shape[0] // batch_size
        frames = x.shape[1]
        if self.is_3d_full_attn:
            mask = None
        elif mask is None and self.only_on_cond_frame:
            raise EpipolarMaskError(
                f"this epipolar block (only_on_cond_frame, {frames} frames x {hw} cells) got no epipolar mask, and "
                "unmasked it would attend every frame, not the conditioning frame: build the camera condition with "
                "model.prepare_camera at the model's resolution, whose masks cover every level")
        if mask is not None:
            mask = self._choose_kernel(mask, batch_size, hw * frames, frames, x.device)
            if isinstance(mask, EpipolarBlockMask) and self.epipolar_attn.gathers(x):
                # The gathered kernel takes tokens in any order its indices say: in the block's own cell-major
                # order, the tokens and the output need no frame-major copy.
                out = self.epipolar_attn(x.reshape(batch_size, hw * frames, -1), mask.cell_major())
                return out.view(batch_size * hw, frames, -1)
        tokens = rearrange(x, "(b hw) t c -> b (t hw) c", b=batch_size)  # frame-major, then y, then x (§4.3)
        out = self.epipolar_attn(tokens, mask)
        return rearrange(out, "b (t hw) c -> (b hw) t c", hw=hw)

    def _choose_kernel(self, mask, batch_size: int, length: int, frames: int, device):
        """The mask in the form the chosen kernel takes: EpipolarBlockMask (gathered) or the checked bool mask
        [B, L, L] / [B, L, R+L] (dense: RegisterTokenAttention takes its cached final form)."""
        if isinstance(mask, EpipolarBlockMask):
            if mask.batch_size != batch_size or mask.length != length or mask.frames != frames:
                raise ValueError(f"epipolar block mask is for batch {mask.batch_size}, {mask.frames} frames, "
                                 f"{mask.length} tokens but this block has batch {batch_size}, {frames} frames, "
                                 f"{length} tokens: build it from masks of the same image size, frames and batch")
            if self.num_register_tokens == 0:
                return self._check_mask(mask.to_dense(), batch_size, length).to(device)
            return mask
        if self.num_register_tokens > 0 and mask.dtype == torch.bool and _may_gather(mask, device):
            self._check_mask(mask, batch_size, length, pad=False)
            blocks = gathered_form(mask, frames, self.num_register_tokens, device)
            if blocks is not None:
                return blocks
        return self._check_mask(mask, batch_size, length, pad=False)

    def _check_mask(self, mask: torch.Tensor, batch_size: int, length: int, pad: bool = True) -> torch.Tensor:
        if mask.dtype != torch.bool:
            raise TypeError(f"epipolar mask must be a bool tensor (True = attend), got dtype {mask.dtype}")
        full = length + self.num_register_tokens
        if mask.dim() != 3 or mask.shape[0] != batch_size or mask.shape[1] != length or mask.shape[2] not in (
                length, full):
            raise ValueError(f"epipolar mask has shape {list(mask.shape)} but this block needs [{batch_size}, {length}, "
                             f"{length}] (batch, T*h*w, T*h*w) or [{batch_size}, {length}, {full}] with the register "
                             f"columns: build the masks for the same image size, frame count and batch as the latent")
        if pad and mask.shape[2] == length and self.num_register_tokens > 0:
            registers = mask.new_ones(mask.shape[0], mask.shape[1], self.num_register_tokens)
            mask = torch.cat([registers, mask], dim=-1)
        return mask


__all__ = ["EpipolarAttention", "RegisterTokenAttention", "dense_attention_mask", "lookup_mask", "pad_register_columns",
           "EpipolarMaskError", "KERNELS", "set_kernel", "get_kernel", "auto_gathers_on", "flex_available",
           "flex_compiles_on", "auto_runs_flex", "takes_flex", "flex_failure", "FlexAttentionFailed",
           "FLEX_RECOMPILE_LIMIT", "flex_block_mask", "flex_attend", "gathered_form", "prepare_masks", "compact_masks"]
