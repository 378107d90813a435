"""Camera recovery for the evaluation (spec §10): `trajectories.sfm` (pycolmap: COLMAP SIFT + GLOMAP) with the
benchmark's known intrinsics held fixed, counted only when one model registers every frame.

A reconstruction that misses a frame gives `Recovery.c2w` None and `Recovery.status` says what went wrong
(nothing registered, k of T frames, an exception). pycolmap is imported when first needed
(`pip install pycolmap==4.2.1`); the ComfyUI node pack never needs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from trajectories.sfm import SfMError, reconstruct, require_pycolmap

__all__ = ["SfMError", "Recovery", "require_pycolmap", "recover_cameras"]


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


def recover_cameras(frames, intrinsics, trials: int = 1, seed: int = 0, size: int = 256, threads: int = 1,
                    workdir: str | os.PathLike | None = None, quiet: bool = True) -> list[Recovery]:
    """Reconstruct the cameras of frames [T,H,W,3] (uint8, or float 0..1) whose shared pinhole intrinsics are
    normalised (fx, fy, cx, cy) [4] (fx, cx by the width, fy, cy by the height). Returns one Recovery per trial
    (trial k uses random seed seed + k)."""
    out = []
    for rec in reconstruct(frames, intrinsics, trials=trials, seed=seed, size=size, threads=threads,
                           workdir=workdir, quiet=quiet):
        c2w = None
        if rec.status == "ok":
            c2w = np.linalg.inv(np.stack([rec.w2c[k] for k in range(rec.frames)]))
        out.append(Recovery(c2w, rec.registered, rec.frames, rec.status, rec.seconds))
    return out
