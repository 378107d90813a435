"""RealCam-I2V: presets, partial checkpoints merged over their DynamiCrafter base, and the command line for them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cami2v_core import __main__ as cli
from cami2v_core.checkpoint import (DYNAMICRAFTER_BASES, CheckpointError, Partial, check_base, check_state_dict,
                                    config_for, detect_partial, is_partial, load_shapes, merge_over_base,
                                    save_safetensors)
from cami2v_core.configs import PRESETS
from cami2v_core.errors import CamI2VError
from cami2v_core.model import build_model, load_model
from cami2v_core.settings import DEFAULTS
from tests.golden import KEYS_DIR, load_json

CAMERA_MARKERS = ("pose_encoder.", ".pluker_projection.", ".epipolar.")
# realcam spec §5: the RealCam demo's negative prompt, as written there.
REALCAM_NEGATIVE = ("Fast movement, jittery motion, abrupt transitions, distorted body, missing limbs, unnatural "
                    "posture, blurry, cropped, extra limbs, bad anatomy, deformed, glitchy motion, artifacts.")


def is_camera_key(key: str) -> bool:
    """The layers RealCam-I2V trains (realcam spec §1): pose encoder, Plücker projections, epipolar attention."""
    return key.startswith("pose_encoder.") or any(m in key for m in CAMERA_MARKERS[1:])


def old_fps_names(sd):
    """The DynamiCrafter 256 release's key names: fps_embedding was called framestride_embed (spec §1.2)."""
    return {k.replace("fps_embedding", "framestride_embed"): v for k, v in sd.items()}


def manifest(name: str) -> dict[str, torch.Tensor]:
    """Shape-only state dict of a real-checkpoint key manifest."""
    return {k: torch.empty(s, device="meta") for k, s in load_json(f"{name}.json", base=KEYS_DIR).items()}


# -- presets ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("res", ["256", "512"])
def test_preset_on_meta_has_exactly_the_cami2v_checkpoint_keys(res):
    expected = load_json(f"cami2v_{res}.json", base=KEYS_DIR)
    got = {k: list(v.shape) for k, v in build_model(f"realcam-i2v-{res}", device="meta").state_dict().items()}
    assert set(got) == set(expected)
    assert {k: v for k, v in got.items() if v != expected[k]} == {}


@pytest.mark.parametrize("res", ["256", "512"])
def test_preset_is_cami2v_with_metric_translations_and_the_realcam_demo_defaults(res):
    realcam, cami2v = PRESETS[f"realcam-i2v-{res}"], PRESETS[f"cami2v-{res}"]
    assert realcam.translation_unit == "metre" and cami2v.translation_unit == "relative"
    # Nothing else differs: same network, schedule and conditioning (realcam spec §2).
    assert realcam.replace(translation_unit=cami2v.translation_unit) == cami2v
    # Its demo's defaults (cfg 5.5, the negative prompt, realcam spec §5) are the shared ones.
    assert DEFAULTS.cfg_text == 5.5 and DEFAULTS.negative_prompt == REALCAM_NEGATIVE


# -- partial files at real size (shapes only) ------------------------------------------------------------------------

@pytest.mark.parametrize("res", ["256", "512"])
def test_real_size_partial_over_its_base_gives_the_cami2v_key_set(res):
    whole = manifest(f"cami2v_{res}")
    partial = {k: v for k, v in whole.items() if is_camera_key(k)}
    base = manifest(f"dynamicrafter_{res}")
    if res == "256":
        base = old_fps_names(base)  # the 256 base file's names
    info = detect_partial(partial, {}, f"{res}_realcam-i2v_50k.safetensors")
    assert is_partial(partial) and not is_partial(whole) and not is_partial(base)
    assert info == Partial(res) and info.preset == f"realcam-i2v-{res}"
    check_base(info, partial, base, "base")
    merged = merge_over_base(base, partial)
    expected = {k: v.shape for k, v in build_model(f"realcam-i2v-{res}", device="meta").state_dict().items()}
    check_state_dict(merged, expected, "realcam")  # the strict-load check: same keys, same shapes
    assert config_for(merged, {}, info) == PRESETS[f"realcam-i2v-{res}"]


def test_a_whole_cami2v_file_is_still_cami2v():
    for res in ("256", "512"):
        whole = manifest(f"cami2v_{res}")
        assert detect_partial(whole, {}, f"{res}_realcam-i2v_50k.safetensors") is None
        # a whole file that lost its VAE is a broken whole file (missing-keys message), not a partial one
        assert not is_partial({k: v for k, v in whole.items() if not k.startswith("first_stage_model.")})


@pytest.mark.parametrize("res, wrong", [("512", "dynamicrafter_256"), ("256", "dynamicrafter_512")])
def test_base_of_the_other_resolution_is_refused_by_name(res, wrong):
    partial = {k: v for k, v in manifest(f"cami2v_{res}").items() if is_camera_key(k)}
    with pytest.raises(CheckpointError) as e:
        check_base(Partial(res), partial, manifest(wrong), "model.ckpt")
    assert DYNAMICRAFTER_BASES[res].label in str(e.value) and DYNAMICRAFTER_BASES[res].url in str(e.value)


def test_a_camera_model_is_not_a_base():
    partial = {k: v for k, v in manifest("cami2v_256").items() if is_camera_key(k)}
    with pytest.raises(CheckpointError, match="is a cameractrl model"):
        check_base(Partial("256"), partial, manifest("cameractrl_256"), "256_cameractrl.pt")


def test_partial_resolution_from_keys_and_name():
    cam = {k: v for k, v in manifest("cami2v_512").items() if is_camera_key(k)}
    assert detect_partial(cam, {}, "realcam.safetensors") == Partial(None)
    assert detect_partial(cam, {}, "my_512_model_256.safetensors") == Partial(None)  # contradictory: unknown
    assert detect_partial({**cam, "scale_arr": torch.empty(1400)}, {}, "x.safetensors") == Partial("512")
    alpha = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.alpha"
    assert detect_partial({**cam, alpha: torch.empty(())}, {}, "x.safetensors") == Partial("256")


# -- a tiny random base + partial pair through the loader ------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_pair():
    """(original whole state dict, base dict in the 256 release's layout, partial dict) of a random tiny CamI2V.

    The partial also carries the frame-stride MLP under its old name with values other than the base's, so the
    merge must both rename it and let the partial win.
    """
    torch.manual_seed(0)
    original = {k: v.clone() for k, v in build_model("tiny").state_dict().items()}
    fps = {k: v for k, v in original.items() if "fps_embedding" in k}
    assert fps
    base = {k: v.clone() for k, v in original.items() if not is_camera_key(k)}
    for k in fps:
        base[k] = base[k] + 1.0
    partial = {k: v for k, v in original.items() if is_camera_key(k)}
    partial.update(fps)
    dc_keys = set(build_model(PRESETS["tiny"].with_variant("dynamicrafter"), device="meta").state_dict())
    assert set(base) == dc_keys  # the base is a whole DynamiCrafter
    return original, old_fps_names(base), old_fps_names(partial)


def write_pair(folder: Path, tiny_pair, partial_name="realcam_tiny.safetensors", base_at="model.ckpt"):
    """Write the partial as safetensors and the base as a Lightning .ckpt ({'state_dict': ...}) under folder."""
    _, base, partial = tiny_pair
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(partial, folder / partial_name)
    if base_at is not None:
        (folder / base_at).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": base}, folder / base_at)
    return folder / partial_name


def assert_is_original(model, original):
    got = model.state_dict()
    assert set(got) == set(original)
    differ = [k for k in original if got[k].dtype != original[k].dtype or not torch.equal(got[k], original[k])]
    assert differ == []


def test_explicit_base_round_trips_to_the_original_weights(tmp_path, tiny_pair):
    original = tiny_pair[0]
    partial = write_pair(tmp_path / "cami2v", tiny_pair, base_at="../elsewhere/dc.ckpt")
    assert_is_original(load_model(partial, base=tmp_path / "elsewhere" / "dc.ckpt"), original)
    # and from state dicts in memory
    assert_is_original(load_model(tiny_pair[2], base=tiny_pair[1]), original)


@pytest.mark.parametrize("where", ["beside", "folder", "search_dir", "one_level_down"])
def test_base_is_found_next_to_the_file_or_in_a_search_dir(tmp_path, tiny_pair, where):
    models = tmp_path / "models"
    base_at = {"beside": "model.ckpt", "folder": "DynamiCrafter/model.ckpt", "search_dir": None,
               "one_level_down": None}[where]
    partial = write_pair(models / "cami2v", tiny_pair, base_at=base_at)
    if where == "search_dir":
        torch.save({"state_dict": tiny_pair[1]}, _mkdir(tmp_path / "elsewhere" / "dynamicrafter") / "model.ckpt")
        search = [tmp_path / "elsewhere"]
    elif where == "one_level_down":
        torch.save({"state_dict": tiny_pair[1]}, _mkdir(models / "checkpoints" / "DynamiCrafter_512") / "model.ckpt")
        search = [models]
    else:
        search = []
    assert_is_original(load_model(partial, search_dirs=search), tiny_pair[0])


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_a_base_that_does_not_fit_is_skipped_for_one_that_does(tmp_path, tiny_pair):
    partial = write_pair(tmp_path / "cami2v", tiny_pair, base_at=None)
    # beside it: a whole CamI2V file named model.ckpt, not a DynamiCrafter base
    torch.save(tiny_pair[0], tmp_path / "cami2v" / "model.ckpt")
    torch.save({"state_dict": tiny_pair[1]}, _mkdir(tmp_path / "dc" / "DynamiCrafter") / "model.ckpt")
    assert_is_original(load_model(partial, search_dirs=[tmp_path / "dc"]), tiny_pair[0])
    with pytest.raises(CheckpointError, match="Found but not usable: model.ckpt"):
        load_model(partial)


@pytest.mark.parametrize("name, res", [("512_realcam-i2v_50k.safetensors", "512"),
                                       ("256_realcam-i2v_50k.safetensors", "256"), ("realcam_tiny.safetensors", None)])
def test_missing_base_says_which_file_to_download_and_where(tmp_path, tiny_pair, name, res):
    partial = write_pair(tmp_path / "cami2v", tiny_pair, partial_name=name, base_at=None)
    with pytest.raises(CheckpointError) as e:
        load_model(partial, search_dirs=[tmp_path / "nothing here"])
    msg = str(e.value)
    assert isinstance(e.value, CamI2VError) and "model.ckpt" in msg and "not found" in msg
    wanted = [DYNAMICRAFTER_BASES[res]] if res else list(DYNAMICRAFTER_BASES.values())
    for b in wanted:
        assert b.url in msg and f"{tmp_path / 'cami2v'}/{b.label}" in msg
    for other in set(DYNAMICRAFTER_BASES.values()) - set(wanted):
        # the 512 file must not point at the 256 base, nor the other way round
        assert f"{other.url} " not in msg and f"/{other.label}" not in msg
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tiny_pair[2])  # a partial state dict without base=


def test_a_whole_checkpoint_refuses_a_base(tmp_path, tiny_pair):
    save_safetensors(tiny_pair[0], tmp_path / "whole.safetensors")
    with pytest.raises(CheckpointError, match="needs no base"):
        load_model(tmp_path / "whole.safetensors", base=tiny_pair[1])


# -- command line ----------------------------------------------------------------------------------------------------

def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_inspect_tells_partial_from_whole_and_names_the_base(tmp_path, tiny_pair, capsys):
    partial = write_pair(tmp_path / "cami2v", tiny_pair, partial_name="512_realcam-i2v_50k.safetensors",
                         base_at=None)
    code, out, err = run(capsys, "inspect", partial, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["partial"] is True and info["variant"] == "cami2v" and info["preset"] == "realcam-i2v-512"
    assert info["base"] == {"file": "DynamiCrafter_512/model.ckpt", "url": DYNAMICRAFTER_BASES["512"].url,
                            "found": None}
    assert info["translation_unit"] == "metre" and info["resolution"] == [320, 512]
    assert info["keys"] == len(tiny_pair[2])
    code, out, _ = run(capsys, "inspect", partial)
    assert code == 0 and "partial" in out and "not found" in out and "DynamiCrafter_512/model.ckpt" in out

    tiny = write_pair(tmp_path / "tiny", tiny_pair, base_at="DynamiCrafter/model.ckpt")
    info = json.loads(run(capsys, "inspect", tiny, "--json")[1])
    assert info["partial"] is True and info["preset"] is None
    assert info["base"]["found"] == str(tmp_path / "tiny" / "DynamiCrafter" / "model.ckpt")

    base = tmp_path / "tiny" / "DynamiCrafter" / "model.ckpt"
    info = json.loads(run(capsys, "inspect", base, "--json")[1])
    assert info["partial"] is False and info["variant"] == "dynamicrafter"


def test_cli_convert_writes_the_merged_model_that_loads_alone(tmp_path, tiny_pair, capsys):
    partial = write_pair(tmp_path / "cami2v", tiny_pair, base_at=None)
    torch.save({"state_dict": tiny_pair[1]}, _mkdir(tmp_path / "dc" / "DynamiCrafter") / "model.ckpt")
    out = tmp_path / "merged.safetensors"
    code, _, err = run(capsys, "convert", partial, out)
    assert code == 2 and "not found" in err and not out.exists()
    code, stdout, err = run(capsys, "convert", partial, out, "--search-dir", tmp_path / "dc")
    assert code == 0, err
    assert "merged" in stdout
    info = json.loads(run(capsys, "inspect", out, "--json")[1])
    assert info["partial"] is False and info["config_source"] == "file header"
    assert_is_original(load_model(out), tiny_pair[0])
    out2 = tmp_path / "merged2.safetensors"
    code, _, err = run(capsys, "convert", partial, out2, "--base", tmp_path / "dc" / "DynamiCrafter" / "model.ckpt")
    assert code == 0, err
    a, _ = load_shapes(out)
    b, _ = load_shapes(out2)
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def test_realcam_preset_survives_conversion(tmp_path, tiny_pair, capsys):
    # A merged 512 RealCam file keeps its preset (metre translations, cfg 5.5) in the header.
    sd = {k: v for k, v in manifest("cami2v_512").items() if is_camera_key(k)}
    info = detect_partial(sd, {}, "512_realcam-i2v_50k.safetensors")
    cfg = config_for(merge_over_base(manifest("dynamicrafter_512"), sd), {}, info)
    assert cli._preset_name(cfg) == "realcam-i2v-512"


def test_cli_generate_accepts_a_partial_checkpoint(tmp_path, tiny_pair, capsys):
    from PIL import Image

    import trajectories
    from tests.synthetic_photo import make_photo

    image = tmp_path / "photo.png"
    Image.fromarray(make_photo(48, 64)).save(image)
    partial = write_pair(tmp_path / "cami2v", tiny_pair, base_at=None)
    base = tmp_path / "dc.ckpt"
    torch.save({"state_dict": tiny_pair[1]}, base)
    common = ["generate", "--image", image, "--camera", sorted(trajectories.PRESETS)[0], "--ckpt", partial,
              "--steps", 1, "--quiet", "--out"]
    code, _, err = run(capsys, *common, tmp_path / "a.gif")
    assert code == 2 and "not found" in err and "Traceback" not in err
    code, out, err = run(capsys, *common, tmp_path / "b.gif", "--base", base)
    assert code == 0, err
    assert (tmp_path / "b.gif").is_file()


# -- the ComfyUI loader node -------------------------------------------------------------------------------------

class FakeFolderPaths:
    """ComfyUI's folder_paths for a models tree with a cami2v and a checkpoints folder."""

    def __init__(self, root: Path):
        self.models_dir = str(root)
        self.folder_names_and_paths = {"checkpoints": ([str(root / "checkpoints")], {".ckpt", ".safetensors"})}

    def get_folder_paths(self, kind):
        return list(self.folder_names_and_paths[kind][0])

    def get_filename_list(self, kind):
        out = []
        for d in self.get_folder_paths(kind):
            out += [str(p.relative_to(d)) for p in Path(d).rglob("*") if p.is_file()]
        return sorted(out)

    def get_full_path(self, kind, name):
        for d in self.get_folder_paths(kind):
            if (Path(d) / name).is_file():
                return str(Path(d) / name)
        return None


def test_loader_node_merges_a_realcam_file_over_a_base_in_comfyuis_checkpoints(tmp_path, tiny_pair, monkeypatch):
    import sys

    from nodes import NODE_CLASS_MAPPINGS as NODES

    fake = FakeFolderPaths(tmp_path / "models")
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    write_pair(tmp_path / "models" / "cami2v", tiny_pair, base_at=None)
    _, base, _ = tiny_pair
    (tmp_path / "models" / "checkpoints" / "DynamiCrafter").mkdir(parents=True)
    torch.save({"state_dict": base}, tmp_path / "models" / "checkpoints" / "DynamiCrafter" / "model.ckpt")
    loader = NODES["CamI2VModelLoader"]()
    assert "realcam_tiny.safetensors" in NODES["CamI2VModelLoader"].INPUT_TYPES()["required"]["ckpt_name"][0]
    handle = loader.load("realcam_tiny.safetensors", "fp32", "sdpa", True)[0]
    assert_is_original(handle.model, tiny_pair[0])
    # without the base: the message says where ComfyUI looks and how to fetch it
    (tmp_path / "models" / "checkpoints" / "DynamiCrafter" / "model.ckpt").unlink()
    with pytest.raises(CamI2VError, match="models/checkpoints are searched; or switch on download_missing"):
        loader.load("realcam_tiny.safetensors", "fp32", "sdpa", True)


def test_release_realcam_files_are_offered_with_download_metadata():
    from nodes.nodes_model import RELEASE_FILES, release_download

    for name in ("256_realcam-i2v_50k.safetensors", "512_realcam-i2v_50k.safetensors"):
        assert name in RELEASE_FILES
        meta = release_download(name)
        assert meta == {"name": name, "url": f"https://huggingface.co/MuteApo/CamI2V/resolve/main/{name}",
                        "directory": "cami2v"}
    assert release_download("my_own_model.safetensors") is None
