"""The one attention entry point every module calls.

All backends share one signature, ``attention(q, k, v, mask=None, scale=None)`` on ``[B, heads, L, d]`` tensors,
so a module never knows which kernel ran. PyTorch SDPA is the default and the only path the CPU needs; xformers is
used on CUDA when it imports and works (it is optional and never required).
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from ..errors import CamI2VError

BACKENDS = ("auto", "sdpa", "math", "xformers")
_backend = os.environ.get("CAMI2V_ATTENTION", "auto")
# The math backend forms the whole [B, h, Lq, Lk] score matrix and its softmax. Below this many bytes it does so
# without asking; above, it first checks that they fit in the device's free memory (the 512 model's unmasked top
# level would need 67 GB in fp16: 40 960 tokens, 5 heads, both guidance branches).
MATH_CHECK_BYTES = 1 << 30


class AttentionMemoryError(CamI2VError, MemoryError):
    """The math backend's score matrix would not fit in free memory; the message says which backend to use."""


def set_backend(name: str) -> None:
    """Select the attention backend for the whole process: one of BACKENDS."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"attention backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "xformers" and not xformers_available():
        raise ValueError("attention backend 'xformers' was requested but xformers is not importable or has no "
                         "working CUDA kernel here; install xformers matching your torch build or use 'sdpa'")
    _backend = name


def get_backend() -> str:
    """The backend name in force ('auto' resolves per call)."""
    return _backend


@functools.lru_cache(maxsize=1)
def xformers_available() -> bool:
    """True when xformers imports and runs one tiny CUDA attention (a broken build is treated as absent)."""
    if not torch.cuda.is_available():
        return False
    try:
        import xformers.ops as xops

        q = torch.zeros(1, 4, 1, 8, device="cuda", dtype=torch.float16)
        xops.memory_efficient_attention(q, q, q)
        return True
    except Exception:  # any import or kernel failure means "do not use it"
        return False


def attention_math(q, k, v, mask=None, scale=None):
    """Reference attention: softmax(q k^T * scale + mask) v in the input dtype. [B,h,Lq,d] -> [B,h,Lq,d]."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    sim = torch.einsum("bhid,bhjd->bhij", q, k) * scale
    if mask is not None:
        if mask.dtype == torch.bool:
            sim = sim.masked_fill(~mask, -torch.finfo(sim.dtype).max)
        else:
            sim = sim + mask
    return torch.einsum("bhij,bhjd->bhid", sim.softmax(dim=-1), v)


def math_bytes(q: torch.Tensor, k: torch.Tensor) -> int:
    """Bytes of the score matrix [B, h, Lq, Lk] and its softmax that `attention_math` forms for q, k [B,h,L,d]."""
    batch = max(q.shape[0], k.shape[0])
    heads = max(q.shape[1], k.shape[1]) if q.dim() == 4 else 1
    return 2 * batch * heads * q.shape[-2] * k.shape[-2] * q.element_size()


def free_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors on `device`: CUDA free + this process's cached blocks, the CPU's MemAvailable;
    None where unknown (then nothing is refused)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
    return None


def check_math_fits(q: torch.Tensor, k: torch.Tensor) -> None:
    """Refuse (AttentionMemoryError) a math-backend call whose score matrix would not fit in free memory."""
    need = math_bytes(q, k)
    if need < MATH_CHECK_BYTES:
        return
    free = free_bytes(q.device)
    if free is not None and need > free:
        shape = [max(q.shape[0], k.shape[0]), q.shape[1], q.shape[-2], k.shape[-2]]
        raise AttentionMemoryError(
            f"attention backend 'math' would form a {'x'.join(map(str, shape))} score matrix and its softmax, "
            f"{need / 2**30:.1f} GiB, but {free / 2**30:.1f} GiB are free on {q.device}: use the 'sdpa' backend "
            f"(the default: set_backend('sdpa') or CAMI2V_ATTENTION=sdpa), whose kernels never form it")


def attention_sdpa(q, k, v, mask=None, scale=None):
    """PyTorch scaled_dot_product_attention. mask: bool (True = attend) or additive, broadcastable to [B,h,Lq,Lk]."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def attention_xformers(q, k, v, mask=None, scale=None):
    """xformers memory-efficient attention; masks fall back to SDPA (xformers wants additive, aligned biases)."""
    if mask is not None:
        return attention_sdpa(q, k, v, mask, scale)
    import xformers.ops as xops

    # xformers wants [B, L, h, d]
    out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale)
    return out.transpose(1, 2)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              scale: float | None = None) -> torch.Tensor:
    """Scaled dot-product attention on [B, heads, L, d] tensors with the backend in force; mask True = attend."""
    backend = _backend
    if backend == "auto":
        backend = "xformers" if (q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
                                 and xformers_available()) else "sdpa"
    if backend == "xformers" and q.is_cuda:
        return attention_xformers(q, k, v, mask, scale)
    if backend == "math":
        check_math_fits(q, k)
        return attention_math(q, k, v, mask, scale)
    return attention_sdpa(q, k, v, mask, scale)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, L, h*d] -> [B, h, L, d]."""
    b, n, hd = x.shape
    return x.view(b, n, heads, hd // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, h, L, d] -> [B, L, h*d]."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


__all__ = ["attention", "attention_math", "attention_sdpa", "attention_xformers", "set_backend", "get_backend",
           "split_heads", "merge_heads", "xformers_available", "BACKENDS", "AttentionMemoryError", "math_bytes",
           "free_bytes", "check_math_fits", "MATH_CHECK_BYTES"]
