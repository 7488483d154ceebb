"""The callback interface of the trainer: how tests (fault injection) and tools hook the loop.

Subclass :class:`TrainerCallbacks`, override the hooks you need (every hook does nothing by
default) and pass instances as ``Trainer(config, callbacks=[...])``. Hooks run on EVERY rank, in
the order the callbacks were given. Two hooks may change what the loop uses:
:meth:`~TrainerCallbacks.on_batch` returns the batch to train on and
:meth:`~TrainerCallbacks.on_loss` the loss to back-propagate (the next callback receives the
previous one's result). The library itself never reads environment variables to inject faults.

One iteration calls, in order: ``on_step_start`` -> ``on_batch`` -> ``on_loss`` ->
(``after_checkpoint`` when a checkpoint was written) -> ``on_step_end``; an epoch end may call
``after_checkpoint`` again, and ``on_finish`` runs once when training is over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

if TYPE_CHECKING:  # pragma: no cover
    from loftr_train.trainer.state import TrainResult

__all__ = ["CallbackList", "StepInfo", "TrainerCallbacks"]


@dataclass(frozen=True)
class StepInfo:
    """Where the loop stands when a hook is called.

    Attributes:
        rank: this process's rank (0 when alone).
        world_size: number of processes.
        epoch: current epoch (0-based).
        step: the iteration number (1-based): the one about to run in ``on_step_start``,
            ``on_batch`` and ``on_loss``, the one just finished in ``on_step_end`` and
            ``after_checkpoint``, the last one in ``on_finish``.
        batch_in_epoch: batches of ``epoch`` trained before this iteration.
    """

    rank: int
    world_size: int
    epoch: int
    step: int
    batch_in_epoch: int


class TrainerCallbacks:
    """Hooks of the training loop; every method does nothing unless overridden."""

    def on_step_start(self, info: StepInfo) -> None:
        """Before the iteration's batch is fetched."""

    def on_batch(self, info: StepInfo, batch: dict[str, Any]) -> dict[str, Any]:
        """The collated batch (already on the device) before supervision and forward.

        Returns:
            The batch to train on (``batch`` itself to only observe it).
        """
        return batch

    def on_loss(self, info: StepInfo, loss: Tensor) -> Tensor:
        """The scalar loss of this rank before the ranks agree whether it is finite.

        Returns:
            The loss to use (``loss`` itself to only observe it).
        """
        return loss

    def on_step_end(self, info: StepInfo, scalars: Mapping[str, float] | None) -> None:
        """After the iteration, its logging and its checkpoint (``scalars`` is None when the
        step was skipped for a non-finite loss)."""

    def after_checkpoint(self, info: StepInfo, paths: tuple[Path, ...]) -> None:
        """After a checkpoint was written (``paths``: the files rank 0 wrote; empty elsewhere)."""

    def on_finish(self, info: StepInfo, model: nn.Module, result: TrainResult) -> None:
        """Once training is over, after the final checkpoint (``model``: the trained LoFTR)."""


class CallbackList(TrainerCallbacks):
    """Several callbacks called in order (the loop's single entry point)."""

    def __init__(self, callbacks: Iterable[TrainerCallbacks] = ()) -> None:
        self.callbacks: tuple[TrainerCallbacks, ...] = tuple(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, TrainerCallbacks):
                raise TypeError(
                    f"callback {cb!r} is a {type(cb).__name__}; callbacks must subclass "
                    "loftr_train.trainer.TrainerCallbacks"
                )

    def on_step_start(self, info: StepInfo) -> None:
        for cb in self.callbacks:
            cb.on_step_start(info)

    def on_batch(self, info: StepInfo, batch: dict[str, Any]) -> dict[str, Any]:
        for cb in self.callbacks:
            batch = cb.on_batch(info, batch)
        return batch

    def on_loss(self, info: StepInfo, loss: Tensor) -> Tensor:
        for cb in self.callbacks:
            loss = cb.on_loss(info, loss)
        return loss

    def on_step_end(self, info: StepInfo, scalars: Mapping[str, float] | None) -> None:
        for cb in self.callbacks:
            cb.on_step_end(info, scalars)

    def after_checkpoint(self, info: StepInfo, paths: tuple[Path, ...]) -> None:
        for cb in self.callbacks:
            cb.after_checkpoint(info, paths)

    def on_finish(self, info: StepInfo, model: nn.Module, result: TrainResult) -> None:
        for cb in self.callbacks:
            cb.on_finish(info, model, result)
