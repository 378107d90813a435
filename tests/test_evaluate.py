"""Evaluation (training/metrics.py, training/sfm.py, training/evaluate.py).

Expected values are worked out here by hand from the definitions: angles of known rotations, ||I - R||_F of a
rotation by theta (= 2 sqrt(2) sin(theta/2)), PSNR of a constant offset (20 log10(255 / offset)), SSIM of two
constant images ((2ab + C1) / (a^2 + b^2 + C1)), the Fréchet distance of diagonal Gaussians
(|m1 - m2|^2 + sum_i (s1_i - s2_i)^2 with s the standard deviations).
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np
import pytest
import torch

from training import evaluate, metrics, synthetic
from training.metrics import (MetricsError, camera_errors, frechet_distance, fvd, gaussian_stats, psnr, ssim)


def rot(axis, angle):
    """Rotation matrix about a unit axis by angle (radians), Rodrigues written out."""
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def trajectory(frames=6, seed=0):
    """A generic c2w trajectory [T,4,4]: random rotations, centres on a wiggly line."""
    rng = np.random.default_rng(seed)
    c2w = np.tile(np.eye(4), (frames, 1, 1))
    for k in range(frames):
        c2w[k, :3, :3] = rot(rng.normal(size=3), rng.uniform(0, 0.6))
        c2w[k, :3, 3] = [0.3 * k, 0.1 * math.sin(k), 2.0 + 0.05 * k * k]
    return c2w


def similarity(c2w, scale, rotation, shift):
    """The same cameras in another world frame: world points x -> scale * rotation @ x + shift."""
    out = np.array(c2w)
    out[:, :3, :3] = rotation @ c2w[:, :3, :3]
    out[:, :3, 3] = scale * (c2w[:, :3, 3] @ rotation.T) + shift
    return out


# ----------------------------------------------------------------------------------------------------------------
# Camera errors


def test_perfect_reconstruction_scores_zero():
    gt = trajectory()
    e = camera_errors(gt, gt)
    assert e["rot_err"] == pytest.approx(0, abs=1e-6)
    assert e["trans_err"] == pytest.approx(0, abs=1e-9) and e["cam_mc"] == pytest.approx(0, abs=1e-6)


def test_known_rotation_offsets_give_their_angles():
    gt = trajectory()
    est = gt.copy()
    # Frame 2 turned by 10 degrees and frame 4 by 25 degrees about their own (different) axes; positions kept.
    est[2, :3, :3] = gt[2, :3, :3] @ rot([0, 1, 0], math.radians(10))
    est[4, :3, :3] = gt[4, :3, :3] @ rot([1, 2, 0.5], math.radians(25))
    e = camera_errors(gt, est)
    assert e["rot_err"] == pytest.approx(math.radians(35), abs=1e-9)
    assert e["rot_err_deg_per_frame"] == pytest.approx([0, 0, 10, 0, 25, 0], abs=1e-3)
    assert e["trans_err"] == pytest.approx(0, abs=1e-12)
    # || I - R_theta ||_F = 2 sqrt(2) sin(theta / 2); nothing else differs.
    expected_mc = sum(2 * math.sqrt(2) * math.sin(math.radians(a) / 2) for a in (10, 25))
    assert e["cam_mc"] == pytest.approx(expected_mc, abs=1e-9)


def test_translation_error_after_normalisation_by_hand():
    # Ground truth: centres 0, 1, 2 along x -> normalised 0, 0.5, 1. Estimate: frame 1 at (1, 1, 0): the largest
    # norm is still 2, so it normalises to (0.5, 0.5, 0), which is 0.5 from the ground truth's (0.5, 0, 0).
    gt = np.tile(np.eye(4), (3, 1, 1))
    gt[:, 0, 3] = [0, 1, 2]
    est = gt.copy()
    est[1, :3, 3] = [1, 1, 0]
    e = camera_errors(gt, est)
    assert e["trans_err"] == pytest.approx(0.5, abs=1e-9)
    assert e["cam_mc"] == pytest.approx(0.5, abs=1e-9)
    assert e["rot_err"] == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("scale", [0.01, 0.37, 1.0, 250.0])
def test_scale_and_gauge_of_the_reconstruction_do_not_matter(scale):
    gt = trajectory(seed=1)
    est = trajectory(seed=2)  # a poor estimate, so that the errors are far from zero
    est[:, :3, 3] = gt[:, :3, 3] + np.random.default_rng(3).normal(0, 0.2, size=(len(gt), 3))
    reference = camera_errors(gt, est)
    assert reference["rot_err"] > 0.5 and reference["trans_err"] > 0.1
    moved = similarity(est, scale, rot([0.3, -1, 2], 2.1), np.array([5.0, -3.0, 0.7]))
    e = camera_errors(gt, moved)
    for key in ("rot_err", "trans_err", "cam_mc"):
        assert e[key] == pytest.approx(reference[key], rel=1e-7, abs=1e-9)
    # The ground truth may live in any world frame too.
    e = camera_errors(similarity(gt, 3.0, rot([1, 0, 0], 0.4), np.array([1.0, 2.0, 3.0])), est)
    for key in ("rot_err", "trans_err", "cam_mc"):
        assert e[key] == pytest.approx(reference[key], rel=1e-7, abs=1e-9)


def test_a_path_without_translation_keeps_zero_translations():
    gt = np.tile(np.eye(4), (4, 1, 1))
    for k in range(4):
        gt[k, :3, :3] = rot([0, 1, 0], 0.1 * k)
    e = camera_errors(gt, gt)
    assert e["trans_err"] == 0 and np.isfinite(e["cam_mc"])


def test_camera_errors_reject_bad_shapes():
    with pytest.raises(MetricsError, match="requested cameras"):
        camera_errors(trajectory(6), trajectory(5))
    with pytest.raises(MetricsError, match="camera-to-world"):
        camera_errors(np.zeros((4, 3, 3)), np.zeros((4, 3, 3)))


# ----------------------------------------------------------------------------------------------------------------
# PSNR / SSIM


def test_psnr_known_cases():
    rng = np.random.default_rng(0)
    a = rng.integers(20, 200, size=(3, 16, 16, 3)).astype(np.uint8)
    assert np.all(np.isinf(psnr(a, a)))
    # Every pixel 10 levels brighter: MSE = (10/255)^2, PSNR = 20 log10(255/10).
    assert psnr(a + 10, a) == pytest.approx([20 * math.log10(255 / 10)] * 3, abs=1e-9)
    # Float frames in 0..1 are taken as they are.
    f = a.astype(np.float64) / 255
    assert psnr(np.clip(f + 0.1, 0, 1), f) == pytest.approx([20.0] * 3, abs=1e-9)


def test_ssim_known_cases():
    rng = np.random.default_rng(1)
    a = rng.random((2, 24, 24, 3))
    assert ssim(a, a) == pytest.approx([1.0, 1.0], abs=1e-12)
    noisy = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    assert np.all(ssim(noisy, a) < 0.9)
    # Two constant images: only the luminance term remains, (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * 1)^2.
    x, y = np.full((1, 16, 16, 3), 0.3), np.full((1, 16, 16, 3), 0.6)
    c1 = 0.01 ** 2
    assert ssim(x, y)[0] == pytest.approx((2 * 0.3 * 0.6 + c1) / (0.3 ** 2 + 0.6 ** 2 + c1), abs=1e-9)


# ----------------------------------------------------------------------------------------------------------------
# Fréchet distance and FVD


def test_frechet_distance_of_identical_gaussians_is_zero():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(50, 5)) @ rng.normal(size=(5, 5))  # correlated features
    mu, sigma = gaussian_stats(f)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-8)


def test_frechet_distance_of_diagonal_gaussians_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)  # 7.25 + 4 + 1 + 0
    assert expected == pytest.approx(12.25)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, abs=1e-9)
    # A rotation of both Gaussians (the same orthogonal change of basis) changes nothing.
    q = rot([1, 1, 1], 0.7)
    assert frechet_distance(q @ mu1, q @ np.diag(var1) @ q.T, q @ mu2, q @ np.diag(var2) @ q.T) == \
        pytest.approx(expected, abs=1e-8)


class _MeanColour(torch.nn.Module):
    """A stand-in for the I3D: features = per-channel mean of the [N,3,T,224,224] input; refuses other sizes."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if x.shape[-1] != 224 or x.shape[-2] != 224 or x.shape[1] != 3:
            raise RuntimeError("expected [N,3,T,224,224]")
        if rescale or resize or not return_features:
            raise RuntimeError("unexpected call convention")
        return x.mean(dim=(2, 3, 4))


def _colour_videos(centre, spread, frames=4, size=(20, 30)):
    """Six one-colour videos with colours centre +- spread along each channel: features 2c - 1 are
    (2 centre - 1) +- 2 spread e_i, whose sample covariance is diagonal with variance 2 (2 spread)^2 / 5."""
    videos = []
    for i in range(3):
        for sign in (1, -1):
            colour = np.array(centre, dtype=np.float64)
            colour[i] += sign * spread
            videos.append(np.broadcast_to(colour, (frames, *size, 3)))
    return np.stack(videos)


def test_fvd_with_a_scripted_feature_extractor(tmp_path):
    path = tmp_path / "tiny_i3d.pt"
    torch.jit.script(_MeanColour()).save(str(path))
    detector = metrics.load_i3d(path)
    real = _colour_videos([0.5, 0.5, 0.5], 0.1)
    fake = _colour_videos([0.6, 0.5, 0.4], 0.2)
    # Means 0 and (0.2, 0, -0.2); standard deviations sqrt(2/5) * 0.2 and sqrt(2/5) * 0.4 on each axis.
    expected = 0.2 ** 2 + 0.2 ** 2 + 3 * (2 / 5) * (0.4 - 0.2) ** 2
    assert fvd(real, fake, detector, batch_size=4) == pytest.approx(expected, abs=1e-6)
    assert fvd(real, real, detector) == pytest.approx(0, abs=1e-6)
    # uint8 videos are read as 0..255.
    real8, fake8 = (real * 255).round().astype(np.uint8), (fake * 255).round().astype(np.uint8)
    assert fvd(real8, fake8, detector) == pytest.approx(fvd(real8 / 255.0, fake8 / 255.0, detector), abs=1e-9)


def test_missing_or_bad_i3d_weights_say_what_to_do(tmp_path):
    with pytest.raises(MetricsError, match="i3d_torchscript.pt"):
        metrics.load_i3d(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(MetricsError, match="TorchScript"):
        metrics.load_i3d(bad)


# ----------------------------------------------------------------------------------------------------------------
# Benchmark and summaries


def test_benchmark_scenes_are_not_dataset_scenes():
    assert evaluate.BENCHMARK_STREAM_KEY not in synthetic._SPLIT_KEY.values()
    bench = [evaluate.benchmark_scene(0, i) for i in range(40)]
    # runs/synth64 (seed 0, 300 training and 8 test scenes) and a few other seeds.
    dataset_ids = {synthetic.scene_seed(s, split, i) for s in range(3) for split in synthetic.SPLITS
                   for i in range(300)}
    assert not {s.info["scene_seed"] for s in bench} & dataset_ids
    rooms = {tuple(synthetic.make_scene(0, "train", i).room_size) for i in range(300)}
    assert sum(tuple(s.room_size) in rooms for s in bench) == 0
    # Deterministic: the same seed and index give the same room.
    assert evaluate.benchmark_scene(0, 7).room_size == bench[7].room_size


def test_benchmark_clips_follow_the_requested_families_and_stride():
    clips = evaluate.benchmark_clips(0, 3, ("pan_right", "dolly_in"), frames=4, height=16, width=16, stride=2,
                                     clip_frames=16, supersample=1)
    assert [c.family for c in clips] == ["pan_right", "dolly_in", "pan_right"]
    for c in clips:
        assert c.frames.shape == (4, 16, 16, 3) and c.frames.dtype == np.uint8 and c.w2c.shape == (4, 4, 4)
        centres = np.linalg.inv(c.w2c)[:, :3, 3]
        assert np.linalg.norm(centres[-1] - centres[0]) > 0.05  # the camera moves
    with pytest.raises(evaluate.EvalError, match="stride"):
        evaluate.benchmark_clips(0, 1, ("pan_right",), frames=8, height=16, width=16, stride=3, clip_frames=16)


def test_summary_averages_successful_trials_and_counts_failures():
    ok = lambda r, t, m: {"status": "ok", "rot_err": r, "trans_err": t, "cam_mc": m}  # noqa: E731
    records = [
        {"family": "pan_left", "psnr": 20.0, "ssim": 0.5, "change": 0.1, "trials": [ok(1, 2, 3), ok(3, 4, 5)]},
        {"family": "pan_left", "psnr": 10.0, "ssim": 0.3, "change": 0.1,
         "trials": [{"status": "no model"}, {"status": "partial"}]},
        {"family": "dolly_in", "psnr": 30.0, "ssim": 0.7, "change": 0.1,
         "trials": [{"status": "partial"}, ok(5, 0, 1)]},
    ]
    s = evaluate.summarize(records)
    assert s["psnr"] == pytest.approx(20.0) and s["ssim"] == pytest.approx(0.5)
    # Per video: (2, 3, 4) and (5, 0, 1); the failed video is left out and counted.
    assert (s["rot_err"], s["trans_err"], s["cam_mc"]) == pytest.approx((3.5, 1.5, 2.5))
    assert s["reconstruction_failures"] == 1 and s["reconstructed"] == 2
    assert s["trials"] == 6 and s["failed_trials"] == 3
    fam = evaluate._per_family(records)
    assert fam["pan_left"]["reconstruction_failures"] == 1 and fam["pan_left"]["rot_err"] == pytest.approx(2.0)


def test_summary_drops_trials_ten_std_from_the_pooled_mean():
    ok = lambda r: {"status": "ok", "rot_err": r, "trans_err": 0.0, "cam_mc": 0.0}  # noqa: E731
    # 60 trials at 1.0 and one at 1000: the pooled std is about 127, and 1000 is about 7.7 std from the mean,
    # so it stays; with 200 ordinary trials the std is about 70 and 1000 is more than 10 std away.
    few = [{"family": "pan_left", "trials": [ok(1.0)]} for _ in range(60)] + \
          [{"family": "pan_left", "trials": [ok(1000.0)]}]
    assert evaluate.summarize(few)["outlier_trials_dropped"] == 0
    many = [{"family": "pan_left", "trials": [ok(1.0)]} for _ in range(200)] + \
           [{"family": "pan_left", "trials": [ok(1000.0), ok(1.0)]}]
    s = evaluate.summarize(many)
    assert s["outlier_trials_dropped"] == 1 and s["rot_err"] == pytest.approx(1.0)


def test_interval_is_the_student_t_interval_of_the_seed_means():
    # [1, 2, 3]: mean 2, sample std 1; t(0.975, 2 dof) = 4.303 (printed t tables), so the half-width is 4.303 / √3.
    got = evaluate.interval([1.0, 2.0, 3.0])
    assert got["mean"] == pytest.approx(2.0) and got["ci"] == pytest.approx(4.303 / math.sqrt(3), rel=1e-3)
    assert got["seeds"] == 3
    # t(0.975, 9 dof) = 2.262; ten values 0..9 have sample std sqrt(55/6).
    ten = evaluate.interval([float(i) for i in range(10)])
    assert ten["ci"] == pytest.approx(2.262 * math.sqrt(55 / 6) / math.sqrt(10), rel=1e-3)
    assert evaluate.interval([5.0])["ci"] is None and evaluate.interval([None, 5.0])["mean"] == 5.0
    assert evaluate.interval([])["mean"] is None


def _seeded_records(psnr_by_seed, cam_by_seed):
    """Two paths per seed; path 0 reconstructs with CamMC cam_by_seed[s], path 1 never reconstructs."""
    ok = lambda m: {"status": "ok", "rot_err": m / 2, "trans_err": m / 2, "cam_mc": m}  # noqa: E731
    records = []
    for s, (p, m) in enumerate(zip(psnr_by_seed, cam_by_seed)):
        records.append({"path": 0, "family": "pan_left", "sample": s, "psnr": p + 1, "ssim": 0.5, "trials": [ok(m)]})
        records.append({"path": 1, "family": "pan_left", "sample": s, "psnr": p - 1, "ssim": 0.3,
                        "trials": [{"status": "no model"}]})
    evaluate.summarize(records)  # sets each record's "camera"
    return records


def test_seed_intervals_group_by_sampling_seed_and_count_registration():
    records = _seeded_records([10.0, 12.0, 14.0], [3.0, 2.0, 1.0])
    over = evaluate.seed_intervals(records)
    assert over["psnr"]["per_seed"] == pytest.approx([10.0, 12.0, 14.0])
    assert over["psnr"]["mean"] == pytest.approx(12.0)
    assert over["psnr"]["ci"] == pytest.approx(4.303 * 2.0 / math.sqrt(3), rel=1e-3)
    assert over["cam_mc"]["per_seed"] == pytest.approx([3.0, 2.0, 1.0])
    assert over["registration_rate"]["per_seed"] == pytest.approx([0.5, 0.5, 0.5])
    assert over["registration_rate"]["ci"] == pytest.approx(0.0)


def test_paired_differences_cancel_what_the_seeds_share():
    a = _seeded_records([10.0, 12.0, 14.0], [1.0, 1.5, 2.0])
    b = _seeded_records([9.0, 11.0, 13.0], [2.0, 2.5, 3.0])
    d = evaluate.paired_differences(a, b)
    # The seeds differ by 2 dB from each other, but A beats B by exactly 1 dB on each: no spread left.
    assert d["psnr"]["mean"] == pytest.approx(1.0) and d["psnr"]["ci"] == pytest.approx(0.0)
    assert d["cam_mc"]["mean"] == pytest.approx(-1.0)
    # Unpaired, the same numbers give a wide interval.
    assert evaluate.interval([10.0, 12.0, 14.0])["ci"] > 4


def test_markdown_table_shows_intervals_registration_and_differences():
    a = _seeded_records([10.0, 12.0, 14.0], [1.0, 1.5, 2.0])
    b = _seeded_records([9.0, 11.0, 13.0], [2.0, 2.5, 3.0])
    report = {"settings": {"samples_per_path": 3, "confidence": 0.95}, "models": {}}
    for name, records in (("A", a), ("B", b)):
        report["models"][name] = {"variant": name.lower(), **evaluate.summarize(records),
                                  "over_seeds": evaluate.seed_intervals(records)}
    report["differences"] = {"A - B": evaluate.paired_differences(a, b)}
    text = evaluate.markdown_table(report)
    assert "| registered |" in text and "| 3/6 |" in text
    assert "12.00 ± 4.97" in text  # A's PSNR: mean 12, half-width 4.303 * 2 / √3
    assert "| A - B | +1.00 ± 0.00 |" in text and "95 % interval over 3 seeds" in text


# ----------------------------------------------------------------------------------------------------------------
# Reconstruction and the command line


def test_pycolmap_recovers_the_cameras_of_ground_truth_frames():
    import pycolmap  # noqa: F401 -- requirements-dev.txt: a missing package must fail here, not skip
    from training.render import render_views
    from training.sfm import recover_cameras

    clip = evaluate.benchmark_clips(0, 1, ("pan_right",), frames=8, height=16, width=16, supersample=1)[0]
    scene = evaluate.benchmark_scene(0, 0)
    start = time.perf_counter()
    frames = render_views(scene, clip.w2c, clip.intrinsics, 192, 192, 1)
    (rec,) = recover_cameras(frames, clip.intrinsics[0], trials=1, size=256)
    assert rec.ok, rec.status
    e = camera_errors(np.linalg.inv(clip.w2c), rec.c2w)
    # Eight frames: under 1 degree per frame on average (a failed reconstruction is off by tens of degrees), and
    # normalised translations within 0.05 per frame (the path's largest translation is 1 after normalisation).
    assert e["rot_err"] < math.radians(1.0) * 8 and e["trans_err"] < 0.05 * 8, e
    assert time.perf_counter() - start < 60


def _run_main(argv, capsys):
    code = evaluate.main(argv)
    return code, capsys.readouterr()


def test_bad_input_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    code, out = _run_main(["--synthetic", "--quick", "--ckpt", str(tmp_path / "missing.safetensors")], capsys)
    assert code == 2 and out.err.count("\n") == 1 and "no such file" in out.err
    code, out = _run_main(["--synthetic", "--quick", "--no-camera", "--i3d", str(tmp_path / "i3d.pt")], capsys)
    assert code == 2 and out.err.count("\n") == 1 and "i3d_torchscript.pt" in out.err
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import pycolmap -> ImportError
    code, out = _run_main(["--synthetic", "--quick"], capsys)
    assert code == 2 and out.err.count("\n") == 1 and "pip install pycolmap" in out.err
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--quick"])  # --synthetic is required
    assert e.value.code == 2


def test_help_explains_every_option():
    parser = evaluate._parser()
    for action in parser._actions:
        assert action.help, action.option_strings
    assert "--synthetic" in parser.format_help()


def test_quick_smoke_on_the_bundled_model(tmp_path, capsys):
    import pycolmap  # noqa: F401 -- requirements-dev.txt: a missing package must fail here, not skip
    from cami2v_core.bundled import bundled_model_path

    assert bundled_model_path() is not None, "the bundled tiny model ships with the repo (cami2v_core/weights)"
    out = tmp_path / "eval.json"
    code, printed = _run_main(["--synthetic", "--quick", "--paths", "1", "--steps", "2", "--trials", "1",
                               "--samples", "1", "--ckpt", str(bundled_model_path()),
                               "--json", str(out), "--quiet"], capsys)
    assert code == 0, printed.err
    report = json.loads(out.read_text())
    (name, row), = report["models"].items()
    for key in ("psnr", "ssim", "rot_err", "trans_err", "cam_mc", "reconstruction_failures", "per_family"):
        assert key in row
    assert 0 < row["psnr"] < 100 and -1 <= row["ssim"] <= 1 and row["videos"] == 1
    assert report["oracle"]["videos"] == 1 and "camera_metrics_meaningful" in report["oracle"]
    static = report["static_first_frame"]
    assert static["videos"] == 1 and 0 < static["psnr"] < 100 and static["change"] == 0
    (vae,) = report["vae_roundtrip"].values()
    assert vae["models"] == [name] and 0 < vae["psnr"] < 100
    assert report["benchmark"]["paths"] == 1 and report["settings"]["steps"] == 2
    assert "| model | PSNR |" in printed.out


def test_quick_default_compares_the_bundled_model_with_its_no_camera_companion(tmp_path, capsys):
    import pycolmap  # noqa: F401 -- requirements-dev.txt: a missing package must fail here, not skip
    from cami2v_core.bundled import bundled_companion_path, bundled_model_path
    from cami2v_core.checkpoint import CONFIG_METADATA_KEY, read_safetensors_header
    from cami2v_core.configs import ModelConfig

    def read_config(path):
        return ModelConfig.from_json(read_safetensors_header(path)[1][CONFIG_METADATA_KEY])

    companion = bundled_companion_path()
    assert companion is not None, "the no-camera companion ships with the repo (cami2v_core/weights)"
    assert companion.stat().st_size <= 25 * 2**20
    ours, theirs = read_config(bundled_model_path()), read_config(companion)
    assert (ours.variant, theirs.variant) == ("cami2v", "dynamicrafter")
    # Same clip size and the same VAE recipe: the comparison differs only in the camera.
    assert (ours.temporal_length, ours.resolution) == (theirs.temporal_length, theirs.resolution)
    out = tmp_path / "eval.json"
    code, printed = _run_main(["--synthetic", "--quick", "--paths", "1", "--steps", "2", "--samples", "2",
                               "--no-oracle", "--no-vae-row", "--json", str(out), "--quiet"], capsys)
    assert code == 0, printed.err
    report = json.loads(out.read_text())
    first, second = report["models"]
    assert [report["models"][n]["variant"] for n in (first, second)] == ["cami2v", "dynamicrafter"]
    for name in (first, second):
        over = report["models"][name]["over_seeds"]
        assert len(over["psnr"]["per_seed"]) == 2 and over["psnr"]["ci"] is not None
    (label, diff), = report["differences"].items()
    assert label == f"{first} - {second}" and len(diff["psnr"]["per_seed"]) == 2
    assert "| registered |" in printed.out and f"| {first} - {second} |" in printed.out


def test_camera_guidance_reaches_camera_models_and_spares_the_no_camera_one():
    from cami2v_core import build_model, load_model
    from cami2v_core.bundled import bundled_model_path

    assert bundled_model_path() is not None, "the bundled tiny model ships with the repo (cami2v_core/weights)"
    cami2v = load_model(bundled_model_path()).eval()
    clip, = evaluate.benchmark_clips(0, 1, ("orbit_left",), frames=8, height=64, width=64, supersample=1)
    plain = evaluate._generate(cami2v, clip, 2, 7.5, 0.0, 0, 2, cfg_camera=1.0)
    guided = evaluate._generate(cami2v, clip, 2, 7.5, 0.0, 0, 2, cfg_camera=4.0)
    assert not np.array_equal(plain, guided)
    nocam = build_model(cami2v.config.with_variant("dynamicrafter"))
    nocam.load_state_dict(cami2v.state_dict(), strict=False)
    nocam.eval()
    assert np.array_equal(evaluate._generate(nocam, clip, 2, 7.5, 0.0, 0, 2, cfg_camera=4.0),
                          evaluate._generate(nocam, clip, 2, 7.5, 0.0, 0, 2, cfg_camera=1.0))


def test_quick_takes_one_path_per_family(tmp_path, capsys):
    """--quick without --paths: as many paths as families, one of each (the default 11, or the ones asked for)."""
    from cami2v_core.bundled import bundled_model_path

    out = tmp_path / "eval.json"
    code, printed = _run_main(["--synthetic", "--quick", "--families", "pan_right,dolly_in", "--steps", "1",
                               "--samples", "1", "--no-camera", "--no-vae-row", "--ckpt", str(bundled_model_path()),
                               "--json", str(out), "--quiet"], capsys)
    assert code == 0, printed.err
    benchmark = json.loads(out.read_text())["benchmark"]
    assert benchmark["paths"] == 2 and benchmark["families"] == ["pan_right", "dolly_in"]
    assert evaluate.QUICK["paths_per_family"] * len(evaluate.TRANSLATING_FAMILIES) == 11
