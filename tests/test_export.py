"""training.export: release files and the VAE-only copy a training config starts from."""

import json

import pytest
import torch
from safetensors import safe_open

from cami2v_core import load_model
from cami2v_core.bundled import bundled_model_path
from training.export import export, main
from training.train import model_config_from_section


@pytest.fixture(scope="module")
def bundled():
    path = bundled_model_path()
    with safe_open(str(path), framework="pt") as f:
        cfg = json.loads(f.metadata()["cami2v_config"])
        vae = {k: f.get_tensor(k) for k in f.keys() if k.startswith("first_stage_model.")}
    return path, cfg, vae


def test_vae_only_copies_the_vae_and_its_latent_std(tmp_path, bundled):
    path, cfg, vae = bundled
    out = tmp_path / "vae.safetensors"
    assert main([str(path), "--vae-only", "--dtype", "fp32", "--out", str(out)]) == 0
    with safe_open(str(out), framework="pt") as f:
        assert set(f.keys()) == set(vae)
        assert all(torch.equal(f.get_tensor(k), vae[k].float()) for k in vae)
        std = float(f.metadata()["latent_std"])
    assert std == pytest.approx(1.0 / cfg["scale_factor"], rel=1e-12)
    # a training config pointing at it gets the bundled model's scale factor back
    section = {"preset": "tiny", "scale_factor_from": str(out)}
    assert model_config_from_section(section).scale_factor == pytest.approx(cfg["scale_factor"], abs=1e-5)


def test_vae_only_refuses_a_file_without_a_vae(tmp_path):
    from safetensors.torch import save_file
    src = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(2)}, str(src))
    with pytest.raises(SystemExit, match="no VAE"):
        main([str(src), "--vae-only", "--out", str(tmp_path / "o.safetensors")])


def test_export_writes_a_strict_loadable_release_file(tmp_path, bundled):
    path, cfg, _ = bundled
    out = tmp_path / "release.safetensors"
    header = export(path, out, dtype="fp16", max_mb=25, note={"command": "train x", "steps": 3})
    assert header["format"] == "cami2v-release" and header["command"] == "train x" and json.loads(header["steps"]) == 3
    a, b = load_model(path), load_model(out)
    assert a.config.to_dict() == b.config.to_dict()
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
