"""UNet parity with the original (golden fixture C, golden README §5-6) and key/shape parity with the real checkpoints."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from cami2v_core.modules.epipolar import EpipolarAttention
from cami2v_core.modules.unet import UNetModel, timestep_embedding
from tests.devices import assert_network_close, is_default
from tests.golden import (KEYS_DIR, REFERENCE_DIR, config_path, golden_state_dict, latent_factor, load_json,
                          load_tensors, require, unet_cases, unet_inputs_case, unpack_mask)

PREFIX = "model.diffusion_model."
FP32_ATOL = 1e-4  # golden README §11: fp32 UNet eps and block outputs


def tiny_unet(variant: str, dtype=torch.float32) -> UNetModel:
    """The tiny UNet of a golden variant, built from its YAML and loaded strictly with the golden weights."""
    cfg = OmegaConf.load(config_path(variant))
    params = OmegaConf.to_container(cfg.model.params.unet_config.params)
    epipolar = cfg.model.params.get("epipolar_config")
    epipolar = OmegaConf.to_container(epipolar) if epipolar is not None else None
    unet = UNetModel(**params, camera=variant, epipolar=epipolar)
    weights = {k[len(PREFIX):]: v for k, v in golden_state_dict(variant).items() if k.startswith(PREFIX)}
    unet.load_state_dict(weights, strict=True)
    return unet.to(dtype).eval()


@pytest.fixture(scope="module", params=unet_cases(stores=("x_t",)))
def fixture_c(request):
    """The UNet-call case that stores the call's inputs (README §5; one per folder, see unet_inputs_case); the
    other cases are the same call through another variant or dtype."""
    assert request.param == unet_inputs_case()
    return load_tensors(f"unet_forward/{request.param}.safetensors")


def unet_inputs(g, dtype=torch.float32):
    x = torch.cat([g["x_t"], g["c_concat"]], dim=1).to(dtype)  # hybrid conditioning: noisy latent first
    return x, g["timesteps"], g["context"].to(dtype), g["fs"]


def picture_size(g) -> tuple[int, int]:
    """(H, W) of the call: its latent x_t [B,C,T,h,w] times the folder's VAE factor."""
    h, w = g["x_t"].shape[-2:]
    return latent_factor() * h, latent_factor() * w


def golden_masks(g) -> dict[int, torch.Tensor]:
    """Every stored mask `camera.epipolar_mask_d<stride>`, unpacked to [B, T·h·w, T·h·w] (README §4)."""
    b, _, t = g["x_t"].shape[:3]
    height, width = picture_size(g)
    masks = {}
    for key in g:
        if key.startswith("camera.epipolar_mask_d"):
            d = int(key.split(".")[1].rsplit("_d", 1)[1])
            cells = t * (height // d) * (width // d)
            masks[d] = unpack_mask(g[key], cells)
            assert masks[d].shape == (b, cells, cells)
    assert masks, "the UNet-call fixture stores no epipolar mask"
    return masks


def pose_features(g) -> list[torch.Tensor]:
    """The stored pose-encoder levels `camera.pose_features.<level>`, in level order."""
    levels = sorted(int(k.rsplit(".", 1)[1]) for k in g if k.startswith("camera.pose_features."))
    assert levels == list(range(len(levels))) and levels, f"pose feature levels {levels}"
    return [g[f"camera.pose_features.{i}"] for i in levels]


def cami2v_camera(g, pose_file=None):
    pose = pose_file if pose_file is not None else g
    return SimpleNamespace(pose_features=pose_features(pose), epipolar_masks=golden_masks(g), rt=None,
                           origin_h=picture_size(g)[0])


def camera_on(camera, device, dtype):
    """The same camera condition with pose features on `device` in `dtype` and masks on `device`."""
    return SimpleNamespace(pose_features=[f.to(device, dtype) for f in camera.pose_features],
                           epipolar_masks={d: m.to(device) for d, m in camera.epipolar_masks.items()},
                           rt=camera.rt, origin_h=camera.origin_h)


def assert_close(actual, expected, atol, what):
    err = (actual.double() - expected.double()).abs().max().item()
    assert actual.shape == expected.shape, f"{what}: shape {list(actual.shape)} != {list(expected.shape)}"
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol:g}"


# -- fixture C: CamI2V tiny, fp32 ----------------------------------------------------------------------------------

def internals_block(g) -> str:
    """The module path of the camera block whose branches the fixture records (`internals.<path>.<branch>_out`)."""
    paths = {k[len("internals."):].rsplit(".", 1)[0] for k in g if k.startswith("internals.")}
    assert len(paths) == 1, f"internals of {len(paths)} blocks: {sorted(paths)}"
    return paths.pop()


@pytest.fixture(scope="module")
def cami2v_run(fixture_c):
    torch.manual_seed(0)
    unet = tiny_unet("cami2v")
    g = fixture_c
    internals = {}
    block = unet.get_submodule(internals_block(g))
    hooks = [block.pluker_projection.register_forward_hook(lambda m, i, o: internals.__setitem__("pluker", o)),
             block.epipolar.register_forward_hook(lambda m, i, o: internals.__setitem__("epipolar", o))]
    blocks = {}
    with torch.no_grad():
        eps = unet(*unet_inputs(g), camera=cami2v_camera(g), block_outputs=blocks)
        for h in hooks:
            h.remove()
        eps_nocam = unet(*unet_inputs(g), camera=None)
    return SimpleNamespace(unet=unet, eps=eps, eps_nocam=eps_nocam, blocks=blocks, internals=internals)


@pytest.fixture(scope="module")
def device_run(cami2v_run, fixture_c, device, dtype):
    """eps and eps_nocam of the tiny CamI2V UNet on --device in --dtype (the CPU fp32 run itself by default)."""
    if is_default(device, dtype):
        return cami2v_run
    unet = tiny_unet("cami2v", dtype).to(device)
    x, t, context, fs = (v.to(device) for v in unet_inputs(fixture_c, dtype))
    with torch.no_grad():
        eps = unet(x, t, context, fs, camera=camera_on(cami2v_camera(fixture_c), device, dtype))
        eps_nocam = unet(x, t, context, fs, camera=None)
    assert eps.device.type == device.type and eps.dtype == dtype
    return SimpleNamespace(eps=eps.float().cpu(), eps_nocam=eps_nocam.float().cpu())


def test_cami2v_eps_matches_original(device_run, fixture_c, dtype):
    assert_network_close(device_run.eps, fixture_c["eps"], dtype, FP32_ATOL, "eps")


def test_no_camera_is_base_dynamicrafter(device_run, fixture_c, dtype):
    assert_network_close(device_run.eps_nocam, fixture_c["eps_nocam"], dtype, FP32_ATOL, "eps_nocam")
    # the camera matters: the two outputs differ far beyond the tolerance (sensitivity.json: relative change ~1)
    assert (device_run.eps - device_run.eps_nocam).abs().max() > 100 * FP32_ATOL
    assert (device_run.eps - device_run.eps_nocam).norm() > 0.5 * fixture_c["eps"].norm()


def test_condition_with_all_fields_none_is_no_camera(cami2v_run, fixture_c):
    empty = SimpleNamespace(pose_features=None, epipolar_masks=None, rt=None, origin_h=picture_size(fixture_c)[0])
    with torch.no_grad():
        eps = cami2v_run.unet(*unet_inputs(fixture_c), camera=empty)
    assert torch.equal(eps, cami2v_run.eps_nocam)


def test_cami2v_block_outputs_match_original(cami2v_run, fixture_c):
    names = [k[len("block_out."):] for k in fixture_c if k.startswith("block_out.")]
    assert names, "the fixture stores no block output"
    for name in names:
        assert_close(cami2v_run.blocks[name], fixture_c[f"block_out.{name}"], FP32_ATOL, name)


def test_cami2v_camera_branch_internals(cami2v_run, fixture_c):
    key = f"internals.{internals_block(fixture_c)}."
    assert_close(cami2v_run.internals["pluker"], fixture_c[key + "pluker_projection_out"], FP32_ATOL, "pluker")
    assert_close(cami2v_run.internals["epipolar"], fixture_c[key + "epipolar_out"], FP32_ATOL, "epipolar")


def test_unmasked_epipolar_matches_recorded_sensitivity(cami2v_run, fixture_c):
    """Dropping the masks runs unmasked epipolar attention, as the original does for a missing stride (§4.4.7)."""
    g = fixture_c
    camera = cami2v_camera(g)
    camera.epipolar_masks = {}  # no stride found -> every level unmasked
    with torch.no_grad():
        eps = cami2v_run.unet(*unet_inputs(g), camera=camera)
    rel = ((eps - g["eps"]).norm() / g["eps"].norm()).item()
    expected = load_json("unet_forward/sensitivity.json")["epipolar_mask_removed_rel"]
    assert rel == pytest.approx(expected, rel=1e-3)


# -- float64 (golden README §6) --------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", unet_cases(variant="cami2v", dtype="float64"))
def test_cami2v_fp64_matches_original(fixture_c, case):
    g64 = load_tensors(f"unet_forward/{case}.safetensors")
    unet = tiny_unet("cami2v", torch.float64)
    camera = cami2v_camera(fixture_c, pose_file=g64)
    with torch.no_grad():
        eps = unet(*unet_inputs(fixture_c, torch.float64), camera=camera)
        eps_nocam = unet(*unet_inputs(fixture_c, torch.float64), camera=None)
    assert eps.dtype == torch.float64
    assert_close(eps, g64["eps"], 1e-10, "fp64 eps")
    assert_close(eps_nocam, g64["eps_nocam"], 1e-10, "fp64 eps_nocam")


# -- CameraCtrl and MotionCtrl (spec §5) -----------------------------------------------------------------------------

@pytest.mark.parametrize("case", unet_cases(variant="cameractrl", dtype="float32"))
def test_cameractrl_matches_original(fixture_c, case):
    g = fixture_c
    expected = load_tensors(f"unet_forward/{case}.safetensors")["eps"]
    unet = tiny_unet("cameractrl")
    # README §5: CameraCtrl's pose features are CamI2V's (same pose-encoder weights), stored with the inputs
    camera = SimpleNamespace(pose_features=pose_features(g), epipolar_masks=None, rt=None,
                             origin_h=picture_size(g)[0])
    with torch.no_grad():
        eps = unet(*unet_inputs(g), camera=camera)
        eps_nocam = unet(*unet_inputs(g), camera=None)
    assert_close(eps, expected, FP32_ATOL, "cameractrl eps")
    assert_close(eps_nocam, g["eps_nocam"], FP32_ATOL, "cameractrl eps_nocam")  # README §5: identical to CamI2V's


@pytest.mark.parametrize("case", unet_cases(variant="motionctrl", dtype="float32"))
def test_motionctrl_matches_original(fixture_c, case):
    g = fixture_c
    expected = load_tensors(f"unet_forward/{case}.safetensors")
    unet = tiny_unet("motionctrl")
    camera = SimpleNamespace(pose_features=None, epipolar_masks=None, origin_h=picture_size(g)[0],
                             rt=expected["camera.RT_relative_w2c_3x4_flat"])
    with torch.no_grad():
        eps = unet(*unet_inputs(g), camera=camera)
        eps_nocam = unet(*unet_inputs(g), camera=None)
    assert_close(eps, expected["eps"], FP32_ATOL, "motionctrl eps")
    assert_close(eps_nocam, g["eps_nocam"], FP32_ATOL, "motionctrl eps_nocam")


# -- smaller pieces against independent computations -----------------------------------------------------------------

def test_timestep_embedding_matches_reference_values():
    ref = load_json("fixtures/cami2v_reference_values.json", base=REFERENCE_DIR)["timestep_embedding_dim320"]
    emb = timestep_embedding(torch.tensor(ref["t"]), 320)
    assert emb.dtype == torch.float32 and emb.shape == (4, 320)
    torch.testing.assert_close(emb[:, :4], torch.tensor(ref["first4"]), atol=1e-6, rtol=0)
    torch.testing.assert_close(emb[:, 160:164], torch.tensor(ref["idx160_163"]), atol=1e-6, rtol=0)
    torch.testing.assert_close(emb[:, -2:], torch.tensor(ref["last2"]), atol=1e-6, rtol=0)


def test_epipolar_attention_equals_plain_masked_softmax():
    """EpipolarAttention against a loop-free reference written from spec §4.3 (registers always attended)."""
    torch.manual_seed(0)
    b, t, h, w, c, heads, r = 2, 3, 2, 2, 16, 2, 4
    module = EpipolarAttention(c, heads, origin_h=16, num_register_tokens=r).double()
    torch.nn.init.normal_(module.epipolar_attn.to_out[0].weight)  # the real init is zero: make the output visible
    x = torch.randn(b * h * w, t, c, dtype=torch.float64)
    mask = torch.rand(b, t * h * w, t * h * w) > 0.6
    out = module(x, mask, batch_size=b)

    attn = module.epipolar_attn
    seq = x.reshape(b, h * w, t, c).transpose(1, 2).reshape(b, t * h * w, c)  # frame-major tokens per video
    keys_in = torch.cat([attn.register_tokens.expand(b, -1, -1), seq], dim=1)
    q, k, v = attn.to_q(seq), attn.to_k(keys_in), attn.to_v(keys_in)
    full_mask = torch.cat([torch.ones(b, t * h * w, r, dtype=torch.bool), mask], dim=-1)
    d = c // heads
    outs = []
    for i in range(heads):
        s = q[..., i * d:(i + 1) * d] @ k[..., i * d:(i + 1) * d].transpose(1, 2) / math.sqrt(d)
        s = s.masked_fill(~full_mask, float("-inf"))
        outs.append(s.softmax(-1) @ v[..., i * d:(i + 1) * d])
    ref = attn.to_out(torch.cat(outs, dim=-1))
    ref = ref.reshape(b, t, h * w, c).transpose(1, 2).reshape(b * h * w, t, c)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    # None means unmasked: the same as an all-True mask
    torch.testing.assert_close(module(x, None, batch_size=b), module(x, torch.ones_like(mask), batch_size=b))


def test_epipolar_rejects_a_mask_of_the_wrong_size():
    module = EpipolarAttention(16, 2, num_register_tokens=4)
    with pytest.raises(ValueError, match="epipolar mask has shape"):
        module(torch.randn(8, 3, 16), torch.ones(2, 10, 10, dtype=torch.bool), batch_size=2)


def test_gradient_checkpointing_gives_the_same_values_and_gradients(fixture_c):
    g = fixture_c
    camera = cami2v_camera(g)
    results = []
    for use_checkpoint in (False, True):
        unet = tiny_unet("cami2v")
        for module in unet.modules():
            if hasattr(module, "use_checkpoint"):
                module.use_checkpoint = use_checkpoint
        eps = unet(*unet_inputs(g), camera=camera)
        eps.square().mean().backward()
        block = unet.get_submodule(internals_block(g))
        results.append((eps.detach(), block.epipolar.epipolar_attn.register_tokens.grad,
                        unet.time_embed[0].weight.grad))
    for plain, checkpointed in zip(*results):
        torch.testing.assert_close(checkpointed, plain, atol=1e-6, rtol=1e-5)


def test_pose_features_of_the_wrong_size_are_explained(cami2v_run, fixture_c):
    camera = cami2v_camera(fixture_c)
    camera.pose_features = [f[..., :-1] for f in camera.pose_features]  # one column short
    with pytest.raises(ValueError, match="pose feature level 0 has shape"):
        cami2v_run.unet(*unet_inputs(fixture_c), camera=camera)


def test_unknown_constructor_argument_is_a_type_error():
    with pytest.raises(TypeError):
        UNetModel(**_full_params(256), not_an_option=1)


def test_unsupported_option_is_refused():
    with pytest.raises(NotImplementedError, match="use_causal_attention"):
        UNetModel(**dict(_full_params(256), use_causal_attention=True))


# -- full-size key manifests (spec §2.1, keys/README.md) -------------------------------------------------------------

def _full_params(resolution: int) -> dict:
    """The released unet_config.params (spec §2.1): identical at 256 and 512 but for alpha and default_fs."""
    return dict(in_channels=8, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
                num_res_blocks=2, channel_mult=[1, 2, 4, 4], dropout=0.1, num_head_channels=64,
                transformer_depth=1, context_dim=1024, use_linear=True, use_checkpoint=False, temporal_conv=True,
                temporal_attention=True, temporal_selfatt_only=True, use_relative_position=False,
                use_causal_attention=False, temporal_length=16, addition_attention=True, image_cross_attention=True,
                image_cross_attention_scale_learnable=resolution == 256, default_fs=3 if resolution == 256 else 10,
                fs_condition=True)


_EPIPOLAR = {256: dict(origin_h=256, origin_w=256, num_register_tokens=4, attention_resolution=[8, 4, 2, 1],
                       add_small_perturbation_on_zero_T=True),
             512: dict(origin_h=320, origin_w=512, num_register_tokens=4, attention_resolution=[8, 4, 2],
                       add_small_perturbation_on_zero_T=True)}

MANIFESTS = {"cami2v_256": ("cami2v", 256), "cami2v_512": ("cami2v", 512), "cameractrl_256": ("cameractrl", 256),
             "motionctrl_256": ("motionctrl", 256), "dynamicrafter_256": (None, 256),
             "dynamicrafter_512": (None, 512)}


@pytest.mark.parametrize("manifest", sorted(MANIFESTS))
def test_full_size_keys_and_shapes_match_checkpoint_manifest(manifest):
    camera, resolution = MANIFESTS[manifest]
    keys = json.loads(require(KEYS_DIR / f"{manifest}.json").read_text())
    expected = {k[len(PREFIX):]: list(s) for k, s in keys.items() if k.startswith(PREFIX)}
    with torch.device("meta"):
        unet = UNetModel(**_full_params(resolution), camera=camera,
                         epipolar=_EPIPOLAR[resolution] if camera == "cami2v" else None)
    produced = {k: list(v.shape) for k, v in unet.state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(produced)), sorted(set(produced) - set(expected))
    assert not missing and not unexpected, f"missing {missing[:5]}, unexpected {unexpected[:5]}"
    wrong = {k: (produced[k], expected[k]) for k in expected if produced[k] != expected[k]}
    assert not wrong, f"shape mismatches (ours, checkpoint): {dict(list(wrong.items())[:5])}"
    assert list(produced) == list(expected), "state_dict order differs from the original's"
