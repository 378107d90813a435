"""Locate and read the golden fixtures of the original code (../shared/reference/golden or CAMI2V_GOLDEN_DIR)."""

from __future__ import annotations

import json
import os
import re
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


MISSING = "<missing golden folder>"  # the one case collected when the folder is absent (fails in CI, skips locally)


def variants() -> list[str]:
    """The model variants of the folder: the first `_` token of each configs/*.yaml (`cami2v_tiny.yaml` -> cami2v)."""
    return sorted({p.stem.split("_")[0] for p in (GOLDEN_DIR / "configs").glob("*.yaml")})


def variant_of(name: str) -> str:
    """The variant a sampling run or UNet-call case belongs to: the generator names them `<variant>_...`, so it is
    the one `_`-separated token of the name that is a variant of the folder (configs/<variant>_*.yaml)."""
    found = [t for t in name.split("_") if t in variants()]
    if len(found) != 1:
        pytest.fail(f"case {name!r} names {len(found)} of the folder's variants {variants()} (configs/*.yaml); "
                    f"the generator names each case `<variant>_...`")
    return found[0]


def config_path(variant: str) -> Path:
    """configs/<variant>_*.yaml: the original YAML of a variant's tiny model."""
    found = sorted((GOLDEN_DIR / "configs").glob(f"{variant}_*.yaml"))
    if len(found) != 1:
        require(GOLDEN_DIR / "configs" / f"{variant}_tiny.yaml")  # fails or skips with the folder named
        pytest.fail(f"{len(found)} configs of variant {variant!r} in {GOLDEN_DIR / 'configs'}: {found}")
    return found[0]


def model_params(section: str, variant: str = "cami2v") -> dict:
    """`model.params.<section>.params` of a variant's YAML as plain data (e.g. first_stage_config)."""
    from omegaconf import OmegaConf

    config = OmegaConf.load(config_path(variant))
    return OmegaConf.to_container(config.model.params[section].params, resolve=True)


def latent_factor(variant: str = "cami2v") -> int:
    """Pixels per latent cell of the folder's VAE: 2 ** (levels - 1) of its first_stage_config (8 for KL-f8)."""
    return 2 ** (len(model_params("first_stage_config", variant)["ddconfig"]["ch_mult"]) - 1)


def fixture_tensors(rel: str) -> dict[str, tuple[str, list[int]]]:
    """name -> (dtype, shape) of every tensor of a fixture file, from manifest.json (no tensor is read)."""
    entry = load_json("manifest.json").get(rel)
    if entry is None or not isinstance(entry.get("tensors"), dict):
        pytest.fail(f"manifest.json of {GOLDEN_DIR} lists no tensor table for {rel}")
    return {k: (v[0], v[1]) for k, v in entry["tensors"].items()}


def manifest_cases(folder: str) -> list[str]:
    """The cases of a fixture folder without its own index (unet_forward/): the `<folder>/<case>.safetensors`
    files that manifest.json lists. At collection time a missing folder gives the one MISSING case."""
    try:
        manifest = load_json("manifest.json")
    except pytest.skip.Exception:
        return [MISSING]
    return sorted(k[len(folder) + 1:-len(".safetensors")] for k in manifest
                  if k.startswith(folder + "/") and k.endswith(".safetensors") and "/" not in k[len(folder) + 1:])


def unet_cases(variant: str | None = None, dtype: str | None = None, stores: tuple[str, ...] = ()) -> list[str]:
    """UNet-call cases (unet_forward/) of a variant whose `eps` has `dtype` and that store the tensors `stores`."""
    names = manifest_cases("unet_forward")
    if names == [MISSING]:
        return names
    picked = []
    for name in names:
        tensors = fixture_tensors(f"unet_forward/{name}.safetensors")
        if variant is not None and variant_of(name) != variant:
            continue
        if dtype is not None and tensors.get("eps", ("",))[0] != dtype:
            continue
        if all(k in tensors for k in stores):
            picked.append(name)
    return picked


def unet_inputs_case() -> str:
    """The UNet-call case that stores the call's inputs (`x_t`, README §5); the other cases are the same call
    through another variant or dtype and store only what differs."""
    found = unet_cases(stores=("x_t",))
    if found == [MISSING]:
        require(GOLDEN_DIR / "manifest.json")
    if len(found) != 1:
        pytest.fail(f"unet_forward/ of {GOLDEN_DIR} has {len(found)} cases with the call's inputs (x_t): {found}")
    return found[0]


def unet_call_perturbation_seed() -> int | None:
    """The seed of the UNet call's zero-translation draw. No index records it; the fixture README does ("perturbation
    drawn after seed N", §5), so it is read from there. None when the README does not say (then inject the draw)."""
    readme = GOLDEN_DIR / "README.md"
    found = re.search(r"perturbation drawn after seed (\d+)", readme.read_text()) if readme.is_file() else None
    return int(found.group(1)) if found else None


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
        return [MISSING]


def sampling_runs_storing(key: str, variant: str | None = None) -> list[str]:
    """Names of the sampling runs (sampling/sampling_runs.json) whose file stores tensor `key` (and, with `variant`,
    that the generator made for that variant, `variant_of`); a run that shares another's inputs stores only its
    steps. Missing files keep their case, so it fails (CI) or skips (locally) through `require`."""
    from safetensors import safe_open

    names = []
    for name in index_names("sampling/sampling_runs.json"):
        path = GOLDEN_DIR / "sampling" / f"{name}.safetensors"
        if name == MISSING or not path.is_file():
            names.append(name)
            continue
        with safe_open(str(path), "pt") as f:
            if key in f.keys() and (variant is None or variant_of(name) == variant):
                names.append(name)
    return names
