"""Fault-injection callbacks of the tests, and a driver that trains with them.

The callbacks are installed through the trainer's callback interface (never environment
variables). The tests use them in-process, and run this file as a script for the faults that
need their own processes (a SIGKILL, several ranks under torchrun)::

    python fault_driver.py CONFIG [key=value ...] [--kill-after S[:R]] [--nan-at S[:R]]
        [--no-gt-at S[:R]] [--dump-dir DIR] [--late-start SECONDS[:R]] [--run-dir-per-rank]
    python -m torch.distributed.run --nproc_per_node 2 fault_driver.py CONFIG ...

``S[:R]``: at iteration ``S`` (1-based), on rank ``R`` only (every rank without ``:R``).
It logs like ``loftr-train`` and prints the final summary on rank 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from loftr_core.errors import LoftrError
from loftr_train.train_config import load_config
from loftr_train.trainer import StepInfo, Trainer, TrainerCallbacks, TrainResult


class _At(TrainerCallbacks):
    """Fires at iteration ``step`` on ``rank`` (every rank when None)."""

    def __init__(self, step: int, rank: int | None = None) -> None:
        self.step = step
        self.rank = rank

    def fires(self, info: StepInfo) -> bool:
        return info.step == self.step and self.rank in (None, info.rank)


class NanLossAt(_At):
    """Makes the loss NaN at that iteration."""

    def on_loss(self, info: StepInfo, loss: Tensor) -> Tensor:
        return loss * float("nan") if self.fires(info) else loss


class NoGroundTruthAt(_At):
    """Moves the homography of that iteration's batch so far that no ground truth remains."""

    def on_batch(self, info: StepInfo, batch: dict[str, Any]) -> dict[str, Any]:
        if not self.fires(info) or "H_0to1" not in batch:
            return batch
        far = torch.eye(3, device=batch["H_0to1"].device, dtype=batch["H_0to1"].dtype)
        far[0, 2] = 1e5
        return {**batch, "H_0to1": far.expand_as(batch["H_0to1"]).contiguous()}


class KillAfterStep(_At):
    """SIGKILLs the process once that iteration (and its checkpoint, if due) is done; under
    torchrun only in the first attempt (a restarted worker then runs to the end)."""

    def on_step_end(self, info: StepInfo, scalars: Mapping[str, float] | None) -> None:
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if self.fires(info) and first_attempt:
            os.kill(os.getpid(), signal.SIGKILL)


class DumpFinalState(TrainerCallbacks):
    """Saves every rank's final state dict as ``<folder>/rank{r}.pt``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_finish(self, info: StepInfo, model: nn.Module, result: TrainResult) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), self.folder / f"rank{info.rank}.pt")


def _at(text: str) -> tuple[int, int | None]:
    step, _, rank = text.partition(":")
    return int(step), (int(rank) if rank else None)


def main(argv: Sequence[str] | None = None) -> int:
    """Train ``CONFIG`` with the requested faults; returns the exit status."""
    p = argparse.ArgumentParser(prog="fault_driver")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--kill-after", type=_at, default=None)
    p.add_argument(
        "--late-start",
        type=_at,
        default=None,
        help="S:R: in a restarted attempt, rank R sleeps S seconds before starting",
    )
    p.add_argument("--nan-at", type=_at, default=None)
    p.add_argument("--no-gt-at", type=_at, default=None)
    p.add_argument("--dump-dir", type=Path, default=None)
    p.add_argument(
        "--run-dir-per-rank",
        action="store_true",
        help="append /rank<R> to logging.run_dir: node-local run folders, simulated on one host",
    )
    args = p.parse_args(argv)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.INFO if rank == "0" else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    callbacks: list[TrainerCallbacks] = []
    if args.kill_after is not None:
        callbacks.append(KillAfterStep(*args.kill_after))
    restarted = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0"
    if args.late_start is not None and restarted and args.late_start[1] in (None, int(rank)):
        time.sleep(args.late_start[0])  # the restarted worker comes up late
    if args.nan_at is not None:
        callbacks.append(NanLossAt(*args.nan_at))
    if args.no_gt_at is not None:
        callbacks.append(NoGroundTruthAt(*args.no_gt_at))
    if args.dump_dir is not None:
        callbacks.append(DumpFinalState(args.dump_dir))
    config = load_config(args.config, args.overrides)
    if args.run_dir_per_rank:
        config = load_config(
            args.config, [*args.overrides, f"logging.run_dir={config.logging.run_dir}/rank{rank}"]
        )
    try:
        result = Trainer(config, callbacks=callbacks).fit()
    except LoftrError as exc:  # one line, as the loftr-train command prints it
        print(f"fault_driver [rank {rank}]: error: {exc}", file=sys.stderr)
        return 2
    if rank == "0":
        print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
