"""The epoch/iteration loop: when to train, validate, checkpoint and stop.

Resumption is exact: the checkpoint manager stores every rank's sampler position and RNG states
and the loop position; the LR is a pure function of the position (:mod:`loftr_train.schedule`)
and loaders never touch the global RNG. A run killed at any point and resumed from its last
checkpoint reaches the same weights (on CPU, bit for bit) as an uninterrupted run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from tqdm import tqdm

from loftr_train.distributed import DistContext, all_reduce_any, broadcast_buffers
from loftr_train.train_config import TrainConfig
from loftr_train.trainer.callbacks import StepInfo, TrainerCallbacks
from loftr_train.trainer.checkpoints import CheckpointManager
from loftr_train.trainer.components import TrainComponents
from loftr_train.trainer.metrics_log import MetricsLogger
from loftr_train.trainer.state import BestMetric, Progress
from loftr_train.trainer.step import train_step
from loftr_train.trainer.validation import Validator
from loftr_train.training_data import make_train_loader

__all__ = ["TrainingLoop"]

logger = logging.getLogger(__name__)


class TrainingLoop:
    """Runs the epochs of one run on already-built parts.

    Args:
        config: the run's configuration.
        ctx: this process's distributed context.
        parts: model, optimiser, data... (:func:`~loftr_train.trainer.components.build_components`).
        checkpoints: saves and restores the training state.
        metrics_log: the metric sinks (opened by the caller).
        validator: the validation pass.
        callbacks: the hooks (see :mod:`loftr_train.trainer.callbacks`).
        t_start: ``time.perf_counter()`` at the start of the run (for ``trainer.max_time_s``).
    """

    def __init__(
        self,
        config: TrainConfig,
        ctx: DistContext,
        parts: TrainComponents,
        checkpoints: CheckpointManager,
        metrics_log: MetricsLogger,
        validator: Validator,
        callbacks: TrainerCallbacks,
        t_start: float,
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.parts = parts
        self.checkpoints = checkpoints
        self.metrics_log = metrics_log
        self.validator = validator
        self.callbacks = callbacks
        self.t_start = t_start
        self.progress = Progress()
        self.time_before_s = 0.0
        self.best = BestMetric(config.checkpoint.monitor)
        self.last_loss: float | None = None
        self.last_metrics: dict[str, float] = {}

    # ------------------------------------------------------------------------------- helpers
    def elapsed(self) -> float:
        """Seconds since the start of this session (``trainer.max_time_s`` counts these)."""
        return time.perf_counter() - self.t_start

    def run_time(self) -> float:
        """Seconds of the whole run: earlier sessions (restored) plus this one."""
        return self.time_before_s + self.elapsed()

    def info(self) -> StepInfo:
        """The hooks' view of the current position."""
        p = self.progress
        return StepInfo(self.ctx.rank, self.ctx.world_size, p.epoch, p.step, p.batch_in_epoch)

    def _out_of_time(self) -> bool:
        """Whether ``trainer.max_time_s`` is spent (rank 0 decides for every rank)."""
        limit = self.config.trainer.max_time_s
        if limit is None:
            return False
        spent = self.elapsed() > limit if self.ctx.is_main else False
        return all_reduce_any(self.ctx, spent)

    def _should_stop(self) -> bool:
        max_steps = self.config.trainer.max_steps
        if max_steps is not None and self.progress.step >= max_steps:
            return True
        return self._out_of_time()

    def _save(self, *, best: bool, write_last: bool = True) -> None:
        self.progress.time_s = self.run_time()
        paths = self.checkpoints.save(self.progress, self.best, best=best, write_last=write_last)
        self.callbacks.after_checkpoint(self.info(), paths)

    # ---------------------------------------------------------------------------------- loop
    def restore(self, progress: Progress, best: BestMetric) -> None:
        """Continue from a restored position (see :meth:`CheckpointManager.restore`)."""
        self.progress, self.best = progress, best
        self.time_before_s = progress.time_s

    def run(self) -> None:
        """Train until ``max_epochs`` / ``max_steps`` / ``max_time_s``; always checkpoints."""
        cfg, p = self.config, self.progress
        if p.epoch_done:
            p.next_epoch()
        while p.epoch < cfg.trainer.max_epochs:
            if self._should_stop():
                break
            self._train_epoch()
            if p.batch_in_epoch < self.parts.data.batches_per_epoch:
                break  # stopped by max_steps or max_time_s
            self._end_epoch()
            p.next_epoch()
        broadcast_buffers(self.ctx, self.parts.model)
        if not self.checkpoints.is_current(p):
            self._save(best=False)

    def _train_epoch(self) -> None:
        cfg, p, ctx, data = self.config, self.progress, self.ctx, self.parts.data
        if p.batch_in_epoch >= data.batches_per_epoch:
            return
        data.sampler.set_epoch(p.epoch)
        if p.batch_in_epoch > 0:
            data.sampler.load_state_dict(
                {"epoch": p.epoch, "consumed": p.batch_in_epoch * cfg.data.batch_size}
            )
        loader = make_train_loader(
            data.scenes,
            data.sampler,
            cfg.data,
            seed=cfg.trainer.seed * 100003 + p.epoch,
            pin_memory=cfg.data.pin_memory and ctx.device.type == "cuda",
        )
        self.parts.step_module.train()
        self.parts.loss_fn.train()
        bar = tqdm(
            total=data.batches_per_epoch,
            initial=p.batch_in_epoch,
            desc=f"epoch {p.epoch}",
            disable=not (ctx.is_main and cfg.logging.progress_bar),
            dynamic_ncols=True,
        )
        try:
            it = iter(loader)
            while p.batch_in_epoch < data.batches_per_epoch:
                if self._should_stop():
                    break
                self._iteration(next(it), bar)
        finally:
            bar.close()

    def _iteration(self, batch: Mapping[str, Any], bar: Any) -> None:
        cfg, p = self.config, self.progress
        t_start = time.perf_counter()
        upcoming = StepInfo(
            self.ctx.rank, self.ctx.world_size, p.epoch, p.step + 1, p.batch_in_epoch
        )
        self.callbacks.on_step_start(upcoming)
        scalars = train_step(self.parts, self.ctx, cfg.optim, p, batch, self.callbacks, upcoming)
        if scalars is not None:
            self.last_loss = scalars["loss"]
        p.step += 1
        p.batch_in_epoch += 1
        if cfg.logging.log_sample_ids:
            self.metrics_log.log_samples(batch, p)
        if p.step % cfg.logging.log_every_n_steps == 0:
            self.metrics_log.log_train(scalars, p)
        if scalars is not None:
            rate = (
                cfg.data.batch_size * self.ctx.world_size / max(time.perf_counter() - t_start, 1e-9)
            )
            bar.set_postfix(
                loss=f"{scalars['loss']:.4f}", lr=f"{scalars['lr']:.2e}", pairs_s=f"{rate:.1f}"
            )
        bar.update(1)
        every = cfg.checkpoint.every_n_steps
        if every is not None and p.step % every == 0:
            self._save(best=False)
        self.callbacks.on_step_end(self.info(), scalars)

    def _end_epoch(self) -> None:
        cfg, p = self.config, self.progress
        broadcast_buffers(self.ctx, self.parts.model)
        every_val = cfg.trainer.val_every_n_epochs
        improved = False
        if self.validator.val is not None and every_val and (p.epoch + 1) % every_val == 0:
            metrics = self.validator.run()
            self.last_metrics = metrics
            improved = self.best.offer(metrics.get(cfg.checkpoint.monitor), p.epoch)
            if self.ctx.is_main:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                logger.info("epoch %d validation: %s", p.epoch, shown)
            self.metrics_log.log_validation(metrics, p, self.run_time())
        p.epoch_done = True
        every = cfg.checkpoint.every_n_epochs
        due = every is not None and (p.epoch + 1) % every == 0
        if due or (improved and cfg.checkpoint.save_best):
            self._save(best=improved and cfg.checkpoint.save_best, write_last=due)
