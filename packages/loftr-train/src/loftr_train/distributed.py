"""Plain ``torch.distributed`` helpers: one process or many, launched alone or by ``torchrun``.

``torchrun`` (``python -m torch.distributed.run``) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; multi-node runs use its rendezvous flags. Without those
variables the trainer runs as a single process and no process group is created. The backend is
NCCL on CUDA and gloo on CPU unless configured. Every collective goes through this module so a
stalled peer gives a :class:`DistributedError` that says which collective timed out and what to
check, instead of hanging forever (the timeout is ``trainer.dist_timeout_s``).
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from loftr_core.errors import LoftrError

__all__ = [
    "DistContext",
    "DistributedError",
    "all_gather_objects",
    "all_reduce_any",
    "all_reduce_mean",
    "barrier",
    "broadcast_buffers",
    "cleanup_distributed",
    "init_distributed",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class DistributedError(LoftrError, RuntimeError):
    """A process group could not be set up, or a collective failed or timed out."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands.

    Attributes:
        rank: global rank (0 when alone).
        world_size: number of processes (1 when alone).
        local_rank: rank on this node (selects the CUDA device).
        device: the device this process trains on.
        backend: ``"gloo"``, ``"nccl"`` or ``None`` when no process group exists.
        timeout_s: collective timeout in seconds.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None
    timeout_s: float

    @property
    def is_main(self) -> bool:
        """True on rank 0 (logs, progress bar, checkpoints)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one rank exists."""
        return self.backend is not None and self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise DistributedError(
            f"environment variable {name}={raw!r} is not an integer; it is set by torchrun"
        ) from exc


def init_distributed(
    device: str = "auto", backend: str = "auto", timeout_s: float = 1800.0
) -> DistContext:
    """Create the process group when launched by torchrun, pick the device.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        backend: ``"auto"`` (NCCL on CUDA, gloo on CPU), ``"gloo"`` or ``"nccl"``.
        timeout_s: timeout of the rendezvous and of every collective.

    Raises:
        DistributedError: CUDA requested but absent, NCCL on CPU, or the group cannot form.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise DistributedError(
            "trainer.device='cuda' but CUDA is not available; use trainer.device=cpu or auto"
        )
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices are "
                "visible; lower --nproc_per_node to the number of GPUs"
            )
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size == 1:
        return DistContext(0, 1, 0, dev, None, timeout_s)
    chosen = backend if backend != "auto" else ("nccl" if use_cuda else "gloo")
    if chosen == "nccl" and not use_cuda:
        raise DistributedError(
            "trainer.dist_backend='nccl' needs CUDA devices; use gloo (or auto) on CPU"
        )
    if not dist.is_initialized():
        started = time.monotonic()
        try:
            dist.init_process_group(
                backend=chosen,
                timeout=datetime.timedelta(seconds=timeout_s),
                device_id=dev if chosen == "nccl" else None,
                **_restart_store(rank, world_size, timeout_s),
            )
        except Exception as exc:
            waited = time.monotonic() - started
            raise DistributedError(
                f"rank {rank}/{world_size}: cannot create the {chosen} process group (gave up "
                f"after {waited:.0f} s; trainer.dist_timeout_s={timeout_s:.0f}): "
                f"{_first_line(exc)}; check that every rank started (torchrun "
                "--nproc_per_node/--nnodes/--rdzv_endpoint) and that MASTER_ADDR/PORT are reachable"
            ) from exc
    logger.info("rank %d/%d on %s (backend %s)", rank, world_size, dev, chosen)
    return DistContext(rank, world_size, local_rank, dev, chosen, timeout_s)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _restart_store(rank: int, world_size: int, timeout_s: float) -> dict[str, Any]:
    """Under torchrun, the store of this restart attempt: ``{"store", "rank", "world_size"}``.

    torchrun's agent keeps one TCP store for all restarts of a job, so after an elastic restart
    the keys of the previous attempt (the dead workers' addresses) are still there; a worker that
    starts late reads them and connects to a dead address or waits forever. Every attempt
    therefore gets its own key space, ``PrefixStore("loftr/attempt_<TORCHELASTIC_RESTART_COUNT>")``
    over the same server (hosted by the agent, or by rank 0 without an agent store, as torch's
    ``env://`` does). Without torchrun (no restart count): ``{}``, the default ``env://``.
    """
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if attempt is None or addr is None or port is None:
        return {}
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    server = dist.TCPStore(
        host_name=addr,
        port=_env_int("MASTER_PORT", 0),
        world_size=world_size,
        is_master=not agent_store and rank == 0,
        timeout=datetime.timedelta(seconds=timeout_s),
        multi_tenant=not agent_store,
    )
    store = dist.PrefixStore(f"loftr/attempt_{attempt}", server)
    return {"store": store, "rank": rank, "world_size": world_size}


def cleanup_distributed() -> None:
    """Destroy the process group if one exists."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _collective(ctx: DistContext, what: str, fn: Callable[[], T]) -> T:
    started = time.monotonic()
    try:
        return fn()
    except Exception as exc:  # gloo/NCCL raise RuntimeError subclasses (DistBackendError...)
        waited = time.monotonic() - started
        raise DistributedError(
            f"rank {ctx.rank}/{ctx.world_size}: collective '{what}' failed or timed out after "
            f"{waited:.0f} s (trainer.dist_timeout_s={ctx.timeout_s:.0f}; {type(exc).__name__}: "
            f"{exc}). Another rank probably crashed or is stuck: read its log first. If steps "
            "are legitimately slower than that, raise trainer.dist_timeout_s."
        ) from exc


def all_reduce_any(ctx: DistContext, flag: bool) -> bool:
    """True on every rank when ``flag`` is True on at least one rank."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    _collective(ctx, "all_reduce(any)", lambda: dist.all_reduce(t, op=dist.ReduceOp.MAX))
    return bool(t.item() > 0)


def all_reduce_mean(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    """Mean of a float tensor over ranks (a new tensor; the input is not modified)."""
    if not ctx.distributed:
        return values.clone()
    t = values.detach().to(ctx.device, torch.float64).clone()
    _collective(ctx, "all_reduce(mean)", lambda: dist.all_reduce(t, op=dist.ReduceOp.SUM))
    return (t / ctx.world_size).to(values.dtype)


def all_gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    _collective(ctx, "all_gather_object", lambda: dist.all_gather_object(out, obj))
    return out


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (with the configured timeout)."""
    if not ctx.distributed:
        return
    if ctx.backend == "gloo":
        _collective(
            ctx,
            "barrier",
            lambda: dist.monitored_barrier(timeout=datetime.timedelta(seconds=ctx.timeout_s)),
        )
    else:
        _collective(ctx, "barrier", lambda: dist.barrier())


def broadcast_buffers(ctx: DistContext, module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last training step the
    ranks' running statistics differ by their last batch; call this before validation and
    checkpoints so every replica evaluates and ends with the same model.
    """
    if not ctx.distributed:
        return
    for name, buf in module.named_buffers():

        def send(buf: torch.Tensor = buf) -> None:
            dist.broadcast(buf, src=0)

        _collective(ctx, f"broadcast({name})", send)
