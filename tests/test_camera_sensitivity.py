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
from training.train import DiffusionObjective, model_config_from_section

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
    r = camera_sensitivity(model.eval(), batch[1], seeds=1, t_bins=2)
    assert r["loss_true"] == r["loss_swapped"] == r["loss_static"]
    assert [(b["t_lo"], b["t_hi"]) for b in r["bins"]] == [(0, 500), (500, 1000)]
    for band in r["bins"]:
        assert band["loss_true"] == band["loss_swapped"] == band["loss_static"]
        assert band["relative_gain"] == 0.0


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


def test_the_objective_draws_timesteps_inside_its_band(batch, monkeypatch):
    model = load_model(bundled_model_path()).eval()
    seen = []
    apply_model = model.apply_model

    def spy(x_t, t, *args, **kwargs):
        seen.append(t.clone())
        return apply_model(x_t, t, *args, **kwargs)

    monkeypatch.setattr(model, "apply_model", spy)
    with torch.no_grad():
        whole = DiffusionObjective(model, 0.0, False)(batch[1], torch.Generator().manual_seed(0))
        same = DiffusionObjective(model, 0.0, False, t_range=(0, 1000))(batch[1], torch.Generator().manual_seed(0))
        DiffusionObjective(model, 0.0, False, t_range=(900, 910))(batch[1], torch.Generator().manual_seed(0))
    assert whole.item() == same.item()  # the full band is exactly the training draw
    assert torch.equal(seen[0], seen[1])
    assert ((seen[2] >= 900) & (seen[2] < 910)).all()
    with pytest.raises(ValueError, match="t_range"):
        DiffusionObjective(model, 0.0, False, t_range=(500, 500))


def test_bands_split_the_timesteps_and_bad_counts_are_refused(batch, capsys):
    r = camera_sensitivity(load_model(bundled_model_path()).eval(), batch[1], seeds=1, t_bins=4)
    assert [(b["t_lo"], b["t_hi"]) for b in r["bins"]] == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    for band in r["bins"]:
        assert band["relative_gain"] == pytest.approx(band["static_minus_true"] / band["loss_static"])
    assert len({round(b["loss_true"], 6) for b in r["bins"]}) == 4  # each band is scored on its own timesteps
    with pytest.raises(ValueError, match="t_bins"):
        camera_sensitivity(load_model(bundled_model_path()).eval(), batch[1], seeds=1, t_bins=0)
    assert main(["--ckpt", str(bundled_model_path()), "--data", str(batch[0]), "--clips", "2", "--seeds", "1",
                 "--t-bins", "0"]) == 2
    assert "t_bins" in capsys.readouterr().err
