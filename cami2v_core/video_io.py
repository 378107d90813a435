"""Reading the input picture and writing videos: .gif / .webp with Pillow, .mp4 with PyAV when it is installed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import CamI2VError

VIDEO_SUFFIXES = (".gif", ".webp", ".mp4")


class MediaError(CamI2VError, ValueError):
    """A picture that cannot be read or a video that cannot be written; the message says what to do."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a picture file as RGB uint8 [H,W,3] (alpha dropped, palette / greyscale converted)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise MediaError(f"input image {str(path)!r} does not exist; check the path")
    if not path.is_file():
        raise MediaError(f"input image {str(path)!r} is not a file")
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except UnidentifiedImageError as e:
        raise MediaError(f"{str(path)!r} is not a picture Pillow can read (expected PNG, JPEG, WebP, ...)") from e
    except OSError as e:
        raise MediaError(f"could not read the picture {str(path)!r}: {e}") from e


def frames_to_uint8(frames) -> np.ndarray:
    """Video frames [T,H,W,C] (float 0..1 tensor/array, or uint8) -> uint8 numpy [T,H,W,3]."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        if frames.is_floating_point():
            frames = frames.float().clamp(0, 1).mul(255).round().to(torch.uint8)
        frames = frames.numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        frames = np.clip(np.round(frames.astype(np.float64) * 255), 0, 255).astype(np.uint8)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4) or frames.shape[0] < 1:
        raise MediaError(f"video frames must be [T,H,W,C] with C in 1/3/4 and T >= 1; got shape {frames.shape}")
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return np.ascontiguousarray(frames[..., :3])


def write_video(frames, path: str | os.PathLike, fps: float = 8.0, loop: bool = True, quality: int = 90,
                crf: int = 18) -> Path:
    """Write frames [T,H,W,C] (float 0..1 or uint8) to .gif / .webp (Pillow) or .mp4 (PyAV, H.264), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise MediaError(f"cannot write {str(path)!r}: the output must end in {', '.join(VIDEO_SUFFIXES)}")
    if not fps > 0:
        raise MediaError(f"fps must be positive; got {fps}")
    if not path.parent.exists():
        raise MediaError(f"the output folder {str(path.parent)!r} does not exist; create it first")
    frames = frames_to_uint8(frames)
    writer = {".gif": _write_gif, ".webp": _write_webp, ".mp4": _write_mp4}[suffix]
    # Write next to the target and rename, so a failed write never leaves half a file under the final name.
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        writer(frames, Path(tmp), fps=fps, loop=loop, quality=quality, crf=crf)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _pil_frames(frames: np.ndarray):
    from PIL import Image

    return [Image.fromarray(f) for f in frames]


def _write_gif(frames, path, fps, loop, **_):
    images = _pil_frames(frames)
    # GIF stores delays in 1/100 s; Pillow rounds the millisecond value we give it.
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=1000.0 / fps,
                   loop=0 if loop else None, disposal=1, optimize=False)


def _write_webp(frames, path, fps, loop, quality, **_):
    images = _pil_frames(frames)
    images[0].save(path, format="WEBP", save_all=True, append_images=images[1:], duration=round(1000.0 / fps),
                   loop=0 if loop else 1, quality=quality, method=4)


def _write_mp4(frames, path, fps, crf, **_):
    try:
        import av
    except ImportError as e:
        raise MediaError("writing .mp4 needs PyAV, which is not installed: `pip install av`, "
                         "or write a .gif or .webp instead") from e
    from fractions import Fraction

    # yuv420p (what every player accepts) needs even sizes: repeat the last row / column when odd.
    t, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def count_frames(path: str | os.PathLike) -> int:
    """Number of frames in a written .gif / .webp (Pillow) or .mp4 (PyAV)."""
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        import av

        with av.open(str(path)) as container:
            return sum(1 for _ in container.decode(video=0))
    from PIL import Image

    with Image.open(path) as img:
        return int(getattr(img, "n_frames", 1))
