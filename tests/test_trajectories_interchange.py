"""Camera paths from and to 3D tools: nerfstudio / instant-ngp transforms.json, COLMAP text models, the Blender script.

Axis conventions are checked on cameras built here from each tool's own definition (OpenGL: the camera looks down
-z with y up; COLMAP: scalar-first quaternions of world-to-camera; Blender: XYZ Euler angles, -Z view, Z-up world),
and focal lengths from field-of-view formulas written out here, never from the code under test.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import polar
from scipy.spatial.transform import Rotation

import trajectories as tj
from trajectories import Trajectory, TrajectoryError, TrajectoryWarning, colmap, nerfstudio
from trajectories.__main__ import main

SCRIPT = Path(tj.__file__).parent / "blender" / "cami2v_camera.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("cami2v_camera_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


blender = _load_script()


def _paths():
    """Builders (with varying intrinsics and a 16:9 aspect) and presets (whose demo interpolation is non-rigid)."""
    built = tj.concatenate(tj.orbit("left", 30, frames=9), tj.zoom("in", 0.5, frames=4), tj.focal_zoom(1.5, frames=4))
    wide = Trajectory(tj.add(tj.pan("up", 0.7, frames=7), tj.roll(40, frames=7)).w2c,
                      np.array([[0.6 + 0.01 * i, 0.9, 0.45, 0.52] for i in range(7)]), aspect=16 / 9)
    portrait = Trajectory(tj.orbit("up", 45, frames=5).w2c, [0.8, 0.5, 0.5, 0.5], aspect=0.625)
    return {"orbit+zoom+focal": built, "pan+roll 16:9": wide, "orbit up portrait": portrait,
            "preset orbit up": tj.preset("orbit up", frames=16, ratio=0.6),
            "preset look left": tj.preset("look left", frames=16, ratio=0.6),
            "preset rotate clockwise": tj.preset("rotate clockwise", frames=8, ratio=1.0)}


PATHS = _paths()


def _rigidified(path: Trajectory) -> Trajectory:
    """Each rotation replaced by its polar factor (the nearest rotation), camera centre kept (scipy, not ours)."""
    w2c = path.w2c.copy()
    for m in w2c:
        centre = -np.linalg.solve(m[:3, :3], m[:3, 3])
        m[:3, :3] = polar(m[:3, :3])[0]
        m[:3, 3] = -m[:3, :3] @ centre
    return Trajectory(w2c, path.intrinsics, path.aspect)


def _same(a: Trajectory, b: Trajectory, atol=1e-9):
    assert len(a) == len(b)
    np.testing.assert_allclose(a.w2c, b.w2c, rtol=0, atol=atol)
    np.testing.assert_allclose(a.intrinsics, b.intrinsics, rtol=0, atol=atol)
    assert a.aspect == pytest.approx(b.aspect, rel=1e-6)


@contextlib.contextmanager
def _quiet():
    """Fail on any warning inside the block."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# -- round trips -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PATHS)
def test_transforms_json_round_trip_is_exact(name):
    path = PATHS[name]
    text = nerfstudio.to_transforms_json(path)
    _same(nerfstudio.from_transforms_json(text), path)
    _same(tj.load(text), path)  # recognised by the generic loader too


@pytest.mark.parametrize("name", PATHS)
def test_colmap_round_trip_is_exact_up_to_the_rotation_quaternions_hold(name, tmp_path):
    path = PATHS[name]
    rigid = float(np.abs(_rigidified(path).w2c - path.w2c).max()) < 1e-12
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        colmap.write_colmap(path, tmp_path / "model")
    flagged = any(issubclass(w.category, TrajectoryWarning) for w in caught)
    assert flagged == (not rigid)  # the preset's element-wise interpolated poses are said to change
    back = tj.load(tmp_path / "model")
    _same(back, _rigidified(path))
    _same(tj.load(str(tmp_path / "model" / "images.txt")), back)


@pytest.mark.parametrize("name", PATHS)
def test_blender_script_round_trips_through_matrix_world_and_camera_settings(name):
    path = PATHS[name]
    width, height = tj.formats.image_size(path.aspect)
    w2c, intrinsics = [], []
    for pose, (fx, fy, cx, cy) in zip(path.w2c, path.intrinsics):
        w2c.append(blender.w2c_from_blender(blender.blender_from_w2c(pose)))
        cam = blender.blender_from_intrinsics(fx, fy, cx, cy, path.aspect)
        assert cam["fy_mismatch"] == pytest.approx(fy / (fx * path.aspect) - 1)
        intr, aspect = blender.intrinsics_from_blender(cam["lens"], cam["sensor_width"], 24.0, cam["sensor_fit"],
                                                       width, height, cam["shift_x"], cam["shift_y"])
        # Blender keeps one focal: fy comes back as square pixels.
        intrinsics.append((intr[0], intr[1] * (1 + cam["fy_mismatch"]), intr[2], intr[3]))
    data = json.loads(blender.dumps(blender.pose_json(w2c, intrinsics, aspect, name="cam", description="test")))
    _same(tj.from_json(data), path)
    # ... and our writer's JSON reads in the script's plain reader.
    aspect, frames = blender.read_pose_json(json.loads(tj.to_json(path)))
    assert aspect == path.aspect
    np.testing.assert_allclose(np.stack([w for w, _ in frames]), path.w2c, rtol=0, atol=0)
    np.testing.assert_allclose(np.array([i for _, i in frames]), path.intrinsics, rtol=0, atol=0)


@pytest.mark.parametrize("out, written", [("model/", "model"), ("transforms.json", "transforms.json"),
                                          ("pose.json", "pose.json"), ("re10k.txt", "re10k.txt"),
                                          ("cams/images.txt", "cams"), ("bare", "bare")])
def test_command_line_converts_between_every_format_by_name(out, written, tmp_path):
    path = PATHS["pan+roll 16:9"]
    src = tmp_path / "src.json"
    src.write_text(tj.to_json(path), encoding="utf-8")
    assert main(["convert", str(src), f"{tmp_path}/{out}"]) == 0
    expected = path
    if out.endswith(".txt") and not out.endswith("images.txt"):  # RealEstate10K has no aspect: fy / fx
        expected = Trajectory(path.w2c, path.intrinsics, path.intrinsics[0, 1] / path.intrinsics[0, 0])
    _same(tj.load(tmp_path / written), expected)
    assert main(["convert", str(tmp_path / written), str(tmp_path / "again.json")]) == 0
    _same(tj.load(tmp_path / "again.json"), expected)


def test_command_line_chain_colmap_to_transforms_to_pose_json_keeps_the_path(tmp_path):
    with pytest.warns(TrajectoryWarning, match="quaternions"):  # the demo's interpolated poses are not quite rigid
        assert main(["convert", "orbit left", "--frames", "8", "--ratio", "1", str(tmp_path / "m")]) == 0
    assert main(["convert", str(tmp_path / "m"), str(tmp_path / "transforms.json"), "--size", "640x640"]) == 0
    meta = json.loads((tmp_path / "transforms.json").read_text())
    assert (meta["w"], meta["h"], meta["fl_x"]) == (640, 640, 320.0)  # the presets' 90° default focal
    assert main(["convert", str(tmp_path / "transforms.json"), str(tmp_path / "p.json")]) == 0
    _same(tj.load(tmp_path / "p.json"), _rigidified(tj.preset("orbit left", frames=8, ratio=1)))


def test_command_line_refuses_unclear_requests(tmp_path, capsys):
    src = tmp_path / "p.json"
    src.write_text(tj.to_json(PATHS["orbit up portrait"]), encoding="utf-8")
    cases = [([str(src), str(tmp_path / "x.abc")], "cannot tell the output format"),
             ([str(src), str(tmp_path / "y.json"), "--size", "64x64"], "--size applies to"),
             ([str(src), str(tmp_path / "t.json"), "--to", "transforms", "--size", "64x64"], "aspect"),
             ([str(src), str(tmp_path / "t.json"), "--to", "transforms", "--size", "big"], "WIDTHxHEIGHT"),
             ([str(src), str(tmp_path / "a.json"), "--out", str(tmp_path / "b.json")], "give the output once"),
             ([str(src), "--to", "colmap"], "folder")]
    for args, message in cases:
        assert main(["convert", *args]) == 2
        assert message in capsys.readouterr().err
    assert main(["convert", str(src), str(tmp_path / "t.json"), "--to", "transforms", "--size", "x640"]) == 0
    meta = json.loads((tmp_path / "t.json").read_text())
    assert (meta["w"], meta["h"]) == (400, 640)  # 0.625 * 640


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(-179, 179), st.floats(-89, 89), st.floats(-179, 179),
                          st.floats(-5, 5), st.floats(-5, 5), st.floats(-5, 5)), min_size=1, max_size=5),
       st.sampled_from([1.0, 4 / 3, 16 / 9, 0.5625, 2.39]), st.floats(0.2, 3.0))
def test_random_rigid_paths_round_trip_through_every_format(poses, aspect, fx):
    w2c = []
    for yaw, pitch, roll, *centre in poses:
        rot = Rotation.from_euler("YXZ", [yaw, pitch, roll], degrees=True).as_matrix()  # c2w rotation
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = rot.T, -rot.T @ np.array(centre)
        w2c.append(m)
    path = Trajectory(np.stack(w2c), [fx, fx * aspect, 0.5, 0.5], aspect)
    _same(nerfstudio.from_transforms_json(nerfstudio.to_transforms_json(path)), path)
    files = colmap.to_colmap_text(path)
    _same(colmap.from_colmap_text(files["cameras.txt"], files["images.txt"]), path)
    back = [blender.w2c_from_blender(blender.blender_from_w2c(m)) for m in path.w2c]
    np.testing.assert_allclose(np.stack(back), path.w2c, rtol=0, atol=1e-9)


# -- axis conventions, against cameras built from each tool's definition -----------------------------------------

def _opengl_look_at(eye, target, up):
    """OpenGL c2w: columns x right, y up, z back (the camera looks down -z)."""
    back = np.asarray(eye, float) - target
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, np.cross(back, right), back, eye
    return m


def _transforms(c2w_list, **intrinsics):
    meta = {"w": 200, "h": 100, "fl_x": 150.0, **intrinsics}
    meta["frames"] = [{"file_path": f"images/{i}.png", "transform_matrix": m.tolist()} for i, m in enumerate(c2w_list)]
    return meta


def test_opengl_camera_on_plus_z_looking_at_the_origin_sees_it_in_front():
    c2w_gl = np.eye(4)
    c2w_gl[2, 3] = 3.0  # OpenGL: identity rotation looks down -z, so from +3 z it faces the origin
    path = nerfstudio.from_transforms_json(_transforms([c2w_gl, _opengl_look_at([3, 0, 0], [0, 0, 0], [0, 1, 0])]))
    for w2c in path.w2c:
        origin = w2c @ [0, 0, 0, 1]
        np.testing.assert_allclose(origin[:3], [0, 0, 3], atol=1e-12)  # straight ahead, z > 0 (OpenCV forward)
        up = w2c @ [0, 1, 0, 1]  # the world's up (OpenGL y) ...
        assert up[1] < 0  # ... is up on screen: OpenCV y points down
    assert (path.w2c[0] @ [1, 0, 0, 1])[0] > 0  # world +x is to the right of the first camera
    assert (path.w2c[1] @ [0, 0, -1, 1])[0] > 0  # the second, on +x facing -x, has world -z on its right
    np.testing.assert_allclose(path.intrinsics[0], [150 / 200, 150 / 100, 0.5, 0.5])  # fl_y = fl_x, centred
    assert path.aspect == 2.0


def test_written_transforms_put_the_camera_where_opengl_says():
    path = tj.camera(position=(1.0, -2.0, 0.5), look_at=(0.0, 0.0, 4.0))
    meta = json.loads(nerfstudio.to_transforms_json(path))
    c2w_gl = np.array(meta["frames"][0]["transform_matrix"])
    np.testing.assert_allclose(c2w_gl[:3, 3], [1.0, -2.0, 0.5], atol=1e-12)
    view = -c2w_gl[:3, 2]  # OpenGL looks down -z
    np.testing.assert_allclose(view, np.array([-1.0, 2.0, 3.5]) / np.linalg.norm([-1.0, 2.0, 3.5]), atol=1e-12)
    assert meta["camera_model"] == "PINHOLE" and (meta["w"], meta["h"]) == (512, 512)


def test_colmap_quaternions_are_scalar_first_world_to_camera():
    q = Rotation.from_euler("y", 90, degrees=True).as_quat()  # scipy: (x, y, z, w)
    cameras = "# c\n1 PINHOLE 640 480 500 510 320 240\n"
    images = f"1 {q[3]} {q[0]} {q[1]} {q[2]} 0.5 0 5 1 a.png\n\n"
    path = colmap.from_colmap_text(cameras, images)
    expected = np.eye(4)
    expected[:3, :3] = Rotation.from_euler("y", 90, degrees=True).as_matrix()
    expected[:3, 3] = [0.5, 0, 5]
    np.testing.assert_allclose(path.w2c[0], expected, atol=1e-12)  # X_cam = R X_world + t, no axis change
    np.testing.assert_allclose(path.intrinsics[0], [500 / 640, 510 / 480, 0.5, 0.5])
    assert path.aspect == 640 / 480


def test_colmap_writer_is_read_by_pycolmap_and_pycolmap_writer_by_us(tmp_path):
    import pycolmap  # requirements-dev.txt: a missing package must fail here, not skip
    path = PATHS["pan+roll 16:9"]
    colmap.write_colmap(path, tmp_path / "ours", width=1280, height=720)
    rec = pycolmap.Reconstruction(str(tmp_path / "ours"))
    images = sorted(rec.images.values(), key=lambda image: image.name)
    assert len(images) == len(path)
    for image, w2c, k in zip(images, path.w2c, path.pixel_intrinsics(1280, 720)):
        np.testing.assert_allclose(image.cam_from_world().matrix(), w2c[:3], atol=1e-12)
        np.testing.assert_allclose(image.camera.calibration_matrix(), k, atol=1e-9)
        assert (image.camera.width, image.camera.height) == (1280, 720)
    (tmp_path / "theirs").mkdir()
    rec.write_text(str(tmp_path / "theirs"))
    _same(colmap.read_colmap(tmp_path / "theirs"), path)


def _blender_matrix_world(euler_xyz_deg, location):
    """Blender's XYZ Euler: R = Rz Ry Rx (scipy's extrinsic 'xyz'), object to world."""
    m = np.eye(4)
    m[:3, :3] = Rotation.from_euler("xyz", euler_xyz_deg, degrees=True).as_matrix()
    m[:3, 3] = location
    return m


def test_upright_blender_camera_looking_along_plus_y_is_the_identity_pose():
    # Rotated 90° about X, a Blender camera (looking down its -Z, +Y up) looks along world +Y with +Z up.
    w2c = blender.w2c_from_blender(_blender_matrix_world([90, 0, 0], [0, -5, 0]))
    np.testing.assert_allclose(w2c[:3, :3], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(w2c @ [0, 0, 0, 1], [0, 0, 5, 1], atol=1e-12)  # the origin 5 ahead
    assert (w2c @ [0, -5, 1, 1])[1] < 0  # Blender +Z (above the camera) is up on screen
    assert (w2c @ [1, -5, 0, 1])[0] > 0  # Blender +X is to the right
    # The default Blender camera (location 7.36, -6.93, 4.96; rotation 63.6°, 0°, 46.7°) looks at about the origin.
    w2c = blender.w2c_from_blender(_blender_matrix_world([63.6, 0, 46.7], [7.3589, -6.9258, 4.9583]))
    ahead = w2c @ [0, 0, 0, 1]
    assert ahead[2] > 10 and np.hypot(ahead[0], ahead[1]) < 0.05 * ahead[2]


def test_blender_camera_maths_matches_the_tool():
    w2c = np.eye(4)
    w2c[:3, 3] = [0.1, 0.2, 0.3]
    np.testing.assert_allclose(blender.w2c_from_blender(blender.blender_from_w2c(w2c)), w2c, atol=1e-15)
    scaled = _blender_matrix_world([30, 10, 5], [1, 2, 3])
    plain = scaled.copy()
    scaled[:3, :3] *= 2.5  # object scale does not change the view
    np.testing.assert_allclose(blender.w2c_from_blender(blender.without_scale(scaled)),
                               blender.w2c_from_blender(plain), atol=1e-12)
    assert blender.without_scale(plain) is not plain and np.array_equal(blender.without_scale(plain), plain)


def test_blender_focal_from_lens_and_sensor():
    # The default camera: 50 mm on a 36 mm sensor, 1920x1080, AUTO fit: Blender shows a 39.6° horizontal FOV.
    (fx, fy, cx, cy), aspect = blender.intrinsics_from_blender(50, 36, 24, "AUTO", 1920, 1080)
    fov_x = 2 * math.degrees(math.atan(0.5 / fx))
    assert fov_x == pytest.approx(2 * math.degrees(math.atan(18 / 50))) and round(fov_x, 1) == 39.6
    assert fy == pytest.approx(fx * 1920 / 1080) and (cx, cy) == (0.5, 0.5) and aspect == 1920 / 1080
    # Portrait with AUTO: the sensor width spans the longer side, the height.
    (fx, fy, _, _), _ = blender.intrinsics_from_blender(50, 36, 24, "AUTO", 1080, 1920)
    assert fy == pytest.approx(50 / 36) and fx == pytest.approx(50 / 36 * 1920 / 1080)
    # VERTICAL uses sensor_height across the image height.
    (_, fy, _, _), _ = blender.intrinsics_from_blender(50, 36, 24, "VERTICAL", 1920, 1080)
    assert fy == pytest.approx(50 / 24)
    # Shift is in units of the fitted side; +shift_x moves the view right, so the optical axis lands left of centre.
    (_, _, cx, cy), _ = blender.intrinsics_from_blender(50, 36, 24, "HORIZONTAL", 1920, 1080, 0.1, 0.1)
    assert cx == pytest.approx(0.4) and cy == pytest.approx(0.5 + 0.1 * 1920 / 1080)
    # Non-square pixels (2:1 wide pixels): the same lens spans half as many pixels across.
    (fx2, fy2, _, _), _ = blender.intrinsics_from_blender(50, 36, 24, "HORIZONTAL", 960, 1080, 0, 0, 2, 1)
    assert fx2 == pytest.approx(50 / 36) and fy2 * 1080 == pytest.approx(2 * fx2 * 960)


def test_blender_keyframes_are_rigid_and_take_the_short_way_round():
    path = tj.concatenate(tj.roll(350, frames=36), tj.orbit("up", 60, frames=10))
    keys = blender.keyframes(path.w2c)
    for (location, q), w2c in zip(keys, path.w2c):
        c2w = blender.blender_from_w2c(w2c)
        np.testing.assert_allclose(location, c2w[:3, 3], atol=1e-12)
        rot = Rotation.from_quat([q[1], q[2], q[3], q[0]]).as_matrix()  # Blender (w, x, y, z) -> scipy (x, y, z, w)
        np.testing.assert_allclose(rot, c2w[:3, :3], atol=1e-9)
    dots = [np.dot(a[1], b[1]) for a, b in zip(keys, keys[1:])]
    assert min(dots) > 0.9


def test_blender_script_imports_without_bpy_and_refuses_what_its_plain_reader_cannot_read():
    source = SCRIPT.read_text(encoding="utf-8")
    assert "import trajectories" not in source and "from trajectories" not in source
    assert all(line.startswith("    ") for line in source.splitlines() if "import bpy" in line)  # lazily, inside
    with pytest.raises(ValueError, match="convert"):
        blender.read_pose_json({"frames": [{"position": [0, 0, 0], "look_at": [0, 0, 1]}]})
    with pytest.raises(ValueError, match="convert"):
        blender.read_pose_json({"frames": [{"w2c": np.eye(4).tolist(), "intrinsics": {"fov_x_deg": 60}}]})
    with pytest.raises(ValueError, match="frame 1"):
        blender.read_pose_json({"frames": [{"w2c": np.eye(4).tolist()}, {"w2c": [[1, 2], [3, 4]]}]})
    aspect, frames = blender.read_pose_json({"aspect": 2.0, "frames": [{"c2w": np.eye(4).tolist()}]})
    assert frames[0][1] == tuple(tj.default_intrinsics(2.0))
    if importlib.util.find_spec("bpy") is None:  # outside Blender only the Blender functions need bpy
        with pytest.raises(ModuleNotFoundError, match="bpy"):
            blender.export_camera("unused.json")
    # Its JSON is valid against our schema's reader and carries the description.
    data = blender.pose_json([np.eye(4)], [(0.5, 0.5, 0.5, 0.5)], 1.0, name="Camera", description="from Blender")
    assert tj.from_json(blender.dumps(data)).allclose(Trajectory(np.eye(4)))


# -- reading what tools write ------------------------------------------------------------------------------------

def test_instant_ngp_camera_angle_and_nerf_synthetic_files():
    c2w = [np.eye(4)]
    angle = math.radians(60)
    path = nerfstudio.from_transforms_json(_transforms(c2w, camera_angle_x=angle, fl_x=100.0))
    # fl_x (pixels) wins when both are given
    assert path.intrinsics[0, 0] == pytest.approx(0.5)
    meta = _transforms(c2w, camera_angle_x=angle)
    del meta["fl_x"]
    path = nerfstudio.from_transforms_json(meta)
    assert path.intrinsics[0, 0] == pytest.approx(0.5 / math.tan(angle / 2))
    synthetic = {"camera_angle_x": angle, "frames": [{"file_path": "./train/r_0", "transform_matrix": np.eye(4).tolist()}]}
    with pytest.warns(TrajectoryWarning, match="square"):
        path = nerfstudio.from_transforms_json(synthetic)
    np.testing.assert_allclose(path.intrinsics[0], [0.5 / math.tan(angle / 2)] * 2 + [0.5, 0.5])
    both = {"camera_angle_x": angle, "camera_angle_y": math.radians(40), "frames": synthetic["frames"]}
    path = nerfstudio.from_transforms_json(both)
    assert path.aspect == pytest.approx(math.tan(angle / 2) / math.tan(math.radians(20)))


def test_transforms_frames_are_sorted_by_file_name_and_per_frame_intrinsics_win():
    c2w = [np.eye(4) for _ in range(3)]
    for i, m in enumerate(c2w):
        m[0, 3] = i
    meta = _transforms(c2w)
    meta["frames"] = [dict(meta["frames"][i], file_path=name) for i, name in
                      zip([2, 0, 1], ["img10.png", "img2.png", "img9.png"])]
    meta["frames"][0]["fl_x"] = 300.0
    with _quiet():
        path = nerfstudio.from_transforms_json(meta)
    np.testing.assert_allclose(path.positions[:, 0], [0, 1, 2])  # img2, img9, img10
    np.testing.assert_allclose(path.intrinsics[:, 0], [0.75, 0.75, 1.5])


def test_distortion_is_ignored_with_a_notice():
    with pytest.warns(TrajectoryWarning, match="distortion"):
        nerfstudio.from_transforms_json(_transforms([np.eye(4)], camera_model="OPENCV", k1=0.01))
    with _quiet():
        nerfstudio.from_transforms_json(_transforms([np.eye(4)], camera_model="OPENCV", k1=0.0, p1=0.0))
    images = "1 1 0 0 0 0 0 0 1 a.png\n\n"
    with pytest.warns(TrajectoryWarning, match="distortion"):
        path = colmap.from_colmap_text("1 SIMPLE_RADIAL 100 50 80 50 25 0.02\n", images)
    np.testing.assert_allclose(path.intrinsics[0], [0.8, 1.6, 0.5, 0.5])  # SIMPLE_RADIAL: f cx cy k
    with pytest.warns(TrajectoryWarning, match="distortion"):
        path = colmap.from_colmap_text("1 OPENCV 100 50 80 90 50 25 0.1 0 0 0\n", images)
    np.testing.assert_allclose(path.intrinsics[0], [0.8, 1.8, 0.5, 0.5])
    with _quiet():
        path = colmap.from_colmap_text("1 SIMPLE_PINHOLE 100 50 80 40 20\n", images)
    np.testing.assert_allclose(path.intrinsics[0], [0.8, 1.6, 0.4, 0.4])


def test_colmap_two_line_layout_with_out_of_order_ids_is_sorted_by_name():
    cameras = "# Camera list\n1 PINHOLE 100 100 50 50 50 50\n2 PINHOLE 200 200 100 100 100 100\n"
    lines = ["# Image list with two lines of data per image:", "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME"]
    for image_id, tx, cam, name in [(7, 2.0, 1, "frame10.jpg"), (3, 0.0, 2, "frame1.jpg"), (12, 1.0, 1, "frame2.jpg")]:
        lines += [f"{image_id} 1 0 0 0 {tx} 0 0 {cam} {name}", "12.5 3.0 -1 40.0 8.25 17"]
    lines[-1] = ""  # an image without 2D points has an empty second line
    path = colmap.from_colmap_text(cameras, "\n".join(lines) + "\n")
    np.testing.assert_allclose(path.w2c[:, 0, 3], [0.0, 1.0, 2.0])  # frame1, frame2, frame10
    assert path.aspect == 1.0


# -- malformed input: the message says where and what was expected ------------------------------------------------

def _one_frame(**frame):
    return {"w": 100, "h": 100, "fl_x": 50, "frames": [{"file_path": "a.png", "transform_matrix": np.eye(4).tolist(),
                                                        **frame}]}


@pytest.mark.parametrize("meta, match", [
    ({"w": 10, "h": 10, "fl_x": 5, "frames": []}, "non-empty list"),
    ({"w": 10, "h": 10, "fl_x": 5, "frames": [{"file_path": "a", "transform_matrix": np.eye(4).tolist()}, {"file_path": "b"}]},
     r"frame 1, 'transform_matrix': has no"),
    (_one_frame(transform_matrix=np.eye(3).tolist()), "3 or 4 rows of 4"),
    (_one_frame(transform_matrix=np.diag([2.0, 2.0, 2.0, 1.0]).tolist()), "not a rotation"),
    (_one_frame(transform_matrix=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]), r"last row"),
    (_one_frame(transform_matrix=[[1, 0, 0, "x"], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "expected a number"),
    ({"fl_x": 50, "frames": _one_frame()["frames"]}, "'w' and 'h' must be given"),
    ({"w": 100, "frames": _one_frame()["frames"]}, "both the image width"),
    ({"w": 100, "h": 100, "frames": _one_frame()["frames"]}, "no focal length"),
    ({"w": 100, "h": 100, "camera_angle_x": 4.0, "frames": _one_frame()["frames"]}, "between 0 and pi"),
    (_one_frame(fl_x=-3), "'fl_x': must be > 0"),
    ({**_one_frame(), "camera_model": "OPENCV_FISHEYE"}, "not a perspective camera"),
    ({**_one_frame(), "frames": _one_frame()["frames"] + [dict(_one_frame()["frames"][0], w=200, file_path="b")]},
     "aspect"),
])
def test_bad_transforms_json_names_frame_and_key(meta, match):
    with pytest.raises(TrajectoryError, match=match):
        nerfstudio.from_transforms_json(meta)


def test_transforms_json_syntax_errors_give_the_line(tmp_path):
    bad = tmp_path / "transforms.json"
    bad.write_text('{"w": 10,\n "h": 10,\n "frames": [\n  {"transform_matrix": [1, 2,]}\n]}\n')
    with pytest.raises(TrajectoryError, match="line 4"):
        tj.load(bad)


@pytest.mark.parametrize("cameras, images, match", [
    ("1 PINHOLE 10 10 5 5 5\n", "1 1 0 0 0 0 0 0 1 a\n\n", r"cameras.txt line 1: a PINHOLE camera has 4 parameters"),
    ("# c\n1 OPENCV_FISHEYE 10 10 5 5 5 5 0 0 0 0\n", "1 1 0 0 0 0 0 0 1 a\n\n", "line 2: .*supported: SIMPLE_PINHOLE"),
    ("1 PINHOLE ten 10 5 5 5 5\n", "1 1 0 0 0 0 0 0 1 a\n\n", "line 1: WIDTH must be a whole number"),
    ("1 PINHOLE 10 10 5 5 5 5\n1 PINHOLE 10 10 5 5 5 5\n", "1 1 0 0 0 0 0 0 1 a\n\n", "line 2: CAMERA_ID 1 is already"),
    ("1 PINHOLE 10 10 0 5 5 5\n", "1 1 0 0 0 0 0 0 1 a\n\n", "focal lengths must be > 0"),
    ("# nothing\n", "1 1 0 0 0 0 0 0 1 a\n\n", "no cameras"),
    ("1 PINHOLE 10 10 5 5 5 5\n", "# header\n1 1 0 0 0 0 0 0 1 a\n2 1 0 0 0 1 0 0 1 b\n",
     r"images.txt line 3: expected the 2D points of image 1.*two lines per image"),
    ("1 PINHOLE 10 10 5 5 5 5\n", "1 1 0 0 0 0 0 0 2 a\n\n", "line 1: CAMERA_ID 2 is not in cameras.txt"),
    ("1 PINHOLE 10 10 5 5 5 5\n", "1 1 0 0 0 0 0 0 1 a\n\n1 1 0 0 0 0 0 0 1 b\n\n", "line 3: IMAGE_ID 1 is already"),
    ("1 PINHOLE 10 10 5 5 5 5\n", "1 1 0 0 0 0 0 0 1 a\n\n2 1 0 0 0 0 0 0 1 a\n\n", "lines 1 and 3 both name"),
    ("1 PINHOLE 10 10 5 5 5 5\n", "1 1 0 0 x 0 0 0 1 a\n\n", "line 1: QZ must be a number, found 'x'"),
    ("1 PINHOLE 10 10 5 5 5 5\n", "1 0 0 0 0 0 0 0 1 a\n\n", "not a rotation"),
    ("1 PINHOLE 10 10 5 5 5 5\n", "1 1 0 0 0 0 0 0 1\n\n", "line 1: expected IMAGE_ID .* NAME, found 9"),
    ("1 PINHOLE 10 10 5 5 5 5\n", "# empty\n", "no images"),
    ("1 PINHOLE 10 10 5 5 5 5\n2 PINHOLE 20 10 5 5 5 5\n", "1 1 0 0 0 0 0 0 1 a\n\n2 1 0 0 0 0 0 0 2 b\n\n",
     "one image shape"),
])
def test_bad_colmap_text_names_file_line_and_what_was_expected(cameras, images, match):
    with pytest.raises(TrajectoryError, match=match):
        colmap.from_colmap_text(cameras, images)


def test_colmap_folders_that_are_not_text_models_say_what_to_do(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "cameras.bin").write_bytes(b"\0")
    with pytest.raises(TrajectoryError, match="model_converter"):
        tj.load(tmp_path / "bin")
    (tmp_path / "proj" / "sparse" / "0").mkdir(parents=True)
    with pytest.raises(TrajectoryError, match=r"sparse/ \(0\)"):
        tj.load(str(tmp_path / "proj"))
    with pytest.raises(TrajectoryError, match="not found"):
        colmap.read_colmap(tmp_path / "missing")


def test_errors_are_cami2v_errors():
    from cami2v_core.errors import CamI2VError
    with pytest.raises(CamI2VError):
        colmap.from_colmap_text("", "")
    with pytest.raises(CamI2VError):
        nerfstudio.from_transforms_json("[]")


# -- inside Blender (opt-in: runs where the `bpy` module is installed, e.g. `pip install bpy` on its Python) -------

def test_in_blender_the_imported_camera_projects_like_our_path_and_exports_back(tmp_path):
    bpy = pytest.importorskip("bpy")
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    bpy.ops.wm.read_factory_settings(use_empty=True)
    path = Trajectory(PATHS["orbit+zoom+focal"].w2c, None, 16 / 9)
    intr = path.intrinsics.copy()
    intr[:, 2:] = [0.47, 0.53]  # an off-centre principal point exercises the shift
    path = Trajectory(path.w2c, intr, path.aspect)
    (tmp_path / "in.json").write_text(tj.to_json(path), encoding="utf-8")
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = 1920, 1000
    cam = blender.import_camera(str(tmp_path / "in.json"))
    assert (scene.render.resolution_x, scene.render.resolution_y) == (1920, 1080)
    rng = np.random.default_rng(0)
    for t, (w2c, (fx, fy, cx, cy)) in enumerate(zip(path.w2c, path.intrinsics)):
        scene.frame_set(scene.frame_start + t)
        for _ in range(10):
            p_cam = np.array([*rng.uniform(-1, 1, 2), rng.uniform(1, 5)])
            p_world = np.linalg.inv(w2c) @ [*p_cam, 1.0]
            ndc = world_to_camera_view(scene, cam, Vector((blender.BLENDER_FROM_WORLD @ p_world)[:3].tolist()))
            # Blender's view coordinates: x right, y up from the bottom-left corner, z the depth.
            expected = (fx * p_cam[0] / p_cam[2] + cx, 1 - (fy * p_cam[1] / p_cam[2] + cy), p_cam[2])
            np.testing.assert_allclose(tuple(ndc), expected, atol=1e-5)  # Blender works in float32
    blender.export_camera(str(tmp_path / "out.json"))
    _same(tj.load(tmp_path / "out.json"), path, atol=1e-5)
