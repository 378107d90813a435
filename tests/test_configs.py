"""ModelConfig, presets and import of the original YAML configs."""

from __future__ import annotations

import json
import shutil

import pytest

from cami2v_core.configs import (EPIPOLAR_SWITCHES, PRESETS, UNSUPPORTED_EPIPOLAR_SWITCHES, VIT_H_14, ConfigError,
                                 ModelConfig, epipolar_attention_kind, from_yaml, get_preset, resolve_config)
from tests.golden import GOLDEN_DIR, KEYS_DIR, load_json, require

CONFIGS = GOLDEN_DIR / "configs"
VARIANTS = ("cami2v", "cameractrl", "motionctrl")


def test_preset_names_are_the_documented_ones():
    assert set(PRESETS) == {"cami2v-256", "cami2v-512", "cameractrl-256", "motionctrl-256", "dynamicrafter-256",
                            "dynamicrafter-512", "realcam-i2v-256", "realcam-i2v-512", "tiny", "small"}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_round_trip_dict_and_json(name):
    cfg = PRESETS[name]
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    text = cfg.to_json()
    json.loads(text)  # plain JSON
    assert ModelConfig.from_json(text) == cfg


@pytest.mark.parametrize("variant", VARIANTS)
def test_golden_yaml_imports_to_the_tiny_preset(variant):
    cfg = from_yaml(require(CONFIGS / f"{variant}_tiny.yaml"))
    assert cfg.variant == variant
    assert cfg == PRESETS["tiny"].with_variant(variant)


def test_tiny_yaml_reads_the_arch_json_next_to_it():
    cfg = from_yaml(require(CONFIGS / "cami2v_tiny.yaml"))
    assert cfg.text_encoder_arch == load_json("configs/open_clip_tiny_text_arch.json")
    assert cfg.image_encoder_arch == load_json("configs/open_clip_tiny_vision_arch.json")
    assert cfg.text_encoder_layer == "penultimate"


def test_arch_null_and_vit_h_mean_vit_h(tmp_path):
    text = require(CONFIGS / "cami2v_tiny.yaml").read_text()
    text = text.replace("arch: cami2v-tiny-text", "arch: null").replace("arch: cami2v-tiny-vision", "arch: ViT-H-14")
    (tmp_path / "c.yaml").write_text(text)
    cfg = from_yaml(tmp_path / "c.yaml")
    assert cfg.text_encoder_arch == VIT_H_14 and cfg.image_encoder_arch == VIT_H_14


def test_missing_arch_json_is_a_clear_error(tmp_path):
    shutil.copy(require(CONFIGS / "cami2v_tiny.yaml"), tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="open_clip_tiny_text_arch.json"):
        from_yaml(tmp_path / "c.yaml")


def test_tiny_preset_does_not_read_the_fixture_folder():
    # The values are embedded: compare a few against the golden YAML (golden README §2 table).
    cfg = PRESETS["tiny"]
    assert cfg.image_size == (8, 8) and cfg.temporal_length == 8 and cfg.resolution == (64, 64)
    assert cfg.unet["model_channels"] == 32 and cfg.unet["channel_mult"] == [1, 2, 2]
    assert cfg.epipolar["attention_resolution"] == [4, 2, 1]
    assert cfg.text_encoder_arch["text_cfg"]["width"] == 64


@pytest.mark.parametrize("name, prediction, zsnr, alpha, fs_type, default_fs, resolution", [
    ("cami2v-256", "eps", False, True, "fs", 3, (256, 256)),
    ("cameractrl-256", "eps", False, True, "fs", 3, (256, 256)),
    ("motionctrl-256", "eps", False, True, "fs", 3, (256, 256)),
    ("dynamicrafter-256", "eps", False, True, "fs", 3, (256, 256)),
    ("cami2v-512", "v", True, False, "fps", 10, (320, 512)),
    ("realcam-i2v-256", "eps", False, True, "fs", 3, (256, 256)),
    ("realcam-i2v-512", "v", True, False, "fps", 10, (320, 512)),
    ("dynamicrafter-512", "v", True, False, "fps", 10, (320, 512)),
])
def test_full_size_preset_settings(name, prediction, zsnr, alpha, fs_type, default_fs, resolution):
    # spec §2.1 table and §7.5
    cfg = PRESETS[name]
    assert cfg.parameterization == prediction
    assert cfg.rescale_betas_zero_snr == zsnr and cfg.use_dynamic_rescale == zsnr
    assert cfg.unet["image_cross_attention_scale_learnable"] == alpha
    assert cfg.fps_condition_type == fs_type and cfg.default_fs == default_fs
    assert cfg.resolution == resolution and cfg.temporal_length == 16


def test_epipolar_strides_of_the_cami2v_presets():
    # spec §4.4.7: 256 builds masks for [8,4,2,1], the released 512 config for [8,4,2] with origin 320x512.
    e256, e512 = PRESETS["cami2v-256"].epipolar, PRESETS["cami2v-512"].epipolar
    assert (e256["origin_h"], e256["origin_w"], e256["attention_resolution"]) == (256, 256, [8, 4, 2, 1])
    assert (e512["origin_h"], e512["origin_w"], e512["attention_resolution"]) == (320, 512, [8, 4, 2])


def test_camera_parts_match_the_key_manifests():
    # keys/README.md: pose encoder only in CamI2V / CameraCtrl, epipolar only in CamI2V, pose_dim 12 for MotionCtrl.
    for name in ("cami2v-256", "cami2v-512", "cameractrl-256", "motionctrl-256", "dynamicrafter-256",
                 "realcam-i2v-256", "realcam-i2v-512"):
        manifest = load_json(f"{name.replace('-', '_').replace('realcam_i2v', 'cami2v')}.json", base=KEYS_DIR)
        cfg = PRESETS[name]
        assert (cfg.pose_encoder is not None) == any(k.startswith("pose_encoder.") for k in manifest)
        assert (cfg.epipolar is not None) == any(".epipolar." in k for k in manifest)
    cc = load_json("motionctrl_256.json", base=KEYS_DIR)["model.diffusion_model.init_attn.0.transformer_blocks.0.cc_projection.weight"]
    assert cc[1] - cc[0] == PRESETS["motionctrl-256"].pose_dim == 12


def test_translation_unit_is_checked_and_old_headers_read_as_relative():
    with pytest.raises(ConfigError, match="translation_unit must be one of 'relative', 'metre'"):
        PRESETS["cami2v-256"].replace(translation_unit="feet")
    old = {k: v for k, v in PRESETS["cami2v-256"].to_dict().items()
           if k != "translation_unit"}
    assert ModelConfig.from_dict(old) == PRESETS["cami2v-256"]  # a header written before these fields existed


def test_invalid_values_name_the_field_and_choices():
    with pytest.raises(ConfigError, match="parameterization must be one of 'eps', 'v'"):
        PRESETS["tiny"].replace(parameterization="x0")
    with pytest.raises(ConfigError, match="needs pose_encoder"):
        PRESETS["tiny"].replace(pose_encoder=None)
    with pytest.raises(ConfigError, match="unknown model-config field"):
        ModelConfig.from_dict({**PRESETS["tiny"].to_dict(), "bogus": 1})
    with pytest.raises(ConfigError, match="not supported"):
        PRESETS["tiny"].replace(epipolar={**PRESETS["tiny"].epipolar, "apply_epipolar_soft_mask": True})
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("cami2v-1024")


def test_with_variant_needs_camera_parts_it_cannot_invent():
    with pytest.raises(ConfigError, match="no pose_encoder"):
        PRESETS["dynamicrafter-256"].with_variant("cameractrl")
    assert PRESETS["cami2v-256"].with_variant("dynamicrafter") == PRESETS["dynamicrafter-256"]


def test_resolve_config_accepts_names_paths_and_json(tmp_path):
    assert resolve_config("tiny") == PRESETS["tiny"]
    (tmp_path / "m.json").write_text(PRESETS["cami2v-512"].to_json())
    assert resolve_config(tmp_path / "m.json") == PRESETS["cami2v-512"]
    assert resolve_config(str(require(CONFIGS / "motionctrl_tiny.yaml"))).variant == "motionctrl"
    with pytest.raises(ConfigError, match="neither a preset"):
        resolve_config("nonsense")


def test_unknown_yaml_target_is_refused(tmp_path):
    text = require(CONFIGS / "cami2v_tiny.yaml").read_text().replace("CameraControl.CamI2V.cami2v.CamI2V",
                                                                      "some.pkg.RealCamI2V")
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match="RealCamI2V"):
        from_yaml(tmp_path / "c.yaml")


# -- the epipolar ablation switches (paper Table 3) ------------------------------------------------------------------

def with_switches(name, **switches):
    return PRESETS[name].replace(epipolar={**PRESETS[name].epipolar, **switches})


@pytest.mark.parametrize("switch, kind", [("only_on_cond_frame", "cond_frame"), ("is_3d_full_attn", "full")])
@pytest.mark.parametrize("name", ["tiny", "cami2v-256"])
def test_ablation_switches_build_and_round_trip(name, switch, kind):
    cfg = with_switches(name, **{switch: True})
    assert epipolar_attention_kind(cfg.epipolar) == kind
    assert ModelConfig.from_json(cfg.to_json()) == cfg  # the switch travels in a checkpoint's header
    assert epipolar_attention_kind(PRESETS[name].epipolar) == "epipolar"
    assert epipolar_attention_kind(PRESETS["cameractrl-256"].epipolar) is None


def test_ablation_switches_are_exclusive():
    with pytest.raises(ConfigError, match="at most one"):
        with_switches("tiny", only_on_cond_frame=True, is_3d_full_attn=True)


@pytest.mark.parametrize("switch", UNSUPPORTED_EPIPOLAR_SWITCHES)
def test_unsupported_switches_are_refused_by_the_config_and_the_module(switch):
    # one list, used by both: the config check and the module that would otherwise compute something else
    from cami2v_core.modules.epipolar import EpipolarAttention
    with pytest.raises(ConfigError, match=switch) as e:
        with_switches("tiny", **{switch: True})
    assert all(name in str(e.value) for name in EPIPOLAR_SWITCHES)  # says what is supported
    with pytest.raises(ConfigError, match=switch):
        EpipolarAttention(32, 2, **{switch: True})
    with_switches("tiny", **{switch: False})  # off is the released configs' value: accepted
    EpipolarAttention(32, 2, **{switch: False})


def test_reference_frame_attention_needs_a_mask_at_every_level():
    # The released 512 config builds no mask for the ds-1 level (spec §4.4.7), which CamI2V then runs unmasked;
    # with only_on_cond_frame that block would attend every frame, so the config is refused and says what to add.
    assert epipolar_attention_kind(with_switches("cami2v-512", is_3d_full_attn=True).epipolar) == "full"
    with pytest.raises(ConfigError, match=r"ds=\[1\].*add \[1\] to epipolar.attention_resolution"):
        with_switches("cami2v-512", only_on_cond_frame=True)
    fixed = with_switches("cami2v-512", only_on_cond_frame=True, attention_resolution=[8, 4, 2, 1])
    assert fixed.epipolar["only_on_cond_frame"]


def test_original_yaml_with_an_ablation_switch(tmp_path):
    text = require(CONFIGS / "cami2v_tiny.yaml").read_text()
    assert "epipolar_config:" in text
    (tmp_path / "c.yaml").write_text(text.replace("epipolar_config:", "epipolar_config:\n      only_on_cond_frame: true"))
    for p in CONFIGS.glob("*.json"):
        shutil.copy(p, tmp_path / p.name)
    cfg = from_yaml(tmp_path / "c.yaml")
    assert epipolar_attention_kind(cfg.epipolar) == "cond_frame"
