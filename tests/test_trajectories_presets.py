"""The demo's 16 named motions (spec §6.4 table) and its "ratio"/"scale" resampling (§6.5), checked against the spec
table, the golden camera fixtures of the original code (golden README §4) and the `trajectory` reference values."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

import trajectories as tj
from tests.golden import MISSING, REFERENCE_DIR, load_json, load_tensors
from trajectories import Trajectory

ATOL = 1e-5  # golden README §11: relative poses


def _rx(deg):
    a = math.radians(deg)
    return np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])


def _ry(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def _rz(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


PITCH_5_7 = math.degrees(math.atan(0.1))  # "small pitch growing to ±5.7°"
# Spec §6.4 table: poses in the file, and the last pose relative to the first (camera-to-world rotation, centre).
# Signs follow from the names in OpenCV axes (x right, y down, z forward): left is -x, up is -y, turning right is
# +yaw about y, looking up is +pitch about x; orbiting keeps facing the point ahead.
TABLE = {
    "zoom in": (8, np.eye(3), [0, 0, 1]),
    "zoom out": (8, np.eye(3), [0, 0, -1]),
    "pan up": (50, _rx(-PITCH_5_7), [0, -1, 0]),  # the demo file turns to keep facing the scene (pitch down)
    "pan down": (50, _rx(PITCH_5_7), [0, 1, 0]),
    "pan left": (150, np.eye(3), [-2, 0, 0]),
    "pan right": (150, np.eye(3), [1, 0, 0]),
    "look up": (50, _rx(90), [0, 0, 0]),
    "look down": (50, _rx(-90), [0, 0, 0]),
    "look left": (50, _ry(-90), [0, 0, 0]),
    "look right": (50, _ry(90), [0, 0, 0]),
    "orbit up": (16, _rx(-45), [0, -2 * math.sin(math.radians(45)), 2 - 2 * math.cos(math.radians(45))]),
    "orbit left": (150, _ry(90), [-3, 0, 3]),
    "orbit right": (150, _ry(-90), [3, 0, 3]),
    "rotate clockwise": (50, _rz(-90), [0, 0, 0]),
    "rotate anti-clockwise": (50, _rz(90), [0, 0, 0]),
    "stationary": (2, np.eye(3), [0, 0, 0]),
}


def test_the_sixteen_demo_names_are_the_presets():
    assert list(tj.PRESETS) == list(TABLE)


@pytest.mark.parametrize("name", list(TABLE))
def test_preset_path_matches_the_spec_table(name):
    poses, rot, centre = TABLE[name]
    path = tj.preset_path(name, faithful=False)
    assert tj.PRESETS[name].poses == poses and len(path) == poses
    rel = path.relative(0).c2w
    np.testing.assert_allclose(rel[-1, :3, :3], rot, atol=1e-9)
    np.testing.assert_allclose(rel[-1, :3, 3], centre, atol=1e-9)
    np.testing.assert_allclose(rel[0], np.eye(4), atol=1e-12)
    # ratio 1 over 16 frames ends on the file's last pose as well.
    end = tj.preset(name, frames=16, ratio=1.0, faithful=False).relative(0).c2w[-1]
    np.testing.assert_allclose(end[:3, :3], rot, atol=1e-9)
    np.testing.assert_allclose(end[:3, 3], centre, atol=1e-9)


@pytest.mark.parametrize("name", ["look up", "look down", "look left", "look right", "rotate clockwise",
                                  "rotate anti-clockwise"])
def test_turns_advance_in_uniform_steps_of_90_over_49(name):
    rel = tj.preset_path(name, faithful=False).relative(0).c2w
    angles = [math.degrees(math.acos(np.clip((np.trace(r[:3, :3]) - 1) / 2, -1, 1))) for r in rel]
    np.testing.assert_allclose(angles, 90 / 49 * np.arange(50), atol=1e-9)  # 1.837° per pose


@pytest.mark.parametrize("name,pitch", [("look up", 90), ("look down", -90)])
def test_faithful_look_up_down_keep_the_glitched_180_degree_last_pose(name, pitch):
    rel = tj.preset_path(name).relative(0).c2w
    np.testing.assert_allclose(rel[-2, :3, :3], _rx(pitch * 48 / 49), atol=1e-9)  # normal up to the last pose
    last = rel[-1, :3, :3]
    assert np.trace(last) == pytest.approx(-1.0)  # a rotation by 180°
    np.testing.assert_allclose(last, _ry(180) @ _rx(pitch), atol=1e-9)  # the 90° pose turned about vertical
    # Only reached when ratio ≈ 1 (spec §6.4): the gradio default never gets there.
    np.testing.assert_allclose(tj.preset(name, ratio=1.0).relative(0).c2w[-1, :3, :3], last, atol=1e-9)
    default = tj.preset(name).relative(0).c2w
    assert np.all(np.einsum("tii->t", default[:, :3, :3]) > 1.0)  # every pose within 90° of the start


def test_orbits_face_their_centre_in_every_pose():
    for name, centre in (("orbit left", [0, 0, 3]), ("orbit right", [0, 0, 3]), ("orbit up", [0, 0, 2])):
        path = tj.preset_path(name)
        for w2c in path.w2c:
            seen = w2c @ np.array([*centre, 1.0])
            np.testing.assert_allclose(seen[:2], 0, atol=1e-9)
            assert seen[2] == pytest.approx(centre[2])  # radius 3 (2 for orbit up)


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.6, 0.8, 1.0])
def test_ratio_covers_that_fraction_and_scale_multiplies_translations(ratio):
    frames = 16
    count = round(frames / ratio)
    covered = (frames - 1) / (count - 1)  # the last kept sample's position as a fraction of the path
    rel = tj.preset("pan right", frames, ratio).relative(0).c2w
    assert len(rel) == frames
    assert rel[-1, 0, 3] == pytest.approx(1.0 * covered, abs=1e-12)
    scaled = tj.preset("orbit left", frames, ratio, scale=0.2).relative(0).c2w
    plain = tj.preset("orbit left", frames, ratio).relative(0).c2w
    np.testing.assert_allclose(scaled[:, :3, 3], 0.2 * plain[:, :3, 3], atol=1e-12)
    np.testing.assert_allclose(scaled[:, :3, :3], plain[:, :3, :3], atol=1e-12)


def test_preset_defaults_are_the_shared_defaults_and_names_are_forgiving():
    # ratio 0.6 (the README gallery's, shared with the nodes and the CLI); the demo's own slider starts at 0.1
    assert tj.preset("zoom in").allclose(tj.preset("zoom in", frames=16, ratio=0.6, scale=1.0))
    assert not tj.preset("zoom in").allclose(tj.preset("zoom in", frames=16, ratio=0.1, scale=1.0))
    assert tj.find_preset("Rotate_Anti-Clockwise") == "rotate anti-clockwise"
    assert tj.find_preset("spin") is None
    with pytest.raises(tj.TrajectoryError, match="unknown preset 'spin'; choose one of: zoom in, zoom out"):
        tj.preset("spin")


# -- parity with the original code -----------------------------------------------------------------------------

DEMO_SOURCE = r"demo/camera_pose_files/(.+)\.txt"


def _golden_cases(demo_only: bool = False):
    """Golden camera cases (discovered from the index); demo_only keeps those made from a demo pose file."""
    try:
        index = load_json("camera/trajectories.json")
    except pytest.skip.Exception:
        return [MISSING]
    return sorted(k for k, v in index.items() if not demo_only or re.match(DEMO_SOURCE, v["source"]))


@pytest.mark.parametrize("name", _golden_cases())
def test_golden_w2c_and_intrinsics_read_as_the_original_uses_them(name):
    meta = load_json("camera/trajectories.json")[name]
    data = load_tensors(f"camera/{name}.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tj.TrajectoryWarning)  # the demo files' mirrored worlds
        path = Trajectory(data["w2c"][0].double().numpy(), data["K_normalized_fx_fy_cx_cy"][0].double().numpy(),
                          aspect=meta["W"] / meta["H"])
    np.testing.assert_allclose(path.relative(meta["cond_frame_index"]).c2w, data["relative_c2w"][0].numpy(),
                               atol=ATOL)
    np.testing.assert_allclose(path.pixel_intrinsics(meta["W"], meta["H"]), data["K"][0].numpy(), atol=1e-4)
    again = tj.from_cameractrl_poses(tj.to_cameractrl_poses(path))  # through the ComfyUI type and back
    np.testing.assert_array_equal(again.w2c, path.w2c)


@pytest.mark.parametrize("name", _golden_cases(demo_only=True))
def test_presets_resampled_like_the_demo_match_the_golden_relative_poses(name):
    meta = load_json("camera/trajectories.json")[name]
    found = re.match(DEMO_SOURCE, meta["source"])
    data = load_tensors(f"camera/{name}.safetensors")
    path = tj.preset(found.group(1), frames=meta["T"], ratio=meta["trace_extract_ratio"],
                     scale=meta["trace_scale_factor"])
    np.testing.assert_allclose(path.relative(meta["cond_frame_index"]).c2w, data["relative_c2w"][0].numpy(),
                               atol=ATOL)


def test_demo_resample_reproduces_the_reference_trajectory_values():
    ref = load_json("fixtures/cami2v_reference_values.json", base=REFERENCE_DIR)["trajectory"]
    c2w = np.array(ref["input_c2w"])
    path = Trajectory(np.linalg.inv(c2w))
    out = tj.demo_resample(path, frames=16, ratio=ref["ratio"])
    assert round(16 / ref["ratio"]) == ref["resampled_count"]
    np.testing.assert_allclose(out.c2w, np.array(ref["first16_lerped_c2w"]), atol=1e-6)
    rel = out.scaled(ref["scale"]).relative(0)
    np.testing.assert_allclose(rel.c2w, np.array(ref["relative_c2w_scaled"]), atol=1e-6)
    # MotionCtrl's RT: the relative w2c, 3x4 row-major (spec §5.2).
    np.testing.assert_allclose(rel.w2c[:, :3].reshape(16, 12), np.array(ref["motionctrl_RT12"]), atol=1e-6)
