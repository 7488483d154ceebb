"""Learning-rate scaling, warm-up and multi-step decay of the original recipe (spec section 7).

* ``true_lr = canonical_lr * true_batch_size / canonical_bs`` and the warm-up length is divided by
  the same factor (floored), where ``true_batch_size = world_size * batch_size``.
* Linear warm-up per optimiser step: while ``step < warmup_steps`` the LR is
  ``base + step / warmup_steps * (true_lr - base)`` with ``base = warmup_ratio * true_lr``
  (``"constant"`` warm-up keeps ``base``). After the warm-up the LR stays at its last warm-up value
  (as in the original, slightly below ``true_lr``) and is multiplied by ``gamma`` at every epoch
  milestone (MultiStepLR stepped per epoch).

The LR is a pure function of ``(step, epoch)``, so resuming from a checkpoint restores it exactly
(the original's scheduler did not resume properly, spec section 7). One deliberate difference: a
milestone that falls inside the warm-up counts once the warm-up ends (the original's warm-up
overwrote the decay, losing it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from loftr_core.errors import ConfigError

__all__ = ["LRSchedule", "scaled_lr_and_warmup"]


def scaled_lr_and_warmup(
    canonical_lr: float, canonical_bs: int, true_batch_size: int, warmup_step: int
) -> tuple[float, int]:
    """The original LR scaling.

    Args:
        canonical_lr: LR at the canonical batch size (outdoor 8e-3).
        canonical_bs: canonical true batch size (64).
        true_batch_size: ``world_size * batch_size_per_process``.
        warmup_step: warm-up length at the canonical batch size.

    Returns:
        ``(true_lr, warmup_steps)`` with ``warmup_steps = floor(warmup_step / scaling)``.
    """
    if true_batch_size < 1 or canonical_bs < 1:
        raise ConfigError(
            f"batch sizes must be >= 1, got true_batch_size={true_batch_size}, "
            f"canonical_bs={canonical_bs}"
        )
    scaling = true_batch_size / canonical_bs
    return canonical_lr * scaling, math.floor(warmup_step / scaling)


@dataclass(frozen=True)
class LRSchedule:
    """Warm-up + multi-step decay as a pure function of ``(step, epoch)``.

    Attributes:
        true_lr: the peak (scaled) LR.
        warmup_steps: optimiser steps of warm-up (already scaled).
        warmup_ratio: the warm-up starts at ``warmup_ratio * true_lr``.
        warmup_type: ``"linear"`` or ``"constant"``.
        milestones: epochs (0-based epoch counter reaching the value) at which to decay.
        gamma: decay factor per milestone.
    """

    true_lr: float
    warmup_steps: int
    warmup_ratio: float = 0.1
    warmup_type: str = "linear"
    milestones: Sequence[int] = ()
    gamma: float = 0.5

    def lr_at(self, step: int, epoch: int) -> float:
        """LR for optimiser step ``step`` (0-based) taken during epoch ``epoch`` (0-based).

        The decay counts milestones ``m <= epoch`` (MultiStepLR semantics: after ``m`` epochs
        have ended, the LR is multiplied by ``gamma``).
        """
        base = self.warmup_ratio * self.true_lr
        w = self.warmup_steps
        if step < w:
            if self.warmup_type == "constant":
                return base
            return base + (step / w) * abs(self.true_lr - base)
        if w == 0 or self.warmup_type == "constant":
            peak = self.true_lr
        else:  # the original keeps the last warm-up value (step w - 1)
            peak = base + ((w - 1) / w) * abs(self.true_lr - base)
        decays = sum(1 for m in self.milestones if m <= epoch)
        return peak * (self.gamma**decays)

    def apply(self, optimizer: torch.optim.Optimizer, step: int, epoch: int) -> float:
        """Set every param group's LR for this step; returns it."""
        lr = self.lr_at(step, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr
