"""Process group and device of a run (built on :mod:`loftr_train.distributed`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from loftr_train.distributed import DistContext, barrier, cleanup_distributed, init_distributed
from loftr_train.train_config import TrainerConfig

__all__ = ["process_group"]


@contextlib.contextmanager
def process_group(trainer: TrainerConfig) -> Iterator[DistContext]:
    """Create the process group (under torchrun), pick the device, and tear both down.

    Also applies ``trainer.num_threads`` (torch intra-op threads of this process). On a normal
    exit every rank meets at a barrier before the group is destroyed: a gloo peer that exits
    while another still closes its pairs can abort that process. On an error the group is not
    destroyed here (the process exits right after reporting).

    Yields:
        This process's :class:`~loftr_train.distributed.DistContext`.

    Raises:
        DistributedError: the group cannot form, or the final barrier times out.
    """
    ctx = init_distributed(trainer.device, trainer.dist_backend, trainer.dist_timeout_s)
    if trainer.num_threads is not None:
        torch.set_num_threads(trainer.num_threads)
    # On an error the group is left to the process's exit: destroying it waits for peers that
    # may be gone, and every rank should print its one error line before torchrun stops the
    # others (ranks fail together on errors they agreed on, e.g. a failed checkpoint write).
    yield ctx
    try:
        barrier(ctx)
    finally:
        cleanup_distributed()
