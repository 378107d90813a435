"""Reading the input picture and writing videos: .gif / .webp with Pillow, .mp4 with PyAV when it is installed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import CamI2VError
from .files import atomic_write

VIDEO_SUFFIXES = (".gif", ".webp", ".mp4")


class MediaError(CamI2VError, ValueError):
    """A picture that cannot be read or a video that cannot be written; the message says what to do."""


# Pillow's 16-bit greyscale modes; "I" (32-bit) is what older Pillow releases and 16-bit TIFFs give for 16-bit
# samples, so it is read on the same scale. convert("RGB") would clip all of these at 255: a 16-bit picture turns white.
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def load_rgb(image) -> np.ndarray:
    """A picture file (path) or PIL image -> RGB uint8 [H,W,3]; 16-bit / float pictures scaled by range, alpha dropped.

    8-bit modes (L, LA, RGBA, P, CMYK, ...) convert as Pillow's convert("RGB") does. 16-bit greyscale (I;16*, I) is
    divided by 257 (65535 -> 255). Float pictures (F) are read as 0..1 when every value is at most 1, else on the
    16-bit scale.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    if not isinstance(image, (str, os.PathLike)):
        raise MediaError(f"expected a picture file path or a PIL image; got {type(image).__name__}")
    path = Path(image)
    if not path.exists():
        raise MediaError(f"input image {str(path)!r} does not exist; check the path")
    if not path.is_file():
        raise MediaError(f"input image {str(path)!r} is not a file")
    try:
        with Image.open(path) as img:
            img.load()
            return _pil_to_rgb(img)
    except UnidentifiedImageError as e:
        raise MediaError(f"{str(path)!r} is not a picture Pillow can read (expected PNG, JPEG, WebP, ...)") from e
    except OSError as e:
        raise MediaError(f"could not read the picture {str(path)!r}: {e}") from e


def _pil_to_rgb(img) -> np.ndarray:
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "F":
        grey = np.nan_to_num(np.asarray(img, dtype=np.float64))
        scale = 255.0 if img.mode == "F" and grey.size and grey.max() <= 1.0 else 1.0 / 257.0
        grey = np.clip(np.rint(grey * scale), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


read_image = load_rgb  # the name the command line has used


def frames_to_uint8(frames) -> np.ndarray:
    """Video frames [T,H,W,C] (float 0..1 tensor/array, or uint8) -> uint8 numpy [T,H,W,3]."""
    if hasattr(frames, "detach"):  # a torch tensor: imported here, so reading pictures needs no torch
        import torch

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
    with atomic_write(path) as f:
        writer(frames, f, fps=fps, loop=loop, quality=quality, crf=crf)
    return path


def _pil_frames(frames: np.ndarray):
    from PIL import Image

    return [Image.fromarray(f) for f in frames]


def _write_gif(frames, f, fps, loop, **_):
    images = _pil_frames(frames)
    # GIF stores delays in 1/100 s; Pillow rounds the millisecond value we give it.
    images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=1000.0 / fps,
                   loop=0 if loop else None, disposal=1, optimize=False)


def _write_webp(frames, f, fps, loop, quality, **_):
    images = _pil_frames(frames)
    images[0].save(f, format="WEBP", save_all=True, append_images=images[1:], duration=round(1000.0 / fps),
                   loop=0 if loop else 1, quality=quality, method=4)


def _write_mp4(frames, f, fps, crf, **_):
    try:
        import av
    except ImportError as e:
        raise MediaError("writing .mp4 needs PyAV, which is not installed: `pip install av`, "
                         "or write a .gif or .webp instead") from e
    from fractions import Fraction

    # yuv420p (what every player accepts) needs even sizes: repeat the last row / column when odd.
    t, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(f, mode="w", format="mp4") as container:
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
