import pytest
import torch

from cami2v_core.modules import attention as A


@pytest.fixture
def backend():
    """Restores the process-wide backend after a test that sets one."""
    previous = A.get_backend()
    yield
    A.set_backend(previous)


def random_qkv_mask(masked, device, dtype):
    """q, k, v [2, 3, 7, 8] on the device in dtype and a bool mask [2, 1, 7, 7] (every row sees key 0), all drawn
    on the CPU so that every device gets the same numbers."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g) for _ in range(3))
    mask = torch.rand(2, 1, 7, 7, generator=g) > 0.5 if masked else None
    if mask is not None:
        mask[..., 0] = True  # every row sees at least one key
    ref = A.attention_math(q.double(), k.double(), v.double(), mask).float()
    q, k, v = (t.to(device, dtype) for t in (q, k, v))
    return q, k, v, None if mask is None else mask.to(device), ref


@pytest.mark.parametrize("masked", [False, True])
def test_backends_agree_with_plain_math(masked, device, dtype, tolerance):
    q, k, v, mask, ref = random_qkv_mask(masked, device, dtype)
    tol = tolerance(dtype, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(A.attention_sdpa(q, k, v, mask).float().cpu(), ref, **tol)
    torch.testing.assert_close(A.attention(q, k, v, mask).float().cpu(), ref, **tol)


@pytest.mark.parametrize("name", [b for b in A.BACKENDS if b != "auto"])
@pytest.mark.parametrize("masked", [False, True])
def test_every_backend_agrees_with_plain_math(name, masked, device, dtype, tolerance, backend):
    if name == "xformers" and not A.xformers_available():
        pytest.skip("xformers is not importable or has no working CUDA kernel here")
    q, k, v, mask, ref = random_qkv_mask(masked, device, dtype)
    A.set_backend(name)
    out = A.attention(q, k, v, mask)
    assert out.dtype == dtype and out.device.type == device.type
    torch.testing.assert_close(out.float().cpu(), ref, **tolerance(dtype, atol=1e-5, rtol=1e-5))


def test_masked_keys_get_no_weight(device, dtype):
    q = torch.randn(1, 1, 2, 4)
    k = torch.randn(1, 1, 3, 4)
    v = torch.eye(3).view(1, 1, 3, 3).repeat(1, 1, 1, 1)[..., :3]
    v = torch.cat([v, torch.zeros(1, 1, 3, 1)], -1)
    mask = torch.tensor([[True, False, True], [False, True, False]]).view(1, 1, 2, 3)
    out = A.attention(*(t.to(device, dtype) for t in (q, k, v)), mask.to(device)).float().cpu()
    assert out[0, 0, 0, 1] == 0 and out[0, 0, 1, 0] == 0 and out[0, 0, 1, 2] == 0
    assert torch.allclose(out[0, 0, 1, 1], torch.tensor(1.0))


def test_unknown_backend_is_refused_with_choices():
    with pytest.raises(ValueError, match="sdpa"):
        A.set_backend("flash9000")


def test_split_merge_roundtrip():
    x = torch.randn(2, 5, 12)
    assert torch.equal(A.merge_heads(A.split_heads(x, 3)), x)


def test_math_backend_is_refused_where_its_scores_do_not_fit(monkeypatch, backend):
    from cami2v_core.errors import CamI2VError

    q = torch.randn(2, 3, 64, 8)
    need = A.math_bytes(q, q)
    assert need == 2 * 2 * 3 * 64 * 64 * 4  # the scores and their softmax, fp32
    monkeypatch.setattr(A, "MATH_CHECK_BYTES", 0)  # check even this small call
    monkeypatch.setattr(A, "free_bytes", lambda device: need - 1)
    A.set_backend("math")
    with pytest.raises(A.AttentionMemoryError, match="'sdpa'") as caught:
        A.attention(q, q, q)
    assert isinstance(caught.value, CamI2VError) and "2x3x64x64" in str(caught.value)
    monkeypatch.setattr(A, "free_bytes", lambda device: need)  # just enough: it runs
    torch.testing.assert_close(A.attention(q, q, q), A.attention_math(q, q, q))
    monkeypatch.setattr(A, "free_bytes", lambda device: 0)
    A.set_backend("sdpa")  # SDPA never forms the matrix: never refused
    torch.testing.assert_close(A.attention(q, q, q), A.attention_math(q, q, q), atol=1e-5, rtol=1e-5)


def test_small_math_calls_do_not_ask_for_free_memory(monkeypatch, backend):
    def no_query(device):
        raise AssertionError("free memory was queried for a small call")

    monkeypatch.setattr(A, "free_bytes", no_query)
    A.set_backend("math")
    q = torch.randn(1, 2, 16, 8)
    assert A.attention(q, q, q).shape == q.shape  # under MATH_CHECK_BYTES: no driver call per attention
