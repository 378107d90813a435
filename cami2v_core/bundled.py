"""The tiny CamI2V trained by this project (training/README.md) and shipped inside the package.

It is the default of `python -m cami2v_core generate` and of the ComfyUI loader, so a fresh install makes a real
(small, 64x64-ish) camera-controlled video on a laptop CPU without downloading anything.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BUNDLED_MODEL_NAME = "cami2v-tiny-synthetic.safetensors"
BUNDLED_MODEL = WEIGHTS_DIR / BUNDLED_MODEL_NAME


def bundled_model_path() -> Path | None:
    """The bundled model file, or None when this install has none (it is trained by training/ and committed)."""
    return BUNDLED_MODEL if BUNDLED_MODEL.is_file() else None


# The no-camera companion: DynamiCrafter (no pose encoder, no epipolar attention) trained with the same data, VAE,
# steps and optimiser as the bundled model (training/README.md, "Bundled no-camera companion"), so that
# `python -m training.evaluate --synthetic --quick` can show what the camera conditioning adds.
BUNDLED_COMPANION_NAME = "dynamicrafter-tiny-synthetic.safetensors"
BUNDLED_COMPANION = WEIGHTS_DIR / BUNDLED_COMPANION_NAME


def bundled_companion_path() -> Path | None:
    """The bundled no-camera companion of the bundled model, or None when this install has none."""
    return BUNDLED_COMPANION if BUNDLED_COMPANION.is_file() else None
