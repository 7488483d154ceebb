"""What a run trains with: model, DDP wrapper, loss, optimiser, gradient scaler, LR schedule,
datasets and the training sampler, built from a :class:`~loftr_train.train_config.TrainConfig`.

The RNG order is fixed so every rank starts from the same weights: seed ``trainer.seed`` ->
build the model -> seed ``trainer.seed + rank`` -> build the data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from loftr_core.errors import ConfigError
from loftr_core.model import LoFTR
from loftr_data import SceneBalancedSampler
from loftr_train.distributed import DistContext
from loftr_train.losses import LoFTRLoss
from loftr_train.schedule import LRSchedule, scaled_lr_and_warmup
from loftr_train.train_config import TrainConfig
from loftr_train.training_data import build_datasets, make_train_sampler
from loftr_train.training_step import TrainStepModule, seed_everything

__all__ = ["TrainComponents", "TrainData", "build_components"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainData:
    """The datasets of a run.

    Attributes:
        scenes: training datasets, one per scene.
        val: the validation dataset (None = no validation).
        sampler: this rank's scene-balanced training sampler.
        batches_per_epoch: iterations per epoch (``trainer.limit_train_batches`` applied).
    """

    scenes: list[Dataset[dict[str, Any]]]
    val: Dataset[dict[str, Any]] | None
    sampler: SceneBalancedSampler
    batches_per_epoch: int


@dataclass(frozen=True)
class TrainComponents:
    """The objects one run trains with.

    Attributes:
        model: the LoFTR being trained (on ``ctx.device``).
        raw_step: :class:`~loftr_train.training_step.TrainStepModule` around ``model``.
        step_module: what training forwards through: DDP around ``raw_step`` when distributed,
            else ``raw_step`` itself.
        loss_fn: the loss.
        optimizer: AdamW or Adam.
        scaler: the gradient scaler (enabled for fp16 only).
        schedule: the LR as a function of the loop position.
        amp_dtype: autocast dtype, or None for fp32.
        data: datasets and sampler.
    """

    model: LoFTR
    raw_step: TrainStepModule
    step_module: nn.Module
    loss_fn: LoFTRLoss
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: LRSchedule
    amp_dtype: torch.dtype | None
    data: TrainData


def _build_model(cfg: TrainConfig, ctx: DistContext) -> LoFTR:
    seed_everything(cfg.trainer.seed)  # identical initial weights on every rank
    model = LoFTR(cfg.model.build(), cfg.trainer.execution_options())
    if ctx.distributed and cfg.trainer.sync_batchnorm:
        if ctx.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif ctx.is_main:
            logger.info("SyncBatchNorm needs CUDA: per-process BatchNorm statistics on CPU")
    return model.to(ctx.device)


def _build_data(cfg: TrainConfig, ctx: DistContext) -> TrainData:
    scenes, val = build_datasets(cfg.data)
    sampler = make_train_sampler(scenes, cfg.sampler, ctx.rank, ctx.world_size)
    bs = cfg.data.batch_size
    batches = sampler.num_samples // bs
    if cfg.trainer.limit_train_batches is not None:
        batches = min(batches, cfg.trainer.limit_train_batches)
    if batches < 1:
        raise ConfigError(
            f"an epoch has {sampler.num_samples} samples per rank, fewer than "
            f"data.batch_size={bs}; raise sampler.n_samples_per_subset or lower the batch size"
        )
    return TrainData(scenes=scenes, val=val, sampler=sampler, batches_per_epoch=batches)


def build_components(cfg: TrainConfig, ctx: DistContext) -> TrainComponents:
    """Build everything a run trains with (seeds the global RNGs; see the module docstring).

    Raises:
        ConfigError: an epoch has fewer samples per rank than one batch.
    """
    model = _build_model(cfg, ctx)
    seed_everything(cfg.trainer.seed + ctx.rank)
    data = _build_data(cfg, ctx)
    lr, warmup = scaled_lr_and_warmup(
        cfg.optim.canonical_lr,
        cfg.optim.canonical_bs,
        ctx.world_size * cfg.data.batch_size,
        cfg.schedule.warmup_step,
    )
    schedule = LRSchedule(
        true_lr=lr,
        warmup_steps=warmup,
        warmup_ratio=cfg.schedule.warmup_ratio,
        warmup_type=cfg.schedule.warmup_type,
        milestones=tuple(cfg.schedule.milestones),
        gamma=cfg.schedule.gamma,
    )
    if model.execution.channels_last_on(ctx.device):
        # weights in the activations' layout: their gradients then match DDP's bucket views
        # (else DDP copies every gradient and warns "Grad strides do not match bucket view")
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch#86474
    optimizer: torch.optim.Optimizer
    if cfg.optim.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.optim.adamw_decay)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.optim.adam_decay)
    precision = cfg.trainer.precision
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=precision == "fp16")
    raw_step = TrainStepModule(model)
    step_module: nn.Module = raw_step
    if ctx.distributed:
        step_module = DistributedDataParallel(
            raw_step,
            device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=cfg.trainer.find_unused_parameters,
        )
    loss_fn = LoFTRLoss(cfg.loss, match_type=model.config.match_coarse.match_type)
    if ctx.is_main:
        logger.info(
            "training on %d process(es) x batch %d: lr %.3g, warm-up %d steps, %d batches/epoch",
            ctx.world_size,
            cfg.data.batch_size,
            lr,
            warmup,
            data.batches_per_epoch,
        )
    return TrainComponents(
        model=model,
        raw_step=raw_step,
        step_module=step_module,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scaler=scaler,
        schedule=schedule,
        amp_dtype=amp_dtype,
        data=data,
    )
