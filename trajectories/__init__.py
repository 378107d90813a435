"""Camera paths as data: build, combine, import, check and preview CamI2V trajectories (numpy + Pillow, no model).

A `Trajectory` holds per-frame world-to-camera matrices `w2c` [T,4,4] (OpenCV axes: x right, y down, z forward),
normalised intrinsics [T,4] (fx, fy, cx, cy) and the pose image aspect. User guide: docs/trajectories.md.

    import trajectories as tj
    path = tj.preset("orbit left", frames=16, ratio=0.6)          # the original demo's motions
    path = tj.concatenate(tj.orbit("left", 30, frames=9), tj.zoom("in", 0.5, frames=8))
    path = tj.load("my_path.json")                                   # pose JSON, RealEstate10K text, presets
    path = tj.load("colmap/sparse/0")                                # COLMAP text model; also transforms.json
    tj.write_colmap(path, "model/")                                 # to 3D tools: also tj.to_transforms_json(path)
    path = tj.path_from_video("clip.mp4").path                       # copy a video's camera move (needs pycolmap)
    poses = tj.to_cameractrl_poses(path)                             # ComfyUI CAMERACTRL_POSES
    tj.draw_path(path).save("path.png")
"""

from .builders import (EASINGS, bezier, camera, dolly, focal_zoom, look, orbit, pan, progress, roll, stationary,
                       tilt, zoom)
from .colmap import from_colmap_text, read_colmap, to_colmap_text, write_colmap
from .combinators import (add, concatenate, demo_resample, ease, fit_frames, interpolate, loop, resample, reverse,
                          scale, speed)
from .errors import TrajectoryError, TrajectoryWarning
from .from_video import VideoPathError, path_from_frames, path_from_video
from .formats import (from_cameractrl_poses, from_realestate10k, read_text, to_cameractrl_poses, to_json,
                      to_realestate10k)
from .nerfstudio import from_transforms_json, to_transforms_json
from .presets import PRESETS, Preset, find_preset, preset, preset_path
from .reading import from_json, load, parse_text
from .preview import draw_path, save_animation, warp_preview
from .trajectory import MAX_FRAMES, RIGID_KEEP_TOL, RIGID_REPAIR_TOL, Trajectory, default_intrinsics

__all__ = [
    "Trajectory", "TrajectoryError", "TrajectoryWarning", "default_intrinsics", "MAX_FRAMES", "RIGID_KEEP_TOL",
    "RIGID_REPAIR_TOL",
    "orbit", "pan", "zoom", "dolly", "focal_zoom", "look", "tilt", "roll", "stationary", "camera", "progress",
    "EASINGS", "bezier",
    "concatenate", "add", "reverse", "loop", "ease", "speed", "resample", "fit_frames", "demo_resample", "interpolate",
    "scale",
    "PRESETS", "Preset", "preset", "preset_path", "find_preset",
    "load", "parse_text", "read_text", "from_json", "to_json", "from_realestate10k", "to_realestate10k", "from_cameractrl_poses",
    "to_cameractrl_poses", "from_transforms_json", "to_transforms_json", "read_colmap", "write_colmap",
    "from_colmap_text", "to_colmap_text",
    "draw_path", "warp_preview", "save_animation",
    "path_from_video", "path_from_frames", "VideoPathError",
]
