"""``linear``: bit-for-bit parity with LoFTR's LinearAttention (spec §1.4) and its masking."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from loftr_attention import LinearAttention, get_backend


def original_linear_attention(
    queries: Tensor,
    keys: Tensor,
    values: Tensor,
    q_mask: Tensor | None = None,
    kv_mask: Tensor | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """The original LoFTR LinearAttention, transcribed from the spec, on (N, L, H, D) tensors."""
    Q = F.elu(queries) + 1
    K = F.elu(keys) + 1
    if q_mask is not None:
        Q = Q * q_mask[:, :, None, None]
    if kv_mask is not None:
        K = K * kv_mask[:, :, None, None]
        values = values * kv_mask[:, :, None, None]
    v_length = values.size(1)
    values = values / v_length
    KV = torch.einsum("nshd,nshv->nhdv", K, values)
    Z = 1 / (torch.einsum("nlhd,nhd->nlh", Q, K.sum(dim=1)) + eps)
    return torch.einsum("nlhd,nhdv,nlh->nlhv", Q, KV, Z) * v_length


def _layer_inputs(n: int, length: int, source: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """(N, L, H, D) projections as LoFTR's layer makes them (views of (N, L, C))."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, length, 256, generator=g).view(n, length, 8, 32)
    k = torch.randn(n, source, 256, generator=g).view(n, source, 8, 32)
    v = torch.randn(n, source, 256, generator=g).view(n, source, 8, 32)
    return q, k, v


@pytest.mark.parametrize("contiguous", [False, True], ids=["views", "contiguous"])
@pytest.mark.parametrize(("n", "length", "source"), [(2, 60, 60), (3, 40, 70), (500, 25, 25)])
def test_bit_identical_to_original_fp32(n: int, length: int, source: int, contiguous: bool) -> None:
    q, k, v = _layer_inputs(n, length, source, seed=n)
    expected = original_linear_attention(q, k, v)
    q2, k2, v2 = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, D) views, as LoFTR's layer
    if contiguous:
        q2, k2, v2 = (t.contiguous() for t in (q2, k2, v2))
    got = get_backend("linear")(q2, k2, v2)
    assert torch.equal(got.transpose(1, 2), expected)


def test_bit_identical_to_original_with_padding_masks() -> None:
    q, k, v = _layer_inputs(3, 48, 64, seed=7)
    q_mask = torch.ones(3, 48, dtype=torch.bool)
    kv_mask = torch.ones(3, 64, dtype=torch.bool)
    q_mask[0, 30:] = False
    kv_mask[1, 10:] = False
    kv_mask[2, :5] = False
    expected = original_linear_attention(q, k, v, q_mask, kv_mask)
    got = LinearAttention()(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), q_mask=q_mask, kv_mask=kv_mask
    ).transpose(1, 2)
    assert torch.equal(got, expected)
    assert torch.count_nonzero(got[0, 30:]) == 0


def test_known_answer_uniform_features() -> None:
    # With q = k = 0, phi = 1 everywhere: every query averages the values (up to eps).
    v = torch.arange(2 * 1 * 4 * 3, dtype=torch.float64).view(2, 1, 4, 3)
    q = torch.zeros(2, 1, 5, 3, dtype=torch.float64)
    k = torch.zeros(2, 1, 4, 3, dtype=torch.float64)
    out = LinearAttention()(q, k, v)
    mean = v.mean(dim=2, keepdim=True).expand(2, 1, 5, 3)
    # out = sum(v) * 3 / (3 * 4 + eps) vs mean = sum(v) / 4
    torch.testing.assert_close(out, mean * (12 / (12 + 1e-6)), rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_fully_masked_rows_are_zero_not_nan(dtype: torch.dtype) -> None:
    q, k, v = (t.transpose(1, 2).to(dtype) for t in _layer_inputs(2, 16, 16, seed=3))
    q_mask = torch.ones(2, 16, dtype=torch.bool)
    q_mask[0, 8:] = False
    kv_mask = torch.ones(2, 16, dtype=torch.bool)
    kv_mask[1] = False
    out = LinearAttention()(q, k, v, q_mask=q_mask, kv_mask=kv_mask)
    assert out.dtype == dtype
    assert not torch.isnan(out).any()
    assert torch.count_nonzero(out[0, :, 8:]) == 0
    assert torch.count_nonzero(out[1]) == 0
    ref = LinearAttention()(q.float(), k.float(), v.float(), q_mask=q_mask, kv_mask=kv_mask)
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
