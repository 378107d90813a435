"""Camera paths copied from a video (trajectories/from_video.py, trajectories/sfm.py, `from-video` command).

The reconstruction tests render synthetic rooms (training.synthetic / training.render) along known cameras and
compare the recovered path with them: per-frame rotation of every frame relative to the first one, and camera
centres after a similarity alignment (Umeyama, written out here), against the length of the true path. The
settings of from_video (RANSAC threshold, focal-length fallback) were chosen on rooms from the random streams keyed
(9999, k); the rooms here come from the streams keyed (TEST_STREAM, k), which nothing was tuned on.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

import trajectories as tj
from trajectories import from_video
from trajectories.__main__ import main
from trajectories.from_video import VideoPathError, path_from_frames, path_from_video, read_clip, smooth
from trajectories.sfm import SfMError, require_pycolmap

TEST_STREAM = 0xF1D5
H, W, T = 120, 160, 12
SFM = {"size": 256, "threads": 2}


# ----------------------------------------------------------------------------------------------------------------
# Clips with known cameras


def _scene_and_intrinsics(k: int):
    from training.camera_paths import sample_intrinsics
    from training.synthetic import scene_from_rng

    rng = np.random.default_rng([TEST_STREAM, k])
    scene = scene_from_rng(rng, {"test_from_video": k})
    return scene, sample_intrinsics(rng, H, W), rng


def known_clip(family: str, k: int = 0, frames: int = T):
    """(frames uint8 [T,H,W,3], true w2c [T,4,4], true intrinsics [4], scene) of one path family; "combo" is an
    orbit followed by a dolly towards what the camera looks at."""
    from training.camera_paths import look_at_w2c, sample_path
    from training.render import render_views

    scene, intr, rng = _scene_and_intrinsics(k)
    if family == "combo":
        first = sample_path(scene, rng, frames // 2 + 1, "orbit_right")
        ahead = first.targets[-1] - first.positions[-1]
        ahead /= np.linalg.norm(ahead)
        s = np.linspace(0.0, 0.5, frames - frames // 2)[1:, None]
        w2c = look_at_w2c(np.concatenate([first.positions, first.positions[-1] + s * ahead]),
                          np.concatenate([first.targets, first.targets[-1] + s * ahead]))
    else:
        w2c = sample_path(scene, rng, frames, family).w2c()
    video = render_views(scene, w2c, np.repeat(intr[None], frames, axis=0), H, W, 1)
    return video, w2c, intr, scene


def umeyama(src, dst):
    """Similarity (c, R, t) minimising sum |c R src + t - dst|^2 over points [N,3] (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, d, vt = np.linalg.svd(b.T @ a / len(src))
    s = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    r = u @ s @ vt
    c = float(np.sum(d * np.diag(s)) / (np.sum(a * a) / len(src)))
    return c, r, mu_d - c * r @ mu_s


def path_errors(true_w2c, est_w2c):
    """Mean per-frame rotation error (degrees) of the poses relative to frame 0, the largest centre error after
    similarity alignment as a fraction of the true path's length, and the alignment's scale."""
    true_c2w = np.linalg.inv(true_w2c @ np.linalg.inv(true_w2c[0]))
    est_c2w = np.linalg.inv(est_w2c @ np.linalg.inv(est_w2c[0]))
    cos = (np.einsum("tij,tij->t", true_c2w[:, :3, :3], est_c2w[:, :3, :3]) - 1.0) / 2.0
    rot_deg = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    true_c, est_c = true_c2w[:, :3, 3], est_c2w[:, :3, 3]
    c, r, t = umeyama(est_c, true_c)
    aligned = c * est_c @ r.T + t
    length = np.linalg.norm(np.diff(true_c, axis=0), axis=1).sum()
    return float(rot_deg.mean()), float(np.linalg.norm(aligned - true_c, axis=1).max() / length), c


def true_depths(scene, w2c0, intr):
    """Depths along the optical axis [H*W] of what every pixel of the first camera sees (the renderer's rays)."""
    from training.render import camera_rays, first_hits

    origin, dirs = camera_rays(w2c0, intr, H, W, 1)
    dirs = dirs.reshape(-1, 3)
    hit, _ = first_hits(scene, origin, dirs)
    return hit * (dirs @ np.linalg.inv(w2c0)[:3, 2])


def check_recovery(path, true_w2c, intr, scene, fov_given: bool, report=()):
    """The recovered path against the true cameras (the issue's thresholds) and the unit of its scale."""
    rot_deg, trans_frac, c = path_errors(true_w2c, path.w2c)
    assert rot_deg < 1.0, (rot_deg, report)
    assert trans_frac < 0.10, (trans_frac, report)
    assert np.array_equal(path.w2c[0], np.eye(4))  # relative to the first frame
    assert path.aspect == pytest.approx(W / H)
    if fov_given:
        assert np.allclose(path.intrinsics, intr)
    # The unit is a near depth of the scene the first frame sees: c (true units per output unit) lies between the
    # 5th percentile and the median of the true per-pixel depths (loosely: SfM points sit on texture, not evenly).
    depth = true_depths(scene, true_w2c[0], intr)
    assert 0.5 * np.percentile(depth, 5) < c < 1.5 * np.median(depth), (c, report)


# ----------------------------------------------------------------------------------------------------------------
# Reconstruction of known paths


def test_orbit_from_an_mp4_with_estimated_intrinsics(tmp_path):
    import av
    require_pycolmap()  # requirements-dev.txt: a missing package must fail here, not skip

    video, w2c, intr, scene = known_clip("orbit_left")
    mp4 = tmp_path / "orbit.mp4"
    with av.open(str(mp4), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "12"}
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    clip = read_clip(mp4, sfm_frames=32)
    assert clip.total == T and clip.indices.tolist() == list(range(T)) and clip.frames.shape == (T, H, W, 3)
    lines = []
    result = path_from_video(mp4, frames_out=T, progress=lines.append, **SFM)
    assert result.intrinsics_source == "estimated" and result.registered == list(range(T)) and not result.missing
    check_recovery(result.path, w2c, intr, scene, False, result.report())
    true_fov = math.degrees(2 * math.atan(0.5 / intr[0]))
    got_fov = math.degrees(2 * math.atan(0.5 / result.intrinsics[0]))
    assert abs(got_fov - true_fov) < 5.0, (got_fov, true_fov)
    assert any("registered" in line for line in lines)  # progress lines


def test_pan_from_a_frame_folder_on_the_command_line(tmp_path, capsys):
    from PIL import Image

    require_pycolmap()

    video, w2c, intr, scene = known_clip("pan_right")
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, frame in enumerate(video):  # unpadded names: 10 and 11 must come after 9
        Image.fromarray(frame).save(folder / f"frame{k}.png")
    fov = math.degrees(2 * math.atan(0.5 / intr[0]))
    out = tmp_path / "pan.json"
    code = main(["from-video", str(folder), "--out", str(out), "--frames", str(T), "--fov", repr(fov),
                 "--smooth", "1", "--sfm-size", "256", "--threads", "2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"{T} of {T} sampled frames registered" in err and "smoothed" in err
    path = tj.load(out)
    assert len(path) == T
    check_recovery(path, w2c, intr, scene, True, err)


def test_dolly_with_given_intrinsics():
    require_pycolmap()

    video, w2c, intr, scene = known_clip("dolly_in")
    result = path_from_frames(video, frames_out=T, intrinsics=intr, **SFM)
    assert result.intrinsics_source == "given"
    check_recovery(result.path, w2c, intr, scene, True, result.report())


def test_orbit_then_dolly_resampled_to_the_models_frames():
    require_pycolmap()

    video, w2c, intr, scene = known_clip("combo")
    result = path_from_frames(video, frames_out=16, **SFM)
    assert len(result.path) == 16 and any("resampled" in note for note in result.notes)
    truth = tj.resample(tj.Trajectory(w2c, intr, W / H), 16)
    check_recovery(result.path, truth.w2c, intr, scene, False, result.report())


# ----------------------------------------------------------------------------------------------------------------
# Clips that do not (fully) reconstruct


def test_a_constant_colour_clip_is_one_clear_error():
    require_pycolmap()

    grey = np.full((8, 48, 64, 3), 128, dtype=np.uint8)
    with pytest.raises(VideoPathError) as e:
        path_from_frames(grey, name="grey.mp4", **SFM)
    message = str(e.value)
    assert "could not reconstruct the camera of grey.mp4" in message and "features" in message
    assert "\n" not in message


def test_a_short_gap_is_filled_and_reported_a_long_one_is_refused():
    require_pycolmap()

    video, w2c, intr, scene = known_clip("orbit_right", k=1)
    one = video.copy()
    one[6] = 0  # a black frame inside the clip
    result = path_from_frames(one, frames_out=T, intrinsics=intr, **SFM)
    assert 6 in result.missing and "features" in result.missing[6] and result.interpolated == [6]
    assert any(line.startswith("frame 6 not registered") for line in result.report())
    keep = [k for k in range(T) if k != 6]
    rot_deg, trans_frac, _ = path_errors(w2c[keep], result.path.w2c[keep])
    assert rot_deg < 1.0 and trans_frac < 0.10
    # The filled-in pose lies between its neighbours (SLERP / linear centres), not at a reconstructed place.
    centres = result.path.positions
    assert np.allclose(centres[6], (centres[5] + centres[7]) / 2, atol=1e-9)
    long_gap = video.copy()
    long_gap[4:8] = 0
    with pytest.raises(VideoPathError, match=r"frames 4-7 .* did not register .* too long to fill in"):
        path_from_frames(long_gap, frames_out=T, intrinsics=intr, **SFM)


# ----------------------------------------------------------------------------------------------------------------
# Pieces that need no reconstruction


def test_smoothing_keeps_a_constant_speed_move_and_the_ends_and_removes_jitter():
    line = tj.dolly("in", 0.9, frames=20)
    assert smooth(line, 2.0).allclose(line, atol=1e-9)
    rng = np.random.default_rng(3)
    w2c = line.w2c.copy()
    w2c[1:-1, :3, 3] += rng.normal(0.0, 0.02, size=(18, 3))
    noisy = tj.Trajectory(w2c, line.intrinsics, line.aspect)
    smoothed = smooth(noisy, 2.0)
    assert np.allclose(smoothed.w2c[[0, -1]], noisy.w2c[[0, -1]], atol=1e-9)
    error = lambda p: np.linalg.norm(p.positions - line.positions, axis=1).mean()  # noqa: E731
    assert error(smoothed) < 0.5 * error(noisy)
    turn = tj.orbit("left", 40, 3.0, frames=20)  # rotations too: an orbit at constant angular speed
    assert np.abs(smooth(turn, 1.0).w2c[:, :3, :3] - turn.w2c[:, :3, :3]).max() < 1e-2


def test_frames_are_sampled_evenly_and_folders_read_in_number_order(tmp_path):
    from PIL import Image

    for k in range(25):
        Image.fromarray(np.full((6, 8, 3), k * 10, dtype=np.uint8)).save(tmp_path / f"f{k}.png")
    clip = read_clip(tmp_path, sfm_frames=5, size=None)
    assert clip.indices.tolist() == [0, 6, 12, 18, 24] and clip.total == 25
    assert clip.frames[:, 0, 0, 0].tolist() == [0, 60, 120, 180, 240]
    assert read_clip(tmp_path, sfm_frames=5, size=4).frames.shape == (5, 3, 4, 3)


def test_reading_a_long_video_reports_progress(tmp_path):
    import av

    mp4 = tmp_path / "long.mp4"
    with av.open(str(mp4), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for k in range(from_video.LONG_CLIP):
            frame = np.full((32, 32, 3), k % 256, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    lines = []
    clip = read_clip(mp4, sfm_frames=4, progress=lines.append)
    assert clip.indices.tolist() == [0, 33, 66, 99] and clip.total == from_video.LONG_CLIP
    assert any("frame 50 of 100" in line for line in lines)


def test_bad_input_is_one_line_on_the_command_line(tmp_path, capsys, monkeypatch):
    assert main(["from-video", str(tmp_path / "missing.mp4")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["from-video", str(tmp_path), "--intrinsics", "0.5,0.5"]) == 2
    assert "fx,fy,cx,cy" in capsys.readouterr().err
    with pytest.raises(VideoPathError, match="not both"):
        path_from_frames(np.zeros((4, 8, 8, 3), np.uint8), intrinsics=[1, 1, 0.5, 0.5], fov_deg=60)
    with pytest.raises(VideoPathError, match="at least 3"):
        path_from_frames(np.zeros((2, 8, 8, 3), np.uint8))
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import pycolmap -> ImportError
    with pytest.raises(SfMError, match=r"pip install pycolmap==4\.2\.1"):
        path_from_frames(np.zeros((4, 8, 8, 3), np.uint8))
    from PIL import Image

    for k in range(4):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"{k}.png")
    assert main(["from-video", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install pycolmap==4.2.1" in err


def test_fov_intrinsics_match_the_pinhole_definition():
    fx, fy, cx, cy = from_video.fov_intrinsics(90.0, 16 / 9)
    assert (fx, cx, cy) == (pytest.approx(0.5), 0.5, 0.5) and fy == pytest.approx(0.5 * 16 / 9)
    with pytest.raises(VideoPathError):
        from_video.fov_intrinsics(180.0, 1.0)
