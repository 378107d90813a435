"""Reading checkpoints safely, recognising which model they hold, and converting them to safetensors.

Loading never runs code from a file: safetensors, or `torch.load(weights_only=True)` (memory-mapped where the file
format allows it). The released files (spec §1.1) are whole-model state dicts: CamI2V / CameraCtrl / MotionCtrl `.pt`
in fp16, and DynamiCrafter `model.ckpt` in fp32 under a Lightning `state_dict` wrapper with the old
`framestride_embed` name. Every failure is one sentence that says what was found and what to do.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .configs import PRESETS, ConfigError, ModelConfig, VARIANTS
from .errors import CamI2VError
from .files import atomic_write

CONFIG_METADATA_KEY = "cami2v_config"  # safetensors header entry holding ModelConfig.to_json()
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}

# safetensors header dtype names (https://github.com/huggingface/safetensors, format description).
_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


class CheckpointError(CamI2VError, ValueError):
    """A checkpoint that cannot be used; the message says what was found and what to do."""


# Where every "download it again" points: the README table lists each release file with its link.
_REDOWNLOAD = "download it again from the link in the model table of README.md (section Models)"
_SAFE_OPTIONS = ("get the .safetensors release of this model (or the release file from the model table of README.md, "
                 "which loads safely), or convert it to .safetensors yourself on a machine where you trust the file; "
                 "`python -m cami2v_core convert` refuses it too, because it reads files the same safe way")
_MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors library's own limit on the JSON header
# torch.save's legacy (non-zip) format begins with a protocol-2 pickle of this magic number (torch/serialization.py).
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


class DamagedCheckpointError(CheckpointError):
    """An empty, truncated or corrupted checkpoint file (an interrupted download or copy)."""


class NotACheckpointError(CheckpointError):
    """A file that holds no weights at all: a web page, a Git LFS pointer, other text, or unknown bytes."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that needs Python code to load; loading never runs code from a file, so it is refused."""


@dataclass(frozen=True)
class Detected:
    """What a state dict holds: variant (one of VARIANTS), pixel resolution (H, W) or None, prediction eps|v."""

    variant: str
    resolution: tuple[int, int] | None
    prediction: str


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """torch dtype from 'fp32' / 'fp16' / 'bf16' (or a torch.dtype, or None = keep what is stored)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype is not None and dtype not in DTYPES.values():
            raise CheckpointError(f"dtype must be float32, float16 or bfloat16; got {dtype}")
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in DTYPES:
        raise CheckpointError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[key]


# -- reading --------------------------------------------------------------------------------------------------------

def load_state_dict(path: str | os.PathLike, dtype: str | torch.dtype | None = None,
                    device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, safetensors header metadata) of a checkpoint file: unwrapped, renamed, cast to dtype."""
    path = Path(path)
    dtype = parse_dtype(dtype)
    kind = _sniff_format(path)
    if kind == "safetensors":
        header, metadata = read_safetensors_header(path)
        from safetensors import SafetensorError, safe_open

        sd = {}
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                # One tensor at a time: cast and move it before reading the next, so a dtype change never holds
                # the file's copy and the converted copy of the whole model at once.
                for key in header:
                    sd[key] = _cast(f.get_tensor(key), dtype, device)
        except SafetensorError as e:  # the header passed our checks but its offsets do not describe the data
            raise DamagedCheckpointError(f"{path} is a damaged safetensors file ({e}); {_REDOWNLOAD}") from None
        return normalize_state_dict(sd, str(path)), metadata
    obj = _torch_load(path)
    sd = normalize_state_dict(obj, str(path))
    for key in list(sd):
        sd[key] = _cast(sd[key], dtype, device)
    return sd, {}


def load_shapes(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Like load_state_dict but without reading weights where possible: safetensors give meta tensors."""
    path = Path(path)
    if _sniff_format(path) == "safetensors":
        header, metadata = read_safetensors_header(path)
        sd = {k: torch.empty(v["shape"], dtype=_ST_DTYPES[v["dtype"]], device="meta") for k, v in header.items()}
        return normalize_state_dict(sd, str(path)), metadata
    # torch zip files are memory-mapped: their tensors are not read until touched.
    return normalize_state_dict(_torch_load(path), str(path)), {}


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict[str, dict], dict[str, str]]:
    """(tensor entries {name: {dtype, shape, data_offsets}}, metadata) of a safetensors file, checked for truncation."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise DamagedCheckpointError(f"{path} is {size} bytes long, too short to be a safetensors file; it is "
                                         f"probably an interrupted download: {_REDOWNLOAD}")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise DamagedCheckpointError(f"{path} is truncated: its safetensors header says {n} header bytes but the "
                                         f"file has only {size} bytes; the download or copy was interrupted: "
                                         f"{_REDOWNLOAD}")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DamagedCheckpointError(f"{path} is a damaged safetensors file (its header is not valid JSON: {e}); "
                                         f"{_REDOWNLOAD}") from None
    if not isinstance(header, dict):
        raise DamagedCheckpointError(f"{path} is a damaged safetensors file (its header is not a JSON object); "
                                     f"{_REDOWNLOAD}")
    metadata = header.pop("__metadata__", None) or {}
    bad = [k for k, v in header.items() if not _valid_entry(v)]
    if bad or not isinstance(metadata, dict):
        raise DamagedCheckpointError(f"{path} is a damaged safetensors file (header entries "
                                     f"{bad[:3] or ['__metadata__']} are not tensor descriptions); {_REDOWNLOAD}")
    end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    if 8 + n + end > size:
        raise DamagedCheckpointError(f"{path} is truncated: its header describes {8 + n + end} bytes but the file has "
                                     f"only {size}; the download or copy was interrupted: {_REDOWNLOAD}")
    unknown = {v["dtype"] for v in header.values()} - set(_ST_DTYPES)
    if unknown:
        raise CheckpointError(f"{path} holds tensors of dtype {sorted(unknown)}, which CamI2V checkpoints never use; "
                              "expected F32/F16/BF16 weights")
    return header, dict(metadata)


def _valid_entry(v) -> bool:
    """A safetensors header entry: {"dtype": str, "shape": [int, ...], "data_offsets": [begin, end]}."""
    return (isinstance(v, dict) and isinstance(v.get("dtype"), str) and isinstance(v.get("shape"), list)
            and all(isinstance(d, int) and d >= 0 for d in v["shape"]) and isinstance(v.get("data_offsets"), list)
            and len(v["data_offsets"]) == 2 and all(isinstance(o, int) and o >= 0 for o in v["data_offsets"]))


def _sniff_format(path: Path) -> str:
    """'safetensors' or 'torch' from the file's first bytes (extensions are often wrong); anything else raises."""
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give the checkpoint file inside it (one of "
                              f"{', '.join('*' + s for s in CHECKPOINT_SUFFIXES)})")
    size = path.stat().st_size
    if size == 0:
        raise DamagedCheckpointError(f"{path} is empty (0 bytes): the download or copy did not finish; {_REDOWNLOAD}")
    with open(path, "rb") as f:
        head = f.read(1024)
    # safetensors: an 8-byte little-endian header length, then the JSON header itself. Checked first, since the
    # length may itself start with 0x80 or "PK"; read_safetensors_header reports a header cut short.
    if len(head) > 8 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= _MAX_SAFETENSORS_HEADER:
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):  # a zip archive: torch.save since torch 1.6
        return "torch"
    if head.startswith(_LEGACY_TORCH_MAGIC):  # torch.save(..., _use_new_zipfile_serialization=False)
        return "torch"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise UnsafeCheckpointError(f"{path} cannot be loaded safely: it is a plain Python pickle, neither a "
                                    f"safetensors file nor a PyTorch checkpoint (torch.save); {_SAFE_OPTIONS}")
    text = _as_text(head)
    if text is not None:
        raise NotACheckpointError(_describe_text(path, size, text))
    if size < 16:
        raise DamagedCheckpointError(f"{path} is only {size} bytes, too short to be a checkpoint: the download or "
                                     f"copy was interrupted; {_REDOWNLOAD}")
    raise NotACheckpointError(f"{path} is neither a safetensors file nor a PyTorch checkpoint: its first bytes "
                              f"{head[:8]!r} match no weights format (safetensors, PyTorch zip or pickle), so it is "
                              f"damaged or another kind of file; {_REDOWNLOAD}")


def _as_text(head: bytes) -> str | None:
    """The first bytes as text when they are UTF-8 without control characters (a cut last character allowed)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:
            return None
        text = head[:e.start].decode("utf-8")
    if any(ord(c) < 32 and c not in "\t\n\r\f" for c in text):
        return None
    return text


def _describe_text(path: Path, size: int, text: str) -> str:
    """Why a text file is where weights should be (Git LFS pointer, web page, other), and what to do."""
    if text.startswith("version https://git-lfs"):
        return (f"{path} is a Git LFS pointer ({size} bytes of text), not the weights: the repository was cloned or "
                "copied without Git LFS. Run `git lfs pull` in that repository, or " + _REDOWNLOAD)
    lower = text.lstrip().lower()
    if lower.startswith(("<!doctype html", "<html", "<?xml")) or "<html" in lower or "<head" in lower:
        return (f"{path} is a web page (HTML, {size} bytes), not model weights: the download saved an error or "
                "sign-in page instead of the file. On Hugging Face use the file's download link (.../resolve/main/"
                "FILE), not its page (.../blob/main/FILE); " + _REDOWNLOAD)
    first = text.strip().splitlines()[0][:80] if text.strip() else ""
    return (f"{path} is a text file ({size} bytes), neither a safetensors file nor a PyTorch checkpoint (it begins "
            f"{first!r}); it is not model weights: " + _REDOWNLOAD)


def _torch_load(path: Path):
    """torch.load with weights_only=True (never runs code), memory-mapped when the file is a zip archive."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's own message advises weights_only=False, i.e. running the file's code: never pass it on.
        needed = _unsafe_globals(path) or re.findall(r"Unsupported global: GLOBAL (\S+)", str(e))[:5]
        if needed:
            raise UnsafeCheckpointError(
                f"{path} cannot be loaded safely: it is a pickle that needs Python code to load "
                f"({', '.join(needed)}), and loading never runs code from a file: {_SAFE_OPTIONS}") from None
        raise DamagedCheckpointError(f"{path} is a damaged or truncated PyTorch checkpoint (its pickle cannot be "
                                     f"read); {_REDOWNLOAD}") from None
    except Exception as e:  # a broken archive or pickle fails in many ways (RuntimeError, EOFError, KeyError, ...)
        first = str(e).splitlines()[0] if str(e) else "unexpected end of file"
        if "weights_only" in first:
            first = "unreadable"
        raise DamagedCheckpointError(f"{path} is a damaged or truncated PyTorch checkpoint ({type(e).__name__}: "
                                     f"{first}); {_REDOWNLOAD}") from None


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))[:5]
    except Exception:  # only used to make the message more specific
        return []


def _cast(t: torch.Tensor, dtype: torch.dtype | None, device) -> torch.Tensor:
    if dtype is not None and t.is_floating_point() and t.dtype != dtype:
        t = t.to(dtype)
    return t.to(device)


def normalize_state_dict(obj, source: str = "state dict") -> dict[str, torch.Tensor]:
    """Unwrap `module` / `state_dict`, check every value is a tensor, rename framestride_embed -> fps_embedding."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a state dict; expected a mapping of "
                              "parameter names to tensors")
    if isinstance(obj.get("module"), Mapping):  # DeepSpeed (spec §1.1)
        obj = obj["module"]
        # DynamiCrafter's loader drops a 16-character "_forward_module." prefix in this case.
        if obj and all(k.startswith("_forward_module.") for k in obj):
            obj = {k[len("_forward_module."):]: v for k, v in obj.items()}
    elif isinstance(obj.get("state_dict"), Mapping):  # Lightning
        obj = obj["state_dict"]
    not_tensors = [k for k, v in obj.items() if not torch.is_tensor(v)]
    if not_tensors:
        raise CheckpointError(f"{source} is not a plain state dict: entries {not_tensors[:5]} are not tensors; "
                              "expected a mapping of parameter names to tensors (optionally under 'state_dict' or "
                              "'module')")
    # The DynamiCrafter 256 base checkpoint names the frame-stride MLP framestride_embed (spec §1.2).
    out = OrderedDict()
    for k, v in obj.items():
        out[k.replace("framestride_embed", "fps_embedding")] = v
    return out


# -- recognising the model ------------------------------------------------------------------------------------------

# Keys only the DynamiCrafter family has: the misspelt temporal conv, init_attn, the camera parts (spec §11).
_FAMILY_MARKERS = (".temopral_conv.", ".init_attn.", ".pluker_projection.", ".epipolar.", ".cc_projection.",
                   "pose_encoder.", "fps_embedding.")


def detect_variant(state_dict: Mapping[str, torch.Tensor]) -> Detected:
    """Variant, resolution and prediction type of a (normalised) state dict, from key names and shapes only."""
    keys = list(state_dict)
    if not any(m in k or k.startswith(m) for k in keys for m in _FAMILY_MARKERS):
        raise CheckpointError(f"this checkpoint is not a CamI2V / CameraCtrl / MotionCtrl / DynamiCrafter model: "
                              f"{describe_foreign(state_dict)}. Expected a file such as 256_cami2v.pt "
                              "(huggingface MuteApo/CamI2V) or DynamiCrafter's model.ckpt, whose keys include "
                              "model.diffusion_model.*.temopral_conv.*")
    has_pose = any(k.startswith("pose_encoder.") for k in keys)
    if any(".epipolar." in k for k in keys) or any(".pluker_projection." in k for k in keys):
        variant = "cami2v"
    elif any(".cc_projection." in k for k in keys):
        variant = "cameractrl" if has_pose else "motionctrl"
    elif has_pose:
        variant = "cameractrl"
    else:
        variant = "dynamicrafter"
    # 256 models learn the image-cross-attention scale (attn2.alpha); 512 models do not and carry scale_arr (§1.3).
    if any(k.endswith(".attn2.alpha") for k in keys):
        prediction = "eps"
    elif "scale_arr" in state_dict or any(k.endswith(".attn2.to_k_ip.weight") for k in keys):
        prediction = "v"
    else:
        prediction = "eps"  # a partial file without spatial layers: nothing tells; assume the 256 release
    family = _family(state_dict, prediction)
    return Detected(variant, PRESETS[family].resolution if family else None, prediction)


def _model_channels(state_dict) -> int | None:
    """UNet base width from whichever tensor is present (full files: the first conv)."""
    probes = (("model.diffusion_model.input_blocks.0.0.weight", 0), ("model.diffusion_model.out.2.weight", 1),
              ("model.diffusion_model.time_embed.0.weight", 1), ("pose_encoder.encoder_conv_in.weight", 0))
    for key, dim in probes:
        if key in state_dict:
            return int(state_dict[key].shape[dim])
    return None


def _family(state_dict, prediction) -> str | None:
    """The preset whose base model has this width and prediction type (dynamicrafter-256/-512 or tiny)."""
    width = _model_channels(state_dict)
    for name in ("dynamicrafter-256", "dynamicrafter-512", "tiny"):
        cfg = PRESETS[name]
        if cfg.unet["model_channels"] == width and cfg.parameterization == prediction:
            return name
    return None


def infer_config(state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None,
                 source: str = "this checkpoint") -> ModelConfig:
    """The ModelConfig of a checkpoint: from its header (`cami2v_config`) when present, else detected from keys."""
    if metadata and CONFIG_METADATA_KEY in metadata:
        try:
            return ModelConfig.from_json(metadata[CONFIG_METADATA_KEY])
        except ConfigError as e:
            raise CheckpointError(f"{source} carries a {CONFIG_METADATA_KEY} header that is not a valid model config: "
                                  f"{e}") from e
    detected = detect_variant(state_dict)
    family = _family(state_dict, detected.prediction)
    if family is None:
        raise CheckpointError(
            f"{source} holds a {detected.variant} model of an unknown size (UNet width "
            f"{_model_channels(state_dict)}, {detected.prediction}-prediction) that matches no preset; load it with "
            "an explicit config (load_model(path, config='my.yaml')) or save it with its config in the safetensors "
            f"header ({CONFIG_METADATA_KEY})")
    if family == "tiny":
        return PRESETS["tiny"].with_variant(detected.variant, pose_dim=_motionctrl_pose_dim(state_dict))
    res = "256" if family == "dynamicrafter-256" else "512"
    name = f"{detected.variant}-{res}"
    if name in PRESETS:
        return PRESETS[name].replace()
    # Variants never released at this size (e.g. CameraCtrl 512): the base model plus the 256 camera parts.
    donor = PRESETS["cami2v-512" if res == "512" else "cami2v-256"]
    return PRESETS[family].with_variant(detected.variant, pose_encoder=donor.pose_encoder, epipolar=donor.epipolar,
                                        pose_dim=_motionctrl_pose_dim(state_dict))


def _motionctrl_pose_dim(state_dict) -> int:
    for k, v in state_dict.items():
        if k.endswith(".cc_projection.weight") and v.ndim == 2 and v.shape[1] > v.shape[0]:
            return int(v.shape[1] - v.shape[0])  # cc_projection maps [C + pose_dim] -> C (spec §5.2)
    return 12


def describe_foreign(state_dict: Mapping[str, torch.Tensor]) -> str:
    """One phrase saying what a non-CamI2V state dict looks like (SD 1.x/2.x/XL, SVD, a bare VAE, ...)."""
    keys = list(state_dict)

    def has(fragment):
        return any(fragment in k for k in keys)

    def shape(key):
        return tuple(state_dict[key].shape) if key in state_dict else None

    if not keys:
        return "it holds no tensors at all"
    conv_in = shape("model.diffusion_model.input_blocks.0.0.weight")
    if has("conditioner.embedders.") and has("time_stack"):
        return "it looks like a Stable Video Diffusion checkpoint"
    if has("conditioner.embedders."):
        return "it looks like a Stable Diffusion XL checkpoint"
    if has("cond_stage_model.transformer.text_model.") and conv_in and conv_in[1] == 4:
        return "it looks like a Stable Diffusion 1.x checkpoint (CLIP-L text encoder, 4-channel image UNet)"
    if has("cond_stage_model.model.transformer.") and conv_in and conv_in[1] == 4:
        return "it looks like a Stable Diffusion 2.x checkpoint (OpenCLIP text encoder, 4-channel image UNet)"
    if conv_in:
        return f"it has an LDM UNet (input conv {list(conv_in)}) but none of DynamiCrafter's temporal layers"
    if has("motion_modules."):
        return "it looks like an AnimateDiff motion module"
    if has("down_blocks.") and has("conv_in."):
        return "it looks like a diffusers-format model, not an original-format (LDM) checkpoint"
    if has("encoder.conv_in.") and has("decoder.conv_out."):
        return "it looks like a standalone VAE"
    if any(k.startswith(("visual.", "text_model.", "transformer.resblocks.")) for k in keys):
        return "it looks like a standalone CLIP model"
    return f"its keys (e.g. {', '.join(keys[:3])}) match no known model"


# -- comparing against the model ------------------------------------------------------------------------------------

def _group(key: str) -> str:
    """Prefix a key is reported under: top-level part, or the UNet block for model.diffusion_model keys."""
    if "." not in key:
        return "schedule buffers"
    parts = key.split(".")
    if parts[:2] == ["model", "diffusion_model"] and len(parts) > 2:
        return ".".join(parts[:3])
    return parts[0]


def _grouped(keys: list[str], limit: int = 8) -> str:
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(_group(k), []).append(k)
    items = [f"{g} ({len(v)} key{'s' if len(v) > 1 else ''}, e.g. {v[0]})" for g, v in groups.items()]
    more = f", and {len(items) - limit} more groups" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


def check_state_dict(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size | tuple],
                     model_name: str, source: str = "this checkpoint") -> None:
    """Raise CheckpointError listing missing / unexpected keys (grouped by prefix) and shape mismatches."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    problems = []
    if missing:
        hint = (" It looks like a partial checkpoint (only some layers, e.g. the trained camera layers); merge it "
                "into the full base checkpoint or load the complete released file."
                if len(missing) > len(expected) // 4 else "")
        problems.append(f"{source} is missing {len(missing)} of the {len(expected)} keys a {model_name} model needs: "
                        f"{_grouped(missing)}.{hint}")
    if unexpected:
        problems.append(f"{source} has {len(unexpected)} keys a {model_name} model does not have: "
                        f"{_grouped(unexpected)}.")
    mismatched = [(k, tuple(expected[k]), tuple(state_dict[k].shape)) for k in expected
                  if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k])]
    if mismatched:
        shown = "; ".join(f"{k}: expected {list(e)}, found {list(f)}" for k, e, f in mismatched[:5])
        more = f" (and {len(mismatched) - 5} more)" if len(mismatched) > 5 else ""
        problems.append(f"{source} has {len(mismatched)} tensors whose shape differs from a {model_name} model: "
                        f"{shown}{more}.")
    if problems:
        raise CheckpointError(" ".join(problems) + " Check that the file matches the chosen model/config.")


# -- writing --------------------------------------------------------------------------------------------------------

def save_safetensors(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike,
                     metadata: Mapping[str, str] | None = None) -> None:
    """Write a safetensors file atomically (temp file + rename), streaming one tensor at a time."""
    # safetensors.torch.save_file first turns every tensor into an in-memory bytes object, i.e. a second copy of
    # a multi-GB model; the format is simple enough (8-byte little-endian header length, JSON header, raw data)
    # to stream instead. The result is read back by the safetensors library in the tests.
    path = Path(path)
    entries, offset = {}, 0
    for key, t in state_dict.items():
        if t.dtype not in _ST_NAMES:
            raise CheckpointError(f"cannot save {key}: dtype {t.dtype} has no safetensors equivalent")
        nbytes = t.numel() * t.element_size()
        entries[key] = {"dtype": _ST_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header = dict(entries)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format pads the header to 8-byte alignment with spaces
    with atomic_write(path) as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for key, t in state_dict.items():
            t = t.detach().to("cpu").contiguous()
            if t.numel():
                f.write(t.reshape(-1).view(torch.uint8).numpy().data)


def convert(src: str | os.PathLike, dst: str | os.PathLike, dtype: str | torch.dtype | None = None,
            config: ModelConfig | None = None) -> ModelConfig:
    """Convert a checkpoint to safetensors with its ModelConfig in the header; returns that config."""
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"the output must be a .safetensors file; got {dst}")
    if dst.resolve() == src.resolve():
        raise CheckpointError(f"input and output are the same file ({src}); choose another output name")
    sd, metadata = load_state_dict(src, dtype=dtype)
    if config is None:
        config = infer_config(sd, metadata, source=str(src))
    metadata = dict(metadata)
    metadata.update({"format": "pt", CONFIG_METADATA_KEY: config.to_json()})
    save_safetensors(sd, dst, metadata)
    return config


def summarize(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Parameter counts per top-level part and dtype counts of a state dict (works on meta tensors)."""
    parts: dict[str, int] = {}
    dtypes: dict[str, int] = {}
    for k, v in state_dict.items():
        if "." not in k:
            part = "schedule buffers"
        else:
            part = "model.diffusion_model" if k.startswith("model.diffusion_model.") else k.split(".", 1)[0]
        parts[part] = parts.get(part, 0) + v.numel()
        name = str(v.dtype).removeprefix("torch.")
        dtypes[name] = dtypes.get(name, 0) + v.numel()
    return {"parts": parts, "dtypes": dtypes, "keys": len(state_dict), "numel": sum(parts.values())}


__all__ = ["CheckpointError", "DamagedCheckpointError", "NotACheckpointError", "UnsafeCheckpointError", "Detected",
           "detect_variant", "infer_config", "load_state_dict", "load_shapes", "read_safetensors_header", "normalize_state_dict", "check_state_dict", "describe_foreign",
           "save_safetensors", "convert", "summarize", "parse_dtype", "CONFIG_METADATA_KEY", "VARIANTS"]
