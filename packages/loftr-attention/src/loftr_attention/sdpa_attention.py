"""Backends built on ``torch.nn.functional.scaled_dot_product_attention``: flash, memory-efficient, sdpa."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from loftr_attention.backend import AttentionBackend
from loftr_attention.errors import BackendOptionError, UnsupportedInputError
from loftr_attention.masking import zero_invalid_rows
from loftr_attention.softmax_attention import (
    DEFAULT_CHUNK_ELEMENTS,
    SoftmaxBackend,
    chunked_softmax_attention,
)
from loftr_attention.support import FLOAT_DTYPES, DeviceSupport

__all__ = ["FlashAttention", "MemoryEfficientAttention", "SDPAttention"]

_HALF = frozenset({torch.float16, torch.bfloat16})


def _sdpa(
    backend: AttentionBackend,
    kernel: SDPBackend | None,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_mask: Tensor | None,
    kv_mask: Tensor | None,
    dropout: float,
) -> Tensor:
    """Run SDPA with ``kernel`` (None = torch's choice), bool key mask, zeroed invalid rows."""
    attn_mask = None if kv_mask is None else kv_mask[:, None, None, :]
    p = dropout if backend.training else 0.0
    try:
        if kernel is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        else:
            with sdpa_kernel(kernel):
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
    except RuntimeError as exc:
        if "kernel" not in str(exc).lower() and "backend" not in str(exc).lower():
            raise
        raise UnsupportedInputError(
            f"{type(backend).__qualname__}: torch's {kernel.name if kernel else 'SDPA'} kernel "
            f"rejected q {tuple(q.shape)} {q.dtype} on {q.device} "
            f"(mask: {attn_mask is not None}): {exc}. Choose another backend (e.g. 'sdpa')."
        ) from exc
    return zero_invalid_rows(out, q_mask, kv_mask)


class FlashAttention(SoftmaxBackend):
    """Exact softmax attention restricted to torch's flash-attention SDPA kernel.

    CPU: torch's CPU flash kernel, every floating dtype, masks supported (as a boolean key mask).
    CUDA: the FlashAttention-2 kernel, float16/bfloat16 only and NO masks (the kernel takes no
    ``attn_mask``); head dim and GPU architecture limits are torch's. Training-mode dropout is
    supported on CUDA only (torch's CPU flash kernel has none). Anything the kernel rejects
    raises :class:`~loftr_attention.UnsupportedInputError`; there is no fallback.

    Args:
        dropout: Dropout probability, applied only while training.
    """

    support: ClassVar[Mapping[str, DeviceSupport]] = {
        "cpu": DeviceSupport(FLOAT_DTYPES, masks=True),
        "cuda": DeviceSupport(_HALF, masks=False),
    }

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, q_mask: Tensor | None, kv_mask: Tensor | None
    ) -> Tensor:
        if self.training and self.dropout > 0.0 and q.device.type == "cpu":
            raise UnsupportedInputError(
                f"FlashAttention: dropout={self.dropout} in training mode is not supported on cpu "
                "(torch's CPU flash kernel has no dropout). Use 'sdpa' or 'full' for training with "
                "dropout on CPU, call .eval(), or set dropout=0."
            )
        return _sdpa(self, SDPBackend.FLASH_ATTENTION, q, k, v, q_mask, kv_mask, self.dropout)


class MemoryEfficientAttention(SoftmaxBackend):
    """Exact softmax attention with memory that does not grow with ``L * S``.

    Which path runs where:

    * CUDA: torch's memory-efficient SDPA kernel (``SDPBackend.EFFICIENT_ATTENTION``), float32,
      float16 and bfloat16, masks supported.
    * CPU: torch has no memory-efficient kernel there, so this runs
      :func:`~loftr_attention.softmax_attention.chunked_softmax_attention`: exact softmax over
      blocks of queries whose score block holds at most ``max_chunk_elements`` elements
      (default 2**22, 16 MiB in float32). float32 and float64 only: half precision on CPU is
      an :class:`~loftr_attention.UnsupportedInputError` (use ``flash`` or ``sdpa`` there).

    Args:
        dropout: Dropout probability, applied only while training.
        max_chunk_elements: CPU path only: bound on the score block, in elements.
    """

    support: ClassVar[Mapping[str, DeviceSupport]] = {
        "cpu": DeviceSupport(frozenset({torch.float32, torch.float64}), masks=True),
        "cuda": DeviceSupport(
            frozenset({torch.float32, torch.float16, torch.bfloat16}), masks=True
        ),
    }

    def __init__(
        self, dropout: float = 0.0, max_chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
    ) -> None:
        super().__init__(dropout)
        if max_chunk_elements < 1:
            raise BackendOptionError(
                f"max_chunk_elements must be a positive int, got {max_chunk_elements!r}"
            )
        self.max_chunk_elements = int(max_chunk_elements)

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}, max_chunk_elements={self.max_chunk_elements}, exact=True"

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, q_mask: Tensor | None, kv_mask: Tensor | None
    ) -> Tensor:
        if q.device.type == "cpu":
            return chunked_softmax_attention(
                q,
                k,
                v,
                q_mask,
                kv_mask,
                dropout=self.dropout if self.training else 0.0,
                max_chunk_elements=self.max_chunk_elements,
            )
        return _sdpa(self, SDPBackend.EFFICIENT_ATTENTION, q, k, v, q_mask, kv_mask, self.dropout)


class SDPAttention(SoftmaxBackend):
    """Exact softmax attention through ``scaled_dot_product_attention`` with torch's own kernel
    choice (flash, memory-efficient, cuDNN or math, whichever torch picks for the input).

    Supported: every floating dtype on CPU and CUDA, with masks.

    Args:
        dropout: Dropout probability, applied only while training.
    """

    support: ClassVar[Mapping[str, DeviceSupport]] = {
        "cpu": DeviceSupport(FLOAT_DTYPES),
        "cuda": DeviceSupport(FLOAT_DTYPES),
    }

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, q_mask: Tensor | None, kv_mask: Tensor | None
    ) -> Tensor:
        return _sdpa(self, None, q, k, v, q_mask, kv_mask, self.dropout)
