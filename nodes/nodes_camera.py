"""Camera-path nodes over `trajectories/`: build, combine, retime, load, export and preview CAMERACTRL_POSES.

Each node is a thin adapter: read widgets, call one `trajectories` function, return the poses. Move nodes take an
optional `prev_poses` and continue from its last camera, so moves chain (AnimateDiff-Evolved's habit).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

import trajectories as tj
from cami2v_core.video_io import load_rgb

from . import comfy_bridge

log = logging.getLogger("CamI2V")

POSES = "CAMERACTRL_POSES"
EASES = tuple(tj.EASINGS)
FRAMES = ("INT", {"default": 16, "min": 2, "max": tj.MAX_FRAMES, "tooltip": "Number of camera poses (CamI2V makes "
                  "16 frames; the tiny bundled model 8 - the sampler says if they differ)."})
EASE = (list(EASES), {"default": "linear", "tooltip": "Speed profile of the move: linear, or slow at the start "
                      "and/or end."})
PREV = (POSES, {"tooltip": "Optional path to continue: this move starts where it ends."})
CATEGORY = "CamI2V/camera"


def to_poses(trajectory: tj.Trajectory) -> list[list[float]]:
    """Trajectory -> CAMERACTRL_POSES."""
    return tj.to_cameractrl_poses(trajectory)


def from_poses(poses, what: str = "camera") -> tj.Trajectory:
    """CAMERACTRL_POSES -> Trajectory, with the node input named in the error."""
    try:
        return tj.from_cameractrl_poses(poses)
    except tj.TrajectoryError as e:
        raise ValueError(f"the {what} input is not a valid camera path: {e}") from e


def chained(move: tj.Trajectory, prev_poses) -> list[list[float]]:
    """The move on its own, or continued from the end of prev_poses."""
    if prev_poses is None:
        return to_poses(move)
    return to_poses(tj.concatenate(from_poses(prev_poses, "prev_poses"), move))


def _move_node(node_id, description, required, build):
    """A node class for one builder: required widgets + frames + ease + optional prev_poses -> poses."""

    class Node:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {**required, "frames": FRAMES, "ease": EASE}, "optional": {"prev_poses": PREV}}

        RETURN_TYPES = (POSES,)
        RETURN_NAMES = ("poses",)
        OUTPUT_TOOLTIPS = ("Camera path (world-to-camera per frame + intrinsics) for the CamI2V sampler.",)
        FUNCTION = "build"
        CATEGORY = globals()["CATEGORY"]
        DESCRIPTION = description

        def build(self, frames, ease, prev_poses=None, **widgets):
            return (chained(build(frames=frames, ease=ease, **widgets), prev_poses),)

    Node.__name__ = Node.__qualname__ = node_id
    return Node


CamI2VCameraOrbit = _move_node(
    "CamI2VCameraOrbit", "Circle around a point ahead of the camera, always facing it.",
    {"direction": (list(tj.builders.ORBIT_DIRECTIONS), {"default": "left", "tooltip": "Which way the camera moves "
                   "around the point."}),
     "degrees": ("FLOAT", {"default": 30.0, "min": -360.0, "max": 360.0, "step": 1.0, "tooltip": "Orbit angle."}),
     "distance": ("FLOAT", {"default": 3.0, "min": 0.01, "max": 100.0, "step": 0.1, "tooltip": "Distance from "
                  "the camera to the point it circles (scene units; RealEstate10K scenes are roughly metres)."})},
    lambda direction, degrees, distance, frames, ease: tj.orbit(direction, degrees, distance, frames, ease))

CamI2VCameraPan = _move_node(
    "CamI2VCameraPan", "Slide the camera sideways or vertically without turning.",
    {"direction": (list(tj.builders.PAN_DIRECTIONS), {"default": "right", "tooltip": "Direction of the slide."}),
     "distance": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.05, "tooltip": "How far the "
                  "camera moves (scene units)."})},
    lambda direction, distance, frames, ease: tj.pan(direction, distance, frames, ease))

CamI2VCameraZoom = _move_node(
    "CamI2VCameraZoom", "Move along the view direction (dolly, what the demo calls zoom) or change the focal "
    "length (focal; reaches the model only with the sampler's use_camera_intrinsics).",
    {"mode": (["dolly in", "dolly out", "focal"], {"default": "dolly in", "tooltip": "dolly = move the camera; "
              "focal = change the lens."}),
     "amount": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 100.0, "step": 0.05, "tooltip": "dolly: distance "
                "moved (scene units); focal: focal-length factor at the end (2 = twice as close)."})},
    lambda mode, amount, frames, ease: (tj.focal_zoom(amount, frames, ease) if mode == "focal"
                                        else tj.zoom(mode.split()[1], amount, frames, ease)))

CamI2VCameraLook = _move_node(
    "CamI2VCameraLook", "Turn the camera in place: yaw, pitch and roll.",
    {"yaw_deg": ("FLOAT", {"default": 20.0, "min": -180.0, "max": 180.0, "step": 1.0, "tooltip": "Turn right (+) "
                 "or left (-)."}),
     "pitch_deg": ("FLOAT", {"default": 0.0, "min": -90.0, "max": 90.0, "step": 1.0, "tooltip": "Tilt up (+) or "
                   "down (-)."}),
     "roll_deg": ("FLOAT", {"default": 0.0, "min": -180.0, "max": 180.0, "step": 1.0, "tooltip": "Roll: + turns "
                  "the picture anti-clockwise on screen."})},
    lambda yaw_deg, pitch_deg, roll_deg, frames, ease: (
        tj.add(tj.look(yaw_deg, pitch_deg, frames, ease), tj.roll(roll_deg, frames, ease)) if roll_deg
        else tj.look(yaw_deg, pitch_deg, frames, ease)))


class CamI2VCameraPreset:
    """The 16 named motions of the authors' demo, sampled as the demo does."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "preset": (list(tj.PRESETS), {"default": "orbit left", "tooltip": "The demo's named camera "
                           "motions."}),
                "frames": FRAMES,
                "ratio": ("FLOAT", {"default": tj.presets.DEFAULT_RATIO,
                                    "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": "Fraction "
                          "of the demo's pose file covered by the video (demo slider default 0.1, gallery 0.6-0.8)."}),
                "scale": ("FLOAT", {"default": tj.presets.DEFAULT_SCALE,
                                    "min": 0.0, "max": 5.0, "step": 0.05, "tooltip": "Multiplies "
                          "the translations (the demo's 'scale'; gallery 0.1-0.2 for subtle moves)."}),
            },
            "optional": {"prev_poses": PREV},
        }

    RETURN_TYPES = (POSES,)
    RETURN_NAMES = ("poses",)
    OUTPUT_TOOLTIPS = ("Camera path for the CamI2V sampler.",)
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = "One of the original demo's 16 camera motions (zoom, pan, look, orbit, rotate, stationary)."

    def build(self, preset, frames, ratio, scale, prev_poses=None):
        return (chained(tj.preset(preset, frames, ratio, scale), prev_poses),)


class CamI2VCameraCombine:
    """Join two paths one after the other, or play them at the same time."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "poses_a": (POSES, {"tooltip": "First path."}),
            "poses_b": (POSES, {"tooltip": "Second path."}),
            "mode": (["concatenate", "add"], {"default": "concatenate", "tooltip": "concatenate: b continues from "
                     "the end of a. add: both moves at once (same frame count needed), e.g. orbit while zooming."}),
        }}

    RETURN_TYPES = (POSES,)
    RETURN_NAMES = ("poses",)
    OUTPUT_TOOLTIPS = ("The combined camera path.",)
    FUNCTION = "combine"
    CATEGORY = CATEGORY
    DESCRIPTION = "Chains two camera paths or adds their motions."

    def combine(self, poses_a, poses_b, mode):
        a, b = from_poses(poses_a, "poses_a"), from_poses(poses_b, "poses_b")
        return (to_poses(tj.concatenate(a, b) if mode == "concatenate" else tj.add(a, b)),)


class CamI2VCameraRetime:
    """Resample a path to N frames, change its speed profile, reverse or loop it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "poses": (POSES, {"tooltip": "The path to retime."}),
            "frames": FRAMES,
            "method": (["slerp", "demo_lerp"], {"default": "slerp", "tooltip": "slerp: smooth rotations (keeps "
                       "cameras rigid). demo_lerp: the original demo's element-wise matrix interpolation."}),
            "ease": (["keep", *EASES], {"default": "keep", "tooltip": "Re-time the path with a speed profile, or "
                     "keep its timing."}),
            "reverse": ("BOOLEAN", {"default": False, "tooltip": "Play the path backwards."}),
            "loop": ("BOOLEAN", {"default": False, "tooltip": "Go there and back (applied before resampling)."}),
        }}

    RETURN_TYPES = (POSES,)
    RETURN_NAMES = ("poses",)
    OUTPUT_TOOLTIPS = ("The retimed path with exactly `frames` poses.",)
    FUNCTION = "retime"
    CATEGORY = CATEGORY
    DESCRIPTION = "Fits a camera path to the model's frame count (16 for CamI2V) and changes its timing."

    def retime(self, poses, frames, method, ease, reverse, loop):
        path = from_poses(poses, "poses")
        if reverse:
            path = tj.reverse(path)
        if loop:
            path = tj.loop(path)
        if ease != "keep":
            path = tj.ease(path, ease)
        path = (tj.demo_resample(path, frames, 1.0) if method == "demo_lerp" else tj.resample(path, frames))
        return (to_poses(path),)


class CamI2VCameraFromText:
    """Paste a camera path: pose JSON, RealEstate10K text, or a CAMERACTRL_POSES JSON list."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True, "default": EXAMPLE_JSON, "tooltip": "Pose "
                                      "JSON (see the README), RealEstate10K pose text, a CAMERACTRL_POSES list, or "
                                      "a nerfstudio / instant-ngp transforms.json."})}}

    RETURN_TYPES = (POSES,)
    RETURN_NAMES = ("poses",)
    OUTPUT_TOOLTIPS = ("The parsed camera path.",)
    FUNCTION = "parse"
    CATEGORY = CATEGORY
    DESCRIPTION = "Reads a camera path typed or pasted into the node."

    def parse(self, text):
        if not text.strip():
            raise ValueError("the text is empty; paste pose JSON or RealEstate10K lines")
        return (to_poses(tj.parse_text(text)),)


class CamI2VCameraLoadFile:
    """Load a camera path file: pose JSON, RealEstate10K .txt, a CAMERACTRL_POSES JSON list, a transforms.json, or a
    COLMAP text model."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"path": ("STRING", {"default": "", "tooltip": "Path of the file: pose JSON, "
                                      "RealEstate10K .txt, nerfstudio / instant-ngp transforms.json, or a COLMAP "
                                      "text model (its folder or images.txt, e.g. from Blender via "
                                      "trajectories/blender). A relative path is looked up in ComfyUI's input "
                                      "folder first."})}}

    RETURN_TYPES = (POSES,)
    RETURN_NAMES = ("poses",)
    OUTPUT_TOOLTIPS = ("The loaded camera path.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Loads a camera path from a pose JSON, RealEstate10K, transforms.json or COLMAP text file (e.g. a "
                   "clip's pose file, or a camera exported from a 3-D tool).")

    @classmethod
    def IS_CHANGED(cls, path):
        full = resolve_input_path(path)
        return os.path.getmtime(full) if full and full.is_file() else path

    def load(self, path):
        full = resolve_input_path(path)
        if full is None or not (full.is_file() or full.is_dir()):
            raise ValueError(f"no file or COLMAP folder at {path!r} (looked in the input folder and the "
                             f"current folder); check the path")
        return (to_poses(tj.load(full)),)


def resolve_input_path(path: str) -> Path | None:
    """An absolute path as is; a relative one in ComfyUI's input folder, else the working folder."""
    if not path.strip():
        return None
    p = Path(path.strip()).expanduser()
    if p.is_absolute():
        return p
    for base in (comfy_bridge.input_dir(), Path.cwd()):
        if base is not None and (base / p).exists():
            return base / p
    return p


class CamI2VCameraExport:
    """Save a camera path as pose JSON (and pass it through)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "poses": (POSES, {"tooltip": "The path to save."}),
            "filename_prefix": ("STRING", {"default": "cami2v/camera", "tooltip": "File name prefix inside "
                                "ComfyUI's output folder; a number is appended so nothing is overwritten."}),
        }}

    RETURN_TYPES = (POSES, "STRING")
    RETURN_NAMES = ("poses", "json")
    OUTPUT_TOOLTIPS = ("The same path, unchanged.", "The pose JSON text.")
    FUNCTION = "export"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = "Writes the camera path to output/<prefix>_NNNNN.json in the documented pose JSON format."

    def export(self, poses, filename_prefix):
        text = tj.to_json(from_poses(poses, "poses"))
        path = comfy_bridge.unique_output_path(filename_prefix, ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as f:  # "x": never overwrite a user's file
            f.write(text)
        return {"ui": {"text": [str(path)]}, "result": (poses, text)}


class CamI2VCameraPreview:
    """Picture of the camera path and a quick warped preview of what the camera would see."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"poses": (POSES, {"tooltip": "The path to show."})},
            "optional": {
                "image": ("IMAGE", {"tooltip": "Optional picture: also returns a rough preview animation made by "
                          "warping it as a flat plane (no model needed)."}),
                "plane_depth": ("FLOAT", {"default": 2.0, "min": 0.05, "max": 100.0, "step": 0.05, "tooltip":
                                "Assumed distance of the picture plane for the warped preview."}),
            },
        }

    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("path_picture", "warped_frames")
    OUTPUT_TOOLTIPS = ("Top and side views of the camera frustums, purple first, yellow last.",
                       "What the camera would see of a flat picture (black frame when no image is given).")
    FUNCTION = "preview"
    CATEGORY = CATEGORY
    DESCRIPTION = "Shows the camera path before spending minutes of sampling on it."

    def preview(self, poses, image=None, plane_depth=2.0):
        path = from_poses(poses, "poses")
        picture = pil_to_image(tj.draw_path(path))
        if image is None:
            frames = torch.zeros(len(path), 64, 64, 3)
        else:
            src = (image[0, ..., :3].clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
            frames = torch.cat([pil_to_image(f) for f in tj.warp_preview(src, path, plane_depth)])
        return (picture, frames)


def pil_to_image(img) -> torch.Tensor:
    """PIL image -> IMAGE [1,H,W,3] float 0..1."""
    return torch.from_numpy(load_rgb(img).astype(np.float32) / 255.0)[None]


EXAMPLE_JSON = json.dumps({"frames": [
    {"position": [0, 0, 0], "look_at": [0, 0, 3]},
    {"position": [-1.5, 0, 0.4], "look_at": [0, 0, 3]},
    {"position": [-2.6, 0, 1.5], "look_at": [0, 0, 3]},
]}, indent=1)

class CamI2VCameraFromVideo:
    """Copy the camera move of a clip (an IMAGE batch, e.g. from ComfyUI's Load Video + Get Video Components)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": ("IMAGE", {"tooltip": "The clip's frames (at least 3; up to 32 evenly spaced are used)."}),
                "poses_out": ("INT", {"default": 16, "min": 1, "max": 1024, "tooltip": "Poses of the path: the "
                              "model's frames (16 for the released models, 8 for the bundled one)."}),
                "fov_deg": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 170.0, "step": 0.5, "tooltip": "The "
                            "clip's horizontal field of view in degrees; 0 = estimate it (needs some camera turn; "
                            "a clip that mostly slides is read at an assumed 60 degrees, and the report says so)."}),
                "smooth": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 8.0, "step": 0.25, "tooltip": "Gaussian "
                           "smoothing of the recovered path, in output frames (0 = none)."}),
                "normalize": (list(tj.from_video.NORMALIZATIONS), {"default": "depth", "tooltip": "Scale: depth = "
                              "the near scene at distance 1 (RealEstate10K's convention, what CamI2V was trained "
                              "on); length = the farthest camera 1 from the first (as the presets)."}),
            },
        }

    RETURN_TYPES = (POSES, "STRING")
    RETURN_NAMES = ("poses", "report")
    OUTPUT_TOOLTIPS = ("The clip's camera path relative to its first frame, resampled to poses_out.",
                       "Frames registered, frames missing with the reason, the field of view, the decisions made.")
    FUNCTION = "recover"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Recovers the camera path of a video clip by structure from motion (pycolmap's global mapper), "
                   "so a picture can move like the clip. Needs pycolmap (pip install pycolmap==4.2.1).")

    def recover(self, frames, poses_out, fov_deg, smooth, normalize):
        if frames.ndim != 4 or frames.shape[-1] not in (3, 4):
            raise ValueError(f"expected an IMAGE batch [T,H,W,3] of the clip's frames; got {tuple(frames.shape)}")
        result = tj.from_video.path_from_frames(frames[..., :3].cpu().numpy(), frames_out=poses_out,
                                                fov_deg=fov_deg or None, smooth_frames=smooth, normalize=normalize,
                                                progress=lambda line: log.info("%s", line))
        report = "\n".join(result.report())
        return {"ui": {"text": [report]}, "result": (to_poses(result.path), report)}


CAMERA_NODES = {
    "CamI2VCameraPreset": CamI2VCameraPreset,
    "CamI2VCameraOrbit": CamI2VCameraOrbit,
    "CamI2VCameraPan": CamI2VCameraPan,
    "CamI2VCameraZoom": CamI2VCameraZoom,
    "CamI2VCameraLook": CamI2VCameraLook,
    "CamI2VCameraCombine": CamI2VCameraCombine,
    "CamI2VCameraRetime": CamI2VCameraRetime,
    "CamI2VCameraFromText": CamI2VCameraFromText,
    "CamI2VCameraLoadFile": CamI2VCameraLoadFile,
    "CamI2VCameraExport": CamI2VCameraExport,
    "CamI2VCameraPreview": CamI2VCameraPreview,
    "CamI2VCameraFromVideo": CamI2VCameraFromVideo,
}
