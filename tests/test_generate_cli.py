"""`python -m cami2v_core generate` end to end on a photograph-like picture, video writing, and the clear errors
(exit status 2, one message, no traceback) for bad input."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cami2v_core.video_io import MediaError, count_frames, frames_to_uint8, read_image, write_video
from tests.golden import REPO, golden_state_dict
from tests.synthetic_photo import make_photo

HAS_AV = importlib.util.find_spec("av") is not None


# -- video writing ---------------------------------------------------------------------------------------------

def _frames(t=5, h=24, w=34):
    g = torch.Generator().manual_seed(0)
    return torch.rand(t, h, w, 3, generator=g)


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_pillow_formats_keep_every_frame_and_size(tmp_path, suffix):
    from PIL import Image

    path = write_video(_frames(), tmp_path / f"v{suffix}", fps=8)
    assert count_frames(path) == 5
    with Image.open(path) as img:
        assert img.size == (34, 24)
    assert [p.name for p in tmp_path.iterdir()] == [f"v{suffix}"]  # no temporary file left behind


def test_webp_frames_are_close_to_the_input(tmp_path):
    from PIL import Image

    frames = frames_to_uint8(torch.linspace(0, 1, 3)[:, None, None, None].expand(3, 16, 16, 3))
    path = write_video(frames, tmp_path / "v.webp", fps=4, quality=100)
    with Image.open(path) as img:
        for i in range(3):
            img.seek(i)
            got = np.asarray(img.convert("RGB")).astype(int)
            assert np.abs(got - frames[i].astype(int)).max() <= 3


def test_mp4_is_written_with_pyav_or_refused_clearly(tmp_path):
    path = tmp_path / "v.mp4"
    if HAS_AV:
        write_video(_frames(h=23, w=35), path, fps=8)  # odd sizes are padded for yuv420p
        assert count_frames(path) == 5
    else:
        with pytest.raises(MediaError, match="pip install av"):
            write_video(_frames(), path)
        assert not path.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name,match", [("v.avi", "must end in"), ("missing/v.gif", "does not exist")])
def test_bad_video_targets_are_explained(tmp_path, name, match):
    with pytest.raises(MediaError, match=match):
        write_video(_frames(), tmp_path / name)


def test_frames_to_uint8_rounds_and_checks_shape():
    got = frames_to_uint8(torch.tensor([0.0, 0.5, 1.0]).reshape(1, 1, 3, 1))  # grey pixels -> RGB
    assert got.shape == (1, 1, 3, 3) and got[0, 0, :, 0].tolist() == [0, 128, 255]
    with pytest.raises(MediaError, match=r"\[T,H,W,C\]"):
        frames_to_uint8(np.zeros((4, 4, 3)))


def test_read_image_errors(tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        read_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture at all")
    with pytest.raises(MediaError, match="not a picture"):
        read_image(bad)
    from PIL import Image

    Image.fromarray(make_photo(20, 30)).convert("RGBA").save(tmp_path / "ok.png")
    assert read_image(tmp_path / "ok.png").shape == (20, 30, 3)


# -- the command line -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """The golden tiny CamI2V as a safetensors checkpoint (its config is detected from the keys)."""
    from cami2v_core.checkpoint import save_safetensors

    path = tmp_path_factory.mktemp("ckpt") / "cami2v_tiny.safetensors"
    save_safetensors(golden_state_dict("cami2v"), path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Photograph-like JPEGs: landscape 4:3, portrait 2:3 and an odd-sized very wide one."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    out = {}
    for name, (h, w) in {"landscape": (150, 200), "portrait": (180, 120), "wide": (61, 251)}.items():
        out[name] = folder / f"{name}.jpg"
        Image.fromarray(make_photo(h, w, seed=len(name))).save(out[name], quality=92)
    return out


def _run(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("CAMI2V_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "cami2v_core", "generate", *map(str, args)], cwd=cwd or REPO,
                          env=env, capture_output=True, text=True, timeout=600)


def _pose_json(path, count):
    """A camera path in the project's pose JSON: `count` w2c poses moving right along +x."""
    from trajectories import Trajectory, to_json

    w2c = np.tile(np.eye(4), (count, 1, 1))
    w2c[:, 0, 3] = -np.linspace(0, 0.5, count)
    Path(path).write_text(to_json(Trajectory(w2c=w2c, intrinsics=np.tile([0.5, 0.5, 0.5, 0.5], (count, 1)))))
    return path


def _preset():
    import trajectories

    return sorted(trajectories.PRESETS)[0]


@pytest.mark.parametrize("photo,suffix", [("landscape", ".gif"), ("portrait", ".webp"), ("wide", ".gif")])
def test_generate_writes_a_playable_video_of_the_models_frame_count(tmp_path, tiny_ckpt, photos, photo, suffix):
    out = tmp_path / f"out{suffix}"
    r = _run("--image", photos[photo], "--camera", _preset(), "--prompt", "a valley at noon", "--out", out,
             "--ckpt", tiny_ckpt, "--steps", 2, "--seed", 7, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert count_frames(out) == 8  # the tiny model makes 8 frames
    from PIL import Image

    with Image.open(out) as img:
        assert img.size == (64, 64)


def test_fewer_step_solvers_are_chosen_with_sampler(tmp_path, tiny_ckpt, photos):
    out = tmp_path / "unipc.gif"
    r = _run("--image", photos["landscape"], "--camera", _preset(), "--out", out, "--ckpt", tiny_ckpt,
             "--sampler", "unipc", "--steps", 2, "--quiet")
    assert r.returncode == 0, r.stderr
    assert count_frames(out) == 8
    r = _run("--image", photos["landscape"], "--camera", _preset(), "--out", tmp_path / "v.gif", "--ckpt", tiny_ckpt,
             "--sampler", "euler")
    _assert_clean_failure(r, "--sampler", "'dpmpp_2m'")


def test_same_seed_gives_identical_frames(tmp_path, tiny_ckpt, photos):
    from PIL import Image

    def frames(name, seed):
        out = tmp_path / name
        r = _run("--image", photos["landscape"], "--camera", _preset(), "--out", out, "--ckpt", tiny_ckpt,
                 "--steps", 2, "--seed", seed, "--quiet")
        assert r.returncode == 0, r.stderr
        with Image.open(out) as img:
            return [np.asarray(img.convert("RGB")).copy() for _ in range(img.n_frames) if not img.seek(_)]

    a, b, c = frames("a.webp", 5), frames("b.webp", 5), frames("c.webp", 6)
    assert len(a) == 8 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_wrong_pose_count_is_resampled_with_a_notice(tmp_path, tiny_ckpt, photos):
    poses = _pose_json(tmp_path / "path.json", 5)
    out = tmp_path / "v.gif"
    r = _run("--image", photos["landscape"], "--camera", poses, "--out", out, "--ckpt", tiny_ckpt, "--steps", 1,
             "--quiet")
    assert r.returncode == 0, r.stderr
    assert "5 poses" in r.stderr and "8 frames" in r.stderr
    assert count_frames(out) == 8


def _assert_clean_failure(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr


def test_missing_image_is_refused(tmp_path, tiny_ckpt):
    r = _run("--image", tmp_path / "nope.jpg", "--camera", _preset(), "--out", tmp_path / "v.gif", "--ckpt", tiny_ckpt)
    _assert_clean_failure(r, "does not exist")


def test_unreadable_image_is_refused(tmp_path, tiny_ckpt):
    bad = tmp_path / "bad.jpg"
    bad.write_text("this is text, not a JPEG")
    r = _run("--image", bad, "--camera", _preset(), "--out", tmp_path / "v.gif", "--ckpt", tiny_ckpt)
    _assert_clean_failure(r, "not a picture")


@pytest.mark.parametrize("steps", ["0", "-3", "two"])
def test_bad_step_counts_are_refused(tmp_path, tiny_ckpt, photos, steps):
    r = _run("--image", photos["landscape"], "--camera", _preset(), "--out", tmp_path / "v.gif", "--ckpt", tiny_ckpt,
             "--steps", steps)
    _assert_clean_failure(r, "--steps")


def test_bad_output_suffix_and_camera_are_refused(tmp_path, tiny_ckpt, photos):
    r = _run("--image", photos["landscape"], "--camera", _preset(), "--out", tmp_path / "v.avi", "--ckpt", tiny_ckpt)
    _assert_clean_failure(r, ".gif")
    r = _run("--image", photos["landscape"], "--camera", tmp_path / "nope.json", "--out", tmp_path / "v.gif",
             "--ckpt", tiny_ckpt, "--steps", 1)
    _assert_clean_failure(r)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"not": "a trajectory"}))
    r = _run("--image", photos["landscape"], "--camera", broken, "--out", tmp_path / "v.gif", "--ckpt", tiny_ckpt,
             "--steps", 1)
    _assert_clean_failure(r)


def test_mp4_without_pyav_is_refused_before_loading(tmp_path, tiny_ckpt, photos):
    out = tmp_path / "v.mp4"
    r = _run("--image", photos["landscape"], "--camera", _preset(), "--out", out, "--ckpt", tiny_ckpt, "--steps", 1,
             "--quiet")
    if HAS_AV:
        assert r.returncode == 0, r.stderr
        assert count_frames(out) == 8
    else:
        _assert_clean_failure(r, "pip install av")


def test_vae_dtype_option(tmp_path, tiny_ckpt, photos):
    from PIL import Image

    def frames(name, *extra):
        out = tmp_path / name
        r = _run("--image", photos["landscape"], "--camera", _preset(), "--out", out, "--ckpt", tiny_ckpt,
                 "--steps", 1, "--seed", 3, "--quiet", *extra)
        assert r.returncode == 0, r.stderr
        with Image.open(out) as img:
            return np.stack([np.asarray(img.convert("RGB")).astype(float) for _ in range(img.n_frames)
                             if not img.seek(_)])

    fp32, bf16 = frames("fp32.webp"), frames("bf16.webp", "--vae-dtype", "bf16")
    assert fp32.shape == bf16.shape == (8, 64, 64, 3)
    # the same video up to bf16 rounding: 2.5 of 255 levels here, against ~40 between two seeds
    assert np.abs(fp32 - bf16).mean() < 8
    r = _run("--image", photos["landscape"], "--camera", _preset(), "--out", tmp_path / "v.gif", "--ckpt", tiny_ckpt,
             "--vae-dtype", "fp8")
    _assert_clean_failure(r, "--vae-dtype")
