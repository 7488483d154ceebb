"""Exact softmax attention computed over blocks of keys with an online (running) softmax."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor

from loftr_attention import AttentionBackend, DeviceSupport


class KeyBlockedAttention(AttentionBackend):
    """Softmax attention accumulated over key blocks of ``block_size`` (the flash-attention
    recurrence, in plain torch): memory ``O(B * H * L * block_size)`` instead of ``O(B*H*L*S)``.

    Exact softmax attention (``exact = True``): same function as loftr-attention's ``full``.
    Supports float32/float64 on CPU and CUDA, with masks.

    Args:
        block_size: Number of keys per block.
    """

    exact: ClassVar[bool] = True
    support: ClassVar[Mapping[str, DeviceSupport]] = {
        "cpu": DeviceSupport(frozenset({torch.float32, torch.float64})),
        "cuda": DeviceSupport(frozenset({torch.float32, torch.float64})),
    }

    def __init__(self, block_size: int = 256) -> None:
        super().__init__()
        self.block_size = block_size

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, q_mask: Tensor | None, kv_mask: Tensor | None
    ) -> Tensor:
        """``q`` (B, H, L, D), ``k``/``v`` (B, H, S, D), masks bool -> (B, H, L, D)."""
        b, h, length, _ = q.shape
        q = q * (1.0 / math.sqrt(q.shape[-1]))
        running_max = q.new_full((b, h, length, 1), float("-inf"))
        running_sum = q.new_zeros((b, h, length, 1))
        acc = torch.zeros_like(q)
        for start in range(0, k.shape[2], self.block_size):
            stop = start + self.block_size
            scores = q @ k[:, :, start:stop].transpose(-2, -1)
            if kv_mask is not None:
                scores = scores.masked_fill(~kv_mask[:, None, None, start:stop], float("-inf"))
            new_max = torch.maximum(running_max, scores.amax(-1, keepdim=True))
            # Rows that have seen only masked keys keep max -inf; use 0 to avoid inf - inf.
            safe_max = torch.where(torch.isinf(new_max), 0.0, new_max)
            weights = torch.exp(scores - safe_max)
            rescale = torch.exp(running_max - safe_max)
            running_sum = running_sum * rescale + weights.sum(-1, keepdim=True)
            acc = acc * rescale + weights @ v[:, :, start:stop]
            running_max = new_max
        out = acc / torch.where(running_sum > 0, running_sum, 1.0)
        if q_mask is not None:
            out = out * q_mask[:, None, :, None]
        return out
