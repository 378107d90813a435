"""training/data.py (RealEstate10K-layout clips) and training/preprocess.py (videos + pose files -> layout)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training import data as D
from training import preprocess as P

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """Two tiny synthetic scenes (4 clips of 16 frames, 64x48: not square, to exercise the crop)."""
    out = tmp_path_factory.mktemp("synth")
    subprocess.run([sys.executable, "-m", "training.synthetic", "--out", str(out), "--scenes", "2", "--seed", "0",
                    "--frames", "16", "--size", "48", "64", "--split", "train", "--supersample", "1", "--quiet"],
                   check=True, cwd=ROOT)
    return out


def pose_line(t_us: int, w2c: np.ndarray, f=(0.6, 0.8, 0.5, 0.5)) -> str:
    nums = [t_us, *f, 0, 0, *w2c[:3, :4].reshape(-1)]
    return " ".join(str(x) for x in nums)


def test_parse_pose_lines_reads_w2c_row_major():
    w2c = np.eye(4)
    w2c[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    w2c[:3, 3] = [1, 2, 3]
    ts, intr, mats = D.parse_pose_lines(["https://www.youtube.com/watch?v=abc", pose_line(5, w2c), ""], "x")
    assert ts.tolist() == [5] and intr.tolist() == [[0.6, 0.8, 0.5, 0.5]]
    np.testing.assert_allclose(mats[0], w2c)


@pytest.mark.parametrize("line, word", [("1 2 3", "has 3 values"), (" ".join(["x"] * 19), "is not a number"),
                                        (" ".join(["nan"] * 19), "finite number, found nan")])
def test_parse_pose_lines_errors(line, word):
    with pytest.raises(D.ClipError, match=word):
        D.parse_pose_lines([line], "clip.txt")


def test_choose_frames_strides_and_short_clip_fallback():
    rng = np.random.default_rng(0)
    strides = set()
    for _ in range(200):
        idx, stride = D.choose_frames(200, 16, (1, 10), rng)
        strides.add(stride)
        assert len(idx) == 16 and idx[0] >= 0 and idx[-1] < 200 and (np.diff(idx) == stride).all()
    assert strides == set(range(1, 11))  # uniform integer stride in [1, 10] (spec §8)
    idx, stride = D.choose_frames(40, 16, (5, 5), rng)  # 15 * 5 + 1 > 40: stride = 40 // 16 = 2
    assert stride == 2 and idx[-1] < 40
    with pytest.raises(D.ClipError, match="fewer than video_length"):
        D.choose_frames(10, 16, (1, 10), rng)


def test_resize_cover_crop_and_intrinsics():
    frames = torch.zeros(2, 3, 100, 200, dtype=torch.uint8)
    frames[..., 100:] = 255  # right half white
    out, resized = D.resize_cover_crop(frames, 64, 64)
    assert out.shape == (2, 3, 64, 64) and resized == (64, 128)
    assert out[..., :, :30].max() < 1 and out[..., :, 34:].min() > 254  # centre crop keeps the middle edge
    K = D.pixel_intrinsics(np.array([[0.5, 1.0, 0.5, 0.5]]), resized, (64, 64))
    # fx scales with the resized width, fy with the resized height, principal point with the crop (spec §6.1)
    assert K[0].tolist() == [[64.0, 0.0, 32.0], [0.0, 64.0, 32.0], [0.0, 0.0, 1.0]]


def test_dataset_samples(synth):
    ds = D.RealEstate10KDataset(synth, "train", video_length=8, resolution=(32, 32), frame_stride=(1, 2))
    assert len(ds) == 4
    s = ds[(1, 7)]
    assert s["video"].shape == (3, 8, 32, 32) and s["video"].min() >= -1 and s["video"].max() <= 1
    assert s["w2c"].shape == (8, 4, 4) and s["K"].shape == (8, 3, 3)
    assert s["frame_stride"] in (1, 2) and s["caption"].startswith("a room")
    # the poses are the metadata's rows at the chosen frames
    meta = ds.clips[1]
    np.testing.assert_allclose(s["w2c"].numpy(), meta.w2c[s["frame_indices"].numpy()], atol=1e-6)
    # 64x48 frames covered to 32x32: resized to 42x32 (width 64 * 32/48 = 42.67 -> 42), fx = fx_norm * 42
    assert s["K"][0, 0, 0].item() == pytest.approx(meta.intrinsics[0, 0] * 42, rel=1e-5)
    assert s["K"][0, 1, 1].item() == pytest.approx(meta.intrinsics[0, 1] * 32, rel=1e-5)
    # the key decides everything: same key, same sample; another seed, (usually) another window
    again = ds[(1, 7)]
    assert torch.equal(s["video"], again["video"]) and torch.equal(s["w2c"], again["w2c"])
    starts = {int(ds[(1, k)]["frame_indices"][0]) for k in range(10)}
    assert len(starts) > 1


def test_unreadable_clip_is_skipped_and_logged(synth, tmp_path, caplog):
    root = tmp_path / "copy"
    shutil.copytree(synth, root)
    ds = D.RealEstate10KDataset(root, "train", video_length=8, resolution=(32, 32))
    broken = ds.clips[0]
    shutil.rmtree(root / "video_clips" / "train" / broken.rel_path)
    with caplog.at_level(logging.WARNING, logger="training.data"):
        s = ds[(0, 3)]
    assert s["clip_id"] != broken.clip_id
    assert broken.clip_id in ds.bad and any(broken.clip_id in r.message for r in caplog.records)
    # a metadata file with bad pose lines is skipped at start-up, not fatal
    (root / "valid_metadata" / "train" / f"{ds.clips[1].clip_id}.txt").write_text("https://x\nv/c\ncap\n1 2 3\n")
    with caplog.at_level(logging.WARNING, logger="training.data"):
        assert len(D.RealEstate10KDataset(root, "train", video_length=8)) == 3


def test_empty_folder_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="training.preprocess"):
        D.RealEstate10KDataset(tmp_path, "train")


def test_keyed_sampler_is_a_function_of_seed_rank_step():
    a = D.KeyedSampler(50, 3, seed=1, rank=0)
    assert a.keys_for_step(5) == D.KeyedSampler(50, 3, seed=1, rank=0).keys_for_step(5)
    assert a.keys_for_step(5) != D.KeyedSampler(50, 3, seed=1, rank=1).keys_for_step(5)
    it = iter(D.KeyedSampler(50, 3, seed=1, rank=0, start_step=5))
    assert [next(it) for _ in range(3)] == a.keys_for_step(5)


# -- preprocess -----------------------------------------------------------------------------------------------------

def test_youtube_id_and_nearest_frames():
    assert P.youtube_id("https://www.youtube.com/watch?v=-aBc_123xyz") == "-aBc_123xyz"
    assert P.youtube_id("https://youtu.be/Zz9-abcdefg") == "Zz9-abcdefg"
    with pytest.raises(D.ClipError, match="YouTube video id"):
        P.youtube_id("https://example.com/video")
    times = np.arange(10) / 10.0
    assert P.nearest_frames(times, np.array([0.0, 0.14, 0.16, 0.95, 5.0])).tolist() == [0, 1, 2, 9, 9]


def _write_video(path: Path, n: int, fps: int = 10) -> None:
    """A video whose frame k is a flat grey of value 10 * k (so a decoded frame names its index)."""
    import av  # requirements-dev.txt: a missing package must fail here, not skip
    from fractions import Fraction
    with av.open(str(path), mode="w") as out:
        s = out.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        s.options = {"crf": "0", "g": "4"}
        for k in range(n):
            img = np.full((32, 32, 3), 10 * k, np.uint8)
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)


@pytest.mark.parametrize("fmt", ["png", "mp4"])
def test_preprocess_end_to_end_resumable(tmp_path, fmt):
    videos, poses, out = tmp_path / "videos", tmp_path / "poses", tmp_path / "out"
    videos.mkdir(), poses.mkdir()
    _write_video(videos / "vidAAAAAAA1.mp4", 24)  # 2.4 s at 10 fps
    # clip 1: 16 poses every 0.1 s from 0.3 s -> frames 3..18; clip 2: too short; clip 3: its video is missing
    w2c = np.eye(4)
    (poses / "clip1.txt").write_text("https://www.youtube.com/watch?v=vidAAAAAAA1\n" +
                                     "\n".join(pose_line(300000 + 100000 * k, w2c) for k in range(16)) + "\n")
    (poses / "clip2.txt").write_text("https://www.youtube.com/watch?v=vidAAAAAAA1\n" +
                                     "\n".join(pose_line(100000 * k, w2c) for k in range(5)) + "\n")
    (poses / "clip3.txt").write_text("https://www.youtube.com/watch?v=vidMISSING1\n" +
                                     "\n".join(pose_line(100000 * k, w2c) for k in range(16)) + "\n")
    captions = tmp_path / "train_captions.json"
    captions.write_text(json.dumps({"clip1.mp4": ["a grey room"]}))
    args = ["--poses", str(poses), "--videos", str(videos), "--out", str(out), "--split", "train",
            "--captions", str(captions), "--format", fmt]
    assert P.main(args) == 0
    assert (out / "train_valid_list.txt").read_text() == "clip1\n"
    assert json.loads((out / "train_video2clip.json").read_text()) == {"vidAAAAAAA1": ["clip1"]}
    meta = (out / "valid_metadata" / "train" / "clip1.txt").read_text().splitlines()
    assert meta[1] == "vidAAAAAAA1/clip1" and meta[2] == "a grey room" and len(meta) == 3 + 16
    ds = D.RealEstate10KDataset(out, "train", video_length=16, resolution=(32, 32), frame_stride=(1, 1))
    s = ds[(0, 0)]
    # frame k of the clip is source frame 3 + k, grey 10 * (3 + k) (lossless enough to read the index back)
    grey = ((s["video"][:, :, 16, 16].mean(0) + 1) * 127.5).round()
    np.testing.assert_allclose(grey.numpy(), 10 * (3 + np.arange(16)), atol=3)
    # rerun: nothing rewritten, same listing
    stamp = (out / "valid_metadata" / "train" / "clip1.txt").stat().st_mtime_ns
    assert P.main(args) == 0
    assert (out / "valid_metadata" / "train" / "clip1.txt").stat().st_mtime_ns == stamp
    assert (out / "train_valid_list.txt").read_text() == "clip1\n"
    assert not [p for p in out.rglob(".*tmp*")]
