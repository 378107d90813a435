"""Native ComfyUI sampling (nodes/nodes_native.py): the coordinates, the conditioning node, and parity with the
reference CamI2V Sampler inside a real ComfyUI.

The first tests need no ComfyUI: Euler in the native (s, y) coordinates is replayed against `sampling.sample_ddim`
(eta 0) on a stand-in network, and the conditioning node is checked against `pipeline.encode_conditioning`. The rest
are opt-in (COMFYUI_DIR, like tests/test_comfyui_e2e.py): tests/comfyui_native_run.py runs in ComfyUI's Python
(COMFYUI_PYTHON) and samples the bundled model both ways from the same starting noise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import trajectories as tj
from cami2v_core import pipeline
from cami2v_core.bundled import bundled_model_path
from cami2v_core.sampling import (Guidance, dynamic_rescale_table, make_ddim_schedule, sample_ddim,
                                  schedule_alphas_cumprod)
from nodes import NODE_CLASS_MAPPINGS as NODES
from nodes.nodes_native import SamplingCoordinates, denoise, next_sigmas
from nodes.registry import NodeError

REPO = Path(__file__).resolve().parents[1]
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")


def euler_in_native_coordinates(coords: SamplingCoordinates, net, x_T, timesteps):
    """ComfyUI's `ddim` sampler (Euler) over the table sigmas of `timesteps` (descending) then 0, written out."""
    sigmas = torch.cat([coords.sigmas[timesteps], torch.zeros(1)])
    y = coords.noise_scaling(sigmas[:1], x_T, torch.zeros_like(x_T), max_denoise=True)
    for i in range(len(timesteps)):
        s = sigmas[i:i + 1]
        t = coords.timestep(s)
        x = (y.double() * coords.input_scale(t)).float()  # what the UNet sees
        d = (y - denoise(coords, s, net(x, t), y, sigmas)) / s
        y = y + d * (sigmas[i + 1] - s)
    return y  # s = 0: y is the latent itself


@pytest.mark.parametrize("prediction,zero_snr,rescale", [("eps", False, False), ("eps", False, True),
                                                         ("v", False, False), ("v", True, False), ("v", True, True)])
@pytest.mark.parametrize("steps", [4, 25])
def test_euler_in_the_native_coordinates_is_the_reference_ddim(prediction, zero_snr, rescale, steps):
    abar = schedule_alphas_cumprod(zero_terminal_snr=zero_snr)
    scale_arr = dynamic_rescale_table(0.7, 400) if rescale else None
    schedule = make_ddim_schedule(abar, steps, eta=0.0, scale_arr=scale_arr)
    g = torch.Generator().manual_seed(steps)
    weights = torch.randn(4, 4, generator=g) * 0.3

    def net(x, t):  # a smooth, timestep-dependent stand-in for the UNet
        return torch.tanh(torch.einsum("bcthw,cd->bdthw", x, weights) + t.float().reshape(-1, 1, 1, 1, 1) / 1000)

    x_T = torch.randn(1, 4, 3, 5, 5, generator=g)
    reference = sample_ddim(lambda x, t, branches: {"cond": net(x, t)}, x_T, schedule, Guidance(cfg_text=1.0),
                            prediction=prediction)
    coords = SamplingCoordinates(abar, prediction, scale_arr)
    native = euler_in_native_coordinates(coords, net, x_T, schedule.timesteps.flip(0))
    scale = float(reference.abs().max())
    assert float((native - reference).abs().max()) <= 2e-6 * scale
    if rescale:  # the rescale matters at these settings, so the check above would catch it missing
        plain = euler_in_native_coordinates(SamplingCoordinates(abar, prediction), net, x_T,
                                            schedule.timesteps.flip(0))
        assert float((plain - reference).abs().max()) > 1e-3 * scale


def test_native_sigmas_run_from_ddims_end_to_pure_noise():
    for zero_snr in (False, True):
        abar = schedule_alphas_cumprod(zero_terminal_snr=zero_snr)
        coords = SamplingCoordinates(abar, "v")
        s = coords.sigmas
        assert bool((s[1:] > s[:-1]).all()) and 0 < s[0] < s[1]  # positive, so every scheduler can use it
        assert torch.equal(coords.timestep(s), torch.arange(len(s)))
        assert coords.s[0] == 0 and abs(float(coords.input_scale(torch.tensor([0]))) - 1) < 1e-12
        if zero_snr:
            assert s[-1] == 1 and abs(float(coords.input_scale(torch.tensor([999]))) - 1) < 1e-12
        # y = x / gamma is (1 - s)·P0 + s·eps with P0 = √ᾱ0·x0 + √(1-ᾱ0)·eps: check at random (x0, eps).
        t = torch.tensor([1, 400, 999])
        a = abar.double()[t]
        x0, eps = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
        y = (a.sqrt() * x0 + (1 - a).sqrt() * eps) / coords.input_scale(t)
        p0 = coords.d * x0 + coords.c * eps
        assert torch.allclose(y, (1 - coords.s[t]) * p0 + coords.s[t] * eps, atol=1e-12)


def test_next_sigma_is_read_from_the_samplers_list():
    schedule = torch.tensor([1.0, 0.5, 0.25, 0.0])
    assert next_sigmas(torch.tensor([1.0, 0.25]), schedule).tolist() == [0.5, 0.0]
    assert next_sigmas(torch.tensor([0.4]), schedule).tolist() == [0.25]  # an in-between evaluation
    assert next_sigmas(torch.tensor([0.4]), None) is None


@pytest.fixture(scope="module")
def bundled():
    assert bundled_model_path() is not None, "the bundled tiny model is missing: it is committed with the package"
    return NODES["CamI2VModelLoader"]().load(f"{bundled_model_path().name} (bundled)", "fp32")[0]


def picture_and_camera(frames):
    from tests.synthetic_photo import make_photo

    image = torch.from_numpy(make_photo(64, 64, seed=3)).float()[None] / 255
    return image, tj.to_cameractrl_poses(tj.orbit("left", 30.0, 3.0, frames))


def test_conditioning_node_encodes_like_the_reference_sampler(bundled):
    net = bundled.model
    frames = net.config.temporal_length
    image, camera = picture_and_camera(frames)
    out = NODES["CamI2VImageToVideo"]().encode(bundled, image, "a room", "blurry", 7, 2, 1.0, 0, camera=camera)
    positive, negative, latent, report = out["result"]
    w2c = tj.from_cameractrl_poses(camera).w2c
    cond = pipeline.encode_conditioning(net, image[0], w2c, None, "a room", "blurry", 2, 0, 1.0,
                                        ("cond", "uncond"), pipeline.make_generator(7))
    (pos_context, pos), (neg_context, neg) = positive[0], negative[0]
    assert torch.equal(pos_context, cond.context["cond"]) and torch.equal(neg_context, cond.context["uncond"])
    assert torch.equal(pos["cami2v_concat"], cond.c_concat) and torch.equal(pos["cami2v_fs"], cond.fs)
    # The image-only branch: the negative text with the picture's tokens.
    assert torch.equal(pos["cami2v_image_context"][:, :77], cond.context["uncond"][:, :77])
    assert torch.equal(pos["cami2v_image_context"][:, 77:], cond.context["cond"][:, 77:])
    # One camera condition, built once and shared by both branches (so ComfyUI batches them).
    assert pos["cami2v_camera"] is neg["cami2v_camera"] and neg["cami2v_concat"] is pos["cami2v_concat"]
    masks = pos["cami2v_camera"].epipolar_masks
    assert masks and masks.keys() == cond.camera.epipolar_masks.keys()
    h, w = cond.c_concat.shape[-2:]
    assert latent["samples"].shape == (frames, 4, h, w) and not latent["samples"].any()
    assert latent["cami2v_scaled"] is False and latent["cami2v_frames"] == frames
    assert "frames" in report


def test_decode_takes_comfyuis_latent_units(bundled):
    net = bundled.model
    frames = net.config.temporal_length
    scaled = torch.randn(frames, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    decode = NODES["CamI2VDecode"]()
    ours = decode.decode(bundled, {"samples": scaled}, 4)[0]
    comfys = decode.decode(bundled, {"samples": scaled / net.scale_factor, "cami2v_scaled": False}, 4)[0]
    assert torch.allclose(ours, comfys, atol=1e-5)


def test_native_model_and_guider_say_they_need_comfyui(bundled):
    if importlib.util.find_spec("comfy") is not None:
        pytest.skip("ComfyUI is importable here")
    with pytest.raises(NodeError, match="^CamI2V To ComfyUI Model: native sampling needs ComfyUI"):
        NODES["CamI2VToComfyModel"]().convert(bundled, 0.7)
    with pytest.raises(NodeError, match="^CamI2V Guider: native sampling needs ComfyUI"):
        NODES["CamI2VGuider"]().get_guider(None, [], [], 5.5, 5.5, 1.0, "constant", 0.7)


# -- opt-in: a real ComfyUI -----------------------------------------------------------------------------------------

# The Done-when cases (tests/comfyui_native_run.py CASES): KSampler with the defaults, the guider with separate
# scales, and the same maths on an eps and a dynamic-rescale schedule; round-off measured on the first.
PARITY_CASES = ("ksampler", "guider_separate_scales", "eps_ksampler", "dynamic_rescale_guider")
ROUNDOFF_CASES = PARITY_CASES[:2]
needs_comfyui = pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run")


@pytest.fixture(scope="module")
def parity():
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    run = subprocess.run([python, str(REPO / "tests" / "comfyui_native_run.py"), COMFYUI_DIR,
                          "--roundoff=" + ",".join(ROUNDOFF_CASES), "schedules", *PARITY_CASES],
                         capture_output=True, text=True, timeout=3600)
    assert run.returncode == 0, run.stderr[-4000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    for name in PARITY_CASES:
        r = results[name]
        moved = f", the reference moved by one ulp of x_T: {r['roundoff']:.2e}" if "roundoff" in r else ""
        print(f"{name}: max |native - reference| {r['max_abs_diff']:.2e} (latent up to "
              f"{r['max_abs_reference']:.2f}{moved}), {r['seconds']} s")
    return results


def within_roundoff(r, relative: float) -> bool:
    """No further from the reference than a few times its own spread after a one-ulp nudge of x_T (measured for
    this case, else `relative` times the latent's size: that spread as measured on the first cases)."""
    tolerance = 4 * r["roundoff"] if "roundoff" in r else 4 * relative * r["max_abs_reference"]
    return r["max_abs_diff"] <= max(tolerance, 1e-6 * r["max_abs_reference"])


@pytest.mark.comfyui
@needs_comfyui
@pytest.mark.parametrize("name", PARITY_CASES)
def test_comfyui_sampling_reproduces_the_reference_sampler(parity, name):
    r = parity[name]
    assert r["max_abs_reference"] > 0.1  # a real latent, not a blank one
    relative = max(parity[c]["roundoff"] / parity[c]["max_abs_reference"] for c in ROUNDOFF_CASES)
    assert within_roundoff(r, relative), r


@pytest.mark.comfyui
@needs_comfyui
@pytest.mark.parametrize("name", PARITY_CASES)
def test_branches_sharing_the_camera_go_through_the_unet_together(parity, name):
    """As in the reference: cond, uncond and image in one UNet batch per step; the no-camera branch on its own."""
    r = parity[name]
    settings = {"cfg_text": 5.5, "cfg_image": 5.5, "cfg_camera": 1.0, "steps": 10, **r["settings"]}
    branches = Guidance(settings["cfg_text"], settings["cfg_image"], settings["cfg_camera"]).branches()
    shared = len([b for b in branches if b != "nocam"])
    calls_per_step = 1 + ("nocam" in branches)
    assert r["unet_calls"] == settings["steps"] * calls_per_step, r
    assert r["videos_per_call"] == sorted({shared, 1} if "nocam" in branches else {shared}), r


@pytest.mark.comfyui
@needs_comfyui
def test_simple_scheduler_visits_the_reference_grid_when_steps_divide_1000(parity):
    simple = parity["schedules"]["simple"]
    divisors = [n for n in range(1, 101) if 1000 % n == 0]
    assert simple["same_steps"] == divisors, simple
    uniform = parity["schedules"]["ddim_uniform"]
    assert 25 in uniform["same_steps"], uniform  # ddim_uniform is the reference's 'uniform' spacing instead

