"""Camera recovery from video frames with pycolmap (COLMAP SIFT + GLOMAP global mapper), as CamI2V's evaluation
does it (spec §10), for `training.evaluate`.

Per video: frames are upscaled (Lanczos) so that their long side is `size` pixels -- SIFT finds next to nothing
on 64x64 frames -- and written as PNGs; one SIMPLE_PINHOLE camera with the known focal length and principal point
is shared by all frames; SIFT with affine-shape estimation and domain-size pooling; sequential matching with
guided matching (every pair of a short clip is within the default overlap); two-view verification (RANSAC, 4 px);
the global mapper with the intrinsics held fixed. The features are extracted once and every trial repeats the
matching and mapping with its own random seed.

A reconstruction counts only if one model registers every frame; otherwise `Recovery.c2w` is None and
`Recovery.status` says what went wrong (nothing registered, k of T frames, an exception). pycolmap is imported
when first needed (`pip install pycolmap`); the ComfyUI node pack never needs it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cami2v_core.errors import CamI2VError

__all__ = ["SfMError", "Recovery", "require_pycolmap", "recover_cameras"]


class SfMError(CamI2VError, RuntimeError):
    """pycolmap is missing or cannot run; the message says what to do."""


@dataclass
class Recovery:
    """One reconstruction trial: c2w [T,4,4] (OpenCV axes, arbitrary world frame and scale) or None."""

    c2w: np.ndarray | None
    registered: int
    frames: int
    status: str              # "ok", "no model", "partial", "error: ..."
    seconds: float

    @property
    def ok(self) -> bool:
        return self.c2w is not None


def require_pycolmap():
    """The pycolmap module, or an SfMError that says how to install it."""
    try:
        import pycolmap
    except ImportError as e:
        raise SfMError("camera metrics need pycolmap (COLMAP + GLOMAP): pip install pycolmap==4.2.1 (or pip install "
                       "-r requirements-dev.txt), or run without the camera metrics") from e
    if not hasattr(pycolmap, "global_mapping"):
        raise SfMError(f"pycolmap {getattr(pycolmap, '__version__', '?')} has no global mapper (GLOMAP); "
                       f"pip install pycolmap==4.2.1")
    return pycolmap


@contextlib.contextmanager
def _quiet_stderr(enabled: bool):
    """COLMAP logs through glog to file descriptor 2; silence it (failures are reported in Recovery.status)."""
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


def _write_frames(frames: np.ndarray, folder: Path, size: int) -> tuple[int, int]:
    from PIL import Image

    t, h, w, _ = frames.shape
    scale = size / max(h, w)
    out_w, out_h = max(1, round(w * scale)), max(1, round(h * scale))
    folder.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(frames):
        image = Image.fromarray(frame)
        if (out_w, out_h) != (w, h):
            image = image.resize((out_w, out_h), Image.LANCZOS)
        image.save(folder / f"{k:03d}.png")
    return out_h, out_w


def _to_uint8(frames) -> np.ndarray:
    a = np.asarray(frames)
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"frames must be [T,H,W,3]; got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(np.round(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return a


def recover_cameras(frames, intrinsics, trials: int = 1, seed: int = 0, size: int = 256, threads: int = 1,
                    workdir: str | os.PathLike | None = None, quiet: bool = True) -> list[Recovery]:
    """Reconstruct the cameras of frames [T,H,W,3] (uint8, or float 0..1) whose shared pinhole intrinsics are
    normalised (fx, fy, cx, cy) [4] (fx, cx by the width, fy, cy by the height; square pixels assumed, so fy is
    not used). Returns one Recovery per trial (trial k uses random seed seed + k)."""
    pycolmap = require_pycolmap()
    frames = _to_uint8(frames)
    fx, _, cx, cy = (float(v) for v in np.asarray(intrinsics, dtype=np.float64).reshape(-1, 4)[0])
    n = len(frames)
    names = [f"{k:03d}.png" for k in range(n)]
    root = Path(tempfile.mkdtemp(prefix="cami2v-sfm-", dir=workdir))
    results = []
    try:
        out_h, out_w = _write_frames(frames, root / "images", size)
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = "SIMPLE_PINHOLE"
        reader.camera_params = f"{fx * out_w},{cx * out_w},{cy * out_h}"
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.num_threads = threads
        extraction.sift.estimate_affine_shape = True
        extraction.sift.domain_size_pooling = True
        base_db = root / "features.db"
        start = time.perf_counter()
        with _quiet_stderr(quiet):
            pycolmap.extract_features(base_db, root / "images", image_names=names,
                                      camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                                      extraction_options=extraction, device=pycolmap.Device.cpu)
        extract_seconds = time.perf_counter() - start
        for k in range(trials):
            trial_seed = int(seed) + k
            t0 = time.perf_counter()
            try:
                c2w, registered, status = _match_and_map(pycolmap, base_db, root, k, names, trial_seed, threads,
                                                         quiet)
            except Exception as e:  # noqa: BLE001 - a crashed trial is a failed reconstruction, reported as such
                c2w, registered, status = None, 0, f"error: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            seconds = time.perf_counter() - t0 + (extract_seconds if k == 0 else 0.0)
            results.append(Recovery(c2w, registered, n, status, round(seconds, 3)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


def _match_and_map(pycolmap, base_db: Path, root: Path, trial: int, names, seed: int, threads: int, quiet: bool):
    db = root / f"trial{trial}.db"
    shutil.copyfile(base_db, db)
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = threads
    matching.guided_matching = True
    matching.max_num_matches = 65536
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.max_error = 4.0
    verification.ransac.random_seed = seed
    pairing = pycolmap.SequentialPairingOptions()
    pairing.overlap = max(pairing.overlap, len(names))
    options = pycolmap.GlobalPipelineOptions()
    options.num_threads = threads
    options.random_seed = seed
    options.mapper.random_seed = seed
    ba = options.mapper.bundle_adjustment
    ba.refine_focal_length = False
    ba.refine_principal_point = False
    ba.refine_extra_params = False
    out = root / f"trial{trial}"
    out.mkdir()
    with _quiet_stderr(quiet):
        pycolmap.match_sequential(db, matching_options=matching, pairing_options=pairing,
                                  verification_options=verification, device=pycolmap.Device.cpu)
        models = pycolmap.global_mapping(db, root / "images", out, options)
    if not models:
        return None, 0, "no model"
    best = max(models.values(), key=lambda r: r.num_reg_images())
    w2c = {}
    for image in best.images.values():
        if image.has_pose:
            w2c[image.name] = np.vstack([image.cam_from_world().matrix(), [0.0, 0.0, 0.0, 1.0]])
    registered = sum(name in w2c for name in names)
    if registered < len(names):
        return None, registered, "partial"
    return np.linalg.inv(np.stack([w2c[name] for name in names])), registered, "ok"
