"""cami2v_core: a clean PyTorch implementation of CamI2V (arXiv 2410.15957) and its baselines. Never imports comfy."""

from __future__ import annotations

__all__ = ["build_model", "load_model"]


def __getattr__(name):
    # Lazy so that `import cami2v_core.camera` stays cheap and never builds the model code.
    if name in ("build_model", "load_model"):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'cami2v_core' has no attribute {name!r}")
