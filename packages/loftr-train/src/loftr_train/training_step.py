"""One supervised LoFTR step: coarse ground truth -> training forward -> fine ground truth -> loss.

The order is the original's (spec section 5): the coarse ground truth must exist before the
forward pass because the training path pads the coarse predictions with ground-truth matches for
the fine level. The forward runs under autocast when a reduced precision is configured; the loss
is always computed in fp32.

Also here: the module DDP wraps (:class:`TrainStepModule`, routing ``forward`` to
``LoFTR.forward_train``), batch transfer and seeding helpers. The inference-path matches of
validation come from :func:`loftr_train.scoring.match_batch`.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from loftr_core.model import LoFTR
from loftr_train.coarse_supervision import compute_coarse_supervision
from loftr_train.fine_supervision import compute_fine_supervision
from loftr_train.losses import LoFTRLoss, LossOutput

__all__ = [
    "StepOutput",
    "TrainStepModule",
    "seed_everything",
    "supervised_step",
    "to_device",
]


def seed_everything(seed: int) -> None:
    """Seed python, numpy's global RNG and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the global RNG is what we seed)
    torch.manual_seed(seed)


class TrainStepModule(nn.Module):
    """Routes ``forward`` to ``LoFTR.forward_train`` (DDP only hooks ``forward``)."""

    def __init__(self, model: LoFTR) -> None:
        super().__init__()
        self.model = model

    def forward(self, data: Mapping[str, Any], b: Tensor, i: Tensor, j: Tensor) -> dict[str, Any]:
        """``model.forward_train(data, b, i, j)``."""
        return self.model.forward_train(data, b, i, j)


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """A new dict with every tensor of ``batch`` on ``device`` (others unchanged)."""
    non_blocking = device.type == "cuda"
    return {
        k: v.to(device, non_blocking=non_blocking) if isinstance(v, Tensor) else v
        for k, v in batch.items()
    }


@dataclass(frozen=True)
class StepOutput:
    """Result of :func:`supervised_step`.

    Attributes:
        loss: the :class:`LossOutput` (``loss`` is differentiable in training).
        outputs: the model's training-path outputs (floating tensors in fp32).
        num_gt: true number of coarse ground-truth matches in the batch (0 = none).
    """

    loss: LossOutput
    outputs: dict[str, Any]
    num_gt: int


def supervised_step(
    module: nn.Module,
    model: LoFTR,
    loss_fn: LoFTRLoss,
    data: Mapping[str, Any],
    amp_dtype: torch.dtype | None = None,
) -> StepOutput:
    """Supervision, forward (through ``module``: DDP or :class:`TrainStepModule`) and loss.

    Args:
        module: callable as ``module(data, spv_b_ids, spv_i_ids, spv_j_ids)``.
        model: the LoFTR model inside ``module`` (for its config).
        loss_fn: the loss (its ``training`` flag selects the training/eval fine-loss fallback).
        data: a collated batch on the model's device.
        amp_dtype: autocast dtype (``torch.bfloat16`` / ``torch.float16``) or None for fp32.
    """
    cfg = model.config
    with torch.no_grad():
        sup = compute_coarse_supervision(data, coarse_scale=cfg.resolution[0])
    autocast: Any = contextlib.nullcontext()
    if amp_dtype is not None:
        autocast = torch.autocast(data["image0"].device.type, dtype=amp_dtype)
    with autocast:
        out = module(data, sup.spv_b_ids, sup.spv_i_ids, sup.spv_j_ids)
    out = {
        k: v.float() if isinstance(v, Tensor) and v.is_floating_point() else v
        for k, v in out.items()
    }
    expec_f_gt = compute_fine_supervision(
        sup.spv_w_pt0_i,
        sup.spv_pt1_i,
        out["b_ids"],
        out["i_ids"],
        out["j_ids"],
        scale1=data.get("scale1"),
        fine_scale=cfg.resolution[1],
        window_size=cfg.fine_window_size,
    )
    loss = loss_fn(
        out, sup.conf_matrix_gt, expec_f_gt, mask0=data.get("mask0"), mask1=data.get("mask1")
    )
    return StepOutput(loss=loss, outputs=out, num_gt=sup.num_matches)
