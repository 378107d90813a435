"""The whole model: keys of every preset, strict loading, schedule buffers, and parity with the original code."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cami2v_core.checkpoint import CONFIG_METADATA_KEY, CheckpointError, save_safetensors
from cami2v_core.configs import PRESETS
from cami2v_core.model import SCHEDULE_BUFFERS, build_model, load_model
from tests.golden import (GOLDEN_DIR, KEYS_DIR, config_path, golden_state_dict, latent_factor, load_json, load_tensors,
                          require, sampling_runs_storing, unet_cases, unet_inputs_case, unpack_mask, variant_of)

VARIANTS = ("cami2v", "cameractrl", "motionctrl")  # the tiny models of the golden folder (configs/<variant>_*.yaml)
EPS_ATOL = 1e-4  # golden README §11: fp32 UNet eps
ENCODER_ATOL = 1e-5  # encoder outputs were identical across thread counts in the original (README §11)


@pytest.fixture(scope="module")
def models():
    """The three tiny golden models, built from their YAML and loaded strictly in float32 (once per module)."""
    torch.manual_seed(0)
    return {v: load_model(golden_state_dict(v), config=config_path(v), dtype="fp32") for v in VARIANTS}


# -- keys ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("manifest", ["cami2v_256", "cami2v_512", "cameractrl_256", "motionctrl_256",
                                      "dynamicrafter_256", "dynamicrafter_512"])
def test_preset_on_meta_has_exactly_the_checkpoint_keys(manifest):
    expected = load_json(f"{manifest}.json", base=KEYS_DIR)
    model = build_model(manifest.replace("_", "-"), device="meta")
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert not missing and not extra, f"missing {missing[:10]} ... extra {extra[:10]} ..."
    wrong = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
    assert not wrong, list(wrong.items())[:10]
    buffers = load_json(f"{manifest}.meta.json", base=KEYS_DIR)["persistent_buffer_keys"]
    assert sorted(buffers) == sorted(k for k in got if k not in dict(model.named_parameters()))


def test_tiny_preset_keys_match_golden_key_shapes():
    expected = load_json("weights/key_shapes.json")["cami2v"]
    got = {k: list(v.shape) for k, v in build_model("tiny", device="meta").state_dict().items()}
    assert got == expected


@pytest.mark.parametrize("variant", VARIANTS)
def test_tiny_loads_golden_state_dict_strict(models, variant):
    sd = golden_state_dict(variant)
    model = models[variant]
    assert model.variant == variant and model.parameterization == "eps"
    got = model.state_dict()
    assert set(got) == set(sd)
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    # and the plain torch API agrees: strict load into a freshly built model of the detected config
    fresh = build_model(model.config)
    fresh.load_state_dict(sd, strict=True)


def test_load_model_uses_the_given_tensors_without_copying():
    # Parameters are assigned, not copied into a second, pre-allocated model (spec: multi-GB checkpoints).
    sd = golden_state_dict("cami2v")
    model = load_model(sd)
    key = "model.diffusion_model.input_blocks.0.0.weight"
    assert model.state_dict()[key].data_ptr() == sd[key].data_ptr()
    assert not any(p.device.type == "meta" for p in model.parameters())
    assert not model.training  # built for inference; call .train() to fine-tune


def test_build_model_dtype_keeps_schedule_in_float32():
    model = build_model("tiny", dtype="fp16")
    assert model.dtype == torch.float16
    assert all(getattr(model, n).dtype == torch.float32 for n in SCHEDULE_BUFFERS)


def test_load_model_from_file_uses_header_config(tmp_path):
    sd = golden_state_dict("cami2v")
    cfg = PRESETS["tiny"].replace(base_scale=0.9)  # only the header can tell this custom value
    path = tmp_path / "tiny.safetensors"
    save_safetensors(sd, path, {CONFIG_METADATA_KEY: cfg.to_json()})
    model = load_model(path, dtype="bf16")
    assert model.config == cfg
    assert model.dtype == torch.bfloat16
    assert all(getattr(model, n).dtype == torch.float32 for n in SCHEDULE_BUFFERS)
    w = "model.diffusion_model.out.2.weight"
    assert torch.equal(model.state_dict()[w], sd[w].bfloat16())


def test_load_model_fp16_pt_file(tmp_path):
    sd = golden_state_dict("motionctrl")
    path = tmp_path / "mc.pt"
    torch.save({"state_dict": {k: v.half() for k, v in sd.items()}}, path)
    model = load_model(path)  # dtype None keeps the stored fp16
    assert model.variant == "motionctrl" and model.dtype == torch.float16
    # 256 models keep the schedule of the file, rounded through fp16 (spec §1.2 step 3)
    assert torch.equal(model.alphas_cumprod, sd["alphas_cumprod"].half().float())


def test_load_model_reports_missing_keys_grouped(tmp_path):
    sd = {k: v for k, v in golden_state_dict("cami2v").items() if not k.startswith("first_stage_model.")}
    n = sum(k.startswith("first_stage_model.") for k in golden_state_dict("cami2v"))
    with pytest.raises(CheckpointError, match=rf"missing {n} of .*first_stage_model \({n} keys"):
        load_model(sd)


def test_load_model_refuses_an_unrelated_checkpoint(tmp_path):
    path = tmp_path / "sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3),
               "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.ones(8)}, str(path))
    with pytest.raises(CheckpointError, match="Stable Diffusion 1.x"):
        load_model(path)


# -- schedule buffers (spec §1.3, §7.2, §7.5) ------------------------------------------------------------------------

def test_schedule_buffers_equal_the_originals():
    model = build_model("tiny")
    sd = golden_state_dict("cami2v")
    for name in SCHEDULE_BUFFERS:
        assert torch.equal(getattr(model, name), sd[name]), name


def test_zero_terminal_snr_v_schedule_and_scale_arr():
    cfg = PRESETS["tiny"].replace(parameterization="v", rescale_betas_zero_snr=True, use_dynamic_rescale=True,
                                  base_scale=0.7, image_size=(40, 64))
    model = build_model(cfg)
    # independent computation: Lin et al. 2024 Algorithm 1 on sqrt(alphas_cumprod), in float64
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
    s = np.sqrt(np.cumprod(1 - betas))
    s_new = (s - s[-1]) * s[0] / (s[0] - s[-1])
    torch.testing.assert_close(model.alphas_cumprod, torch.tensor(s_new ** 2, dtype=torch.float32), atol=1e-7, rtol=0)
    assert model.alphas_cumprod[-1] == 0 and model.sqrt_alphas_cumprod[0] == np.float32(s[0])
    assert torch.all(model.sqrt_recip_alphas_cumprod == 0) and torch.all(model.sqrt_recipm1_alphas_cumprod == 0)
    expected_scale = np.concatenate([np.linspace(1.0, 0.7, 400), np.full(1000, 0.7)])
    assert model.scale_arr.shape == (1400,)
    torch.testing.assert_close(model.scale_arr, torch.tensor(expected_scale, dtype=torch.float32))


def test_zero_snr_schedule_is_recomputed_after_loading():
    # spec §1.2 step 3: 512 models recompute the schedule after the checkpoint is loaded.
    cfg = PRESETS["tiny"].replace(parameterization="v", rescale_betas_zero_snr=True, use_dynamic_rescale=True,
                                  base_scale=0.7)
    sd = build_model(cfg).state_dict()
    sd["alphas_cumprod"] = torch.full_like(sd["alphas_cumprod"], 0.5)  # a stale schedule in the file
    model = load_model(sd, config=cfg)
    assert model.alphas_cumprod[-1] == 0 and model.alphas_cumprod[0] > 0.99


# -- parity with the original (golden README §5, §7) -----------------------------------------------------------------

@pytest.fixture(scope="module", params=unet_cases(stores=("x_t",)))
def unet_case(request):
    """The UNet-call case that stores the call's inputs (README §5); the other cases reuse them."""
    assert request.param == unet_inputs_case()
    return load_tensors(f"unet_forward/{request.param}.safetensors")


@pytest.mark.parametrize("case", unet_cases(dtype="float32"))
def test_whole_model_eps_matches_original(models, unet_case, case):
    c = unet_case
    model = models[variant_of(case)]
    with torch.no_grad():
        camera = model.prepare_camera(c["w2c"], c["K"], c["cond_frame_index"],
                                      pair_t=c["camera.pair_t_after_perturbation"])
        eps = model.apply_model(c["x_t"], c["timesteps"], c["context"], c["c_concat"], c["fs"], camera=camera)
        eps_nocam = model.apply_model(c["x_t"], c["timesteps"], c["context"], c["c_concat"], c["fs"], camera=None)
    golden = load_tensors(f"unet_forward/{case}.safetensors")
    torch.testing.assert_close(eps, golden["eps"], atol=EPS_ATOL, rtol=0)
    # the no-camera call is plain DynamiCrafter, identical for the three variants (golden README §5)
    torch.testing.assert_close(eps_nocam, c["eps_nocam"], atol=EPS_ATOL, rtol=0)


def test_camera_condition_matches_original(models, unet_case):
    c = unet_case
    with torch.no_grad():
        cam = models["cami2v"].prepare_camera(c["w2c"], c["K"], c["cond_frame_index"],
                                             pair_t=c["camera.pair_t_after_perturbation"])
    assert cam.origin_h == latent_factor() * c["x_t"].shape[-2] and cam.rt is None  # the picture height
    assert len(cam.pose_features) == len([k for k in c if k.startswith("camera.pose_features.")])
    for level, feature in enumerate(cam.pose_features):
        torch.testing.assert_close(feature, c[f"camera.pose_features.{level}"], atol=EPS_ATOL, rtol=0)
    stored = sorted(int(k.split(".")[1].rsplit("_d", 1)[1]) for k in c if k.startswith("camera.epipolar_mask_d"))
    assert sorted(cam.epipolar_masks) == stored
    for d, mask in cam.epipolar_masks.items():
        packed = c[f"camera.epipolar_mask_d{d}.packbits"]
        assert torch.equal(mask.cpu(), unpack_mask(packed, mask.shape[-1])), d


@pytest.mark.parametrize("case", unet_cases(variant="motionctrl", stores=("camera.RT_relative_w2c_3x4_flat",)))
def test_motionctrl_rt_matches_original(models, unet_case, case):
    c = unet_case
    cam = models["motionctrl"].prepare_camera(c["w2c"], c["K"], c["cond_frame_index"])
    rt = load_tensors(f"unet_forward/{case}.safetensors")["camera.RT_relative_w2c_3x4_flat"]
    assert cam.pose_features is None and cam.epipolar_masks is None
    torch.testing.assert_close(cam.rt, rt, atol=1e-5, rtol=0)


def test_dynamicrafter_has_no_camera_condition():
    model = build_model(PRESETS["tiny"].with_variant("dynamicrafter"))
    assert model.prepare_camera(torch.eye(4).expand(1, 8, 4, 4), torch.eye(3).expand(1, 8, 3, 3), [0]) is None


SAMPLING_RUNS = "sampling/sampling_runs.json"


@pytest.fixture(scope="module", params=sampling_runs_storing("cond.embedder_in_cond_image", "cami2v"))
def sampling_case(request):
    """(tensors, index entry) of one CamI2V sampling run."""
    return load_tensors(f"sampling/{request.param}.safetensors"), load_json(SAMPLING_RUNS)[request.param]


def test_text_and_image_conditioning_match_original(models, sampling_case):
    s, run = sampling_case
    model = models["cami2v"]
    prompts = json.loads(_metadata("encoders/encoders.safetensors")["prompts"])
    negative = run["settings"]["negative_prompt"]
    with torch.no_grad():
        text = model.encode_text([prompts[0], "", negative])
        image = model.encode_image_tokens(s["cond.embedder_in_cond_image"])
        zero = model.encode_image_tokens(torch.zeros_like(s["cond.embedder_in_cond_image"]))
    torch.testing.assert_close(text[0:1], s["cond.text_emb_caption"], atol=ENCODER_ATOL, rtol=0)
    torch.testing.assert_close(text[1:2], s["cond.text_emb_null"], atol=ENCODER_ATOL, rtol=0)
    torch.testing.assert_close(text[2:3], s["cond.text_emb_negative"], atol=ENCODER_ATOL, rtol=0)
    torch.testing.assert_close(image, s["cond.image_tokens_cond"], atol=ENCODER_ATOL, rtol=0)
    torch.testing.assert_close(zero, s["cond.image_tokens_uncond"], atol=ENCODER_ATOL, rtol=0)
    torch.testing.assert_close(torch.cat([text[0:1], image], dim=1), s["cond.c_crossattn"], atol=ENCODER_ATOL, rtol=0)


def test_random_draws_follow_the_original_order(models, sampling_case):
    # spec §7.7: seed -> VAE posterior noise of all T frames -> zero-translation perturbation.
    s, run = sampling_case
    model = models["cami2v"]
    T = model.config.temporal_length
    video = s["cond.embedder_in_cond_image"].expand(T, -1, -1, -1)  # the demo repeats the image over T frames
    g = torch.Generator().manual_seed(run["rng_seed_before_log_images"])
    with torch.no_grad():
        z = model.encode_first_stage(video, generator=g)
        cam = model.prepare_camera(s["input.w2c"], s["input.K"], torch.tensor(run["settings"]["cond_frame_index"]),
                                   generator=g)
        z_injected = model.encode_first_stage(video, noise=s["cond.posterior_noise"])
    cond = run["settings"]["cond_frame_index"][0]
    c_concat = z[cond][None, :, None].expand(-1, -1, T, -1, -1)  # the cond frame repeated over T: [1,4,T,h,w]
    torch.testing.assert_close(c_concat, s["cond.c_concat"], atol=ENCODER_ATOL, rtol=0)
    torch.testing.assert_close(z_injected, z, atol=0, rtol=0)
    # the masks depend on the perturbation draw on every same-frame block, so equality checks the draw
    for d, mask in cam.epipolar_masks.items():
        assert torch.equal(mask, unpack_mask(s[f"camera.epipolar_mask_d{d}.packbits"], mask.shape[-1])), d


def _metadata(rel: str) -> dict:
    from safetensors import safe_open

    with safe_open(str(require(GOLDEN_DIR / rel)), "pt") as f:
        return f.metadata()


# -- the VAE's own dtype ---------------------------------------------------------------------------------------------

def test_vae_dtype_defaults_to_the_models():
    model = load_model(golden_state_dict("cami2v"), dtype="bf16")
    assert model.vae_dtype == model.dtype == torch.bfloat16
    assert load_model(golden_state_dict("cami2v")).vae_dtype == torch.float32
    assert build_model("tiny", dtype="fp16").vae_dtype == torch.float16
    assert build_model("tiny", vae_dtype="bf16").vae_dtype == torch.bfloat16


@torch.no_grad()
def test_bf16_vae_decodes_like_the_fp32_one_and_leaves_the_rest_in_fp32():
    reference = load_model(golden_state_dict("cami2v"))
    model = load_model(golden_state_dict("cami2v"), vae_dtype="bf16")
    assert all(p.dtype == torch.bfloat16 for p in model.first_stage_model.parameters())
    others = [p for n, p in model.named_parameters() if not n.startswith("first_stage_model.")]
    assert others and all(p.dtype == torch.float32 for p in others)
    golden = load_tensors("vae/vae_tiny.safetensors")
    z = golden["decode_input_latent_scaled"].permute(0, 2, 1, 3, 4).flatten(0, 1)  # [(b t), 4, h, w], scaled
    want = reference.decode_first_stage(z)
    got = model.decode_first_stage(z)
    assert got.dtype == torch.bfloat16 and want.dtype == torch.float32
    from tests.devices import tolerance

    torch.testing.assert_close(got.float(), want, **tolerance(torch.bfloat16, atol=0, rtol=0,
                                                              scale=float(want.abs().max())))
    assert not torch.equal(got.float(), want)  # the bf16 VAE really ran
    # encoding: the latent comes back in the UNet's dtype (it is the UNet's c_concat), close to the fp32 one
    pixels = (torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    z_ref, z_bf16 = reference.encode_first_stage(pixels, noise), model.encode_first_stage(pixels, noise)
    assert z_bf16.dtype == torch.float32
    torch.testing.assert_close(z_bf16, z_ref, **tolerance(torch.bfloat16, atol=0, rtol=0,
                                                          scale=float(z_ref.abs().max())))


def test_fp16_decode_that_overflows_is_explained():
    from cami2v_core.errors import CamI2VError
    from cami2v_core.model import VAEPrecisionError

    model = load_model(golden_state_dict("cami2v"), vae_dtype="fp16")
    z = torch.full((1, 4, 8, 8), 2e4)  # / 0.18215 is past fp16's 65504 before the first conv
    with pytest.raises(VAEPrecisionError, match="vae_dtype='bf16'") as caught:
        model.decode_first_stage(z)
    assert isinstance(caught.value, CamI2VError)
    assert torch.isfinite(load_model(golden_state_dict("cami2v"), vae_dtype="bf16").decode_first_stage(z)).all()


def test_bad_vae_dtype_names_the_choices():
    with pytest.raises(CheckpointError, match="unknown dtype .fp8.; choose one of fp32"):
        load_model(golden_state_dict("cami2v"), vae_dtype="fp8")
