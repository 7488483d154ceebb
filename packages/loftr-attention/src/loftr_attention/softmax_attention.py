"""Exact softmax attention in plain torch: ``full`` and the bounded-memory query-chunked variant."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from loftr_attention.backend import AttentionBackend
from loftr_attention.errors import BackendOptionError
from loftr_attention.masking import zero_invalid_rows
from loftr_attention.support import FLOAT_DTYPES, DeviceSupport

__all__ = ["DEFAULT_CHUNK_ELEMENTS", "FullAttention", "chunked_softmax_attention"]

#: Default bound on the score block of :func:`chunked_softmax_attention`: 2**22 elements
#: (16 MiB in float32) per chunk, whatever L and S are.
DEFAULT_CHUNK_ELEMENTS = 1 << 22


def _check_dropout(dropout: float) -> float:
    if not 0.0 <= dropout < 1.0:
        raise BackendOptionError(f"dropout must be in [0, 1), got {dropout!r}")
    return float(dropout)


class SoftmaxBackend(AttentionBackend):
    """Base of the exact softmax backends: a dropout probability, applied only while training.

    Args:
        dropout: Dropout probability on the attention weights, in ``[0, 1)``.
    """

    exact: ClassVar[bool] = True

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = _check_dropout(dropout)

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}, exact=True"


class FullAttention(SoftmaxBackend):
    """Plain softmax attention ``softmax(q k^T / sqrt(D)) v``, materialising ``(B, H, L, S)``.

    The reference for every exact backend. Half-precision inputs take their softmax in float32
    and are cast back, so ``full`` is also the accuracy reference for fp16/bf16.

    Args:
        dropout: Dropout probability on the attention weights, applied only while training.

    Supported: every floating dtype on CPU and CUDA, with masks.
    """

    support: ClassVar[Mapping[str, DeviceSupport]] = {
        "cpu": DeviceSupport(FLOAT_DTYPES),
        "cuda": DeviceSupport(FLOAT_DTYPES),
    }

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, q_mask: Tensor | None, kv_mask: Tensor | None
    ) -> Tensor:
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
        if kv_mask is not None:
            scores = scores.masked_fill(~kv_mask[:, None, None, :], float("-inf"))
        if q.dtype in (torch.float16, torch.bfloat16):
            attn = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        else:
            attn = torch.softmax(scores, dim=-1)
        if self.training and self.dropout > 0.0:
            attn = F.dropout(attn, p=self.dropout)
        return zero_invalid_rows(torch.matmul(attn, v), q_mask, kv_mask)


def chunked_softmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_mask: Tensor | None,
    kv_mask: Tensor | None,
    *,
    dropout: float = 0.0,
    max_chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> Tensor:
    """Exact softmax attention computed over blocks of queries, with bounded extra memory.

    Each block of ``c`` queries materialises one ``(B, H, c, S)`` score block, with ``c`` chosen so
    that ``B * H * c * S <= max_chunk_elements`` (at least one query per block); the softmax is
    done in place on that block. Extra memory beyond inputs and output is therefore about
    ``max_chunk_elements`` scores plus per-row statistics, independent of ``L``.

    Args:
        q: ``(B, H, L, D)``; k: ``(B, H, S, D)``; v: ``(B, H, S, D)``, one dtype and device.
        q_mask: ``bool`` ``(B, L)`` or None; kv_mask: ``bool`` ``(B, S)`` or None.
        dropout: Dropout probability on the attention weights (0 = none); the caller passes 0
            outside training.
        max_chunk_elements: Bound on the score-block size, in elements.

    Returns:
        ``(B, H, L, D)`` in the dtype of ``q``; zero rows for masked queries or rows without keys.
    """
    b, h, length, d = q.shape
    source = k.shape[2]
    block = max(1, max_chunk_elements // max(1, b * h * source))
    scale = 1.0 / math.sqrt(d)
    keys_t = k.transpose(-2, -1)
    out = q.new_empty((b, h, length, v.shape[-1]))
    key_fill = None if kv_mask is None else ~kv_mask[:, None, None, :]
    for start in range(0, length, block):
        stop = min(start + block, length)
        scores = torch.matmul(q[:, :, start:stop] * scale, keys_t)  # (B, H, c, S)
        if key_fill is not None:
            scores.masked_fill_(key_fill, float("-inf"))
        # In-place softmax: subtract the row max, exponentiate, normalise after the value product.
        row_max = scores.amax(dim=-1, keepdim=True)
        scores.sub_(row_max).exp_()
        denom = scores.sum(dim=-1, keepdim=True)
        if dropout > 0.0:
            scores = F.dropout(scores, p=dropout)
        out[:, :, start:stop] = torch.matmul(scores, v).div_(denom)
    return zero_invalid_rows(out, q_mask, kv_mask)
