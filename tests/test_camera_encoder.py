"""CameraPoseEncoder: golden parity of the pose features in float32 and float64 (golden README §5, §6), the
positional-encoding table, key manifests and errors."""

from __future__ import annotations

import json

import pytest
import torch

from cami2v_core.modules.camera_encoder import CameraPoseEncoder
from tests.devices import is_default
from tests.golden import (KEYS_DIR, golden_state_dict, load_json, load_tensors, model_params, require, unet_cases,
                          unet_inputs_case)

PREFIX = "pose_encoder."
TRAJECTORIES = "camera/trajectories.json"
# The released pose encoder, `pose_encoder_config.params` of configs/inference/003_cami2v_256x256.yaml (spec §4.1).
FULL = dict(downscale_factor=8, channels=[320, 640, 1280, 1280], nums_rb=2, cin=384, ksize=1, sk=True, use_conv=False,
            compression_factor=1, temporal_attention_nhead=8, attention_block_types=["Temporal_Self"],
            temporal_position_encoding=True, temporal_position_encoding_max_len=16)
ATOL_FP32 = 5e-5  # observed max 9e-6 on features of magnitude ~4
ATOL_FP64 = 1e-12  # observed ~2e-15


@pytest.fixture(scope="module")
def tiny() -> dict:
    """The fixture's pose-encoder params, read from its own config (golden/configs/cami2v_*.yaml)."""
    return model_params("pose_encoder_config")


@pytest.fixture(scope="module")
def encoder(tiny):
    sd = {k[len(PREFIX):]: v for k, v in golden_state_dict("cami2v").items() if k.startswith(PREFIX)}
    model = CameraPoseEncoder(**tiny).eval()
    model.load_state_dict(sd, strict=True)
    return model


@pytest.fixture(scope="module", params=unet_cases(stores=("x_t",)))
def fixture_c(request):
    """The UNet-call case that stores the call's inputs (README §5; one per folder, see unet_inputs_case); the
    other cases are the same call through another variant or dtype."""
    assert request.param == unet_inputs_case()
    return load_tensors(f"unet_forward/{request.param}.safetensors")


def _trajectories_of(fixture: dict) -> list[str]:
    """The camera/ fixture of each sample of a UNet-call fixture, found by its w2c (the batch is built from them)."""
    names = []
    for w2c in fixture["w2c"]:
        found = [n for n in load_json(TRAJECTORIES) if not n.startswith("_")
                 and _same(load_tensors(f"camera/{n}.safetensors")["w2c"][0], w2c)]
        assert found, "a sample of the UNet-call fixture matches no camera/ trajectory"
        names.append(found[0])
    return names


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a, b)


def _golden_plucker(fixture: dict) -> torch.Tensor:
    """The fp32 Plücker of the fixture's samples [B, 6, T, H, W], from their camera/ fixtures (bit-identical)."""
    return torch.cat([load_tensors(f"camera/{name}.safetensors")["plucker"] for name in _trajectories_of(fixture)])


def _plucker_float64(rel_c2w: torch.Tensor, K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Independent Plücker (spec §6.2): pixel centres +0.5, unit camera rays rotated to world, [o x d, d]."""
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                          torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    fx, fy = K[..., 0, 0, None, None], K[..., 1, 1, None, None]  # [B, T, 1, 1]
    cx, cy = K[..., 0, 2, None, None], K[..., 1, 2, None, None]
    x, y = (u - cx) / fx, (v - cy) / fy  # [B, T, H, W]
    rays = torch.stack([x, y, torch.ones_like(x)], dim=-1)
    rays = rays / rays.norm(dim=-1, keepdim=True)
    d = torch.einsum("btij,bthwj->bthwi", rel_c2w[..., :3, :3], rays)
    o = rel_c2w[..., :3, 3][:, :, None, None, :].expand_as(d)
    return torch.cat([torch.cross(o, d, dim=-1), d], dim=-1).permute(0, 4, 1, 2, 3)  # [B, 6, T, H, W]


# -- golden parity ---------------------------------------------------------------------------------------------------

@torch.no_grad()
def test_pose_features_match_golden_fp32(encoder, fixture_c, tiny, device, dtype, tolerance):
    model = encoder
    if not is_default(device, dtype):  # the same weights on --device in --dtype
        model = CameraPoseEncoder(**tiny).eval()
        model.load_state_dict(encoder.state_dict())
        model = model.to(device, dtype)
    features = [f.float().cpu() for f in model(_golden_plucker(fixture_c).to(device, dtype))]
    assert len(features) == len([k for k in fixture_c if k.startswith("camera.pose_features.")])
    for level, feature in enumerate(features):
        expected = fixture_c[f"camera.pose_features.{level}"]
        assert feature.shape == expected.shape
        torch.testing.assert_close(feature, expected, **tolerance(dtype, atol=ATOL_FP32, rtol=0,
                                                                  scale=float(expected.abs().max())))


@torch.no_grad()
@pytest.mark.parametrize("case", unet_cases(variant="cami2v", dtype="float64", stores=("camera.pose_features.0",)))
def test_pose_features_match_golden_fp64(encoder, fixture_c, tiny, case):
    # README §6: the fp64 reference recomputed the relative poses and the Plücker in float64 from the float32 w2c
    # and K; so do we, independently of cami2v_core.camera.
    golden64 = load_tensors(f"unet_forward/{case}.safetensors")
    c2w = torch.linalg.inv(fixture_c["w2c"].double())
    ref = c2w[torch.arange(len(c2w)), fixture_c["cond_frame_index"]]  # [B, 4, 4]
    rel_c2w = torch.linalg.inv(ref)[:, None] @ c2w  # spec §6.3, trace scale 1
    torch.testing.assert_close(rel_c2w, golden64["camera.relative_c2w"], rtol=0, atol=1e-12)
    golden = _golden_plucker(fixture_c)
    plucker = _plucker_float64(rel_c2w, fixture_c["K"].double(), *golden.shape[-2:])
    # sanity: this float64 Plücker is the golden float32 one up to float32 round-off
    torch.testing.assert_close(plucker, golden.double(), rtol=0, atol=1e-5)

    model = CameraPoseEncoder(**tiny).eval()
    model.load_state_dict(encoder.state_dict())
    features = model.double()(plucker)
    for level, feature in enumerate(features):
        torch.testing.assert_close(feature, golden64[f"camera.pose_features.{level}"], rtol=0, atol=ATOL_FP64)


@torch.no_grad()
def test_samples_are_independent(encoder, fixture_c):
    last = _trajectories_of(fixture_c)[-1]
    single = encoder(load_tensors(f"camera/{last}.safetensors")["plucker"])
    for level, feature in enumerate(single):
        torch.testing.assert_close(feature, fixture_c[f"camera.pose_features.{level}"][-1:], rtol=0, atol=ATOL_FP32)


def test_positional_encoding_table(tiny):
    # built at construction (not only loaded): identical to the checkpoint's table and to the formula of spec §4.1
    golden = {k[len(PREFIX):]: v for k, v in golden_state_dict("cami2v").items()
              if k.startswith(PREFIX) and k.endswith(".pe")}
    built = CameraPoseEncoder(**tiny).state_dict()
    assert len(golden) == len(tiny["channels"]) * tiny["nums_rb"]  # one table per block of every level
    for key, table in golden.items():  # float32 sin/cos differ in the last bit between CPUs (vector libm)
        torch.testing.assert_close(built[key], table, rtol=0, atol=1e-6, msg=key)
    for key in golden:
        pe = built[key][0].double()  # [max_len, C]
        length, width = pe.shape
        assert length == tiny["temporal_position_encoding_max_len"]
        p = torch.arange(length, dtype=torch.float64)[:, None]
        w = 10000.0 ** (-torch.arange(0, width, 2, dtype=torch.float64) / width)
        torch.testing.assert_close(pe[:, 0::2], torch.sin(p * w), rtol=0, atol=2e-6)
        torch.testing.assert_close(pe[:, 1::2], torch.cos(p * w), rtol=0, atol=2e-6)


def test_state_dict_matches_golden_keys_and_shapes(encoder):
    expected = {k[len(PREFIX):]: tuple(v.shape) for k, v in golden_state_dict("cami2v").items() if k.startswith(PREFIX)}
    assert {k: tuple(v.shape) for k, v in encoder.state_dict().items()} == expected


# -- full-size key manifests on the meta device ----------------------------------------------------------------------

MANIFESTS = sorted(p.name for p in KEYS_DIR.glob("*.json") if not p.name.endswith(".meta.json")) or ["cami2v_256.json"]


@pytest.mark.parametrize("manifest", MANIFESTS)
def test_full_size_keys_shapes_and_order_match_manifest(manifest):
    keys = json.loads(require(KEYS_DIR / manifest).read_text())
    expected = [(k[len(PREFIX):], list(shape)) for k, shape in keys.items() if k.startswith(PREFIX)]
    if manifest.startswith(("motionctrl", "dynamicrafter")):
        assert expected == []  # these variants have no pose encoder (spec §5.2, §5.3)
        return
    assert len(expected) == 150
    with torch.device("meta"):
        model = CameraPoseEncoder(**FULL)
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == expected
    assert sum(p.numel() for p in model.parameters()) == 199_262_400  # keys/README.md
    assert sum(b.numel() for b in model.buffers()) == 112_640  # eight pos_encoder.pe tables


def test_full_size_feature_shapes_on_meta():
    with torch.device("meta"):
        model = CameraPoseEncoder(**FULL)
        features = model(torch.empty(1, 6, 16, 320, 512))
    # spec §4.1: ds 1, 2, 4, 8 of the 40x64 latent with the UNet's widths
    assert [tuple(f.shape) for f in features] == [(1, 320, 16, 40, 64), (1, 640, 16, 20, 32), (1, 1280, 16, 10, 16),
                                                  (1, 1280, 16, 5, 8)]


# -- options and errors ----------------------------------------------------------------------------------------------

def test_original_options_change_the_keys_like_the_original():
    # use_conv: strided-conv pooling `down_opt.op`; sk=False: `in_conv` and `skep` on every block; no PE: no buffer
    model = CameraPoseEncoder(downscale_factor=8, channels=[16, 16], nums_rb=1, cin=384, ksize=3, sk=False,
                              use_conv=True, temporal_attention_nhead=2)
    keys = model.state_dict()
    assert keys["encoder_down_conv_blocks.1.0.down_opt.op.weight"].shape == (16, 16, 3, 3)
    assert keys["encoder_down_conv_blocks.0.0.skep.weight"].shape == (16, 16, 3, 3)
    assert keys["encoder_down_conv_blocks.0.0.in_conv.weight"].shape == (16, 16, 3, 3)
    assert not any(k.endswith(".pe") for k in keys)
    features = model(torch.zeros(1, 6, 3, 32, 32))
    assert [tuple(f.shape) for f in features] == [(1, 16, 3, 4, 4), (1, 16, 3, 2, 2)]


def test_errors_say_what_was_expected(encoder, tiny):
    with pytest.raises(ValueError, match=r"\[B, 6, T, H, W\].*\(2, 6, 64, 64\)"):
        encoder(torch.zeros(2, 6, 64, 64))
    factor, frames = tiny["downscale_factor"], tiny["temporal_position_encoding_max_len"]
    with pytest.raises(ValueError, match=f"multiples of downscale_factor={factor}"):
        encoder(torch.zeros(1, 6, 4, 8 * factor - 1, 8 * factor))
    with pytest.raises(ValueError, match=f"covers {frames} frames.*got {frames + 1}"):
        encoder(torch.zeros(1, 6, frames + 1, factor, factor))
    with pytest.raises(TypeError, match="unexpected keyword argument 'num_rb'"):
        CameraPoseEncoder(**tiny, num_rb=2)
    with pytest.raises(ValueError, match="attention_block_types"):
        CameraPoseEncoder(**{**tiny, "attention_block_types": ["Temporal_Cross"]})
    with pytest.raises(ValueError, match="sk=False with a channel change"):
        CameraPoseEncoder(**{**tiny, "sk": False})
    with pytest.raises(ValueError, match="cin"):
        CameraPoseEncoder(**{**tiny, "cin": 100})


def test_original_yaml_params_pass_straight_through(tiny):
    # an importer hands the original `pose_encoder_config.params` over unchanged (golden/configs/cami2v_tiny.yaml)
    model = CameraPoseEncoder(**tiny)
    side = 8 * tiny["downscale_factor"]
    assert [f.shape[1] for f in model(torch.zeros(1, 6, 2, side, side))] == tiny["channels"]
