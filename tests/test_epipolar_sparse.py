"""The gathered epipolar attention against the dense masked attention it replaces (issue 8).

The reference everywhere is plain masked softmax attention over [registers ; keys] computed densely in float64;
the gathered path must give the same numbers up to round-off for every mask: real epipolar masks from camera.py,
random masks, rows with no key in some frames, rows with no key at all (registers only), batches whose elements
share or do not share a mask.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cami2v_core import camera as camera_maths
from cami2v_core.camera import CameraCondition
from cami2v_core.errors import CamI2VError
from cami2v_core.modules import epipolar as epi
from cami2v_core.modules.epipolar_sparse import (EpipolarBlockMask, attention_with_lse, attention_with_lse_math,
                                                 build_layout, cached_block_mask, gathered_attention)
from tests.devices import is_default


@pytest.fixture(autouse=True)
def _auto_kernel():
    yield
    epi.set_kernel("auto")


def dense_reference(q, k, v, rk, rv, mask):
    """softmax(q [rk; k]^T / sqrt(d), registers always on, mask [B, L, L]) [rv; v] in float64. [B, L, h, d]."""
    q, k, v, rk, rv = (t.double() for t in (q, k, v, rk, rv))
    B, L, h, d = q.shape
    keys = torch.cat([rk[None].expand(B, -1, -1, -1), k], dim=1)  # [B, R+L, h, d]
    values = torch.cat([rv[None].expand(B, -1, -1, -1), v], dim=1)
    scores = torch.einsum("blhd,bmhd->bhlm", q, keys) / math.sqrt(d)
    allowed = torch.cat([torch.ones(B, L, rk.shape[0], dtype=torch.bool), mask], dim=-1)[:, None]
    scores = scores.masked_fill(~allowed, -math.inf)
    return torch.einsum("bhlm,bmhd->blhd", scores.softmax(-1), values)


def epipolar_masks(frames=4, size=64, strides=(8, 16), seed=0, kind="orbit"):
    """Real masks of camera.py for a small trajectory -> {stride: bool [1, L, L]}."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, frames, dtype=torch.float64)
    w2c = torch.eye(4, dtype=torch.float64).repeat(frames, 1, 1)
    if kind == "orbit":
        angle = 0.5 * t
        w2c[:, 0, 0], w2c[:, 0, 2], w2c[:, 2, 0], w2c[:, 2, 2] = angle.cos(), angle.sin(), -angle.sin(), angle.cos()
        w2c[:, 0, 3] = 0.8 * t
    elif kind == "zoom":
        w2c[:, 2, 3] = -0.9 * t
    # kind == "static": identity poses, every pair perturbed (spec §4.4.6)
    K = torch.tensor([[size / 2, 0, size / 2], [0, size / 2, size / 2], [0, 0, 1.0]]).expand(1, frames, 3, 3)
    rel = camera_maths.relative_c2w(w2c[None].float(), torch.tensor([0]))
    masks, _ = camera_maths.epipolar_structures(rel, K, size, size, strides, generator=g)
    return masks


def random_qkv(B, L, h=2, d=8, R=4, seed=0, dtype=torch.float32, device="cpu"):
    """q, k, v [B, L, h, d] and register keys/values [R, h, d], drawn on the CPU (the same numbers on any device)."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, L, h, d, generator=g).to(device, dtype) for _ in range(3))
    rk, rv = (torch.randn(R, h, d, generator=g).to(device, dtype) for _ in range(2))
    return q, k, v, rk, rv


def on_cpu(*tensors):
    """The tensors on the CPU (the dense references are computed there)."""
    return tuple(t.cpu() for t in tensors)


# -- the layout ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["orbit", "zoom", "static"])
def test_merged_layout_covers_exactly_the_mask(kind):
    mask = epipolar_masks(kind=kind)[8]  # [1, 256, 256]: 4 frames of 8x8 cells
    blocks = EpipolarBlockMask.from_dense(mask, frames=4, group_size=8, kind="merged")
    assert torch.equal(blocks.to_dense(), mask)
    layout = blocks.layouts[0]
    assert layout.kind == "merged" and layout.allowed == int(mask.sum())
    assert layout.scored >= layout.allowed
    # a group's keys all lie in one key frame, and a query is in one group per key frame it has keys in
    n = 64
    seen = []
    for b in layout.blocks:
        frame = b.key_index[:, :1] // n
        assert bool((b.key_index // n == frame).all())
        rows = b.query_index
        real = rows < 256
        seen.append((rows[real] * 4 + frame.expand_as(rows)[real]))
    seen = torch.cat(seen)
    assert seen.unique().numel() == seen.numel()
    hits = mask[0].view(256, 4, n).any(-1)  # [query, key frame]
    assert seen.numel() == int(hits.sum())


def built_layout(kind, group_size, layout_kind):
    """The layout of a 4-frame 8x8-cell epipolar mask, after the checks every layout passes."""
    mask = epipolar_masks(kind=kind)[8]
    blocks = EpipolarBlockMask.from_dense(mask, frames=4, group_size=group_size, kind=layout_kind)
    assert torch.equal(blocks.to_dense(), mask)
    layout = blocks.layouts[0]
    assert layout.kind == layout_kind and layout.allowed == int(mask.sum()) and layout.scored >= layout.allowed
    return layout


def every_query_once(blocks):
    rows = torch.cat([b.query_index.reshape(-1) for b in blocks])
    return torch.equal(rows[rows < 256].sort().values, torch.arange(256))  # padding slots are 256


@pytest.mark.parametrize("kind", ["orbit", "zoom", "static"])
@pytest.mark.parametrize("group_size", [None, 8, 5])
def test_once_layout_has_every_query_exactly_once(kind, group_size):
    layout = built_layout(kind, group_size, "once")
    assert every_query_once(layout.blocks)
    for b in layout.blocks:
        assert bool((b.key_index < 256).all()) and not bool(b.mask[b.query_index == 256].any())
    assert layout.slots == sum(b.query_index.numel() for b in layout.blocks)


@pytest.mark.parametrize("kind", ["orbit", "zoom", "static"])
@pytest.mark.parametrize("group_size", [None, 8, 5])
def test_split_layout_has_every_query_once_per_part(kind, group_size):
    layout = built_layout(kind, group_size, "split")
    n = 64
    for registers in (True, False):
        part = [b for b in layout.blocks if b.registers == registers]
        assert every_query_once(part)
        for b in part:  # the own-frame part holds only keys of the query's frame, the other part none of them
            real = b.query_index < 256
            same = (b.key_index[:, None, :] // n == b.query_index[:, :, None] // n)[real]
            assert bool(same[b.mask[real]].all()) if not registers else not bool(same[b.mask[real]].any())


def test_split_layout_scores_fewer_pairs_than_once():
    # the own-frame lines (a pencil through a random point, spec §4.4.6) cross the other frames' lines: grouped
    # apart, neither part's unions carry the other's keys
    for kind in ("orbit", "zoom"):
        mask = epipolar_masks(kind=kind, frames=8, size=128, strides=(8,))[8][0]
        split, once = build_layout(mask, 8, kind="split"), build_layout(mask, 8, kind="once")
        assert split.scored < 0.9 * once.scored


def test_auto_layout_is_the_cheaper_one():
    for kind in ("orbit", "zoom", "static"):
        mask = epipolar_masks(kind=kind, frames=8, size=128, strides=(8,))[8][0]
        auto = build_layout(mask, 8)
        split, merged = build_layout(mask, 8, kind="split"), build_layout(mask, 8, kind="merged")
        assert auto.cost <= min(split.cost, merged.cost) * (1 + 1e-9) or auto.cost <= split.cost
        assert auto.kind in ("split", "merged")
    with pytest.raises(ValueError, match="once"):
        build_layout(mask, 8, kind="sideways")


def test_gathering_skips_most_pairs_of_a_sparse_mask():
    mask = epipolar_masks(frames=8, size=128, strides=(8,))[8]  # 16x16 cells, 2048 tokens
    blocks = EpipolarBlockMask.from_dense(mask, frames=8)
    assert blocks.density < 0.1
    assert blocks.scored_fraction < 4 * blocks.density  # unions and padding cost a small factor, not the full L*L


# -- numbers: gathered == dense -------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["split", "once", "merged"])
@pytest.mark.parametrize("kind", ["orbit", "zoom", "static"])
@pytest.mark.parametrize("stride", [8, 16])
def test_gathered_attention_equals_dense_on_epipolar_masks(kind, stride, layout, device):
    mask = epipolar_masks(kind=kind)[stride]
    L = mask.shape[-1]
    qkv = random_qkv(1, L, dtype=torch.float64, device=device)
    blocks = EpipolarBlockMask.from_dense(mask, frames=4, group_size=8, kind=layout).to(device)
    out = gathered_attention(*qkv, blocks)
    torch.testing.assert_close(out.cpu(), dense_reference(*on_cpu(*qkv), mask), atol=1e-12, rtol=0)


@settings(max_examples=60, deadline=None)
@given(frames=st.integers(1, 4), cells=st.integers(1, 12), group=st.integers(1, 9), density=st.floats(0, 1),
       batch=st.integers(1, 3), registers=st.integers(1, 4), seed=st.integers(0, 2 ** 16),
       layout=st.sampled_from(["split", "once", "merged", "auto"]))
def test_gathered_attention_equals_dense_on_any_mask(frames, cells, group, density, batch, registers, seed, layout,
                                                    device):
    g = torch.Generator().manual_seed(seed)
    L = frames * cells
    mask = torch.rand(batch, L, L, generator=g) < density  # includes empty rows, empty frames and full rows
    if batch > 1:
        mask[-1] = mask[0]  # one shared mask in the batch
    qkv = random_qkv(batch, L, R=registers, seed=seed, dtype=torch.float64, device=device)
    blocks = EpipolarBlockMask.from_dense(mask, frames=frames, group_size=group, block_rows=3 * group, kind=layout)
    assert torch.equal(blocks.to_dense(), mask)
    out = gathered_attention(*qkv, blocks.to(device))
    torch.testing.assert_close(out.cpu(), dense_reference(*on_cpu(*qkv), mask), atol=1e-12, rtol=0)


@pytest.mark.parametrize("layout", ["split", "once", "merged"])
def test_float32_path_matches_reference(layout, device, dtype, tolerance):
    mask = epipolar_masks(frames=4, size=128, strides=(8,))[8]  # 1024 tokens
    qkv = random_qkv(2, mask.shape[-1], h=3, d=16, dtype=dtype, device=device)
    mask2 = mask.expand(2, -1, -1)
    out = gathered_attention(*qkv, EpipolarBlockMask.from_dense(mask2, frames=4, kind=layout).to(device))
    assert out.dtype == dtype
    torch.testing.assert_close(out.double().cpu(), dense_reference(*on_cpu(*qkv), mask2),
                               **tolerance(dtype, atol=2e-6, rtol=0))


@pytest.mark.parametrize("layout", ["split", "once", "merged"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_matches_reference(dtype, layout, device):
    mask = epipolar_masks()[8]
    qkv = random_qkv(1, mask.shape[-1], dtype=dtype, device=device)
    out = gathered_attention(*qkv, EpipolarBlockMask.from_dense(mask, frames=4, group_size=16,
                                                                kind=layout).to(device))
    assert out.dtype == dtype
    ref = dense_reference(*on_cpu(*qkv), mask)
    torch.testing.assert_close(out.double().cpu(), ref, atol=3e-2, rtol=0)


def test_lse_kernels_agree(device, dtype, tolerance):
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(5, 2, 7, 8, generator=g) for _ in range(3))
    mask = torch.rand(5, 1, 7, 7, generator=g) > 0.6
    mask[..., 2] = True
    out, lse = attention_with_lse(*(t.to(device, dtype) for t in (q, k, v)), mask.to(device), 0.25)
    assert out.dtype == dtype and lse.dtype == torch.float32  # softmax statistics in fp32 for half inputs too
    q, k, v = (t.to(dtype).double() for t in (q, k, v))  # the reference sees the same rounded inputs
    ref_out, ref_lse = attention_with_lse_math(q, k, v, mask, 0.25)
    torch.testing.assert_close(out.double().cpu(), ref_out, **tolerance(dtype, atol=1e-6, rtol=0))
    torch.testing.assert_close(lse.double().cpu(), ref_lse, **tolerance(dtype, atol=1e-6, rtol=0, scale=4))
    # the log-sum-exp is that of the masked, scaled scores
    scores = (q.double() @ k.double().transpose(-1, -2) * 0.25).masked_fill(~mask, -math.inf)
    torch.testing.assert_close(ref_lse, scores.logsumexp(-1), atol=1e-12, rtol=0)


# -- the module, the cache and the camera condition ----------------------------------------------------------------

def epipolar_module(dim=32, heads=2, registers=4, seed=0, device="cpu", dtype=torch.float32):
    torch.manual_seed(seed)
    module = epi.EpipolarAttention(dim, heads, origin_h=64, num_register_tokens=registers).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)  # the zero-initialised output layer would hide every difference
    return module.to(device, dtype)


def run_module(module, mask, batch, frames=4, cells=64, seed=1):
    """The block on random host tokens [(B hw), T, C] drawn on the CPU -> its output on the module's device."""
    weight = module.epipolar_attn.to_q.weight
    x = torch.randn(batch * cells, frames, weight.shape[1], generator=torch.Generator().manual_seed(seed))
    if mask is not None:
        mask = mask.to(weight.device)
    with torch.no_grad():
        return module(x.to(weight.device, weight.dtype), mask, batch)


@pytest.mark.parametrize("padded", [False, True])
def test_module_kernels_agree(padded, device, dtype, tolerance):
    mask = epipolar_masks()[8].expand(2, -1, -1)  # two guidance branches sharing one camera
    if padded:  # the [B, L, R+L] form with the register columns first
        mask = torch.cat([torch.ones(2, mask.shape[1], 4, dtype=torch.bool), mask], dim=-1)
    module = epipolar_module(device=device, dtype=dtype)
    epi.set_kernel("dense")
    dense = run_module(module, mask, batch=2)
    epi.set_kernel("gathered")
    gathered = run_module(module, mask, batch=2)
    assert gathered.dtype == dtype and gathered.device.type == device.type
    # both against the CPU fp32 dense result (the reference), each kernel within the dtype's rounding
    reference = dense if is_default(device, dtype) else run_module(epipolar_module(), mask.cpu(), batch=2)
    scale = float(reference.abs().max())
    for out in (dense, gathered):
        torch.testing.assert_close(out.float().cpu(), reference, **tolerance(dtype, atol=1e-5, rtol=1e-5,
                                                                             scale=scale))


def test_auto_kernel_gathers_large_sparse_masks_and_keeps_small_ones_dense():
    small = epipolar_masks()[16]  # 64 tokens
    large = epipolar_masks(frames=8, size=128, strides=(8,))[8]  # 2048 tokens, ~5% dense
    small_info = epi.prepare_masks({16: small}, frames=4, num_register_tokens=4)[16]
    large_info = epi.prepare_masks({8: large}, frames=8, num_register_tokens=4)[8]
    assert small_info["kernel"] == "dense"
    assert large_info["kernel"] == "gathered" and large_info["relative_cost"] < 1
    assert epi.pad_register_columns(large, 4) is large  # no 4+L copy for a mask that will be gathered
    assert epi.pad_register_columns(small, 4).shape[-1] == small.shape[-1] + 4


def test_flex_kernel_matches_dense_and_builds_its_block_mask_once(device, dtype, tolerance):
    if not epi.flex_available():
        pytest.fail(f"torch {torch.__version__} has no FlexAttention; requirements pin a torch that has")
    shared = epipolar_masks()[8].expand(2, -1, -1)  # two guidance branches of one camera path
    two = torch.stack([epipolar_masks(kind="orbit")[8][0], epipolar_masks(kind="zoom")[8][0]])  # two videos
    module = epipolar_module(device=device, dtype=dtype)
    for mask in (shared, two):
        epi.set_kernel("dense")
        dense = run_module(module, mask, batch=2)
        epi.set_kernel("flex")
        flex = run_module(module, mask, batch=2)
        scale = float(dense.abs().max())
        torch.testing.assert_close(flex.float(), dense.float(), **tolerance(dtype, atol=1e-5, rtol=1e-5,
                                                                           scale=scale))
    epi.set_kernel("auto")
    base = epipolar_masks()[8][0].to(device).clone()
    on_device = base.expand(2, -1, -1)
    first = epi.flex_block_mask(on_device, 4)
    assert epi.flex_block_mask(on_device, 4) is first  # cached on the mask: built once per camera path
    assert first.shape[-2:] == (base.shape[-2], base.shape[-1] + 4)
    base.logical_not_()  # an in-place change of the mask rebuilds it
    assert epi.flex_block_mask(on_device, 4) is not first
    with pytest.raises(ValueError, match="one of"):
        epi.set_kernel("sparse")


def test_auto_kernel_attends_densely_off_the_cpu_without_triton(monkeypatch):
    # The gathered kernel's cost model is a CPU's; on a GPU its per-block loop is launch-bound, so "auto" never
    # gathers there, and without Triton (no compiled FlexAttention) it keeps the mask dense, the bias built once per
    # camera path. Nothing is moved to the device to decide.
    monkeypatch.setattr(epi, "_has_triton", lambda: False)
    large = epipolar_masks(frames=8, size=128, strides=(8,))[8]
    assert epi.gathered_form(large, 8, 4, device="cpu") is not None
    assert epi.gathered_form(large, 8, 4, device="cuda") is None
    assert epi.prepare_masks({8: large}, frames=8, num_register_tokens=4, device="cuda")[8]["kernel"] == "dense"
    assert epi.pad_register_columns(large, 4, device="cuda").shape[-1] == large.shape[-1] + 4
    assert epi.compact_masks({8: large}, frames=8, num_register_tokens=4, device="cuda")[8] is large
    assert not epi.auto_gathers_on("cuda:0") and epi.auto_gathers_on(torch.device("cpu"))
    assert not epi.flex_compiles_on("cuda")


def test_auto_kernel_runs_large_masks_through_flex_on_cuda_with_triton(monkeypatch):
    monkeypatch.setattr(epi, "_has_triton", lambda: True)
    monkeypatch.setattr(epi, "_flex_failure", [])
    large = epipolar_masks(frames=8, size=128, strides=(8,))[8]  # 2048 tokens: MIN_SPARSE_TOKENS
    small = epipolar_masks()[16]  # 64 tokens: dense, not worth a compile per shape
    kernels = {device: [epi.prepare_masks({8: m}, frames=f, num_register_tokens=4, device=device)[8]["kernel"]
                        for m, f in ((large, 8), (small, 4))] for device in ("cuda", "cuda:1", "cpu", "mps")}
    assert kernels == {"cuda": ["flex", "dense"], "cuda:1": ["flex", "dense"], "cpu": ["gathered", "dense"],
                       "mps": ["dense", "dense"]}
    assert epi.compact_masks({8: large}, frames=8, num_register_tokens=4, device="cuda")[8] is large  # stays bool
    assert epi.prepare_masks({8: large}, frames=8, num_register_tokens=0, device="cuda")[8]["kernel"] == "dense"
    epi._flex_failure.append("an earlier compile failed")  # then "auto" stays dense for the rest of the process
    assert epi.prepare_masks({8: large}, frames=8, num_register_tokens=4, device="cuda")[8]["kernel"] == "dense"
    epi.set_kernel("dense")
    assert epi.prepare_masks({8: large}, frames=8, num_register_tokens=4, device="cuda")[8]["kernel"] == "dense"


def test_compiled_flex_matches_dense_and_a_failure_falls_back_under_auto(monkeypatch, device, dtype, tolerance):
    # The compiled path, on the suite's device (--device cuda on a GPU; a CPU compiles it too, with inductor's C++);
    # torch.compile of flex_attention under inference mode, as the sampler calls it. Then a call that torch.compile
    # refuses (its recompile limit reached, set to 1 here: one shape compiled) raises a clear error under "flex" and
    # falls back to dense under "auto", warning once.
    import torch._dynamo

    if not epi.flex_available():
        pytest.fail(f"torch {torch.__version__} has no FlexAttention; requirements pin a torch that has")
    torch._dynamo.reset()
    epi._compiled_flex.cache_clear()
    monkeypatch.setattr(epi, "flex_compiles_on", lambda on: True)  # what it says on CUDA with Triton
    monkeypatch.setattr(epi, "_flex_failure", [])
    monkeypatch.setattr(epi, "FLEX_RECOMPILE_LIMIT", 1)
    mask = epipolar_masks()[8].expand(2, -1, -1)
    module = epipolar_module(device=device, dtype=dtype)

    def run(kernel, batch=2):
        epi.set_kernel(kernel)
        with torch.inference_mode():
            return run_module(module, mask[:batch], batch=batch)

    dense = run("dense")
    flex = run("flex")  # compiled once, for batch 2
    torch.testing.assert_close(flex.float(), dense.float(), **tolerance(dtype, atol=1e-5, rtol=1e-5,
                                                                       scale=float(dense.abs().max())))
    dense_one = run("dense", batch=1)
    with pytest.raises(epi.FlexAttentionFailed, match="'auto' or 'dense'"):
        run("flex", batch=1)  # a second shape: over the limit of 1
    monkeypatch.setattr(epi, "auto_runs_flex", lambda tokens, on: not epi._flex_failure)  # "auto" where it compiles
    with pytest.warns(RuntimeWarning, match="runs densely from now on"):
        torch.testing.assert_close(run("auto", batch=1), dense_one, atol=0, rtol=0)  # dense, bit for bit
    assert len(epi._flex_failure) == 1 and "FailOnRecompileLimitHit" in epi.flex_failure()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: the next call is silently dense
        torch.testing.assert_close(run("auto"), dense, atol=0, rtol=0)
    torch._dynamo.reset()
    epi._compiled_flex.cache_clear()


def test_flex_attend_lets_out_of_memory_through(monkeypatch):
    # Out of memory is not a reason to fall back to dense, which needs more: the error reaches the caller as it is.
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(epi, "flex_compiles_on", lambda device: True)
    monkeypatch.setattr(epi, "_compiled_flex", lambda: out_of_memory)
    monkeypatch.setattr(epi, "_flex_failure", [])
    q = torch.randn(1, 2, 8, 4)
    with pytest.raises(torch.OutOfMemoryError):
        epi.flex_attend(q, q, q, block_mask=None, fallback=True)
    assert epi._flex_failure == [] and epi.flex_failure() is None


def test_layouts_are_built_once_per_mask_and_rebuilt_after_a_change():
    mask = epipolar_masks()[8].clone()
    first = cached_block_mask(mask, 4, 4)
    again = cached_block_mask(mask, 4, 4)
    branches = cached_block_mask(mask.expand(3, -1, -1), 4, 4)  # CameraCondition.repeat_batch of one video
    assert again.layouts[0] is first.layouts[0]
    assert len(branches.layouts) == 1 and branches.layouts[0] is first.layouts[0]
    assert branches.batch_map == [0, 0, 0]
    mask[0, 0, :] = True
    changed = cached_block_mask(mask, 4, 4)
    assert changed.layouts[0] is not first.layouts[0]
    assert torch.equal(changed.to_dense(), mask)


def test_distinct_masks_in_a_batch_get_their_own_layouts():
    a, b = epipolar_masks(kind="orbit")[8], epipolar_masks(kind="zoom")[8]
    mask = torch.cat([a, b, a.clone()])
    blocks = EpipolarBlockMask.from_dense(mask, frames=4)
    assert len(blocks.layouts) == 2 and blocks.batch_map == [0, 1, 0]
    q, k, v, rk, rv = random_qkv(3, mask.shape[-1], dtype=torch.float64)
    torch.testing.assert_close(gathered_attention(q, k, v, rk, rv, blocks), dense_reference(q, k, v, rk, rv, mask),
                               atol=1e-12, rtol=0)


def test_block_mask_follows_camera_condition_batch_operations():
    a, b = epipolar_masks(kind="orbit")[8], epipolar_masks(kind="zoom")[8]
    dense = torch.cat([a, b])
    epi.set_kernel("gathered")
    compact = epi.compact_masks({8: dense}, frames=4, num_register_tokens=4)
    assert isinstance(compact[8], EpipolarBlockMask)
    cond_dense = CameraCondition(epipolar_masks={8: dense}, origin_h=64)
    cond_compact = CameraCondition(epipolar_masks=compact, origin_h=64)
    for op in (lambda c: c.repeat_batch(3), lambda c: c.select(1), lambda c: c.select([1, 0]),
               lambda c: c.to("cpu"), lambda c: c.select(slice(0, 1)).repeat_batch(2)):
        expected, got = op(cond_dense).epipolar_masks[8], op(cond_compact).epipolar_masks[8]
        assert got.shape == tuple(expected.shape)
        assert torch.equal(got.to_dense(), expected)
    assert cond_compact.batch_size == 2


def test_unet_level_paths_agree_through_the_router(device, dtype, tolerance):
    """The mask a UNet block receives (lookup + pad) gives the same epipolar output in both kernels."""
    masks = {stride: m.to(device) for stride, m in epipolar_masks().items()}
    module = epipolar_module(device=device, dtype=dtype)
    outputs = {}
    for kernel in ("dense", "gathered"):
        epi.set_kernel(kernel)
        mask = epi.pad_register_columns(epi.lookup_mask(masks, 64, 8), 4)
        outputs[kernel] = run_module(module, mask, batch=1).float()
    scale = float(outputs["dense"].abs().max())
    torch.testing.assert_close(outputs["gathered"], outputs["dense"], **tolerance(dtype, atol=1e-5, rtol=1e-5,
                                                                                  scale=scale))


# -- errors ---------------------------------------------------------------------------------------------------------

def test_block_mask_for_another_size_is_refused():
    blocks = EpipolarBlockMask.from_dense(epipolar_masks()[8], frames=4)
    module = epipolar_module()
    with pytest.raises(ValueError, match="same image size"):
        run_module(module, blocks, batch=2)


def test_register_columns_must_be_all_true():
    dense = epipolar_masks()[8]
    padded = torch.cat([torch.ones(1, dense.shape[1], 4, dtype=torch.bool), dense], -1)
    padded[0, 3, 1] = False
    with pytest.raises(ValueError, match="register columns"):
        EpipolarBlockMask.from_dense(padded, frames=4, num_register_tokens=4)


def test_unknown_kernel_is_refused_with_choices():
    with pytest.raises(ValueError, match="gathered"):
        epi.set_kernel("sparse9000")


def test_layout_needs_whole_frames():
    with pytest.raises(ValueError, match="multiple of frames"):
        build_layout(torch.ones(10, 10, dtype=torch.bool), frames=3)


def test_module_without_registers_stays_dense():
    module = epipolar_module(registers=0)
    mask = epipolar_masks()[8]
    epi.set_kernel("gathered")
    gathered = run_module(module, mask, batch=1)
    epi.set_kernel("dense")
    dense = run_module(module, mask, batch=1)
    torch.testing.assert_close(gathered, dense, atol=0, rtol=0)


def test_training_through_a_block_mask_uses_the_dense_path_with_gradients():
    mask = epipolar_masks()[8]
    module = epipolar_module().train()
    blocks = EpipolarBlockMask.from_dense(mask, frames=4)
    x = torch.randn(64, 4, 32, generator=torch.Generator().manual_seed(2))
    grads = {}
    for name, m in (("dense", mask), ("blocks", blocks)):
        module.zero_grad()
        module(x, m, 1).square().sum().backward()
        grads[name] = module.epipolar_attn.to_q.weight.grad.clone()
    torch.testing.assert_close(grads["blocks"], grads["dense"], atol=1e-5, rtol=1e-5)


# -- the ablation switches (paper Table 3: reference frame only, 3-D full attention) on every kernel ---------------

def epipolar_module_with(switch: str | None, registers=4):
    """epipolar_module with one ablation switch of configs.EPIPOLAR_SWITCHES turned on (same weights)."""
    module = epipolar_module(registers=registers)
    if switch is None:
        return module
    switched = epi.EpipolarAttention(32, 2, origin_h=64, num_register_tokens=registers, **{switch: True}).eval()
    switched.load_state_dict(module.state_dict())  # the same keys: an ablation adds no parameter
    return switched


def original_formulation(module, x, batch, key_index, allowed):
    """The original's branch written out in float64: keys = [registers ; tokens at key_index], allowed [B, L, K].

    x [(B hw), T, C] -> [(B hw), T, C]. For only_on_cond_frame the original gathers the conditioning frame's tokens
    as the context (and their columns of the mask) rather than masking the others off."""
    a = module.epipolar_attn
    cells, frames = x.shape[0] // batch, x.shape[1]
    tokens = x.double().reshape(batch, cells, frames, -1).transpose(1, 2).reshape(batch, frames * cells, -1)
    context = torch.cat([a.register_tokens.double().expand(batch, -1, -1),
                         torch.stack([tokens[b, key_index[b]] for b in range(batch)])], dim=1)
    q, k, v = (F.linear(t, lin.weight.double()) for lin, t in ((a.to_q, tokens), (a.to_k, context),
                                                                (a.to_v, context)))
    heads = a.heads
    q, k, v = (t.reshape(batch, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    keep = torch.cat([torch.ones(batch, allowed.shape[1], a.num_register_tokens, dtype=torch.bool), allowed], -1)
    out = (scores.masked_fill(~keep[:, None], -math.inf).softmax(-1) @ v).transpose(1, 2).reshape(
        batch, frames * cells, -1)
    out = F.linear(out, a.to_out[0].weight.double(), a.to_out[0].bias.double())
    return out.reshape(batch, frames, cells, -1).transpose(1, 2).reshape(batch * cells, frames, -1)


@pytest.mark.parametrize("layout", ["split", "once", "merged"])
@pytest.mark.parametrize("kind", ["orbit", "zoom", "static"])
@pytest.mark.parametrize("cond", [0, 2])
def test_gathered_attention_on_reference_frame_masks(kind, cond, layout):
    # Whole query frames have no key in their own frame (all but the conditioning frame): the gathered layouts must
    # still give the dense softmax over registers + the reference frame's band.
    mask = camera_maths.keep_key_frame(epipolar_masks(kind=kind)[8], 4, torch.tensor([cond]))
    L = mask.shape[-1]
    q, k, v, rk, rv = random_qkv(1, L, dtype=torch.float64)
    blocks = EpipolarBlockMask.from_dense(mask, frames=4, group_size=8, kind=layout)
    assert torch.equal(blocks.to_dense(), mask)
    out = gathered_attention(q, k, v, rk, rv, blocks)
    torch.testing.assert_close(out, dense_reference(q, k, v, rk, rv, mask), atol=1e-12, rtol=0)


@pytest.mark.parametrize("kernel", ["dense", "gathered", "auto"])
@pytest.mark.parametrize("block_form", [False, True])
def test_reference_frame_module_equals_the_original_formulation(kernel, block_form, device, dtype, tolerance):
    batch, frames, cells = 2, 4, 64
    cond = torch.tensor([1, 3])
    full = torch.cat([epipolar_masks(kind="orbit")[8], epipolar_masks(kind="zoom")[8]])
    mask = camera_maths.keep_key_frame(full, frames, cond)
    module = epipolar_module_with("only_on_cond_frame")
    epi.set_kernel(kernel)
    given = EpipolarBlockMask.from_dense(mask, frames=frames) if block_form else mask
    x = torch.randn(batch * cells, frames, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        key_index = torch.stack([torch.arange(cells) + c * cells for c in cond.tolist()])  # [B, hw]
        allowed = torch.stack([full[b][:, key_index[b]] for b in range(batch)])  # CamI2V's columns of that frame
        expected = original_formulation(module, x, batch, key_index, allowed)  # float64 on the CPU
        got = module.to(device, dtype)(x.to(device, dtype), given.to(device), batch)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double().cpu(), expected, **tolerance(dtype, atol=1e-5, rtol=1e-5,
                                                                         scale=float(expected.abs().max())))


@pytest.mark.parametrize("kernel", ["dense", "gathered", "auto"])
@pytest.mark.parametrize("handed", ["none", "dense", "blocks"])
def test_full_attention_module_attends_everything_whatever_mask_it_gets(kernel, handed):
    # is_3d_full_attn: the effective mask is all True, so a CamI2V mask handed to the block changes nothing.
    batch, frames, cells = 1, 4, 64
    mask = epipolar_masks()[8]
    module = epipolar_module_with("is_3d_full_attn")
    epi.set_kernel(kernel)
    handed = {"none": None, "dense": mask, "blocks": EpipolarBlockMask.from_dense(mask, frames=frames)}[handed]
    x = torch.randn(batch * cells, frames, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = module(x, handed, batch)
        every = torch.arange(frames * cells)[None]
        expected = original_formulation(module, x, batch, every, torch.ones(batch, frames * cells, frames * cells,
                                                                            dtype=torch.bool))
        cami2v = epipolar_module()(x, mask, batch)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(cami2v, got, atol=1e-3)  # the mask does matter to CamI2V itself


def test_reference_frame_module_refuses_to_run_unmasked():
    module = epipolar_module_with("only_on_cond_frame")
    with pytest.raises(epi.EpipolarMaskError, match="only_on_cond_frame"):
        run_module(module, None, batch=1)
    assert isinstance(epi.EpipolarMaskError("x"), CamI2VError)


# -- the dense kernel's final form, built once per mask (issue 19) --------------------------------------------------

def test_dense_form_gives_the_same_numbers_as_padding_per_call():
    mask = epipolar_masks()[8]
    branches = mask.expand(2, -1, -1)  # two guidance branches of one video: views of one mask
    form = epi.dense_attention_mask(branches, 4, torch.float32)
    assert form.shape == (2, 256, 260) and form.dtype == torch.bool and form.stride(0) == 0
    assert torch.equal(form, torch.cat([torch.ones(2, 256, 4, dtype=torch.bool), branches], -1))
    assert epi.dense_attention_mask(branches, 4, torch.float32)._base is form._base  # cached: built once
    # an in-place change of the mask rebuilds it
    changed = mask.clone()
    before = epi.dense_attention_mask(changed, 4, torch.float32)
    changed[0, 0, :] = ~changed[0, 0, :]
    after = epi.dense_attention_mask(changed, 4, torch.float32)
    assert torch.equal(after[..., 4:], changed) and not torch.equal(before, after)
    # distinct videos in one batch each get theirs
    pair = torch.cat([epipolar_masks(kind="orbit")[8], epipolar_masks(kind="zoom")[8]])
    assert torch.equal(epi.dense_attention_mask(pair, 4, torch.float32)[..., 4:], pair)


def test_dense_bias_gives_the_same_attention_as_the_bool_mask():
    mask = epipolar_masks()[8][0]
    bias = epi._final_dense_form(mask, 4, torch.float32)  # the form off the CPU, built here by hand
    assert bias.shape == (256, 260) and bias.stride(0) % epi.BIAS_ALIGN == 0
    padded = epi._final_dense_form(mask, 4, None)
    assert torch.equal(bias == 0, padded) and bool(torch.isneginf(bias[~padded]).all())
    attn = epipolar_module().epipolar_attn
    x = torch.randn(2, 256, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(attn(x, bias.expand(2, -1, -1)), attn(x, mask.expand(2, -1, -1)),
                                   atol=1e-6, rtol=1e-6)


# -- no host syncs: the step loop's kernels run on the meta device, where reading any value raises ----------------

@pytest.mark.parametrize("layout", ["split", "once", "merged"])
def test_gathered_attention_reads_no_value_off_the_cpu(layout):
    """Off the CPU the gathered kernel never asks the device for a value (bool(), .item(), .tolist() would wait
    for the device every layer): on meta tensors, which have none, it runs through."""
    mask = epipolar_masks()[8]
    blocks = EpipolarBlockMask.from_dense(mask, frames=4, group_size=8, kind=layout).to("meta")
    qkv = [t.to("meta") for t in random_qkv(2, mask.shape[-1])]
    out = gathered_attention(*qkv, blocks.repeat_batch(2))
    assert out.device.type == "meta" and out.shape == qkv[0].shape


@pytest.mark.parametrize("kernel", ["dense", "gathered"])
def test_epipolar_block_reads_no_value_off_the_cpu(kernel):
    epi.set_kernel(kernel)
    compact = epi.compact_masks({8: epipolar_masks()[8]}, frames=4, num_register_tokens=4)[8]
    assert isinstance(compact, EpipolarBlockMask if kernel == "gathered" else torch.Tensor)
    module = epipolar_module().to("meta")
    x = torch.randn(2 * 64, 4, 32, device="meta")
    with torch.no_grad():
        out = module(x, compact.to("meta").expand(2, -1, -1), 2)
    assert out.device.type == "meta" and out.shape == x.shape
