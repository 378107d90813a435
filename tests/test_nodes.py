"""Every node called directly (no ComfyUI): the golden tiny models are written to a temporary models folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import trajectories as tj
from cami2v_core.checkpoint import CONFIG_METADATA_KEY, save_safetensors
from cami2v_core.configs import from_yaml
from nodes import NODE_CLASS_MAPPINGS as NODES
from nodes import comfy_bridge
from nodes.nodes_model import RELEASE_FILES
from tests.golden import GOLDEN_DIR, golden_state_dict, require

STEPS = 2


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """A models/cami2v folder holding the golden tiny CamI2V and MotionCtrl with their configs in the header."""
    root = tmp_path_factory.mktemp("models")
    for variant in ("cami2v", "motionctrl"):
        config = from_yaml(require(GOLDEN_DIR / "configs" / f"{variant}_tiny.yaml"))
        save_safetensors(golden_state_dict(variant), root / f"{variant}_tiny.safetensors",
                         metadata={CONFIG_METADATA_KEY: config.to_json()})
    return root


@pytest.fixture(autouse=True)
def standalone_folders(models_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(comfy_bridge, "STANDALONE_MODELS_DIR", models_dir)
    monkeypatch.chdir(tmp_path)  # the standalone output folder is ./output


@pytest.fixture(scope="module")
def cami2v(models_dir):
    comfy_bridge.STANDALONE_MODELS_DIR = models_dir
    return NODES["CamI2VModelLoader"]().load("cami2v_tiny.safetensors", "fp32", "sdpa", True)[0]


def picture(h=48, w=80):
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, h, w, 3, generator=g)


def widgets_defaults(node_id):
    """The default of every widget input of a node (what a fresh node in the UI holds)."""
    spec = NODES[node_id].INPUT_TYPES()
    out = {}
    for section in ("required", "optional"):
        for name, (kind, *opts) in spec.get(section, {}).items():
            opts = opts[0] if opts else {}
            if isinstance(kind, list):
                out[name] = opts.get("default", kind[0])
            elif "default" in opts:
                out[name] = opts["default"]
    return out


def test_every_node_has_tooltips_description_and_category():
    for node_id, cls in NODES.items():
        assert node_id.startswith("CamI2V")
        spec = cls.INPUT_TYPES()
        for section in spec.values():
            for name, (kind, *opts) in section.items():
                assert opts and opts[0].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert cls.DESCRIPTION and cls.CATEGORY.startswith("CamI2V")
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
        assert hasattr(cls, cls.FUNCTION)


def test_loader_lists_local_and_release_files(models_dir):
    choices = NODES["CamI2VModelLoader"].INPUT_TYPES()["required"]["ckpt_name"][0]
    assert "cami2v_tiny.safetensors" in choices and "motionctrl_tiny.safetensors" in choices
    assert all(f in choices for f in RELEASE_FILES)  # bare names: a workflow's value survives the download
    tooltip = NODES["CamI2VModelLoader"].INPUT_TYPES()["required"]["ckpt_name"][1]["tooltip"]
    assert "Not downloaded yet: " + ", ".join(RELEASE_FILES) in tooltip


def test_loader_refuses_missing_release_without_download_permission():
    with pytest.raises(ValueError, match="download_missing"):
        NODES["CamI2VModelLoader"]().load("256_cami2v.pt", "auto", "auto", True, False)


def test_loader_loads_variant_and_precision(cami2v):
    assert cami2v.variant == "cami2v"
    assert cami2v.model.config.temporal_length == 8
    assert next(cami2v.model.parameters()).dtype == torch.float32


def test_loader_rejects_a_non_cami2v_checkpoint(models_dir):
    bad = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
           "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(49408, 768)}
    save_safetensors(bad, models_dir / "sd15_like.safetensors")
    with pytest.raises(ValueError) as err:
        NODES["CamI2VModelLoader"]().load("sd15_like.safetensors", "fp32", "sdpa", True)
    assert "Stable Diffusion" in str(err.value) or "expected" in str(err.value)


def sample(handle, camera, **changes):
    return sample_with_report(handle, camera, **changes)[0]


def sample_with_report(handle, camera, **changes):
    """(latent, report) of the sampler node, checking the report also reaches the node's UI text."""
    kwargs = widgets_defaults("CamI2VSampler")
    kwargs.update(steps=STEPS, prompt="a cat", seed=7, **changes)
    out = NODES["CamI2VSampler"]().sample(handle, picture(), camera=camera, **kwargs)
    latent, report = out["result"]
    assert out["ui"]["text"] == [report]
    return latent, report


def test_sampler_and_decoder_make_frames_that_follow_the_seed(cami2v):
    camera = NODES["CamI2VCameraPreset"]().build("orbit left", 8, 0.6, 1.0)[0]
    latent = sample(cami2v, camera)
    assert latent["samples"].shape == (8, 4, 8, 8)
    again = sample(cami2v, camera)
    torch.testing.assert_close(latent["samples"], again["samples"], rtol=0, atol=0)
    other = sample(cami2v, NODES["CamI2VCameraPreset"]().build("orbit right", 8, 0.6, 1.0)[0])
    assert not torch.allclose(latent["samples"], other["samples"])  # the camera reaches the model
    frames, fps = NODES["CamI2VDecode"]().decode(cami2v, latent, 3)
    assert frames.shape == (8, 64, 64, 3) and 0 <= frames.min() and frames.max() <= 1
    assert fps == pytest.approx(29.97 / 2, abs=1e-3)  # frame stride 2 plays RealEstate10K's 29.97 fps clips at speed


def test_sampler_resamples_a_camera_path_of_another_length_and_says_so(cami2v, caplog):
    long_path = NODES["CamI2VCameraPreset"]().build("orbit left", 16, 0.6, 1.0)[0]
    with caplog.at_level("WARNING", logger="CamI2V"):
        latent, report = sample_with_report(cami2v, long_path)
    assert latent["samples"].shape == (8, 4, 8, 8)
    assert "16 poses" in report and "8 frames" in report and "resampled" in report
    assert "'CamI2V Camera Resample / Retime'" in report  # the real node's name, from the registry
    assert any("resampled" in r.getMessage() for r in caplog.records)
    # the same as resampling it first with the retime node: the sampler used exactly that path
    fitted = NODES["CamI2VCameraRetime"]().retime(long_path, 8, "slerp", "keep", False, False)[0]
    expected, fitted_report = sample_with_report(cami2v, fitted)
    torch.testing.assert_close(latent["samples"], expected["samples"], rtol=0, atol=0)
    assert "resampled" not in fitted_report


def test_messages_name_only_nodes_that_exist():
    """Every quoted 'CamI2V ...' name in the pack's source is a registered display name."""
    import re
    from pathlib import Path

    from nodes import NODE_DISPLAY_NAME_MAPPINGS

    known = set(NODE_DISPLAY_NAME_MAPPINGS.values())
    root = Path(__file__).resolve().parents[1]
    quoted = set()
    for folder in ("nodes", "cami2v_core", "trajectories"):
        for f in (root / folder).rglob("*.py"):
            quoted |= set(re.findall(r"'(CamI2V [^']+)'", f.read_text()))
    assert quoted <= known, f"messages name nodes that do not exist: {sorted(quoted - known)}"


@pytest.mark.parametrize("node_id, call", [
    ("CamI2VModelLoader", lambda n: n.load("no_such_file.safetensors", "fp32", "sdpa", True)),
    ("CamI2VDecode", lambda n: n.decode(None, {"no": "samples"}, 2)),
    ("CamI2VCameraExport", lambda n: n.export([[0.0] * 19], "../escape")),
    ("CamI2VCameraRetime", lambda n: n.retime("not poses", 8, "slerp", "keep", False, False)),
    ("CamI2VCameraOrbit", lambda n: n.build(frames=8, ease="linear", direction="up", degrees=20.0, distance=-2.0)),
])
def test_node_errors_start_with_the_display_name(node_id, call):
    from nodes import NODE_DISPLAY_NAME_MAPPINGS

    with pytest.raises(ValueError) as err:
        call(NODES[node_id]())
    assert str(err.value).startswith(NODE_DISPLAY_NAME_MAPPINGS[node_id] + ": "), str(err.value)


def test_sampler_refuses_image_batches_and_missing_camera(cami2v):
    camera = NODES["CamI2VCameraPreset"]().build("pan right", 8, 0.6, 1.0)[0]
    kwargs = widgets_defaults("CamI2VSampler")
    kwargs.update(steps=1)
    with pytest.raises(ValueError, match="ImageFromBatch"):
        NODES["CamI2VSampler"]().sample(cami2v, torch.rand(2, 32, 32, 3), camera=camera, **kwargs)
    with pytest.raises(ValueError, match="connect a camera"):
        NODES["CamI2VSampler"]().sample(cami2v, picture(), **kwargs)


def test_camera_on_a_model_without_camera_input_is_refused(models_dir):
    config = from_yaml(require(GOLDEN_DIR / "configs" / "cami2v_tiny.yaml")).with_variant("dynamicrafter")
    sd = golden_state_dict("motionctrl")
    sd = {k: v for k, v in sd.items() if "cc_projection" not in k}
    save_safetensors(sd, models_dir / "dc_tiny.safetensors", metadata={CONFIG_METADATA_KEY: config.to_json()})
    handle = NODES["CamI2VModelLoader"]().load("dc_tiny.safetensors", "fp32", "sdpa", True)[0]
    camera = NODES["CamI2VCameraPreset"]().build("pan right", 8, 0.6, 1.0)[0]
    with pytest.raises(ValueError, match="no camera input"):
        sample(handle, camera)
    latent = sample(handle, None)  # without a camera it samples like DynamiCrafter
    assert latent["samples"].shape == (8, 4, 8, 8)


def test_motionctrl_samples_with_a_camera(models_dir):
    handle = NODES["CamI2VModelLoader"]().load("motionctrl_tiny.safetensors", "fp32", "sdpa", False)[0]
    camera = NODES["CamI2VCameraOrbit"]().build(frames=8, ease="linear", direction="right", degrees=20, distance=2)
    latent = sample(handle, camera[0], cfg_camera=2.0)
    assert torch.isfinite(latent["samples"]).all()


@pytest.mark.parametrize("node_id, widgets", [
    ("CamI2VCameraOrbit", dict(direction="up", degrees=20.0, distance=2.0)),
    ("CamI2VCameraPan", dict(direction="left", distance=0.5)),
    ("CamI2VCameraZoom", dict(mode="dolly out", amount=0.7)),
    ("CamI2VCameraZoom", dict(mode="focal", amount=1.5)),
    ("CamI2VCameraLook", dict(yaw_deg=15.0, pitch_deg=-5.0, roll_deg=10.0)),
])
def test_move_nodes_match_the_trajectory_builders_and_chain(node_id, widgets):
    node = NODES[node_id]()
    poses = node.build(frames=6, ease="linear", **widgets)[0]
    path = tj.from_cameractrl_poses(poses)
    assert len(path) == 6 and len(poses[0]) == 19
    np.testing.assert_allclose(path.w2c[0], np.eye(4), atol=1e-9)  # a move starts at the identity camera
    chained = tj.from_cameractrl_poses(node.build(frames=6, ease="linear", prev_poses=poses, **widgets)[0])
    assert len(chained) == 11  # the second move continues from the last pose (shared pose dropped)
    np.testing.assert_allclose(chained.w2c[5], path.w2c[5], atol=1e-9)


def test_combine_retime_text_file_export_preview_round_trip(tmp_path):
    orbit = NODES["CamI2VCameraOrbit"]().build(frames=8, ease="linear", direction="left", degrees=30.0,
                                               distance=3.0)[0]
    zoom = NODES["CamI2VCameraZoom"]().build(frames=8, ease="linear", mode="dolly in", amount=1.0)[0]
    both = NODES["CamI2VCameraCombine"]().combine(orbit, zoom, "add")[0]
    assert len(both) == 8
    with pytest.raises(ValueError, match="frames"):
        NODES["CamI2VCameraCombine"]().combine(orbit, zoom[:5], "add")
    joined = NODES["CamI2VCameraCombine"]().combine(orbit, zoom, "concatenate")[0]
    assert len(joined) == 15
    fitted = NODES["CamI2VCameraRetime"]().retime(joined, 16, "slerp", "keep", False, False)[0]
    assert len(fitted) == 16
    np.testing.assert_allclose(fitted[-1][1:], joined[-1][1:], atol=1e-6)  # resampling keeps the end pose

    result = NODES["CamI2VCameraExport"]().export(fitted, "cams/test")
    path = result["ui"]["text"][0]
    text = result["result"][1]
    assert json.loads(open(path).read()) == json.loads(text)
    second = NODES["CamI2VCameraExport"]().export(fitted, "cams/test")["ui"]["text"][0]
    assert second != path  # never overwrites
    loaded = NODES["CamI2VCameraLoadFile"]().load(path)[0]
    np.testing.assert_allclose(np.array(loaded), np.array(fitted), atol=1e-6)
    pasted = NODES["CamI2VCameraFromText"]().parse(text)[0]
    np.testing.assert_allclose(np.array(pasted), np.array(fitted), atol=1e-6)
    re10k = tmp_path / "clip.txt"
    re10k.write_text(tj.to_realestate10k(tj.from_cameractrl_poses(fitted)))
    np.testing.assert_allclose(np.array(NODES["CamI2VCameraLoadFile"]().load(str(re10k))[0]), np.array(fitted),
                               atol=1e-6)
    with pytest.raises(ValueError, match="no file"):
        NODES["CamI2VCameraLoadFile"]().load("does/not/exist.json")
    with pytest.raises(ValueError, match="leads out of the output folder"):
        NODES["CamI2VCameraExport"]().export(fitted, "../../escape")
    with pytest.raises(ValueError, match="is an absolute path"):
        NODES["CamI2VCameraExport"]().export(fitted, str(tmp_path / "abs"))

    picture_out, frames = NODES["CamI2VCameraPreview"]().preview(fitted, picture(), 2.0)
    assert picture_out.ndim == 4 and picture_out.shape[-1] == 3
    assert frames.shape[0] == 16 and frames.shape[-1] == 3
    # the first warped frame shows the picture itself (the camera has not moved yet)
    assert frames[0].std() > 0.05


def test_bad_pasted_text_names_the_problem():
    with pytest.raises(ValueError, match="From Text"):
        NODES["CamI2VCameraFromText"]().parse('{"frames": [{"w2c": [[1, 0, 0, 0]]}]}')
    with pytest.raises(ValueError, match="empty"):
        NODES["CamI2VCameraFromText"]().parse("   ")


class FakeModelManagement:
    """Stands in for comfy.model_management: records what the pack asks of it; unloading everything is an error."""

    def __init__(self):
        self.asked = []

    def free_memory(self, memory_required, device, keep_loaded=()):
        self.asked.append((memory_required, device))

    def minimum_inference_memory(self):
        return 1000

    def unload_all_models(self):
        raise AssertionError("the pack must not unload every model the user has loaded")


def test_placing_a_model_asks_comfyui_for_only_the_room_it_needs(monkeypatch):
    import sys
    import types

    fake = FakeModelManagement()
    comfy = types.ModuleType("comfy")
    comfy.model_management = fake
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.model_management", fake)
    module = torch.nn.Linear(10, 5)  # 55 fp32 numbers = 220 bytes, all on the CPU
    gpu = torch.device("cuda", 0)
    assert comfy_bridge.free_memory_for(module, gpu, working_bytes=50) == 220 + 50 + 1000
    assert fake.asked == [(1270, gpu)]
    assert comfy_bridge.free_memory_for(module, torch.device("cpu")) == 0  # nothing to manage on a CPU
    assert len(fake.asked) == 1


def test_sampling_places_the_model_through_the_memory_manager(cami2v, monkeypatch):
    placed_on = []
    monkeypatch.setattr(comfy_bridge, "free_memory_for", lambda module, device, working_bytes=0:
                        placed_on.append((module, device.type)) or 0)
    sample(cami2v, NODES["CamI2VCameraPreset"]().build("orbit left", 8, 0.6, 1.0)[0])
    assert placed_on and all(m is cami2v.model and d == "cpu" for m, d in placed_on)


def test_sampler_reports_how_an_odd_shaped_picture_was_fitted(cami2v):
    camera = NODES["CamI2VCameraPreset"]().build("orbit left", 8, 0.6, 1.0)[0]
    kwargs = widgets_defaults("CamI2VSampler")
    kwargs.update(steps=1, seed=7, fit="pad")
    out = NODES["CamI2VSampler"]().sample(cami2v, picture(h=10, w=100), camera=camera, **kwargs)
    assert "100x10" in out["result"][1] and "edge pixels" in out["result"][1]


def test_live_preview_has_the_videos_aspect_and_the_fitted_colours():
    from cami2v_core.sampling import StepInfo
    from nodes.nodes_sample import preview_image

    latent = torch.zeros(1, 4, 2, 8, 16)
    latent[:, 1] = 1.0
    projection = torch.zeros(5, 3)
    projection[1, 0] = 0.8  # channel 1 -> red
    projection[4] = torch.tensor([0.1, 0.2, 0.3])
    info = StepInfo(0, 1, 999, latent, latent, latent, latent_rgb=projection)
    picture = preview_image(info)
    assert picture.size == (128, 64)  # width x height: the latent's 2:1, enlarged from the 16x8 grid
    expected = (0.9 * 255, 0.2 * 255, 0.3 * 255)  # channel 1 (1.0) x 0.8 red, plus the bias
    assert all(abs(got - want) <= 1 for got, want in zip(picture.getpixel((64, 32)), expected))


def test_scene_preview_feeds_the_samplers_noise_shaping_and_must_match_its_path(cami2v, tmp_path):
    from tests.test_scene import _tiny_depth_anything

    depth = _tiny_depth_anything()
    camera = NODES["CamI2VCameraPreset"]().build("pan left", 8, 0.6, 1.0)[0]
    out = NODES["CamI2VScenePreview"]().preview(cami2v, picture(), camera, depth, 1.0, 0, "crop")
    renders, visible, plan, report = out["result"]
    h, w = cami2v.model.config.resolution
    assert renders.shape == (8, h, w, 3) and visible.shape == (8, h, w)
    assert float(visible[0].mean()) > 0.95  # the picture's own camera sees its points (less flying outliers)
    assert "scene depth" in report and " m " in report
    kwargs = widgets_defaults("CamI2VSampler")
    kwargs.update(steps=2, seed=7)
    shaped = NODES["CamI2VSampler"]().sample(cami2v, picture(), camera=camera, scene=plan, **kwargs)
    assert "noise shaping on" in shaped["result"][1]
    plain = NODES["CamI2VSampler"]().sample(cami2v, picture(), camera=camera, **kwargs)
    # 2 trailing steps visit t = 999 and 499: the first is shaped, so the videos differ
    assert not torch.equal(shaped["result"][0]["samples"], plain["result"][0]["samples"])
    with pytest.raises(ValueError, match="CamI2V Sampler: the scene was rendered for .* cond_frame 0"):
        NODES["CamI2VSampler"]().sample(cami2v, picture(), camera=camera, scene=plan, **{**kwargs, "cond_frame": 3})


def test_depth_loader_without_local_weights_says_how_to_get_them(monkeypatch, tmp_path):
    import transformers  # noqa: F401  (requirements-dev.txt: missing must fail, not skip)
    monkeypatch.setattr(comfy_bridge, "STANDALONE_MODELS_DIR", tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="switch on download_missing"):
        NODES["CamI2VDepthLoader"]().load("small", False)


def test_load_file_reads_3d_tools_cameras(tmp_path):
    path = tj.orbit("left", 30.0, 3.0, 8)
    tj.write_colmap(path, tmp_path / "colmap")
    (tmp_path / "transforms.json").write_text(tj.to_transforms_json(path))
    for source in (tmp_path / "colmap", tmp_path / "colmap" / "images.txt", tmp_path / "transforms.json"):
        poses = NODES["CamI2VCameraLoadFile"]().load(str(source))[0]
        assert tj.from_cameractrl_poses(poses).allclose(path, atol=1e-6), source


def test_camera_from_video_copies_a_clips_move_and_reports_what_it_did():
    from tests.test_from_video import check_recovery, known_clip
    from trajectories.sfm import require_pycolmap

    require_pycolmap()
    video, w2c, intr, scene = known_clip("dolly_in")
    frames = torch.from_numpy(video).float() / 255  # an IMAGE batch, as a video loader gives it
    out = NODES["CamI2VCameraFromVideo"]().recover(frames, len(video), 0.0, 0.0, "depth")
    poses, report = out["result"]
    assert out["ui"]["text"] == [report] and "sampled frames registered" in report
    path = tj.from_cameractrl_poses(poses)
    assert len(path) == len(video)
    check_recovery(path, w2c, intr, scene, False, report.splitlines())
    grey = torch.full((8, 48, 64, 3), 0.5)
    with pytest.raises(ValueError, match="CamI2V Camera From Video: could not reconstruct the camera"):
        NODES["CamI2VCameraFromVideo"]().recover(grey, 8, 0.0, 0.0, "depth")
