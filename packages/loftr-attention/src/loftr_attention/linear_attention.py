"""LoFTR's linear attention (Katharopoulos et al. 2020), as the official checkpoints were trained."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from loftr_attention.backend import AttentionBackend
from loftr_attention.errors import BackendOptionError
from loftr_attention.masking import row_valid
from loftr_attention.support import FLOAT_DTYPES, DeviceSupport

__all__ = ["LinearAttention"]


class LinearAttention(AttentionBackend):
    """LoFTR's ``LinearAttention``: feature map ``elu(x) + 1``, ``eps = 1e-6``.

    For each batch element and head, with ``phi(x) = elu(x) + 1``::

        Q = phi(q) * q_mask;  K = phi(k) * kv_mask;  V = v * kv_mask / S
        out_l = (Q_l @ sum_s K_s^T V_s) / (Q_l @ sum_s K_s + eps) * S

    where ``S`` is the full source length (padded keys included). The ``/ S`` and ``* S`` cancel
    mathematically; they are kept, in the original order of operations, so that in float32 the
    result is bit-identical to the original implementation (given the original memory layout: pass
    ``(N, L, H, D)`` projections through ``transpose(1, 2)`` views, as the LoFTR layers do).

    This is NOT softmax attention (``exact = False``): weights trained with ``linear`` do not
    transfer to ``full``/``flash``/``memory_efficient``/``sdpa`` and vice versa.

    Masks: padded queries get ``Q = 0`` and hence a zero output (by construction). The only
    deviation from the original is in the normaliser of rows that are fully masked (padded query,
    or no valid key): it is set to 1 instead of ``1 / eps`` so that float16/bfloat16 cannot turn
    ``0 * inf`` into NaN; their output is exactly 0 either way, so float32 results are unchanged.

    Supported: every floating dtype, on CPU and CUDA, masks included.

    Args:
        eps: the normaliser's epsilon (the original's 1e-6).
        block_gemm_min_length: on CUDA, sources longer than this use
            :func:`block_diagonal_message` (two large GEMMs; kornia 0.9's rule is 256); ``None``
            never does. On CPU the per-head form always runs (bit-identical to the original).
    """

    exact: ClassVar[bool] = False
    support: ClassVar[Mapping[str, DeviceSupport]] = {
        "cpu": DeviceSupport(FLOAT_DTYPES),
        "cuda": DeviceSupport(FLOAT_DTYPES),
    }

    def __init__(self, eps: float = 1e-6, block_gemm_min_length: int | None = 256) -> None:
        super().__init__()
        if block_gemm_min_length is not None and (
            isinstance(block_gemm_min_length, bool)
            or not isinstance(block_gemm_min_length, int)
            or block_gemm_min_length < 0
        ):
            raise BackendOptionError(
                f"block_gemm_min_length={block_gemm_min_length!r}: allowed is an int >= 0 or None"
            )
        self.eps = eps
        self.block_gemm_min_length = block_gemm_min_length

    def extra_repr(self) -> str:
        return f"eps={self.eps}, block_gemm_min_length={self.block_gemm_min_length}, exact=False"

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, q_mask: Tensor | None, kv_mask: Tensor | None
    ) -> Tensor:
        # Work in the original (N, L, H, D) layout with the original einsum expressions; these are
        # views, no copies.
        queries = q.transpose(1, 2)
        keys = k.transpose(1, 2)
        values = v.transpose(1, 2)
        Q = F.elu(queries) + 1
        K = F.elu(keys) + 1
        if q_mask is not None:
            Q = Q * q_mask[:, :, None, None]
        if kv_mask is not None:
            K = K * kv_mask[:, :, None, None]
            values = values * kv_mask[:, :, None, None]
        v_length = values.size(1)
        values = values / v_length  # the original's "prevent fp16 overflow"
        denominator = torch.einsum("nlhd,nhd->nlh", Q, K.sum(dim=1)) + self.eps
        valid = row_valid(q_mask, kv_mask)
        if valid is not None:
            # Fully masked rows have Q @ KV == 0; a unit normaliser keeps them 0 in half precision.
            denominator = torch.where(valid[:, :, None], denominator, 1.0)
        Z = 1 / denominator
        limit = self.block_gemm_min_length
        if Q.device.type == "cuda" and limit is not None and v_length > limit:
            message = block_diagonal_message(Q, K, values)
        else:
            KV = torch.einsum("nshd,nshv->nhdv", K, values)
            message = torch.einsum("nlhd,nhdv->nlhv", Q, KV)
        out = message * Z[..., None] * v_length
        return out.transpose(1, 2)


def block_diagonal_message(Q: Tensor, K: Tensor, V: Tensor) -> Tensor:
    """``einsum("nlhd,nhdv->nlhv", Q, einsum("nshd,nshv->nhdv", K, V))`` as two large GEMMs.

    The per-head products are H small ``D x D`` GEMMs with a long reduction, which leave a GPU
    mostly idle (the coarse transformer of a 1600x1200 pair: 40 ms ours vs 25 ms kornia on an
    H200). Here ``K^T V`` is computed for all ``C = H * D`` channels at once, ``(N, C, C)``, the
    off-diagonal head blocks are zeroed, and ``Q`` multiplies that block-diagonal matrix: H times
    the FLOPs of the per-head form, but two well-shaped GEMMs. Used on CUDA only (float rounding
    differs from the einsum form; the CPU path stays bit-identical to the original).

    Args:
        Q: ``(N, L, H, D)``; K: ``(N, S, H, D)``; V: ``(N, S, H, Dv)`` (masked and scaled).

    Returns:
        ``(N, L, H, Dv)``.
    """
    n, length, h, d = Q.shape
    s, dv = V.shape[1], V.shape[3]
    kv = torch.matmul(K.reshape(n, s, h * d).transpose(1, 2), V.reshape(n, s, h * dv))
    heads = torch.arange(h, device=Q.device)
    same_head = heads.repeat_interleave(d)[:, None] == heads.repeat_interleave(dv)[None, :]
    kv = kv * same_head  # (N, H*D, H*Dv), block diagonal
    return torch.matmul(Q.reshape(n, length, h * d), kv).view(n, length, h, dv)
