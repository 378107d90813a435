"""Camera structures are built once per trajectory and reused by every layer, step and guidance branch (issue 8).

Counted through a real sampling run of the golden tiny CamI2V model: the epipolar masks, the gathered layouts of
those masks and the pose features are each made once per video, while the UNet calls that use them number
steps x layers x branches.
"""

from __future__ import annotations

import pytest
import torch

from cami2v_core import camera as camera_maths
from cami2v_core.modules import epipolar as epi
from cami2v_core.modules import epipolar_sparse
from cami2v_core.modules.epipolar_sparse import EpipolarBlockMask
from cami2v_core.pipeline import encode_conditioning, sample_latent
from tests.synthetic_photo import make_photo
from tests.test_pipeline import _orbit_w2c, _tiny_model


@pytest.fixture(autouse=True)
def _auto_kernel():
    yield
    epi.set_kernel("auto")


class Counter:
    """Wraps a function and counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@pytest.fixture
def counted(monkeypatch):
    """Counters on the mask builder, the layout builder, the gathered attention (both layouts) and the pose
    encoder."""
    model = _tiny_model("cami2v")
    counters = {"masks": Counter(camera_maths.epipolar_structures),
                "layouts": Counter(epipolar_sparse.build_layout),
                "merged": Counter(epipolar_sparse._layout_attention),
                "once": Counter(epipolar_sparse._once_attention),
                "split": Counter(epipolar_sparse._split_attention),
                "pose": Counter(model.pose_encoder.forward)}
    monkeypatch.setattr(camera_maths, "epipolar_structures", counters["masks"])
    monkeypatch.setattr(epipolar_sparse, "build_layout", counters["layouts"])
    monkeypatch.setattr(epipolar_sparse, "_layout_attention", counters["merged"])
    monkeypatch.setattr(epipolar_sparse, "_once_attention", counters["once"])
    monkeypatch.setattr(epipolar_sparse, "_split_attention", counters["split"])
    monkeypatch.setattr(model.pose_encoder, "forward", counters["pose"])
    return model, counters


def _path(model):
    """A small orbit with one pose per frame of the model."""
    return _orbit_w2c(model.config.temporal_length)


def _latent_shape(model) -> tuple[int, ...]:
    """[1, C, T, h, w] of one video of the model (the golden tiny config's latent)."""
    return (1, model.config.channels, model.config.temporal_length, *model.config.image_size)


@pytest.mark.parametrize("batch_branches", [True, False])
def test_structures_are_built_once_per_video(counted, batch_branches):
    model, counters = counted
    epi.set_kernel("gathered")  # the tiny model's masks are small: "auto" would keep them dense
    steps = 3
    sample_latent(model, make_photo(64, 64, seed=1), _path(model), None, "a valley", "blurry", steps=steps, seed=5,
                  cfg_text=5.0, cfg_camera=2.0, batch_branches=batch_branches)
    levels = len(model.config.epipolar["attention_resolution"])
    assert counters["masks"].calls == 1
    assert counters["pose"].calls == 1
    assert counters["layouts"].calls == levels  # one layout per mask stride, for one trajectory
    # every epipolar block of every camera branch call of every step used one of those layouts
    blocks = sum(1 for m in model.modules() if isinstance(m, epi.EpipolarAttention))
    # cond and uncond carry the camera (the epipolar branch takes one video of a batch at a time); nocam has none
    kernels = counters["once"].calls + counters["split"].calls + counters["merged"].calls
    assert kernels == blocks * steps * 2


def test_condition_holds_the_gathered_form_only(counted):
    """The camera condition of a video keeps no dense mask that the kernel gathers (268 MB at the 256 model's
    32x32 level); layouts are built while encoding, before the first UNet call."""
    model, counters = counted
    epi.set_kernel("gathered")
    cond = encode_conditioning(model, make_photo(64, 64, seed=1), _path(model), prompt="a valley")
    masks = cond.camera.epipolar_masks
    assert masks and all(isinstance(m, EpipolarBlockMask) for m in masks.values())
    assert counters["layouts"].calls == len(masks)


def test_auto_keeps_small_masks_dense_in_the_condition(counted):
    model, counters = counted
    cond = encode_conditioning(model, make_photo(64, 64, seed=1), _path(model), prompt="a valley")
    assert all(torch.is_tensor(m) and m.dtype == torch.bool for m in cond.camera.epipolar_masks.values())
    assert counters["layouts"].calls == 0


@pytest.mark.parametrize("device", ["cpu", "meta"])  # meta: the off-CPU path (additive bias), without a GPU
def test_dense_masks_are_padded_and_biased_once_per_video(counted, monkeypatch, device):
    """The dense kernel's mask (register columns padded; off the CPU an additive bias) is made once per camera path
    and dtype, then handed to every block of every step and branch as a view, not rebuilt per UNet call."""
    from cami2v_core.pipeline import make_denoiser

    model, _ = counted
    epi.set_kernel("dense")
    cond = encode_conditioning(model, make_photo(64, 64, seed=1), _path(model), prompt="a valley")
    builds = Counter(epi._final_dense_form)
    monkeypatch.setattr(epi, "_final_dense_form", builds)
    forms = []
    calls = Counter(epi.dense_attention_mask)

    def dense_attention_mask(*args, **kwargs):
        out = calls(*args, **kwargs)
        forms.append(out)
        return out

    monkeypatch.setattr(epi, "dense_attention_mask", dense_attention_mask)
    if device == "meta":
        import copy

        model = copy.deepcopy(model).to("meta")
        cond = cond.__class__(**{**cond.__dict__, "context": {k: v.to("meta") for k, v in cond.context.items()},
                                 "c_concat": cond.c_concat.to("meta"), "fs": cond.fs.to("meta"),
                                 "camera": cond.camera.to("meta")})
    denoise = make_denoiser(model, cond)
    x = torch.randn(_latent_shape(model)).to(device)
    with torch.no_grad():
        for step in range(3):  # three steps, the two guidance branches batched
            denoise(x, torch.tensor([900 - 300 * step], device=device), ("cond", "uncond"))
    levels = len(cond.camera.epipolar_masks)
    blocks = sum(1 for m in model.modules() if isinstance(m, epi.EpipolarAttention))
    assert calls.calls == 3 * blocks  # every block of every step asked for the mask ...
    assert builds.calls == levels  # ... which was built once per level (one video: one form per level)
    assert len({id(f._base) for f in forms}) == levels  # and handed out as views of those
    assert all(f.shape[0] == 2 and f.stride(0) == 0 for f in forms)  # the two branches share one video's form
    if device == "meta":  # off the CPU: an additive bias in the UNet's dtype, rows aligned for SDPA's kernels
        assert all(f.dtype == torch.float32 and f.stride(1) % epi.BIAS_ALIGN == 0 for f in forms)
    else:  # on the CPU: the padded bool mask, as ever
        assert all(f.dtype == torch.bool and bool(f[..., :4].all()) for f in forms)


@pytest.mark.parametrize("kernel", ["dense", "gathered"])
def test_step_loop_reads_no_value_off_the_cpu(kernel):
    """The denoising loop (UNet with its camera condition, guidance, DDIM update) never asks the device for a value:
    on CUDA each such read (.item(), bool(), .tolist(), .nonzero()) waits for every queued kernel. On the meta
    device, whose tensors have no values, any read raises, so running the loop there proves there is none."""
    import copy

    from cami2v_core.pipeline import make_denoiser
    from cami2v_core.sampling import Guidance, make_ddim_schedule, sample_ddim

    epi.set_kernel(kernel)
    model = _tiny_model("cami2v")
    cond = encode_conditioning(model, make_photo(64, 64, seed=1), _path(model), prompt="a valley",
                               branches=("cond", "uncond", "nocam"))
    schedule = make_ddim_schedule(model.alphas_cumprod, 2, eta=1.0)
    meta = copy.deepcopy(model).to("meta")
    cond = cond.__class__(**{**cond.__dict__, "context": {k: v.to("meta") for k, v in cond.context.items()},
                             "c_concat": cond.c_concat.to("meta"), "fs": cond.fs.to("meta"),
                             "camera": cond.camera.to("meta")})
    kinds = {type(m) for m in cond.camera.epipolar_masks.values()}
    assert kinds == {EpipolarBlockMask if kernel == "gathered" else torch.Tensor}
    x_T = torch.randn(_latent_shape(model)).to("meta")
    with torch.no_grad():
        guidance = Guidance(cfg_text=5.0, cfg_camera=2.0, rescale=0.7)
        out = sample_ddim(make_denoiser(meta, cond), x_T, schedule, guidance,
                          generator=torch.Generator().manual_seed(0))
    assert out.device.type == "meta" and out.shape == x_T.shape
