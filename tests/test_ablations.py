"""The six rows of the paper's ablation table (CamI2V arXiv 2410.15957, Table 3) as models of this package:
checkpoint key layouts, the camera condition each builds, and what its epipolar branch attends.

DynamiCrafter, +MotionCtrl, +Plücker (CameraCtrl) are variants of their own; "+Plücker + epipolar attention on the
reference frame" (CamCo-like), CamI2V and "+Plücker + 3D full attention" are the cami2v variant with the
epipolar_config switches only_on_cond_frame / none / is_3d_full_attn (configs.EPIPOLAR_SWITCHES).
"""

from __future__ import annotations

import pytest
import torch

from cami2v_core import camera as camera_maths
from cami2v_core.checkpoint import CONFIG_METADATA_KEY, save_safetensors
from cami2v_core.configs import PRESETS
from cami2v_core.model import build_model, load_model
from cami2v_core.modules.epipolar import EpipolarMaskError
from tests.golden import KEYS_DIR, load_json

FRAMES = 8  # the tiny preset's temporal_length


def ablation_configs(name: str = "tiny") -> dict:
    """The six rows on one base config (a cami2v preset)."""
    cami2v = PRESETS[name]
    return {
        "dynamicrafter": cami2v.with_variant("dynamicrafter"),
        "motionctrl": cami2v.with_variant("motionctrl"),
        "cameractrl": cami2v.with_variant("cameractrl"),
        "cond_frame": cami2v.replace(epipolar={**cami2v.epipolar, "only_on_cond_frame": True}),
        "cami2v": cami2v,
        "full_attn": cami2v.replace(epipolar={**cami2v.epipolar, "is_3d_full_attn": True}),
    }


def shapes(model) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# -- checkpoint key layouts -------------------------------------------------------------------------------------------

def camera_keys(keys, *markers):
    return {k for k in keys if any(m in k for m in markers)}


def test_key_layout_of_every_row_against_cami2v():
    models = {name: shapes(build_model(cfg, device="meta")) for name, cfg in ablation_configs().items()}
    cami2v = models["cami2v"]
    epipolar_keys = camera_keys(cami2v, ".pluker_projection.", ".epipolar.")
    pose_keys = {k for k in cami2v if k.startswith("pose_encoder.")}
    assert epipolar_keys and pose_keys
    # The two ablations of the epipolar branch change which keys attend, not what is learned: no extra key, none
    # missing, same shapes, so one checkpoint layout serves all three (and CamI2V weights initialise either).
    for name in ("cond_frame", "full_attn"):
        assert models[name] == cami2v, name
    # The other rows, as differences from CamI2V's key set.
    for name, missing, extra_marker in (("cameractrl", epipolar_keys, ".cc_projection."),
                                        ("motionctrl", epipolar_keys | pose_keys, ".cc_projection."),
                                        ("dynamicrafter", epipolar_keys | pose_keys, None)):
        keys = set(models[name])
        assert set(cami2v) - keys == missing, name
        extra = keys - set(cami2v)
        assert extra == (camera_keys(keys, extra_marker) if extra_marker else set()), name
        assert all(models[name][k] == cami2v[k] for k in keys & set(cami2v)), name  # the shared base is the same
    # MotionCtrl's cc_projection also sits in init_attn (spec §5.2); CameraCtrl's only where CamI2V's camera is.
    cc = camera_keys(models["cameractrl"], ".cc_projection.")
    assert {k.replace(".cc_projection.", ".pluker_projection.") for k in cc} == camera_keys(cami2v,
                                                                                           ".pluker_projection.")
    assert any(".init_attn." in k for k in camera_keys(models["motionctrl"], ".cc_projection."))


@pytest.mark.parametrize("switch", ["only_on_cond_frame", "is_3d_full_attn"])
def test_the_released_cami2v_256_layout_loads_into_each_ablation(switch):
    # Independent reference: the key list of the released CamI2V 256 checkpoint (reference/keys).
    manifest = load_json("cami2v_256.json", base=KEYS_DIR)
    cfg = PRESETS["cami2v-256"]
    model = build_model(cfg.replace(epipolar={**cfg.epipolar, switch: True}), device="meta")
    assert {k: list(v) for k, v in shapes(model).items()} == {k: list(v) for k, v in manifest.items()}


@pytest.mark.parametrize("row", ["cond_frame", "full_attn"])
def test_an_ablation_checkpoint_says_which_row_it_is_in_its_header(row, tmp_path):
    cfg = ablation_configs()[row]
    torch.manual_seed(0)
    model = build_model(cfg)
    path = tmp_path / "m.safetensors"
    save_safetensors(model.state_dict(), path, metadata={CONFIG_METADATA_KEY: cfg.to_json()})
    assert load_model(path).config == cfg
    # The keys alone cannot tell the rows apart (same layout as CamI2V): without the header it loads as CamI2V.
    bare = tmp_path / "bare.safetensors"
    save_safetensors(model.state_dict(), bare)
    assert load_model(bare).config.epipolar == PRESETS["tiny"].epipolar


# -- the camera condition ---------------------------------------------------------------------------------------------

def trajectory(batch=2):
    w2c = torch.eye(4).repeat(batch, FRAMES, 1, 1)
    w2c[..., 0, 3] = torch.linspace(0, 0.6, FRAMES)
    w2c[..., 1, 3] = torch.linspace(0, -0.2, FRAMES)
    K = camera_maths.default_intrinsics(64, 64).expand(batch, FRAMES, 3, 3)
    return w2c, K


def test_reference_frame_condition_is_cami2vs_masks_on_the_cond_frame():
    configs = ablation_configs()
    w2c, K = trajectory()
    cond = torch.tensor([5, 0])
    built = {}
    for row in ("cami2v", "cond_frame"):
        model = build_model(configs[row])
        built[row] = model.prepare_camera(w2c, K, cond, generator=torch.Generator().manual_seed(3))
    full, restricted = built["cami2v"].epipolar_masks, built["cond_frame"].epipolar_masks
    assert set(full) == set(restricted) == {8, 16, 32}
    for stride, mask in full.items():
        cells = (64 // stride) ** 2
        for b, c in enumerate(cond.tolist()):
            frame = slice(c * cells, (c + 1) * cells)
            assert torch.equal(restricted[stride][b][:, frame], mask[b][:, frame])
            assert int(restricted[stride][b].sum()) == int(mask[b][:, frame].sum())  # nothing outside that frame
    for a, b in zip(built["cami2v"].pose_features, built["cond_frame"].pose_features):
        assert a.shape == b.shape  # the Plücker branch is untouched


def test_full_attention_condition_builds_no_mask_and_draws_nothing():
    model = build_model(ablation_configs()["full_attn"])
    w2c, K = trajectory()
    generator = torch.Generator().manual_seed(3)
    before = generator.get_state()
    global_before = torch.get_rng_state()
    camera = model.prepare_camera(w2c, K, torch.tensor([0, 3]), generator=generator)
    assert camera.epipolar_masks is None and camera.pose_features is not None
    assert torch.equal(generator.get_state(), before) and torch.equal(torch.get_rng_state(), global_before)


# -- the UNet: what the epipolar branch attends -------------------------------------------------------------------------

def denoiser_outputs(models: dict, camera_for) -> dict:
    """eps of each model for one fixed input; camera_for(model) gives its camera condition."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, FRAMES, 8, 8, generator=g)
    c_concat = torch.randn(1, 4, FRAMES, 8, 8, generator=g)
    context = torch.randn(1, 77 + 16 * FRAMES, 64, generator=g)
    with torch.no_grad():
        return {name: m.apply_model(x, torch.tensor([500]), context, c_concat, torch.tensor([3]),
                                    camera=camera_for(m)) for name, m in models.items()}


def same_weights(configs: dict, rows) -> dict:
    """The rows built with the same weights, the zero-initialised layers (camera outputs, the UNet's last
    convolution) made non-zero so that every branch shows in the output."""
    torch.manual_seed(0)
    first = build_model(configs[rows[0]])
    with torch.no_grad():
        for p in first.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    models = {rows[0]: first}
    for row in rows[1:]:
        models[row] = build_model(configs[row])
        models[row].load_state_dict(first.state_dict())
    return models


def test_full_attention_model_equals_cami2v_with_all_true_masks():
    configs = ablation_configs()
    models = same_weights(configs, ("full_attn", "cami2v"))
    w2c, K = trajectory(batch=1)
    cond = torch.tensor([2])

    def camera_for(model):
        camera = model.prepare_camera(w2c, K, cond, generator=torch.Generator().manual_seed(1))
        if model.config.epipolar.get("is_3d_full_attn"):
            return camera
        return camera.__class__(pose_features=camera.pose_features, origin_h=camera.origin_h,
                                epipolar_masks={d: torch.ones_like(m) for d, m in camera.epipolar_masks.items()})

    out = denoiser_outputs(models, camera_for)
    torch.testing.assert_close(out["full_attn"], out["cami2v"], atol=1e-5, rtol=1e-5)
    masked = denoiser_outputs({"cami2v": models["cami2v"]}, lambda m: m.prepare_camera(
        w2c, K, cond, generator=torch.Generator().manual_seed(1)))["cami2v"]
    assert not torch.allclose(masked, out["full_attn"], atol=1e-4)  # the masks matter, so the test can fail


def test_reference_frame_model_refuses_a_condition_without_masks():
    models = same_weights(ablation_configs(), ("cond_frame",))
    w2c, K = trajectory(batch=1)
    camera = models["cond_frame"].prepare_camera(w2c, K, torch.tensor([0]))
    unmasked = camera.__class__(pose_features=camera.pose_features, origin_h=camera.origin_h)
    with pytest.raises(EpipolarMaskError, match="only_on_cond_frame"):
        denoiser_outputs(models, lambda m: unmasked)
