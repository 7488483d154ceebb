"""Dual-softmax statistics without the ``(N, L, S)`` matrix: the memory-bounded evaluation.

The model's confidence is ``softmax_L(sim) * softmax_S(sim)`` (:mod:`loftr_core.model.coarse_matching`).
When the score matrix does not fit ``coarse_chunk_elements``, this evaluates the same formula
over row chunks of image 0 and keeps only what match selection needs: per row the max and argmax
of the confidence, per column its max. Two passes: (1) per column the max score and the sum of
``exp(score - max)`` (rescaled online when the max grows); (2) per chunk the row-wise confidence
``softmax_S(sim) * exp(sim - col_max) / col_sum``. The last chunk of pass 1 is reused by pass 2.
Results equal the dense formula up to float rounding of the column sums.

With a threshold ``thr`` above :data:`MIN_CANDIDATE_THR`, :func:`thresholded_dual_softmax`
needs one pass only (one score product instead of two). A confidence above ``thr`` needs both
softmaxes above ``thr`` (each factor is at most 1), and at most ``1 / thr`` entries of a row can
have ``softmax_S > thr`` (a row sums to 1). Rows are complete within a chunk, so that pass finds
each row's candidates (``softmax_S`` above ``thr``, less a rounding margin) while it accumulates
the column statistics; the confidence is then evaluated on the candidates alone. Every entry
above ``thr``, hence every row maximum and every column maximum that selection can accept, is a
candidate, so the selected matches are those of the dense formula.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CANDIDATE_BYTES",
    "MIN_CANDIDATE_BUDGET",
    "MIN_CANDIDATE_THR",
    "ChunkScores",
    "streamed_dual_softmax",
    "thresholded_dual_softmax",
]

MIN_CANDIDATE_THR = 1.0 / 4096
"""Below this threshold :func:`thresholded_dual_softmax` is not used (too many candidates)."""
MIN_CANDIDATE_BUDGET = 64 << 20
"""Bytes the candidates may always take, whatever the chunk budget (real pairs keep a few per
row: 7.7 at 1600x1200 in the benchmark)."""
CANDIDATE_MARGIN = 1e-3
"""Candidates have ``log softmax_S > log(thr) - margin``: far wider than float rounding."""
CANDIDATE_BYTES = 128
"""Peak bytes per candidate (two int64 flat indices and the score per chunk, their concatenation,
then the gathered statistics, the confidence and the argmax filter; float64 scores included)."""

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


def _nonzero_sparse(mask: Tensor) -> tuple[Tensor, ...]:
    """``torch.nonzero(mask, as_tuple=True)`` of a mostly-False contiguous 3-d bool tensor.

    Where the last dimension is a multiple of 8 the search runs over 8-byte words first (8x
    fewer elements), then within the words that hold a True; same indices, same order.
    """
    last = mask.shape[-1]
    if last % 8 or not mask.is_contiguous():
        return torch.nonzero(mask, as_tuple=True)
    words = mask.view(torch.int64)
    b, j, w = torch.nonzero(words, as_tuple=True)
    k, byte = torch.nonzero(mask.view(*words.shape, 8)[b, j, w], as_tuple=True)
    return b[k], j[k], w[k] * 8 + byte


@torch.no_grad()
def thresholded_dual_softmax(
    chunk_scores_t: ChunkScores,
    n: int,
    length: int,
    s: int,
    rows: int,
    thr: float,
    dtype: torch.dtype,
    device: torch.device,
    max_candidates: int | None = None,
) -> tuple[Tensor, Tensor, Tensor] | None:
    """Row max, row argmax ``(N, L)`` and column max ``(N, S)`` of the dual-softmax confidence,
    exact wherever the value exceeds ``thr`` (elsewhere at most ``thr``), in one pass; None as
    soon as more than ``max_candidates`` candidates are found (the caller then evaluates the
    scores another way; a row has fewer than ``1 / thr`` candidates, real pairs a few).

    Args:
        chunk_scores_t: the masked scores of a chunk of rows, TRANSPOSED:
            ``(start, stop) -> (sim_t (N, S, stop-start), invalid_t or None)``.
        n, length, s: batch, rows (image-0 cells) and columns (image-1 cells).
        rows: rows per chunk.
        thr: the match threshold, at least :data:`MIN_CANDIDATE_THR`.
        dtype, device: of the scores.
        max_candidates: the most candidates to hold (about :data:`CANDIDATE_BYTES` each at the
            peak); None: no limit.
    """
    if not thr >= MIN_CANDIDATE_THR:
        raise ValueError(f"thr={thr} is below MIN_CANDIDATE_THR={MIN_CANDIDATE_THR}")
    log_thr = math.log(thr) - CANDIDATE_MARGIN
    col_max = torch.full((n, s, 1), float("-inf"), device=device, dtype=dtype)
    col_sum = torch.zeros((n, s, 1), device=device, dtype=dtype)
    row_max = torch.empty((n, 1, length), device=device, dtype=dtype)
    row_sum = torch.empty((n, 1, length), device=device, dtype=dtype)
    found: list[tuple[Tensor, Tensor, Tensor]] = []  # flat row, flat column, score
    count = 0
    buf: Tensor | None = None
    for start in range(0, length, rows):
        stop = min(start + rows, length)
        sim, invalid = chunk_scores_t(start, stop)  # (N, S, r)
        if buf is None or buf.shape != sim.shape:
            buf = torch.empty_like(sim)
        # columns: max and sum of exp(score - max), rescaled online as the max grows
        new_max = torch.maximum(col_max, sim.amax(dim=2, keepdim=True))
        torch.sub(sim, new_max, out=buf)
        col_sum = col_sum * torch.exp(col_max - new_max) + buf.exp_().sum(2, keepdim=True)
        col_max = new_max
        # rows: complete in this chunk
        r_max = sim.amax(dim=1, keepdim=True)
        torch.sub(sim, r_max, out=buf)
        r_sum = buf.exp_().sum(dim=1, keepdim=True)
        row_max[:, :, start:stop] = r_max
        row_sum[:, :, start:stop] = r_sum
        # candidates: log softmax_S = score - max - log(sum) above log(thr) - margin
        mask = torch.gt(sim, r_max + r_sum.log() + log_thr)
        if invalid is not None:
            mask &= ~invalid
        b, j, i = _nonzero_sparse(mask)
        count += int(b.numel())
        if max_candidates is not None and count > max_candidates:
            return None
        found.append((b * length + (i + start), b * s + j, sim[b, j, i]))
        del sim, invalid, mask, b, j, i
    rows_parts, cols_parts, score_parts = zip(*found, strict=True)
    del found
    flat_rows, flat_cols, score = (
        torch.cat(rows_parts),
        torch.cat(cols_parts),
        torch.cat(score_parts),
    )
    del rows_parts, cols_parts, score_parts
    j = flat_cols % s
    # the dense formula on the candidates: softmax_S(sim) * softmax_L(sim)
    conf = (score - row_max.view(-1)[flat_rows]).exp_().div_(row_sum.view(-1)[flat_rows])
    conf.mul_((score - col_max.view(-1)[flat_cols]).exp_().div_(col_sum.view(-1)[flat_cols]))
    best = torch.zeros(n * length, device=device, dtype=dtype)
    best.scatter_reduce_(0, flat_rows, conf, "amax")
    first = conf == best[flat_rows]  # the first column of each row's maximum, as argmax
    arg = torch.full((n * length,), s, device=device, dtype=torch.long)
    arg.scatter_reduce_(0, flat_rows[first], j[first], "amin")
    conf_col_max = torch.zeros(n * s, device=device, dtype=dtype)
    conf_col_max.scatter_reduce_(0, flat_cols, conf, "amax")
    return best.view(n, length), arg.clamp_(max=s - 1).view(n, length), conf_col_max.view(n, s)
