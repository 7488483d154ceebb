"""What the loop carries from iteration to iteration and what :meth:`Trainer.fit` returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BestMetric", "Progress", "TrainResult"]


@dataclass
class Progress:
    """Where the loop stands (stored in every checkpoint).

    Attributes:
        epoch: current epoch (0-based).
        batch_in_epoch: batches of ``epoch`` already trained.
        step: training iterations in total (skipped ones included).
        optimizer_steps: optimiser steps actually taken.
        skipped_steps: iterations skipped for a non-finite loss or gradient.
        epoch_done: ``epoch`` is finished (validated); resuming starts the next one.
        time_s: wall time of the run at this position, earlier sessions included (resumes keep
            counting from it).
    """

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    optimizer_steps: int = 0
    skipped_steps: int = 0
    epoch_done: bool = False
    time_s: float = 0.0

    def position(self) -> tuple[int, int, int]:
        """(step, epoch, batch) with a finished epoch counted as the start of the next one."""
        if self.epoch_done:
            return (self.step, self.epoch + 1, 0)
        return (self.step, self.epoch, self.batch_in_epoch)

    def next_epoch(self) -> None:
        """Move to the start of the next epoch."""
        self.epoch, self.batch_in_epoch, self.epoch_done = self.epoch + 1, 0, False


@dataclass
class BestMetric:
    """The best value of the monitored validation metric (higher is better).

    Attributes:
        monitor: the metric name (``checkpoint.monitor``).
        value: best value so far (None before the first finite one).
        epoch: the epoch that reached it.
    """

    monitor: str
    value: float | None = None
    epoch: int | None = None

    def offer(self, value: float | None, epoch: int) -> bool:
        """Record ``value`` if it is finite and better; returns whether it improved."""
        if value is None or not math.isfinite(value):
            return False
        if self.value is not None and value <= self.value:
            return False
        self.value, self.epoch = value, epoch
        return True


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns (rank 0's view; identical numbers on every rank)."""

    run_dir: Path
    progress: Progress
    last_loss: float | None
    monitor: str
    best_value: float | None
    best_epoch: int | None
    last_metrics: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0

    def summary(self) -> str:
        """The one-line final summary."""
        p = self.progress
        best = (
            "n/a" if self.best_value is None else f"{self.best_value:.4f} (epoch {self.best_epoch})"
        )
        loss = "n/a" if self.last_loss is None else f"{self.last_loss:.4f}"
        return (
            f"loftr-train finished: {p.epoch} epochs, {p.step} iterations, "
            f"{p.optimizer_steps} optimiser steps ({p.skipped_steps} skipped), last loss {loss}, "
            f"best {self.monitor} {best}, {self.wall_time_s:.1f} s; checkpoints in "
            f"{self.run_dir / 'checkpoints'}"
        )
