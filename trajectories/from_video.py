"""Camera paths copied from a video: structure from motion on its frames, in the model's conventions.

    python -m trajectories from-video clip.mp4 --out path.json [--frames 16] [--fov 60] [--smooth 1]
    result = path_from_video("clip.mp4")            # or path_from_frames(frames [T,H,W,3]) for an IMAGE batch
    result.path                                      # Trajectory; result.report() says what was done

Steps:
1. Read the clip: a video file (PyAV, imported when needed) or a folder of pictures in name order (numbers
   compared as numbers, so 2 comes before 10). `sfm_frames` frames evenly spaced over the whole clip are kept,
   shrunk so that their long side is at most `size` pixels.
2. Structure from motion (`trajectories.sfm`: COLMAP SIFT + GLOMAP's global mapper). Intrinsics are given
   (`fov_deg` across the width, or normalised `intrinsics`) and held fixed, or estimated (square pixels, principal
   point at the centre, focal length calibrated by the mapper). A camera that only translates leaves the focal
   length unmeasurable (scaling it and the scene's depth together gives the same pictures), so when the recovered
   camera turns less than `MIN_TURN_DEG`, or the estimate is outside `PLAUSIBLE_FOV_DEG`, or nothing reconstructs
   with it free, the reconstruction is redone with an assumed `ASSUMED_FOV_DEG` field of view, and the report
   says so.
3. Frames that do not register are reported with the reason. Inside the span of registered frames, gaps of at
   most `MAX_GAP` of the sampled frames are filled by interpolation; unregistered frames at the start or end are
   cut (and said so); a larger gap, or a span under `MIN_SPAN` of the clip, is refused with a VideoPathError
   rather than returned as if whole. A clip that gives no reconstruction at all is one VideoPathError sentence.
4. The path is made relative to its first frame (identity; OpenCV axes, world-to-camera, as in
   `trajectory.py`) and its scale normalised. CamI2V's model applies no scale normalisation of its own (spec
   §6.3: `normalize_T0` is false), so it expects the scale of its training data, RealEstate10K, whose poses were
   scale-normalised by a near depth of the scene seen in the clip. "depth" (the default) does the same with the
   reconstructed points seen from the first frame: their `NEAR_PERCENTILE`-th percentile depth becomes 1.
   "length" makes the largest distance from the first camera 1 instead (the evaluation's normalisation, and the
   size of the demo's presets).
5. Optional smoothing (a Gaussian over time, `smooth` in output frames; a constant-speed move is unchanged and
   both end poses are kept), then resampling to the model's frames (`combinators.fit_frames`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import combinators, geometry
from .errors import TrajectoryError
from .trajectory import Trajectory

__all__ = ["VideoPathError", "Clip", "VideoPath", "read_clip", "path_from_frames", "path_from_video", "smooth",
           "fov_intrinsics", "NORMALIZATIONS"]

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
NORMALIZATIONS = ("depth", "length")
DEFAULT_SFM_FRAMES = 32
DEFAULT_SIZE = 512
MIN_SFM_FRAMES = 3
# A gap longer than this fraction of the sampled frames (at least one frame) is not bridged by interpolation.
MAX_GAP = 0.1
# The registered frames must span at least this fraction of the sampled frames.
MIN_SPAN = 0.5
NEAR_PERCENTILE = 5.0
MIN_TURN_DEG = 5.0
PLAUSIBLE_FOV_DEG = (20.0, 120.0)
ASSUMED_FOV_DEG = 60.0  # a common horizontal field of view of phone and camera video
_MIN_DEPTH_POINTS = 8
# Two-view RANSAC threshold per 256 pixels of the long side. COLMAP's 4 px (made for full-size photos) admits
# loose matches on 256-512 px frames, and a forward dolly then drifts in rotation by about half a degree per frame;
# 1 px per 256 loses frames and accuracy on other clips (tried on synthetic rooms kept apart from the tests').
RANSAC_PX_PER_256 = 1.5
LONG_CLIP = 100  # frames: reading such a video reports its progress every 10%


class VideoPathError(TrajectoryError):
    """A clip whose camera path cannot be recovered (or read); the message says why and what to try."""


@dataclass(frozen=True)
class Clip:
    """Frames uint8 [T,H,W,3] sampled from a clip, their frame numbers [T] in it, and its frame count."""

    frames: np.ndarray
    indices: np.ndarray
    total: int
    name: str


@dataclass
class VideoPath:
    """A path recovered from a clip, and what was done to get it.

    path: the Trajectory (relative to its first frame, normalised scale, the model's frame count).
    sampled: clip frame numbers given to structure from motion; registered: those it placed; missing: clip frame
    number -> why it was not placed. interpolated: clip frame numbers filled in between registered ones.
    intrinsics: normalised (fx, fy, cx, cy) [4]; intrinsics_source: "estimated", "given" or "assumed".
    notes: one line per decision.
    """

    path: Trajectory
    sampled: list[int]
    registered: list[int]
    missing: dict[int, str]
    interpolated: list[int]
    intrinsics: np.ndarray
    intrinsics_source: str
    scale: float  # reconstruction units per output unit
    notes: list[str] = field(default_factory=list)

    def report(self) -> list[str]:
        """Lines for a person: frames registered, frames missing with the reason, intrinsics, decisions."""
        fx, fy, _, _ = self.intrinsics
        fov = math.degrees(2 * math.atan(0.5 / fx))
        lines = [f"{len(self.registered)} of {len(self.sampled)} sampled frames registered; "
                 f"{self.intrinsics_source} field of view {fov:.1f} deg across the "
                 f"width (fx {fx:.4f}, fy {fy:.4f} normalised)"]
        lines += [f"frame {k} not registered: {why}" for k, why in sorted(self.missing.items())]
        return lines + list(self.notes)


# ----------------------------------------------------------------------------------------------------------------
# Reading


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _even(total: int, count: int) -> np.ndarray:
    """`count` frame numbers evenly spread over 0..total-1 (all of them when total <= count)."""
    if total <= count:
        return np.arange(total)
    return np.unique(np.round(np.linspace(0, total - 1, count)).astype(int))


def _shrink(image, size: int | None):
    """A Pillow image as RGB uint8 [H,W,3], its long side at most `size` (Lanczos)."""
    from PIL import Image

    image = image.convert("RGB")
    if size and max(image.size) > size:
        scale = size / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def read_clip(source, sfm_frames: int = DEFAULT_SFM_FRAMES, size: int | None = DEFAULT_SIZE,
              progress: Callable[[str], None] | None = None) -> Clip:
    """`sfm_frames` frames evenly spaced over a video file or a folder of pictures (name order), long side at most
    `size` pixels (None: as stored)."""
    say = progress or (lambda _msg: None)
    path = Path(source)
    if not path.exists():
        raise VideoPathError(f"{str(path)!r} does not exist; give a video file or a folder of frames")
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
        if not files:
            raise VideoPathError(f"the folder {str(path)!r} holds no pictures ({', '.join(IMAGE_SUFFIXES)})")
        indices = _even(len(files), sfm_frames)
        frames = []
        from PIL import Image
        for i in indices:
            try:
                with Image.open(files[i]) as image:
                    frames.append(_shrink(image, size))
            except OSError as e:
                raise VideoPathError(f"cannot read the frame {str(files[i])!r}: {e}") from e
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            raise VideoPathError(f"the frames in {str(path)!r} differ in size ({', '.join(sorted(map(str, shapes)))}); "
                                 f"all frames of a clip must have the same size")
        return Clip(np.stack(frames), indices, len(files), path.name)
    return _read_video(path, sfm_frames, size, say)


def _read_video(path: Path, sfm_frames: int, size: int | None, say) -> Clip:
    try:
        import av
    except ImportError as e:
        raise VideoPathError(f"reading {path.name} needs PyAV: pip install av (or give a folder of frames)") from e
    errors = (getattr(av, "FFmpegError", OSError), OSError, ValueError)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoPathError(f"{str(path)!r} has no video stream")
            total = int(container.streams.video[0].frames or 0)
        if total <= 0:  # the container does not say: count the packets (no decoding)
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                total = sum(1 for packet in container.demux(stream) if packet.size)
        wanted = _even(total, sfm_frames)
        keep = {int(i): k for k, i in enumerate(wanted)}
        frames: list[np.ndarray | None] = [None] * len(wanted)
        step = max(1, total // 10)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for n, frame in enumerate(container.decode(stream)):
                if n in keep:
                    frames[keep[n]] = _shrink(frame.to_image(), size)
                if total >= LONG_CLIP and n % step == 0 and n:
                    say(f"reading {path.name}: frame {n} of {total}")
                if n >= wanted[-1]:
                    break
    except errors as e:
        raise VideoPathError(f"cannot decode the video {str(path)!r}: {e}; convert it to .mp4 (H.264) or export "
                             f"its frames as pictures") from e
    got = [f for f in frames if f is not None]
    if len(got) < len(frames):  # the container promised more frames than it holds: keep what decoded
        wanted = np.array([i for i, f in zip(wanted, frames) if f is not None], dtype=int)
    if not got:
        raise VideoPathError(f"no frame of {str(path)!r} could be decoded")
    return Clip(np.stack(got), wanted, total, path.name)


# ----------------------------------------------------------------------------------------------------------------
# Intrinsics, smoothing


def fov_intrinsics(fov_deg: float, aspect: float) -> np.ndarray:
    """Normalised (fx, fy, cx, cy) [4] of a horizontal field of view in degrees (square pixels, centred)."""
    if not 0.0 < float(fov_deg) < 180.0:
        raise VideoPathError(f"the field of view must be between 0 and 180 degrees across the width, found {fov_deg}")
    fx = 0.5 / math.tan(math.radians(float(fov_deg)) / 2.0)
    return np.array([fx, fx * aspect, 0.5, 0.5])


def _gaussian(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter along axis 0 of values [T,D]; the ends are padded by point reflection (2 x_0 - x_k), so a
    constant-speed sequence is unchanged and both end values are kept exactly."""
    radius = int(math.ceil(3.0 * sigma))
    if radius < 1 or len(values) < 3:
        return values.copy()
    radius = min(radius, len(values) - 1)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    head = 2.0 * values[:1] - values[radius:0:-1]
    tail = 2.0 * values[-1:] - values[-2:-radius - 2:-1]
    padded = np.concatenate([head, values, tail])
    out = np.empty_like(values)
    for k in range(len(values)):
        out[k] = kernel @ padded[k:k + 2 * radius + 1]
    return out


def smooth(path: Trajectory, sigma: float) -> Trajectory:
    """Gaussian smoothing over time (sigma in frames) of the camera centres and orientations of a path; frame 0
    and the last frame are kept, a constant-speed straight move is unchanged; the result is made relative to
    frame 0 again."""
    if sigma <= 0 or len(path) < 3:
        return path
    c2w = path.c2w
    q = geometry.matrix_to_quaternion(geometry.nearest_rotation(c2w[:, :3, :3]))
    for k in range(1, len(q)):  # q and -q are one rotation: keep neighbours on the same side
        if q[k] @ q[k - 1] < 0:
            q[k] = -q[k]
    q = _gaussian(q, sigma)
    centres = _gaussian(c2w[:, :3, 3], sigma)
    w2c = geometry.invert_rigid(geometry.rigid(geometry.quaternion_to_matrix(q), centres))
    return Trajectory(w2c, path.intrinsics, path.aspect).relative(0)


# ----------------------------------------------------------------------------------------------------------------
# The path


def _runs(indices) -> list[tuple[int, int]]:
    """Consecutive runs of sorted integers as (first, last) pairs."""
    runs = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def _frames_text(numbers) -> str:
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in _runs(sorted(numbers))]
    return ", ".join(parts[:8]) + (", ..." if len(parts) > 8 else "")


def _failure(rec) -> str:
    """Why nothing could be reconstructed, as the middle of one sentence."""
    from .sfm import MIN_FEATURES

    if rec.status.startswith("error"):
        return f"the reconstruction failed ({rec.status[7:]})"
    if rec.features and max(rec.features) < MIN_FEATURES:
        return (f"no frame has enough image features (at most {max(rec.features)}; a blank, uniform or very blurred "
                f"clip?)")
    if rec.verified and max(rec.verified) == 0:
        return "no two frames could be matched consistently (a cut, heavy motion blur, or a moving scene?)"
    if rec.registered < 2:
        return "the frames matched but no camera motion could be solved from them (too little parallax?)"
    return f"only {rec.registered} frames registered"


def path_from_frames(frames, frames_out: int = 16, intrinsics=None, fov_deg: float | None = None,
                     smooth_frames: float = 0.0, normalize: str = "depth", sfm_frames: int = DEFAULT_SFM_FRAMES,
                     size: int = DEFAULT_SIZE, seed: int = 0, threads: int = -1, robust_features: bool = False,
                     indices=None, name: str = "the clip", progress: Callable[[str], None] | None = None,
                     **sfm_options) -> VideoPath:
    """The camera path of frames [T,H,W,3] (uint8, or float 0..1: an IMAGE batch) -> VideoPath.

    frames_out: poses of the output path (the model's frames). intrinsics: normalised (fx, fy, cx, cy) [4], or
    fov_deg across the width, or neither to estimate them. smooth_frames: Gaussian sigma in output frames (0: none).
    normalize: "depth" or "length" (module docstring). sfm_frames: at most this many frames, evenly spaced, go to
    structure from motion. robust_features: slower SIFT for small or soft frames (`trajectories.sfm`).
    indices: the frames' numbers in the clip (for messages; default 0..T-1). progress: called with one line per
    stage. sfm_options go to `trajectories.sfm.reconstruct` (e.g. trials, overlap).
    """
    from . import sfm

    if normalize not in NORMALIZATIONS:
        raise VideoPathError(f"unknown scale normalisation {normalize!r}; choose one of {', '.join(NORMALIZATIONS)}")
    if intrinsics is not None and fov_deg is not None:
        raise VideoPathError("give the camera as a field of view or as intrinsics, not both")
    frames = sfm.to_uint8(frames)
    indices = np.arange(len(frames)) if indices is None else np.asarray(indices, dtype=int)
    if len(indices) != len(frames):
        raise VideoPathError(f"{len(indices)} frame numbers for {len(frames)} frames")
    pick = _even(len(frames), max(int(sfm_frames), MIN_SFM_FRAMES))
    frames, indices = frames[pick], indices[pick]
    n = len(frames)
    if n < MIN_SFM_FRAMES:
        raise VideoPathError(f"{name} has {n} frame{'s' if n != 1 else ''}; copying a camera move needs at least "
                             f"{MIN_SFM_FRAMES}")
    h, w = frames.shape[1:3]
    aspect = w / h
    if fov_deg is not None:
        intrinsics = fov_intrinsics(fov_deg, aspect)
    if intrinsics is not None:
        intrinsics = np.asarray(intrinsics, dtype=np.float64).reshape(-1)
        if intrinsics.shape != (4,) or not np.isfinite(intrinsics).all() or (intrinsics[:2] <= 0).any():
            raise VideoPathError(f"intrinsics must be 4 numbers fx, fy, cx, cy (normalised by the width / height, "
                                 f"focal lengths > 0), found {intrinsics.tolist()}")
    options = {"seed": seed, "size": size, "threads": threads, "progress": progress,
               "robust_features": robust_features, "max_error_px": max(1.0, RANSAC_PX_PER_256 * size / 256)}
    options.update(sfm_options)
    rec = max(sfm.reconstruct(frames, intrinsics, **options), key=lambda r: r.registered)
    source, notes = ("given" if intrinsics is not None else "estimated"), []
    problem = _focal_problem(rec) if intrinsics is None else None
    if problem:
        notes.append(f"focal length: {problem}; assumed a {ASSUMED_FOV_DEG:g} deg field of view across the width "
                     f"(give the real one for the right scale and shape)")
        if progress:
            progress(f"{notes[-1]}: reconstructing again")
        intrinsics, source = fov_intrinsics(ASSUMED_FOV_DEG, aspect), "assumed"
        rec = max(sfm.reconstruct(frames, intrinsics, **options), key=lambda r: r.registered)
    number = {k: int(indices[k]) for k in range(n)}
    missing = {number[k]: why for k, why in rec.missing.items()}
    if rec.registered < 2:
        raise VideoPathError(f"could not reconstruct the camera of {name}: {_failure(rec)}; structure from "
                             f"motion needs a still, textured scene filmed by a moving camera (turning in place "
                             f"alone gives no depth) - try a clip with more texture or movement, or more frames")
    registered = sorted(rec.w2c)
    first, last = registered[0], registered[-1]
    span = last - first + 1
    gaps = [(a, b) for a, b in _runs([k for k in range(first, last + 1) if k not in rec.w2c])]
    allowed = max(1, int(MAX_GAP * n))
    big = [(a, b) for a, b in gaps if b - a + 1 > allowed]
    reason = "; ".join(f"frame {number[k]}: {rec.missing[k]}" for k in sorted(rec.missing)[:3])
    if span < MIN_SPAN * n:
        raise VideoPathError(f"only frames {number[first]}-{number[last]} of {name} could be reconstructed "
                             f"({len(registered)} of {n} sampled frames; {reason}), too little of the clip for a "
                             f"path; trim the clip to that part or try one with more texture")
    if big:
        a, b = big[0]
        raise VideoPathError(f"frames {number[a]}-{number[b]} of {name} did not register ({rec.missing[a]}): a gap "
                             f"of {b - a + 1} of the {n} sampled frames is too long to fill in (at most {allowed}); "
                             f"trim the clip around it or give more frames")
    if first > 0 or last < n - 1:
        notes.append(f"the path covers frames {number[first]}-{number[last]} of {name}: the frames before and after "
                     f"did not register")
    # The dense path on the sampled frames' grid, relative to its first frame.
    ref_c2w = np.linalg.inv(rec.w2c[first])
    known = np.stack([rec.w2c[k] @ ref_c2w for k in registered])
    intr = rec.intrinsics if intrinsics is None else intrinsics
    dense = Trajectory(known, intr, aspect)
    interpolated = [k for a, b in gaps for k in range(a, b + 1)]
    if interpolated:
        positions = np.interp(np.arange(first, last + 1), registered, np.arange(len(registered)))
        dense = combinators.interpolate(dense, positions)
        notes.append(f"frames {_frames_text(number[k] for k in interpolated)} interpolated between their "
                     f"registered neighbours")
    scale, note = _scale(dense, rec.depths.get(first), normalize)
    notes.append(note)
    dense = dense.scaled(1.0 / scale)
    if smooth_frames > 0:
        dense = smooth(dense, smooth_frames * (len(dense) - 1) / max(1, frames_out - 1))
        notes.append(f"smoothed over {smooth_frames:g} output frames (Gaussian sigma)")
    path, fit_note = combinators.fit_frames(dense, frames_out)
    w2c = path.w2c.copy()
    w2c[0] = np.eye(4)  # exactly the identity, not w2c_0 · c2w_0 to round-off
    path = Trajectory(w2c, path.intrinsics, path.aspect)
    if fit_note:
        notes.append(f"resampled the {len(dense)} reconstructed poses to {frames_out} evenly spaced poses")
    return VideoPath(path, [int(i) for i in indices], [number[k] for k in registered], missing,
                     [number[k] for k in interpolated], np.asarray(intr, dtype=np.float64), source, scale, notes)


def _focal_problem(rec) -> str | None:
    """Why an estimated focal length cannot be trusted, or None."""
    if rec.registered < 2 or rec.intrinsics is None:
        return "nothing could be reconstructed with it unknown"
    fov = math.degrees(2 * math.atan(0.5 / rec.intrinsics[0]))
    if not PLAUSIBLE_FOV_DEG[0] <= fov <= PLAUSIBLE_FOV_DEG[1]:
        return f"the estimate ({fov:.0f} deg across the width) is implausible"
    w2c = np.stack([rec.w2c[k] for k in sorted(rec.w2c)])
    rel = w2c[:, :3, :3] @ w2c[0, :3, :3].T
    turn = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1))).max()
    if turn < MIN_TURN_DEG:
        return (f"the camera turns only {turn:.1f} deg, and a camera that mostly slides cannot measure it (focal "
                f"length and scene depth trade off)")
    return None


def _scale(dense: Trajectory, depths, normalize: str) -> tuple[float, str]:
    """Reconstruction units per output unit, and a note saying how it was chosen."""
    travel = float(np.linalg.norm(dense.positions, axis=-1).max())
    if normalize == "depth":
        depths = np.asarray(depths if depths is not None else [], dtype=np.float64)
        depths = depths[depths > 0]
        if len(depths) >= _MIN_DEPTH_POINTS:
            near = float(np.percentile(depths, NEAR_PERCENTILE))
            return near, (f"scale: the near depth of the first frame's scene ({NEAR_PERCENTILE:g}th percentile of "
                          f"{len(depths)} points) is 1; the camera travels up to {travel / near:.3g} from its start")
        if travel <= 0:
            return 1.0, "scale: the camera does not move"
        return travel, (f"scale: too few scene points in the first frame ({len(depths)}) for the near depth, so "
                        f"the largest distance from the first camera is 1 instead")
    if travel <= 0:
        return 1.0, "scale: the camera does not move"
    return travel, "scale: the largest distance from the first camera is 1"


def path_from_video(source, frames_out: int = 16, sfm_frames: int = DEFAULT_SFM_FRAMES, size: int = DEFAULT_SIZE,
                    progress: Callable[[str], None] | None = None, **options) -> VideoPath:
    """The camera path of a video file or a folder of frames -> VideoPath (options as `path_from_frames`)."""
    clip = read_clip(source, sfm_frames, size, progress)
    return path_from_frames(clip.frames, frames_out, sfm_frames=sfm_frames, size=size, indices=clip.indices,
                            name=clip.name, progress=progress, **options)
