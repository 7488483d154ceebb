"""Training-only sampling of coarse matches for the fine level (spec §5.3).

In training, the fine level gets a fixed budget of ``n_train`` coarse pairs: the predictions (all
of them when they leave room for at least ``train_pad_num_gt_min`` ground-truth pairs, otherwise a
random subset with replacement) followed by ground-truth pairs sampled with replacement, whose
confidence is set to 0 (``gt_mask``). Unlike the original this never crashes: when
``train_pad_num_gt_min >= n_train`` (tiny images) the whole budget goes to ground truth, and with no
ground truth at all only predictions are used (both cases are logged).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from loftr_core.model.coarse_matching import CoarseMatches

__all__ = ["max_candidates", "pad_with_ground_truth"]

logger = logging.getLogger(__name__)


def max_candidates(n: int, length: int, s: int, mask0: Tensor | None, mask1: Tensor | None) -> int:
    """Upper bound on the number of coarse matches in the batch.

    ``sum_b min(valid_area0, valid_area1)`` from ``(N, Hc, Wc)`` masks (valid extent as in border
    removal), else ``N * max(L, S)``.
    """
    if mask0 is None or mask1 is None:
        return n * max(length, s)
    h0, w0 = mask0.sum(1).amax(-1), mask0.sum(2).amax(-1)
    h1, w1 = mask1.sum(1).amax(-1), mask1.sum(2).amax(-1)
    return int(torch.minimum(h0 * w0, h1 * w1).sum().item())


def pad_with_ground_truth(
    pred: CoarseMatches,
    spv_b_ids: Tensor,
    spv_i_ids: Tensor,
    spv_j_ids: Tensor,
    n_max: int,
    train_coarse_percent: float,
    train_pad_num_gt_min: int,
    generator: torch.Generator | None = None,
) -> tuple[CoarseMatches, Tensor]:
    """Fill the fine-level budget with predictions then ground-truth pads.

    Args:
        pred: predicted coarse matches (``M`` of them).
        spv_b_ids, spv_i_ids, spv_j_ids: ``(G,)`` int64 ground-truth coarse matches.
        n_max: :func:`max_candidates`.
        train_coarse_percent: budget share; ``n_train = int(n_max * train_coarse_percent)``.
        train_pad_num_gt_min: minimum number of ground-truth pads.
        generator: optional RNG for the (with-replacement) sampling.

    Returns:
        ``(matches, gt_mask)``: predictions first (in their order, or sampled), then pads with
        ``mconf = 0``; ``gt_mask`` ``(M',)`` bool marks the pads.
    """
    device = pred.b_ids.device
    n_train = int(n_max * train_coarse_percent)
    n_pred = pred.b_ids.shape[0]
    n_gt_avail = spv_b_ids.shape[0]
    pad_min = train_pad_num_gt_min if n_gt_avail > 0 else 0
    if pad_min >= n_train and n_gt_avail > 0:
        logger.warning(
            "train_pad_num_gt_min=%d >= fine budget %d (image too small?): using ground truth only",
            train_pad_num_gt_min,
            n_train,
        )
        pad_min = n_train
    if n_gt_avail == 0:
        logger.warning("no ground-truth coarse match in the batch: padding with predictions only")
    room = n_train - pad_min
    if n_pred <= room:
        pred_idx = torch.arange(n_pred, device=device)
    else:
        pred_idx = torch.randint(n_pred, (room,), device=device, generator=generator)
    n_pad = max(n_train - n_pred, pad_min) if n_gt_avail > 0 else 0
    gt_idx = torch.randint(max(n_gt_avail, 1), (n_pad,), device=device, generator=generator)
    zeros = pred.mconf.new_zeros(n_pad)
    matches = CoarseMatches(
        torch.cat([pred.b_ids[pred_idx], spv_b_ids[gt_idx]]),
        torch.cat([pred.i_ids[pred_idx], spv_i_ids[gt_idx]]),
        torch.cat([pred.j_ids[pred_idx], spv_j_ids[gt_idx]]),
        torch.cat([pred.mconf[pred_idx], zeros]),
    )
    gt_mask = torch.cat(
        [
            torch.zeros(pred_idx.shape[0], dtype=torch.bool, device=device),
            torch.ones(n_pad, dtype=torch.bool, device=device),
        ]
    )
    return matches, gt_mask
