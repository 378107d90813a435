"""Reading a camera path from whatever a user has: the one dispatcher over every format.

It sits above the format modules (pose JSON and RealEstate10K in formats.py, transforms.json in nerfstudio.py,
COLMAP text in colmap.py, the demo presets in presets.py), so each of them imports only downwards and none needs
a function-level import of another.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import colmap, formats, nerfstudio, presets
from .errors import TrajectoryError
from .trajectory import Trajectory


def from_json(source) -> Trajectory:
    """Any camera JSON (text, bytes or parsed): our pose JSON, a CAMERACTRL_POSES list, or a nerfstudio /
    instant-ngp transforms.json (recognised by its frames' `transform_matrix`)."""
    data = formats._parse_json(source) if isinstance(source, (str, bytes, bytearray)) else source
    if nerfstudio.is_transforms(data):
        return nerfstudio.from_transforms_json(data)
    return formats.from_json(data)


def parse_text(text) -> Trajectory:
    """Pose text of any supported format -> Trajectory: '{' pose JSON, '[' CAMERACTRL_POSES JSON, else RealEstate10K."""
    text = formats._check_text(text)
    head = text.lstrip()[:1]
    if head in ("{", "["):
        return from_json(text)
    return formats.from_realestate10k(text)


def load(source) -> Trajectory:
    """A Trajectory from a preset name, a pose file path (pose JSON, RealEstate10K, transforms.json, a COLMAP text
    model folder), pose text, a CAMERACTRL_POSES list, a parsed pose JSON dict, or a Trajectory (returned as is)."""
    if isinstance(source, Trajectory):
        return source
    if isinstance(source, (list, tuple, np.ndarray)):
        return formats.from_cameractrl_poses(source)
    if isinstance(source, dict):
        return from_json(source)
    if isinstance(source, (bytes, bytearray)):
        return parse_text(source)
    if isinstance(source, os.PathLike):
        return _load_file(Path(source))
    if not isinstance(source, str):
        raise TrajectoryError(f"cannot read a camera path from {type(source).__name__}; give a preset name, a file "
                              f"path, pose text or a CAMERACTRL_POSES list")
    if "\n" not in source and presets.find_preset(source) is not None:
        return presets.preset(source)
    stripped = source.strip()
    if stripped[:1] in ("{", "[") or "\n" in stripped:
        return parse_text(source)
    if _is_file(source) or _is_dir(source):
        return _load_file(Path(source))
    if stripped and _looks_numeric(stripped):
        return parse_text(source)
    if Path(stripped).suffix.lower() in (".json", ".txt") or os.sep in stripped:
        raise TrajectoryError(f"pose file {stripped[:200]!r} not found")
    raise TrajectoryError(f"{source[:80]!r} is not a preset name, an existing pose file, or pose text. Presets: "
                          f"{', '.join(presets.PRESETS)}")


def _load_file(path: Path) -> Trajectory:
    """A pose file, a transforms.json, or a COLMAP text model (its folder, cameras.txt or images.txt)."""
    if path.is_dir() or path.name.lower() in ("cameras.txt", "images.txt"):
        return colmap.read_colmap(path)
    return parse_text(formats.read_text(path))


def _is_dir(text: str) -> bool:
    try:
        return len(text) < 4096 and Path(text).is_dir()
    except (OSError, ValueError):
        return False


def _is_file(text: str) -> bool:
    try:
        return len(text) < 4096 and Path(text).is_file()
    except (OSError, ValueError):  # names the OS cannot even look up (NUL bytes, too long)
        return False


def _looks_numeric(line: str) -> bool:
    try:
        [float(w) for w in line.split()]
    except ValueError:
        return False
    return True
