"""Camera-path units: what a translation of 1 means, carried from builder to model (RealCam-I2V reads metres)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import trajectories as tj
from cami2v_core.pipeline import camera_scale
from cami2v_core.settings import REALCAM_METRES_PER_UNIT


def test_unit_survives_every_transformation_and_format():
    path = tj.pan("right", 2.0, 8).with_unit("metre")
    assert tj.resample(path, 5).unit == "metre"
    assert path.relative(3).unit == path.scaled(2).unit == path[2:].unit == tj.reverse(path).unit == "metre"
    assert tj.from_json(tj.to_json(path)).unit == "metre"
    assert json.loads(tj.to_json(path))["unit"] == "metre"
    assert "unit" not in json.loads(tj.to_json(tj.pan("right", 2.0, 8)))  # not said, not written
    poses = tj.to_cameractrl_poses(path)
    assert isinstance(poses, list) and tj.from_cameractrl_poses(poses).unit == "metre"
    plain = [list(row) for row in poses]  # what another pack's node hands over
    assert tj.from_cameractrl_poses(plain).unit is None
    assert tj.preset("orbit left", 8).unit == "relative"  # the demo's pose files are scale-free


def test_mixing_metric_and_scale_free_paths_is_refused():
    with pytest.raises(tj.TrajectoryError, match="metres and the other scale-free"):
        tj.concatenate(tj.pan("left", 1.0, 4).with_unit("metre"), tj.preset("zoom in", 4))
    assert tj.concatenate(tj.pan("left", 1.0, 4), tj.preset("zoom in", 4)).unit == "relative"
    with pytest.raises(tj.TrajectoryError, match="unit must be one of relative, metre"):
        tj.pan("left", 1.0, 4).with_unit("feet")
    with pytest.raises(tj.TrajectoryError, match="'unit' must be one of"):
        tj.from_json({"unit": "inch", "frames": [{"w2c": np.eye(4)[:3].tolist()}]})


def test_a_metric_model_reads_unitless_paths_as_its_demo_and_metric_paths_literally():
    pan = tj.pan("right", 2.0, 8)  # moves 2 units
    factor, note = camera_scale(pan, "metre", trace_scale=1.0)
    assert factor == REALCAM_METRES_PER_UNIT == 0.5
    assert "1.00 m" in note  # 2 units x 0.5 m
    factor, note = camera_scale(pan.with_unit("metre"), "metre", trace_scale=1.5)
    assert factor == 1.5 and "3.00 m" in note and "metric path" in note
    factor, note = camera_scale(tj.preset("pan left", 8, ratio=1.0), "metre", trace_scale=1.0)
    assert factor == 0.5 and "scale-free" in note


def test_a_scale_free_model_takes_every_path_as_it_is_and_says_so_for_metres():
    pan = tj.pan("right", 2.0, 8)
    assert camera_scale(pan, "relative", 0.7) == (0.7, None)
    assert camera_scale(pan.with_unit("relative"), "relative", 1.0) == (1.0, None)
    factor, note = camera_scale(pan.with_unit("metre"), "relative", 1.0)
    assert factor == 1.0 and "in metres" in note and "scale-free" in note
