"""Coarse matching: confidence from dual-softmax or optimal transport, then mutual nearest
neighbours above a threshold away from the border (spec §1.5).

The dual-softmax confidence is ``softmax_L(sim) * softmax_S(sim)`` with
``sim = f0 · f1 / C / temperature`` (:func:`dual_softmax_confidence`, the one formula for training
and inference). In inference (:func:`dual_softmax_matches`) the same formula is evaluated without
the ``(N, L, S)`` matrix where possible: with ``ExecutionOptions.coarse_one_pass`` (the default)
and a threshold of at least ``MIN_CANDIDATE_THR``, in one pass over row chunks that keeps only
the entries able to exceed the threshold
(:func:`loftr_core.execution.streaming.thresholded_dual_softmax`); otherwise densely when the
matrix fits the execution's chunk budget, else in two passes over row chunks
(:func:`loftr_core.execution.streaming.streamed_dual_softmax`). Optimal transport needs every
row and column in each Sinkhorn iteration and is always dense.

A match is a cell ``i`` of image 0 and the first column ``j`` of its row maximum with
``conf[i, j] > thr``, both cells off the border, and ``conf[i, j]`` also the maximum of column
``j``. Matches are ordered by batch, then ``i``. Arithmetic is float32 (or float64 for float64
features) whatever the feature dtype, so masks use a finite ``-1e9`` fill without overflowing
float16/bfloat16, and masked pairs get confidence exactly 0.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loftr_core.execution import Execution
from loftr_core.execution.streaming import (
    CANDIDATE_BYTES,
    MIN_CANDIDATE_BUDGET,
    MIN_CANDIDATE_THR,
    streamed_dual_softmax,
    thresholded_dual_softmax,
)
from loftr_core.model.config import MatchCoarseConfig, check_thr
from loftr_core.model.optimal_transport import log_optimal_transport

__all__ = [
    "CoarseMatches",
    "CoarseMatching",
    "border_keep",
    "dual_softmax_confidence",
    "dual_softmax_matches",
    "match_mask",
    "select_matches",
    "sinkhorn_confidence",
]

logger = logging.getLogger(__name__)

MASK_FILL = -1e9
"""Score of masked pairs (finite: the scores are float32/float64 here, see the module doc)."""


class CoarseMatches(NamedTuple):
    """Selected coarse matches (all ``(M,)``): batch index, cell in image 0 and 1, confidence."""

    b_ids: Tensor
    i_ids: Tensor
    j_ids: Tensor
    mconf: Tensor


def similarity(feat0: Tensor, feat1: Tensor, execution: Execution) -> Tensor:
    """``(f0 / sqrt(C)) @ (f1 / sqrt(C))^T`` as float32 (or float64): ``(N, l, S)``."""
    scale = feat0.shape[-1] ** 0.5
    return execution.similarity(feat0 / scale, feat1 / scale)


def _invalid(mask0: Tensor | None, mask1: Tensor | None) -> Tensor | None:
    """``(N, L, S)`` (broadcastable) True where a pair involves a padded cell."""
    if mask0 is None and mask1 is None:
        return None
    if mask0 is None:
        assert mask1 is not None
        return ~mask1[:, None, :]
    if mask1 is None:
        return ~mask0[:, :, None]
    return ~(mask0[:, :, None] & mask1[:, None, :])


def border_keep(
    n: int, height: int, width: int, border: int, mask: Tensor | None, device: torch.device
) -> Tensor:
    """Cells that border removal keeps, ``(N, height*width)`` bool.

    Without a mask the first and last ``border`` rows/columns go; with a ``(N, h, w)`` mask the
    far borders are measured from the valid extent (the max number of valid rows over columns and
    of valid columns over rows, i.e. bottom/right padding), as the original.
    """
    rows = torch.arange(height, device=device)[None, :, None]
    cols = torch.arange(width, device=device)[None, None, :]
    if border <= 0:
        return torch.ones(n, height * width, dtype=torch.bool, device=device)
    if mask is None:
        h_end = torch.full((n, 1, 1), height, device=device)
        w_end = torch.full((n, 1, 1), width, device=device)
    else:
        h_end = mask.sum(1).amax(-1).view(n, 1, 1)
        w_end = mask.sum(2).amax(-1).view(n, 1, 1)
    keep = (rows >= border) & (cols >= border) & (rows < h_end - border) & (cols < w_end - border)
    return keep.reshape(n, height * width)


def match_mask(
    row_max: Tensor, row_arg: Tensor, col_max: Tensor, thr: float, keep0: Tensor, keep1: Tensor
) -> Tensor:
    """The match test per image-0 cell, ``(N, L)`` bool: its row maximum is above ``thr``, is
    also its column's maximum (mutual), and both cells survive border removal.

    Args:
        row_max, row_arg: ``(N, L)`` each row's maximum confidence and its column.
        col_max: ``(N, S)`` each column's maximum.
        keep0, keep1: ``(N, L)`` / ``(N, S)`` border keep masks.
    """
    mutual = torch.gather(col_max, 1, row_arg) == row_max
    return (row_max > thr) & mutual & keep0 & torch.gather(keep1, 1, row_arg)


def _finish(
    row_max: Tensor, row_arg: Tensor, col_max: Tensor, thr: float, keep0: Tensor, keep1: Tensor
) -> CoarseMatches:
    valid = match_mask(row_max, row_arg, col_max, thr, keep0, keep1)
    b_ids, i_ids = torch.nonzero(valid, as_tuple=True)
    return CoarseMatches(b_ids, i_ids, row_arg[b_ids, i_ids], row_max[b_ids, i_ids])


@torch.no_grad()
def select_matches(conf: Tensor, thr: float, keep0: Tensor, keep1: Tensor) -> CoarseMatches:
    """Mutual nearest neighbours above ``thr`` in a dense ``(N, L, S)`` confidence matrix.

    Args:
        conf: ``(N, L, S)`` confidences (masked pairs 0).
        thr: strict threshold.
        keep0, keep1: ``(N, L)`` / ``(N, S)`` bool, cells kept by border removal.
    """
    row_max, row_arg = conf.max(dim=2)
    return _finish(row_max, row_arg, conf.amax(dim=1), thr, keep0, keep1)


def dual_softmax_confidence(
    feat0: Tensor,
    feat1: Tensor,
    temperature: float,
    mask0: Tensor | None = None,
    mask1: Tensor | None = None,
    execution: Execution | None = None,
) -> Tensor:
    """Dense dual-softmax confidence ``softmax_L(sim) * softmax_S(sim)`` (differentiable).

    Args:
        feat0: ``(N, L, C)``; feat1: ``(N, S, C)`` transformer outputs.
        temperature: ``sim = f0·f1 / C / temperature``.
        mask0, mask1: optional ``(N, L)`` / ``(N, S)`` bool (True = valid).
        execution: how the products and softmaxes run (default options if None).

    Returns:
        ``(N, L, S)`` float32 (float64 for float64 features), 0 at masked pairs.
    """
    ex = Execution() if execution is None else execution
    # in place on the fresh product (autograd keeps the product's inputs and the softmaxes'
    # outputs, never these): one (N, L, S) buffer less at the peak
    sim = similarity(feat0, feat1, ex).div_(temperature)
    invalid = _invalid(mask0, mask1)
    if invalid is not None:
        sim.masked_fill_(invalid, MASK_FILL)
    if torch.is_grad_enabled() and sim.requires_grad:
        conf = ex.softmax(sim, dim=1) * F.softmax(sim, dim=2)
    else:  # the same product in place (a * b == b * a bitwise): one (N, L, S) buffer less
        conf = F.softmax(sim, dim=2).mul_(ex.softmax(sim, dim=1))
    del sim
    return conf if invalid is None else conf.masked_fill_(invalid, 0.0)


def sinkhorn_confidence(
    feat0: Tensor,
    feat1: Tensor,
    bin_score: Tensor,
    iters: int,
    mask0: Tensor | None = None,
    mask1: Tensor | None = None,
    prefilter: bool = False,
    execution: Execution | None = None,
) -> tuple[Tensor, Tensor]:
    """Dense optimal-transport confidence.

    Returns:
        ``(conf (N, L, S), conf_with_bin (N, L+1, S+1))``; ``conf`` is 0 at masked pairs and, with
        ``prefilter``, on rows/columns whose best entry is the dustbin.
    """
    sim = similarity(feat0, feat1, Execution() if execution is None else execution)
    invalid = _invalid(mask0, mask1)
    if invalid is not None:
        sim = sim.masked_fill(invalid, MASK_FILL)
    assign = log_optimal_transport(sim, bin_score, iters).exp()
    length, s = sim.shape[1:]
    conf = assign[:, :length, :s]
    if prefilter:
        drop0 = assign.argmax(dim=2)[:, :length] == s  # (N, L)
        drop1 = assign.argmax(dim=1)[:, :s] == length  # (N, S)
        conf = conf.masked_fill(drop0[:, :, None] | drop1[:, None, :], 0.0)
    if invalid is not None:
        conf = conf.masked_fill(invalid, 0.0)
    return conf, assign


@torch.no_grad()
def dual_softmax_matches(
    feat0: Tensor,
    feat1: Tensor,
    temperature: float,
    thr: float,
    keep0: Tensor,
    keep1: Tensor,
    mask0: Tensor | None = None,
    mask1: Tensor | None = None,
    execution: Execution | None = None,
) -> CoarseMatches:
    """Dual-softmax inference matches within the execution's memory budget.

    The one-pass thresholded evaluation when the options allow it and ``thr`` is at least
    ``MIN_CANDIDATE_THR``, as long as the candidates it finds fit the chunk budget's bytes (at
    least ``MIN_CANDIDATE_BUDGET``, ``CANDIDATE_BYTES`` each); else the dense formula when the
    ``(N, L, S)`` matrix fits the budget, else the two-pass stream. All equal
    :func:`select_matches` on :func:`dual_softmax_confidence` (up to float rounding of the
    confidences outside the dense formula).

    Args:
        feat0: ``(N, L, C)``; feat1: ``(N, S, C)``.
        temperature, thr: see :class:`~loftr_core.model.config.MatchCoarseConfig`.
        keep0, keep1: ``(N, L)`` / ``(N, S)`` bool from :func:`border_keep`.
        mask0, mask1: optional ``(N, L)`` / ``(N, S)`` bool (True = valid).
        execution: products, softmaxes and the chunk budget (default options if None).
    """
    ex = Execution() if execution is None else execution
    n, length, _ = feat0.shape
    s = feat1.shape[1]
    budget = ex.coarse_chunk_elements(feat0.device)
    dtype = torch.promote_types(feat0.dtype, torch.float32)
    if ex.options.coarse_one_pass and thr >= MIN_CANDIDATE_THR:
        most = max(budget * dtype.itemsize, MIN_CANDIDATE_BUDGET) // CANDIDATE_BYTES
        one_pass = _thresholded_matches(
            feat0, feat1, temperature, thr, keep0, keep1, mask0, mask1, ex, most
        )
        if one_pass is not None:
            return one_pass
        logger.debug("coarse matching: more than %d candidates at thr=%g, two passes", most, thr)
    if n * length * s <= budget:
        conf = dual_softmax_confidence(feat0, feat1, temperature, mask0, mask1, ex)
        return select_matches(conf, thr, keep0, keep1)

    def chunk_scores(start: int, stop: int) -> tuple[Tensor, Tensor | None]:
        sim = similarity(feat0[:, start:stop], feat1, ex).div_(temperature)
        invalid = _invalid(None if mask0 is None else mask0[:, start:stop], mask1)
        if invalid is not None:
            sim.masked_fill_(invalid, MASK_FILL)
        return sim, invalid

    rows = max(1, min(length, budget // max(1, n * s)))
    row_max, row_arg, col_max = streamed_dual_softmax(
        chunk_scores, n, length, s, rows, dtype, feat0.device
    )
    return _finish(row_max, row_arg, col_max, thr, keep0, keep1)


def _thresholded_matches(
    feat0: Tensor,
    feat1: Tensor,
    temperature: float,
    thr: float,
    keep0: Tensor,
    keep1: Tensor,
    mask0: Tensor | None,
    mask1: Tensor | None,
    ex: Execution,
    max_candidates: int,
) -> CoarseMatches | None:
    """:func:`dual_softmax_matches` in one pass over transposed row chunks
    (:func:`~loftr_core.execution.streaming.thresholded_dual_softmax`); None when more than
    ``max_candidates`` entries can exceed ``thr``."""
    n, length, channels = feat0.shape
    s = feat1.shape[1]
    scale = channels**0.5
    f0, f1 = feat0 / scale, feat1 / scale  # once, not per chunk

    def chunk_scores_t(start: int, stop: int) -> tuple[Tensor, Tensor | None]:
        sim_t = ex.similarity(f1, f0[:, start:stop]).div_(temperature)  # (N, S, r)
        # image 1 is the row side of the transposed chunk
        invalid = _invalid(mask1, None if mask0 is None else mask0[:, start:stop])
        if invalid is not None:
            sim_t.masked_fill_(invalid, MASK_FILL)
        return sim_t, invalid

    dtype = torch.promote_types(feat0.dtype, torch.float32)
    rows = ex.coarse_candidate_rows(feat0.device, n, s)
    stats = thresholded_dual_softmax(
        chunk_scores_t, n, length, s, min(rows, length), thr, dtype, feat0.device, max_candidates
    )
    if stats is None:
        return None
    return _finish(*stats, thr, keep0, keep1)


class CoarseMatching(nn.Module):
    """Coarse matching with the configured method; holds ``bin_score`` for optimal transport.

    Args:
        config: the ``match_coarse`` section.
        execution: how the products run and the inference memory budget.
    """

    def __init__(self, config: MatchCoarseConfig, execution: Execution | None = None) -> None:
        super().__init__()
        self.config = config
        self.execution = Execution() if execution is None else execution
        if config.match_type == "sinkhorn":
            self.bin_score = nn.Parameter(torch.tensor(config.skh_init_bin_score))

    def keep_masks(
        self,
        n: int,
        hw0: tuple[int, int],
        hw1: tuple[int, int],
        mask0: Tensor | None,
        mask1: Tensor | None,
        device: torch.device,
    ) -> tuple[Tensor, Tensor]:
        """Border-removal keep masks ``(N, L)``, ``(N, S)`` from ``(N, Hc, Wc)`` masks (or None).

        As the original, the valid extent is read from the masks only when ``mask0`` is given.
        """
        b = self.config.border_rm
        pad0, pad1 = (mask0, mask1) if mask0 is not None else (None, None)
        keep0 = border_keep(n, hw0[0], hw0[1], b, pad0, device)
        keep1 = border_keep(n, hw1[0], hw1[1], b, pad1, device)
        return keep0, keep1

    def confidence(
        self, feat0: Tensor, feat1: Tensor, mask0: Tensor | None, mask1: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Dense differentiable confidence (training path): ``(conf, conf_with_bin or None)``."""
        cfg = self.config
        ex = self.execution
        if cfg.match_type == "dual_softmax":
            conf = dual_softmax_confidence(feat0, feat1, cfg.dsmax_temperature, mask0, mask1, ex)
            return conf, None
        conf, with_bin = sinkhorn_confidence(
            feat0, feat1, self.bin_score, cfg.skh_iters, mask0, mask1, execution=ex
        )
        return conf, with_bin

    @torch.no_grad()
    def forward(
        self,
        feat0: Tensor,
        feat1: Tensor,
        keep0: Tensor,
        keep1: Tensor,
        mask0: Tensor | None = None,
        mask1: Tensor | None = None,
        thr: float | None = None,
    ) -> CoarseMatches:
        """Inference matches (no gradient): dual-softmax within the memory budget, optimal
        transport dense.

        Args:
            feat0: ``(N, L, C)``; feat1: ``(N, S, C)`` coarse transformer outputs.
            keep0, keep1: border keep masks from :meth:`keep_masks`.
            mask0, mask1: optional ``(N, L)`` / ``(N, S)`` bool (True = valid).
            thr: threshold for this call (default ``config.thr``), validated by
                :func:`~loftr_core.model.config.check_thr`.
        """
        cfg = self.config
        thr = cfg.thr if thr is None else check_thr(thr)
        if cfg.match_type == "dual_softmax":
            return dual_softmax_matches(
                feat0,
                feat1,
                cfg.dsmax_temperature,
                thr,
                keep0,
                keep1,
                mask0,
                mask1,
                self.execution,
            )
        conf, _ = sinkhorn_confidence(
            feat0,
            feat1,
            self.bin_score,
            cfg.skh_iters,
            mask0,
            mask1,
            cfg.skh_prefilter,
            self.execution,
        )
        return select_matches(conf, thr, keep0, keep1)
