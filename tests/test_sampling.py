"""Sampler tests: schedules against the original's reference values, the golden per-step DDIM records replayed
without a UNet, guidance algebra, parameterisations and branch economy."""

from __future__ import annotations

import math

import pytest
import torch

from cami2v_core.sampling import (Guidance, SamplingError, StepInfo, camera_guidance_weight, combine_guidance,
                                  ddim_coefficients, ddim_step, ddim_timesteps, dynamic_rescale_table,
                                  eps_prediction, make_ddim_schedule, rescale_guidance, sample_ddim,
                                  schedule_alphas_cumprod, v_prediction)
from tests.golden import REFERENCE_DIR, golden_state_dict, index_names, load_json, load_tensors, variant_of

SAMPLING_RUNS = "sampling/sampling_runs.json"


def _reference_schedules():
    return load_json("fixtures/cami2v_reference_values.json", base=REFERENCE_DIR)["schedules"]


def _runs():
    return index_names(SAMPLING_RUNS)


def _settings(run):
    return load_json(SAMPLING_RUNS)[run]["settings"]


def _alphas_cumprod(run) -> torch.Tensor:
    """The schedule buffer of the model that made the run (its variant: the run is named `<variant>_...`)."""
    return golden_state_dict(variant_of(run))["alphas_cumprod"]


def _guidance(settings):
    return Guidance(cfg_text=settings["unconditional_guidance_scale"], cfg_camera=settings["camera_cfg"],
                    camera_schedule=settings["camera_cfg_scheduler"], rescale=settings["guidance_rescale"])


def _close(actual, expected, rel=1e-4):
    """Golden README §11: sampling latents within 1e-4 · max|ref| per tensor."""
    atol = rel * float(expected.abs().max()) + 1e-7
    err = float((actual - expected).abs().max())
    assert err <= atol, f"max abs error {err:.3g} > {atol:.3g}"


# -- schedules ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,zero_snr", [("linear_0.00085_0.012", False), ("linear_0.00085_0.012_zero_snr", True)])
def test_schedule_matches_original_reference_values(name, zero_snr):
    ref = _reference_schedules()[name]
    abar = schedule_alphas_cumprod(zero_terminal_snr=zero_snr)
    assert abar.dtype == torch.float32 and abar.shape == (1000,)
    for idx, value in ref["alphas_cumprod_float32_at"].items():
        assert abar[int(idx)].item() == pytest.approx(value, rel=1e-6, abs=1e-12), idx
    for steps in (25, 50):
        r = ref[f"ddim{steps}"]
        sched = make_ddim_schedule(abar, steps, eta=1.0)
        assert sched.timesteps.tolist() == r["timesteps_ascending"]
        assert sched.alphas.tolist() == pytest.approx(r["a_t"], rel=1e-6)
        assert sched.alphas_prev.tolist() == pytest.approx(r["a_prev"], rel=1e-6)
        assert sched.sigmas.tolist() == pytest.approx(r["sigma_eta1"], rel=1e-5)


def test_zero_terminal_snr_ends_at_zero_and_keeps_first():
    plain = schedule_alphas_cumprod()
    zsnr = schedule_alphas_cumprod(zero_terminal_snr=True)
    assert zsnr[-1].item() == 0.0
    assert zsnr[0].item() == pytest.approx(plain[0].item(), rel=1e-7)
    assert bool((zsnr[1:] < zsnr[:-1]).all())


def test_dynamic_rescale_table_matches_reference():
    ref = _reference_schedules()["dynamic_rescale_scale_arr_512"]
    table = dynamic_rescale_table(0.7, 400, 1000)
    assert table.numel() == ref["len"]
    for idx, value in ref["values_at"].items():
        assert table[int(idx)].item() == pytest.approx(value, rel=1e-6), idx


def test_timestep_spacings():
    # Spec §7.2 examples, and the two other discretisations of the original worked by hand.
    assert ddim_timesteps("uniform_trailing", 4).tolist() == [249, 499, 749, 999]
    assert ddim_timesteps("uniform_trailing", 25).tolist() == list(range(39, 1000, 40))
    assert ddim_timesteps("uniform", 4).tolist() == [1, 251, 501, 751]
    assert ddim_timesteps("quad", 3).tolist() == [1, int(800 / 4) + 1, 800 + 1]
    assert ddim_timesteps("uniform_trailing", 1).tolist() == [999]


@pytest.mark.parametrize("kwargs,match", [
    (dict(spacing="uniform_trailing", steps=0), "steps must be an integer"),
    (dict(spacing="uniform_trailing", steps=1001), "steps must be an integer"),
    (dict(spacing="linspace", steps=10), "uniform_trailing"),
    (dict(spacing="uniform", steps=3), "outside"),
])
def test_timestep_errors_are_explained(kwargs, match):
    with pytest.raises(SamplingError, match=match):
        ddim_timesteps(**kwargs)


def test_lowest_step_uses_alpha_zero_and_dynamic_scales():
    abar = schedule_alphas_cumprod(zero_terminal_snr=True)
    table = dynamic_rescale_table(0.7, 400, 1000)
    sched = make_ddim_schedule(abar, 5, eta=0.0, scale_arr=table)
    assert sched.alphas_prev[0].item() == pytest.approx(abar[0].item(), rel=1e-7)
    assert sched.alphas_prev[1:].tolist() == pytest.approx(sched.alphas[:-1].tolist(), rel=1e-7)
    assert sched.sigmas.abs().max().item() == 0.0
    assert sched.scales.tolist() == pytest.approx(table[sched.timesteps].tolist())
    assert sched.scales_prev[0].item() == sched.scales[0].item()
    assert sched.scales_prev[1:].tolist() == sched.scales[:-1].tolist()
    with pytest.raises(SamplingError, match="eta"):
        ddim_coefficients(abar, sched.timesteps, eta=-1.0)


# -- golden per-step records, no UNet ---------------------------------------------------------------------------

@pytest.mark.parametrize("run", _runs())
def test_golden_schedule_and_coefficients(run):
    rec = load_tensors(f"sampling/{run}.safetensors")
    settings = _settings(run)
    sched = make_ddim_schedule(_alphas_cumprod(run), settings["ddim_steps"], settings["ddim_eta"],
                               settings["timestep_spacing"])
    assert torch.equal(sched.timesteps, rec["schedule.ddim_timesteps"])
    assert torch.equal(sched.alphas, rec["schedule.ddim_alphas"])
    assert torch.equal(sched.sqrt_one_minus_alphas, rec["schedule.ddim_sqrt_one_minus_alphas"])
    assert torch.equal(sched.alphas_prev, rec["schedule.ddim_alphas_prev"])
    assert torch.equal(sched.sigmas, rec["schedule.ddim_sigmas"])
    for i in range(settings["ddim_steps"]):
        k = int(rec[f"step{i}.index"])
        assert k == settings["ddim_steps"] - 1 - i
        assert int(rec[f"step{i}.t"][0]) == int(sched.timesteps[k])
        assert float(sched.alphas[k]) == float(rec[f"step{i}.coef_a_t"][0])
        assert float(torch.tensor(float(sched.alphas_prev[k]))) == float(rec[f"step{i}.coef_a_prev"][0])
        assert float(torch.tensor(float(sched.sigmas[k]))) == float(rec[f"step{i}.coef_sigma_t"][0])


@pytest.mark.parametrize("run", _runs())
def test_golden_x_T_is_the_indexed_seeds_draw(run):
    """x_T is randn of its shape from a torch.Generator seeded with the index's x_T_seed (README §7)."""
    rec = load_tensors(f"sampling/{run}.safetensors")
    seed = load_json(SAMPLING_RUNS)[run]["x_T_seed"]
    assert torch.equal(torch.randn(rec["x_T"].shape, generator=torch.Generator().manual_seed(seed)), rec["x_T"])


@pytest.mark.parametrize("run", _runs())
def test_golden_guidance_rescale_and_ddim_step(run):
    """Each recorded step: stored branch outputs -> e_cfg_before_rescale -> e_final -> pred_x0 -> x_prev."""
    rec = load_tensors(f"sampling/{run}.safetensors")
    settings = _settings(run)
    guidance = _guidance(settings)
    sched = make_ddim_schedule(_alphas_cumprod(run), settings["ddim_steps"], settings["ddim_eta"],
                               settings["timestep_spacing"])
    for i in range(settings["ddim_steps"]):
        s = lambda name: rec[f"step{i}.{name}"]  # noqa: E731
        k = int(s("index"))
        outputs = {"cond": s("e_cond"), "uncond": s("e_uncond")}
        if f"step{i}.e_nocam" in rec:
            outputs["nocam"] = s("e_nocam")
        e = combine_guidance(outputs, guidance, s("t"))
        _close(e, s("e_cfg_before_rescale"), 1e-6)
        e = rescale_guidance(e, outputs["cond"], guidance.rescale)
        _close(e, s("e_final"), 1e-6)
        eps, x0 = eps_prediction(s("e_final"), s("x_t"), sched, k)
        _close(x0, s("pred_x0"), 1e-6)
        _close(ddim_step(x0, eps, sched, k, s("ddim_noise_raw")), s("x_prev"), 1e-6)


@pytest.mark.parametrize("run", _runs())
def test_golden_full_loop_replays_every_x_t(run):
    """sample_ddim with the recorded branch outputs and noises reproduces every x_t and the final latent."""
    rec = load_tensors(f"sampling/{run}.safetensors")
    settings = _settings(run)
    order = load_json(SAMPLING_RUNS)[run]["apply_model_call_order"]
    sched = make_ddim_schedule(_alphas_cumprod(run), settings["ddim_steps"], settings["ddim_eta"],
                               settings["timestep_spacing"])
    names = {"cond": "e_cond", "uncond": "e_uncond", "nocam": "e_nocam"}
    calls, seen = [], []

    def denoise(x, t, branches):
        i = len(seen)
        _close(x, rec[f"step{i}.x_t"])
        assert int(t[0]) == int(rec[f"step{i}.t"][0])
        calls.extend(branches)
        return {b: rec[f"step{i}.{names[b]}"] for b in branches}

    def noise(i, x):
        return rec[f"step{i}.ddim_noise_raw"]

    final = sample_ddim(denoise, rec["x_T"], sched, _guidance(settings), noise_fn=noise,
                        callback=lambda info: seen.append(info))
    assert calls == order
    assert [info.i for info in seen] == list(range(settings["ddim_steps"]))
    for info in seen:
        _close(info.pred_x0, rec[f"step{info.i}.pred_x0"])
        _close(info.x_prev, rec[f"step{info.i}.x_prev"])
    _close(final, rec["final_latent"])


# -- guidance algebra and branch economy -------------------------------------------------------------------------

def _outputs(seed=0, shape=(2, 4, 3, 5, 5)):
    g = torch.Generator().manual_seed(seed)
    return {b: torch.randn(shape, generator=g) for b in ("cond", "uncond", "image", "nocam")}


@pytest.mark.parametrize("scale", [1.0, 3.0, 7.5])
def test_equal_text_and_image_scales_are_the_single_scale_formula(scale):
    out = _outputs()
    e_c, e_u, e_img = out["cond"], out["uncond"], out["image"]
    single = e_c if scale == 1 else e_u + scale * (e_c - e_u)
    # Bit-identical to the original's one-scale update, whether the image scale is implied or given.
    assert torch.equal(combine_guidance(out, Guidance(cfg_text=scale, cfg_camera=1.0)), single)
    assert torch.equal(combine_guidance(out, Guidance(cfg_text=scale, cfg_image=scale, cfg_camera=1.0)), single)
    # And the separate-scale formula e_u + s_img(e_img - e_u) + s_txt(e_c - e_img) reduces to it algebraically.
    separate = e_u + scale * (e_img - e_u) + scale * (e_c - e_img)
    torch.testing.assert_close(separate, single, rtol=1e-5, atol=1e-5)


def test_separate_scales_use_the_image_branch():
    out = _outputs(1)
    e_c, e_u, e_img = out["cond"], out["uncond"], out["image"]
    torch.testing.assert_close(combine_guidance(out, Guidance(cfg_text=7.0, cfg_image=2.0, cfg_camera=1.0)),
                               e_u + 2.0 * (e_img - e_u) + 7.0 * (e_c - e_img))
    # Image scale 1: e_u drops out.
    torch.testing.assert_close(combine_guidance({"cond": e_c, "image": e_img},
                                                Guidance(cfg_text=4.0, cfg_image=1.0, cfg_camera=1.0)),
                               e_u + (e_img - e_u) + 4.0 * (e_c - e_img), rtol=1e-5, atol=1e-5)


def test_camera_guidance_constant_and_cosine():
    out = _outputs(2)
    e_c, e_u, e_nc = out["cond"], out["uncond"], out["nocam"]
    t = torch.tensor([999, 0])
    got = combine_guidance(out, Guidance(cfg_text=5.0, cfg_camera=3.0), t)
    torch.testing.assert_close(got, e_u + 5.0 * (e_c - e_u) + 2.0 * (e_c - e_nc))
    got = combine_guidance(out, Guidance(cfg_text=5.0, cfg_camera=3.0, camera_schedule="cosine"), t)
    # w(999) = cos(0) = 1 for sample 0, w(0) = cos(π/2) = 0 for sample 1.
    base = e_u + 5.0 * (e_c - e_u)
    torch.testing.assert_close(got[0], base[0] + 2.0 * (e_c - e_nc)[0])
    torch.testing.assert_close(got[1], base[1], atol=1e-6, rtol=0)
    w = camera_guidance_weight(torch.tensor([499]), "cosine")
    assert float(w.flatten()[0]) == pytest.approx(math.cos((1 - 499 / 999) * math.pi / 2), rel=1e-6)


def test_rescale_matches_std_ratio_definition():
    out = _outputs(3)
    e, e_c = 3.0 * out["uncond"] + 1.0, out["cond"]
    got = rescale_guidance(e, e_c, 0.7)
    for b in range(e.shape[0]):
        ratio = e_c[b].double().std() / e[b].double().std()
        want = 0.7 * e[b].double() * ratio + 0.3 * e[b].double()
        torch.testing.assert_close(got[b].double(), want, rtol=1e-5, atol=1e-5)
    assert torch.equal(rescale_guidance(e, e_c, 0.0), e)


@pytest.mark.parametrize("kwargs,expected", [
    (dict(cfg_text=1.0, cfg_camera=1.0), ("cond",)),
    (dict(cfg_text=7.5, cfg_camera=1.0), ("cond", "uncond")),
    (dict(cfg_text=7.5, cfg_image=7.5, cfg_camera=1.0), ("cond", "uncond")),
    (dict(cfg_text=7.5, cfg_image=3.0, cfg_camera=1.0), ("cond", "image", "uncond")),
    (dict(cfg_text=7.5, cfg_image=1.0, cfg_camera=1.0), ("cond", "image")),
    (dict(cfg_text=1.0, cfg_image=3.0, cfg_camera=1.0), ("cond", "image", "uncond")),
    (dict(cfg_text=7.5, cfg_camera=2.0), ("cond", "uncond", "nocam")),
    (dict(cfg_text=1.0, cfg_camera=2.0), ("cond", "nocam")),
])
def test_disabled_branches_cost_no_denoiser_call(kwargs, expected):
    guidance = Guidance(**kwargs)
    calls = []

    def denoise(x, t, branches):
        calls.append(tuple(branches))
        return {b: x * 0.1 + i for i, b in enumerate(branches)}

    x_T = torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    sched = make_ddim_schedule(schedule_alphas_cumprod(), 3, eta=1.0)
    sample_ddim(denoise, x_T, sched, guidance, generator=torch.Generator().manual_seed(1))
    assert calls == [expected] * 3
    # Without a camera, the no-camera branch is never asked for.
    calls.clear()
    if guidance.cfg_camera == 1:
        sample_ddim(denoise, x_T, sched, guidance, generator=torch.Generator().manual_seed(1), camera=False)
        assert calls == [expected] * 3


def test_camera_guidance_without_nocam_output_is_explained():
    out = _outputs()
    del out["nocam"]
    with pytest.raises(SamplingError, match="cfg_camera"):
        combine_guidance(out, Guidance(cfg_text=2.0, cfg_camera=2.0), torch.tensor([10, 10]))


@pytest.mark.parametrize("kwargs", [dict(camera_schedule="linear"), dict(rescale=1.5), dict(cfg_text=float("nan"))])
def test_bad_guidance_settings_are_refused(kwargs):
    with pytest.raises(SamplingError):
        Guidance(**kwargs)


# -- parameterisations ------------------------------------------------------------------------------------------

def test_v_prediction_recovers_eps_and_x0():
    abar = schedule_alphas_cumprod(zero_terminal_snr=True)
    sched = make_ddim_schedule(abar, 10, eta=0.0)
    g = torch.Generator().manual_seed(5)
    x0, eps = torch.randn(2, 4, 3, 4, 4, generator=g), torch.randn(2, 4, 3, 4, 4, generator=g)
    for k in range(len(sched)):
        a = float(abar[sched.timesteps[k]].double())
        x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
        v = math.sqrt(a) * eps - math.sqrt(1 - a) * x0  # independent definition (Salimans & Ho 2022)
        got_eps, got_x0 = v_prediction(v, x_t, sched, k)
        torch.testing.assert_close(got_eps, eps, atol=1e-5, rtol=0)
        torch.testing.assert_close(got_x0, x0, atol=1e-5, rtol=0)
    # Zero terminal SNR: at t = 999 the latent is pure noise and x0 = -v.
    assert int(sched.timesteps[-1]) == 999 and float(sched.sqrt_alphas_cumprod[-1]) == 0.0


def test_eps_prediction_inverts_forward_process():
    abar = schedule_alphas_cumprod()
    sched = make_ddim_schedule(abar, 4, eta=0.0)
    g = torch.Generator().manual_seed(6)
    x0, eps = torch.randn(1, 4, 2, 4, 4, generator=g), torch.randn(1, 4, 2, 4, 4, generator=g)
    for k in range(len(sched)):
        a = float(sched.alphas[k])
        x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
        _, got_x0 = eps_prediction(eps, x_t, sched, k)
        torch.testing.assert_close(got_x0, x0, atol=1e-4, rtol=0)


def test_v_model_loop_applies_dynamic_rescale():
    """Two v steps with a constant v: x0 = (√ᾱ·x - √(1-ᾱ)·v)·s_prev/s, then the DDIM update."""
    abar = schedule_alphas_cumprod(zero_terminal_snr=True)
    table = dynamic_rescale_table(0.7, 400, 1000)
    sched = make_ddim_schedule(abar, 2, eta=0.0, scale_arr=table)   # grid [499, 999]
    x_T = torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(7))
    v = torch.full_like(x_T, 0.25)
    seen = []
    sample_ddim(lambda x, t, br: {b: v for b in br}, x_T, sched, Guidance(cfg_text=1.0), prediction="v",
                callback=seen.append, noise_fn=lambda i, x: torch.zeros_like(x))
    # First step at t = 999 (√ᾱ = 0): x0 = -v · s(499)/s(999) = -0.25 · 0.7/0.7.
    torch.testing.assert_close(seen[0].pred_x0, -v * float(table[499] / table[999]))
    a1 = float(abar[499].double())
    x1 = seen[0].x_prev
    want_x0 = (math.sqrt(a1) * x1 - math.sqrt(1 - a1) * v) * float(table[499] / table[499])
    torch.testing.assert_close(seen[1].pred_x0, want_x0, atol=1e-6, rtol=1e-5)


def test_seeded_sampling_is_repeatable_and_callback_can_cancel():
    sched = make_ddim_schedule(schedule_alphas_cumprod(), 3, eta=1.0)
    x_T = torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(0))

    def denoise(x, t, branches):
        return {b: 0.5 * x for b in branches}

    a = sample_ddim(denoise, x_T, sched, Guidance(cfg_text=2.0), generator=torch.Generator().manual_seed(9))
    b = sample_ddim(denoise, x_T, sched, Guidance(cfg_text=2.0), generator=torch.Generator().manual_seed(9))
    c = sample_ddim(denoise, x_T, sched, Guidance(cfg_text=2.0), generator=torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c)

    class Stop(Exception):
        pass

    def cancel(info: StepInfo):
        if info.i == 1:
            raise Stop

    with pytest.raises(Stop):
        sample_ddim(denoise, x_T, sched, Guidance(cfg_text=2.0), callback=cancel)


def test_guidance_rescale_leaves_a_constant_prediction_alone():
    """A freshly initialised UNet predicts exactly zero (its output conv starts at zero): rescaling must not turn
    that into NaN, and any prediction with spread is rescaled exactly as before."""
    from cami2v_core.sampling import rescale_guidance

    zero = torch.zeros(2, 4, 3, 5, 5)
    assert torch.equal(rescale_guidance(zero, zero, 0.7), zero)
    g = torch.Generator().manual_seed(0)
    e, e_cond = torch.randn(2, 4, 3, 5, 5, generator=g), torch.randn(2, 4, 3, 5, 5, generator=g)
    dims = [1, 2, 3, 4]
    expected = 0.7 * (e * (e_cond.std(dim=dims, keepdim=True) / e.std(dim=dims, keepdim=True))) + 0.3 * e
    assert torch.equal(rescale_guidance(e, e_cond, 0.7), expected)
