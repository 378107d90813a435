"""One set of defaults: the sampler node's widgets, `generate`'s flags and `pipeline.sample_latent` agree."""

from __future__ import annotations

import inspect

import pytest

from cami2v_core import pipeline
from cami2v_core.__main__ import build_parser
from cami2v_core.settings import DEFAULTS
from nodes import NODE_CLASS_MAPPINGS as NODES
from trajectories import presets

# sampler widget -> (generate flag dest, sample_latent keyword)
SHARED = {
    "steps": ("steps", "steps"),
    "cfg_text": ("cfg_text", "cfg_text"),
    "cfg_camera": ("cfg_camera", "cfg_camera"),
    "camera_schedule": ("camera_schedule", "camera_schedule"),
    "guidance_rescale": ("rescale", "guidance_rescale"),
    "eta": ("eta", "eta"),
    "seed": ("seed", None),
    "frame_stride": ("frame_stride", "frame_stride"),
    "trace_scale": ("trace_scale", "trace_scale"),
    "cond_frame": ("cond_frame", "cond_frame_index"),
    "negative_prompt": ("negative_prompt", None),
}


def widget_default(node_id, name):
    spec = NODES[node_id].INPUT_TYPES()
    for section in spec.values():
        if name in section:
            kind, opts = section[name][0], section[name][1]
            return opts.get("default", kind[0] if isinstance(kind, list) else None)
    raise KeyError(name)


@pytest.fixture(scope="module")
def cli_defaults():
    return vars(build_parser().parse_args(["generate", "--image", "x.png", "--camera", "orbit left", "--out", "o.gif"]))


@pytest.mark.parametrize("widget", sorted(SHARED))
def test_node_cli_and_library_share_each_default(widget, cli_defaults):
    flag, keyword = SHARED[widget]
    node = widget_default("CamI2VSampler", widget)
    assert cli_defaults[flag] == node, f"generate --{flag.replace('_', '-')} {cli_defaults[flag]!r} vs node {node!r}"
    if keyword is not None:
        library = inspect.signature(pipeline.sample_latent).parameters[keyword].default
        assert library == node, f"sample_latent({keyword}={library!r}) vs node {node!r}"


def test_cfg_image_follows_cfg_text_everywhere(cli_defaults):
    assert widget_default("CamI2VSampler", "cfg_image") == widget_default("CamI2VSampler", "cfg_text")
    assert cli_defaults["cfg_image"] is None  # None = same as cfg_text (no extra pass)
    assert inspect.signature(pipeline.sample_latent).parameters["cfg_image"].default is None


def test_preset_sliders_share_their_defaults(cli_defaults):
    assert widget_default("CamI2VCameraPreset", "ratio") == cli_defaults["ratio"] == presets.DEFAULT_RATIO
    assert widget_default("CamI2VCameraPreset", "scale") == presets.DEFAULT_SCALE
    assert inspect.signature(presets.preset).parameters["ratio"].default == presets.DEFAULT_RATIO


def test_playback_rate_is_the_source_rate_over_the_stride():
    assert DEFAULTS.playback_fps(1) == pytest.approx(DEFAULTS.source_fps)
    assert DEFAULTS.playback_fps(3) == pytest.approx(DEFAULTS.source_fps / 3, abs=1e-3)
    assert pipeline.SOURCE_FPS == DEFAULTS.source_fps  # the 512 models' fps condition uses the same rate
