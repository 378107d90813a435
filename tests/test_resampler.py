"""Resampler: golden parity (golden README §9), an independent float64 attention check, key manifests, errors."""

from __future__ import annotations

import json

import pytest
import torch

from cami2v_core.modules.resampler import PerceiverAttention, Resampler
from tests.golden import GOLDEN_DIR, KEYS_DIR, golden_state_dict, load_tensors, require

ENCODERS = "encoders/encoders.safetensors"
PREFIX = "image_proj_model."
# image_proj_stage_config.params of golden/configs/cami2v_tiny.yaml
TINY = dict(dim=64, depth=2, dim_head=16, heads=3, num_queries=16, embedding_dim=48, output_dim=64, ff_mult=4,
            video_length=8)
# spec §3.3
FULL = dict(dim=1024, depth=4, dim_head=64, heads=12, num_queries=16, embedding_dim=1280, output_dim=1024, ff_mult=4,
            video_length=16)
ATOL = 1e-5  # observed ~2e-6 on outputs of magnitude ~4


@pytest.fixture(scope="module")
def golden():
    return load_tensors(ENCODERS)


@pytest.fixture(scope="module")
def resampler():
    sd = {k[len(PREFIX):]: v for k, v in golden_state_dict("cami2v").items() if k.startswith(PREFIX)}
    model = Resampler(**TINY).eval()
    model.load_state_dict(sd, strict=True)
    return model


@torch.no_grad()
@pytest.mark.parametrize("name", ["image64", "image256", "zero_image"])
def test_matches_golden(resampler, golden, name):
    out = resampler(golden[f"{name}_embedder_out"])
    expected = golden[f"{name}_resampler_out"]
    assert out.shape == expected.shape == (1, 16 * 8, 64)
    torch.testing.assert_close(out, expected, rtol=0, atol=ATOL)


@torch.no_grad()
def test_batch_rows_are_independent(resampler, golden):
    names = ["image64", "image256", "zero_image"]
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


def test_without_video_length_there_are_num_queries_tokens():
    model = Resampler(**{**TINY, "video_length": None})
    assert model.latents.shape == (1, 16, 64)
    assert model(torch.zeros(2, 257, 48)).shape == (2, 16, 64)


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


def test_errors_say_what_was_expected(resampler):
    with pytest.raises(ValueError, match=r"\[B, N, 48\].*\(1, 257, 64\)"):
        resampler(torch.zeros(1, 257, 64))
    with pytest.raises(ValueError, match=r"\[B, N, 48\]"):
        resampler(torch.zeros(257, 48))
    with pytest.raises(TypeError, match="unexpected keyword argument 'num_latents'"):
        Resampler(**TINY, num_latents=4)


def test_original_yaml_params_pass_straight_through():
    # an importer hands the original `image_proj_stage_config.params` over unchanged (golden/configs/cami2v_tiny.yaml)
    from omegaconf import OmegaConf

    config = OmegaConf.load(require(GOLDEN_DIR / "configs" / "cami2v_tiny.yaml"))
    params = OmegaConf.to_container(config.model.params.image_proj_stage_config.params, resolve=True)
    model = Resampler(**params)
    assert model(torch.zeros(1, 257, 48)).shape == (1, 128, 64)
