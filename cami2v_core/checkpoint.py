"""Reading checkpoints safely, recognising which model they hold, and converting them to safetensors.

Loading never runs code from a file: safetensors, or `torch.load(weights_only=True)` (memory-mapped where the file
format allows it). The released files (spec §1.1) are whole-model state dicts: CamI2V / CameraCtrl / MotionCtrl `.pt`
in fp16, and DynamiCrafter `model.ckpt` in fp32 under a Lightning `state_dict` wrapper with the old
`framestride_embed` name. RealCam-I2V's files are partial (its camera layers only) and merge over DynamiCrafter's
`model.ckpt` (realcam spec §1); `load_with_base` finds that base and does the merge. Every failure is one sentence
that says what was found and what to do.
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


# -- partial checkpoints: RealCam-I2V over DynamiCrafter (realcam spec §1) -------------------------------------------

@dataclass(frozen=True)
class BaseCheckpoint:
    """A whole DynamiCrafter model that partial files merge over: its preset, Hugging Face repo and usual place."""

    preset: str    # "dynamicrafter-256" / "dynamicrafter-512"
    folder: str    # the folder the original configs keep it in: pretrained_models/<folder>/model.ckpt
    url: str
    filename: str = "model.ckpt"

    @property
    def label(self) -> str:
        """'DynamiCrafter_512/model.ckpt': how the file is named in messages."""
        return f"{self.folder}/{self.filename}"


# The 512 RealCam file needs DynamiCrafter_512, not the 256 base its upstream config names by mistake (spec §1).
DYNAMICRAFTER_BASES = {
    "256": BaseCheckpoint("dynamicrafter-256", "DynamiCrafter", "https://huggingface.co/Doubiiu/DynamiCrafter"),
    "512": BaseCheckpoint("dynamicrafter-512", "DynamiCrafter_512", "https://huggingface.co/Doubiiu/DynamiCrafter_512"),
}
REALCAM_FILES = {"256": "256_realcam-i2v_50k.safetensors", "512": "512_realcam-i2v_50k.safetensors"}

# Keys every whole checkpoint has: the UNet's input conv and the VAE's. A file with camera layers but without the
# UNet's holds only the trained camera parts (one that lacks only the VAE is a broken whole file, reported as such).
_UNET_KEY = "model.diffusion_model.input_blocks.0.0.weight"
_WHOLE_MODEL_KEYS = (_UNET_KEY, "first_stage_model.encoder.conv_in.weight")
_CAMERA_MARKERS = ("pose_encoder.", ".pluker_projection.", ".epipolar.", ".cc_projection.")
_BASE_SUFFIXES = (".ckpt", ".safetensors")


@dataclass(frozen=True)
class Partial:
    """What a partial (camera-layers-only) file is: its preset when known, and which base it merges over.

    `resolution` is "256" or "512" when the file tells (its header, its released name, `attn2.alpha` or `scale_arr`
    keys); None for a file that does not (e.g. a tiny test model), which then fits any base of matching shapes.
    """

    resolution: str | None
    config: ModelConfig | None = None  # from the file's safetensors header, when it has one

    @property
    def base(self) -> BaseCheckpoint | None:
        """The DynamiCrafter file this one merges over (None when the resolution is unknown)."""
        return DYNAMICRAFTER_BASES.get(self.resolution) if self.resolution else None

    @property
    def preset(self) -> str | None:
        """'realcam-i2v-256' / 'realcam-i2v-512', or None when the resolution is unknown."""
        return f"realcam-i2v-{self.resolution}" if self.resolution else None

    def download_hint(self, next_to: Path | None = None) -> str:
        """One sentence saying which base to download and where to put it."""
        where = f"{next_to}/" if next_to is not None else "<your models folder>/"
        bases = [self.base] if self.base else list(DYNAMICRAFTER_BASES.values())
        files = " or ".join(f"{b.filename} from {b.url} (the {b.preset.split('-')[1]} base)" for b in bases)
        places = " or ".join(f"{where}{b.label}" for b in bases)
        return f"download {files} and put it at {places}, or pass its path as base= (command line: --base)"


def is_partial(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for a file holding camera layers but not the whole model (RealCam-I2V's releases, spec §1)."""
    has_camera = any(k.startswith(m) or m in k for k in state_dict for m in _CAMERA_MARKERS)
    return has_camera and _UNET_KEY not in state_dict


def detect_partial(state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None,
                   name: str = "") -> Partial | None:
    """None for a whole checkpoint; for a partial one, its resolution (header, keys, then file name) and base."""
    if not is_partial(state_dict):
        return None
    config = None
    if metadata and CONFIG_METADATA_KEY in metadata:
        config = infer_config(state_dict, metadata, name or "this checkpoint")
        h, w = config.resolution
        return Partial({(256, 256): "256", (320, 512): "512"}.get((h, w)), config)
    keys = list(state_dict)
    # The 256 models learn attn2.alpha and the 512 ones carry scale_arr (keys README); a camera-only file has
    # neither, and its layers have the same shapes at both sizes, so its released name is the last witness.
    if any(k.endswith(".attn2.alpha") for k in keys):
        return Partial("256")
    if "scale_arr" in state_dict:
        return Partial("512")
    found = re.findall(r"(?<![0-9])(256|512)(?![0-9])", Path(name).name)
    return Partial(found[0] if len(set(found)) == 1 else None)


def _child(folder: Path, name: str) -> Path | None:
    """folder/name, matching the name without regard to case (downloads keep DynamiCrafter_512 or lowercase it)."""
    exact = folder / name
    if exact.exists():
        return exact
    try:
        return next((p for p in folder.iterdir() if p.name.lower() == name.lower()), None)
    except OSError:
        return None


def base_candidates(partial: Partial, next_to: Path | None = None,
                    search_dirs: tuple[str | os.PathLike, ...] | list = ()) -> list[Path]:
    """Where a partial file's base may sit, in the order tried: next to it, then in each search folder.

    In each folder D: D/<folder>/model.ckpt (the original layout, e.g. DynamiCrafter_512/model.ckpt), D/<folder>.ckpt
    and one level down, D/*/<folder>/model.ckpt (ComfyUI's models/checkpoints/DynamiCrafter_512/model.ckpt); beside
    the partial file also a plain model.ckpt. `.safetensors` conversions are accepted wherever `.ckpt` is.
    """
    bases = [partial.base] if partial.base else list(DYNAMICRAFTER_BASES.values())
    dirs = ([(Path(next_to), True)] if next_to is not None else []) + [(Path(d), False) for d in search_dirs]
    out: list[Path] = []

    def add(path):
        if path is not None and path.is_file() and path not in out:
            out.append(path)

    for folder, beside in dirs:
        if not folder.is_dir():
            continue
        for b in bases:
            stem = Path(b.filename).stem
            sub = _child(folder, b.folder)
            for suffix in _BASE_SUFFIXES:
                if sub is not None and sub.is_dir():
                    add(_child(sub, stem + suffix))
                add(_child(folder, b.folder + suffix))
        if beside:
            for suffix in _BASE_SUFFIXES:
                add(_child(folder, "model" + suffix))
        for inner in sorted(p for p in folder.iterdir() if p.is_dir()):
            for b in bases:
                sub = _child(inner, b.folder)
                if sub is not None and sub.is_dir():
                    for suffix in _BASE_SUFFIXES:
                        add(_child(sub, Path(b.filename).stem + suffix))
    return out


def check_base(partial: Partial, partial_sd: Mapping[str, torch.Tensor], base_sd: Mapping[str, torch.Tensor],
               base_source: str, partial_source: str = "the partial checkpoint") -> None:
    """Raise CheckpointError unless base_sd is a whole DynamiCrafter model this partial file can merge over."""
    # Each message opens with "<base> is ...;" so find_base can list rejected candidates by that first clause.
    if is_partial(base_sd) or not all(k in base_sd for k in _WHOLE_MODEL_KEYS):
        lacks = ", ".join(k for k in _WHOLE_MODEL_KEYS if k not in base_sd) or "the base UNet"
        raise CheckpointError(f"{base_source} is not a whole model (it lacks {lacks}); it cannot be the base of "
                              f"{partial_source}: " + partial.download_hint())
    detected = detect_variant(base_sd)
    if detected.variant != "dynamicrafter":
        raise CheckpointError(f"{base_source} is a {detected.variant} model; {partial_source} merges over "
                              "DynamiCrafter's own model.ckpt: " + partial.download_hint())
    wanted = PRESETS[partial.base.preset].resolution if partial.base else None
    if wanted is not None and detected.resolution != wanted:
        found = "x".join(map(str, detected.resolution)) if detected.resolution else "an unknown size"
        raise CheckpointError(f"{base_source} is DynamiCrafter at {found}; {partial_source} is the "
                              f"{partial.resolution} model and needs {partial.base.label} ({partial.base.url}): "
                              + partial.download_hint())
    clashes = [(k, list(base_sd[k].shape), list(v.shape)) for k, v in partial_sd.items()
               if k in base_sd and tuple(base_sd[k].shape) != tuple(v.shape)]
    width = _model_channels(base_sd)
    conv_in = partial_sd.get("pose_encoder.encoder_conv_in.weight")
    if conv_in is not None and width is not None and int(conv_in.shape[0]) != width:
        clashes.append(("pose_encoder.encoder_conv_in.weight (output width vs the UNet's)", [width],
                        [int(conv_in.shape[0])]))
    if clashes:
        shown = ", ".join(f"{k}: base {b}, partial {p}" for k, b, p in clashes[:3])
        raise CheckpointError(f"{base_source} is a model of another size than {partial_source} ({shown}); "
                              + partial.download_hint())


def find_base(partial: Partial, partial_sd: Mapping[str, torch.Tensor], next_to: Path | None = None,
              search_dirs: tuple[str | os.PathLike, ...] | list = (),
              partial_source: str = "the partial checkpoint") -> Path:
    """The first base candidate that fits the partial file; CheckpointError saying what to download otherwise."""
    rejected = []
    candidates = base_candidates(partial, next_to, search_dirs)
    for path in candidates:
        try:
            check_base(partial, partial_sd, load_shapes(path)[0], str(path), partial_source)
            return path
        except CheckpointError as e:
            rejected.append(f"{path.name} in {path.parent} ({str(e).split(';')[0].removeprefix(str(path) + ' ')})")
    looked = [str(next_to)] if next_to is not None else []
    looked += [str(d) for d in search_dirs]
    what = f"the {partial.resolution} " if partial.resolution else "a "
    tried = f" Found but not usable: {'; '.join(rejected)}." if rejected else ""
    raise CheckpointError(
        f"{partial_source} is {what}RealCam-I2V file holding only the camera layers; it loads over "
        f"{partial.base.label if partial.base else 'DynamiCrafter model.ckpt'}, which was not found "
        f"(looked in {', '.join(looked) or 'no folder'}).{tried} To fix: {partial.download_hint(next_to)}.")


def merge_over_base(base_sd: Mapping[str, torch.Tensor], partial_sd: Mapping[str, torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
    """base ∪ partial, the partial's tensors winning, with framestride_embed renamed (original load_checkpoints)."""
    base_sd = normalize_state_dict(base_sd, "the base checkpoint")
    partial_sd = normalize_state_dict(partial_sd, "the partial checkpoint")
    merged = OrderedDict(base_sd)
    merged.update(partial_sd)
    return merged


def load_with_base(path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
                   base: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
                   search_dirs: tuple[str | os.PathLike, ...] | list = (),
                   dtype: str | torch.dtype | None = None, device: str | torch.device = "cpu",
                   ) -> tuple[dict[str, torch.Tensor], dict[str, str], Partial | None]:
    """(state dict, header metadata, Partial or None): a whole file as stored, a partial one merged over its base.

    The base is `base` when given, else the first fitting file next to the partial one or in `search_dirs`
    (see base_candidates). A partial file without a base is a CheckpointError naming the file to download: it is
    never loaded alone, which would leave the base UNet random.
    """
    if isinstance(path_or_state_dict, Mapping):
        source, next_to = "the given state dict", None
        sd, metadata = normalize_state_dict(path_or_state_dict, source), {}
        sd = {k: _cast(v, parse_dtype(dtype), device) for k, v in sd.items()}
    else:
        source, next_to = str(path_or_state_dict), Path(path_or_state_dict).parent
        sd, metadata = load_state_dict(path_or_state_dict, dtype=dtype, device=device)
    partial = detect_partial(sd, metadata, "" if next_to is None else Path(path_or_state_dict).name)
    if partial is None:
        if base is not None:
            raise CheckpointError(f"{source} is a whole checkpoint and needs no base; drop the base "
                                  "(command line: --base), which is only for partial files such as "
                                  f"{REALCAM_FILES['512']}")
        return sd, metadata, None
    if base is None:
        base = find_base(partial, sd, next_to, search_dirs, source)
    if isinstance(base, Mapping):
        base_source = "the given base state dict"
        base_sd = {k: _cast(v, parse_dtype(dtype), device) for k, v in normalize_state_dict(base).items()}
    else:
        base_source = str(base)
        base_sd, _ = load_state_dict(base, dtype=dtype, device=device)
    check_base(partial, sd, base_sd, base_source, source)
    return merge_over_base(base_sd, sd), metadata, partial


def config_for(state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None, partial: Partial | None,
               source: str = "this checkpoint") -> ModelConfig:
    """The ModelConfig of a loaded (merged) checkpoint: header, then the RealCam preset of a partial file, then keys."""
    if partial is not None and partial.config is not None:
        return partial.config.replace()
    if partial is not None and partial.preset is not None and not (metadata and CONFIG_METADATA_KEY in metadata):
        return PRESETS[partial.preset].replace()
    return infer_config(state_dict, metadata, source)


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
            config: ModelConfig | None = None, base: str | os.PathLike | None = None,
            search_dirs: tuple[str | os.PathLike, ...] | list = ()) -> ModelConfig:
    """Convert a checkpoint to safetensors with its ModelConfig in the header; returns that config.

    A partial file (RealCam-I2V) is merged over its base first (`base`, or found next to it / in `search_dirs`),
    so the output is the whole model and loads on its own.
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"the output must be a .safetensors file; got {dst}")
    if dst.resolve() == src.resolve():
        raise CheckpointError(f"input and output are the same file ({src}); choose another output name")
    sd, metadata, partial = load_with_base(src, base=base, search_dirs=search_dirs, dtype=dtype)
    if config is None:
        config = config_for(sd, metadata, partial, source=str(src))
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
           "detect_variant", "infer_config", "load_state_dict", "load_shapes",
           "BaseCheckpoint", "Partial", "DYNAMICRAFTER_BASES", "REALCAM_FILES", "is_partial", "detect_partial",
           "base_candidates", "check_base", "find_base", "merge_over_base", "load_with_base", "config_for",
           "read_safetensors_header", "normalize_state_dict", "check_state_dict", "describe_foreign",
           "save_safetensors", "convert", "summarize", "parse_dtype", "CONFIG_METADATA_KEY", "VARIANTS"]
