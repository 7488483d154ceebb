"""The :class:`Trainer`: one training run, plain ``torch.distributed`` DDP, one process or many.

:meth:`Trainer.fit` sets up the process group and device
(:mod:`~loftr_train.trainer.process_group`), prepares the run folder, builds the parts
(:mod:`~loftr_train.trainer.components`), restores a checkpoint when resuming
(:mod:`~loftr_train.trainer.checkpoints`) and runs the loop (:mod:`~loftr_train.trainer.loop`,
one iteration: :mod:`~loftr_train.trainer.step`) with validation
(:mod:`~loftr_train.trainer.validation`) and metric logging
(:mod:`~loftr_train.trainer.metrics_log`). Tests and tools hook the loop through callbacks
(:mod:`~loftr_train.trainer.callbacks`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from loftr_core.errors import ConfigError
from loftr_train.distributed import DistContext, all_gather_objects
from loftr_train.train_config import TrainConfig
from loftr_train.trainer.callbacks import CallbackList, TrainerCallbacks
from loftr_train.trainer.checkpoints import CheckpointManager
from loftr_train.trainer.components import build_components
from loftr_train.trainer.loop import TrainingLoop
from loftr_train.trainer.metrics_log import MetricsLogger
from loftr_train.trainer.process_group import process_group
from loftr_train.trainer.state import TrainResult
from loftr_train.trainer.validation import Validator

__all__ = ["Trainer"]

logger = logging.getLogger(__name__)


RUN_TOKEN = ".run-token"


def _check_shared(ctx: DistContext, run_dir: Path) -> None:
    """Every rank must see the run folder rank 0 writes (checkpoints, resume): a collective.

    Rank 0 writes a fresh token into the folder; a rank that reads another one (or none) is on
    another disk, e.g. a node-local ``logging.run_dir``, which would resume ranks from different
    checkpoints.

    Raises:
        ConfigError: on every rank, naming the ranks that do not see it.
    """
    if not ctx.distributed:
        return
    token = None
    if ctx.is_main:
        token = uuid.uuid4().hex
        (run_dir / RUN_TOKEN).write_text(token)
    token = all_gather_objects(ctx, token)[0]  # after rank 0 wrote it
    try:
        seen = (run_dir / RUN_TOKEN).read_text()
    except OSError:
        seen = None
    blind = [r for r, ok in enumerate(all_gather_objects(ctx, seen == token)) if not ok]
    if blind:
        raise ConfigError(
            f"rank(s) {', '.join(map(str, blind))} do not see the run folder rank 0 writes "
            f"(logging.run_dir={str(run_dir)!r}): checkpoints and resuming need it on storage "
            "every node sees (a shared filesystem, the same path on every node)"
        )


class Trainer:
    """Train LoFTR from a :class:`~loftr_train.train_config.TrainConfig`.

    Args:
        config: the resolved configuration.
        resume: a checkpoint to continue from; None = ``<run_dir>/checkpoints/last.ckpt`` when
            it exists and ``checkpoint.auto_resume`` is on, else a fresh start.
        callbacks: hooks called on every rank (:class:`TrainerCallbacks` subclasses), e.g. the
            fault injection of the package's tests.

    Construction does nothing; :meth:`fit` sets up the process group, data, model and runs.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: str | Path | None = None,
        callbacks: Iterable[TrainerCallbacks] = (),
    ) -> None:
        self.config = config
        self.resume = None if resume is None else Path(resume)
        self.callbacks = CallbackList(callbacks)

    def fit(self) -> TrainResult:
        """Run the training; returns the :class:`TrainResult` (every rank)."""
        with process_group(self.config.trainer) as ctx:
            return self._fit(ctx, time.perf_counter())

    def _prepare_run_dir(self, ctx: DistContext) -> Path:
        run_dir = Path(self.config.logging.run_dir)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)  # every rank writes logs
        if ctx.is_main:
            (run_dir / "config.yaml").write_text(self.config.to_yaml())
        _check_shared(ctx, run_dir)
        return run_dir

    def _fit(self, ctx: DistContext, t_start: float) -> TrainResult:
        cfg = self.config
        run_dir = self._prepare_run_dir(ctx)
        parts = build_components(cfg, ctx)
        checkpoints = CheckpointManager(cfg, ctx, parts, run_dir / "checkpoints")
        metrics_log = MetricsLogger(cfg.logging, ctx, run_dir)
        loop = TrainingLoop(
            cfg,
            ctx,
            parts,
            checkpoints,
            metrics_log,
            Validator(cfg, ctx, parts, parts.data.val),
            self.callbacks,
            t_start,
        )
        resume = checkpoints.resume_path(self.resume)
        if resume is not None:
            loop.restore(*checkpoints.restore(resume))
        with metrics_log:
            loop.run()
        result = TrainResult(
            run_dir=run_dir,
            progress=dataclasses.replace(loop.progress),
            last_loss=loop.last_loss,
            monitor=cfg.checkpoint.monitor,
            best_value=loop.best.value,
            best_epoch=loop.best.epoch,
            last_metrics=dict(loop.last_metrics),
            wall_time_s=loop.run_time(),
        )
        self.callbacks.on_finish(loop.info(), parts.model, result)
        logger.debug("finished: %s", result.summary())  # the command prints it once
        return result
