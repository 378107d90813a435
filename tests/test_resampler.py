"""Resampler: golden parity (golden README §9), an independent float64 attention check, key manifests, errors."""

from __future__ import annotations

import json

import pytest
import torch

from cami2v_core.modules.resampler import PerceiverAttention, Resampler
from tests.golden import KEYS_DIR, MISSING, fixture_tensors, golden_state_dict, load_tensors, model_params, require

ENCODERS = "encoders/encoders.safetensors"
PREFIX = "image_proj_model."
# spec §3.3
FULL = dict(dim=1024, depth=4, dim_head=64, heads=12, num_queries=16, embedding_dim=1280, output_dim=1024, ff_mult=4,
            video_length=16)
ATOL = 1e-5  # observed ~2e-6 on outputs of magnitude ~4


def _image_cases() -> list[str]:
    """The image cases of the encoder fixture: every `<name>_resampler_out` (README §9), from manifest.json."""
    try:
        return sorted(k[:-len("_resampler_out")] for k in fixture_tensors(ENCODERS) if k.endswith("_resampler_out"))
    except pytest.skip.Exception:
        return [MISSING]


@pytest.fixture(scope="module")
def golden():
    return load_tensors(ENCODERS)


@pytest.fixture(scope="module")
def tiny() -> dict:
    """image_proj_stage_config.params of the fixture's CamI2V YAML (golden/configs/cami2v_*.yaml)."""
    return model_params("image_proj_stage_config")


@pytest.fixture(scope="module")
def resampler(tiny):
    sd = {k[len(PREFIX):]: v for k, v in golden_state_dict("cami2v").items() if k.startswith(PREFIX)}
    model = Resampler(**tiny).eval()
    model.load_state_dict(sd, strict=True)
    return model


@torch.no_grad()
@pytest.mark.parametrize("name", _image_cases())
def test_matches_golden(resampler, tiny, golden, name):
    out = resampler(golden[f"{name}_embedder_out"])
    expected = golden[f"{name}_resampler_out"]
    # per-frame image tokens: num_queries per frame of the video (README §2)
    assert out.shape == expected.shape == (1, tiny["num_queries"] * tiny["video_length"], tiny["output_dim"])
    torch.testing.assert_close(out, expected, rtol=0, atol=ATOL)


@torch.no_grad()
def test_batch_rows_are_independent(resampler, golden):
    names = sorted(k[:-len("_resampler_out")] for k in golden if k.endswith("_resampler_out"))
    assert len(names) > 1, "the encoder fixture needs two images to show independence"
    out = resampler(torch.cat([golden[f"{n}_embedder_out"] for n in names]))
    for i, n in enumerate(names):
        torch.testing.assert_close(out[i:i + 1], golden[f"{n}_resampler_out"], rtol=0, atol=ATOL)


@torch.no_grad()
def test_perceiver_attention_equals_plain_softmax_attention_float64():
    # Independent maths: softmax(q k^T / sqrt(d)) v per head over [x ; latents], LayerNorms first, no biases.
    torch.manual_seed(0)
    dim, heads, dim_head = 24, 3, 8
    attn = PerceiverAttention(dim, dim_head=dim_head, heads=heads).double()
    for p in attn.parameters():
        p.copy_(torch.randn_like(p) * 0.3)
    x, latents = torch.randn(2, 5, dim, dtype=torch.float64), torch.randn(2, 4, dim, dtype=torch.float64)

    def ln(t, norm):
        mu, var = t.mean(-1, keepdim=True), t.var(-1, unbiased=False, keepdim=True)
        return (t - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias

    xn, ln_ = ln(x, attn.norm1), ln(latents, attn.norm2)
    kv_in = torch.cat([xn, ln_], dim=1)
    wk, wv = attn.to_kv.weight.split(heads * dim_head, dim=0)
    outs = []
    for h in range(heads):
        rows = slice(h * dim_head, (h + 1) * dim_head)
        q = ln_ @ attn.to_q.weight[rows].T
        k, v = kv_in @ wk[rows].T, kv_in @ wv[rows].T
        outs.append(torch.softmax(q @ k.transpose(1, 2) / dim_head ** 0.5, dim=-1) @ v)
    expected = torch.cat(outs, dim=-1) @ attn.to_out.weight.T
    torch.testing.assert_close(attn(x, latents), expected, rtol=0, atol=1e-12)


def test_without_video_length_there_are_num_queries_tokens(tiny):
    model = Resampler(**{**tiny, "video_length": None})
    queries, width = tiny["num_queries"], tiny["dim"]
    assert model.latents.shape == (1, queries, width)
    assert model(torch.zeros(2, 257, tiny["embedding_dim"])).shape == (2, queries, tiny["output_dim"])


def test_state_dict_matches_golden_keys_and_shapes(resampler):
    expected = {k[len(PREFIX):]: tuple(v.shape) for k, v in golden_state_dict("cami2v").items() if k.startswith(PREFIX)}
    assert {k: tuple(v.shape) for k, v in resampler.state_dict().items()} == expected


MANIFESTS = sorted(p.name for p in KEYS_DIR.glob("*.json") if not p.name.endswith(".meta.json")) or ["cami2v_256.json"]


@pytest.mark.parametrize("manifest", MANIFESTS)
def test_full_size_keys_shapes_and_order_match_manifest(manifest):
    keys = json.loads(require(KEYS_DIR / manifest).read_text())
    expected = [(k[len(PREFIX):], list(shape)) for k, shape in keys.items() if k.startswith(PREFIX)]
    assert len(expected) == 51  # 7 + 4 layers x 11
    with torch.device("meta"):
        model = Resampler(**FULL)
        assert model(torch.empty(2, 257, 1280)).shape == (2, 256, 1024)
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == expected
    assert sum(p.numel() for p in model.parameters()) == 48_787_456  # keys/README.md, image_proj_model


def test_errors_say_what_was_expected(resampler, tiny):
    width = tiny["embedding_dim"]
    with pytest.raises(ValueError, match=rf"\[B, N, {width}\].*\(1, 257, {width + 16}\)"):
        resampler(torch.zeros(1, 257, width + 16))
    with pytest.raises(ValueError, match=rf"\[B, N, {width}\]"):
        resampler(torch.zeros(257, width))
    with pytest.raises(TypeError, match="unexpected keyword argument 'num_latents'"):
        Resampler(**tiny, num_latents=4)


def test_original_yaml_params_pass_straight_through(tiny, golden):
    # an importer hands the original `image_proj_stage_config.params` (golden/configs/cami2v_*.yaml) over unchanged:
    # the Resampler it builds maps the fixture's image tokens to the fixture's shape
    name = next(k[:-len("_resampler_out")] for k in golden if k.endswith("_resampler_out"))
    model = Resampler(**tiny)
    assert model(torch.zeros_like(golden[f"{name}_embedder_out"])).shape == golden[f"{name}_resampler_out"].shape
