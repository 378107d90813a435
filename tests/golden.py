"""Locate and read the golden fixtures of the original code (../shared/reference/golden or CAMI2V_GOLDEN_DIR)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("CAMI2V_REFERENCE_DIR", REPO.parent / "shared" / "reference"))
GOLDEN_DIR = Path(os.environ.get("CAMI2V_GOLDEN_DIR", REFERENCE_DIR / "golden"))
KEYS_DIR = REFERENCE_DIR / "keys"


def require(path: Path) -> Path:
    """Return path, or fail (CI, CAMI2V_REQUIRE_GOLDEN=1) / skip (local) with a message saying what is missing."""
    if path.exists():
        return path
    msg = (f"reference fixture {path} is missing: parity cannot be checked. Put the shared reference folder beside "
           f"the repo or point CAMI2V_GOLDEN_DIR / CAMI2V_REFERENCE_DIR at it.")
    if os.environ.get("CAMI2V_REQUIRE_GOLDEN"):
        pytest.fail(msg)
    pytest.skip(msg)


def load_json(rel: str, base: Path = GOLDEN_DIR):
    """Read a JSON file of the golden folder."""
    return json.loads(require(base / rel).read_text())


def load_tensors(rel: str, base: Path = GOLDEN_DIR) -> dict[str, torch.Tensor]:
    """Read a safetensors file of the golden folder."""
    return load_file(str(require(base / rel)))


def unpack_mask(packed: torch.Tensor, count: int) -> torch.Tensor:
    """Unpack a numpy.packbits(axis=-1, bitorder='big') bool mask stored as uint8 [..., ceil(count/8)]."""
    return torch.from_numpy(np.unpackbits(packed.numpy(), axis=-1, count=count, bitorder="big").astype(bool))


def golden_state_dict(variant: str = "cami2v") -> dict[str, torch.Tensor]:
    """The full tiny state dict of a variant, rebuilt from the sparse base file and the delta files (README §3)."""
    base = load_file(str(require(GOLDEN_DIR / "weights" / "cami2v_tiny.safetensors")))
    sd: dict[str, torch.Tensor] = {}
    sparse: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in base.items():
        if k.endswith(".__sparse_rows__") or k.endswith(".__sparse_values__"):
            name, _, part = k.rpartition(".")
            sparse.setdefault(name, {})[part] = v
        else:
            sd[k] = v
    shapes = json.loads((GOLDEN_DIR / "weights" / "key_shapes.json").read_text())
    shapes = shapes.get("cami2v", shapes) if isinstance(shapes, dict) else shapes
    for name, parts in sparse.items():
        shape = _lookup_shape(shapes, name) or [int(parts["__sparse_rows__"].max()) + 1, parts["__sparse_values__"].shape[1]]
        dense = torch.zeros(shape, dtype=parts["__sparse_values__"].dtype)
        dense[parts["__sparse_rows__"]] = parts["__sparse_values__"]
        sd[name] = dense
    if variant == "cami2v":
        return sd
    sd = {k: v for k, v in sd.items() if ".pluker_projection." not in k and ".epipolar." not in k}
    if variant == "motionctrl":
        sd = {k: v for k, v in sd.items() if not k.startswith("pose_encoder.")}
    if variant in ("cameractrl", "motionctrl"):
        sd.update(load_file(str(require(GOLDEN_DIR / "weights" / f"{variant}_tiny_delta.safetensors"))))
    return sd


def _lookup_shape(shapes, name):
    if isinstance(shapes, dict):
        if name in shapes:
            return shapes[name]
        for v in shapes.values():
            if isinstance(v, dict) and name in v:
                return v[name]
    return None


def index_names(rel: str) -> list[str]:
    """Case names of a golden JSON index (discovered, so any fixture folder of that format works).

    Used at collection time: when the folder is missing it returns one placeholder case whose test then fails (CI)
    or skips (locally) through `require`, instead of collecting no test at all.
    """
    try:
        return sorted(k for k in load_json(rel) if not k.startswith("_"))
    except pytest.skip.Exception:
        return ["<missing golden folder>"]
