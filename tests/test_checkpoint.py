"""Checkpoint reading, variant detection, error messages, conversion and the command line."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cami2v_core.checkpoint import (CONFIG_METADATA_KEY, CheckpointError, DamagedCheckpointError, Detected,
                                    NotACheckpointError, UnsafeCheckpointError, check_state_dict, convert,
                                    detect_variant, infer_config, load_shapes, load_state_dict, normalize_state_dict,
                                    read_safetensors_header, save_safetensors)
from cami2v_core.configs import PRESETS, ModelConfig
from tests.golden import KEYS_DIR, REPO, golden_state_dict, load_json

MANIFESTS = {
    "cami2v_256": Detected("cami2v", (256, 256), "eps"),
    "cami2v_512": Detected("cami2v", (320, 512), "v"),
    "cameractrl_256": Detected("cameractrl", (256, 256), "eps"),
    "motionctrl_256": Detected("motionctrl", (256, 256), "eps"),
    "dynamicrafter_256": Detected("dynamicrafter", (256, 256), "eps"),
    "dynamicrafter_512": Detected("dynamicrafter", (320, 512), "v"),
}


def meta_state_dict(manifest: str) -> dict[str, torch.Tensor]:
    """Shape-only state dict of a real-checkpoint key manifest."""
    return {k: torch.empty(s, device="meta") for k, s in load_json(f"{manifest}.json", base=KEYS_DIR).items()}


def small(sd: dict[str, torch.Tensor], keep: int = 64) -> dict[str, torch.Tensor]:
    """A few keys of a state dict, for file-format tests that do not need a whole model."""
    return {k: sd[k] for k in list(sd)[:keep]}


# -- detection ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("manifest", sorted(MANIFESTS))
def test_detect_variant_of_real_key_manifests(manifest):
    assert detect_variant(meta_state_dict(manifest)) == MANIFESTS[manifest]


@pytest.mark.parametrize("manifest", sorted(MANIFESTS))
def test_infer_config_picks_the_preset(manifest):
    assert infer_config(meta_state_dict(manifest)) == PRESETS[manifest.replace("_", "-")]


@pytest.mark.parametrize("variant", ["cami2v", "cameractrl", "motionctrl"])
def test_detect_variant_of_golden_tiny_models(variant):
    sd = golden_state_dict(variant)
    assert detect_variant(sd) == Detected(variant, (64, 64), "eps")
    assert infer_config(sd) == PRESETS["tiny"].with_variant(variant)


def test_dynamicrafter_256_old_fps_name_is_renamed():
    sd = meta_state_dict("dynamicrafter_256")
    old = OrderedDict((k.replace("fps_embedding", "framestride_embed"), v) for k, v in sd.items())
    assert any("framestride_embed" in k for k in old)
    assert list(normalize_state_dict({"state_dict": old})) == list(sd)


def test_wrappers_are_unwrapped():
    sd = {"a.weight": torch.ones(2), "b": torch.zeros(1)}
    assert normalize_state_dict({"state_dict": sd, "epoch": 3}) == sd
    assert normalize_state_dict({"module": sd}) == sd
    assert normalize_state_dict({"module": {"_forward_module." + k: v for k, v in sd.items()}}) == sd
    with pytest.raises(CheckpointError, match="not tensors"):
        normalize_state_dict({"a": torch.ones(1), "step": 5})


def sd15_like() -> dict[str, torch.Tensor]:
    """A tiny state dict with Stable Diffusion 1.5 key names and its characteristic 4-channel input conv."""
    return {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(8, 12),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(10, 12),
        "first_stage_model.encoder.conv_in.weight": torch.zeros(4, 3, 3, 3),
        "alphas_cumprod": torch.ones(10),
    }


def test_unrelated_checkpoint_says_what_it_looks_like(tmp_path):
    path = tmp_path / "v1-5-pruned.safetensors"
    save_file(sd15_like(), str(path))
    sd, meta = load_state_dict(path)
    with pytest.raises(CheckpointError) as e:
        infer_config(sd, meta)
    msg = str(e.value)
    assert "Stable Diffusion 1.x" in msg and "Expected" in msg and "temopral_conv" in msg


# -- bad files ------------------------------------------------------------------------------------------------------

def test_truncated_safetensors_is_reported_as_interrupted_download(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(small(golden_state_dict()), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.*download it again"):
        load_state_dict(path)
    path.write_bytes(data[:20])  # cut inside the header
    with pytest.raises(CheckpointError, match="truncated"):
        load_state_dict(path)


def test_truncated_torch_file_is_reported(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(small(golden_state_dict()), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged or truncated"):
        load_state_dict(path)


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_pickle_that_needs_code_is_refused_without_unsafe_advice(tmp_path, zipped):
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": small(golden_state_dict()), "hparams": argparse.Namespace(lr=1e-4)}, path,
               _use_new_zipfile_serialization=zipped)
    with pytest.raises(UnsafeCheckpointError) as e:
        load_state_dict(path)
    msg = str(e.value)
    assert str(path) in msg and "cannot be loaded safely" in msg and "argparse.Namespace" in msg
    assert ".safetensors release" in msg and "convert it to .safetensors yourself" in msg
    assert "weights_only" not in msg and "torch.load" not in msg  # never advise running the file's code


def random_bytes(seed: int, n: int = 5000) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# The first bytes that steer a format sniffer: none, a zip signature, pickle protocol 2, a plausible
# safetensors length + "{", torch's legacy magic.
PREFIXES = {"none": b"", "zip": b"PK\x03\x04", "pickle": b"\x80\x02", "safetensors": (300).to_bytes(8, "little") + b"{",
            "legacy-torch": b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"}


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("prefix", sorted(PREFIXES))
def test_random_bytes_are_one_message_naming_the_file(tmp_path, suffix, prefix):
    for seed in range(4):
        path = tmp_path / f"model{seed}{suffix}"
        data = PREFIXES[prefix] + random_bytes(seed)[len(PREFIXES[prefix]):]
        path.write_bytes(data)
        for read in (load_state_dict, load_shapes):
            with pytest.raises(CheckpointError) as e:
                read(path)
            msg = str(e.value)
            assert str(path) in msg and "README.md" in msg, msg
            assert "weights_only" not in msg and "needs Python code" not in msg, msg


def test_random_bytes_say_what_they_are(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(random_bytes(0))
    with pytest.raises(NotACheckpointError, match="neither a safetensors file nor a PyTorch checkpoint"):
        load_state_dict(path)
    path.write_bytes(b"PK\x03\x04" + random_bytes(1)[4:])
    with pytest.raises(DamagedCheckpointError, match="damaged or truncated PyTorch checkpoint"):
        load_state_dict(path)


@pytest.mark.parametrize("name, content, error, words", [
    ("256_cami2v.pt", "version https://git-lfs.github.com/spec/v1\noid sha256:" + "ab" * 32 + "\nsize 5489000000\n",
     NotACheckpointError, ["Git LFS pointer", "git lfs pull", "README.md"]),
    ("256_cami2v.pt", "<!DOCTYPE html>\n<html><head><title>Hugging Face</title></head><body>Sign in</body></html>",
     NotACheckpointError, ["web page", "resolve/main", "README.md"]),
    ("model.safetensors", "  \n<html>\n<body>502 Bad Gateway</body></html>\n", NotACheckpointError, ["web page"]),
    ("model.safetensors", '{"error":"Repository not found"}', NotACheckpointError,
     ["text file", "Repository not found", "README.md"]),
    ("model.ckpt", "", DamagedCheckpointError, ["empty", "README.md"]),
    ("model.pt", "\x01\x02\x03", DamagedCheckpointError, ["too short", "README.md"]),
])
def test_wrong_content_is_named(tmp_path, name, content, error, words):
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(error) as e:
        load_state_dict(path)
    msg = str(e.value)
    assert str(path) in msg
    for word in words:
        assert word in msg, (word, msg)


def test_plain_pickle_is_refused_as_unsafe(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(pickle.dumps({"a": [1, 2, 3]}, protocol=4))
    with pytest.raises(UnsafeCheckpointError, match="plain Python pickle"):
        load_state_dict(path)


def test_safetensors_with_a_bad_header_entry_is_damaged(tmp_path):
    header = json.dumps({"a": {"dtype": "F32", "shape": [2]}}).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)
    with pytest.raises(DamagedCheckpointError, match="not tensor descriptions"):
        load_state_dict(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello, this is text")
    with pytest.raises(CheckpointError, match="neither a safetensors file nor a PyTorch checkpoint"):
        load_state_dict(path)


def test_strict_load_names_the_file_on_bad_keys(tmp_path):
    from cami2v_core.model import load_model

    sd = golden_state_dict()
    dropped = next(k for k in sd if k.startswith("model.diffusion_model."))
    sd = {k: v for k, v in sd.items() if k != dropped}
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "edited.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    msg = str(e.value)
    assert msg.count(str(path)) >= 1 and dropped in msg and "extra.weight" in msg


def test_train_vae_init_with_wrong_keys_names_the_file(tmp_path):
    from PIL import Image

    from training import train_vae

    clip = tmp_path / "data" / "video_clips" / "train" / "s" / "c"
    clip.mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(clip / "00000.png")
    init = tmp_path / "not_a_vae.safetensors"
    save_file({"first_stage_model.encoder.conv_in.weight": torch.zeros(3, 3)}, str(init))
    with pytest.raises(CheckpointError) as e:
        train_vae.main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "v.safetensors"),
                        "--init", str(init), "--steps", "1"])
    assert str(init) in str(e.value) and "is missing" in str(e.value)


def test_missing_keys_are_grouped_by_prefix():
    expected = {k: v.shape for k, v in meta_state_dict("cami2v_256").items()}
    sd = {k: v for k, v in meta_state_dict("cami2v_256").items()
          if not k.startswith("first_stage_model.") and ".output_blocks.11." not in k}
    n_vae = sum(k.startswith("first_stage_model.") for k in expected)
    n_ob11 = sum(".output_blocks.11." in k for k in expected)
    with pytest.raises(CheckpointError) as e:
        check_state_dict(sd, expected, "cami2v-256")
    msg = str(e.value)
    assert f"model.diffusion_model.output_blocks ({n_ob11} keys" in msg
    assert f"first_stage_model ({n_vae} keys, e.g. first_stage_model." in msg


def test_shape_mismatch_names_key_and_both_shapes():
    expected = {"a.weight": (4, 3)}
    with pytest.raises(CheckpointError, match=r"a\.weight: expected \[4, 3\], found \[3, 4\]"):
        check_state_dict({"a.weight": torch.zeros(3, 4)}, expected, "tiny")


# -- reading and writing --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["pt", "ckpt_wrapped", "safetensors"])
def test_formats_load_identically(tmp_path, fmt):
    sd = small(golden_state_dict(), 200)
    if fmt == "pt":
        path = tmp_path / "m.pt"
        torch.save(sd, path)
    elif fmt == "ckpt_wrapped":
        path = tmp_path / "m.ckpt"
        torch.save({"state_dict": sd, "global_step": 10}, path)
    else:
        path = tmp_path / "m.safetensors"
        save_file(sd, str(path))
    got, _ = load_state_dict(path)
    assert list(got) == list(sd)
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    half, _ = load_state_dict(path, dtype="fp16")
    assert all(v.dtype == torch.float16 for v in half.values())
    assert torch.equal(half[next(iter(sd))], sd[next(iter(sd))].half())


def test_streaming_writer_is_read_back_by_safetensors(tmp_path):
    sd = {"f32": torch.randn(3, 5), "f16": torch.randn(7).half(), "bf16": torch.randn(2, 2).bfloat16(),
          "i64": torch.arange(5), "scalar": torch.tensor(1.5), "strided": torch.randn(4, 6).t()}
    path = tmp_path / "w.safetensors"
    save_safetensors(sd, path, metadata={"note": "x"})
    back = load_file(str(path))
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    assert read_safetensors_header(path)[1] == {"note": "x"}
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temp file left behind


def test_convert_writes_config_and_loads_back(tmp_path):
    sd = golden_state_dict("cameractrl")
    src, dst = tmp_path / "cc.pt", tmp_path / "cc.safetensors"
    torch.save({"module": sd}, src)
    config = convert(src, dst, dtype="bf16")
    assert config == PRESETS["tiny"].with_variant("cameractrl")
    back = load_file(str(dst))
    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k].bfloat16()) for k in sd)
    _, meta = read_safetensors_header(dst)
    assert ModelConfig.from_json(meta[CONFIG_METADATA_KEY]) == config


def test_header_config_wins_over_detection(tmp_path):
    sd = small(golden_state_dict(), 10)  # too little to detect anything
    path = tmp_path / "custom.safetensors"
    cfg = PRESETS["tiny"].replace(base_scale=0.9)  # a custom value no preset has
    save_safetensors(sd, path, {CONFIG_METADATA_KEY: cfg.to_json()})
    shapes, meta = load_shapes(path)
    assert all(v.device.type == "meta" for v in shapes.values())
    assert infer_config(shapes, meta) == cfg


# -- command line ---------------------------------------------------------------------------------------------------

def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "cami2v_core", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


def test_cli_inspect_and_convert(tmp_path):
    sd = golden_state_dict("motionctrl")
    src = tmp_path / "mc.pt"
    torch.save(sd, src)
    out = run_cli("inspect", src, "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["variant"] == "motionctrl" and info["resolution"] == [64, 64] and info["prediction"] == "eps"
    assert info["total"] == sum(v.numel() for v in sd.values())
    assert info["parameters"]["first_stage_model"] == sum(v.numel() for k, v in sd.items()
                                                          if k.startswith("first_stage_model."))
    dst = tmp_path / "mc.safetensors"
    out = run_cli("convert", src, dst, "--dtype", "fp16")
    assert out.returncode == 0, out.stderr
    out = run_cli("inspect", dst, "--json")
    info = json.loads(out.stdout)
    assert info["config_source"] == "file header" and list(info["dtypes"]) == ["float16"]


def test_cli_bad_input_is_one_message_not_a_traceback(tmp_path):
    bad = tmp_path / "v1-5.safetensors"
    save_file(sd15_like(), str(bad))
    for args in (("inspect", bad), ("inspect", tmp_path / "absent.pt"), ("convert", bad, tmp_path / "o.safetensors"),
                 ("convert", bad, tmp_path / "o.bin")):
        out = run_cli(*args)
        assert out.returncode == 2
        assert "Traceback" not in out.stderr and out.stderr.startswith("error: ")
    assert not (tmp_path / "o.safetensors").exists()
