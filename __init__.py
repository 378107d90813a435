"""ComfyUI-CamI2V: ComfyUI entry point. The node classes live in nodes/; the model code in cami2v_core/."""

import os
import sys

# Our libraries (cami2v_core, trajectories) are imported by absolute name. Append (never prepend) the pack folder,
# so ComfyUI's own top-level `nodes` module keeps precedence over our `nodes` package.
_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)

if __package__:  # loaded as a package: ComfyUI, or pytest under a folder name that is a valid identifier
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
else:  # loaded as a plain module (pytest under a folder name such as ComfyUI-CamI2V): no ComfyUI here
    from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
