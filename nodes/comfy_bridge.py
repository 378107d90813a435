"""The only module that touches ComfyUI (`folder_paths`, `comfy.utils`, `comfy.model_management`).

Everything is imported lazily and degrades to plain-PyTorch behaviour when ComfyUI is absent, so the pack imports
and its nodes run in tests and scripts without ComfyUI.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

MODEL_FOLDER = "cami2v"
MODEL_EXTENSIONS = (".safetensors", ".pt", ".ckpt", ".pth")
PACK_DIR = Path(__file__).resolve().parents[1]
# Where models go without ComfyUI (scripts, tests): $CAMI2V_MODELS_DIR or ./models/cami2v.
STANDALONE_MODELS_DIR = Path(os.environ.get("CAMI2V_MODELS_DIR", Path.cwd() / "models" / MODEL_FOLDER))


def _folder_paths():
    try:
        import folder_paths  # ComfyUI's own module

        return folder_paths
    except ImportError:
        return None


def register_model_folder() -> None:
    """Register `models/cami2v` with ComfyUI, keeping any paths users added in extra_model_paths.yaml."""
    fp = _folder_paths()
    if fp is None:
        return
    default = os.path.join(fp.models_dir, MODEL_FOLDER)
    if MODEL_FOLDER in fp.folder_names_and_paths:
        paths, exts = fp.folder_names_and_paths[MODEL_FOLDER]
        if default not in paths:
            paths.append(default)
        fp.folder_names_and_paths[MODEL_FOLDER] = (paths, set(exts) | set(MODEL_EXTENSIONS))
    else:
        fp.folder_names_and_paths[MODEL_FOLDER] = ([default], set(MODEL_EXTENSIONS))
    os.makedirs(default, exist_ok=True)


def model_dirs() -> list[Path]:
    """Folders searched for checkpoints: ComfyUI's registered `cami2v` paths, else the standalone folder."""
    fp = _folder_paths()
    if fp is None:
        return [STANDALONE_MODELS_DIR]
    register_model_folder()
    return [Path(p) for p in fp.get_folder_paths(MODEL_FOLDER)]


def list_model_files() -> list[str]:
    """Checkpoint file names (relative to their model folder) found in the model folders."""
    fp = _folder_paths()
    if fp is not None:
        register_model_folder()
        return sorted(fp.get_filename_list(MODEL_FOLDER))
    names = []
    for d in model_dirs():
        if d.is_dir():
            names += [str(p.relative_to(d)) for p in d.rglob("*") if p.suffix in MODEL_EXTENSIONS]
    return sorted(set(names))


def base_search_dirs() -> list[Path]:
    """Folders searched for the DynamiCrafter base a RealCam-I2V file loads over: ours, then ComfyUI's checkpoints
    and diffusion_models folders (standalone: ours only)."""
    dirs = list(model_dirs())
    fp = _folder_paths()
    if fp is not None:
        for kind in ("checkpoints", "diffusion_models"):
            try:
                dirs += [Path(p) for p in fp.get_folder_paths(kind)]
            except KeyError:  # a ComfyUI without that folder kind
                continue
    return list(dict.fromkeys(dirs))


def find_model_file(name: str) -> Path | None:
    """The full path of a listed checkpoint name, or None when no model folder has it."""
    fp = _folder_paths()
    if fp is not None:
        register_model_folder()
        full = fp.get_full_path(MODEL_FOLDER, name)
        return Path(full) if full else None
    for d in model_dirs():
        if (d / name).is_file():
            return d / name
    return None


def download_dir() -> Path:
    """The folder a downloaded release file goes to (the first model folder)."""
    d = model_dirs()[0]
    d.mkdir(parents=True, exist_ok=True)
    return d


def torch_device() -> torch.device:
    """ComfyUI's compute device, else CUDA when available, else CPU."""
    try:
        import comfy.model_management as mm

        return mm.get_torch_device()
    except ImportError:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    """Where idle weights wait (ComfyUI's unet offload device, else CPU)."""
    try:
        import comfy.model_management as mm

        return mm.unet_offload_device()
    except ImportError:
        return torch.device("cpu")


def bytes_to_place(module: torch.nn.Module, device: torch.device) -> int:
    """Bytes of `module`'s parameters and buffers that are not on `device` yet (what moving it there costs)."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors if t.device != device)


def free_memory_for(module: torch.nn.Module, device: torch.device, working_bytes: int = 0) -> int:
    """Make room on `device` for `module` plus `working_bytes` of activations, as a good ComfyUI citizen.

    Asks `comfy.model_management.free_memory` for just that much, so ComfyUI offloads only as many of its other
    models (least recently used first) as it must; nothing is unloaded when the room is already there. Returns the
    bytes asked for (0 on a CPU or without ComfyUI, where there is nothing to manage)."""
    if device.type == "cpu":
        return 0
    try:
        import comfy.model_management as mm
    except ImportError:
        return 0
    required = bytes_to_place(module, device) + working_bytes + mm.minimum_inference_memory()
    mm.free_memory(required, device)
    return required


def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception when the user pressed Cancel (no-op without ComfyUI)."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return
    mm.throw_exception_if_processing_interrupted()


class Progress:
    """A progress bar that shows in ComfyUI (with optional preview images) and does nothing elsewhere."""

    def __init__(self, total: int):
        self.total = total
        try:
            import comfy.utils

            self._bar = comfy.utils.ProgressBar(total)
        except ImportError:
            self._bar = None

    def update(self, value: int, preview=None) -> None:
        """Set progress to `value` of total; `preview` is a PIL image shown on the node (ComfyUI only)."""
        if self._bar is None:
            return
        self._bar.update_absolute(value, self.total, ("JPEG", preview, 512) if preview is not None else None)


@contextlib.contextmanager
def interruptible(module: torch.nn.Module):
    """Check for Cancel before every top-level UNet block, so a cancel lands within a step, not after it."""
    handles = []
    for name in ("input_blocks", "middle_block", "output_blocks"):
        blocks = getattr(module, name, None)
        if blocks is None:
            continue
        for block in (blocks if isinstance(blocks, torch.nn.ModuleList) else [blocks]):
            handles.append(block.register_forward_pre_hook(lambda *_: check_interrupt()))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def input_dir() -> Path | None:
    """ComfyUI's input folder (None without ComfyUI)."""
    fp = _folder_paths()
    return Path(fp.get_input_directory()) if fp is not None else None


def output_dir() -> Path:
    """ComfyUI's output folder, else ./output."""
    fp = _folder_paths()
    return Path(fp.get_output_directory()) if fp is not None else Path.cwd() / "output"


def unique_output_path(prefix: str, suffix: str) -> Path:
    """output/<prefix>_00001<suffix>, numbered past existing files; refuses prefixes that leave the output folder."""
    root = output_dir().resolve()
    if not prefix.strip():
        raise ValueError("filename_prefix is empty; give a name such as cami2v/camera")
    if Path(prefix).is_absolute():
        raise ValueError(f"filename_prefix {prefix!r} is an absolute path; give a name relative to the output "
                         f"folder {root}, e.g. cami2v/camera")
    base = (root / prefix).resolve()
    if root != base and root not in base.parents:
        raise ValueError(f"filename_prefix {prefix!r} leads out of the output folder {root} (through '..' or a "
                         f"link); give a name inside it, e.g. cami2v/camera")
    n = 1
    while (candidate := base.parent / f"{base.name}_{n:05d}{suffix}").exists():
        n += 1
    return candidate
