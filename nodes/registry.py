"""The node registry: node id -> display name, the one place any message takes a node's name from.

Node ids are prefixed `CamI2V` and never renamed (retired nodes are deprecated instead). Every node's errors start
with its display name: `name_errors` wraps each node's function once, so the node code raises plain messages.
"""

from __future__ import annotations

import functools

from cami2v_core.errors import CamI2VError

DISPLAY_NAMES = {
    "CamI2VModelLoader": "CamI2V Model Loader",
    "CamI2VSampler": "CamI2V Sampler",
    "CamI2VDecode": "CamI2V Decode",
    "CamI2VCameraPreset": "CamI2V Camera Preset",
    "CamI2VCameraOrbit": "CamI2V Camera Orbit",
    "CamI2VCameraPan": "CamI2V Camera Pan",
    "CamI2VCameraZoom": "CamI2V Camera Zoom",
    "CamI2VCameraLook": "CamI2V Camera Look / Roll",
    "CamI2VCameraCombine": "CamI2V Camera Combine",
    "CamI2VCameraRetime": "CamI2V Camera Resample / Retime",
    "CamI2VCameraFromText": "CamI2V Camera From Text (JSON / RealEstate10K)",
    "CamI2VCameraLoadFile": "CamI2V Camera Load File",
    "CamI2VCameraExport": "CamI2V Camera Export JSON",
    "CamI2VCameraPreview": "CamI2V Camera Preview",
    "CamI2VCameraFromVideo": "CamI2V Camera From Video",
    "CamI2VDepthLoader": "CamI2V Depth Model Loader (RealCam-I2V)",
    "CamI2VScenePreview": "CamI2V Scene Preview (RealCam-I2V)",
}


def node_name(node_id: str) -> str:
    """The display name users see for a node id, quoted for use in a message: 'CamI2V Sampler'."""
    return f"'{DISPLAY_NAMES[node_id]}'"


class NodeError(CamI2VError, ValueError):
    """An error of a node, its message prefixed with the node's display name (what ComfyUI's dialog shows)."""


def name_errors(cls: type, node_id: str) -> type:
    """Wrap cls.FUNCTION so user errors (ours and the libraries' ValueErrors) reach the user as '<display name>: message'."""
    title = DISPLAY_NAMES[node_id]
    function_name = cls.FUNCTION
    original = getattr(cls, function_name)
    if getattr(original, "_names_errors", False):
        return cls

    @functools.wraps(original)
    def run(self, *args, **kwargs):
        try:
            return original(self, *args, **kwargs)
        except (CamI2VError, ValueError) as e:
            message = str(e)
            if message.startswith(f"{title}:"):
                raise
            raise NodeError(f"{title}: {message}") from e

    run._names_errors = True
    setattr(cls, function_name, run)
    return cls
