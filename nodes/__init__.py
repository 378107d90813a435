"""Node registry: every node id is prefixed `CamI2V` and never renamed (retired nodes are deprecated instead)."""

from . import comfy_bridge
from .nodes_camera import CAMERA_NODES
from .nodes_model import CamI2VModelLoader
from .nodes_sample import CamI2VDecode, CamI2VSampler

NODES = {
    "CamI2VModelLoader": (CamI2VModelLoader, "CamI2V Model Loader"),
    "CamI2VSampler": (CamI2VSampler, "CamI2V Sampler"),
    "CamI2VDecode": (CamI2VDecode, "CamI2V Decode"),
    **CAMERA_NODES,
}
NODE_CLASS_MAPPINGS = {node_id: cls for node_id, (cls, _) in NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: name for node_id, (_, name) in NODES.items()}

comfy_bridge.register_model_folder()
