"""Pipeline tests: preprocessing of spec §6.1, latent helpers, and the full golden replay through the tiny models
(every x_t and the final latent of every run in sampling/sampling_runs.json), seeds, branch economy, decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cami2v_core.pipeline import (PipelineError, check_w2c, from_comfy_latent, image_to_uint8,
                                  intrinsics_from_normalized, latent_preview, prepare_image, target_size,
                                  to_comfy_latent)
from tests.golden import load_tensors
from tests.synthetic_photo import make_photo

# -- preprocessing (spec §6.1) ------------------------------------------------------------------------------------


def test_image_at_model_size_is_the_originals_batch_exactly():
    """Golden README §7: the batch image is (u/255 - 0.5)·2 of the 64x64 picture; K = demo default."""
    rec = load_tensors("sampling/cami2v_ddim4_eta0_cam2.safetensors")
    prepared = prepare_image(rec["input.image_u8"].numpy(), 64, 64)
    assert torch.equal(prepared.pixels, rec["cond.embedder_in_cond_image"])
    assert torch.equal(prepared.K, rec["input.K"][0, 0])
    assert prepared.resized_hw == (64, 64)


def test_float_and_pil_inputs_match_uint8():
    from PIL import Image

    u8 = make_photo(40, 60, seed=1)
    ref = prepare_image(u8, 32, 32).pixels
    assert torch.equal(prepare_image(torch.from_numpy(u8).float() / 255, 32, 32).pixels, ref)
    assert torch.equal(prepare_image(torch.from_numpy(u8)[None].float() / 255, 32, 32).pixels, ref)
    assert torch.equal(prepare_image(Image.fromarray(u8), 32, 32).pixels, ref)
    rgba = np.concatenate([u8, np.full(u8.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    assert torch.equal(prepare_image(rgba, 32, 32).pixels, ref)


def test_wide_picture_is_resized_to_cover_then_centre_cropped():
    # 256 x 384 picture for a 256 x 256 model: already covers at height 256, so no resize, crop columns 64..319.
    u8 = make_photo(256, 384, seed=2)
    prepared = prepare_image(u8, 256, 256)
    assert prepared.resized_hw == (256, 384)
    want = (torch.from_numpy(u8[:, 64:320]).permute(2, 0, 1)[None] / 255 - 0.5) * 2
    assert torch.equal(prepared.pixels, want)
    # fx = fy = half the long side of the resized picture, principal point at the crop centre.
    assert prepared.K.tolist() == [[192.0, 0.0, 128.0], [0.0, 192.0, 128.0], [0.0, 0.0, 1.0]]


def test_tall_picture_downscale_matches_antialiased_bilinear():
    u8 = make_photo(300, 200, seed=3)  # portrait, for a square 64 model: width 200 -> 64, height int(300*64/200)=96
    prepared = prepare_image(u8, 64, 64)
    assert prepared.resized_hw == (96, 64)
    ref = F.interpolate(torch.from_numpy(u8).permute(2, 0, 1)[None].float(), size=(96, 64), mode="bilinear",
                        antialias=True, align_corners=False)
    ref = ((ref.round().clamp(0, 255)[:, :, 16:80] / 255) - 0.5) * 2
    # The uint8 kernel rounds differently from float-then-round by at most one grey level.
    assert float((prepared.pixels - ref).abs().max()) <= 2 / 255 + 1e-6
    assert prepared.K[0, 0].item() == 48.0 and prepared.K[0, 2].item() == 32.0


def test_constant_picture_stays_constant_through_resize():
    u8 = np.full((123, 457, 3), (10, 128, 250), np.uint8)
    prepared = prepare_image(u8, 64, 64)
    want = (torch.tensor([10, 128, 250]) / 255 - 0.5) * 2
    torch.testing.assert_close(prepared.pixels[0].permute(1, 2, 0), want.expand(64, 64, 3))


def test_portrait_swaps_the_target_of_a_landscape_model():
    assert target_size((512, 320), (320, 512)) == (512, 320)
    assert target_size((320, 512), (320, 512)) == (320, 512)
    assert target_size((400, 300), (256, 256)) == (256, 256)


def test_normalised_intrinsics_follow_the_dataset_scaling():
    prepared = prepare_image(make_photo(256, 384, seed=4), 256, 256)
    K = intrinsics_from_normalized([[0.5, 0.75, 0.5, 0.5]] * 3, prepared)
    assert K.shape == (3, 3, 3)
    assert K[0].tolist() == [[0.5 * 384, 0.0, 128.0], [0.0, 0.75 * 256, 128.0], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize("bad,match", [
    (np.zeros((4, 5, 6, 3), np.uint8), r"\[H,W,C\]"),
    (np.zeros((8, 8, 2), np.uint8), r"\[H,W,C\]"),
    ("picture.png", "PIL image"),
    (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
])
def test_bad_images_are_explained(bad, match):
    with pytest.raises(PipelineError, match=match):
        image_to_uint8(bad)


def test_trajectory_checks():
    eye = np.tile(np.eye(4), (8, 1, 1))
    assert check_w2c(eye, 8).shape == (1, 8, 4, 4)
    assert torch.equal(check_w2c(eye[:, :3], 8), check_w2c(eye, 8))
    with pytest.raises(PipelineError, match="has 5 poses but the model makes 8 frames"):
        check_w2c(eye[:5], 8)
    with pytest.raises(PipelineError, match=r"\[T,4,4\]"):
        check_w2c(np.zeros((8, 4)), 8)
    bad = eye.copy()
    bad[3, :3, :3] = 0
    with pytest.raises(PipelineError, match="singular"):
        check_w2c(bad, 8)


# -- latent helpers --------------------------------------------------------------------------------------------------

def test_comfy_latent_round_trip_puts_frame_index_fastest():
    latent = torch.arange(2 * 4 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 4, 3, 2, 2)
    samples = to_comfy_latent(latent)["samples"]
    assert samples.shape == (6, 4, 2, 2)
    assert torch.equal(samples[1], latent[0, :, 1])  # row b*T + t
    assert torch.equal(samples[3], latent[1, :, 0])
    assert torch.equal(from_comfy_latent({"samples": samples}, 3), latent)
    with pytest.raises(PipelineError, match="LATENT"):
        from_comfy_latent({"samples": samples[:5]}, 3)


def test_latent_preview_is_the_sd_projection():
    latent = torch.zeros(1, 4, 2, 3, 3)
    latent[:, 0] = 1.0
    preview = latent_preview(latent)
    assert preview.shape == (2, 3, 3, 3)
    torch.testing.assert_close(preview[0, 0, 0], (torch.tensor([0.3512, 0.2297, 0.3227]) + 1) / 2)
