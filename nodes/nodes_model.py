"""Model loader node: a CamI2V / CameraCtrl / MotionCtrl / DynamiCrafter checkpoint -> CAMI2V_MODEL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cami2v_core.bundled import BUNDLED_MODEL_NAME, bundled_model_path
from cami2v_core.checkpoint import DYNAMICRAFTER_BASES, REALCAM_FILES, CheckpointError, Partial, base_candidates
from cami2v_core.modules import attention

from . import comfy_bridge

BUNDLED_CHOICE = f"{BUNDLED_MODEL_NAME} (bundled)"
HF_REPO = "MuteApo/CamI2V"
# The authors' released files (spec §1.1; realcam spec §1). The CamI2V ones are self-contained fp16 state dicts; the
# RealCam-I2V ones hold only the camera layers and load over DynamiCrafter's model.ckpt of the same resolution.
RELEASE_FILES = ("256_cami2v.pt", "512_cami2v_50k.pt", "512_cami2v_100k.pt", "256_cameractrl.pt", "256_motionctrl.pt",
                 REALCAM_FILES["256"], REALCAM_FILES["512"])
REALCAM_RESOLUTION = {name: res for res, name in REALCAM_FILES.items()}
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass
class CamI2VModelHandle:
    """What travels on a CAMI2V_MODEL wire: the model plus how the user wants it placed."""

    model: torch.nn.Module
    name: str
    dtype: torch.dtype
    attention: str
    keep_loaded: bool

    @property
    def variant(self) -> str:
        return self.model.config.variant


def checkpoint_choices() -> list[str]:
    """Loader choices: the bundled tiny model, local files, then release files not downloaded yet.

    Release files are listed by their bare file name whether or not they are downloaded, so a workflow that names
    one (ours included) passes ComfyUI's list check before the download and still names the same file after it.
    """
    local = comfy_bridge.list_model_files()
    choices = [BUNDLED_CHOICE] if bundled_model_path() else []
    choices += local
    choices += [f for f in RELEASE_FILES if f not in local]
    return choices


def missing_release_files() -> list[str]:
    """Release files that no model folder holds yet."""
    local = set(comfy_bridge.list_model_files())
    return [f for f in RELEASE_FILES if f not in local]


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """auto: fp16 on CUDA (as the authors' demo), fp32 elsewhere; otherwise the named precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def resolve_checkpoint(name: str, download_missing: bool):
    """A loader choice -> a file path, downloading a release file only when the user allowed it."""
    if name == BUNDLED_CHOICE:
        path = bundled_model_path()
        if path is None:
            raise ValueError("the bundled tiny model is missing from this install; reinstall the pack or pick a "
                             "checkpoint from models/cami2v")
        return path
    path = comfy_bridge.find_model_file(name)
    if path is not None:
        return path
    if name not in RELEASE_FILES:
        raise ValueError(f"checkpoint {name!r} is not in {', '.join(map(str, comfy_bridge.model_dirs()))}; put the "
                         f"file there and refresh the page")
    if not download_missing:
        raise ValueError(f"{name} is not downloaded yet. Either enable 'download_missing' on this node, or download "
                         f"it from https://huggingface.co/{HF_REPO} into {comfy_bridge.model_dirs()[0]}")
    return download_release(name)


def release_download(name: str) -> dict | None:
    """ComfyUI's model metadata for a release file ({name, url, directory}), so a workflow can offer the download;
    None for any other file."""
    if name not in RELEASE_FILES:
        return None
    return {"name": name, "url": f"https://huggingface.co/{HF_REPO}/resolve/main/{name}",
            "directory": comfy_bridge.MODEL_FOLDER}


def download_release(name: str, repo: str = HF_REPO, filename: str | None = None, subfolder: str = ""):
    """Fetch one release file (default: from the authors' Hugging Face repo) into the model folder (opt-in only)."""
    target = comfy_bridge.download_dir() / subfolder
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(repo, filename or name, local_dir=str(target))
    except Exception as e:  # offline, gated, disk full: all become one actionable message
        raise RuntimeError(f"could not download {name} from https://huggingface.co/{repo} ({type(e).__name__}: "
                           f"{e}). Check the network, or download it by hand into {target}") from e


def ensure_realcam_base(name: str, path, download_missing: bool) -> None:
    """A RealCam-I2V file needs its DynamiCrafter base: fetch it (opt-in) when no model folder holds one."""
    resolution = REALCAM_RESOLUTION.get(name)
    if resolution is None or not download_missing:
        return
    base = DYNAMICRAFTER_BASES[resolution]
    if base_candidates(Partial(resolution), Path(path).parent, comfy_bridge.base_search_dirs()):
        return
    repo = base.url.removeprefix("https://huggingface.co/")
    download_release(base.label, repo=repo, filename=base.filename, subfolder=base.folder)


class CamI2VModelLoader:
    """Load a CamI2V-family checkpoint (variant and resolution detected from its keys)."""

    @classmethod
    def INPUT_TYPES(cls):
        missing = missing_release_files()
        return {
            "required": {
                "ckpt_name": (checkpoint_choices(), {"tooltip": "Checkpoint in models/cami2v (CamI2V 256/512, "
                              "RealCam-I2V 256/512, CameraCtrl, MotionCtrl, DynamiCrafter, or a model trained with "
                              "training/). RealCam-I2V files load over DynamiCrafter's model.ckpt of the same size "
                              "(models/cami2v/DynamiCrafter_512/model.ckpt or in models/checkpoints; fetched with "
                              "download_missing). "
                              "'(bundled)' is the tiny CPU demo model. The authors' release files are always "
                              "listed; one not in models/cami2v is fetched only when download_missing is on. "
                              + (f"Not downloaded yet: {', '.join(missing)}." if missing else
                                 "All release files are downloaded.")}),
                "precision": (list(PRECISIONS), {"default": "auto", "tooltip": "Weight precision. auto = fp16 on "
                              "GPU, fp32 on CPU. bf16 avoids fp16 overflow on recent GPUs."}),
                "attention": (list(attention.BACKENDS), {"default": "auto", "tooltip": "Attention kernel. auto = "
                              "xformers on CUDA when installed and working, else PyTorch SDPA. 'math' is the slow "
                              "reference."}),
                "keep_loaded": ("BOOLEAN", {"default": True, "tooltip": "Keep the model on the GPU between runs "
                                "(faster). Off: move it back to system RAM after each run and keep the encoders "
                                "and VAE off the GPU while the UNet samples (less VRAM)."}),
            },
            "optional": {
                "download_missing": ("BOOLEAN", {"default": False, "tooltip": f"Allow downloading a missing "
                                     f"release file from huggingface.co/{HF_REPO} (several GB). Off by default."}),
            },
        }

    RETURN_TYPES = ("CAMI2V_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded model with its variant (cami2v, cameractrl, motionctrl or dynamicrafter).",)
    FUNCTION = "load"
    CATEGORY = "CamI2V"
    DESCRIPTION = ("Loads a CamI2V, RealCam-I2V, CameraCtrl, MotionCtrl or DynamiCrafter checkpoint. The file holds "
                   "the whole model (UNet, VAE, CLIP text and image encoders), so nothing else needs loading; a "
                   "RealCam-I2V file is merged over its DynamiCrafter base.")

    def load(self, ckpt_name, precision="auto", attention="auto", keep_loaded=True, download_missing=False):
        from cami2v_core import load_model

        path = resolve_checkpoint(ckpt_name, download_missing)
        dtype = resolve_dtype(precision, comfy_bridge.torch_device())
        attention_backend_for(attention)  # validate now, not mid-sampling
        ensure_realcam_base(ckpt_name, path, download_missing)
        try:
            model = load_model(path, device="cpu", dtype=dtype, search_dirs=comfy_bridge.base_search_dirs())
        except CheckpointError as e:
            if "holding only the camera layers" not in str(e):
                raise
            raise CheckpointError(f"{e} In ComfyUI, models/{comfy_bridge.MODEL_FOLDER} and models/checkpoints are "
                                  f"searched; or switch on download_missing to fetch the base.") from e
        return (CamI2VModelHandle(model, str(ckpt_name), dtype, attention, bool(keep_loaded)),)


def attention_backend_for(name: str) -> str:
    """Validate an attention choice (raises with the choices) and return it."""
    if name not in attention.BACKENDS:
        raise ValueError(f"attention must be one of {', '.join(attention.BACKENDS)}; got {name!r}")
    if name == "xformers" and not attention.xformers_available():
        raise ValueError("attention 'xformers' needs xformers installed with a working CUDA kernel; pick 'auto' "
                         "or 'sdpa'")
    return name
