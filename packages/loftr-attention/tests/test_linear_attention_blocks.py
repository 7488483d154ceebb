"""The CUDA form of linear attention (block-diagonal GEMMs) equals the per-head einsum form."""

from __future__ import annotations

import pytest
import torch

from loftr_attention.linear_attention import LinearAttention, block_diagonal_message


@pytest.mark.parametrize(("h", "d", "dv"), [(8, 32, 32), (4, 16, 8), (1, 8, 8)])
def test_block_diagonal_message_equals_per_head_products(h: int, d: int, dv: int) -> None:
    torch.manual_seed(0)
    q = torch.rand(2, 50, h, d, dtype=torch.float64)
    k = torch.rand(2, 300, h, d, dtype=torch.float64)
    v = torch.randn(2, 300, h, dv, dtype=torch.float64) / 300
    ref = torch.einsum("nlhd,nhdv->nlhv", q, torch.einsum("nshd,nshv->nhdv", k, v))
    out = block_diagonal_message(q, k, v)
    assert out.shape == (2, 50, h, dv)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    # transposed views (the layers' layout) are accepted too
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)
    torch.testing.assert_close(block_diagonal_message(qt, k, v), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
def test_cuda_linear_attention_with_long_sources_equals_cpu() -> None:
    """Above ``block_gemm_min_length`` keys CUDA takes the block form: the CPU result, masks too."""
    from loftr_attention import get_backend

    torch.manual_seed(0)
    s = 256 + 344  # the default block_gemm_min_length plus some
    assert LinearAttention().block_gemm_min_length == 256
    q, k, v = torch.randn(2, 8, 70, 32), torch.randn(2, 8, s, 32), torch.randn(2, 8, s, 32)
    q_mask = torch.ones(2, 70, dtype=torch.bool)
    kv_mask = torch.ones(2, s, dtype=torch.bool)
    q_mask[1, 60:] = False
    kv_mask[0, 500:] = False
    attn = get_backend("linear")
    ref = attn(q, k, v, q_mask=q_mask, kv_mask=kv_mask)
    out = attn(*(t.cuda() for t in (q, k, v)), q_mask=q_mask.cuda(), kv_mask=kv_mask.cuda())
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-5)
