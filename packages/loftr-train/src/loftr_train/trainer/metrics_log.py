"""What a run records: TensorBoard scalars, ``metrics.jsonl`` and per-rank sample-id logs.

TensorBoard and ``metrics.jsonl`` are written by rank 0 only. Training scalars are averaged
over ranks first (an all-reduce, so every rank calls :meth:`MetricsLogger.log_train`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from loftr_train.distributed import DistContext, all_reduce_mean
from loftr_train.train_config import LoggingConfig
from loftr_train.trainer.state import Progress

__all__ = ["MetricsLogger", "json_record"]

_LOSS_KEYS = ("loss", "loss_c", "loss_f")


def json_record(progress: Progress, time_s: float, metrics: Mapping[str, float]) -> str:
    """One strict-JSON line of ``metrics.jsonl``: non-finite values become ``null`` and are named
    under ``"nonfinite"`` (bare ``NaN`` is not JSON)."""
    values: dict[str, float | None] = {}
    nonfinite: list[str] = []
    for key, value in metrics.items():
        number = float(value)
        if math.isfinite(number):
            values[key] = number
        else:
            values[key] = None
            nonfinite.append(key)
    record: dict[str, object] = {
        "epoch": progress.epoch,
        "step": progress.step,
        "time_s": round(time_s, 3),
        **values,
    }
    if nonfinite:
        record["nonfinite"] = nonfinite
    return json.dumps(record, allow_nan=False)


class MetricsLogger:
    """The run's metric sinks; use as a context manager (opens/closes the TensorBoard writer).

    Args:
        config: the ``logging`` section.
        ctx: this process's distributed context.
        run_dir: the run folder.
    """

    def __init__(self, config: LoggingConfig, ctx: DistContext, run_dir: Path) -> None:
        self.config = config
        self.ctx = ctx
        self.run_dir = run_dir
        self.writer: Any = None  # a SummaryWriter on rank 0 while open, with tensorboard on

    def __enter__(self) -> MetricsLogger:
        if self.ctx.is_main and self.config.tensorboard and self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def log_train(self, scalars: Mapping[str, float] | None, progress: Progress) -> None:
        """Rank-averaged training losses, LR, gradient norm and skipped steps (a collective).

        Args:
            scalars: this rank's step scalars (None: the step was skipped; counts as NaN).
            progress: the loop position (``step`` is the TensorBoard step).
        """
        local = torch.tensor(
            [scalars[k] for k in _LOSS_KEYS] if scalars is not None else [math.nan] * 3,
            dtype=torch.float64,
        )
        mean = all_reduce_mean(self.ctx, local)
        if self.writer is None:
            return
        step = progress.step
        for k, v in zip(_LOSS_KEYS, mean.tolist(), strict=True):
            if math.isfinite(v):
                self.writer.add_scalar(f"train/{k}", v, step)
        if scalars is not None:
            self.writer.add_scalar("train/lr", scalars["lr"], step)
            self.writer.add_scalar("train/grad_norm", scalars["grad_norm"], step)
        self.writer.add_scalar("train/skipped_steps", progress.skipped_steps, step)

    def log_samples(self, batch: Mapping[str, Any], progress: Progress) -> None:
        """Append ``step epoch scene_id:pair_id ...`` to ``samples_rank{r}.txt``."""
        ids = [f"{s}:{int(i)}" for s, i in zip(batch["scene_id"], batch["pair_id"], strict=True)]
        path = self.run_dir / f"samples_rank{self.ctx.rank}.txt"
        with path.open("a") as fh:
            fh.write(f"{progress.step} {progress.epoch} {' '.join(ids)}\n")

    def log_validation(
        self, metrics: Mapping[str, float], progress: Progress, elapsed_s: float
    ) -> None:
        """Append the validation metrics to ``metrics.jsonl`` (strict JSON, :func:`json_record`;
        ``elapsed_s``: the run's wall time, earlier sessions included) and TensorBoard (rank 0)."""
        if not self.ctx.is_main:
            return
        with (self.run_dir / "metrics.jsonl").open("a") as fh:
            fh.write(json_record(progress, elapsed_s, metrics) + "\n")
        if self.writer is not None:
            for k, v in metrics.items():
                group = "val" if k.startswith("loss") else "metrics"
                self.writer.add_scalar(f"{group}/{k}", v, progress.step)
