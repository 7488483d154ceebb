"""Dual-softmax statistics without the ``(N, L, S)`` matrix: the memory-bounded evaluation.

The model's confidence is ``softmax_L(sim) * softmax_S(sim)`` (:mod:`loftr_core.model.coarse_matching`).
When the score matrix does not fit ``coarse_chunk_elements``, this evaluates the same formula
over row chunks of image 0 and keeps only what match selection needs: per row the max and argmax
of the confidence, per column its max. Two passes: (1) per column the max score and the sum of
``exp(score - max)`` (rescaled online when the max grows); (2) per chunk the row-wise confidence
``softmax_S(sim) * exp(sim - col_max) / col_sum``. The last chunk of pass 1 is reused by pass 2.
Results equal the dense formula up to float rounding of the column sums.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ChunkScores", "streamed_dual_softmax"]

ChunkScores = Callable[[int, int], tuple[Tensor, Tensor | None]]
"""``(start, stop) -> (sim (N, stop-start, S), invalid or None)``: masked scores of a row chunk
(masked pairs at a large negative finite score) and the mask of invalid pairs."""


@torch.no_grad()
def streamed_dual_softmax(
    chunk_scores: ChunkScores,
    n: int,
    length: int,
    s: int,
    rows: int,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor, Tensor, Tensor]:
    """Row max, row argmax ``(N, L)`` and column max ``(N, S)`` of the dual-softmax confidence.

    Args:
        chunk_scores: the masked scores of a chunk of rows (see :data:`ChunkScores`).
        n, length, s: batch, rows (image-0 cells) and columns (image-1 cells).
        rows: rows per chunk.
        dtype, device: of the scores.
    """
    starts = list(range(0, length, rows))
    col_max = torch.full((n, s), float("-inf"), device=device, dtype=dtype)
    col_sum = torch.zeros((n, s), device=device, dtype=dtype)
    last: tuple[Tensor, Tensor | None] | None = None
    for start in starts:
        sim, invalid = chunk_scores(start, min(start + rows, length))
        new_max = torch.maximum(col_max, sim.amax(dim=1))
        shifted = sim - new_max[:, None]  # one temporary: exp in place (bitwise the same)
        col_sum = col_sum * torch.exp(col_max - new_max) + shifted.exp_().sum(1)
        del shifted
        col_max = new_max
        last = (sim, invalid)

    row_maxes: list[Tensor] = []
    row_args: list[Tensor] = []
    conf_col_max = torch.zeros((n, s), device=device, dtype=dtype)
    for start in reversed(starts):
        sim, invalid = last if last is not None else chunk_scores(start, min(start + rows, length))
        last = None
        conf = F.softmax(sim, dim=2)
        conf.mul_(sim.sub_(col_max[:, None]).exp_().div_(col_sum[:, None]))
        if invalid is not None:
            conf.masked_fill_(invalid, 0.0)
        chunk_max, chunk_arg = conf.max(dim=2)
        row_maxes.append(chunk_max)
        row_args.append(chunk_arg)
        conf_col_max = torch.maximum(conf_col_max, conf.amax(dim=1))
    return torch.cat(row_maxes[::-1], dim=1), torch.cat(row_args[::-1], dim=1), conf_col_max
