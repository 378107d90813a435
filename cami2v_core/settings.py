"""The defaults every front end shares (node widgets, `python -m cami2v_core generate`, the library, presets).

One frozen object, so the ComfyUI node, the command line and `pipeline.sample_latent` cannot drift apart. The values
are the authors' gradio demo's (spec §7.6), except `ratio`: the demo's slider starts at 0.1 (a tenth of each demo
path: barely visible motion); the README gallery and our examples use 0.6, so that is what a first run shows.
"""

from __future__ import annotations

from dataclasses import dataclass

# The gradio demos' prompts (spec §6.5 step 5, realcam spec §5): the negative prompt both demos use as the
# unconditional text, and the suffix the CamI2V demo appends to every caption (RealCam's appends none; neither
# front end here appends it: type it into the prompt to match the CamI2V demo).
DEMO_NEGATIVE_PROMPT = ("Fast movement, jittery motion, abrupt transitions, distorted body, missing limbs, unnatural "
                        "posture, blurry, cropped, extra limbs, bad anatomy, deformed, glitchy motion, artifacts.")
DEMO_PROMPT_SUFFIX = (" dramatic camera movement, high quality, cinematic shot, photorealistic, detailed fur, "
                      "smooth motion")


@dataclass(frozen=True)
class Defaults:
    """Sampling and camera-path defaults (spec §6.5, §7.6; RealCam-I2V's demo uses the same, realcam spec §5)."""

    steps: int = 25
    cfg_text: float = 5.5            # demo: one scale for text and image (cfg_image = cfg_text)
    cfg_camera: float = 1.0          # camera guidance off (the paper's setting)
    camera_schedule: str = "constant"
    guidance_rescale: float = 0.7
    eta: float = 1.0
    seed: int = 12333
    frame_stride: int = 2            # the demo's; the paper's evaluation uses 8
    trace_scale: float = 1.0
    cond_frame: int = 0
    negative_prompt: str = DEMO_NEGATIVE_PROMPT
    ratio: float = 0.6               # fraction of a preset's demo path the frames cover (demo slider: 0.1)
    scale: float = 1.0               # preset translation scale (demo slider)
    source_fps: float = 29.97        # RealEstate10K's frame rate: fps condition and playback rate (spec §7.1)

    def playback_fps(self, frame_stride: int) -> float:
        """The frame rate that plays a video sampled at `frame_stride` at the source clips' speed."""
        return round(self.source_fps / max(1, int(frame_stride)), 3)


DEFAULTS = Defaults()

# RealCam-I2V's demo reads its pose files (the same scale-free files as CamI2V's) x trace_scale_factor 0.5 as metres
# (realcam spec §3, §5): a path that does not say it is metric gets that reading, so trace_scale 1 = its demo's.
REALCAM_METRES_PER_UNIT = 0.5
