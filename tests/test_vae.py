"""AutoencoderKL: golden parity (golden README §8), chunked = unchunked, the logvar clamp, key manifests, errors."""

from __future__ import annotations

import json

import pytest
import torch
from einops import rearrange
from safetensors import safe_open

from cami2v_core.modules.vae import AttnBlock, AutoencoderKL
from tests.devices import is_default
from tests.golden import GOLDEN_DIR, KEYS_DIR, golden_state_dict, latent_factor, load_tensors, model_params, require

VAE = "vae/vae_tiny.safetensors"
PREFIX = "first_stage_model."
# A small KL VAE for the tests that need no fixture (constructor checks); the golden parity tests build theirs from
# the fixture's own first_stage_config (training-only `monitor`/`lossconfig` included, as an importer passes them).
UNIT = dict(embed_dim=4, monitor="val/rec_loss", lossconfig={"target": "torch.nn.Identity"},
            ddconfig=dict(double_z=True, z_channels=4, resolution=64, in_channels=3, out_ch=3, ch=32,
                          ch_mult=[1, 1, 2, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.0))
# spec §3.4: the full-size KL-f8 VAE of every released model
FULL = dict(embed_dim=4, ddconfig=dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128,
                                       ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0))
# golden README §11: 1 vs 2 threads moves the decode by 5e-6; encoder outputs are ~1e-6 off here
ATOL_ENCODE = 1e-5
ATOL_DECODE = 5e-5


@pytest.fixture(scope="module")
def golden():
    return load_tensors(VAE)


@pytest.fixture(scope="module")
def tiny() -> dict:
    """first_stage_config.params of the fixture's CamI2V YAML (golden/configs/cami2v_*.yaml)."""
    return model_params("first_stage_config")


@pytest.fixture(scope="module")
def scale() -> float:
    """The latent scale of the VAE fixture: its header metadata `scale_factor` (README §8)."""
    with safe_open(str(require(GOLDEN_DIR / VAE)), "pt") as f:
        return float(f.metadata()["scale_factor"])


@pytest.fixture(scope="module")
def vae(tiny):
    sd = {k[len(PREFIX):]: v for k, v in golden_state_dict("cami2v").items() if k.startswith(PREFIX)}
    model = AutoencoderKL(**tiny).eval()
    model.load_state_dict(sd, strict=True)
    return model


@pytest.fixture(scope="module")
def device_vae(vae, tiny, device, dtype):
    """The tiny VAE on --device in --dtype (the CPU fp32 one itself by default)."""
    if is_default(device, dtype):
        return vae
    model = AutoencoderKL(**tiny).eval()
    model.load_state_dict(vae.state_dict())
    return model.to(device, dtype)


def _run(model, fn, x):
    """fn(x) with x moved to the model's device and dtype -> float32 CPU result(s)."""
    p = next(model.parameters())
    out = fn(x.to(p.device, p.dtype))
    return tuple(o.float().cpu() for o in out) if isinstance(out, tuple) else out.float().cpu()


def _frames(golden) -> torch.Tensor:
    """video_u8 [T,H,W,3] -> (u/255 - 0.5)*2 in `t c h w` (golden README §8)."""
    return rearrange((golden["video_u8"].float() / 255 - 0.5) * 2, "t h w c -> t c h w")


# -- golden parity ---------------------------------------------------------------------------------------------------

@torch.no_grad()
def test_encode_matches_golden_posterior(device_vae, golden, scale, dtype, tolerance):
    mean, logvar = _run(device_vae, device_vae.encode, _frames(golden))

    def close(got, name):
        expected = golden[name]
        torch.testing.assert_close(got, expected, **tolerance(dtype, atol=ATOL_ENCODE, rtol=0,
                                                              scale=float(expected.abs().max())))

    close(mean, "posterior_mean")
    close(logvar, "posterior_logvar_clamped")
    std = torch.exp(0.5 * logvar)
    close(std, "posterior_std")
    # the scaled posterior sample and mode, from the stored noise
    z = scale * (mean + std * golden["posterior_noise"])
    close(z, "z_sample_scaled")
    close(scale * mean, "z_mode_scaled")
    close(rearrange(z, "(b t) c h w -> b c t h w", b=1), "encode_first_stage_with_noise")


@torch.no_grad()
def test_decode_matches_golden(device_vae, golden, scale, dtype, tolerance):
    z = rearrange(golden["decode_input_latent_scaled"], "b c t h w -> (b t) c h w") / scale
    expected = rearrange(golden["decode_output"], "b c t h w -> (b t) c h w")
    out = _run(device_vae, device_vae.decode, z)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, **tolerance(dtype, atol=ATOL_DECODE, rtol=0,
                                                          scale=float(expected.abs().max())))


@torch.no_grad()
@pytest.mark.parametrize("chunk_size", [1, 3, 4, 100])
def test_chunked_decode_matches_golden(vae, golden, scale, chunk_size):
    z = rearrange(golden["decode_input_latent_scaled"], "b c t h w -> (b t) c h w") / scale
    expected = rearrange(golden["decode_output"], "b c t h w -> (b t) c h w")
    torch.testing.assert_close(vae.decode(z, chunk_size=chunk_size), expected, rtol=0, atol=ATOL_DECODE)


@torch.no_grad()
@pytest.mark.parametrize("chunk_size", [1, 3])
def test_chunked_equals_unchunked_in_float64(vae, tiny, golden, scale, chunk_size):
    # In float64 any difference left is kernel round-off (~1e-15): chunking changes no maths. (In float32 oneDNN may
    # pick a different conv algorithm per batch size, which moves values by ~1e-6; the golden test above bounds it.)
    model = AutoencoderKL(**tiny).eval()
    model.load_state_dict(vae.state_dict())
    model = model.double()
    z = rearrange(golden["decode_input_latent_scaled"], "b c t h w -> (b t) c h w").double() / scale
    torch.testing.assert_close(model.decode(z, chunk_size=chunk_size), model.decode(z), rtol=0, atol=1e-12)
    x = _frames(golden).double()
    for got, want in zip(model.encode(x, chunk_size=chunk_size), model.encode(x)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@torch.no_grad()
def test_chunked_decode_is_bit_identical_without_onednn(vae, golden, scale):
    # Without oneDNN every conv runs one image at a time with the same kernel, so chunking is exact in float32 too:
    # the ~1e-6 float32 differences with oneDNN come from its batch-size-dependent algorithms, not from this code.
    z = rearrange(golden["decode_input_latent_scaled"], "b c t h w -> (b t) c h w") / scale
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False  # (the flags() context manager also warns about TF32 on Intel GPUs)
    try:
        assert torch.equal(vae.decode(z, chunk_size=3), vae.decode(z))
    finally:
        torch.backends.mkldnn.enabled = previous


@torch.no_grad()
def test_frames_are_independent(vae, golden):
    # every op is per image (spec §3.4): a frame's latent does not depend on the other frames of the batch
    x = _frames(golden)
    mean_all, _ = vae.encode(x)
    assert len(x) > 1, "the VAE fixture needs two frames to show independence"
    mean_one, _ = vae.encode(x[-1:])
    torch.testing.assert_close(mean_one, mean_all[-1:], rtol=0, atol=ATOL_ENCODE)


@torch.no_grad()
def test_logvar_is_clamped_to_minus30_20(vae, tiny):
    model = AutoencoderKL(**tiny).eval()
    model.load_state_dict(vae.state_dict())
    side = tiny["ddconfig"]["resolution"]
    x = torch.zeros(2, 3, side, side)
    # shift the log-variance half of quant_conv's output (channels 4..7) far out of range both ways
    bias = model.quant_conv.bias
    bias[4:6] += 1e4
    bias[6:8] -= 1e4
    mean, logvar = model.encode(x)
    assert mean.shape == logvar.shape == (2, tiny["embed_dim"], side // latent_factor(), side // latent_factor())
    assert torch.all(logvar[:, :2] == 20.0)
    assert torch.all(logvar[:, 2:] == -30.0)


def test_state_dict_matches_golden_keys_and_shapes(vae):
    expected = {k[len(PREFIX):]: tuple(v.shape) for k, v in golden_state_dict("cami2v").items() if k.startswith(PREFIX)}
    assert {k: tuple(v.shape) for k, v in vae.state_dict().items()} == expected


# -- full-size key manifests on the meta device ----------------------------------------------------------------------

MANIFESTS = sorted(p.name for p in KEYS_DIR.glob("*.json") if not p.name.endswith(".meta.json")) or ["cami2v_256.json"]


@pytest.mark.parametrize("manifest", MANIFESTS)
def test_full_size_keys_shapes_and_order_match_manifest(manifest):
    keys = json.loads(require(KEYS_DIR / manifest).read_text())
    expected = [(k[len(PREFIX):], list(shape)) for k, shape in keys.items() if k.startswith(PREFIX)]
    assert len(expected) == 248
    with torch.device("meta"):
        model = AutoencoderKL(**FULL)
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == expected
    assert sum(p.numel() for p in model.parameters()) == 83_653_863  # keys/README.md, first_stage_model


# -- shapes and errors -----------------------------------------------------------------------------------------------

def test_full_size_latent_shape_on_meta():
    with torch.device("meta"):
        model = AutoencoderKL(**FULL)
        mean, logvar = model.encode(torch.empty(2, 3, 256, 256), chunk_size=1)
        assert mean.shape == logvar.shape == (2, 4, 32, 32)
        assert model.decode(torch.empty(3, 4, 40, 64), chunk_size=2).shape == (3, 3, 320, 512)


def test_wrong_input_shapes_say_what_was_expected(vae):
    with pytest.raises(ValueError, match=r"\[N, 4, H, W\].*\(1, 4, 4, 8, 8\)"):
        vae.decode(torch.zeros(1, 4, 4, 8, 8))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        vae.encode(torch.zeros(2, 4, 64, 64))
    factor = latent_factor()
    with pytest.raises(ValueError, match=f"multiples of {factor}"):
        vae.encode(torch.zeros(1, 3, 8 * factor - factor // 2, 8 * factor))


@pytest.mark.parametrize("chunk_size", [0, -1, 2.5, True])
def test_bad_chunk_size(vae, chunk_size):
    with pytest.raises(ValueError, match="chunk_size"):
        vae.decode(torch.zeros(2, 4, 8, 8), chunk_size=chunk_size)


def test_constructor_rejects_unknown_and_unsupported_options():
    dd = UNIT["ddconfig"]
    with pytest.raises(TypeError, match="unexpected keyword argument 'emb_dim'"):
        AutoencoderKL(emb_dim=4, ddconfig=dd)
    with pytest.raises(TypeError, match=r"unknown keys \['chmult'\]"):
        AutoencoderKL(embed_dim=4, ddconfig={**dd, "chmult": [1, 2]})
    with pytest.raises(TypeError, match=r"missing \['z_channels'\]"):
        AutoencoderKL(embed_dim=4, ddconfig={k: v for k, v in dd.items() if k != "z_channels"})
    with pytest.raises(ValueError, match="double_z"):
        AutoencoderKL(embed_dim=4, ddconfig={**dd, "double_z": False})
    with pytest.raises(NotImplementedError, match="linear"):
        AutoencoderKL(embed_dim=4, ddconfig={**dd, "attn_type": "linear"})
    with pytest.raises(ValueError, match="ckpt_path"):
        AutoencoderKL(embed_dim=4, ddconfig=dd, ckpt_path="vae.ckpt")


def test_attention_resolutions_add_attention_blocks():
    # attn_resolutions places AttnBlocks by the nominal resolution of a level, in encoder and decoder alike
    dd = {**UNIT["ddconfig"], "attn_resolutions": [16]}
    keys = AutoencoderKL(embed_dim=4, ddconfig=dd).state_dict()
    assert "encoder.down.2.attn.0.q.weight" in keys and "encoder.down.1.attn.0.q.weight" not in keys
    assert "decoder.up.2.attn.1.proj_out.weight" in keys and "decoder.up.1.attn.0.q.weight" not in keys


def test_original_yaml_params_pass_straight_through(tiny, golden):
    # an importer hands the original `first_stage_config.params` (golden/configs/cami2v_*.yaml) over unchanged, and
    # the VAE it builds gives the fixture's latent shape for the fixture's frame size
    model = AutoencoderKL(**tiny)
    height, width = golden["video_u8"].shape[1:3]
    assert model.encode(torch.zeros(1, 3, height, width))[0].shape == (1, *golden["posterior_mean"].shape[1:])


@torch.no_grad()
def test_fp16_attention_block_runs_in_fp32_where_fp16_products_overflow():
    from cami2v_core.modules import attention

    torch.manual_seed(0)
    block = AttnBlock(64).eval()
    for conv in (block.q, block.k):
        conv.weight.mul_(100.0)  # |q.k| over 64 channels reaches ~1e5, past fp16's 65504
    x = torch.randn(2, 64, 4, 4)
    q = rearrange(block.q(block.norm(x)), "n c h w -> n 1 (h w) c")
    k = rearrange(block.k(block.norm(x)), "n c h w -> n 1 (h w) c")
    assert (q @ k.transpose(-1, -2)).abs().max() > 65504  # the case this is about
    previous = attention.get_backend()
    attention.set_backend("math")  # the products formed in the input dtype, as SDPA's math fallback does
    try:
        plain = attention.attention_math(q.half(), k.half(), q.half())
        assert not torch.isfinite(plain).all()  # without the island: inf - inf in the softmax
        got = block.half()(x.half())
    finally:
        attention.set_backend(previous)
    reference = block.float()(x)
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), reference, atol=2e-2 * float(reference.abs().max()), rtol=2e-2)
