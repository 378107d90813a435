"""Pipeline tests: preprocessing of spec §6.1, latent helpers, and the full golden replay through the tiny models
(every x_t and the final latent of every run in sampling/sampling_runs.json), seeds, branch economy, decoding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from cami2v_core.pipeline import (LATENT_RGB_FACTORS, Draws, PipelineError, check_w2c, decode_latent, describe_fit,
                                  fit_latent_rgb, from_comfy_latent, generate, image_to_uint8,
                                  intrinsics_from_normalized, latent_preview, prepare_image, sample_latent,
                                  target_size, to_comfy_latent)
from tests.golden import (GOLDEN_DIR, config_path, golden_state_dict, index_names, load_json, load_tensors, require,
                          sampling_runs_storing, variant_of)
from tests.synthetic_photo import make_photo

SAMPLING_RUNS = "sampling/sampling_runs.json"

# -- preprocessing (spec §6.1) ------------------------------------------------------------------------------------


@pytest.mark.parametrize("run", sampling_runs_storing("input.image_u8"))
def test_image_at_model_size_is_the_originals_batch_exactly(run):
    """Golden README §7: the batch image is (u/255 - 0.5)·2 of the picture at model size; K = demo default."""
    rec = load_tensors(f"sampling/{run}.safetensors")
    height, width = rec["input.image_u8"].shape[:2]
    prepared = prepare_image(rec["input.image_u8"].numpy(), height, width)
    assert torch.equal(prepared.pixels, rec["cond.embedder_in_cond_image"])
    assert torch.equal(prepared.K, rec["input.K"][0, 0])
    assert prepared.resized_hw == (height, width)


def test_float_and_pil_inputs_match_uint8():
    from PIL import Image

    u8 = make_photo(40, 60, seed=1)
    ref = prepare_image(u8, 32, 32).pixels
    assert torch.equal(prepare_image(torch.from_numpy(u8).float() / 255, 32, 32).pixels, ref)
    assert torch.equal(prepare_image(torch.from_numpy(u8)[None].float() / 255, 32, 32).pixels, ref)
    assert torch.equal(prepare_image(Image.fromarray(u8), 32, 32).pixels, ref)
    rgba = np.concatenate([u8, np.full(u8.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    assert torch.equal(prepare_image(rgba, 32, 32).pixels, ref)


def test_wide_picture_is_resized_to_cover_then_centre_cropped():
    # 256 x 384 picture for a 256 x 256 model: already covers at height 256, so no resize, crop columns 64..319.
    u8 = make_photo(256, 384, seed=2)
    prepared = prepare_image(u8, 256, 256)
    assert prepared.resized_hw == (256, 384)
    want = (torch.from_numpy(u8[:, 64:320]).permute(2, 0, 1)[None] / 255 - 0.5) * 2
    assert torch.equal(prepared.pixels, want)
    # fx = fy = half the long side of the resized picture, principal point at the crop centre.
    assert prepared.K.tolist() == [[192.0, 0.0, 128.0], [0.0, 192.0, 128.0], [0.0, 0.0, 1.0]]


def test_tall_picture_downscale_matches_antialiased_bilinear():
    u8 = make_photo(300, 200, seed=3)  # portrait, for a square 64 model: width 200 -> 64, height int(300*64/200)=96
    prepared = prepare_image(u8, 64, 64)
    assert prepared.resized_hw == (96, 64)
    ref = F.interpolate(torch.from_numpy(u8).permute(2, 0, 1)[None].float(), size=(96, 64), mode="bilinear",
                        antialias=True, align_corners=False)
    ref = ((ref.round().clamp(0, 255)[:, :, 16:80] / 255) - 0.5) * 2
    # The uint8 kernel rounds differently from float-then-round by at most one grey level.
    assert float((prepared.pixels - ref).abs().max()) <= 2 / 255 + 1e-6
    assert prepared.K[0, 0].item() == 48.0 and prepared.K[0, 2].item() == 32.0


def test_constant_picture_stays_constant_through_resize():
    u8 = np.full((123, 457, 3), (10, 128, 250), np.uint8)
    prepared = prepare_image(u8, 64, 64)
    want = (torch.tensor([10, 128, 250]) / 255 - 0.5) * 2
    torch.testing.assert_close(prepared.pixels[0].permute(1, 2, 0), want.expand(64, 64, 3))


def test_portrait_swaps_the_target_of_a_landscape_model():
    assert target_size((512, 320), (320, 512)) == (512, 320)
    assert target_size((320, 512), (320, 512)) == (320, 512)
    assert target_size((400, 300), (256, 256)) == (256, 256)


def test_normalised_intrinsics_follow_the_dataset_scaling():
    prepared = prepare_image(make_photo(256, 384, seed=4), 256, 256)
    K = intrinsics_from_normalized([[0.5, 0.75, 0.5, 0.5]] * 3, prepared)
    assert K.shape == (3, 3, 3)
    assert K[0].tolist() == [[0.5 * 384, 0.0, 128.0], [0.0, 0.75 * 256, 128.0], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize("bad,match", [
    (np.zeros((4, 5, 6, 3), np.uint8), r"\[H,W,C\]"),
    (np.zeros((8, 8, 2), np.uint8), r"\[H,W,C\]"),
    ("picture.png", "PIL image"),
    (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
])
def test_bad_images_are_explained(bad, match):
    with pytest.raises(PipelineError, match=match):
        image_to_uint8(bad)


def test_trajectory_checks():
    eye = np.tile(np.eye(4), (8, 1, 1))
    assert check_w2c(eye, 8).shape == (1, 8, 4, 4)
    assert torch.equal(check_w2c(eye[:, :3], 8), check_w2c(eye, 8))
    with pytest.raises(PipelineError, match="has 5 poses but the model makes 8 frames"):
        check_w2c(eye[:5], 8)
    with pytest.raises(PipelineError, match=r"\[T,4,4\]"):
        check_w2c(np.zeros((8, 4)), 8)
    bad = eye.copy()
    bad[3, :3, :3] = 0
    with pytest.raises(PipelineError, match="singular"):
        check_w2c(bad, 8)


# -- latent helpers --------------------------------------------------------------------------------------------------

def test_comfy_latent_round_trip_puts_frame_index_fastest():
    latent = torch.arange(2 * 4 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 4, 3, 2, 2)
    samples = to_comfy_latent(latent)["samples"]
    assert samples.shape == (6, 4, 2, 2)
    assert torch.equal(samples[1], latent[0, :, 1])  # row b*T + t
    assert torch.equal(samples[3], latent[1, :, 0])
    assert torch.equal(from_comfy_latent({"samples": samples}, 3), latent)
    with pytest.raises(PipelineError, match="LATENT"):
        from_comfy_latent({"samples": samples[:5]}, 3)


def test_latent_preview_is_the_sd_projection():
    latent = torch.zeros(1, 4, 2, 3, 3)
    latent[:, 0] = 1.0
    preview = latent_preview(latent)
    assert preview.shape == (2, 3, 3, 3)
    torch.testing.assert_close(preview[0, 0, 0], (torch.tensor([0.3512, 0.2297, 0.3227]) + 1) / 2)


def test_fitted_preview_shows_the_bundled_vaes_pictures_in_their_own_colours():
    """The SD factors are meaningless for the bundled tiny VAE; a projection fitted on one picture and its latent
    previews other pictures' latents far closer to the pictures themselves."""
    from cami2v_core import load_model
    from cami2v_core.bundled import bundled_model_path

    model = load_model(bundled_model_path())  # committed with the package

    def encoded(seed):
        pixels = prepare_image(make_photo(64, 64, seed=seed), *model.config.resolution).pixels
        with torch.no_grad():
            z = model.encode_first_stage(pixels, generator=torch.Generator().manual_seed(seed))
        return z, (pixels + 1) / 2

    def psnr(preview, rgb):
        target = F.adaptive_avg_pool2d(rgb, preview.shape[1:3])[0].permute(1, 2, 0)
        return float(-10 * torch.log10(((preview[0] - target) ** 2).mean()))

    projection = fit_latent_rgb(*encoded(0))
    assert projection.shape == (model.config.channels + 1, 3)
    for seed in (1, 2, 3):  # held out from the fit
        z, rgb = encoded(seed)
        fitted, default = psnr(latent_preview(z, projection), rgb), psnr(latent_preview(z), rgb)
        assert fitted > 18 and fitted > default + 10, (seed, fitted, default)


def test_fit_falls_back_to_the_prior_where_the_picture_says_nothing():
    latent = torch.zeros(1, 4, 4, 4)
    latent[:, 0] = torch.linspace(-1, 1, 16).view(4, 4)  # only channel 0 varies
    rgb = torch.full((1, 3, 32, 32), 0.5)
    projection = fit_latent_rgb(latent, rgb)
    sd = torch.tensor(LATENT_RGB_FACTORS) / 2
    torch.testing.assert_close(projection[1:4], sd[1:4])  # channels the picture never moves keep the KL-f8 prior
    assert projection[0].abs().max() < sd[0].abs().max()  # channel 0 explains nothing of a flat grey: shrunk


# -- the whole path through the tiny models ----------------------------------------------------------------------


def _runs():
    return index_names(SAMPLING_RUNS)


_MODELS: dict = {}


def _tiny_model(variant: str):
    """The golden tiny model of a variant, built from its YAML and loaded strictly (cached per test session)."""
    if variant not in _MODELS:
        from cami2v_core.model import load_model

        _MODELS[variant] = load_model(golden_state_dict(variant), config=config_path(variant), dtype="fp32")
    return _MODELS[variant]


def _caption() -> str:
    """The fixture caption (with the demo suffix): the first prompt of the encoder fixture (golden README §9)."""
    with safe_open(str(require(GOLDEN_DIR / "encoders" / "encoders.safetensors")), "pt") as f:
        return json.loads(f.metadata()["prompts"])[0]


def _inputs_for(run: str, rec: dict) -> dict:
    """The run's own inputs, or those of the run whose conditioning it shares (README §7 'Other runs')."""
    if "input.image_u8" in rec:
        return rec
    for other in _runs():
        other_rec = load_tensors(f"sampling/{other}.safetensors")
        if "input.image_u8" in other_rec and "cond.posterior_noise" in other_rec:
            return other_rec
    pytest.fail(f"no run of {SAMPLING_RUNS} stores the inputs that {run} shares")


def _replay(run: str, batch_branches: bool = True, calls: list | None = None):
    index = load_json(SAMPLING_RUNS)
    settings = index[run]["settings"]
    rec = load_tensors(f"sampling/{run}.safetensors")
    inputs = _inputs_for(run, rec)
    model = _tiny_model(variant_of(run))
    steps = settings["ddim_steps"]
    draws = Draws(posterior_noise=inputs["cond.posterior_noise"],
                  pair_t=inputs["camera.pair_t_after_perturbation"] if model.config.epipolar is not None else None,
                  x_T=rec["x_T"], step_noise=[rec[f"step{i}.ddim_noise_raw"] for i in range(steps)])
    seen = []
    if calls is not None:
        original = model.apply_model

        def counting(x_t, t, context, c_concat, fs, camera=None):
            calls.append((x_t.shape[0], camera is None, context))
            return original(x_t, t, context, c_concat, fs, camera=camera)

        model.apply_model = counting
    try:
        final = sample_latent(
            model, inputs["input.image_u8"].numpy(), inputs["input.w2c"][0].numpy(), None, _caption(),
            settings["negative_prompt"], steps=steps, cfg_text=settings["unconditional_guidance_scale"],
            cfg_camera=settings["camera_cfg"], camera_schedule=settings["camera_cfg_scheduler"],
            guidance_rescale=settings["guidance_rescale"], eta=settings["ddim_eta"],
            spacing=settings["timestep_spacing"], frame_stride=int(inputs["input.frame_stride"][0]),
            cond_frame_index=settings["cond_frame_index"][0], trace_scale=settings["trace_scale_factor"],
            callback=seen.append, draws=draws, batch_branches=batch_branches)
    finally:
        if calls is not None:
            del model.apply_model
    return rec, inputs, seen, final


def _close(actual, expected, rel=1e-4):
    """Golden README §11: sampling latents within 1e-4 · max|ref| per tensor."""
    atol = rel * float(expected.abs().max()) + 1e-7
    err = float((actual.float() - expected).abs().max())
    assert err <= atol, f"max abs error {err:.3g} > {atol:.3g}"


@pytest.mark.parametrize("run", _runs())
def test_golden_run_is_reproduced_step_by_step(run):
    """Every x_t, pred_x0, x_prev and the final latent of every golden sampling run, through the whole pipeline."""
    rec, _, seen, final = _replay(run)
    steps = load_json(SAMPLING_RUNS)[run]["settings"]["ddim_steps"]
    assert [info.i for info in seen] == list(range(steps))
    for info in seen:
        i = info.i
        assert info.t == int(rec[f"step{i}.t"][0])
        _close(info.x_t, rec[f"step{i}.x_t"])
        _close(info.outputs["cond"], rec[f"step{i}.e_cond"])
        _close(info.pred_x0, rec[f"step{i}.pred_x0"])
        _close(info.x_prev, rec[f"step{i}.x_prev"])
    _close(final, rec["final_latent"])


def test_golden_conditioning_and_call_order_unbatched():
    """Branch by branch (no batching): the contexts, c_concat and the UNet call order of the original."""
    index = load_json(SAMPLING_RUNS)
    # The first run that stores its own conditioning and makes all three kinds of call.
    candidates = [r for r in _runs() if "nocam" in index[r]["apply_model_call_order"]
                  and "cond.c_crossattn" in load_tensors(f"sampling/{r}.safetensors")]
    if not candidates:
        pytest.fail(f"no run of {SAMPLING_RUNS} stores its conditioning and uses camera guidance")
    run = candidates[0]
    calls: list = []
    rec, inputs, seen, final = _replay(run, batch_branches=False, calls=calls)
    cond_ctx, uncond_ctx = inputs["cond.c_crossattn"], inputs["uncond.c_crossattn"]
    names = []
    for batch, no_camera, context in calls:
        assert batch == 1
        if no_camera:
            names.append("nocam")
            _close(context, cond_ctx, 1e-5)
        elif torch.allclose(context, cond_ctx, atol=1e-5, rtol=0):
            names.append("cond")
        else:
            _close(context, uncond_ctx, 1e-5)
            names.append("uncond")
    assert names == index[run]["apply_model_call_order"]
    _close(final, rec["final_latent"])


def _orbit_w2c(frames: int) -> np.ndarray:
    """A small orbit: yaw up to 20° about a point 2 units ahead (w2c, OpenCV axes)."""
    w2c = []
    for a in np.radians(np.linspace(0, 20, frames)):
        c2w = np.eye(4)
        c2w[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
        c2w[:3, 3] = [-2 * np.sin(a), 0, 2 - 2 * np.cos(a)]
        w2c.append(np.linalg.inv(c2w))
    return np.stack(w2c)


def _count_calls(model, **kwargs):
    """(UNet calls as (batch, without camera) per call, latent) of one sample_latent run on a photo-like picture."""
    calls = []
    original = model.apply_model

    def counting(x_t, t, context, c_concat, fs, camera=None):
        calls.append((x_t.shape[0], camera is None))
        return original(x_t, t, context, c_concat, fs, camera=camera)

    model.apply_model = counting
    try:
        latent = sample_latent(model, make_photo(90, 120, seed=11), _orbit_w2c(model.config.temporal_length), None,
                               "a valley", "blurry",
                               steps=2, seed=3, **kwargs)
    finally:
        del model.apply_model
    return calls, latent


@pytest.mark.parametrize("kwargs,per_step", [
    (dict(cfg_text=1.0), [(1, False)]),
    (dict(cfg_text=5.0), [(2, False)]),
    (dict(cfg_text=5.0, cfg_image=2.0), [(3, False)]),
    (dict(cfg_text=5.0, cfg_image=1.0), [(2, False)]),
    (dict(cfg_text=5.0, cfg_camera=2.0), [(2, False), (1, True)]),
    (dict(cfg_text=5.0, cfg_camera=2.0, batch_branches=False), [(1, False), (1, False), (1, True)]),
])
def test_each_branch_costs_exactly_its_unet_pass(kwargs, per_step):
    calls, _ = _count_calls(_tiny_model("cami2v"), **kwargs)
    assert calls == per_step * 2


def test_equal_scales_are_the_single_scale_run_and_batching_changes_nothing():
    model = _tiny_model("cami2v")
    _, joint = _count_calls(model, cfg_text=4.0)
    _, same = _count_calls(model, cfg_text=4.0, cfg_image=4.0)
    assert torch.equal(joint, same)
    _, unbatched = _count_calls(model, cfg_text=4.0, batch_branches=False)
    _close(unbatched, joint, 1e-5)


def test_seed_repeats_and_offload_keeps_the_result():
    model = _tiny_model("cami2v")
    w2c = _orbit_w2c(model.config.temporal_length)
    a = generate(model, make_photo(90, 120, seed=12), w2c, "a valley", steps=2, seed=21)
    b = generate(model, make_photo(90, 120, seed=12), w2c, "a valley", steps=2, seed=21, offload=True)
    c = generate(model, make_photo(90, 120, seed=12), w2c, "a valley", steps=2, seed=22)
    assert a.shape == (model.config.temporal_length, *model.config.resolution, 3) and a.dtype == torch.float32
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_frame_index_and_pose_count_are_refused():
    model = _tiny_model("cami2v")
    frames = model.config.temporal_length
    with pytest.raises(PipelineError, match="frame index"):
        sample_latent(model, make_photo(64, 64), _orbit_w2c(frames), steps=1, cond_frame_index=frames)
    with pytest.raises(PipelineError, match=f"has {frames - 3} poses"):
        sample_latent(model, make_photo(64, 64), _orbit_w2c(frames - 3), steps=1)


def test_decode_in_chunks_matches_the_golden_vae():
    """decode_latent = (VAE decode clamped to [-1,1] + 1)/2, whatever the chunk size (golden README §8)."""
    model = _tiny_model("cami2v")
    rec = load_tensors("vae/vae_tiny.safetensors")
    latent, ref = rec["decode_input_latent_scaled"], rec["decode_output"]
    if latent.ndim == 5:
        ref = ref.permute(0, 2, 1, 3, 4).flatten(0, 1)  # b c t h w -> (b t) c h w
    want = ((ref.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)
    for chunk in (1, 3, 64):
        got = decode_latent(model, latent, chunk_size=chunk)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_v_model_path_uses_zero_snr_dynamic_rescale_and_fps():
    """A tiny model set up like the 512 models (v, zero terminal SNR, dynamic rescale, fps): the pipeline feeds the
    sampler the model's schedule and scale table, and the fps condition floor(29.97 / stride) (spec §7.1, §7.5)."""
    from cami2v_core.configs import PRESETS
    from cami2v_core.model import build_model
    from cami2v_core.pipeline import frame_condition

    config = PRESETS["tiny"].replace(parameterization="v", rescale_betas_zero_snr=True, use_dynamic_rescale=True,
                                     base_scale=0.7, fps_condition_type="fps")
    torch.manual_seed(0)
    model = build_model(config, dtype="fp32")
    assert frame_condition(model, 6) == 4 and frame_condition(model, 2) == 14
    assert float(model.alphas_cumprod[-1]) == 0.0
    seen = []
    sample_latent(model, make_photo(64, 64, seed=13), _orbit_w2c(config.temporal_length), steps=2, cfg_text=1.0, seed=1,
                  frame_stride=6,
                  callback=seen.append)
    # Step 0 is t = 999 where √ᾱ = 0: x0 = -v, moved from scale s(999) to the next step's s(499).
    assert [info.t for info in seen] == [999, 499]
    table = model.scale_arr
    torch.testing.assert_close(seen[0].pred_x0, -seen[0].outputs["cond"] * float(table[499] / table[999]))


def test_fit_pad_keeps_the_whole_picture_and_stretch_fills_the_frame():
    u8 = np.zeros((20, 200, 3), np.uint8)  # a 10:1 strip: left half red, right half blue
    u8[:, :100, 0] = 255
    u8[:, 100:, 2] = 255
    crop = prepare_image(u8, 64, 64, fit="crop").pixels
    pad = prepare_image(u8, 64, 64, fit="pad").pixels
    stretch = prepare_image(u8, 64, 64, fit="stretch").pixels
    assert crop.shape == pad.shape == stretch.shape == (1, 3, 64, 64)
    red, blue = (crop[0, 0] > 0).float().mean(), (crop[0, 2] > 0).float().mean()
    assert abs(red - 0.5) < 0.05 and abs(blue - 0.5) < 0.05  # the crop's middle slice
    # pad: both halves survive left to right on every row (edge pixels repeated above and below)
    assert (pad[0, 0, :, :30] > 0.9).all() and (pad[0, 2, :, -30:] > 0.9).all()
    assert (stretch[0, 0, :, :30] > 0.9).all() and (stretch[0, 2, :, -30:] > 0.9).all()
    # the picture fills only a strip of the padded frame; the rest repeats its top and bottom rows
    assert torch.equal(pad[0, :, 0], pad[0, :, 31]) and torch.equal(pad[0, :, 63], pad[0, :, 33])
    with pytest.raises(PipelineError, match="fit must be one of crop, pad, stretch"):
        prepare_image(u8, 64, 64, fit="zoom")


def test_describe_fit_says_what_was_done_to_an_odd_shaped_picture():
    note = describe_fit((100, 1000), (256, 256), "crop")
    assert "1000x100" in note and "centre-cropped" in note and "90%" in note and "'pad'" in note
    assert "filled" in describe_fit((100, 1000), (256, 256), "pad")
    assert "10.00x" in describe_fit((100, 1000), (256, 256), "stretch")
    assert describe_fit((256, 256), (256, 256), "crop") is None
    assert describe_fit((330, 512), (320, 512), "crop") is None  # a few percent is not worth a word
