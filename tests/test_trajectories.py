"""trajectories: the Trajectory value, its validation, and the pose JSON / RealEstate10K / CAMERACTRL_POSES formats.

Expected values are written from the formats' definitions (spec §6.4, design.md §2, AnimateDiff-Evolved's
CameraEntry layout) or computed independently here, never read back from the code under test.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trajectories as tj
from trajectories import Trajectory, TrajectoryError, TrajectoryWarning

SCHEMA = Path(tj.__file__).parent / "schema" / "pose.schema.json"


def _rot_y(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def _w2c(rot, centre):
    """w2c of a camera with c2w rotation `rot` at `centre`, written out directly: [R^T, -R^T c]."""
    m = np.eye(4)
    m[:3, :3] = rot.T
    m[:3, 3] = -rot.T @ np.asarray(centre, float)
    return m


def _path(count=5):
    """A small rigid path: yaw 10° per frame, moving right and forward."""
    return Trajectory(np.stack([_w2c(_rot_y(10 * i), (0.3 * i, 0.0, 0.1 * i)) for i in range(count)]),
                      np.tile([0.6, 0.8, 0.45, 0.55], (count, 1)), aspect=4 / 3)


# -- strategies: random rigid paths with random intrinsics -------------------------------------------------------

angles = st.floats(-179, 179, allow_nan=False)
coords = st.floats(-5, 5, allow_nan=False)


@st.composite
def rigid_paths(draw, max_frames=6):
    n = draw(st.integers(1, max_frames))
    w2c, intr = [], []
    for _ in range(n):
        yaw, pitch, roll = draw(angles), draw(st.floats(-89, 89)), draw(angles)
        a, b, c = map(math.radians, (yaw, pitch, roll))
        rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
        rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
        w2c.append(_w2c(_rot_y(yaw) @ rx @ rz, [draw(coords) for _ in range(3)]))
        intr.append([draw(st.floats(0.05, 3)), draw(st.floats(0.05, 3)), draw(st.floats(0, 1)), draw(st.floats(0, 1))])
    return Trajectory(np.stack(w2c), np.array(intr), aspect=draw(st.floats(0.25, 4)))


# -- the value -----------------------------------------------------------------------------------------------------

def test_trajectory_is_an_immutable_validated_value():
    w2c = np.stack([_w2c(_rot_y(5 * i), (i, 0, 0)) for i in range(3)])
    t = Trajectory(w2c[:, :3, :].tolist())  # [T,3,4] lists are completed to [T,4,4] float64
    assert t.w2c.shape == (3, 4, 4) and t.w2c.dtype == np.float64 and len(t) == 3
    np.testing.assert_array_equal(t.w2c, w2c)
    with pytest.raises(ValueError):
        t.w2c[0, 0, 0] = 2.0  # read-only
    with pytest.raises(AttributeError):
        t.aspect = 2.0  # frozen
    w2c[0, 0, 3] = 99.0  # the stored copy does not alias the input
    assert t.w2c[0, 0, 3] == 0.0
    np.testing.assert_allclose(t.positions, [[0, 0, 0], [1, 0, 0], [2, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(t.c2w @ t.w2c, np.tile(np.eye(4), (3, 1, 1)), atol=1e-12)


@pytest.mark.parametrize("aspect,expected", [(1.0, [0.5, 0.5, 0.5, 0.5]), (16 / 9, [0.5, 0.5 * 16 / 9, 0.5, 0.5]),
                                             (0.5, [1.0, 0.5, 0.5, 0.5])])
def test_default_intrinsics_are_90_degrees_across_the_long_side_with_square_pixels(aspect, expected):
    t = Trajectory(np.eye(4), aspect=aspect)
    np.testing.assert_allclose(t.intrinsics, [expected])
    k = t.pixel_intrinsics(width=round(288 * aspect), height=288)[0]
    long_side = max(round(288 * aspect), 288)
    assert k[0, 0] == pytest.approx(k[1, 1], rel=1e-2) == pytest.approx(long_side / 2, rel=1e-2)  # tan(45°) = 1


def test_relative_makes_the_reference_frame_the_identity_and_keeps_relative_motion():
    t = _path()
    rel = t.relative(2)
    np.testing.assert_allclose(rel.w2c[2], np.eye(4), atol=1e-12)
    for i in range(len(t)):  # inv(c2w_ref) · c2w_i (spec §6.3), computed here with the general inverse
        np.testing.assert_allclose(rel.c2w[i], np.linalg.inv(t.c2w[2]) @ t.c2w[i], atol=1e-12)
    with pytest.raises(TrajectoryError, match="reference frame 9"):
        t.relative(9)


def test_scaled_multiplies_every_relative_translation_like_trace_scale():
    t = _path()
    s = t.scaled(0.25)
    for ref in (0, 3):
        a, b = t.relative(ref).c2w, s.relative(ref).c2w
        np.testing.assert_allclose(b[:, :3, :3], a[:, :3, :3], atol=1e-12)
        np.testing.assert_allclose(b[:, :3, 3], 0.25 * a[:, :3, 3], atol=1e-12)


def test_indexing_gives_trajectories():
    t = _path()
    assert len(t[1:3]) == 2 and len(t[4]) == 1
    np.testing.assert_array_equal(t[::-1].w2c[0], t.w2c[-1])
    np.testing.assert_array_equal(t[[0, 0]].intrinsics, t.intrinsics[[0, 0]])


# -- validation: errors name the frame and the field ---------------------------------------------------------------

def _bad(w2c=None, intrinsics=None, **kw):
    base = _path()
    return Trajectory(base.w2c.copy() if w2c is None else w2c, base.intrinsics.copy() if intrinsics is None
                      else intrinsics, **kw)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_pose_names_frame_and_field(value):
    w2c = _path().w2c.copy()
    w2c[2, 1, 3] = value
    with pytest.raises(TrajectoryError, match=r"frame 2, 'w2c'") as e:
        _bad(w2c)
    assert e.value.frame == 2 and e.value.field == "w2c"


@pytest.mark.parametrize("column,name", [(0, "fx"), (1, "fy"), (2, "cx"), (3, "cy")])
def test_non_finite_intrinsics_name_frame_and_field(column, name):
    intr = _path().intrinsics.copy()
    intr[3, column] = np.nan
    with pytest.raises(TrajectoryError, match=rf"frame 3, '{name}'"):
        _bad(intrinsics=intr)


@pytest.mark.parametrize("column,name,value", [(0, "fx", 0.0), (1, "fy", -0.5), (0, "fx", -1e-9)])
def test_zero_or_negative_focal_length_is_refused(column, name, value):
    intr = _path().intrinsics.copy()
    intr[1, column] = value
    with pytest.raises(TrajectoryError, match=rf"frame 1, '{name}': focal length must be > 0"):
        _bad(intrinsics=intr)


def test_scaled_or_sheared_rotation_is_refused_with_its_frame():
    w2c = _path().w2c.copy()
    w2c[4, :3, :3] *= 1.5
    with pytest.raises(TrajectoryError, match=r"frame 4, 'w2c': the rotation block is not a rotation"):
        _bad(w2c)
    w2c = _path().w2c.copy()
    w2c[1, :3, :3] = 0.0  # singular
    with pytest.raises(TrajectoryError, match=r"frame 1, 'w2c'"):
        _bad(w2c)


def test_slightly_non_rigid_rotation_is_reorthonormalised_with_a_warning_keeping_the_centre():
    t = _path()
    w2c = t.w2c.copy()
    w2c[3, 0, :3] *= 1.02  # 4 % off: inside the repair band (documented RIGID_REPAIR_TOL)
    centre = -np.linalg.inv(w2c[3, :3, :3]) @ w2c[3, :3, 3]
    with pytest.warns(TrajectoryWarning, match=r"frames \[3\]"):
        fixed = _bad(w2c)
    r = fixed.w2c[3, :3, :3]
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(-r.T @ fixed.w2c[3, :3, 3], centre, atol=1e-3)
    np.testing.assert_array_equal(fixed.w2c[:3], t.w2c[:3])  # other frames untouched


def test_round_off_and_the_demos_interpolation_level_are_kept_exactly():
    w2c = _path().w2c.copy()
    w2c[2, :3, :3] *= 1 + 1e-4  # like printed decimals or an element-wise lerp between near poses
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = _bad(w2c)
    np.testing.assert_array_equal(kept.w2c, w2c)


def test_a_fully_mirrored_world_is_flipped_with_a_warning_and_relative_poses_unchanged():
    t = _path()
    flip = np.diag([1.0, 1.0, -1.0, 1.0])  # world z negated: every w2c becomes a reflection
    mirrored = t.w2c @ flip
    assert (np.linalg.det(mirrored[:, :3, :3]) < 0).all()
    with pytest.warns(TrajectoryWarning, match="reflection"):
        fixed = Trajectory(mirrored, t.intrinsics, t.aspect)
    assert (np.linalg.det(fixed.w2c[:, :3, :3]) > 0).all()
    np.testing.assert_allclose(fixed.relative(0).c2w, t.relative(0).c2w, atol=1e-12)


def test_mixed_handedness_is_refused_naming_the_odd_frame():
    w2c = _path().w2c.copy()
    w2c[3] = w2c[3] @ np.diag([1.0, -1.0, 1.0, 1.0])
    with pytest.raises(TrajectoryError, match=r"frame 3, 'w2c': the rotation is a reflection"):
        _bad(w2c)


def test_bottom_row_shape_count_and_aspect_are_checked():
    w2c = _path().w2c.copy()
    w2c[1, 3] = [0, 0, 1, 1]
    with pytest.raises(TrajectoryError, match=r"frame 1, 'w2c': the last row must be \[0, 0, 0, 1\]"):
        _bad(w2c)
    with pytest.raises(TrajectoryError, match="no frames"):
        Trajectory(np.zeros((0, 4, 4)))
    with pytest.raises(TrajectoryError, match=r"\[T,4,4\].*\[5, 4, 3\]"):
        Trajectory(np.zeros((5, 4, 3)))
    with pytest.raises(TrajectoryError, match=r"'intrinsics'.*\[5,4\]"):
        _bad(intrinsics=np.ones((4, 4)))
    for aspect in (0.0, -1.0, float("nan"), True, "wide"):
        with pytest.raises(TrajectoryError, match="'aspect'"):
            _bad(aspect=aspect)
    with pytest.raises(TrajectoryError, match="more than the"):
        Trajectory(np.tile(np.eye(4), (tj.MAX_FRAMES + 1, 1, 1)))


# -- CAMERACTRL_POSES --------------------------------------------------------------------------------------------

def test_cameractrl_poses_layout_matches_design_and_animatediff_reader():
    """[t, fx, fy, cx, cy, pose_w, pose_h, w2c 3x4 row-major]; AnimateDiff reads entry[7:] as reshape(3, 4)."""
    t = _path()
    poses = tj.to_cameractrl_poses(t)
    assert len(poses) == len(t) and all(len(p) == 19 and all(type(v) is float for v in p) for p in poses)
    for i, p in enumerate(poses):
        assert p[0] == i
        assert p[1:5] == t.intrinsics[i].tolist()
        assert p[5] / p[6] == pytest.approx(4 / 3)  # only the ratio is read (AnimateDiff's pose_wh_ratio)
        np.testing.assert_array_equal(np.array(p[7:]).reshape(3, 4), t.w2c[i, :3])


def test_animatediff_style_poses_read_with_their_pose_size():
    rows = []
    for i in range(3):
        w2c = _w2c(_rot_y(7 * i), (0.1 * i, 0, 0))
        rows.append([0, 0.474812461, 0.844111024, 0.5, 0.5, 1280, 720, *w2c[:3].reshape(12)])
    t = tj.from_cameractrl_poses(rows)
    assert t.aspect == pytest.approx(1280 / 720)
    np.testing.assert_allclose(t.intrinsics[:, 0], 0.474812461)
    np.testing.assert_allclose(t.w2c[2], _w2c(_rot_y(14), (0.2, 0, 0)), atol=1e-12)
    rows[0][5] = rows[0][6] = 0.0  # raw RealEstate10K lines carry k1 = k2 = 0 there: aspect from square pixels
    for r in rows:
        r[5] = r[6] = 0.0
    assert tj.from_cameractrl_poses(rows).aspect == pytest.approx(0.844111024 / 0.474812461)


def test_bad_cameractrl_poses_name_the_frame_and_slot():
    good = tj.to_cameractrl_poses(_path())
    with pytest.raises(TrajectoryError, match=r"frame 2, 'pose': has 18 numbers"):
        tj.from_cameractrl_poses(good[:2] + [good[2][:18]] + good[3:])
    bad = [list(p) for p in good]
    bad[1][9] = float("nan")
    with pytest.raises(TrajectoryError, match=r"frame 1, 'w2c\[0\]\[2\]'"):
        tj.from_cameractrl_poses(bad)
    bad = [list(p) for p in good]
    bad[3][2] = "0.5"
    with pytest.raises(TrajectoryError, match=r"frame 3, 'fy': expected a number"):
        tj.from_cameractrl_poses(bad)
    bad = [list(p) for p in good]
    bad[4][5] = 2.0
    with pytest.raises(TrajectoryError, match=r"frame 4, 'pose_w/pose_h'"):
        tj.from_cameractrl_poses(bad)
    with pytest.raises(TrajectoryError, match="empty"):
        tj.from_cameractrl_poses([])


# -- RealEstate10K text ---------------------------------------------------------------------------------------------

DEMO_LIKE = """https://xxx
114514 0.500000000 0.500000000 0.500000000 0.500000000 0.000000000 0.000000000 1.0 0.0 0.0 0.0 0.0 1.0 0.0 0.0 0.0 0.0 1.0 0.0
114514 0.500000000 0.500000000 0.500000000 0.500000000 0.000000000 0.000000000 1.0 0.0 0.0 0.0 0.0 1.0 0.0 0.0 0.0 0.0 1.0 -0.14285715
"""


def test_realestate10k_text_reads_like_the_demo():
    t = tj.from_realestate10k(DEMO_LIKE)
    assert len(t) == 2 and t.aspect == 1.0
    np.testing.assert_array_equal(t.intrinsics, [[0.5] * 4] * 2)
    assert t.w2c[1, 2, 3] == pytest.approx(-0.14285715)
    assert t.positions[1, 2] == pytest.approx(0.14285715)  # camera 1 is ahead of camera 0: "zoom in"


def test_realestate10k_writer_is_19_numbers_per_line_after_a_url_line():
    t = _path()
    lines = tj.to_realestate10k(t, url="https://www.youtube.com/watch?v=abc").splitlines()
    assert lines[0] == "https://www.youtube.com/watch?v=abc" and len(lines) == len(t) + 1
    for i, line in enumerate(lines[1:]):
        v = [float(x) for x in line.split(" ")]  # single spaces: AnimateDiff's loader splits on ' '
        assert len(v) == 19 and v[0] == i and v[5:7] == [0.0, 0.0]
        assert v[1:5] == t.intrinsics[i].tolist()
        np.testing.assert_array_equal(np.reshape(v[7:], (3, 4)), t.w2c[i, :3])


def test_bad_realestate10k_text_names_line_frame_and_field():
    lines = DEMO_LIKE.splitlines()
    short = "\n".join(lines[:2] + [" ".join(lines[2].split()[:17])])
    with pytest.raises(TrajectoryError, match=r"frame 1, 'line': line 3 has 17 values"):
        tj.from_realestate10k(short)
    words = lines[2].split()
    words[12] = "abc"
    with pytest.raises(TrajectoryError, match=r"frame 1, 'w2c\[1\]\[1\]': line 3: 'abc' is not a number"):
        tj.from_realestate10k("\n".join(lines[:2] + [" ".join(words)]))
    words[12] = "nan"
    with pytest.raises(TrajectoryError, match=r"frame 1, 'w2c\[1\]\[1\]'.*finite"):
        tj.from_realestate10k("\n".join(lines[:2] + [" ".join(words)]))
    with pytest.raises(TrajectoryError, match="no pose lines"):
        tj.from_realestate10k("https://xxx\n\n")
    words = lines[1].split()
    words[1] = "0"
    with pytest.raises(TrajectoryError, match=r"frame 0, 'fx': focal length must be > 0"):
        tj.from_realestate10k(" ".join(words))


# -- pose JSON ----------------------------------------------------------------------------------------------------

def test_pose_json_accepts_w2c_c2w_and_look_at_with_intrinsics_variants():
    rot = _rot_y(30)
    centre = [1.0, -0.5, 2.0]
    w2c = _w2c(rot, centre)
    doc = {
        "format": "cami2v-trajectory", "version": 1, "aspect": 2.0,
        "intrinsics": {"fov_x_deg": 90},
        "frames": [
            {"w2c": w2c[:3].tolist()},
            {"c2w": np.linalg.inv(w2c).reshape(16).tolist(), "intrinsics": {"fx": 0.8, "cx": 0.4}},
            {"position": centre, "look_at": (np.array(centre) + rot[:, 2]).tolist(),
             "intrinsics": {"fov_y_deg": 60}},
            {"position": [0, 0, 0], "look_at": [0, 0, 5], "up": [0, -1, 0], "intrinsics": {"focal_mm": 18}},
            {"w2c": np.eye(4).tolist(), "intrinsics": {"focal_mm": 50, "sensor_width_mm": 25}},
        ],
    }
    t = tj.from_json(json.dumps(doc))
    for i in range(3):
        np.testing.assert_allclose(t.w2c[i], w2c, atol=1e-12)
    np.testing.assert_allclose(t.w2c[3], np.eye(4), atol=1e-12)
    f90 = 0.5 / math.tan(math.radians(45))
    fy60 = 0.5 / math.tan(math.radians(30))
    np.testing.assert_allclose(t.intrinsics, [
        [f90, f90 * 2.0, 0.5, 0.5],      # square pixels: fy = fx · aspect
        [0.8, 1.6, 0.4, 0.5],
        [fy60 / 2.0, fy60, 0.5, 0.5],
        [18 / 36, 1.0, 0.5, 0.5],
        [2.0, 4.0, 0.5, 0.5]], atol=1e-12)


def test_look_at_default_up_is_opencv_minus_y_and_y_up_worlds_work():
    down = tj.from_json({"frames": [{"position": [0, 0, 0], "look_at": [0, 0, 1]}]})
    np.testing.assert_allclose(down.w2c[0], np.eye(4), atol=1e-12)
    # A y-up world (OpenGL-like): camera at +z looking at the origin; its image "down" must be world -y.
    t = tj.from_json({"frames": [{"position": [0, 0, 5], "look_at": [0, 0, 0], "up": [0, 1, 0]}]})
    c2w = t.c2w[0]
    np.testing.assert_allclose(c2w[:3, 1], [0, -1, 0], atol=1e-12)  # camera y (down) = world -y
    np.testing.assert_allclose(c2w[:3, 2], [0, 0, -1], atol=1e-12)  # looks along -z towards the origin
    np.testing.assert_allclose(c2w[:3, 3], [0, 0, 5], atol=1e-12)


@pytest.mark.parametrize("frame,match", [
    ({"w2c": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1]]}, r"frame 1, 'w2c': expected 3 or 4 rows of 4 numbers"),
    ({"w2c": [1, 0, 0]}, r"frame 1, 'w2c': expected 12 or 16 numbers"),
    ({"c2w": np.diag([2.0, 2, 2, 1]).tolist()}, r"frame 1, 'c2w': the rotation block is not a rotation"),
    ({"w2c": np.eye(4).tolist(), "c2w": np.eye(4).tolist()}, r"frame 1, 'pose': give exactly one"),
    ({"position": [0, 0, 0]}, r"frame 1, 'look_at'"),
    ({"position": [0, 0, 0], "look_at": [0, 0, 0]}, r"frame 1, 'look_at': is the same point"),
    ({"position": [0, 0, 0], "look_at": [0, 1, 0]}, r"frame 1, 'up': makes a view direction parallel"),
    ({"position": [0, 0, "1"], "look_at": [0, 0, 2]}, r"frame 1, 'position': expected a number"),
    ({"w2c": np.eye(4).tolist(), "intrinsics": {"fx": 0}}, r"frame 1, 'intrinsics.fx': must be > 0"),
    ({"w2c": np.eye(4).tolist(), "intrinsics": {"fx": -2}}, r"frame 1, 'intrinsics.fx': must be > 0"),
    ({"w2c": np.eye(4).tolist(), "intrinsics": {"fov_x_deg": 180}}, r"frame 1, 'intrinsics.fov_x_deg'"),
    ({"w2c": np.eye(4).tolist(), "intrinsics": {"fx": 1, "fov_x_deg": 50}}, r"frame 1, 'intrinsics': give the focal"),
    ({"w2c": np.eye(4).tolist(), "intrinsics": {"cx": 0.5}}, r"frame 1, 'intrinsics': give the focal"),
    ({"w2c": np.eye(4).tolist(), "fov": 50}, r"frame 1, 'fov': unknown key"),
    ({"w2c": [[1, 0, 0, float("nan")], [0, 1, 0, 0], [0, 0, 1, 0]]}, r"frame 1, 'w2c': expected a finite number"),
    ({"w2c": [[1, 0, 0, 1e400], [0, 1, 0, 0], [0, 0, 1, 0]]}, r"frame 1, 'w2c': expected a finite number"),
])
def test_bad_pose_json_frames_name_frame_and_field(frame, match):
    doc = {"frames": [{"w2c": np.eye(4).tolist()}, frame]}
    with pytest.raises(TrajectoryError, match=match):
        tj.from_json(json.dumps(doc))


def test_bad_pose_json_documents():
    with pytest.raises(TrajectoryError, match="'frames' is empty"):
        tj.from_json('{"frames": []}')
    with pytest.raises(TrajectoryError, match="'frames'"):
        tj.from_json('{"aspect": 1}')
    with pytest.raises(TrajectoryError, match="not valid JSON.*line 1"):
        tj.from_json('{"frames": [}')
    with pytest.raises(TrajectoryError, match="'format'"):
        tj.from_json('{"format": "other", "frames": [{"w2c": [1,0,0,0,0,1,0,0,0,0,1,0]}]}')
    with pytest.raises(TrajectoryError, match="'aspect'"):
        tj.from_json('{"aspect": 0, "frames": [{"w2c": [1,0,0,0,0,1,0,0,0,0,1,0]}]}')
    with pytest.raises(TrajectoryError, match="unknown key 'frame'"):
        tj.from_json('{"frame": []}')


def test_schema_lists_exactly_the_keys_the_reader_accepts():
    schema = json.loads(SCHEMA.read_text())
    from trajectories import formats
    assert tuple(schema["properties"]) == formats._TOP_KEYS
    assert tuple(schema["$defs"]["frame"]["properties"]) == formats._FRAME_KEYS
    assert tuple(schema["$defs"]["intrinsics"]["properties"]) == formats._INTRINSIC_KEYS
    assert schema["properties"]["format"]["const"] == formats.JSON_FORMAT
    assert schema["properties"]["frames"]["maxItems"] == tj.MAX_FRAMES


def test_json_writer_output_is_documented_shape():
    t = _path(3)
    doc = json.loads(tj.to_json(t, name="demo"))
    assert doc["format"] == "cami2v-trajectory" and doc["version"] == 1 and doc["name"] == "demo"
    assert doc["aspect"] == 4 / 3 and len(doc["frames"]) == 3
    assert doc["frames"][1]["w2c"] == t.w2c[1, :3].tolist()
    assert doc["frames"][1]["intrinsics"] == dict(zip("fx fy cx cy".split(), t.intrinsics[1].tolist()))


# -- round trips (hypothesis) ---------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(rigid_paths())
def test_json_cameractrl_realestate10k_round_trips_are_exact(path):
    via_json = tj.from_json(tj.to_json(path))
    via_poses = tj.from_cameractrl_poses(tj.to_cameractrl_poses(via_json))
    via_text = tj.from_realestate10k(tj.to_realestate10k(via_poses))
    back = tj.from_json(tj.to_json(via_text))
    for t in (via_json, via_poses, via_text, back):
        np.testing.assert_allclose(t.w2c, path.w2c, rtol=0, atol=1e-6)
        np.testing.assert_allclose(t.intrinsics, path.intrinsics, rtol=0, atol=1e-6)
    assert via_json.aspect == via_poses.aspect == path.aspect  # RealEstate10K text has no aspect (see docs)
    np.testing.assert_array_equal(via_json.w2c, path.w2c)  # JSON floats are written to round-trip bit for bit


@settings(max_examples=30, deadline=None)
@given(path=rigid_paths(max_frames=3), kind=st.sampled_from(["json", "poses", "text"]))
def test_load_detects_every_format_from_text_and_files(path, kind, tmp_path_factory):
    text = {"json": tj.to_json(path), "poses": json.dumps(tj.to_cameractrl_poses(path)),
            "text": tj.to_realestate10k(path)}[kind]
    file = tmp_path_factory.mktemp("poses") / f"path.{'txt' if kind == 'text' else 'json'}"
    file.write_text(text, encoding="utf-8")
    for source in (text, text.encode(), file, str(file)):
        np.testing.assert_allclose(tj.load(source).w2c, path.w2c, atol=1e-12)
    assert tj.load(path) is path


def test_load_presets_by_name_and_refuses_unknown_sources(tmp_path):
    assert len(tj.load("orbit left")) == 16
    assert tj.load("Orbit_Left").allclose(tj.load("orbit left"))
    with pytest.raises(TrajectoryError, match="not a preset name.*Presets: zoom in"):
        tj.load("orbit sideways")
    with pytest.raises(TrajectoryError, match="pose file .*nope.json' not found"):
        tj.load(str(tmp_path / "nope.json"))
    with pytest.raises(TrajectoryError, match="pose file .*nope.txt not found"):
        tj.load(tmp_path / "nope.txt")
    with pytest.raises(TrajectoryError, match="cannot read a camera path from int"):
        tj.load(3)


def test_oversized_and_non_utf8_files_are_refused(tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as fh:
        fh.truncate(tj.formats.MAX_TEXT_BYTES + 1)
    with pytest.raises(TrajectoryError, match="MiB; pose files are limited"):
        tj.load(big)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("https://x\n# caméra\n".encode("latin-1"))
    with pytest.raises(TrajectoryError, match=r"not UTF-8 text \(byte 0xe9"):
        tj.load(latin)
    with pytest.raises(TrajectoryError, match="is a folder"):
        tj.read_text(tmp_path)
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + tj.to_json(_path(2)).encode())  # Windows editors add a byte-order mark
    assert len(tj.load(bom)) == 2


# -- command line -------------------------------------------------------------------------------------------------

def test_command_line_lists_converts_and_draws(tmp_path, capsys):
    from trajectories.__main__ import main
    assert main(["list"]) == 0
    assert "rotate anti-clockwise" in capsys.readouterr().out
    out = tmp_path / "orbit.json"
    assert main(["convert", "orbit left", "--frames", "8", "--ratio", "1", "--out", str(out)]) == 0
    assert tj.load(out).allclose(tj.preset("orbit left", frames=8, ratio=1.0), atol=1e-12)
    assert main(["convert", str(out), "--to", "realestate10k"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 9
    assert main(["show", str(out), "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert main(["convert", str(tmp_path / "missing.json")]) == 2
    assert "not found" in capsys.readouterr().err


def test_the_json_example_in_the_user_docs_loads():
    docs = Path(__file__).resolve().parents[1] / "docs" / "trajectories.md"
    blocks = [b.split("\n", 1)[1] for b in docs.read_text().split("```")[1::2] if b.startswith("json")]
    assert blocks, "docs/trajectories.md shows a pose JSON example"
    for block in blocks:
        path = tj.load(block)
        np.testing.assert_allclose(path.positions, [[0, 0, 0], [0, 0, 0.5], [0, 0, 1]], atol=1e-12)
        assert path.aspect == 1.7778
        assert path.intrinsics[2, 0] == pytest.approx(35 / 36)
        assert path.intrinsics[0, 0] == pytest.approx(0.5 / math.tan(math.radians(35)))
