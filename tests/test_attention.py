import pytest
import torch

from cami2v_core.modules import attention as A


@pytest.mark.parametrize("masked", [False, True])
def test_backends_agree_with_plain_math(masked):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g) for _ in range(3))
    mask = torch.rand(2, 1, 7, 7, generator=g) > 0.5 if masked else None
    if mask is not None:
        mask[..., 0] = True  # every row sees at least one key
    ref = A.attention_math(q.double(), k.double(), v.double(), mask).float()
    torch.testing.assert_close(A.attention_sdpa(q, k, v, mask), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(A.attention(q, k, v, mask), ref, atol=1e-5, rtol=1e-5)


def test_masked_keys_get_no_weight():
    q = torch.randn(1, 1, 2, 4)
    k = torch.randn(1, 1, 3, 4)
    v = torch.eye(3).view(1, 1, 3, 3).repeat(1, 1, 1, 1)[..., :3]
    v = torch.cat([v, torch.zeros(1, 1, 3, 1)], -1)
    mask = torch.tensor([[True, False, True], [False, True, False]]).view(1, 1, 2, 3)
    out = A.attention(q, k, v, mask)
    assert out[0, 0, 0, 1] == 0 and out[0, 0, 1, 0] == 0 and out[0, 0, 1, 2] == 0
    assert torch.allclose(out[0, 0, 1, 1], torch.tensor(1.0))


def test_unknown_backend_is_refused_with_choices():
    with pytest.raises(ValueError, match="sdpa"):
        A.set_backend("flash9000")


def test_split_merge_roundtrip():
    x = torch.randn(2, 5, 12)
    assert torch.equal(A.merge_heads(A.split_heads(x, 3)), x)
