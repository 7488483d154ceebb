"""One training iteration and its skip policy.

Supervision -> training forward (through DDP) -> loss -> all ranks agree the loss is finite ->
backward -> unscale + clip the global gradient norm -> optimiser step with the scheduled LR.
A non-finite loss on ANY rank skips the step on EVERY rank (a flag is all-reduced before
backward, so replicas never diverge); a non-finite gradient norm (identical on all ranks after
DDP's all-reduce) skips it too. A batch without ground truth still gives a zero loss that
touches every parameter (``LoFTRLoss``), so no rank waits forever in DDP's all-reduce.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch

from loftr_train.distributed import DistContext, all_reduce_any
from loftr_train.train_config import OptimConfig
from loftr_train.trainer.callbacks import StepInfo, TrainerCallbacks
from loftr_train.trainer.components import TrainComponents
from loftr_train.trainer.state import Progress
from loftr_train.training_step import supervised_step, to_device

__all__ = ["train_step"]

logger = logging.getLogger(__name__)


def train_step(
    parts: TrainComponents,
    ctx: DistContext,
    optim: OptimConfig,
    progress: Progress,
    batch: Mapping[str, Any],
    callbacks: TrainerCallbacks,
    info: StepInfo,
) -> dict[str, float] | None:
    """Run one iteration on ``batch`` (a collective: every rank calls it for every iteration).

    Updates ``progress.optimizer_steps`` / ``progress.skipped_steps`` (not ``step``).

    Returns:
        The step scalars (``loss``, ``loss_c``, ``loss_f``, ``lr``, ``grad_norm``, ``num_gt``),
        or None when the step was skipped for a non-finite loss.
    """
    data = callbacks.on_batch(info, to_device(batch, ctx.device))
    step = supervised_step(parts.step_module, parts.model, parts.loss_fn, data, parts.amp_dtype)
    loss = callbacks.on_loss(info, step.loss.loss)
    bad_here = not bool(torch.isfinite(loss.detach()).item())
    if bad_here:
        logger.warning(
            "rank %d: non-finite loss %s at iteration %d (pairs %s)",
            ctx.rank,
            float(loss.detach()),
            info.step,
            batch.get("pair_names"),
        )
    optimizer, scaler = parts.optimizer, parts.scaler
    if all_reduce_any(ctx, bad_here):
        if ctx.is_main:
            logger.warning("iteration %d skipped on all ranks: non-finite loss", info.step)
        optimizer.zero_grad(set_to_none=True)
        progress.skipped_steps += 1
        return None
    lr = parts.schedule.apply(optimizer, progress.step, progress.epoch)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    clip = optim.gradient_clipping
    gnorm = torch.nn.utils.clip_grad_norm_(parts.model.parameters(), clip if clip > 0 else math.inf)
    if bool(torch.isfinite(gnorm).item()) or scaler.is_enabled():
        scaler.step(optimizer)  # the scaler itself skips non-finite fp16 steps
        scaler.update()
        progress.optimizer_steps += 1
    else:  # identical on every rank: gradients were all-reduced by DDP
        if ctx.is_main:
            logger.warning("iteration %d skipped on all ranks: non-finite gradient", info.step)
        progress.skipped_steps += 1
    optimizer.zero_grad(set_to_none=True)
    scalars = step.loss.scalars()
    scalars.update(lr=lr, grad_norm=float(gnorm), num_gt=float(step.num_gt))
    return scalars
