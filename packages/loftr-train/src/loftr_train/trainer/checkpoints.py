"""The checkpoint manager of a run: what a training checkpoint holds and how it is restored.

A checkpoint holds the model, its ``LoFTRConfig``, the resolved ``TrainConfig``, the optimiser,
the gradient scaler, EVERY rank's sampler position and RNG states (gathered to rank 0), the loop
position and the best monitored value (layout: :mod:`loftr_train.checkpointing`). Rank 0 writes
``<run_dir>/checkpoints/last.ckpt`` (and ``best.ckpt``) atomically with
:func:`~loftr_train.checkpointing.atomic_save`, so a killed run leaves a complete file.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loftr_core.errors import CheckpointError
from loftr_data.errors import LoftrDataError
from loftr_train.checkpointing import (
    CHECKPOINT_FORMAT,
    atomic_save,
    capture_rng_state,
    find_resume_checkpoint,
    load_checkpoint,
    restore_rng_state,
)
from loftr_train.distributed import DistContext, all_gather_objects
from loftr_train.train_config import TrainConfig
from loftr_train.trainer.components import TrainComponents
from loftr_train.trainer.state import BestMetric, Progress

__all__ = ["CheckpointManager"]

logger = logging.getLogger(__name__)


class CheckpointManager:
    """Save and restore the complete training state of one run.

    Args:
        config: the run's configuration (stored in every checkpoint).
        ctx: this process's distributed context.
        parts: the model, optimiser, scaler and sampler whose state is saved/restored.
        folder: where ``last.ckpt`` and ``best.ckpt`` go (``<run_dir>/checkpoints``).
    """

    def __init__(
        self, config: TrainConfig, ctx: DistContext, parts: TrainComponents, folder: Path
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.parts = parts
        self.folder = folder
        #: loop position of the last ``last.ckpt`` written (None = none this run)
        self.last_saved: tuple[int, int, int] | None = None

    def resume_path(self, explicit: Path | None) -> Path | None:
        """``explicit``, else the run folder's ``last.ckpt`` when ``checkpoint.auto_resume``."""
        if explicit is not None:
            return explicit
        if self.config.checkpoint.auto_resume:
            return find_resume_checkpoint(self.folder.parent)
        return None

    def is_current(self, progress: Progress) -> bool:
        """Whether ``last.ckpt`` already holds this loop position."""
        return self.last_saved == progress.position()

    def save(
        self, progress: Progress, best_metric: BestMetric, *, best: bool, write_last: bool = True
    ) -> tuple[Path, ...]:
        """Gather every rank's RNG and sampler state; rank 0 writes ``last`` (and ``best``).

        A collective: every rank calls it at the same point.

        Returns:
            The files written (empty on ranks other than 0).
        """
        ctx, cfg, parts = self.ctx, self.config, self.parts
        sampler = parts.data.sampler
        # the sampler's identity fields, with OUR exact position (workers may prefetch ahead)
        sampler_state = sampler.state_dict()
        sampler_state["epoch"] = progress.epoch
        sampler_state["consumed"] = min(
            progress.batch_in_epoch * cfg.data.batch_size, sampler.num_samples
        )
        local = {"rng": capture_rng_state(), "sampler": sampler_state}
        gathered = all_gather_objects(ctx, local)
        if write_last:
            self.last_saved = progress.position()
        if not ctx.is_main:
            return ()
        state = {
            "format": CHECKPOINT_FORMAT,
            "model": {k: v.detach().cpu() for k, v in parts.model.state_dict().items()},
            "model_config": parts.model.config.to_dict(),
            "train_config": cfg.to_dict(),
            "optimizer": parts.optimizer.state_dict(),
            "scaler": parts.scaler.state_dict() if parts.scaler.is_enabled() else {},
            "sampler": [g["sampler"] for g in gathered],
            "rng": [g["rng"] for g in gathered],
            "world_size": ctx.world_size,
            "progress": dataclasses.asdict(progress),
            "best": {
                "monitor": best_metric.monitor,
                "value": best_metric.value,
                "epoch": best_metric.epoch,
            },
        }
        written: list[Path] = []
        if write_last:
            written.append(atomic_save(state, self.folder / "last.ckpt"))
        if best:
            written.append(atomic_save(state, self.folder / "best.ckpt"))
        logger.debug("checkpoint at iteration %d (best=%s)", progress.step, best)
        return tuple(written)

    def restore(self, path: Path) -> tuple[Progress, BestMetric]:
        """Load ``path`` into the model, optimiser, scaler, this rank's RNGs and sampler.

        Returns:
            The loop position and the best monitored value stored in the checkpoint.

        Raises:
            CheckpointError: unreadable file, another model config, another sampler, or a
                mid-epoch checkpoint of another world size.
        """
        ctx, parts = self.ctx, self.parts
        state = load_checkpoint(path, map_location="cpu")
        try:
            parts.model.load_state_dict(state["model"])
            parts.optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler") and parts.scaler.is_enabled():
                parts.scaler.load_state_dict(state["scaler"])
            progress = Progress(**state["progress"])
            stored: Mapping[str, Any] = state.get("best") or {}
            best = BestMetric(
                self.config.checkpoint.monitor, stored.get("value"), stored.get("epoch")
            )
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"cannot resume from {path}: {exc}; was it written by another model config? "
                "Start a fresh run folder or fix the config to match the checkpoint"
            ) from exc
        saved_world = int(state.get("world_size", 1))
        if saved_world != ctx.world_size:
            batches = parts.data.batches_per_epoch
            if progress.batch_in_epoch not in (0, batches) and not progress.epoch_done:
                raise CheckpointError(
                    f"{path} was saved mid-epoch by {saved_world} process(es) but this run has "
                    f"{ctx.world_size}; resume with the same world size, or from an epoch-end "
                    "checkpoint"
                )
            logger.warning(
                "resuming with world size %d (checkpoint: %d): RNG streams restart",
                ctx.world_size,
                saved_world,
            )
        else:
            restore_rng_state(state["rng"][ctx.rank])
            try:  # checks that seed, scenes and samples per scene did not change
                parts.data.sampler.load_state_dict(state["sampler"][ctx.rank])
            except (LoftrDataError, KeyError, IndexError) as exc:
                raise CheckpointError(
                    f"cannot resume from {path}: the training sampler differs from the "
                    f"checkpoint's ({exc}); keep data and sampler settings when resuming"
                ) from exc
        if ctx.is_main:
            logger.info(
                "resumed from %s at epoch %d, iteration %d (%d optimiser steps)",
                path,
                progress.epoch,
                progress.step,
                progress.optimizer_steps,
            )
        return progress, best
