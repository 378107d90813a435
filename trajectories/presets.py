"""The 16 named camera motions of the original CamI2V demo, rebuilt from the builders (spec §6.4 table, §6.5).

Each preset first builds the demo pose file's path (same number of poses, same motion relative to its first pose),
then applies the demo's two sliders:
    ratio  fraction of that path the frames cover: round(frames / ratio) element-wise lerped samples, first
           `frames` kept (spec §6.5 step 3). Default 0.6 (settings.DEFAULTS; the gradio slider starts at 0.1);
           1.0 uses the whole path.
    scale  multiplies every translation (trace_scale_factor, spec §6.3). Gradio default 1.0.
The original files store some paths in a mirrored world; only relative poses matter to the model and those are
reproduced. With faithful=True (default), "look up" / "look down" keep the files' glitched last pose (turned 180°
about the vertical axis), which is only reached at ratio ≈ 1; faithful=False ends them at 90°.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from cami2v_core.settings import DEFAULTS

from . import builders, geometry
from .combinators import demo_resample
from .errors import TrajectoryError
from .trajectory import Trajectory

DEFAULT_RATIO = DEFAULTS.ratio  # 0.6, shared with the nodes and the command line (the demo's slider starts at 0.1)
DEFAULT_SCALE = DEFAULTS.scale


@dataclass(frozen=True)
class Preset:
    """A demo motion: its name, what it does, how many poses its pose file has, and how to build that path."""

    name: str
    description: str
    poses: int
    build: Callable[[int], Trajectory]  # pose count -> the full path, frame 0 = identity


def _look_vertical(pitch_deg: float) -> Callable[[int], Trajectory]:
    return lambda n: builders.look(pitch_deg=pitch_deg, frames=n)


_PRESET_LIST = [
    Preset("zoom in", "move forward along the optical axis by 1", 8,
           lambda n: builders.zoom("in", 1.0, n)),
    Preset("zoom out", "move backward along the optical axis by 1", 8,
           lambda n: builders.zoom("out", 1.0, n)),
    Preset("pan up", "move up by 1, turning to keep facing a point 10 ahead (pitch down to 5.7°)", 50,
           lambda n: builders.pan("up", 1.0, n, target_distance=10.0)),
    Preset("pan down", "move down by 1, turning to keep facing a point 10 ahead (pitch up to 5.7°)", 50,
           lambda n: builders.pan("down", 1.0, n, target_distance=10.0)),
    Preset("pan left", "move left by 2", 150, lambda n: builders.pan("left", 2.0, n)),
    Preset("pan right", "move right by 1", 150, lambda n: builders.pan("right", 1.0, n)),
    Preset("look up", "pitch up 90° in place (faithful: glitched last pose)", 50, _look_vertical(90.0)),
    Preset("look down", "pitch down 90° in place (faithful: glitched last pose)", 50, _look_vertical(-90.0)),
    Preset("look left", "yaw left 90° in place", 50, lambda n: builders.look(yaw_deg=-90.0, frames=n)),
    Preset("look right", "yaw right 90° in place", 50, lambda n: builders.look(yaw_deg=90.0, frames=n)),
    Preset("orbit up", "orbit 45° upwards around the point 2 ahead, facing it", 16,
           lambda n: builders.orbit("up", 45.0, 2.0, n)),
    Preset("orbit left", "orbit 90° to the left around the point 3 ahead, facing it", 150,
           lambda n: builders.orbit("left", 90.0, 3.0, n)),
    Preset("orbit right", "orbit 90° to the right around the point 3 ahead, facing it", 150,
           lambda n: builders.orbit("right", 90.0, 3.0, n)),
    Preset("rotate clockwise", "roll 90°: the picture turns clockwise", 50,
           lambda n: builders.roll(-90.0, n)),
    Preset("rotate anti-clockwise", "roll 90°: the picture turns anti-clockwise", 50,
           lambda n: builders.roll(90.0, n)),
    Preset("stationary", "no motion", 2, lambda n: builders.stationary(n)),
]
PRESETS: dict[str, Preset] = {p.name: p for p in _PRESET_LIST}


def _key(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


_BY_KEY = {_key(name): name for name in PRESETS}


def find_preset(name) -> str | None:
    """The canonical preset name for `name` (case, '_' and '-' ignored), or None."""
    return _BY_KEY.get(_key(name)) if isinstance(name, str) else None


def preset_path(name: str, faithful: bool = True) -> Trajectory:
    """The full path of a demo pose file, rebuilt: PRESETS[name].poses poses, frame 0 the identity camera."""
    canonical = find_preset(name)
    if canonical is None:
        raise TrajectoryError(f"unknown preset {str(name)[:60]!r}; choose one of: {', '.join(PRESETS)}",
                              field="preset")
    spec = PRESETS[canonical]
    path = spec.build(spec.poses)
    if faithful and canonical in ("look up", "look down"):
        # The demo files' last pose is the 90° pose turned 180° about the first camera's y axis (spec §6.4).
        w2c = path.w2c.copy()
        turn_c2w = geometry.rigid(geometry.rot_y(180.0), np.zeros(3))
        w2c[-1] = w2c[-1] @ geometry.invert_rigid(turn_c2w)  # c2w_last <- R_y(180°) · c2w_last
        path = Trajectory(w2c, path.intrinsics, path.aspect)
    return path.with_unit("relative")  # the demo's pose files are scale-free (RealCam's demo reads them x 0.5 m)


def preset(name: str, frames: int = 16, ratio: float = DEFAULT_RATIO, scale: float = DEFAULT_SCALE,
           faithful: bool = True) -> Trajectory:
    """A demo motion as the demo hands it to the model: `frames` poses covering `ratio` of the path, translations x
    `scale` (spec §6.5) -> Trajectory with frame 0 the identity camera."""
    return demo_resample(preset_path(name, faithful), frames, ratio).scaled(scale)
