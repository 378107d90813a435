"""Training data: RealEstate10K-layout clips (real or synthetic) sampled as the original trainer does (spec §8, §9).

Layout (written by `training.preprocess` for RealEstate10K and by `training.synthetic`):

    <root>/valid_metadata/<split>/<clip>.txt     URL line, "<video>/<clip>" path, caption, one pose line per frame
    <root>/<split>_valid_list.txt                clip ids (optional; otherwise every metadata file is used)
    <root>/video_clips/<split>/<video>/<clip>.mp4       frame k <-> pose line k (needs PyAV), or
    <root>/video_clips/<split>/<video>/<clip>/00000.png  a folder of frames

A sample is `video_length` frames at an integer stride drawn uniformly from `frame_stride` (the clip's
frames // video_length when the clip is too short), from a random start, resized to cover `resolution` and
centre-cropped, in [-1, 1]; with the w2c poses and pixel intrinsics of the crop (spec §6.1, §8).

Randomness comes only from the key: `dataset[(index, seed)]` gives the same sample every time, in any worker or
process, which is what makes a resumed run see the same data as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cami2v_core.camera import normalized_to_pixel_intrinsics
from cami2v_core.errors import CamI2VError
from cami2v_core.video_io import MediaError, load_rgb
from trajectories import TrajectoryError
from trajectories.formats import realestate10k_rows

log = logging.getLogger("training.data")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class ClipError(CamI2VError, RuntimeError):
    """A clip that cannot be read (missing or broken video, bad pose lines); the dataset skips it."""


@dataclass
class ClipMeta:
    """One clip's metadata file: id, "<video>/<clip>" path, caption, poses."""
    clip_id: str
    rel_path: str
    caption: str
    timestamps_us: np.ndarray  # [N] int64
    intrinsics: np.ndarray     # [N,4] normalised fx, fy, cx, cy
    w2c: np.ndarray            # [N,4,4] float64


def parse_pose_lines(lines: list[str], source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RealEstate10K pose lines (spec §6.4) -> (timestamps_us [N], intrinsics [N,4], w2c [N,4,4])."""
    try:
        a = realestate10k_rows("\n".join(lines))
    except TrajectoryError as e:
        raise ClipError(f"{source}: {e}") from e
    w2c = np.tile(np.eye(4), (len(a), 1, 1))
    w2c[:, :3, :4] = a[:, 7:].reshape(-1, 3, 4)
    return a[:, 0].astype(np.int64), a[:, 1:5], w2c


def read_metadata(path: Path) -> ClipMeta:
    """Parse `valid_metadata/<split>/<clip>.txt` (spec §9 step 5)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ClipError(f"{path}: cannot read metadata: {e}") from e
    if len(lines) < 4:
        raise ClipError(f"{path}: expected a URL line, a '<video>/<clip>' line, a caption and pose lines; "
                        f"found {len(lines)} lines")
    ts, intr, w2c = parse_pose_lines(lines[3:], str(path))
    return ClipMeta(path.stem, lines[1].strip(), lines[2].strip(), ts, intr, w2c)


def resize_cover_crop(frames: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Resize uint8/float frames [T,3,h0,w0] to cover (height, width), centre-crop; -> (frames, resized (H, W))."""
    h0, w0 = frames.shape[-2:]
    # The same cover rule as the demo's preprocessing (spec §6.1): scale by H/h0 if w0/h0 > W/H else by W/w0.
    scale = height / h0 if w0 / h0 > width / height else width / w0
    rh, rw = max(height, int(h0 * scale)), max(width, int(w0 * scale))
    x = frames.float()
    if (rh, rw) != (h0, w0):
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (rh - height) // 2, (rw - width) // 2
    return x[..., top:top + height, left:left + width], (rh, rw)


def pixel_intrinsics(intrinsics: np.ndarray, resized_hw: tuple[int, int], crop_hw: tuple[int, int]) -> torch.Tensor:
    """Normalised fx, fy, cx, cy [T,4] -> K [T,3,3] in crop pixels (spec §6.1, training rule; the demo's too)."""
    (rh, rw), (h, w) = resized_hw, crop_hw
    return normalized_to_pixel_intrinsics(torch.as_tensor(np.asarray(intrinsics)), h, w, rh, rw).float()


def choose_frames(n_frames: int, video_length: int, stride_range: tuple[int, int],
                  rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Frame indices and stride of one sample: stride ~ U{lo..hi}, random start (spec §8)."""
    if n_frames < video_length:
        raise ClipError(f"clip has {n_frames} frames, fewer than video_length {video_length}")
    lo, hi = stride_range
    stride = int(rng.integers(lo, hi + 1))
    if (video_length - 1) * stride + 1 > n_frames:
        stride = max(1, n_frames // video_length)  # the original's fallback for short clips
    start = int(rng.integers(0, n_frames - (video_length - 1) * stride))
    return start + stride * np.arange(video_length), stride


def read_frames(clip_path: Path, indices: np.ndarray) -> tuple[torch.Tensor, float | None]:
    """Frames [T,3,H,W] uint8 at `indices` of a frame folder or video file, and its fps (None for folders)."""
    if clip_path.is_dir():
        files = sorted(p for p in clip_path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) <= int(indices.max()):
            raise ClipError(f"{clip_path}: {len(files)} frames, need index {int(indices.max())}")
        out = []
        for i in indices:
            try:
                out.append(load_rgb(files[int(i)]))
            except MediaError as e:
                raise ClipError(f"{files[int(i)]}: unreadable frame: {e}") from e
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2), None
    return _read_video(clip_path, indices)


def _read_video(path: Path, indices: np.ndarray) -> tuple[torch.Tensor, float | None]:
    """Decode the needed frames of a video file with PyAV (optional dependency)."""
    try:
        import av
    except ImportError as e:
        raise ClipError(f"{path}: reading video clips needs PyAV (`pip install av`), or store clips as frame "
                        "folders (`python -m training.preprocess --format png`)") from e
    wanted = set(int(i) for i in indices)
    frames = {}
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else None
            for k, frame in enumerate(container.decode(stream)):
                if k in wanted:
                    frames[k] = frame.to_ndarray(format="rgb24")
                if k >= max(wanted):
                    break
    except (getattr(av, "FFmpegError", OSError), OSError, ValueError) as e:
        raise ClipError(f"{path}: cannot decode video: {e}") from e
    missing = wanted - set(frames)
    if missing:
        raise ClipError(f"{path}: video ends before frame {min(missing)}")
    return torch.from_numpy(np.stack([frames[int(i)] for i in indices])).permute(0, 3, 1, 2), fps


class RealEstate10KDataset(torch.utils.data.Dataset):
    """Clips of a RealEstate10K-layout folder; `dataset[(index, seed)]` -> one training sample (spec §8).

    A sample is a dict: `video` [3,T,H,W] float in [-1,1], `w2c` [T,4,4], `K` [T,3,3] (crop pixels), `caption`,
    `frame_stride` (int), `fps` (source fps / stride, or 0 if unknown), `clip_id`. Unreadable clips are logged
    once and replaced by another clip chosen from the same seed, so a broken file never stops a run.
    """

    def __init__(self, root: str | Path, split: str = "train", video_length: int = 16,
                 resolution: tuple[int, int] = (256, 256), frame_stride: tuple[int, int] = (1, 10),
                 min_frames: int | None = None, max_clips: int | None = None, default_fps: float = 30.0,
                 max_retries: int = 20):
        self.root = Path(root)
        self.split = split
        self.video_length = int(video_length)
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.frame_stride = (int(frame_stride[0]), int(frame_stride[1]))
        if not 1 <= self.frame_stride[0] <= self.frame_stride[1]:
            raise ValueError(f"frame_stride must be [lo, hi] with 1 <= lo <= hi; got {list(frame_stride)}")
        self.min_frames = int(min_frames or video_length)
        self.default_fps = default_fps
        self.max_retries = max_retries
        meta_dir = self.root / "valid_metadata" / split
        list_file = self.root / f"{split}_valid_list.txt"
        if list_file.is_file():
            ids = [s.strip() for s in list_file.read_text().splitlines() if s.strip()]
            paths = [meta_dir / f"{i}.txt" for i in ids]
        else:
            paths = sorted(meta_dir.glob("*.txt"))
        if not paths:
            raise FileNotFoundError(f"no clips in {meta_dir} (and no {list_file.name}): expected the "
                                    "RealEstate10K layout of training/README.md; make it with `python -m "
                                    "training.preprocess` or `python -m training.synthetic`")
        self.clips: list[ClipMeta] = []
        for p in paths:
            try:
                meta = read_metadata(p)
            except ClipError as e:
                log.warning("skipping clip: %s", e)
                continue
            if len(meta.w2c) >= self.min_frames:
                self.clips.append(meta)
            if max_clips and len(self.clips) >= max_clips:
                break
        if not self.clips:
            raise FileNotFoundError(f"no usable clip in {meta_dir}: every clip was unreadable or shorter than "
                                    f"{self.min_frames} frames")
        self.bad: set[str] = set()

    def __len__(self) -> int:
        return len(self.clips)

    def clip_path(self, meta: ClipMeta) -> Path:
        """The clip's video file or frame folder."""
        base = self.root / "video_clips" / self.split / meta.rel_path
        if base.is_dir():
            return base
        for suffix in (".mp4", ".webm", ".mkv", ".avi", ".mov"):
            if base.with_suffix(suffix).is_file():
                return base.with_suffix(suffix)
        raise ClipError(f"clip {meta.clip_id}: neither a frame folder {base} nor a video {base}.mp4")

    def load(self, index: int, rng: np.random.Generator) -> dict:
        """One sample of clip `index`; raises ClipError if it cannot be read."""
        meta = self.clips[index]
        idx, stride = choose_frames(len(meta.w2c), self.video_length, self.frame_stride, rng)
        frames, fps = read_frames(self.clip_path(meta), idx)
        h, w = self.resolution
        video, resized = resize_cover_crop(frames, h, w)
        video = video / 127.5 - 1.0  # [T,3,H,W] in [-1,1]
        fps = fps or self.default_fps
        return {
            "video": video.permute(1, 0, 2, 3).contiguous(),  # [3,T,H,W]
            "w2c": torch.as_tensor(meta.w2c[idx], dtype=torch.float32),
            "K": pixel_intrinsics(meta.intrinsics[idx], resized, (h, w)),
            "caption": meta.caption,
            "frame_stride": stride,
            "fps": max(1, math.floor(fps / stride)),
            "clip_id": meta.clip_id,
            "frame_indices": torch.as_tensor(idx, dtype=torch.long),  # [T], keys of the latent cache
        }

    def __getitem__(self, key) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index)])
        for _ in range(self.max_retries):
            if self.clips[index].clip_id not in self.bad:
                try:
                    return self.load(index, rng)
                except ClipError as e:
                    self.bad.add(self.clips[index].clip_id)
                    log.warning("skipping unreadable clip %s: %s", self.clips[index].clip_id, e)
            index = int(rng.integers(len(self.clips)))
        raise RuntimeError(f"{self.max_retries} clips in a row were unreadable under {self.root}; check the "
                           "dataset (see the warnings above)")


class KeyedSampler(torch.utils.data.Sampler):
    """Endless (index, seed) keys for one rank: batch k of rank r depends only on (seed, r, k), so resuming at
    step s reproduces exactly the data an uninterrupted run would have seen."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, start_step: int = 0):
        self.n, self.batch_size, self.seed, self.rank, self.start_step = n, batch_size, seed, rank, start_step

    def keys_for_step(self, step: int) -> list[tuple[int, int]]:
        """The batch of one optimiser micro-step."""
        g = np.random.default_rng([self.seed, self.rank, step, 1])
        idx = g.integers(0, self.n, self.batch_size)
        return [(int(i), int(g.integers(2**31))) for i in idx]

    def __iter__(self):
        step = self.start_step
        while True:
            yield from self.keys_for_step(step)
            step += 1

    def __len__(self) -> int:  # endless; DataLoader only needs this for its progress estimate
        return 2**62


def collate(samples: list[dict]) -> dict:
    """Stack tensors, keep strings and ints as lists / long tensors."""
    out = {}
    for k in samples[0]:
        vals = [s[k] for s in samples]
        if isinstance(vals[0], torch.Tensor):
            out[k] = torch.stack(vals)
        elif isinstance(vals[0], int):
            out[k] = torch.tensor(vals, dtype=torch.long)
        else:
            out[k] = vals
    return out
