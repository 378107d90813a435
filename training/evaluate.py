"""Camera accuracy and image quality on a held-out synthetic benchmark (issue 7, spec §10).

    python -m training.evaluate --synthetic --quick --json runs/eval_quick.json
    python -m training.evaluate --synthetic --ckpt runs/compare_cami2v --ckpt runs/compare_dynamicrafter \
        --json runs/eval.json

For every camera path of the benchmark, each model gets the ground-truth first frame as its picture, the scene's
caption as its prompt and the ground-truth cameras (w2c + intrinsics) as its trajectory, and generates a clip.
Metrics per model: PSNR and SSIM of frames 1..T-1 against the ground-truth frames; RotErr, TransErr and CamMC
(`training.metrics`) of the cameras that pycolmap + GLOMAP recover from the generated frames (`training.sfm`),
against the requested ones; reconstruction failures are counted, never hidden. Reference rows: "oracle" runs the
same reconstruction on the ground-truth frames themselves (what the camera pipeline can achieve at this
resolution); "static first frame" holds the ground-truth first frame (the PSNR/SSIM of a clip that does not
move); "vae" encodes and decodes the ground truth with each distinct VAE of the models (the ceiling that VAE sets).

Benchmark scenes (see `benchmark_scene`) come from their own random-stream namespace, so they are never training
or test scenes of any `training.synthetic` dataset.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .camera_paths import FAMILIES, CameraPathError, sample_intrinsics, sample_path
from .render import render_views
from .synthetic import GENERATOR_VERSION, scene_from_rng
from cami2v_core.errors import CamI2VError
from cami2v_core.files import atomic_write, write_text_atomic

__all__ = ["BENCHMARK_STREAM_KEY", "TRANSLATING_FAMILIES", "EvalError", "BenchmarkClip", "benchmark_scene",
           "benchmark_clips", "resolve_checkpoint", "evaluate_frames", "summarize", "run", "main"]

# First element of every benchmark random stream's spawn key. `training.synthetic` keys its streams
# (seed, split key[, scene][, clip]) with split key 0 (train) or 1 (test); the benchmark's key is neither, so for
# every pair of seeds a benchmark scene is drawn from a different SeedSequence than any dataset scene.
BENCHMARK_STREAM_KEY = 0xE7A1
# Families whose camera centre moves. Scale-free TransErr is undefined without translation (the ground truth's
# translations are all zero, and any recovered translation is normalised to length 1) and a camera that only
# turns gives SfM nothing to triangulate, so pure rotations and "stationary" are left out unless asked for.
# Interleaved, so that the first few paths (--paths N) already cover orbit, pan, dolly and random motion.
TRANSLATING_FAMILIES = ("orbit_left", "pan_right", "dolly_in", "random", "orbit_right", "pan_left", "dolly_out",
                        "orbit_up", "pan_up", "orbit_down", "pan_down")
# --quick: one path per family (11 with the default families), so that every family counts once.
QUICK = {"paths_per_family": 1, "steps": 10, "trials": 1, "samples": 3}
FULL = {"paths_per_family": 3, "steps": 25, "trials": 3, "samples": 1}
CONFIDENCE = 0.95  # of the intervals over sampling seeds (Student t over the per-seed means)
OUTLIER_STD = 10.0  # spec §10: trials more than 10 std from the pooled mean are dropped
CAMERA_KEYS = ("rot_err", "trans_err", "cam_mc")


class EvalError(CamI2VError, ValueError):
    """Bad input (missing checkpoint, missing package, bad option); the message says what to do."""


# ----------------------------------------------------------------------------------------------------------------
# The benchmark


def _stream(seed: int, *key: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(entropy=int(seed), spawn_key=(BENCHMARK_STREAM_KEY, *key))


def benchmark_scene(seed: int, index: int):
    """Benchmark room `index` for the benchmark seed: drawn like a dataset scene (`training.synthetic`) but from
    the stream keyed (seed, BENCHMARK_STREAM_KEY, index). Dataset scenes use the keys (seed, 0, index) (train)
    and (seed, 1, index) (test), so no benchmark scene shares a random stream with a training or test scene of any
    dataset, whatever its seed (runs/synth64 was made with seed 0); the scene records its 64-bit stream id."""
    stream = _stream(seed, index)
    return scene_from_rng(np.random.default_rng(stream),
                          {"benchmark": True, "seed": int(seed), "index": int(index),
                           "scene_seed": int(stream.generate_state(1, np.uint64)[0])})


@dataclass
class BenchmarkClip:
    """One benchmark item: the scene, its caption, the family, w2c [T,4,4], normalised intrinsics [T,4], and the
    ground-truth frames uint8 [T,H,W,3] rendered from exactly these cameras."""

    index: int
    family: str
    amount: float
    caption: str
    w2c: np.ndarray
    intrinsics: np.ndarray
    frames: np.ndarray


def benchmark_clips(seed: int, paths: int, families, frames: int, height: int, width: int, stride: int = 2,
                    clip_frames: int = 16, supersample: int = 2) -> list[BenchmarkClip]:
    """`paths` clips, clip i in scene i with family families[i % len(families)]. Each path is drawn as the dataset
    draws a `clip_frames`-frame clip (same intrinsics and path sampler) and sampled at `stride` from its start,
    as training samples a clip at that stride; the model is then told this stride (its fs condition)."""
    if (frames - 1) * stride >= clip_frames:
        raise EvalError(f"{frames} frames at stride {stride} do not fit in a {clip_frames}-frame path; lower "
                        f"--stride or raise --clip-frames")
    clips = []
    for i in range(paths):
        family = families[i % len(families)]
        scene = benchmark_scene(seed, i)
        rng = np.random.default_rng(_stream(seed, i, 1))
        intrinsics = sample_intrinsics(rng, height, width)
        try:
            path = sample_path(scene, rng, clip_frames, family)
        except CameraPathError as e:
            raise EvalError(f"benchmark scene {i}: {e}; try another --bench-seed") from e
        w2c = path.w2c()[np.arange(frames) * stride]
        intr = np.repeat(intrinsics[None], frames, axis=0)
        gt = render_views(scene, w2c, intr, height, width, supersample)
        clips.append(BenchmarkClip(i, family, round(path.amount, 4), scene.caption, w2c, intr, gt))
    return clips


# ----------------------------------------------------------------------------------------------------------------
# Models


def resolve_checkpoint(path: str) -> Path:
    """A loadable model file from a file, a checkpoint folder (step_XXXXXXXX: EMA weights preferred) or a run
    folder (its checkpoints/latest)."""
    p = Path(path)
    if p.is_dir() and (p / "checkpoints" / "latest").is_file():
        p = p / "checkpoints" / (p / "checkpoints" / "latest").read_text().strip()
    if p.is_dir():
        for name in ("ema.safetensors", "model.safetensors"):
            if (p / name).is_file():
                return p / name
        raise EvalError(f"--ckpt {path}: no ema.safetensors or model.safetensors inside; pass a model file, a "
                        f"checkpoints/step_XXXXXXXX folder or a training run folder")
    if not p.is_file():
        raise EvalError(f"--ckpt {path}: no such file or folder; pass a model file (.safetensors, .pt, .ckpt), a "
                        f"checkpoint folder or a training run folder")
    return p


def _model_label(path: Path) -> str:
    parts = path.parts
    if len(parts) >= 4 and parts[-3] == "checkpoints":
        return f"{parts[-4]}/{parts[-2]}/{path.stem}"
    return path.stem


def _load(path: Path):
    from cami2v_core.model import load_model

    try:
        return load_model(path, dtype="fp32")
    except Exception as e:  # noqa: BLE001 - any load failure is the user's file; say which and why, in one line
        raise EvalError(f"cannot load {path} as a CamI2V-family model ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})") from e


def _generate(model, clip: BenchmarkClip, steps: int, cfg_text: float, eta: float, seed: int, stride: int,
              cfg_camera: float = 1.0):
    import torch
    from cami2v_core.pipeline import generate
    from trajectories import Trajectory

    image = torch.from_numpy(clip.frames[0].astype(np.float32) / 255.0)[None]
    height, width = clip.frames.shape[1:3]
    trajectory = Trajectory(clip.w2c, clip.intrinsics, aspect=width / height)
    out = generate(model, image, trajectory, prompt=clip.caption, negative_prompt="", use_trajectory_intrinsics=True,
                   steps=steps, cfg_text=cfg_text, eta=eta, seed=seed, frame_stride=stride,
                   cfg_camera=cfg_camera if model.config.camera is not None else 1.0)
    return np.clip(np.round(out.numpy() * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Metrics per video and summaries


def vae_roundtrip(model, frames: np.ndarray) -> np.ndarray:
    """Frames uint8 [T,H,W,3] encoded (posterior mean) and decoded by the model's VAE: what the best possible
    latent gives, i.e. the ceiling the VAE puts on every generated clip."""
    import torch
    from cami2v_core.pipeline import decode_latent

    x = torch.from_numpy(frames.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
    with torch.no_grad():
        mean, _ = model.first_stage_model.encode(x.to(model.device, model.dtype))
        out = decode_latent(model, model.scale_factor * mean)
    return np.clip(np.round(out.numpy() * 255.0), 0, 255).astype(np.uint8)


def _vae_key(model) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.first_stage_model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    h.update(repr(float(model.scale_factor)).encode())
    return h.hexdigest()[:12]


def evaluate_frames(frames: np.ndarray, clip: BenchmarkClip, trials: int, seed: int, sfm_size: int,
                    camera: bool, quality: bool = True, threads: int = 1) -> dict:
    """Metrics of one generated clip (or of the ground truth itself, for the oracle) against the benchmark clip."""
    from .metrics import camera_errors, psnr, ssim

    record = {"path": clip.index, "family": clip.family, "amount": clip.amount, "seed": seed}
    if quality:
        record["psnr"] = float(np.mean(psnr(frames[1:], clip.frames[1:])))
        record["ssim"] = float(np.mean(ssim(frames[1:], clip.frames[1:])))
    # How much the picture changes from frame 0 on average (0..1): tells a still clip from a moving one.
    record["change"] = float(np.abs(frames[1:].astype(np.float64) - frames[:1]).mean() / 255.0)
    if camera:
        from .sfm import recover_cameras

        gt_c2w = np.linalg.inv(clip.w2c)
        record["trials"] = []
        for rec in recover_cameras(frames, clip.intrinsics[0], trials=trials, seed=seed, size=sfm_size,
                                   threads=threads):
            entry = {"status": rec.status, "registered": rec.registered, "seconds": rec.seconds}
            if rec.ok:
                entry.update(camera_errors(gt_c2w, rec.c2w))
            record["trials"].append(entry)
    return record


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(records: list[dict]) -> dict:
    """Per-model numbers from per-video records: PSNR/SSIM means over all videos; camera errors averaged over each
    video's successful trials (trials more than 10 std from the pooled mean of all successful trials dropped, as in
    spec §10), then over the videos that have one; failures = videos with no successful trial."""
    out = {"videos": len(records)}
    for key in ("psnr", "ssim", "change"):
        if any(key in r for r in records):
            out[key] = _mean([r.get(key) for r in records])
    if not any("trials" in r for r in records):
        return out
    pooled = {k: [t[k] for r in records for t in r["trials"] if k in t] for k in CAMERA_KEYS}
    stats = {k: (np.mean(v), np.std(v)) if v else (0.0, 0.0) for k, v in pooled.items()}
    dropped, per_video = 0, []
    for r in records:
        kept = []
        for t in r["trials"]:
            if "rot_err" not in t:
                continue
            if any(stats[k][1] > 0 and abs(t[k] - stats[k][0]) > OUTLIER_STD * stats[k][1] for k in CAMERA_KEYS):
                dropped += 1
                continue
            kept.append(t)
        r["camera"] = {k: float(np.mean([t[k] for t in kept])) for k in CAMERA_KEYS} if kept else None
        per_video.append(r["camera"])
    ok = [c for c in per_video if c is not None]
    trials = [t for r in records for t in r["trials"]]
    out.update({k: _mean([c[k] for c in ok]) for k in CAMERA_KEYS})
    out.update({"reconstructed": len(ok), "reconstruction_failures": len(records) - len(ok),
                "registration_rate": len(ok) / len(records) if records else None,
                "trials": len(trials), "failed_trials": sum("rot_err" not in t for t in trials),
                "outlier_trials_dropped": dropped,
                "trial_status": {s: sum(t["status"] == s for t in trials) for s in sorted({t["status"]
                                                                                          for t in trials})}})
    return out


def _per_family(records: list[dict]) -> dict:
    families = sorted({r["family"] for r in records}, key=lambda f: FAMILIES.index(f) if f in FAMILIES else 99)
    out = {}
    for fam in families:
        rs = [r for r in records if r["family"] == fam]
        row = {"videos": len(rs)}
        for key in ("psnr", "ssim", "change"):
            if any(key in r for r in rs):
                row[key] = _mean([r.get(key) for r in rs])
        if any("camera" in r for r in rs):
            ok = [r["camera"] for r in rs if r.get("camera")]
            row.update({k: _mean([c[k] for c in ok]) for k in CAMERA_KEYS})
            row["reconstruction_failures"] = len(rs) - len(ok)
        out[fam] = row
    return out


SEED_KEYS = ("psnr", "ssim", *CAMERA_KEYS, "registration_rate")


def interval(values, confidence: float = CONFIDENCE) -> dict:
    """Mean of `values` (one per sampling seed) and the half-width of its Student-t confidence interval; the
    half-width is None with fewer than two values (no spread to estimate)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "ci": None, "seeds": 0}
    half = None
    if v.size > 1:
        half = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return {"mean": float(v.mean()), "ci": half, "seeds": int(v.size)}


def per_seed(records: list[dict]) -> dict[int, dict]:
    """The model's numbers for each sampling seed (records grouped by their `sample` index, after `summarize` has
    set each record's `camera`): PSNR/SSIM means over the paths, camera errors over the reconstructed ones, and
    the registration rate (reconstructed videos / videos)."""
    out = {}
    for s in sorted({r.get("sample", 0) for r in records}):
        rs = [r for r in records if r.get("sample", 0) == s]
        row = {k: _mean([r.get(k) for r in rs]) for k in ("psnr", "ssim")}
        if any("camera" in r for r in rs):
            ok = [r["camera"] for r in rs if r.get("camera")]
            row.update({k: _mean([c[k] for c in ok]) for k in CAMERA_KEYS})
            row["registration_rate"] = len(ok) / len(rs)
        out[s] = row
    return out


def seed_intervals(records: list[dict]) -> dict:
    """Per metric: mean over sampling seeds of the per-seed numbers, with its confidence half-width."""
    seeds = per_seed(records)
    return {k: {**interval([row.get(k) for row in seeds.values()]),
                "per_seed": [row.get(k) for row in seeds.values()]}
            for k in SEED_KEYS if any(k in row for row in seeds.values())}


def paired_differences(records_a: list[dict], records_b: list[dict]) -> dict:
    """Model A minus model B, seed by seed (both sampled the same paths with the same seeds, so the path-to-path
    spread cancels), with a confidence interval over the seeds. Positive PSNR/SSIM: A better; negative camera
    errors: A better."""
    a, b = per_seed(records_a), per_seed(records_b)
    out = {}
    for k in SEED_KEYS:
        diffs = [a[s][k] - b[s][k] for s in a if s in b and a[s].get(k) is not None and b[s].get(k) is not None]
        if diffs:
            out[k] = {**interval(diffs), "per_seed": diffs}
    return out


def _json_safe(x):
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# ----------------------------------------------------------------------------------------------------------------
# Running it


def _families(spec: str) -> tuple[str, ...]:
    if spec == "translating":
        return TRANSLATING_FAMILIES
    if spec == "all":
        return FAMILIES
    fams = tuple(f.strip() for f in spec.split(",") if f.strip())
    unknown = [f for f in fams if f not in FAMILIES]
    if unknown or not fams:
        raise EvalError(f"--families: unknown {unknown or spec!r}; use 'translating', 'all' or a comma-separated "
                        f"list of {', '.join(FAMILIES)}")
    return fams


def _check_packages(camera: bool, i3d: str | None):
    from .metrics import MetricsError, _need

    try:
        _need("skimage.metrics", "scikit-image", "SSIM")
        if i3d is not None:
            _need("scipy.linalg", "scipy", "FVD")
    except MetricsError as e:
        raise EvalError(str(e)) from e
    if camera:
        from .sfm import SfMError, require_pycolmap

        try:
            require_pycolmap()
        except SfMError as e:
            raise EvalError(f"{e} (or pass --no-camera for PSNR/SSIM only)") from e


def run(args, log=print) -> dict:
    """Evaluate the requested models on the synthetic benchmark; returns the report (what --json writes)."""
    import torch

    from cami2v_core.bundled import bundled_companion_path, bundled_model_path

    from .metrics import psnr, ssim

    torch.set_num_threads(args.threads)
    camera = not args.no_camera
    _check_packages(camera, args.i3d)
    families = _families(args.families)
    preset = QUICK if args.quick else FULL
    paths = args.paths or preset["paths_per_family"] * len(families)
    steps = args.steps or preset["steps"]
    trials = args.trials or preset["trials"]
    samples = args.samples or preset["samples"]
    if min(paths, steps, trials, samples) < 1:
        raise EvalError("--paths, --steps, --trials and --samples must be >= 1")
    ckpts = args.ckpt or [p for p in (bundled_model_path(), bundled_companion_path()) if p is not None]
    if not ckpts:
        raise EvalError("no --ckpt given and this install has no bundled model; pass --ckpt FILE")
    files = [resolve_checkpoint(str(c)) for c in ckpts]
    detector = None
    if args.i3d is not None:
        from .metrics import MetricsError, load_i3d

        try:
            detector = load_i3d(args.i3d)
        except MetricsError as e:
            raise EvalError(str(e)) from e
    models = [(f, _load(f)) for f in files]  # all loaded up front: a bad file fails before hours of work
    shapes = {(m.config.temporal_length, *m.config.resolution) for _, m in models}
    if len(shapes) != 1:
        raise EvalError(f"the models make clips of different sizes {sorted(shapes)} (frames, H, W); evaluate them "
                        f"in separate runs")
    frames, height, width = shapes.pop()

    t0 = time.perf_counter()
    clips = benchmark_clips(args.bench_seed, paths, families, frames, height, width, args.stride, args.clip_frames)
    log(f"benchmark: {len(clips)} paths ({', '.join(families)}), {frames} frames of {height}x{width}, "
        f"stride {args.stride}; rendered in {time.perf_counter() - t0:.1f} s")
    report = {
        "benchmark": {
            "kind": "synthetic", "bench_seed": args.bench_seed, "stream_key": BENCHMARK_STREAM_KEY,
            "generator_version": GENERATOR_VERSION, "paths": len(clips), "families": list(families),
            "frames": frames, "height": height, "width": width, "stride": args.stride,
            "clip_frames": args.clip_frames,
            "note": "held-out rooms: random streams keyed (bench_seed, stream_key, index), disjoint from every "
                    "training.synthetic dataset's (seed, 0|1, index)"},
        "settings": {"quick": bool(args.quick), "steps": steps, "cfg_text": args.cfg_text,
                     "cfg_camera": args.cfg_camera, "eta": args.eta,
                     "samples_per_path": samples, "confidence": CONFIDENCE, "gen_seed": args.gen_seed, "camera_metrics": camera,
                     "reconstruction_trials": trials, "sfm_size": args.sfm_size,
                     "metrics": "PSNR/SSIM: mean over frames 1..T-1, then over videos. RotErr (radians), TransErr, "
                                "CamMC: sums over the T frames per video (spec §10), averaged over successful "
                                "trials, then over reconstructed videos"},
        "models": {},
    }
    if camera and not args.no_oracle:
        t0 = time.perf_counter()
        records = [evaluate_frames(c.frames, c, trials, args.gen_seed, args.sfm_size, True, quality=False,
                                   threads=args.threads) for c in clips]
        summary = summarize(records)
        meaningful = summary["reconstructed"] >= max(1, math.ceil(0.5 * len(clips)))
        summary["camera_metrics_meaningful"] = meaningful
        summary["note"] = ("the reconstruction run on the ground-truth frames: the floor of the camera errors at "
                           "this resolution" if meaningful else
                           "the reconstruction fails on most ground-truth clips: the models' camera errors are "
                           "not meaningful at this setting")
        report["oracle"] = {**summary, "per_family": _per_family(records), "per_video": records}
        log(f"oracle: {_line(summary)} ({time.perf_counter() - t0:.0f} s)")
        if not meaningful:
            log("WARNING: the oracle reconstructs fewer than half the ground-truth clips; camera metrics below are "
                "not meaningful")
    # A clip that does not move: the ground-truth first frame held for all frames (PSNR/SSIM only; SfM has
    # nothing to reconstruct). A model must beat it to show that its frames move the right way.
    records = [{"path": c.index, "family": c.family,
                "psnr": float(np.mean(psnr(np.repeat(c.frames[:1], frames - 1, 0), c.frames[1:]))),
                "ssim": float(np.mean(ssim(np.repeat(c.frames[:1], frames - 1, 0), c.frames[1:]))),
                "change": 0.0} for c in clips]
    report["static_first_frame"] = {**summarize(records), "per_family": _per_family(records),
                                    "note": "the ground-truth first frame repeated: a clip that does not move"}
    log(f"static first frame: {_line(report['static_first_frame'])}")
    if not args.no_vae_row:
        # One row per distinct VAE: ground-truth frames through encode + decode, no sampling.
        report["vae_roundtrip"] = {}
        seen = {}
        for path, model in models:
            key = _vae_key(model)
            if key in seen:
                report["vae_roundtrip"][seen[key]]["models"].append(_model_label(path))
                continue
            t0 = time.perf_counter()
            records = [evaluate_frames(vae_roundtrip(model, c.frames), c, trials, args.gen_seed, args.sfm_size,
                                       camera, threads=args.threads) for c in clips]
            summary = summarize(records)
            name = f"vae {key}"
            seen[key] = name
            report["vae_roundtrip"][name] = {
                **summary, "models": [_model_label(path)],
                "note": "ground-truth frames encoded and decoded by the models' VAE: the best any latent of these "
                        "models can do", "per_family": _per_family(records), "per_video": records}
            log(f"{name} (VAE round trip of the ground truth): {_line(summary)} ({time.perf_counter() - t0:.0f} s)")
    gt_videos = np.stack([c.frames for c in clips])
    for path, model in models:
        label = _model_label(path)
        t0 = time.perf_counter()
        records, fakes = [], []
        for c in clips:
            for s in range(samples):
                seed = args.gen_seed + 1000 * c.index + s
                video = _generate(model, c, steps, args.cfg_text, args.eta, seed, args.stride, args.cfg_camera)
                fakes.append(video)
                records.append({**evaluate_frames(video, c, trials, seed, args.sfm_size, camera,
                                                  threads=args.threads), "sample": s})
                if args.save_frames:
                    _save_strip(Path(args.save_frames) / label.replace("/", "_"), c, s, video)
        summary = summarize(records)
        entry = {"file": str(path), "variant": model.config.variant, **summary}
        if samples > 1:
            entry["over_seeds"] = seed_intervals(records)
        if detector is not None:
            from .metrics import MetricsError, fvd

            try:
                entry["fvd"] = fvd(np.repeat(gt_videos, samples, axis=0), np.stack(fakes), detector)
            except MetricsError as e:
                entry["fvd"], entry["fvd_error"] = None, str(e)
                log(f"WARNING: FVD for {label}: {e}")
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        entry.update({"per_family": _per_family(records), "per_video": records})
        report["models"][label] = entry
        log(f"{label} ({model.config.variant}): {_line(summary)} ({entry['seconds']:.0f} s)")
    labels = list(report["models"])
    if len(labels) > 1 and samples > 1:
        first = report["models"][labels[0]]["per_video"]
        report["differences"] = {f"{labels[0]} - {other}": paired_differences(first, report["models"][other]["per_video"])
                                 for other in labels[1:]}
    return _json_safe(report)


def _line(s: dict) -> str:
    def f(key, fmt):
        return "-" if s.get(key) is None else format(s[key], fmt)

    text = f"PSNR {f('psnr', '.2f')} SSIM {f('ssim', '.3f')}"
    if "reconstruction_failures" in s:
        text += (f" RotErr {f('rot_err', '.3f')} TransErr {f('trans_err', '.3f')} CamMC {f('cam_mc', '.3f')} "
                 f"failures {s['reconstruction_failures']}/{s['videos']}")
    return text


def _save_strip(folder: Path, clip: BenchmarkClip, sample: int, video: np.ndarray):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    strip = np.concatenate([np.concatenate(list(clip.frames), 1), np.concatenate(list(video), 1)], 0)
    with atomic_write(folder / f"{clip.index:03d}_{clip.family}_{sample}.png") as f:
        Image.fromarray(strip).save(f, format="PNG")


def markdown_table(report: dict) -> str:
    """The report's headline numbers as Markdown: model | PSNR | SSIM | RotErr | TransErr | CamMC | registered
    (videos the reconstruction registered / videos). With several sampling seeds each model's numbers are the mean
    over the seeds +- the half-width of the confidence interval, and a second table gives the first model minus
    each other one, paired seed by seed."""
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    def cell(s, key, fmt):
        over = s.get("over_seeds", {}).get(key)
        if over is not None and over.get("ci") is not None:
            return f"{f(over['mean'], fmt)} ± {f(over['ci'], fmt)}"
        return f(s.get(key), fmt)

    metrics = (("psnr", ".2f"), ("ssim", ".3f"), ("rot_err", ".3f"), ("trans_err", ".3f"), ("cam_mc", ".3f"))
    rows = ["| model | PSNR | SSIM | RotErr | TransErr | CamMC | registered |", "|---|---|---|---|---|---|---|"]
    items = [(f"{name} (round trip)", s) for name, s in report.get("vae_roundtrip", {}).items()]
    if "static_first_frame" in report:
        items.insert(0, ("static first frame (no motion)", report["static_first_frame"]))
    items += list(report["models"].items())
    if "oracle" in report:
        items.insert(0, ("oracle (ground-truth frames)", report["oracle"]))
    for name, s in items:
        registered = f"{s['reconstructed']}/{s['videos']}" if "reconstructed" in s else "-"
        label = name if "variant" not in s else f"{name} ({s['variant']})"
        rows.append(f"| {label} | " + " | ".join(cell(s, k, fmt) for k, fmt in metrics) + f" | {registered} |")
    differences = report.get("differences")
    if differences:
        level = round(100 * report.get("settings", {}).get("confidence", CONFIDENCE))
        rows += ["", f"Paired by sampling seed (mean ± {level} % interval over "
                     f"{report['settings']['samples_per_path']} seeds; PSNR/SSIM/registration up and camera errors "
                     f"down mean the first model is better):", "",
                 "| difference | PSNR | SSIM | RotErr | TransErr | CamMC | registration rate |",
                 "|---|---|---|---|---|---|---|"]
        for name, d in differences.items():
            def dc(key, fmt):
                x = d.get(key)
                if x is None or x["mean"] is None:
                    return "-"
                return format(x["mean"], "+" + fmt) + ("" if x["ci"] is None else f" ± {x['ci']:{fmt}}")
            rows.append(f"| {name} | " + " | ".join(dc(k, fmt) for k, fmt in metrics)
                        + f" | {dc('registration_rate', '.2f')} |")
    return "\n".join(rows)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Evaluate CamI2V-family models on a held-out synthetic benchmark: PSNR / SSIM against the "
                    "ground-truth frames, and RotErr / TransErr / CamMC of the cameras pycolmap (GLOMAP) recovers "
                    "from the generated frames (spec §10), with an oracle row (the same reconstruction on the "
                    "ground-truth frames) and reconstruction failures counted.",
        epilog="Needs scikit-image (SSIM), pycolmap==4.2.1 (camera metrics, not with --no-camera) and scipy (FVD): "
               "pip install -r requirements-dev.txt.")
    p.add_argument("--synthetic", action="store_true", required=True,
                   help="run the synthetic benchmark (required; the only benchmark so far)")
    p.add_argument("--quick", action="store_true",
                   help=f"about 3 minutes on 2 CPU cores: {QUICK['paths_per_family']} path per family, "
                        f"{QUICK['steps']} DDIM steps, "
                        f"{QUICK['samples']} sampling seeds per path, {QUICK['trials']} reconstruction trial "
                        f"(default: {FULL['paths_per_family']} paths per family, {FULL['steps']} steps, "
                        f"{FULL['samples']} seed, {FULL['trials']} trials)")
    p.add_argument("--ckpt", action="append", default=None, metavar="FILE",
                   help="model to evaluate (repeat for several): a model file, a checkpoints/step_XXXXXXXX folder "
                        "(ema.safetensors preferred) or a training run folder (its latest checkpoint); default: "
                        "the bundled tiny model and its bundled no-camera companion")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the full report here")
    p.add_argument("--paths", type=int, default=None, help="benchmark paths, one per scene (overrides the preset)")
    p.add_argument("--families", default="translating",
                   help="camera path families, cycled over the paths: 'translating' (default: orbit, pan, dolly, "
                        "random -- the camera centre moves, so SfM and scale-free TransErr are defined), 'all', or "
                        "a comma-separated list")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (overrides the preset)")
    p.add_argument("--trials", type=int, default=None,
                   help="reconstruction trials per video, each with its own random seed (overrides the preset; the "
                        "paper uses 5)")
    p.add_argument("--samples", type=int, default=None,
                   help=f"generated clips per path, one per sampling seed (default {FULL['samples']}, "
                        f"{QUICK['samples']} with --quick); with 2 or more, every number gets a "
                        f"{round(100 * CONFIDENCE)} %% confidence interval over the seeds and the first model is "
                        f"compared with each other one seed by seed")
    p.add_argument("--cfg-text", type=float, default=7.5, help="text/image guidance scale (default 7.5, spec §7.6)")
    p.add_argument("--cfg-camera", type=float, default=1.0,
                   help="camera guidance scale of the camera models (default 1.0: off, as the paper's tables); the "
                        "no-camera model has no camera branch and always runs at 1")
    p.add_argument("--eta", type=float, default=1.0, help="DDIM eta (default 1.0, spec §7.6)")
    p.add_argument("--gen-seed", type=int, default=0,
                   help="base sampling seed; path i, sample s uses gen_seed + 1000 i + s (the same for every model)")
    p.add_argument("--bench-seed", type=int, default=0, help="benchmark seed: which held-out rooms and paths")
    p.add_argument("--stride", type=int, default=2,
                   help="frame stride: frames 0, s, 2s, ... of a --clip-frames path, told to the model as its fs "
                        "condition (default 2)")
    p.add_argument("--clip-frames", type=int, default=16,
                   help="length of the sampled path before striding, as in the dataset (default 16)")
    p.add_argument("--sfm-size", type=int, default=256,
                   help="long side in pixels the frames are upscaled to (Lanczos) before SIFT (default 256)")
    p.add_argument("--no-camera", action="store_true", help="PSNR/SSIM only: no reconstruction, no pycolmap needed")
    p.add_argument("--no-oracle", action="store_true", help="skip the oracle row")
    p.add_argument("--no-vae-row", action="store_true",
                   help="skip the VAE round-trip row (ground-truth frames encoded and decoded by each distinct VAE "
                        "of the models: the quality ceiling the VAE sets)")
    p.add_argument("--i3d", default=None, metavar="FILE",
                   help="TorchScript I3D (i3d_torchscript.pt, as in StyleGAN-V / DynamiCrafter's evaluation) to "
                        "add FVD between the ground-truth and generated clips; the usual I3D needs >= 16 frames")
    p.add_argument("--save-frames", default=None, metavar="DIR",
                   help="write ground truth (top) over generated frames (bottom) as one PNG per clip")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch and COLMAP (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv=None) -> int:
    """Command line entry: 0 done, 2 bad input (one line on stderr says what to do)."""
    parser = _parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    def log(msg):
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    try:
        if args.json is not None:
            parent = Path(args.json).resolve().parent
            if not parent.is_dir():
                raise EvalError(f"--json {args.json}: folder {parent} does not exist")
        report = run(args, log)
    except CamI2VError as e:  # config, checkpoint, camera path, SfM: all in one line
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=1)
    if args.json:
        write_text_atomic(args.json, text + "\n")
    print(markdown_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
