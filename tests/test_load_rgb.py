"""load_rgb: one reader for pictures, 16-bit and float pictures scaled by range, and every reader uses it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cami2v_core.video_io import MediaError, load_rgb

H, W = 24, 40


def gradient16() -> np.ndarray:
    """uint16 [H,W]: a left-to-right ramp over the whole 16-bit range."""
    return np.tile(np.linspace(0, 65535, W), (H, 1)).round().astype(np.uint16)


def as_8bit(g16: np.ndarray) -> np.ndarray:
    """The same picture at 8 bits per sample, RGB: what a 16-bit picture should read as (65535 -> 255)."""
    g8 = np.round(g16.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
    return np.repeat(g8[..., None], 3, axis=-1)


@pytest.fixture
def png16(tmp_path):
    path = tmp_path / "ramp16.png"
    Image.fromarray(gradient16()).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")  # Pillow really reads it as 16-bit greyscale
    return path


def test_16bit_png_reads_as_the_gradient_not_white(png16):
    rgb = load_rgb(png16)
    expected = as_8bit(gradient16())
    assert rgb.dtype == np.uint8 and rgb.shape == (H, W, 3)
    assert abs(rgb.astype(float).mean() - expected.astype(float).mean()) < 0.5
    assert np.abs(rgb.astype(int) - expected.astype(int)).max() <= 1
    assert rgb[:, 0].max() == 0 and rgb[:, -1].min() == 255


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_16bit_modes_in_memory(mode):
    g = gradient16()
    if mode == "I;16B":
        img = Image.frombytes(mode, (W, H), g.astype(">u2").tobytes())
    elif mode == "I":
        img = Image.fromarray(g.astype(np.int32))
    else:
        img = Image.fromarray(g)
    assert img.mode == mode
    assert np.abs(load_rgb(img).astype(int) - as_8bit(g).astype(int)).max() <= 1


def test_float_pictures_read_by_their_range():
    g = gradient16()
    unit = Image.fromarray((g / 65535.0).astype(np.float32))
    sixteen = Image.fromarray(g.astype(np.float32))
    assert unit.mode == sixteen.mode == "F"
    for img in (unit, sixteen):
        assert np.abs(load_rgb(img).astype(int) - as_8bit(g).astype(int)).max() <= 1


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "RGB", "CMYK"])
def test_8bit_modes_convert_as_pillow_does(mode):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (H, W, 4), dtype=np.uint8), "RGBA").convert(mode)
    out = load_rgb(img)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(img.convert("RGB")))


def test_errors_are_media_errors(tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        load_rgb(tmp_path / "absent.png")
    (tmp_path / "x.png").write_text("not a picture")
    with pytest.raises(MediaError, match="not a picture"):
        load_rgb(tmp_path / "x.png")
    with pytest.raises(MediaError, match="path or a PIL image"):
        load_rgb(3)


# -- every reader of pictures goes through it ----------------------------------------------------------------------

def _pipeline(png):
    from cami2v_core.pipeline import image_to_uint8

    with Image.open(png) as img:
        return image_to_uint8(img).permute(1, 2, 0).numpy()


def _node_picture(png):
    from nodes.nodes_camera import pil_to_image

    with Image.open(png) as img:
        return (pil_to_image(img)[0].numpy() * 255).round().astype(np.uint8)


def _preview(png):
    from trajectories.preview import _rgb_array

    with Image.open(png) as img:
        return _rgb_array(img, max(H, W)).round().astype(np.uint8)


def _frame_folder(png):
    from training.data import read_frames

    folder = png.parent / "clip"
    folder.mkdir()
    png.rename(folder / "00000.png")
    return read_frames(folder, np.array([0]))[0][0].permute(1, 2, 0).numpy()


def _vae_frames(png):
    from training.train_vae import load_frames

    folder = png.parent / "data" / "video_clips" / "train" / "scene" / "clip"
    folder.mkdir(parents=True)
    png.rename(folder / "00000.png")
    return load_frames(png.parent / "data", "train", size=H)[0].permute(1, 2, 0).numpy()


def _check_motion(png):
    from training.check_motion import test_images

    return test_images(None, 0, [str(png)])[0][1]


@pytest.mark.parametrize("reader", [_pipeline, _node_picture, _preview, _frame_folder, _vae_frames, _check_motion])
def test_every_reader_keeps_a_16bit_picture(png16, reader):
    out = reader(png16)
    expected = as_8bit(gradient16())
    # some readers resize or crop; the mean of a left-to-right ramp survives both, white (255) does not
    assert out.shape[-1] == 3
    assert abs(out.astype(float).mean() - expected.astype(float).mean()) < 8
