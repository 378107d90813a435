"""Sampler and decoder nodes: IMAGE + CAMERACTRL_POSES + prompts -> LATENT -> IMAGE frames."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch

from cami2v_core import pipeline
from cami2v_core.modules import attention
from cami2v_core.sampling import StepInfo
from cami2v_core.settings import DEFAULTS
from trajectories import Trajectory, TrajectoryError, fit_frames, from_cameractrl_poses

from . import comfy_bridge
from .registry import DISPLAY_NAMES, node_name

CAMERA_TYPE = "CAMERACTRL_POSES"
CAMERA_SCHEDULES = ("constant", "cosine")
log = logging.getLogger("CamI2V")


def camera_path(camera, frames: int) -> tuple[Trajectory, str | None]:
    """CAMERACTRL_POSES -> (a Trajectory of `frames` poses, note) for a model of `frames` frames.

    A path of another length is resampled over its whole length, as the command line does; `note` says so (None
    when the path fitted as it was)."""
    try:
        traj, note = fit_frames(from_cameractrl_poses(camera), frames)
    except TrajectoryError as e:
        raise ValueError(f"the camera input is not a valid CAMERACTRL_POSES list: {e}") from e
    if note:
        note += (f" (to choose how it is spread instead, put a {node_name('CamI2VCameraRetime')} node set to "
                 f"{frames} frames before the sampler)")
    return traj, note


def single_image(image: torch.Tensor) -> torch.Tensor:
    """IMAGE [1,H,W,C] -> [H,W,3]; refuse batches (the model animates one still)."""
    if image.ndim != 4 or image.shape[-1] not in (3, 4):
        raise ValueError(f"expected an IMAGE [B,H,W,3]; got shape {tuple(image.shape)}")
    if image.shape[0] != 1:
        raise ValueError(f"the sampler animates one picture but got a batch of {image.shape[0]}; pick one with an "
                         f"'ImageFromBatch' node (ComfyUI's; batch_index, length 1)")
    return image[0, ..., :3]


@contextlib.contextmanager
def placed(handle, device: torch.device):
    """Put the model on `device` (after asking ComfyUI for just the room it needs) with the handle's attention
    backend; offload afterwards unless keep_loaded."""
    comfy_bridge.free_memory_for(handle.model, device)
    previous = attention.get_backend()
    attention.set_backend(handle.attention)
    handle.model.to(device)
    try:
        yield handle.model
    finally:
        attention.set_backend(previous)
        if not handle.keep_loaded:
            handle.model.to(comfy_bridge.offload_device())


def sampler_inputs(net, image, camera, cond_frame: int, fit: str, trace_scale: float = 1.0,
                   node_id: str = "CamI2VSampler"):
    """Check a sampling node's picture and camera for the model `net` and log what was adapted.

    -> (picture [H,W,3], w2c [T,4,4], normalised intrinsics [T,4] or None, the translation factor to sample with
    (trace_scale met with the path's and the model's units, pipeline.camera_scale), notes: list of sentences)."""
    frames = net.config.temporal_length
    has_camera_input = net.config.camera is not None
    if camera is None and has_camera_input:
        raise ValueError(f"this {net.config.variant} model follows a camera path: connect a camera node "
                         f"(e.g. {node_name('CamI2VCameraPreset')}) to the camera input")
    if camera is not None and not has_camera_input:
        raise ValueError(f"this checkpoint is {net.config.variant}, which has no camera input, so the camera "
                         f"path would be ignored; load a CamI2V, CameraCtrl or MotionCtrl checkpoint, or "
                         f"disconnect the camera")
    if not 0 <= cond_frame < frames:
        raise ValueError(f"cond_frame must be between 0 and {frames - 1} for this {frames}-frame model; got "
                         f"{cond_frame}")
    picture = single_image(image)
    fit_note = pipeline.describe_fit(tuple(picture.shape[:2]), net.config.resolution, fit)
    notes = [fit_note] if fit_note else []
    if camera is not None:
        traj, note = camera_path(camera, frames)
        trace_scale, unit_note = pipeline.camera_scale(traj, net.config.translation_unit, trace_scale)
        notes += [n for n in (note, unit_note) if n]
        w2c, intrinsics = np.asarray(traj.w2c), np.asarray(traj.intrinsics)
    else:
        w2c, intrinsics = np.repeat(np.eye(4)[None], frames, 0), None
    for note in notes:
        log.warning("%s: %s", DISPLAY_NAMES[node_id], note)
    return picture, w2c, intrinsics, float(trace_scale), notes


class CamI2VSampler:
    """Sample a camera-controlled video latent from one picture."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("CAMI2V_MODEL", {"tooltip": f"From {node_name('CamI2VModelLoader')}."}),
                "image": ("IMAGE", {"tooltip": "The still picture to animate (one image; any size: 'fit' says how "
                          "a picture of another shape meets the model's frame)."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What the scene shows."}),
                "negative_prompt": ("STRING", {"multiline": True, "default": pipeline.DEMO_NEGATIVE_PROMPT,
                                    "tooltip": "Used for the unconditional branch (empty = the training's empty "
                                    "text)."}),
                "seed": ("INT", {"default": DEFAULTS.seed, "min": 0, "max": 2**63 - 1, "control_after_generate": True,
                         "tooltip": "Same seed, same video."}),
                "steps": ("INT", {"default": DEFAULTS.steps,
                                  "min": 1, "max": 1000, "tooltip": "DDIM steps (paper: 25)."}),
                "cfg_text": ("FLOAT", {"default": DEFAULTS.cfg_text,
                                       "min": 1.0, "max": 30.0, "step": 0.1, "tooltip": "Text "
                             "guidance. Equal to cfg_image gives the original single-scale guidance (no extra "
                             "pass)."}),
                "cfg_image": ("FLOAT", {"default": DEFAULTS.cfg_text,
                                        "min": 1.0, "max": 30.0, "step": 0.1, "tooltip": "Image "
                              "guidance. Different from cfg_text adds an image-only pass (slower)."}),
                "cfg_camera": ("FLOAT", {"default": DEFAULTS.cfg_camera,
                                         "min": 0.0, "max": 10.0, "step": 0.1, "tooltip": "Camera "
                               "guidance; 1 = off (the paper's setting). Above 1 exaggerates the camera motion at "
                               "the cost of one more pass per step."}),
                "camera_schedule": (list(CAMERA_SCHEDULES), {"default": DEFAULTS.camera_schedule,
                                                             "tooltip": "How camera "
                                    "guidance is weighted over the steps: constant, or cosine (strong early, "
                                    "fading at the end)."}),
                "eta": ("FLOAT", {"default": DEFAULTS.eta,
                                  "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "DDIM eta: 1 = "
                        "stochastic (the released setting), 0 = deterministic."}),
                "guidance_rescale": ("FLOAT", {"default": DEFAULTS.guidance_rescale,
                                               "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                                     "Rescales the guided prediction's std to the conditional one (0.7 released; "
                                     "0 = off)."}),
                "frame_stride": ("INT", {"default": DEFAULTS.frame_stride,
                                         "min": 1, "max": 30, "tooltip": "Frame-stride conditioning: "
                                 "larger = more motion between frames (demo 2, paper eval 8)."}),
                "trace_scale": ("FLOAT", {"default": DEFAULTS.trace_scale, "min": 0.0, "max": 10.0, "step": 0.05,
                                "tooltip": "Multiplies the camera translations (the demo's 'scale'). RealCam-I2V "
                                "reads metres: a metric path as it is, any other path as 0.5 m per unit (its "
                                "demo's) times this; the report says how far the camera moves."}),
                "cond_frame": ("INT", {"default": DEFAULTS.cond_frame, "min": 0, "max": 63, "tooltip": "Which output "
                               "frame shows the input picture; the camera path is made relative to that frame."}),
            },
            "optional": {
                "camera": (CAMERA_TYPE, {"tooltip": "Camera path from a CamI2V camera node (or any CameraCtrl "
                           "pose node). Required for CamI2V/CameraCtrl/MotionCtrl; leave empty for "
                           "DynamiCrafter."}),
                "use_camera_intrinsics": ("BOOLEAN", {"default": False, "tooltip": "Use the focal lengths stored "
                                          "in the camera path instead of the demo's 90-degree field of view."}),
                "scene": ("CAMI2V_SCENE", {"tooltip": "Optional, RealCam-I2V: a scene from the Scene Preview "
                          "node turns on its scene-constrained noise shaping (the first steps, t >= 900, start from "
                          "the rendered scene where it is visible). Off when not connected, as upstream."}),
                "fit": (list(pipeline.FIT_MODES), {"default": "crop", "tooltip": "How a picture of another shape "
                        "meets the model's frame: crop = cover it and centre-crop (the original's), pad = keep the "
                        "whole picture and fill the borders with its edge pixels, stretch = squeeze it to the frame. "
                        "The report says what was done when it matters."}),
            },
        }

    RETURN_TYPES = ("LATENT", "STRING")
    RETURN_NAMES = ("latent", "report")
    OUTPUT_TOOLTIPS = ("Video latent in ComfyUI's SD layout (frames on the batch axis, scaled by 0.18215).",
                       "What the sampler adapted to fit the model (e.g. a camera path resampled to its frames).")
    FUNCTION = "sample"
    CATEGORY = "CamI2V"
    DESCRIPTION = ("Runs CamI2V's DDIM sampler with separate text, image and camera guidance. Decode the result "
                   f"with {node_name('CamI2VDecode')} (its latent is scaled by the VAE's factor, so ComfyUI's VAE "
                   f"Decode does not read it as is).")

    def sample(self, model, image, prompt, negative_prompt, seed, steps, cfg_text, cfg_image, cfg_camera,
               camera_schedule, eta, guidance_rescale, frame_stride, trace_scale, cond_frame, camera=None,
               use_camera_intrinsics=False, fit="crop", scene=None):
        net = model.model
        frames = net.config.temporal_length
        picture, w2c, intrinsics, trace_scale, notes = sampler_inputs(net, image, camera, cond_frame, fit,
                                                                      trace_scale)
        from .nodes_realcam import noise_shaping_for  # (that module imports this one)

        shaping = noise_shaping_for(scene, frames, cond_frame, trace_scale)
        if shaping is not None:
            notes.append("scene-constrained noise shaping on (steps with t >= 900 start from the rendered scene)")
            log.warning("%s: %s", DISPLAY_NAMES["CamI2VSampler"], notes[-1])
        device = comfy_bridge.torch_device()
        progress = comfy_bridge.Progress(steps)

        def on_step(info: StepInfo):
            comfy_bridge.check_interrupt()
            progress.update(info.i + 1, preview_image(info))

        with placed(model, device) as net, comfy_bridge.interruptible(net.model.diffusion_model):
            latent = pipeline.sample_latent(
                net, picture, w2c, intrinsics if use_camera_intrinsics else None, prompt, negative_prompt,
                steps=steps, cfg_text=cfg_text, cfg_image=cfg_image, cfg_camera=cfg_camera,
                camera_schedule=camera_schedule, guidance_rescale=guidance_rescale, eta=eta, seed=seed,
                frame_stride=frame_stride, cond_frame_index=cond_frame, trace_scale=trace_scale, callback=on_step,
                offload=not model.keep_loaded, fit=fit, noise_shaping=shaping)
        out = pipeline.to_comfy_latent(latent.float().cpu())
        out["cami2v_frames"] = frames
        out["cami2v_fps"] = DEFAULTS.playback_fps(frame_stride)
        report = "\n".join(notes) if notes else f"{frames} frames; the picture and camera path fitted as they were"
        return {"ui": {"text": [report]}, "result": (out, report)}


def preview_image(info: StepInfo, max_side: int = 512):
    """The first frame of the current denoised estimate as a PIL image at the video's aspect (cheap, no VAE).

    Coloured by the projection the pipeline fitted for this model's VAE on the input picture, and enlarged from the
    latent grid to the frame size (at most `max_side`), so it looks like the picture it will become."""
    from PIL import Image

    latent = info.pred_x0[:1, :, :1].detach().float().cpu()
    rgb = pipeline.latent_preview(latent, info.latent_rgb)[0]
    h, w = rgb.shape[:2]
    zoom = max(1, min(8, max_side // max(h, w)))
    picture = Image.fromarray((rgb.numpy() * 255).round().astype(np.uint8))
    return picture.resize((w * zoom, h * zoom), Image.BILINEAR)


class CamI2VDecode:
    """Decode a CamI2V video latent into IMAGE frames."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("CAMI2V_MODEL", {"tooltip": "The model that sampled the latent (its VAE decodes)."}),
                "latent": ("LATENT", {"tooltip": f"From {node_name('CamI2VSampler')}, or from KSampler / "
                           f"SamplerCustomAdvanced on the inputs of {node_name('CamI2VImageToVideo')}."}),
                "frames_per_chunk": ("INT", {"default": 4, "min": 1, "max": 64, "tooltip": "Frames decoded at "
                                     "once; lower it if decoding runs out of memory (the result is the same)."}),
            },
        }

    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("frames", "fps")
    OUTPUT_TOOLTIPS = ("The video frames as an IMAGE batch.",
                       f"Playback frame rate matching the frame stride ({DEFAULTS.source_fps} / stride); feed it to "
                       f"CreateVideo.")
    FUNCTION = "decode"
    CATEGORY = "CamI2V"
    DESCRIPTION = "Decodes a CamI2V latent with the checkpoint's own VAE, a few frames at a time."

    def decode(self, model, latent, frames_per_chunk):
        if not isinstance(latent, dict) or "samples" not in latent:
            raise ValueError(f"expected a LATENT from {node_name('CamI2VSampler')}")
        samples = latent["samples"]
        if latent.get("cami2v_scaled", True) is False:
            # A latent from ComfyUI's own samplers is in VAE units (its latent format divided the scale out).
            samples = samples * float(model.model.scale_factor)
        with placed(model, comfy_bridge.torch_device()) as net:
            frames = pipeline.decode_latent(net, samples.to(net.device, net.dtype), frames_per_chunk,
                                            offload=not model.keep_loaded)
        return (frames, float(latent.get("cami2v_fps", DEFAULTS.playback_fps(DEFAULTS.frame_stride))))
