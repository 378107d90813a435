"""Fewer-step ODE solvers (DPM-Solver++(2M), UniPC) against problems whose exact answer is known, and DDIM unchanged.

The analytic problem: data x0 ~ N(mu, diag(s²)). Its ideal denoiser is closed form at every noise level, and the
probability-flow ODE keeps z = (x_t - α_t·mu) / sqrt(α_t²s² + σ_t²) constant, so the exact sample at the solvers'
final level is known for any x_T. Guidance mixes branches whose means differ; with weights summing to one the mix
is the ideal denoiser of the mixed mean, so the guided ODE has a closed form too.
"""

from __future__ import annotations

import math

import pytest
import torch

from cami2v_core.sampling import (Guidance, SamplingError, StepInfo, combine_guidance, ddim_step,
                                  dynamic_rescale_table, eps_prediction, make_ddim_schedule, rescale_guidance,
                                  sample_ddim, sample_dpmpp_2m, sample_unipc, schedule_alphas_cumprod,
                                  solver_levels, v_prediction)

SHAPE = (1, 4, 2, 4, 4)
SOLVERS = {"dpmpp_2m": sample_dpmpp_2m, "unipc": sample_unipc}


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    s = 0.5 + torch.rand(SHAPE, generator=g, dtype=torch.float64)
    x_T = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    return mu, s, x_T


def _ideal_output(x, t, mu, s, abar, prediction, scale_arr=None):
    """The exact model output (eps or v) for data N(mu, s²) under ᾱ [N] and, optionally, dynamic rescale."""
    a_bar = abar.double()[t[0]]
    scale = 1.0 if scale_arr is None else scale_arr.double()[t[0]]
    alpha, sigma = a_bar.sqrt() * scale, (1 - a_bar).sqrt()   # the process x_t = α·x0 + σ·eps (spec §7.5)
    x0 = mu + alpha * s ** 2 * (x - alpha * mu) / (alpha ** 2 * s ** 2 + sigma ** 2)
    eps = (x - alpha * x0) / sigma
    if prediction == "eps":
        return eps
    return a_bar.sqrt() * eps - sigma * (scale * x0)   # v of the model's own parameterisation


def _denoiser(mus, s, abar, prediction, scale_arr=None, calls=None):
    """denoise_fn whose branch b is the ideal model for data N(mus[b], s²)."""
    def denoise(x, t, branches):
        if calls is not None:
            calls.append(tuple(branches))
        return {b: _ideal_output(x, t, mus[b], s, abar, prediction, scale_arr) for b in branches}
    return denoise


def _exact(x_T, mu, s, schedule):
    """The ODE's exact sample at the last level, from x_T at the first (α, σ from the schedule, see solver_levels)."""
    abar = schedule.alphas.double()
    a0_bar, a1_bar = abar[-1], schedule.alphas_prev[0].double()
    s0 = 1.0 if schedule.scales is None else schedule.scales.double()[-1]
    s1 = 1.0 if schedule.scales is None else schedule.scales_prev.double()[0]
    a0, sig0 = a0_bar.sqrt() * s0, (1 - a0_bar).sqrt()
    a1, sig1 = a1_bar.sqrt() * s1, (1 - a1_bar).sqrt()
    z = (x_T - a0 * mu) / (a0 ** 2 * s ** 2 + sig0 ** 2).sqrt()
    return a1 * mu + (a1 ** 2 * s ** 2 + sig1 ** 2).sqrt() * z


def _run(name, denoise, x_T, schedule, guidance, prediction, callback=None):
    if name == "ddim":
        return sample_ddim(denoise, x_T, schedule, guidance, prediction, callback=callback,
                           noise_fn=lambda i, x: torch.zeros_like(x))
    return SOLVERS[name](denoise, x_T, schedule, guidance, prediction, callback=callback)


def _rms(a, b):
    return float((a - b).pow(2).mean().sqrt())


def _errors(name, abar, prediction, steps, scale_arr=None, guidance=Guidance(cfg_text=1.0), mus=None, mu_exact=None):
    mu, s, x_T = _problem()
    mus = mus or {"cond": mu}
    mu_exact = mu if mu_exact is None else mu_exact
    out = []
    for n in steps:
        sched = make_ddim_schedule(abar, n, eta=0.0, scale_arr=scale_arr)
        result = _run(name, _denoiser(mus, s, abar, prediction, scale_arr), x_T, sched, guidance, prediction)
        out.append(_rms(result, _exact(x_T, mu_exact, s, sched)))
    return out


def _log_snr_uniform_abar():
    """A schedule whose log-SNR λ falls linearly in t (3.5 -> -3): uniform timesteps are uniform steps in λ, so the
    step size of every step halves with 2N steps, the setting where a method's order shows as err(2N)/err(N)."""
    lam = 3.5 - 6.5 * torch.arange(1000, dtype=torch.float64) / 999
    return torch.sigmoid(2 * lam).float()


# -- order of convergence ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("name,low,high", [("ddim", 0.4, 0.6),       # first order: 1/2
                                           ("dpmpp_2m", 0.18, 0.32),  # second order: 1/4
                                           ("unipc", 0.08, 0.2)])     # third: UniC-p adds one to UniP-p's order
def test_each_solver_converges_with_its_order(name, low, high, prediction):
    errors = _errors(name, _log_snr_uniform_abar(), prediction, [20, 40, 80])
    ratios = [b / a for a, b in zip(errors, errors[1:])]
    assert all(low < r < high for r in ratios), (errors, ratios)


@pytest.mark.parametrize("zero_snr,prediction,dynamic", [(False, "eps", False), (False, "v", False),
                                                         (True, "v", False), (True, "v", True)])
def test_solvers_converge_on_dynamicrafter_schedules(zero_snr, prediction, dynamic):
    """The released schedules (spec §7.2: linear betas; zero terminal SNR and dynamic rescale for the 512 models) on
    the released 'uniform_trailing' grid: every sampler converges to the exact sample, DDIM (eta 0) at first order,
    the solvers faster and at less than half DDIM's error for equal steps. (Their ratio stays above 1/4 here: the
    last step, down to ᾱ_0, spans a λ range that shrinks only like log N on a uniform-in-t grid.)"""
    abar = schedule_alphas_cumprod(zero_terminal_snr=zero_snr)
    if zero_snr:
        assert float(abar[-1]) == 0.0  # the first step starts from pure noise: λ = -inf, h = inf
    scale_arr = dynamic_rescale_table() if dynamic else None
    steps = [12, 24, 48]
    ddim = _errors("ddim", abar, prediction, steps, scale_arr)
    assert all(0.45 * a < b < 0.6 * a for a, b in zip(ddim, ddim[1:])), ddim
    for name in SOLVERS:
        errors = _errors(name, abar, prediction, steps, scale_arr)
        assert all(math.isfinite(e) for e in errors), (name, errors)
        assert all(b < 0.45 * a for a, b in zip(errors, errors[1:])), (name, errors)
        assert all(e < 0.45 * d for e, d in zip(errors, ddim)), (name, errors, ddim)


# -- guidance lives in the shared denoiser -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m", "unipc"])
def test_guided_ode_converges_to_the_mixed_mean(name):
    """Separate text and image scales plus camera guidance: the guided output is the ideal denoiser of
    mu_u + s_img(mu_img - mu_u) + s_txt(mu_c - mu_img) + (s_cam - 1)(mu_c - mu_nocam), whatever the solver."""
    _, s, _ = _problem()
    g = torch.Generator().manual_seed(5)
    mus = {b: torch.randn(SHAPE, generator=g, dtype=torch.float64) for b in ("cond", "uncond", "image", "nocam")}
    s_txt, s_img, s_cam = 3.0, 1.5, 2.0
    mixed = (mus["uncond"] + s_img * (mus["image"] - mus["uncond"]) + s_txt * (mus["cond"] - mus["image"])
             + (s_cam - 1) * (mus["cond"] - mus["nocam"]))
    guidance = Guidance(cfg_text=s_txt, cfg_image=s_img, cfg_camera=s_cam, rescale=0.0)
    abar = _log_snr_uniform_abar()
    errors = _errors(name, abar, "v", [20, 40], guidance=guidance, mus=mus, mu_exact=mixed)
    off = _errors(name, abar, "v", [40], guidance=guidance, mus=mus, mu_exact=mus["cond"])
    assert errors[1] < 0.6 * errors[0] and errors[1] < 0.05 * off[0], (errors, off)


def test_every_sampler_sees_the_same_guided_prediction():
    """Guidance rescale, the cosine camera schedule and every branch: the first step's x0 (one guided call at x_T)
    is the same for DDIM and both solvers, and equals the guided output worked out by hand."""
    mu, s, x_T = _problem()
    x_T = x_T.float()
    g = torch.Generator().manual_seed(9)
    mus = {b: mu + 0.3 * torch.randn(SHAPE, generator=g, dtype=torch.float64)
           for b in ("cond", "uncond", "image", "nocam")}
    guidance = Guidance(cfg_text=5.0, cfg_image=2.0, cfg_camera=1.7, camera_schedule="cosine", rescale=0.7)
    abar = schedule_alphas_cumprod(zero_terminal_snr=True)
    sched = make_ddim_schedule(abar, 6, eta=0.0)
    first, calls = {}, {}
    for name in ("ddim", "dpmpp_2m", "unipc"):
        seen = []
        calls[name] = []
        denoise = _denoiser({b: m.float() for b, m in mus.items()}, s.float(), abar, "v", calls=calls[name])
        _run(name, denoise, x_T, sched, guidance, "v", callback=seen.append)
        assert [info.i for info in seen] == list(range(6)) and all(isinstance(i, StepInfo) for i in seen)
        assert seen[0].t == 999 and seen[-1].t == int(sched.timesteps[0])
        first[name] = seen[0].pred_x0
    # By hand: at t = 999 (ᾱ = 0, cosine weight 1) x0 = -v of the guided, rescaled v.
    t = torch.tensor([999])
    outs = {b: _ideal_output(x_T, t, mus[b].float(), s.float(), abar, "v").float() for b in mus}
    e_u, e_img, e_c = outs["uncond"], outs["image"], outs["cond"]
    e = e_u + 2.0 * (e_img - e_u) + 5.0 * (e_c - e_img) + 0.7 * (e_c - outs["nocam"])
    e = 0.7 * e * (e_c.std() / e.std()) + 0.3 * e
    for name in first:
        assert torch.allclose(first[name], -e, atol=1e-5), name
        assert torch.equal(first[name], first["ddim"]), name
        assert calls[name] == calls["ddim"] == [("cond", "image", "uncond", "nocam")] * 6


# -- structure: first-order members, limits, errors ---------------------------------------------------------------

@pytest.mark.parametrize("steps", [1, 2])
def test_dpmpp_2m_with_only_first_order_steps_is_ddim_eta0(steps):
    """With 1 or 2 steps every DPM-Solver++(2M) step is first order (first and last), and the first-order step of the
    rescaled process is DDIM's dynamic-rescale update: the two samplers agree to float32 round-off."""
    mu, s, x_T = _problem()
    abar = schedule_alphas_cumprod(zero_terminal_snr=True)
    scale_arr = dynamic_rescale_table()
    sched = make_ddim_schedule(abar, steps, eta=0.0, scale_arr=scale_arr)
    denoise = _denoiser({"cond": mu.float()}, s.float(), abar, "v", scale_arr)
    a = _run("ddim", denoise, x_T.float(), sched, Guidance(cfg_text=1.0), "v")
    b = sample_dpmpp_2m(denoise, x_T.float(), sched, Guidance(cfg_text=1.0), "v")
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_solver_levels_follow_the_ddim_grid():
    abar = schedule_alphas_cumprod(zero_terminal_snr=True)
    sched = make_ddim_schedule(abar, 5, eta=1.0)
    lv = solver_levels(sched)
    expected = [float(abar[t]) for t in reversed(sched.timesteps.tolist())] + [float(abar[0])]
    assert (lv.alpha ** 2).tolist() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert (lv.alpha ** 2 + lv.sigma ** 2).tolist() == pytest.approx([1.0] * 6)
    assert lv.lam[0] == -math.inf and bool((lv.lam[1:].diff() > 0).all())


def test_eps_model_at_zero_snr_is_refused_with_advice():
    abar = schedule_alphas_cumprod(zero_terminal_snr=True)
    sched = make_ddim_schedule(abar, 4)
    mu, s, x_T = _problem()
    for solver in SOLVERS.values():
        with pytest.raises(SamplingError, match="v-prediction"):
            solver(_denoiser({"cond": mu}, s, abar, "eps"), x_T, sched, Guidance(cfg_text=1.0), "eps")
        with pytest.raises(SamplingError, match="prediction must be one of"):
            solver(_denoiser({"cond": mu}, s, abar, "v"), x_T, sched, Guidance(cfg_text=1.0), "x0")


def test_solvers_are_deterministic_and_the_callback_can_cancel():
    mu, s, x_T = _problem()
    abar = schedule_alphas_cumprod()
    sched = make_ddim_schedule(abar, 5, eta=1.0)  # eta belongs to DDIM: the solvers ignore it
    denoise = _denoiser({"cond": mu}, s, abar, "eps")

    class Stop(Exception):
        pass

    def stop_at_2(info):
        if info.i == 2:
            raise Stop

    for solver in SOLVERS.values():
        assert torch.equal(solver(denoise, x_T, sched, Guidance(cfg_text=1.0)),
                           solver(denoise, x_T, sched, Guidance(cfg_text=1.0)))
        with pytest.raises(Stop):
            solver(denoise, x_T, sched, Guidance(cfg_text=1.0), callback=stop_at_2)


# -- the pipeline: DDIM unchanged, solvers selectable ---------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    """The golden tiny CamI2V (eps-prediction), built from its YAML and loaded strictly."""
    from cami2v_core.model import load_model
    from tests.golden import GOLDEN_DIR, golden_state_dict, require

    config = require(GOLDEN_DIR / "configs" / "cami2v_tiny.yaml")
    return load_model(golden_state_dict("cami2v"), config=config, dtype="fp32")


def _orbit(frames):
    import trajectories

    return trajectories.preset(sorted(trajectories.PRESETS)[0], frames=frames).w2c


def _reference_ddim(model, image, w2c, steps, seed, guidance, eta):
    """DDIM eq. 12 written out here step by step from the module's pieces, as the loop read before the solvers."""
    from cami2v_core.pipeline import encode_conditioning, make_denoiser, make_generator
    from cami2v_core.sampling import randn

    gen = make_generator(seed)
    branches = guidance.branches(camera=True)
    cond = encode_conditioning(model, image, w2c, None, "a room", "blurry", None, 0, 1.0, branches, gen)
    sched = make_ddim_schedule(model.alphas_cumprod, steps, eta)
    x = randn((1, model.config.channels, model.config.temporal_length, *cond.c_concat.shape[-2:]), gen)
    denoise = make_denoiser(model, cond)
    to_eps_x0 = {"eps": eps_prediction, "v": v_prediction}[model.parameterization]
    for k in reversed(range(steps)):
        t = torch.full((1,), int(sched.timesteps[k]), dtype=torch.long)
        outputs = denoise(x, t, branches)
        out = combine_guidance(outputs, guidance, t)
        if guidance.rescale > 0 and len(branches) > 1:
            out = rescale_guidance(out, outputs["cond"], guidance.rescale)
        eps, x0 = to_eps_x0(out, x, sched, k)
        x = ddim_step(x0, eps, sched, k, randn(x.shape, gen))
    return x


def test_ddim_path_is_bit_identical_to_the_reference_loop(tiny_model):
    from cami2v_core.pipeline import sample_latent
    from tests.synthetic_photo import make_photo

    image, w2c = make_photo(70, 90, seed=3), _orbit(tiny_model.config.temporal_length)
    guidance = Guidance(cfg_text=6.0, cfg_image=2.0, cfg_camera=1.5, camera_schedule="cosine", rescale=0.7)
    expected = _reference_ddim(tiny_model, image, w2c, 3, 5, guidance, 0.5)
    got = sample_latent(tiny_model, image, w2c, None, "a room", "blurry", steps=3, seed=5, cfg_text=6.0,
                        cfg_image=2.0, cfg_camera=1.5, camera_schedule="cosine", eta=0.5, sampler="ddim",
                        frame_stride=None)  # the reference encodes with the UNet's own default fs
    assert torch.equal(got, expected)


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "unipc"])
def test_pipeline_runs_each_solver_with_the_models_guidance(tiny_model, sampler):
    from cami2v_core.pipeline import sample_latent
    from tests.synthetic_photo import make_photo

    image, w2c = make_photo(64, 64, seed=4), _orbit(tiny_model.config.temporal_length)
    seen = []
    kw = dict(steps=3, seed=2, cfg_text=4.0, cfg_camera=1.5, sampler=sampler)
    a = sample_latent(tiny_model, image, w2c, None, "a room", "blurry", callback=seen.append, eta=1.0, **kw)
    b = sample_latent(tiny_model, image, w2c, None, "a room", "blurry", eta=0.0, **kw)
    assert torch.equal(a, b)  # deterministic: eta and the step noise belong to DDIM alone
    assert [i.i for i in seen] == [0, 1, 2] and set(seen[0].outputs) == {"cond", "uncond", "nocam"}
    assert torch.isfinite(a).all()


def test_pipeline_refuses_unknown_samplers_and_ddim_noise_for_solvers(tiny_model):
    from cami2v_core.errors import CamI2VError
    from cami2v_core.pipeline import Draws, sample_latent
    from tests.synthetic_photo import make_photo

    image, w2c = make_photo(64, 64, seed=4), _orbit(tiny_model.config.temporal_length)
    with pytest.raises(CamI2VError, match="'ddim', 'dpmpp_2m', 'unipc'"):
        sample_latent(tiny_model, image, w2c, steps=1, sampler="euler")
    with pytest.raises(CamI2VError, match="step noises are DDIM's"):
        sample_latent(tiny_model, image, w2c, steps=1, sampler="unipc", draws=Draws(step_noise=[torch.zeros(1)]))


# -- the benchmark ---------------------------------------------------------------------------------------------------

def test_solver_benchmark_report_is_complete_and_consistent(tmp_path):
    """One path, one step each: every row is there, and rows that are the same computation agree (one
    DPM-Solver++(2M) step is DDIM's eta-0 step; the 1-step reference is that very run)."""
    import json

    from benchmarks import solvers as bench

    out = tmp_path / "solvers.json"
    assert bench.main(["--paths", "1", "--steps", "1", "--ddim-steps", "1", "--ref-steps", "1", "--no-camera",
                       "--no-ddim-eta0", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    rows = {r["label"]: r for r in report["rows"]}
    assert list(rows) == ["ddim 1 eta 1", "ddim 1 eta 0", "dpmpp_2m 1", "unipc 1"]
    assert rows["ddim 1 eta 1"]["speedup_vs_ddim"] == rows["ddim 1 eta 1"]["cpu_speedup_vs_ddim"] == 1.0
    assert all(r["seconds"] > 0 and len(r["seconds_runs"]) == 1 for r in rows.values())
    assert rows["dpmpp_2m 1"]["psnr"] == pytest.approx(rows["ddim 1 eta 0"]["psnr"], abs=0.05)
    assert rows["dpmpp_2m 1"]["psnr_vs_ode"] is None and rows["dpmpp_2m 1"]["latent_rms_vs_ode"] == 0.0
    assert rows["ddim 1 eta 1"]["latent_rms_vs_ode"] > 0
    assert set(report["sampler_overhead_ms_per_step"]) == {"ddim", "dpmpp_2m", "unipc"}
    table = bench.markdown_table(report)
    assert table.count("\n") == 1 + len(rows) and "RotErr" not in table
