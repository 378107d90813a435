"""RealCam-I2V nodes: a metric depth model and the depth-aware scene preview (which the sampler can also use for
RealCam-I2V's scene-constrained noise shaping). The model itself loads with the CamI2V Model Loader."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cami2v_core import pipeline, scene
from cami2v_core.settings import DEFAULTS

from . import comfy_bridge
from .nodes_sample import CAMERA_TYPE, camera_path, placed, single_image
from .registry import node_name

DEPTH_TYPE = "CAMI2V_DEPTH"
SCENE_TYPE = "CAMI2V_SCENE"
DEPTH_FOLDER = "depth_anything"  # under models/cami2v: transformers' cache of the depth weights


@dataclass
class ScenePlan:
    """What travels on a CAMI2V_SCENE wire: the rendered scene and the path it was rendered for."""

    preview: scene.ScenePreview
    frames: int
    trace_scale: float  # the effective translation factor (after pipeline.camera_scale)


class CamI2VDepthLoader:
    """Load Depth Anything V2 metric (indoor, Hypersim; metres up to 20 m) through transformers."""

    @classmethod
    def INPUT_TYPES(cls):
        sizes = list(scene.DEPTH_MODELS)
        licences = ", ".join(f"{k}: {v}" for k, v in scene.DEPTH_LICENCES.items())
        return {
            "required": {
                "model": (sizes, {"default": "small", "tooltip": f"Depth Anything V2 Metric Indoor size. Licences: "
                          f"{licences} (non-commercial for base and large; large is RealCam-I2V's own)."}),
                "download_missing": ("BOOLEAN", {"default": False, "tooltip": "Fetch the weights from Hugging "
                                     f"Face into models/{comfy_bridge.MODEL_FOLDER}/{DEPTH_FOLDER} when they are "
                                     "not there yet (small: about 100 MB; large: 1.3 GB). Off: only local files."}),
            },
        }

    RETURN_TYPES = (DEPTH_TYPE,)
    RETURN_NAMES = ("depth_model",)
    OUTPUT_TOOLTIPS = ("A metric depth model for the scene preview.",)
    FUNCTION = "load"
    CATEGORY = "CamI2V/RealCam-I2V"
    DESCRIPTION = ("Loads the metric depth model RealCam-I2V uses to build a 3-D scene from the picture (needs the "
                   "transformers package, which every ComfyUI has).")

    def load(self, model, download_missing=False):
        cache = comfy_bridge.download_dir() / DEPTH_FOLDER
        try:
            return (scene.load_depth_model(model, local_files_only=not download_missing, cache_dir=str(cache)),)
        except scene.SceneError as e:
            if download_missing:
                raise
            raise scene.SceneError(f"{e} The weights are not in {cache} yet: switch on download_missing, or "
                                   f"download {scene.DEPTH_MODELS.get(model, model)} there by hand.") from None


class CamI2VScenePreview:
    """Render the picture's 3-D scene along the camera path, before spending a sampling run."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("CAMI2V_MODEL", {"tooltip": f"From {node_name('CamI2VModelLoader')}: the preview fits "
                          "the picture and reads the path exactly as that model's sampler will."}),
                "image": ("IMAGE", {"tooltip": "The picture to animate (the same one the sampler gets)."}),
                "camera": (CAMERA_TYPE, {"tooltip": "The camera path (the same one the sampler gets)."}),
                "depth_model": (DEPTH_TYPE, {"tooltip": f"From {node_name('CamI2VDepthLoader')}."}),
                "trace_scale": ("FLOAT", {"default": DEFAULTS.trace_scale, "min": 0.0, "max": 10.0, "step": 0.05,
                                "tooltip": "As the sampler's: use the same value there."}),
                "cond_frame": ("INT", {"default": DEFAULTS.cond_frame, "min": 0, "max": 63, "tooltip": "As the "
                               "sampler's: the frame that shows the picture."}),
                "fit": (list(pipeline.FIT_MODES), {"default": "crop", "tooltip": "As the sampler's."}),
            },
        }

    RETURN_TYPES = ("IMAGE", "MASK", SCENE_TYPE, "STRING")
    RETURN_NAMES = ("renders", "visible", "scene", "report")
    OUTPUT_TOOLTIPS = ("The point cloud rendered from every camera of the path (black where nothing is seen).",
                       "Where the picture's points land in each frame.",
                       "For the sampler's optional scene input (RealCam-I2V's noise shaping).",
                       "How far the camera moves and how deep the scene is, in metres.")
    FUNCTION = "preview"
    CATEGORY = "CamI2V/RealCam-I2V"
    DESCRIPTION = ("Estimates metric depth, unprojects the picture and renders it along the camera path (pure "
                   "PyTorch point splatting): see how far the camera really moves before sampling.")

    def preview(self, model, image, camera, depth_model, trace_scale, cond_frame, fit):
        net = model.model
        frames = net.config.temporal_length
        if not 0 <= cond_frame < frames:
            raise ValueError(f"cond_frame must be between 0 and {frames - 1} for this {frames}-frame model")
        traj, note = camera_path(camera, frames)
        scale, unit_note = pipeline.camera_scale(traj, net.config.translation_unit, trace_scale)
        depth_model.to(comfy_bridge.torch_device())
        with placed(model, comfy_bridge.torch_device()):
            result = pipeline.preview_scene(net, single_image(image), np.asarray(traj.w2c), depth_model,
                                            cond_frame_index=cond_frame, trace_scale=scale, fit=fit)
        depth_model.to(comfy_bridge.offload_device())
        depth = result.depth
        notes = [n for n in (note, unit_note) if n]
        notes.append(f"scene depth {float(depth.min()):.2f}-{float(depth.max()):.2f} m (median "
                     f"{float(depth.median()):.2f} m)")
        report = "\n".join(notes)
        plan = ScenePlan(result, frames, scale)
        return {"ui": {"text": [report]},
                "result": (result.frames.float().cpu(), result.masks.float().cpu(), plan, report)}


def noise_shaping_for(plan: ScenePlan | None, frames: int, cond_frame: int, trace_scale: float):
    """The sampler's NoiseShaping from a CAMI2V_SCENE, checked against what the sampler is about to do."""
    if plan is None:
        return None
    if plan.frames != frames or plan.preview.cond_frame_index != cond_frame \
            or not np.isclose(plan.trace_scale, trace_scale):
        raise ValueError(f"the scene was rendered for {plan.frames} frames, cond_frame "
                         f"{plan.preview.cond_frame_index} and translation factor {plan.trace_scale:g}, but the "
                         f"sampler runs {frames} frames, cond_frame {cond_frame}, factor {trace_scale:g}; give "
                         f"{node_name('CamI2VScenePreview')} the same camera, trace_scale and cond_frame")
    return scene.NoiseShaping(plan.preview)


REALCAM_NODES = {"CamI2VDepthLoader": CamI2VDepthLoader, "CamI2VScenePreview": CamI2VScenePreview}
__all__ = ["REALCAM_NODES", "ScenePlan", "noise_shaping_for"]
