"""trajectories previews: the frustum drawing shows time and direction, the planar warp moves pixels as the
pinhole model of a plane predicts (expected shifts and magnifications computed here by hand)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import trajectories as tj
from trajectories import TrajectoryError
from trajectories.preview import time_colour


def _centroid_x(img: Image.Image, colour, box) -> float:
    """Mean column of the pixels within a small colour distance of `colour` inside box (x0, y0, x1, y1)."""
    arr = np.asarray(img.crop(box), dtype=float)
    near = np.linalg.norm(arr - np.array(colour, float), axis=-1) < 40
    assert near.sum() > 20, f"no pixels of colour {colour} drawn"
    return float(np.nonzero(near)[1].mean())


@pytest.mark.parametrize("path,panel", [(tj.pan("right", 1.0, frames=8), 0), (tj.zoom("in", 1.0, frames=8), 1)])
def test_draw_path_puts_later_frames_where_the_camera_goes(path, panel):
    img = tj.draw_path(path, size=(800, 400), title="test")
    assert img.size == (800, 400) and img.mode == "RGB"
    box = (panel * 400 + 10, 50, (panel + 1) * 400 - 10, 340)  # top view (x right) / side view (z right)
    first, last = time_colour(0.0), time_colour(1.0)
    assert first != last
    assert _centroid_x(img, last, box) > _centroid_x(img, first, box) + 30


def test_draw_path_handles_single_frames_and_turns_in_place():
    for path in (tj.stationary(1), tj.look(90, 0, frames=5), tj.preset("look up", ratio=1.0)):
        img = tj.draw_path(path, size=(400, 200))
        assert img.size == (400, 200) and len(np.unique(np.asarray(img).reshape(-1, 3), axis=0)) > 10
    with pytest.raises(TrajectoryError, match="'size'"):
        tj.draw_path(tj.stationary(2), size=(10, 10))
    with pytest.raises(TrajectoryError, match="needs a Trajectory"):
        tj.draw_path(np.eye(4))


def _gradient(h, w):
    """R = column index, G = row index (uint8), so a sampled value says where it came from."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x, y, np.full_like(x, 128)], axis=-1).astype(np.uint8)


def test_stationary_warp_returns_the_picture():
    img = _gradient(120, 200)
    frames = tj.warp_preview(img, tj.stationary(3), size=200)
    assert len(frames) == 3
    for f in frames:
        assert np.abs(np.asarray(f, int) - img.astype(int)).max() <= 1


def test_moving_halfway_to_the_plane_magnifies_twice_about_the_centre():
    h, w = 100, 200
    img = _gradient(h, w)
    depth = 4.0
    frames = tj.warp_preview(img, tj.zoom("in", depth / 2, frames=2), plane_depth=depth, size=w)
    out = np.asarray(frames[1], float)
    cols = np.arange(w) + 0.5
    expected = w / 2 + (cols - w / 2) / 2 - 0.5  # source index seen at each output column
    np.testing.assert_allclose(out[h // 2, :, 0], expected, atol=1.0)


def test_panning_shifts_the_picture_by_focal_times_distance_over_depth():
    h, w = 100, 200
    img = _gradient(h, w)
    f = 0.5 * w  # the demo's intrinsics: 90° across the long side
    shift = f * 0.2 / 5.0  # pan right 0.2 with the plane 5 ahead: 4 px
    out = np.asarray(tj.warp_preview(img, tj.pan("right", 0.2, frames=2), plane_depth=5.0, size=w)[1], float)
    inside = slice(10, w - 20)
    np.testing.assert_allclose(out[50, inside, 0], np.arange(w)[inside] + shift, atol=1.0)
    assert (out[50, -2:] == 40).all()  # uncovered pixels show the background


def test_trajectory_intrinsics_make_focal_zoom_visible():
    h, w = 100, 100
    img = _gradient(h, w)
    path = tj.focal_zoom(2.0, frames=2)
    default = np.asarray(tj.warp_preview(img, path, size=w)[1], float)
    assert np.abs(default - img).max() <= 1  # the demo ignores trajectory intrinsics (spec §6.1)
    zoomed = np.asarray(tj.warp_preview(img, path, size=w, use_trajectory_intrinsics=True)[1], float)
    cols = np.arange(w) + 0.5
    np.testing.assert_allclose(zoomed[50, :, 0], w / 2 + (cols - w / 2) / 2 - 0.5, atol=1.0)


def test_warp_inputs_and_gif(tmp_path):
    img = Image.fromarray(_gradient(64, 96))
    frames = tj.warp_preview(img, tj.preset("orbit left", frames=6, ratio=1.0), plane_depth=3.0, size=48)
    assert [f.size for f in frames] == [(48, 32)] * 6
    as_float = tj.warp_preview(_gradient(64, 96) / 255.0, tj.stationary(2), size=96)[0]
    assert np.abs(np.asarray(as_float, int) - _gradient(64, 96)).max() <= 1
    out = tmp_path / "preview.gif"
    tj.save_animation(frames, out, fps=8)
    with Image.open(out) as gif:
        assert gif.n_frames == 6
    with pytest.raises(TrajectoryError, match="'plane_depth'"):
        tj.warp_preview(img, tj.stationary(2), plane_depth=0)
    with pytest.raises(TrajectoryError, match="'image'"):
        tj.warp_preview(np.zeros((4, 4)), tj.stationary(2))
