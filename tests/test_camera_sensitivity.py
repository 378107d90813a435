"""training.camera_sensitivity: the loss with true / swapped / static cameras."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cami2v_core import build_model, load_model
from cami2v_core.bundled import bundled_model_path
from training.camera_sensitivity import camera_sensitivity, main
from training.data import RealEstate10KDataset
from training.train import model_config_from_section

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """4 clips of 2 synthetic rooms (8 frames at stride 2, 64x64), the bundled model's size."""
    out = tmp_path_factory.mktemp("synth")
    subprocess.run([sys.executable, "-m", "training.synthetic", "--out", str(out), "--scenes", "2", "--seed", "3",
                    "--frames", "16", "--size", "64", "64", "--split", "test", "--supersample", "1", "--quiet"],
                   check=True, cwd=ROOT)
    ds = RealEstate10KDataset(out, "test", video_length=8, resolution=(64, 64), frame_stride=(2, 2))
    return out, torch.utils.data.default_collate([ds[i] for i in range(len(ds))])


def test_a_model_without_camera_input_scores_all_cases_the_same(batch):
    cfg = model_config_from_section({"preset": "tiny", "overrides": {
        "variant": "dynamicrafter", "pose_encoder": None, "epipolar": None, "parameterization": "v",
        "rescale_betas_zero_snr": True, "unet": {"default_fs": 2}}})
    bundled = load_model(bundled_model_path())
    model = build_model(cfg.replace(scale_factor=bundled.config.scale_factor))
    missing, _ = model.load_state_dict(bundled.state_dict(), strict=False)
    assert not missing
    r = camera_sensitivity(model.eval(), batch[1], seeds=1)
    assert r["loss_true"] == r["loss_swapped"] == r["loss_static"]


def test_the_bundled_model_does_better_with_the_true_cameras(batch):
    # The shipped tiny CamI2V must have learned to use its camera input (README, training/README "Bundled").
    r = camera_sensitivity(load_model(bundled_model_path()), batch[1], seeds=2)
    assert r["loss_true"] < r["loss_static"]
    assert r["static_minus_true"] == pytest.approx(r["loss_static"] - r["loss_true"])


def test_cli_prints_json_and_explains_bad_input(batch, tmp_path, capsys):
    assert main(["--ckpt", str(bundled_model_path()), "--data", str(batch[0]), "--clips", "2", "--seeds", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["clips"] == 2 and {"loss_true", "loss_swapped", "loss_static"} <= set(out)
    assert main(["--ckpt", str(tmp_path / "nope.safetensors"), "--data", str(batch[0])]) == 2
    assert "nope.safetensors" in capsys.readouterr().err
