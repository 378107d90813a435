"""Structure from motion on video frames with pycolmap (COLMAP SIFT + GLOMAP global mapper): the one home of it,
used by `trajectories.from_video` (camera paths copied from a clip) and by the evaluation (`training.sfm`, spec §10).

Per run: frames are resized (Lanczos) so that their long side is `size` pixels -- SIFT finds next to nothing on
64x64 frames -- and written as PNGs; one pinhole camera is shared by all frames, either with the given intrinsics
held fixed, or with the principal point at the centre and the focal length estimated (GLOMAP calibrates it from
the two-view geometries, then bundle adjustment refines it); SIFT features (by default with affine-shape
estimation and domain-size pooling, as the evaluation needs on soft generated frames); sequential matching with
guided matching (by default every pair of a short clip); two-view verification (RANSAC, by default the
evaluation's 4 px; `from_video` uses a tighter one); the global mapper. The features are extracted once and every
trial repeats the matching and mapping with its own random seed.

Each trial keeps the model that registers the most frames and says, for every frame it lacks, why (too few
features, no verified match, a separate model, or matched but not placed). pycolmap is imported when first needed
(`pip install pycolmap==4.2.1`, the `sfm` extra); nothing else in the pack needs it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cami2v_core.errors import CamI2VError

__all__ = ["SfMError", "Reconstruction", "require_pycolmap", "reconstruct", "to_uint8"]

PYCOLMAP_PIN = "pycolmap==4.2.1"
# A frame with fewer SIFT features than this gives the mapper nothing to hold on to (blank, dark or blurred).
MIN_FEATURES = 64


class SfMError(CamI2VError, RuntimeError):
    """pycolmap is missing or cannot run; the message says what to do."""


@dataclass
class Reconstruction:
    """The largest model of one mapping trial over T frames.

    w2c: frame index -> world-to-camera [4,4] (OpenCV axes; the reconstruction's own world frame and scale).
    intrinsics: the shared camera as normalised (fx, fy, cx, cy) [4], given or estimated.
    depths: frame index -> depths [P] (along the optical axis) of the model's 3D points that frame observes.
    missing: frame index -> why that frame is not in the model (one phrase).
    """

    w2c: dict[int, np.ndarray]
    intrinsics: np.ndarray | None
    depths: dict[int, np.ndarray]
    missing: dict[int, str]
    frames: int
    status: str              # "ok", "no model", "partial", "error: ..."
    seconds: float
    estimated_intrinsics: bool = False
    features: list[int] = field(default_factory=list)  # SIFT features per frame
    verified: list[int] = field(default_factory=list)  # geometrically verified matches per frame, over its pairs

    @property
    def registered(self) -> int:
        return len(self.w2c)


def require_pycolmap(purpose: str = "structure from motion"):
    """The pycolmap module, or an SfMError that says how to install it."""
    # pycolmap's wheel bundles its own zlib: loaded before Pillow's, Pillow's PNG encoder then crashes the process
    # (free(): invalid pointer in deflateEnd). Loading Pillow first keeps each on its own.
    importlib.import_module("PIL.Image")

    try:
        import pycolmap
    except ImportError as e:
        raise SfMError(f"{purpose} needs pycolmap (COLMAP + GLOMAP): pip install {PYCOLMAP_PIN}") from e
    if not hasattr(pycolmap, "global_mapping"):
        raise SfMError(f"pycolmap {getattr(pycolmap, '__version__', '?')} has no global mapper (GLOMAP); "
                       f"pip install {PYCOLMAP_PIN}")
    return pycolmap


@contextlib.contextmanager
def _quiet_stderr(enabled: bool):
    """COLMAP logs through glog to file descriptor 2; silence it (failures are reported in the result)."""
    if not enabled:
        yield
        return
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def to_uint8(frames) -> np.ndarray:
    """Frames [T,H,W,3] as uint8 (float input is taken as 0..1)."""
    a = np.asarray(frames)
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"frames must be [T,H,W,3]; got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(np.round(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return a


def _write_frames(frames: np.ndarray, folder: Path, size: int) -> tuple[int, int]:
    from PIL import Image

    _, h, w, _ = frames.shape
    scale = size / max(h, w)
    out_w, out_h = max(1, round(w * scale)), max(1, round(h * scale))
    folder.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(frames):
        image = Image.fromarray(frame)
        if (out_w, out_h) != (w, h):
            image = image.resize((out_w, out_h), Image.LANCZOS)
        image.save(folder / f"{k:05d}.png")
    return out_h, out_w


def reconstruct(frames, intrinsics=None, trials: int = 1, seed: int = 0, size: int = 256, threads: int = 1,
                overlap: int | None = None, robust_features: bool = True, max_error_px: float = 4.0,
                workdir: str | os.PathLike | None = None, quiet: bool = True,
                progress: Callable[[str], None] | None = None) -> list[Reconstruction]:
    """Reconstruct the cameras of frames [T,H,W,3] (uint8, or float 0..1); one Reconstruction per trial (trial k
    uses random seed seed + k).

    intrinsics: the shared pinhole camera as normalised (fx, fy, cx, cy) [4] (fx, cx by the width, fy, cy by the
    height), held fixed; None estimates the focal length (square pixels, principal point at the centre).
    overlap: match each frame with the next `overlap` frames (None: every pair). robust_features: SIFT with
    affine shapes and domain-size pooling (several times slower; finds more on small or soft frames).
    max_error_px: the two-view RANSAC threshold, in pixels of the resized frames.
    threads -1 uses every core.
    """
    pycolmap = require_pycolmap()
    say = progress or (lambda _msg: None)
    frames = to_uint8(frames)
    n = len(frames)
    names = [f"{k:05d}.png" for k in range(n)]
    root = Path(tempfile.mkdtemp(prefix="cami2v-sfm-", dir=workdir))
    results = []
    try:
        out_h, out_w = _write_frames(frames, root / "images", size)
        reader = pycolmap.ImageReaderOptions()
        if intrinsics is None:
            reader.camera_model = "SIMPLE_PINHOLE"  # COLMAP's focal guess (1.2 x long side), no prior: estimated
        else:
            fx, fy, cx, cy = (float(v) for v in np.asarray(intrinsics, dtype=np.float64).reshape(-1, 4)[0])
            if abs(fx * out_w - fy * out_h) <= 1e-6 * fx * out_w:
                reader.camera_model = "SIMPLE_PINHOLE"
                reader.camera_params = f"{fx * out_w},{cx * out_w},{cy * out_h}"
            else:
                reader.camera_model = "PINHOLE"
                reader.camera_params = f"{fx * out_w},{fy * out_h},{cx * out_w},{cy * out_h}"
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.num_threads = threads
        extraction.sift.estimate_affine_shape = robust_features
        extraction.sift.domain_size_pooling = robust_features
        base_db = root / "features.db"
        say(f"structure from motion: SIFT features of {n} frames at {out_w}x{out_h}")
        start = time.perf_counter()
        with _quiet_stderr(quiet):
            pycolmap.extract_features(base_db, root / "images", image_names=names,
                                      camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                                      extraction_options=extraction, device=pycolmap.Device.cpu)
        extract_seconds = time.perf_counter() - start
        setup = _Setup(pycolmap, base_db, root, names, threads, overlap, quiet, intrinsics is None, (out_w, out_h),
                       float(max_error_px))
        for k in range(trials):
            trial_seed = int(seed) + k
            t0 = time.perf_counter()
            say(f"structure from motion: matching and mapping (trial {k + 1} of {trials}, seed {trial_seed})")
            try:
                rec = _match_and_map(setup, k, trial_seed)
            except Exception as e:  # noqa: BLE001 - a crashed trial is a failed reconstruction, reported as such
                reason = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                rec = Reconstruction({}, None, {}, {i: reason for i in range(n)}, n, reason, 0.0,
                                     intrinsics is None)
            rec.seconds = round(time.perf_counter() - t0 + (extract_seconds if k == 0 else 0.0), 3)
            say(f"structure from motion: {rec.registered} of {n} frames registered ({rec.seconds:.1f} s)")
            results.append(rec)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


@dataclass
class _Setup:
    pycolmap: object
    base_db: Path
    root: Path
    names: list[str]
    threads: int
    overlap: int | None
    quiet: bool
    estimate: bool
    size: tuple[int, int]  # (width, height) of the written frames
    max_error_px: float


def _match_and_map(s: _Setup, trial: int, seed: int) -> Reconstruction:
    pycolmap, n = s.pycolmap, len(s.names)
    db = s.root / f"trial{trial}.db"
    shutil.copyfile(s.base_db, db)
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = s.threads
    matching.guided_matching = True
    matching.max_num_matches = 65536
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.max_error = s.max_error_px
    verification.ransac.random_seed = seed
    pairing = pycolmap.SequentialPairingOptions()
    pairing.overlap = max(pairing.overlap, n) if s.overlap is None else max(1, int(s.overlap))
    options = pycolmap.GlobalPipelineOptions()
    options.num_threads = s.threads
    options.random_seed = seed
    options.mapper.random_seed = seed
    ba = options.mapper.bundle_adjustment
    ba.refine_focal_length = s.estimate
    ba.refine_principal_point = False
    ba.refine_extra_params = False
    out = s.root / f"trial{trial}"
    out.mkdir()
    with _quiet_stderr(s.quiet):
        pycolmap.match_sequential(db, matching_options=matching, pairing_options=pairing,
                                  verification_options=verification, device=pycolmap.Device.cpu)
        models = pycolmap.global_mapping(db, s.root / "images", out, options)
    features, verified = _match_stats(pycolmap, db, s.names)
    index = {name: k for k, name in enumerate(s.names)}
    if not models:
        missing = {k: _why_missing(k, features, verified, None) for k in range(n)}
        return Reconstruction({}, None, {}, missing, n, "no model", 0.0, s.estimate, features, verified)
    ranked = sorted(models.values(), key=lambda r: r.num_reg_images(), reverse=True)
    best = ranked[0]
    other_model = {}
    for r in ranked[1:]:
        members = [index[im.name] for im in r.images.values() if im.has_pose and im.name in index]
        for k in members:
            other_model[k] = len(members)
    w2c, depths = {}, {}
    xyz = {pid: p.xyz for pid, p in best.points3D.items()}
    for image in best.images.values():
        if not image.has_pose or image.name not in index:
            continue
        k = index[image.name]
        w2c[k] = np.vstack([image.cam_from_world().matrix(), [0.0, 0.0, 0.0, 1.0]])
        ids = [p.point3D_id for p in image.points2D if p.has_point3D()]
        if ids:
            pts = np.array([xyz[i] for i in ids if i in xyz], dtype=np.float64).reshape(-1, 3)
            depths[k] = pts @ w2c[k][2, :3] + w2c[k][2, 3]
        else:
            depths[k] = np.zeros(0)
    camera = next(iter(best.cameras.values()))
    w, h = s.size
    if camera.model_name == "PINHOLE":
        fx, fy, cx, cy = camera.params
    else:
        fx, cx, cy = camera.params[:3]
        fy = fx
    intrinsics = np.array([fx / w, fy / h, cx / w, cy / h], dtype=np.float64)
    missing = {k: _why_missing(k, features, verified, other_model.get(k)) for k in range(n) if k not in w2c}
    status = "ok" if len(w2c) == n else "partial"
    return Reconstruction(w2c, intrinsics, depths, missing, n, status, 0.0, s.estimate, features, verified)


def _match_stats(pycolmap, db_path: Path, names) -> tuple[list[int], list[int]]:
    """SIFT features per frame and geometrically verified matches per frame (summed over its pairs)."""
    features, verified = [0] * len(names), [0] * len(names)
    try:
        db = pycolmap.Database.open(db_path)
    except Exception:  # noqa: BLE001 - the statistics only explain failures; without them the reasons are vaguer
        return features, verified
    try:
        ids = {}
        for image in db.read_all_images():
            if image.name in names:
                ids[image.image_id] = names.index(image.name)
        for image_id, k in ids.items():
            features[k] = int(db.num_keypoints_for_image(image_id))
        pair_ids, geometries = db.read_two_view_geometries()
        for pair_id, geometry in zip(pair_ids, geometries):
            a, b = pycolmap.pair_id_to_image_pair(pair_id)
            inliers = len(geometry.inlier_matches)
            for image_id in (a, b):
                if image_id in ids:
                    verified[ids[image_id]] += inliers
    finally:
        db.close()
    return features, verified


def _why_missing(k: int, features, verified, other_model_size: int | None) -> str:
    if features[k] < MIN_FEATURES:
        return f"only {features[k]} image features (a blank, dark or blurred frame?)"
    if verified[k] == 0:
        return f"{features[k]} image features but none matched another frame consistently"
    if other_model_size is not None:
        return (f"reconstructed in a separate group of {other_model_size} frames that does not connect to the "
                f"main one (a cut, or too little overlap)")
    return (f"{verified[k]} verified matches with other frames, but the mapper could not place it (too little "
            f"parallax or too few shared points)")
