"""Synthetic multi-view dataset: procedurally textured rooms rendered along known camera paths (issue 6).

Writes the RealEstate10K layout that the training data loader reads (spec §9 steps 4-5, pose text spec §6.4):

    <out>/manifest.json                        seed, settings, counts, generator version
    <out>/video_clips/<split>/<scene>/<clip>/  frames 00000.png, 00001.png, ... (frame k <-> pose line k)
                                               (or <clip>.mp4 with --format mp4, which needs PyAV)
    <out>/pose_files/<split>/<clip>.txt        URL line, then `timestamp_us fx fy cx cy 0 0 w2c(3x4 row-major)`
    <out>/valid_metadata/<split>/<clip>.txt    URL, "<scene>/<clip>", caption, the same pose lines
    <out>/<split>_valid_list.txt               one clip id per line
    <out>/<split>_captions.json                {"<clip>.mp4": [caption]} (CameraCtrl's caption file format)
    <out>/<split>_video2clip.json              {"<scene>": [clips]}
    <out>/scenes/<split>/<scene>.json          the scene description: `render_views` re-renders any camera

Usage:

    python -m training.synthetic --out data/synthetic --scenes 100 --seed 0
    python -m training.synthetic --out data/synthetic --scenes 20 --seed 0 --split test --frames 16 --size 256 256

Every scene and clip is drawn from its own random stream keyed by (seed, split, scene index[, clip index]), so
the output does not depend on --workers or on how often a run was interrupted, test scenes never share a stream
with training scenes, and a run that is started again skips the clips that are already complete.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .camera_paths import FAMILIES, sample_intrinsics, sample_path
from .render import DirectionalLight, Material, PointLight, Scene, Shape, load_scene, render_views, save_scene
from cami2v_core.errors import CamI2VError
from cami2v_core.files import write_text_atomic

__all__ = ["GENERATOR_VERSION", "SPLITS", "Settings", "SyntheticDataError", "make_scene", "make_clip",
           "pose_lines", "generate", "scene_for_clip", "scene_from_rng", "render_views", "main"]

# Bump whenever the same seed and settings would give different files (scene sampling, paths, renderer, format).
GENERATOR_VERSION = "1"
SPLITS = ("train", "test")
# Part of every random stream's key: a test scene can never be drawn from a training scene's stream.
_SPLIT_KEY = {"train": 0, "test": 1}
# Starts with "https" like the RealEstate10K files (readers skip such lines); the .invalid domain never resolves.
_URL_PREFIX = "https://synthetic.invalid/cami2v"
_VIDEO_FORMATS = ("png", "mp4")


class SyntheticDataError(CamI2VError, ValueError):
    """A request the generator cannot fulfil; the message says what to change."""


# ----------------------------------------------------------------------------------------------------------------
# Scenes

# Colour names double as caption words, so every object's colour is one of these.
NAMED_COLORS = {
    "red": (0.85, 0.14, 0.12), "orange": (0.95, 0.52, 0.10), "yellow": (0.95, 0.85, 0.20),
    "green": (0.20, 0.68, 0.25), "teal": (0.10, 0.58, 0.58), "blue": (0.15, 0.30, 0.85),
    "purple": (0.50, 0.22, 0.70), "pink": (0.95, 0.50, 0.70), "white": (0.93, 0.93, 0.90),
    "grey": (0.55, 0.55, 0.55), "brown": (0.50, 0.30, 0.15), "black": (0.13, 0.13, 0.14),
}
_WALL_PATTERNS = {"brick": "brick walls", "noise": "mottled walls", "blobs": "dotted walls",
                  "stripes": "striped walls", "checker": "tiled walls"}
_FLOOR_PATTERNS = {"checker": "a checkered floor", "stripes": "a wooden floor", "noise": "a stone floor",
                   "blobs": "a speckled floor"}
_OBJECT_PATTERNS = ("noise", "checker", "stripes", "blobs")
_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
_PLURAL = {"box": "boxes", "sphere": "spheres", "cylinder": "cylinders"}


def _seed_sequence(seed: int, split: str, *index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(entropy=int(seed), spawn_key=(_SPLIT_KEY[split], *index))


def scene_seed(seed: int, split: str, index: int) -> int:
    """The 64-bit number that identifies scene `index` of `split` under the run seed (recorded in the scene file)."""
    return int(_seed_sequence(seed, split, index).generate_state(1, np.uint64)[0])


def _muted_color(rng, lightness=(0.45, 0.85)):
    """A room colour: low saturation, medium to high value."""
    hue, sat, val = rng.random(), rng.uniform(0.1, 0.45), rng.uniform(*lightness)
    k = np.mod(np.array([5.0, 3.0, 1.0]) + hue * 6, 6)
    return (val - val * sat * np.clip(np.minimum(k, 4 - k), 0, 1)).round(4).tolist()


def _room_material(rng, pattern, scale_range):
    # The second colour is clearly darker than the first: contrast is what feature detectors respond to.
    c0 = _muted_color(rng, (0.6, 0.9))
    c1 = (np.asarray(_muted_color(rng, (0.6, 0.9))) * rng.uniform(0.35, 0.6)).round(4).tolist()
    mortar = _muted_color(rng, (0.7, 0.9))
    return Material(pattern=pattern, colors=[c0, c1, mortar], scale=round(float(rng.uniform(*scale_range)), 4),
                    seed=int(rng.integers(2 ** 31)), detail=round(float(rng.uniform(0.2, 0.4)), 3))


def _place_objects(rng, room_size, count):
    """Non-overlapping boxes, spheres and cylinders (footprint circles 0.25 m apart, 0.3 m off the walls)."""
    sx, sy, sz = room_size
    placed, footprints = [], []
    for _ in range(count * 30):
        if len(placed) == count:
            break
        kind = ("box", "sphere", "cylinder")[int(rng.integers(3))]
        if kind == "box":
            size = rng.uniform(0.2, 0.6, size=3).round(3)
            radius = float(np.hypot(size[0], size[2]))
            y = float(size[1])
        elif kind == "sphere":
            size = np.array([round(float(rng.uniform(0.2, 0.55)), 3)])
            radius = float(size[0])
            floating = rng.random() < 0.4 and sy - 2 * radius > 1.2
            y = float(rng.uniform(radius + 0.4, sy - radius - 0.3)) if floating else radius
        else:
            size = np.array([rng.uniform(0.15, 0.4), rng.uniform(0.25, 0.8)]).round(3)
            radius = float(size[0])
            y = float(size[1])
        x = rng.uniform(-sx / 2 + radius + 0.3, sx / 2 - radius - 0.3)
        z = rng.uniform(-sz / 2 + radius + 0.3, sz / 2 - radius - 0.3)
        if any(np.hypot(x - px, z - pz) < radius + pr + 0.25 for px, pz, pr in footprints):
            continue
        name = list(NAMED_COLORS)[int(rng.integers(len(NAMED_COLORS)))]
        base = np.asarray(NAMED_COLORS[name])
        second = base * rng.uniform(0.45, 0.7) if rng.random() < 0.5 else 0.5 * (base + 1.0)
        material = Material(pattern=_OBJECT_PATTERNS[int(rng.integers(len(_OBJECT_PATTERNS)))],
                            colors=[base.round(4).tolist(), second.round(4).tolist()],
                            scale=round(float(rng.uniform(0.06, 0.2)), 4), seed=int(rng.integers(2 ** 31)),
                            detail=round(float(rng.uniform(0.2, 0.35)), 3))
        placed.append(Shape(kind=kind, center=[round(float(x), 4), round(y, 4), round(float(z), 4)],
                            size=size.tolist(), material=material,
                            yaw_deg=round(float(rng.uniform(0, 90)), 2) if kind == "box" else 0.0,
                            label=f"{name} {kind}"))
        footprints.append((x, z, radius))
    return placed


def caption_for(scene: Scene) -> str:
    """A one-sentence description: "a room with brick walls, a wooden floor, a red sphere and two blue boxes"."""
    wall = _WALL_PATTERNS.get(scene.room_materials["wall_x-"].pattern, "plain walls")
    floor = _FLOOR_PATTERNS.get(scene.room_materials["floor"].pattern, "a plain floor")
    counts: dict[tuple[str, str], int] = {}
    for obj in scene.objects:
        color, kind = obj.label.rsplit(" ", 1)
        counts[(color, kind)] = counts.get((color, kind), 0) + 1
    things = [wall, floor]
    for (color, kind), n in counts.items():
        if n == 1:
            things.append(f"{'an' if color[0] in 'aeiou' else 'a'} {color} {kind}")
        else:
            things.append(f"{_NUMBER_WORDS.get(n, str(n))} {color} {_PLURAL[kind]}")
    return "a room with " + ", ".join(things[:-1]) + " and " + things[-1]


def make_scene(seed: int, split: str, index: int) -> Scene:
    """Scene number `index` of `split` for the run seed: a textured room with 3-7 objects and lights."""
    if split not in SPLITS:
        raise SyntheticDataError(f"unknown split {split!r}; expected one of {SPLITS}")
    return scene_from_rng(np.random.default_rng(_seed_sequence(seed, split, index)),
                          {"seed": int(seed), "split": split, "index": int(index),
                           "scene_seed": scene_seed(seed, split, index)})


def scene_from_rng(rng: np.random.Generator, info: dict) -> Scene:
    """A room drawn from `rng` (what `make_scene` does with the stream of one scene); `info` is recorded in the
    scene next to the generator version. The evaluation benchmark draws its rooms from its own streams this way."""
    room_size = [round(float(v), 3) for v in (rng.uniform(4.5, 8.0), rng.uniform(2.6, 3.4), rng.uniform(4.5, 8.0))]
    wall_pattern = list(_WALL_PATTERNS)[int(rng.integers(len(_WALL_PATTERNS)))]
    floor_pattern = list(_FLOOR_PATTERNS)[int(rng.integers(len(_FLOOR_PATTERNS)))]
    # The four walls share a pattern (one caption word) but each has its own colours and random lattice,
    # so no two walls look alike to a feature matcher.
    materials = {face: _room_material(rng, wall_pattern, (0.12, 0.3)) for face in
                 ("wall_x-", "wall_x+", "wall_z-", "wall_z+")}
    materials["floor"] = _room_material(rng, floor_pattern, (0.2, 0.45))
    materials["ceiling"] = _room_material(rng, "noise", (0.3, 0.6))
    objects = _place_objects(rng, room_size, int(rng.integers(3, 8)))
    sun = rng.normal(size=3)
    sun[1] = abs(sun[1]) + 0.5  # from above
    fill = -sun * np.array([1.0, -0.3, 1.0])
    scene = Scene(
        room_size=room_size,
        room_materials=materials,
        objects=objects,
        ambient=round(float(rng.uniform(0.3, 0.42)), 3),
        directional_lights=[DirectionalLight((sun / np.linalg.norm(sun)).round(4).tolist(),
                                             round(float(rng.uniform(0.35, 0.5)), 3)),
                            DirectionalLight((fill / np.linalg.norm(fill)).round(4).tolist(),
                                             round(float(rng.uniform(0.1, 0.2)), 3))],
        point_lights=[PointLight([round(float(rng.uniform(-1, 1) * room_size[0] / 4), 3), room_size[1] - 0.15,
                                  round(float(rng.uniform(-1, 1) * room_size[2] / 4), 3)],
                                 round(float(rng.uniform(0.35, 0.6)), 3), round(float(rng.uniform(2.5, 4.0)), 3))],
        info={"generator_version": GENERATOR_VERSION, **info},
    )
    scene.caption = caption_for(scene)
    return scene


# ----------------------------------------------------------------------------------------------------------------
# Clips and pose text


def make_clip(scene: Scene, seed: int, split: str, index: int, clip: int, frames: int, height: int, width: int):
    """Camera path `clip` of scene `index`: (family, w2c [T,4,4], normalised intrinsics [T,4])."""
    rng = np.random.default_rng(_seed_sequence(seed, split, index, clip))
    intrinsics = sample_intrinsics(rng, height, width)
    path = sample_path(scene, rng, frames)
    return path.family, path.w2c(), np.repeat(intrinsics[None], frames, axis=0)


def _number(x: float) -> str:
    # Ten decimals: plenty for poses, and no "-0.0" or "1e-17" noise in the files.
    return repr(float(np.round(x, 10)) + 0.0)


def pose_lines(w2c, intrinsics, fps: float) -> list[str]:
    """RealEstate10K pose lines (spec §6.4) for w2c [T,4,4] and normalised intrinsics [T,4]."""
    w2c = np.asarray(w2c, dtype=np.float64)
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    lines = []
    for k in range(len(w2c)):
        timestamp_us = int(round(k * 1e6 / fps))
        values = [*intrinsics[k], 0.0, 0.0, *w2c[k, :3, :4].reshape(-1)]
        lines.append(" ".join([str(timestamp_us)] + [_number(v) for v in values]))
    return lines


def _poses_from_lines(lines: list[str]):
    """The cameras exactly as the pose text stores them: intrinsics [T,4], w2c [T,4,4]."""
    table = np.array([[float(v) for v in line.split()] for line in lines])
    w2c = np.zeros((len(table), 4, 4))
    w2c[:, :3, :4] = table[:, 7:19].reshape(-1, 3, 4)
    w2c[:, 3, 3] = 1.0
    return table[:, 1:5], w2c


# ----------------------------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class Settings:
    """Everything besides the scene count that decides the files; a dataset folder holds one setting only."""

    seed: int
    frames: int = 16
    height: int = 256
    width: int = 256
    clips_per_scene: int = 2
    fps: float = 10.0
    supersample: int = 2
    video_format: str = "png"
    generator_version: str = GENERATOR_VERSION


def scene_name(split: str, index: int) -> str:
    """Scene id, e.g. "test_000003" (also the folder under video_clips/<split>/)."""
    return f"{split}_{index:06d}"


def clip_name(split: str, index: int, clip: int) -> str:
    """Clip id, e.g. "test_000003_01" (pose file, metadata and frame folder name)."""
    return f"{split}_{index:06d}_{clip:02d}"


def scene_for_clip(out, clip: str):
    """The Scene that clip `clip` (e.g. "test_000003_01") of the dataset under `out` was rendered from."""
    split, _, _ = clip.partition("_")
    if split not in SPLITS or clip.count("_") != 2:
        raise SyntheticDataError(f"{clip!r} is not a synthetic clip id; expected '<split>_<scene>_<clip>' such as "
                                 f"'test_000003_01'")
    return load_scene(Path(out) / "scenes" / split / f"{clip.rsplit('_', 1)[0]}.json")


def _frames_complete(out: Path, settings: Settings, split: str, scene: str, clip: str) -> bool:
    if settings.video_format == "mp4":
        return (out / "video_clips" / split / scene / f"{clip}.mp4").is_file()
    folder = out / "video_clips" / split / scene / clip
    return all((folder / f"{k:05d}.png").is_file() for k in range(settings.frames))


def _clip_complete(out: Path, settings: Settings, split: str, index: int, clip: int) -> bool:
    scene, name = scene_name(split, index), clip_name(split, index, clip)
    # The metadata file is written last, so it marks a finished clip.
    return ((out / "valid_metadata" / split / f"{name}.txt").is_file()
            and (out / "pose_files" / split / f"{name}.txt").is_file()
            and _frames_complete(out, settings, split, scene, name))


def _write_frames(out: Path, settings: Settings, split: str, scene: str, clip: str, frames: np.ndarray) -> None:
    folder = out / "video_clips" / split / scene
    folder.mkdir(parents=True, exist_ok=True)
    if settings.video_format == "mp4":
        from cami2v_core.video_io import write_video  # imports torch: only when mp4 output is asked for

        write_video(frames, folder / f"{clip}.mp4", fps=settings.fps)
        return
    from PIL import Image

    final = folder / clip
    # Temporary folders of this clip left by interrupted runs (any process id) are never completed: drop them.
    for stale in folder.glob(f".tmp-{clip}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = folder / f".tmp-{clip}-{os.getpid()}"
    tmp.mkdir()
    for k, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp / f"{k:05d}.png")
    # A folder left by an interrupted earlier run is replaced whole; the rename makes the new one appear at once.
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)


def _render_scene(task) -> tuple[str, int, int, int]:
    """Render every missing clip of one scene: (split, index, clips rendered, clips already there)."""
    out, settings, split, index = task
    out = Path(out)
    name = scene_name(split, index)
    scene_file = out / "scenes" / split / f"{name}.json"
    todo = [c for c in range(settings.clips_per_scene) if not _clip_complete(out, settings, split, index, c)]
    if not todo and scene_file.is_file():
        return split, index, 0, settings.clips_per_scene
    scene = make_scene(settings.seed, split, index)
    save_scene(scene, scene_file)
    for c in todo:
        clip = clip_name(split, index, c)
        family, w2c, intrinsics = make_clip(scene, settings.seed, split, index, c, settings.frames,
                                            settings.height, settings.width)
        lines = pose_lines(w2c, intrinsics, settings.fps)
        # Render from the cameras as written, so that the files alone reproduce every frame exactly.
        intrinsics_written, w2c_written = _poses_from_lines(lines)
        frames = render_views(scene, w2c_written, intrinsics_written, settings.height, settings.width,
                              settings.supersample)
        _write_frames(out, settings, split, name, clip, frames)
        url = f"{_URL_PREFIX}/{split}/{name}/{clip}?family={family}&seed={settings.seed}"
        write_text_atomic(out / "pose_files" / split / f"{clip}.txt", "\n".join([url] + lines) + "\n")
        write_text_atomic(out / "valid_metadata" / split / f"{clip}.txt",
                           "\n".join([url, f"{name}/{clip}", scene.caption] + lines) + "\n")
    return split, index, len(todo), settings.clips_per_scene - len(todo)


def _write_indices(out: Path, split: str) -> dict:
    """Rebuild the split's list, caption and video2clip files from the finished clips on disk; counts."""
    clips, captions, video2clip = [], {}, {}
    meta_dir = out / "valid_metadata" / split
    for meta in sorted(meta_dir.glob("*.txt")) if meta_dir.is_dir() else []:
        lines = meta.read_text().splitlines()
        clip, (scene, _), caption = meta.stem, lines[1].split("/"), lines[2]
        clips.append(clip)
        captions[f"{clip}.mp4"] = [caption]
        video2clip.setdefault(scene, []).append(clip)
    write_text_atomic(out / f"{split}_valid_list.txt", "".join(f"{c}\n" for c in clips))
    write_text_atomic(out / f"{split}_captions.json", json.dumps(captions, indent=1) + "\n")
    write_text_atomic(out / f"{split}_video2clip.json", json.dumps(video2clip, indent=1) + "\n")
    return {"scenes": len(video2clip), "clips": len(clips)}


def _check_manifest(out: Path, settings: Settings) -> dict:
    manifest_file = out / "manifest.json"
    if not manifest_file.exists():
        return {}
    try:
        manifest = json.loads(manifest_file.read_text())
    except json.JSONDecodeError as e:
        raise SyntheticDataError(f"{manifest_file} is not valid JSON ({e}); delete it and the dataset, or use "
                                 f"another --out") from e
    old = manifest.get("settings", {})
    diff = {k: (old.get(k), v) for k, v in asdict(settings).items() if old.get(k) != v}
    if diff:
        listing = ", ".join(f"{k}: {a!r} there, {b!r} asked" for k, (a, b) in diff.items())
        raise SyntheticDataError(f"{out} already holds a dataset made with other settings ({listing}); "
                                 f"resume it with the same settings or write to another --out")
    return manifest


def generate(out, scenes: int, seed: int, frames: int = 16, height: int = 256, width: int = 256,
             split: str = "both", workers: int = 1, clips_per_scene: int = 2, fps: float = 10.0,
             supersample: int = 2, video_format: str = "png", log=print) -> dict:
    """Write (or complete) the dataset under `out`; returns {"manifest": what manifest.json holds,
    "clips_rendered": n, "clips_skipped": clips found complete}."""
    _check_request(scenes, seed, frames, height, width, split, workers, clips_per_scene, fps, supersample,
                   video_format)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SyntheticDataError(f"--out {str(out)!r} is a file; give a folder (it is created if missing)")
    settings = Settings(seed=int(seed), frames=int(frames), height=int(height), width=int(width),
                        clips_per_scene=int(clips_per_scene), fps=float(fps), supersample=int(supersample),
                        video_format=video_format)
    splits = SPLITS if split == "both" else (split,)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _check_manifest(out, settings)
    manifest.update({"generator": "training.synthetic", "generator_version": GENERATOR_VERSION,
                     "seed": settings.seed, "settings": asdict(settings), "path_families": list(FAMILIES)})
    manifest.setdefault("splits", {})
    for s in splits:
        for sub in ("pose_files", "valid_metadata", "video_clips", "scenes"):
            (out / sub / s).mkdir(parents=True, exist_ok=True)
    # Written before any clip, so an interrupted run can only be resumed with the same settings.
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")

    tasks = [(str(out), settings, s, i) for s in splits for i in range(scenes)]
    rendered = skipped = 0

    def collect(results):
        nonlocal rendered, skipped
        for done, (s, i, n_new, n_old) in enumerate(results, 1):
            rendered += n_new
            skipped += n_old
            if log:
                log(f"[{done}/{len(tasks)}] {scene_name(s, i)}: {n_new} clips rendered, {n_old} already complete")

    if workers == 1:
        collect(map(_render_scene, tasks))
    else:
        # Every scene has its own random stream, so the files do not depend on which process renders what.
        # "spawn" starts clean interpreters: no forked copies of a parent's threads or open files.
        with multiprocessing.get_context("spawn").Pool(min(workers, len(tasks))) as pool:
            collect(pool.imap_unordered(_render_scene, tasks))
    for s in splits:
        manifest["splits"][s] = {**_write_indices(out, s), "frames_per_clip": settings.frames}
    # Nothing about this particular run goes into the manifest, so a run that had nothing to do changes no file.
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return {"manifest": manifest, "clips_rendered": rendered, "clips_skipped": skipped}


def _check_request(scenes, seed, frames, height, width, split, workers, clips_per_scene, fps, supersample,
                   video_format):
    def need(ok, message):
        if not ok:
            raise SyntheticDataError(message)

    need(isinstance(scenes, (int, np.integer)) and scenes >= 1, f"--scenes must be a whole number >= 1; got {scenes!r}")
    need(isinstance(seed, (int, np.integer)) and seed >= 0,
         f"--seed must be a whole number >= 0 (numpy seeds are non-negative); got {seed!r}")
    need(frames >= 2, f"--frames must be >= 2 (training clips need 16); got {frames}")
    need(8 <= height <= 4096 and 8 <= width <= 4096,
         f"--size H W must be between 8 and 4096 pixels; got {height} {width}")
    need(split in (*SPLITS, "both"), f"--split must be one of {(*SPLITS, 'both')}; got {split!r}")
    need(workers >= 1, f"--workers must be >= 1; got {workers}")
    need(clips_per_scene >= 1, f"--clips-per-scene must be >= 1; got {clips_per_scene}")
    need(fps > 0, f"--fps must be positive; got {fps}")
    need(1 <= supersample <= 8, f"--supersample must be between 1 and 8; got {supersample}")
    need(video_format in _VIDEO_FORMATS, f"--format must be one of {_VIDEO_FORMATS}; got {video_format!r}")
    if video_format == "mp4":
        try:
            import av  # noqa: F401
        except ImportError as e:
            raise SyntheticDataError("--format mp4 needs PyAV (`pip install av`); PNG folders (--format png, the "
                                     "default) need nothing extra") from e


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.synthetic",
                                description="Render the synthetic multi-view dataset (procedural rooms, known "
                                            "cameras) in the RealEstate10K layout.")
    p.add_argument("--out", required=True, help="dataset folder (created if missing; an existing one is completed)")
    p.add_argument("--scenes", type=int, required=True, help="scenes per split")
    p.add_argument("--seed", type=int, required=True, help="run seed (>= 0); same seed, same files")
    p.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    p.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"),
                   help="frame height and width in pixels (default 256 256)")
    p.add_argument("--split", default="both", choices=(*SPLITS, "both"), help="which split(s) to write")
    p.add_argument("--workers", type=int, default=1, help="processes rendering scenes in parallel (default 1)")
    p.add_argument("--clips-per-scene", type=int, default=2, help="camera paths per scene (default 2)")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of the pose timestamps (default 10)")
    p.add_argument("--supersample", type=int, default=2,
                   help="anti-aliasing: s x s rays per pixel (default 2; 1 is 4x faster)")
    p.add_argument("--format", dest="video_format", default="png", choices=_VIDEO_FORMATS,
                   help="png: a folder of frames per clip (default); mp4: one H.264 file per clip (needs PyAV)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv=None) -> int:
    """Command line entry: returns the exit status (0 done, 2 bad request)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        report = generate(args.out, args.scenes, args.seed, args.frames, args.size[0], args.size[1], args.split,
                            args.workers, args.clips_per_scene, args.fps, args.supersample, args.video_format,
                            log=None if args.quiet else print)
    except SyntheticDataError as e:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        counts = ", ".join(f"{s}: {c['scenes']} scenes / {c['clips']} clips"
                           for s, c in report["manifest"]["splits"].items())
        print(f"done: {args.out} ({counts}); {report['clips_rendered']} clips rendered now, "
              f"{report['clips_skipped']} were already complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
