"""OpenCLIP towers and tokenizer: golden parity (golden README §9), key manifests, tokenizer cases, kornia resize."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from cami2v_core.modules.clip import (OpenCLIPImageEncoder, OpenCLIPTextEncoder, clip_kwargs_from_arch,
                                      gaussian_kernel1d, resize_antialiased_bicubic)
from cami2v_core.modules.tokenizer import EOT_ID, PAD_ID, SOT_ID, get_tokenizer, tokenize
from tests.golden import (GOLDEN_DIR, KEYS_DIR, MISSING, fixture_tensors, golden_state_dict, load_json, load_tensors,
                          require)

ENCODERS = "encoders/encoders.safetensors"
ATOL = 1e-5  # observed max error ~2e-6 (text) and ~7e-7 (image) against the original's fp32 outputs


# -- fixtures --------------------------------------------------------------------------------------------------------

def _strip(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def golden():
    return load_tensors(ENCODERS)


@pytest.fixture(scope="module")
def prompts():
    with safe_open(str(require(GOLDEN_DIR / ENCODERS)), "pt") as f:
        return json.loads(f.metadata()["prompts"])


@pytest.fixture(scope="module")
def state_dict():
    return golden_state_dict("cami2v")


@pytest.fixture(scope="module")
def text_encoder(state_dict):
    enc = OpenCLIPTextEncoder(**clip_kwargs_from_arch(load_json("configs/open_clip_tiny_text_arch.json")),
                              layer="penultimate")
    enc.load_state_dict(_strip(state_dict, "cond_stage_model."), strict=True)
    return enc.eval()


@pytest.fixture(scope="module")
def image_encoder(state_dict):
    enc = OpenCLIPImageEncoder(**clip_kwargs_from_arch(load_json("configs/open_clip_tiny_vision_arch.json")))
    enc.load_state_dict(_strip(state_dict, "embedder."), strict=True)
    return enc.eval()


def _image_cases() -> list[str]:
    """The image cases of the encoder fixture: every `<name>_embedder_out` (README §9), from manifest.json."""
    try:
        return sorted(k[:-len("_embedder_out")] for k in fixture_tensors(ENCODERS) if k.endswith("_embedder_out"))
    except pytest.skip.Exception:
        return [MISSING]


def _u8_to_model(u8: torch.Tensor) -> torch.Tensor:
    """HWC uint8 -> [1, 3, H, W] in [-1, 1], as the demo converts images (golden README §9)."""
    return ((u8.float() / 255.0 - 0.5) * 2.0).permute(2, 0, 1)[None]


# -- golden parity ---------------------------------------------------------------------------------------------------

def test_tokens_match_golden(golden, prompts):
    assert prompts and len(prompts) == len(golden["tokens"])  # one row per prompt of the header
    assert torch.equal(tokenize(prompts), golden["tokens"])


def test_text_embedding_matches_golden(text_encoder, golden, prompts):
    with torch.no_grad():
        from_tokens = text_encoder(golden["tokens"])
    torch.testing.assert_close(from_tokens, golden["text_emb"], atol=ATOL, rtol=0)
    torch.testing.assert_close(text_encoder.encode(prompts), golden["text_emb"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", _image_cases())
def test_image_tokens_match_golden(image_encoder, golden, name):
    # a picture larger than the tower's input exercises kornia's antialiased downscale, a smaller one the plain
    # bicubic upscale (golden README §9: image256, image64). A case without its `<name>_u8` picture is the
    # unconditional branch, an all-zero image (README §7), whose size the resize cannot show.
    picture = golden.get(f"{name}_u8")
    image = _u8_to_model(picture) if picture is not None else torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        out = image_encoder(image)
    assert out.shape == golden[f"{name}_embedder_out"].shape
    torch.testing.assert_close(out, golden[f"{name}_embedder_out"], atol=ATOL, rtol=0)


# -- full-size keys on the meta device -------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix,cls", [("cond_stage_model.", OpenCLIPTextEncoder),
                                        ("embedder.", OpenCLIPImageEncoder)])
def test_vit_h_14_keys_shapes_and_order_match_manifest(prefix, cls):
    manifest = json.loads(require(KEYS_DIR / "cami2v_256.json").read_text())
    expected = [(k, list(shape)) for k, shape in manifest.items() if k.startswith(prefix)]
    with torch.device("meta"):
        enc = cls(**clip_kwargs_from_arch("ViT-H-14"))
    got = [(prefix + k, list(v.shape)) for k, v in enc.state_dict().items()]
    assert got == expected  # same names, shapes and state_dict order


def test_vit_h_14_sizes():
    kw = clip_kwargs_from_arch(None)
    assert (kw["width"], kw["layers"], kw["heads"], kw["vocab_size"], kw["context_length"], kw["embed_dim"]) == \
        (1024, 24, 16, 49408, 77, 1024)
    assert (kw["vision_width"], kw["vision_layers"], kw["vision_head_width"], kw["vision_patch_size"],
            kw["vision_image_size"]) == (1280, 32, 80, (14, 14), (224, 224))
    with torch.device("meta"):
        enc = OpenCLIPImageEncoder(**kw)
    assert len(enc.model.visual.transformer.resblocks[0].attn.in_proj_weight) == 3 * 1280
    assert enc.model.visual.transformer.resblocks[0].attn.heads == 16


# -- arch dicts ------------------------------------------------------------------------------------------------------

def test_arch_dict_sizes_and_defaults():
    kw = clip_kwargs_from_arch({"embed_dim": 8, "vision_cfg": {"width": 32, "head_width": 16, "layers": 1},
                                "text_cfg": {"width": 16, "heads": 2, "layers": 1}})
    assert kw["vision_patch_size"] == (16, 16) and kw["vision_image_size"] == (224, 224)  # open_clip defaults
    assert kw["vocab_size"] == 49408 and kw["context_length"] == 77 and kw["vision_mlp_ratio"] == 4.0


@pytest.mark.parametrize("arch,match", [
    ("ViT-L-14", "only 'ViT-H-14'"),
    ({"vision_cfg": {}, "text_cfg": {}}, "embed_dim"),
    ({"embed_dim": 8, "quick_gelu": True}, "quick_gelu"),
    ({"embed_dim": 8, "vision_cfg": {"layers": [3, 4, 6, 3]}}, "ModifiedResNet"),
    ({"embed_dim": 8, "text_cfg": {"hf_model_name": "roberta-base"}}, "hf_model_name"),
    ({"embed_dim": 8, "text_cfg": {"widht": 8}}, "unknown key 'widht'"),
])
def test_arch_errors_say_what_is_wrong(arch, match):
    with pytest.raises(ValueError, match=match):
        clip_kwargs_from_arch(arch)


# -- text tower behaviour --------------------------------------------------------------------------------------------

def test_causal_mask_earlier_positions_ignore_later_tokens(text_encoder):
    tokens = tokenize(["a red fox on a boat", "a red fox in a car"])
    with torch.no_grad():
        out = text_encoder(tokens)
    same = 4  # SOT, "a", "red", "fox" are shared; position 4 differs
    assert torch.equal(tokens[0, :same], tokens[1, :same]) and tokens[0, same] != tokens[1, same]
    torch.testing.assert_close(out[0, :same], out[1, :same], atol=1e-6, rtol=0)
    assert (out[0, same:] - out[1, same:]).abs().max() > 1e-3


def test_last_layer_equals_penultimate_of_a_deeper_stack(text_encoder):
    # layer="last" must run every block: a 2-block "last" equals a 3-block "penultimate" sharing those 2 blocks
    kw = clip_kwargs_from_arch(load_json("configs/open_clip_tiny_text_arch.json"))
    last = OpenCLIPTextEncoder(**kw, layer="last")
    last.load_state_dict(text_encoder.state_dict())
    deeper = OpenCLIPTextEncoder(**{**kw, "layers": kw["layers"] + 1}, layer="penultimate")
    missing, _ = deeper.load_state_dict(text_encoder.state_dict(), strict=False)
    assert all(k.startswith(f"model.transformer.resblocks.{kw['layers']}.") for k in missing)
    tokens = tokenize(["snowy mountain village at dusk"])
    with torch.no_grad():
        torch.testing.assert_close(last(tokens), deeper(tokens), atol=0, rtol=0)
        assert not torch.allclose(last(tokens), text_encoder(tokens), atol=1e-3)


def test_text_encoder_input_errors(text_encoder):
    with pytest.raises(ValueError, match=r"\[batch, 77\]"):
        text_encoder(torch.zeros(2, 76, dtype=torch.long))
    with pytest.raises(ValueError, match="penultimate"):
        OpenCLIPTextEncoder(width=8, heads=2, layers=1, vocab_size=10, embed_dim=4, layer="pooled")
    with pytest.raises(TypeError, match="unexpected keyword"):
        OpenCLIPTextEncoder(width=8, heads=2, layers=1, vocab_size=10, embed_dim=4, patch_size=14)


# -- image tower behaviour -------------------------------------------------------------------------------------------

def test_image_encoder_squashes_any_size(image_encoder):
    with torch.no_grad():
        out = image_encoder(torch.rand(2, 3, 40, 72) * 2 - 1)
    kw = clip_kwargs_from_arch(load_json("configs/open_clip_tiny_vision_arch.json"))
    (height, width), (ph, pw) = kw["vision_image_size"], kw["vision_patch_size"]
    tokens = (height // ph) * (width // pw) + 1  # every patch and the class token
    assert out.shape == (2, tokens, kw["vision_width"]) and torch.isfinite(out).all()


def test_image_encoder_rejects_channels_last(image_encoder):
    with pytest.raises(ValueError, match=r"\[batch, 3, H, W\]"):
        image_encoder(torch.zeros(1, 64, 64, 3))


def test_gaussian_taps_match_kornia_docstring():
    # values printed in kornia's get_gaussian_kernel1d docstring
    torch.testing.assert_close(gaussian_kernel1d(3, 2.5, torch.float32), torch.tensor([0.3243, 0.3513, 0.3243]),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(gaussian_kernel1d(5, 1.5, torch.float32),
                               torch.tensor([0.1201, 0.2339, 0.2921, 0.2339, 0.1201]), atol=1e-4, rtol=0)
    torch.testing.assert_close(gaussian_kernel1d(5, 0.7, torch.float32),
                               torch.tensor([0.0096, 0.2054, 0.5699, 0.2054, 0.0096]), atol=1e-4, rtol=0)


def _reference_resize(image: np.ndarray, size, ksizes, sigmas) -> torch.Tensor:
    """Independent float64 blur (numpy reflect padding, explicit taps, W pass then H pass) + torch bicubic."""
    x = image.astype(np.float64)
    for axis, k, s in ((3, ksizes[1], sigmas[1]), (2, ksizes[0], sigmas[0])):
        offsets = np.arange(k) - k // 2
        taps = np.exp(-offsets ** 2 / (2 * s ** 2))
        taps /= taps.sum()
        pad = [(0, 0)] * 4
        pad[axis] = (k // 2, k // 2)
        padded = np.pad(x, pad, mode="reflect")
        n = x.shape[axis]
        x = sum(t * np.take(padded, np.arange(i, i + n), axis=axis) for i, t in enumerate(taps))
    return F.interpolate(torch.from_numpy(x), size=size, mode="bicubic", align_corners=True)


def test_antialiased_downscale_matches_independent_blur():
    image = np.random.default_rng(0).uniform(-1, 1, size=(1, 3, 672, 300))
    # factors 672/224 = 3 and 300/224 = 1.34: sigma 1.0 and 0.17; kernels int(4*sigma) -> 4 -> odd 5, and min 3
    expected = _reference_resize(image, (224, 224), ksizes=(5, 3), sigmas=(1.0, (300 / 224 - 1) / 2))
    got = resize_antialiased_bicubic(torch.from_numpy(image), (224, 224))
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_upscale_is_plain_bicubic_and_downscale_blurs():
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    plain = F.interpolate(x, size=(224, 224), mode="bicubic", align_corners=True)
    assert torch.equal(resize_antialiased_bicubic(x, (224, 224)), plain)  # kornia blurs only when shrinking
    big = torch.rand(1, 3, 448, 448, dtype=torch.float64)
    assert not torch.allclose(resize_antialiased_bicubic(big, (224, 224)),
                              resize_antialiased_bicubic(big, (224, 224), antialias=False), atol=1e-3)


# -- tokenizer -------------------------------------------------------------------------------------------------------

def test_vocabulary_layout():
    tok = get_tokenizer()
    assert tok is get_tokenizer()  # loaded once
    assert tok.vocab_size == 49408
    assert tok.encoder["<start_of_text>"] == SOT_ID == 49406 and tok.encoder["<end_of_text>"] == EOT_ID == 49407


def test_known_token_ids():
    # widely published CLIP ids: "a photo of a cat" and "hello world"
    assert tokenize("a photo of a cat")[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407, 0]
    assert tokenize("hello world")[0, :5].tolist() == [49406, 3306, 1002, 49407, 0]
    # single digits are separate pieces; "d</w>" is byte symbol id 256 + (ord(d) - ord("!"))
    assert tokenize("2024")[0, 1:5].tolist() == [256 + ord(c) - ord("!") for c in "2024"]


def test_empty_prompt_and_padding():
    t = tokenize(["", "fox"])
    assert t.shape == (2, 77) and t.dtype == torch.long
    assert t[0, :2].tolist() == [SOT_ID, EOT_ID] and (t[0, 2:] == PAD_ID).all()
    assert (t[1, 3:] == PAD_ID).all() and t[1, 2] == EOT_ID


@pytest.mark.parametrize("messy,clean", [
    ("  Hello\n\t  WORLD  ", "hello world"),  # whitespace collapsed, lower-cased
    ("fish &amp; chips", "fish & chips"),  # HTML entity
    ("fish &amp;amp; chips", "fish & chips"),  # unescaped twice
    ("cafe\u0301", "café"),  # ftfy NFC-normalises combining accents
    ("âœ” done", "✔ done"),  # ftfy repairs mojibake
])
def test_text_cleaning(messy, clean):
    assert torch.equal(tokenize(messy), tokenize(clean))


def test_non_latin_text_round_trips():
    tok = get_tokenizer()
    text = "🦊 日本語 café"
    ids = tok.encode(text)
    assert all(i < SOT_ID for i in ids)
    assert tok.decode(ids).strip() == text


@pytest.mark.parametrize("words", [75, 76, 200])
def test_truncation_keeps_eot_last(words):
    t = tokenize(" ".join(["fox"] * words))[0]
    fox = get_tokenizer().encoder["fox</w>"]
    if words <= 75:  # SOT + 75 + EOT = 77 fits exactly
        assert t[1:1 + words].eq(fox).all() and t[1 + words] == EOT_ID
    else:
        assert t[0] == SOT_ID and t[-1] == EOT_ID and t[1:-1].eq(fox).all()


def test_tokenize_rejects_non_strings():
    with pytest.raises(TypeError, match="list of strings"):
        tokenize(["ok", 3])
