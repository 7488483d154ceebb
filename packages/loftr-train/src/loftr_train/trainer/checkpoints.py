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
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loftr_core.api.checkpoint import check_finite
from loftr_core.errors import CheckpointError
from loftr_data.errors import LoftrDataError
from loftr_train.checkpointing import (
    CHECKPOINT_FORMAT,
    atomic_save,
    capture_rng_state,
    checkpoint_chain,
    describe_write_error,
    find_resume_checkpoint,
    load_checkpoint,
    remove_stale_temporaries,
    restore_rng_state,
    rotate_checkpoints,
    verify_checkpoint,
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
        if ctx.is_main:  # no write is in progress at the start of a run
            for stale in remove_stale_temporaries(folder):
                logger.info("removed %s, left by a write that was killed", stale)

    def resume_path(self, explicit: Path | None) -> Path | None:
        """The checkpoint every rank resumes from, decided by rank 0 (a collective).

        ``explicit``, else with ``checkpoint.auto_resume`` the newest readable of ``last.ckpt``,
        ``last-1.ckpt``... (an unreadable newer one is skipped with a warning naming both).

        Raises:
            CheckpointError: on every rank, when no kept checkpoint is readable or when a rank
                cannot see the file rank 0 chose (the run folder is not on shared storage).
        """
        ctx = self.ctx
        decision: tuple[str | None, int, str | None] = (None, -1, None)
        if ctx.is_main:
            try:
                path = explicit
                if path is None and self.config.checkpoint.auto_resume:
                    path = find_resume_checkpoint(
                        self.folder.parent, self.config.checkpoint.keep_last
                    )
                    if path is not None:
                        self._set_aside_newer_than(path)
                size = path.stat().st_size if path is not None and path.is_file() else -1
                decision = (None if path is None else str(path), size, None)
            except (CheckpointError, OSError) as exc:
                decision = (None, -1, str(exc))
        chosen, size, error = all_gather_objects(ctx, decision)[0]
        if error is not None:
            raise CheckpointError(error)
        if chosen is None:
            return None
        path = Path(chosen)
        sees = path.is_file() and path.stat().st_size == size
        blind = [r for r, ok in enumerate(all_gather_objects(ctx, sees)) if not ok]
        if blind:
            raise CheckpointError(
                f"rank(s) {', '.join(map(str, blind))} cannot see {path}, the checkpoint rank 0 "
                f"resumes from: logging.run_dir ({self.folder.parent}) must be on storage every "
                "node sees (a shared filesystem), with the same path on every node"
            )
        return path

    def _set_aside_newer_than(self, path: Path) -> None:
        """Rename the unreadable checkpoints newer than ``path`` to ``*.unreadable`` (kept for
        inspection), so that the rotation of the resumed run does not carry them along."""
        chain = checkpoint_chain(self.folder, self.config.checkpoint.keep_last)
        for newer in chain[: chain.index(path)] if path in chain else []:
            if newer.is_file():
                aside = newer.with_name(newer.name + ".unreadable")
                os.replace(newer, aside)
                logger.warning("kept the unreadable %s as %s", newer, aside)

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
        previous = self.last_saved
        if write_last:
            self.last_saved = progress.position()
        # a second save of the same iteration (its epoch just ended) replaces, not rotates
        rotate = previous is None or previous[0] != progress.step
        written: list[Path] = []
        failure: str | None = None
        target = self.folder / "last.ckpt"
        if ctx.is_main:
            state = self._state(progress, best_metric, gathered)
            keep = cfg.checkpoint.keep_last

            def verify(tmp: Path) -> None:
                verify_checkpoint(tmp, state)

            try:
                if write_last:
                    written.append(
                        atomic_save(
                            state,
                            target,
                            verify=verify,
                            before_replace=(
                                (lambda: rotate_checkpoints(self.folder, keep)) if rotate else None
                            ),
                        )
                    )
                if best:
                    target = self.folder / "best.ckpt"
                    written.append(atomic_save(state, target, verify=verify))
            except (OSError, RuntimeError, CheckpointError) as exc:
                failure = (
                    f"cannot write checkpoint {target}: {describe_write_error(exc)}; the previous "
                    f"checkpoints in {self.folder} are intact. Free space or make the folder "
                    "writable, then run again to resume"
                )
        # every rank learns the outcome, so a full disk stops all of them with the same line
        failure = all_gather_objects(ctx, failure)[0]
        if failure is not None:
            raise CheckpointError(failure)
        logger.debug("checkpoint at iteration %d (best=%s)", progress.step, best)
        return tuple(written)

    def _state(
        self, progress: Progress, best_metric: BestMetric, gathered: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The checkpoint's content (layout: :mod:`loftr_train.checkpointing`)."""
        ctx, cfg, parts = self.ctx, self.config, self.parts
        return {
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
        if isinstance(state.get("model"), Mapping):
            check_finite(state["model"], source=f"checkpoint {path}")
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
