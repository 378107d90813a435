"""Copy a golden fixture folder under new case names and some new sizes, to check that the parity tests discover
their cases from the folder (design.md §2 "Numerics") instead of knowing the visible fixtures.

    python -m tests.tools.remix_golden [SRC] DST        # SRC defaults to tests/golden.py's GOLDEN_DIR
    CAMI2V_GOLDEN_DIR=DST CAMI2V_REQUIRE_GOLDEN=1 python -m pytest tests/test_camera.py ...

or `remix(src, dst)` from Python (tests/test_golden_remix.py does that). The original generator cannot be run here,
so the remix only does what the fixture semantics allow exactly. Every reference number in the copy is one the
original code computed; none is computed by this repository's code.

What it varies
- **Case names.** Camera trajectories `n` -> `remix_n`; sampling runs -> `remix_<variant>_run<i>` and UNet-call
  files -> `remix_<variant>_call<i>` (the model variant stays a `_`-separated token of the name, as the generator
  names them `<variant>_...`; steps, eta, camera scale and dtype are no longer in the name, so they must be read from
  the index and the tensors). The JSON indices are rewritten to match: the keys of `camera/trajectories.json`,
  `sampling/sampling_runs.json` (its `_check...` table and the `note` texts that name other runs), the keys of
  `checks.json`, and `manifest.json` (rebuilt from the files written: names, bytes, sha256, tensor dtypes/shapes).
- **Which cases exist.** `drop_cameras` / `drop_runs` leave cases out (never one that another fixture refers to).
- **Frame counts of camera cases** (`cut_cameras`, `extra_cameras`): a synthetic trajectory (index `source` starts
  with "synthetic:") defines frame i by a formula of i alone, so its first T' frames are what the generator makes
  for T' frames, and every stored quantity of those frames is per frame (poses, K, Plücker) or per frame pair (pair
  poses, F, the mask blocks: rows/columns are frame-major), so cutting them is exact. One thing is not: the zero-
  translation perturbation is one randn over the whole [B,T,T,3,1] tensor, so the cut draw is not the draw of seed
  777 for T' frames. Such cases keep the original's recorded draw and get `"perturbation_seed": null` (and a `remix`
  note): the tests inject it instead of re-drawing it. Demo trajectories are resampled to T frames by the demo, so
  they are never cut. `cut_cameras` cuts a case in place; `extra_cameras` adds a cut copy `<name>_first<T'>` next to
  the whole one (the UNet-call fixture finds its trajectories by w2c, so those stay whole).
- **VAE frame count** (`vae_frames`): the VAE encodes and decodes every frame as its own 2-D image (README §8), so
  the first frames of every tensor are the original's result for those frames (the original's float32 result for a
  smaller batch may differ in the last bits, ~1e-6, far inside the tests' tolerances).
- **Prompt count** (`prompts`): the encoder fixture's text rows are per prompt; the first `prompts` are kept (the
  first is the caption the sampling runs use).

What it cannot vary (would need the original code): model configs and weights (so latent size, channels, levels,
mask strides, T of the model), the UNet-call fixture (batch 2; `sensitivity.json` holds norms over that batch), the
sampling runs' steps and sizes, image sizes of any fixture, the spatial size of camera cases, the seeds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

# Frame axes of the per-case tensors of camera/*.safetensors (README §4); masks are handled apart.
CAMERA_FRAME_AXES = {"F": (1, 2), "K": (1,), "K_normalized_fx_fy_cx_cy": (1,), "c2w": (1,), "w2c": (1,),
                     "relative_c2w": (1,), "relative_c2w_pairs": (1, 2), "pair_t_before_perturbation": (1, 2),
                     "pair_t_after_perturbation": (1, 2), "plucker": (2,), "cond_frame_index": ()}
# Frame axes of vae/vae_tiny.safetensors (README §8): `t c h w` tensors on 0, `b c t h w` ones on 2.
VAE_FRAME_AXES = {"video_u8": 0, "posterior_mean": 0, "posterior_logvar_clamped": 0, "posterior_std": 0,
                  "posterior_noise": 0, "z_sample_scaled": 0, "z_mode_scaled": 0, "decode_input_latent_scaled": 2,
                  "decode_output": 2, "encode_first_stage_with_noise": 2}
MASK = re.compile(r"^(epipolar_mask|borderline)_d(\d+)\.packbits$")
NOT_IN_MANIFEST = {"manifest.json", "README.md", "REMIX.json"}


class RemixError(ValueError):
    """The folder holds something the remix cannot change exactly."""


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)


def _unpack(packed: torch.Tensor, count: int) -> np.ndarray:
    return np.unpackbits(packed.numpy(), axis=-1, count=count, bitorder="big").astype(bool)


def _pack(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.packbits(mask, axis=-1, bitorder="big"))


def _replace_names(text: str, names: dict[str, str]) -> str:
    """Every whole-token occurrence of an old name (longest first, so `a_b` wins over `a`) -> its new name."""
    for old in sorted(names, key=len, reverse=True):
        text = re.sub(rf"(?<![A-Za-z0-9_]){re.escape(old)}(?![A-Za-z0-9_])", names[old], text)
    return text


def _variants(src: Path) -> list[str]:
    """Model variants of the folder: the first `_` token of each configs/*.yaml (`cami2v_tiny.yaml` -> cami2v)."""
    return sorted({p.stem.split("_")[0] for p in (src / "configs").glob("*.yaml")})


def _variant_of(name: str, variants: list[str]) -> str:
    found = [t for t in name.split("_") if t in variants]
    if len(found) != 1:
        raise RemixError(f"case {name!r} names {len(found)} of the variants {variants}; the generator names each "
                         f"run and UNet call `<variant>_...`")
    return found[0]


def cut_camera_case(meta: dict, tensors: dict[str, torch.Tensor], frames: int) -> tuple[dict, dict]:
    """The first `frames` frames of a synthetic camera case: (index entry, tensors), exactly (see module doc)."""
    if not str(meta.get("source", "")).startswith("synthetic:"):
        raise RemixError("only synthetic trajectories can be cut: the demo resamples its pose files to T frames")
    T = meta["T"]
    if not 0 < frames < T or not meta["cond_frame_index"] < frames:
        raise RemixError(f"cannot keep {frames} of {T} frames with conditioning frame {meta['cond_frame_index']}")
    out = {}
    for key, value in tensors.items():
        found = MASK.match(key)
        if found:
            stride = int(found.group(2))
            cells = (meta["H"] // stride) * (meta["W"] // stride)
            mask = _unpack(value, T * cells)
            if mask.shape[-2:] != (T * cells, T * cells):
                raise RemixError(f"{key}: shape {mask.shape} is not [B, T·h·w, T·h·w] with T·h·w = {T * cells}")
            out[key] = _pack(mask[:, :frames * cells, :frames * cells])
            continue
        if key not in CAMERA_FRAME_AXES:
            raise RemixError(f"camera tensor {key!r} has no known frame axis; the remix cannot cut it")
        for axis in CAMERA_FRAME_AXES[key]:
            if value.shape[axis] != T:
                raise RemixError(f"{key}: axis {axis} has {value.shape[axis]} entries, not T = {T}")
            value = value.narrow(axis, 0, frames)
        out[key] = value
    entry = json.loads(json.dumps(meta))
    entry["T"] = frames
    entry["perturbation_seed"] = None
    entry["remix"] = (f"the first {frames} of {T} frames; pair_t_after_perturbation is the original's draw cut the "
                      f"same way, which no seed draws: inject it")
    borderline_counts = entry.get("entries_within_1e-4px_of_threshold_fp64", {})
    for name, info in entry["masks"].items():
        stride = int(name.rsplit("_d", 1)[1])
        cells = (meta["H"] // stride) * (meta["W"] // stride)
        mask = _unpack(out[f"{name}.packbits"], frames * cells)
        info["shape"] = [mask.shape[0], frames * cells, frames * cells]
        info["true_fraction"] = float(mask.mean())
        border = f"borderline_d{stride}.packbits"
        if name in borderline_counts:
            if border in tensors:  # the stored marks are exactly the counted entries; count the kept ones
                full = int(_unpack(tensors[border], T * cells).sum())
                if full != borderline_counts[name]:
                    raise RemixError(f"{border} marks {full} entries but the index counts {borderline_counts[name]}")
                borderline_counts[name] = int(_unpack(out[border], frames * cells).sum())
            elif borderline_counts[name] != 0:
                raise RemixError(f"{name}: {borderline_counts[name]} borderline entries but no {border} to cut")
    return entry, out


def _cut_rows(tensors: dict[str, torch.Tensor], axes: dict[str, int], keep: int, what: str) -> dict:
    out = {}
    for key, value in tensors.items():
        if key not in axes:
            raise RemixError(f"{what} tensor {key!r} has no known frame axis; the remix cannot cut it")
        if value.shape[axes[key]] < keep:
            raise RemixError(f"{what} {key} has {value.shape[axes[key]]} frames, fewer than {keep}")
        out[key] = value.narrow(axes[key], 0, keep)
    return out


def _manifest(dst: Path, original: dict) -> dict:
    """manifest.json of the written folder, in the original's form (tensor table, or a count where it had one)."""
    manifest = {}
    for path in sorted(p for p in dst.rglob("*") if p.is_file()):
        rel = path.relative_to(dst).as_posix()
        if rel in NOT_IN_MANIFEST:
            continue
        data = path.read_bytes()
        entry = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        if path.suffix == ".safetensors":
            tensors, _ = _read(path)
            like = next((v for v in original.values() if isinstance(v, dict) and "tensors" in v), {})
            counted = isinstance(original.get(rel, like).get("tensors"), int)
            entry["tensors"] = len(tensors) if counted else {
                k: [str(v.dtype).removeprefix("torch."), list(v.shape)] for k, v in sorted(tensors.items())}
        manifest[rel] = entry
    return manifest


def remix(src: Path, dst: Path, prefix: str = "remix_", drop_cameras=("pan_right",),
          drop_runs=("cameractrl_ddim4_eta0_cam2",), cut_cameras=None, extra_cameras=None, vae_frames: int = 3,
          prompts: int = 3) -> dict:
    """Write the remixed copy of `src` to `dst` (which must not exist); returns what REMIX.json records:
    {"names": {"camera"|"sampling"|"unet_forward": {old: new}}, "dropped": [...], "resized": [...]}."""
    src, dst = Path(src), Path(dst)
    cut_cameras = {"general6dof_nonsquare": 5} if cut_cameras is None else dict(cut_cameras)
    extra_cameras = {"general6dof": 6} if extra_cameras is None else dict(extra_cameras)
    if dst.exists():
        raise RemixError(f"{dst} exists; the remix writes a new folder")
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("camera", "sampling", "unet_forward"))
    variants = _variants(src)
    report = {"source": str(src), "names": {}, "dropped": [], "resized": []}

    # -- camera/ ---------------------------------------------------------------------------------------------------
    index = json.loads((src / "camera" / "trajectories.json").read_text())
    cases = [k for k in index if not k.startswith("_")]
    camera_names = {k: prefix + k for k in cases if k not in drop_cameras}
    new_index = {k: v for k, v in index.items() if k.startswith("_")}
    (dst / "camera").mkdir()
    for old, new in camera_names.items():
        whole, metadata = _read(src / "camera" / f"{old}.safetensors")
        entry, tensors = index[old], whole
        if old in cut_cameras:
            entry, tensors = cut_camera_case(entry, tensors, cut_cameras[old])
            report["resized"].append(f"camera/{new}: first {cut_cameras[old]} of {index[old]['T']} frames")
        new_index[new] = entry
        _write(dst / "camera" / f"{new}.safetensors", tensors, metadata)
        if old in extra_cameras:
            extra = f"{new}_first{extra_cameras[old]}"
            new_index[extra], cut = cut_camera_case(index[old], whole, extra_cameras[old])
            _write(dst / "camera" / f"{extra}.safetensors", cut, metadata)
            report["resized"].append(f"camera/{extra}: new case, the first {extra_cameras[old]} frames of {new}")
    (dst / "camera" / "trajectories.json").write_text(json.dumps(new_index, indent=1))
    report["dropped"] += [f"camera/{k}" for k in cases if k in drop_cameras]
    report["names"]["camera"] = camera_names

    # -- sampling/ -------------------------------------------------------------------------------------------------
    runs = json.loads((src / "sampling" / "sampling_runs.json").read_text())
    kept = [k for k in runs if not k.startswith("_") and k not in drop_runs]
    run_names = {k: f"{prefix}{_variant_of(k, variants)}_run{i}" for i, k in enumerate(kept)}
    (dst / "sampling").mkdir()
    for old, new in run_names.items():
        shutil.copy(src / "sampling" / f"{old}.safetensors", dst / "sampling" / f"{new}.safetensors")
    referred = {k for k in kept for other in drop_runs if other in json.dumps(runs[k])}
    if referred:
        raise RemixError(f"runs {sorted(referred)} refer to a dropped run")

    def rename(value):
        if isinstance(value, dict):
            return {run_names.get(k, k): rename(v) for k, v in value.items() if k not in drop_runs}
        if isinstance(value, list):
            return [rename(v) for v in value]
        return _replace_names(value, run_names) if isinstance(value, str) else value

    new_runs = {}
    for key, value in runs.items():
        if key in drop_runs:
            continue
        new_runs[run_names.get(key, key)] = rename(value)
    (dst / "sampling" / "sampling_runs.json").write_text(json.dumps(new_runs, indent=1))
    report["dropped"] += [f"sampling/{k}" for k in drop_runs if k in runs]
    report["names"]["sampling"] = run_names

    # -- unet_forward/ ---------------------------------------------------------------------------------------------
    (dst / "unet_forward").mkdir()
    calls = sorted(p.stem for p in (src / "unet_forward").glob("*.safetensors"))
    call_names = {k: f"{prefix}{_variant_of(k, variants)}_call{i}" for i, k in enumerate(calls)}
    for old, new in call_names.items():
        shutil.copy(src / "unet_forward" / f"{old}.safetensors", dst / "unet_forward" / f"{new}.safetensors")
    for other in sorted((src / "unet_forward").iterdir()):
        if other.suffix != ".safetensors":  # sensitivity.json: measured quantities, no case names
            shutil.copy(other, dst / "unet_forward" / other.name)
    report["names"]["unet_forward"] = call_names

    # -- vae/ and encoders/ ----------------------------------------------------------------------------------------
    vae = dst / "vae" / "vae_tiny.safetensors"
    if vae_frames and vae.is_file():
        tensors, metadata = _read(vae)
        before = tensors["video_u8"].shape[0]
        if vae_frames < before:
            _write(vae, _cut_rows(tensors, VAE_FRAME_AXES, vae_frames, "vae"), metadata)
            report["resized"].append(f"vae/vae_tiny: first {vae_frames} of {before} frames")
    encoders = dst / "encoders" / "encoders.safetensors"
    if prompts and encoders.is_file():
        tensors, metadata = _read(encoders)
        texts = json.loads(metadata["prompts"])
        if prompts < len(texts):
            tensors = {k: (v[:prompts] if k in ("tokens", "text_emb") else v) for k, v in tensors.items()}
            _write(encoders, tensors, {**metadata, "prompts": json.dumps(texts[:prompts])})
            report["resized"].append(f"encoders: first {prompts} of {len(texts)} prompts")

    # -- checks.json, manifest.json, README.md ---------------------------------------------------------------------
    every_name = {**camera_names, **run_names, **call_names}
    gone = [k for k in cases if k in drop_cameras] + [k for k in drop_runs if k in runs]
    checks = json.loads((src / "checks.json").read_text())
    checks = {_replace_names(k, every_name): v for k, v in checks.items()
              if not any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(g)}(?![A-Za-z0-9_])", k) for g in gone)}
    (dst / "checks.json").write_text(json.dumps(checks, indent=1))
    report["notes"] = ("configs, weights and sensitivity.json are the original's; the cut camera cases record no "
                       "perturbation seed (see tests/tools/remix_golden.py)")
    original = json.loads((src / "manifest.json").read_text())
    (dst / "manifest.json").write_text(json.dumps(_manifest(dst, original), indent=1))
    (dst / "REMIX.json").write_text(json.dumps(report, indent=1))
    readme = (src / "README.md").read_text() if (src / "README.md").is_file() else ""
    (dst / "README.md").write_text(
        "# Remixed golden fixtures (tests/tools/remix_golden.py)\n\nA copy of the golden folder with renamed and "
        "partly resized cases; REMIX.json maps the names and says what changed. The original README follows; its "
        "names and sizes are the original folder's.\n\n" + readme)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="[SRC] DST", help="golden folder to copy (default: the one "
                        "tests/golden.py finds) and the new folder to write")
    parser.add_argument("--prefix", default="remix_")
    args = parser.parse_args(argv)
    if len(args.paths) > 2:
        parser.error("give at most SRC and DST")
    if len(args.paths) == 1:
        from tests.golden import GOLDEN_DIR
        src, dst = GOLDEN_DIR, args.paths[0]
    else:
        src, dst = args.paths
    try:
        report = remix(Path(src), Path(dst), prefix=args.prefix)
    except RemixError as e:
        print(f"remix_golden: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
