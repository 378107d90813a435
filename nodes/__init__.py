"""Node registry: the classes of every node, named by nodes/registry.py (ids prefixed `CamI2V`, never renamed)."""

from . import comfy_bridge
from .nodes_camera import CAMERA_NODES
from .nodes_model import CamI2VModelLoader
from .nodes_realcam import REALCAM_NODES
from .nodes_sample import CamI2VDecode, CamI2VSampler
from .registry import DISPLAY_NAMES, name_errors

NODE_CLASS_MAPPINGS = {
    "CamI2VModelLoader": CamI2VModelLoader,
    "CamI2VSampler": CamI2VSampler,
    "CamI2VDecode": CamI2VDecode,
    **CAMERA_NODES,
    **REALCAM_NODES,
}
for _node_id, _cls in NODE_CLASS_MAPPINGS.items():
    name_errors(_cls, _node_id)
NODE_DISPLAY_NAME_MAPPINGS = {node_id: DISPLAY_NAMES[node_id] for node_id in NODE_CLASS_MAPPINGS}

comfy_bridge.register_model_folder()
