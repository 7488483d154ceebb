"""Atomic, pickle-free training checkpoints and RNG-state capture.

A checkpoint is a ``torch.save`` of a dict holding only tensors and primitive containers
(dict/list/tuple/str/int/float/bool/None), so it loads with ``torch.load(weights_only=True)``
and never executes pickled code. It is written atomically: a temporary file in the SAME folder,
flushed and ``fsync``-ed, then ``os.replace``-d over the target (and the folder fsync-ed), so a
process killed at any moment leaves either the old complete file or the new complete file.

Layout of a training checkpoint (keys of the top-level dict)::

    format          "loftr-train-checkpoint/1"
    model           model state dict (official key names)
    model_config    LoFTRConfig.to_dict()
    train_config    TrainConfig.to_dict() (the resolved config of the run)
    optimizer       optimizer.state_dict()
    scaler          GradScaler.state_dict() (empty when unused)
    sampler         the training sampler's state_dict()
    rng             list, one entry per rank: python / numpy / torch (/ cuda) RNG states
    progress        epoch, batch_in_epoch, step, optimizer_steps, skipped_steps, epoch_done
    best            best monitored value so far (or None) and its metric name
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from loftr_core.api.checkpoint import load_error_reason
from loftr_core.errors import CheckpointError

__all__ = [
    "CHECKPOINT_FORMAT",
    "atomic_save",
    "capture_rng_state",
    "checkpoint_chain",
    "describe_write_error",
    "find_resume_checkpoint",
    "load_checkpoint",
    "remove_stale_temporaries",
    "restore_rng_state",
    "rotate_checkpoints",
    "verify_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "loftr-train-checkpoint/1"


def atomic_save(
    obj: Mapping[str, Any],
    path: str | Path,
    *,
    verify: Callable[[Path], None] | None = None,
    before_replace: Callable[[], None] | None = None,
) -> Path:
    """Write ``obj`` with ``torch.save`` so that ``path`` is never left truncated.

    Args:
        obj: tensors and primitive containers only (checked by re-reading nothing; keep it so).
        path: destination file; its folder is created when missing.
        verify: called with the written temporary file before it replaces ``path`` (e.g.
            :func:`verify_checkpoint`); an exception keeps the previous ``path``.
        before_replace: called after a successful write and verification, just before the
            rename (e.g. to rotate older checkpoints).

    Returns:
        The destination path.

    Raises:
        OSError / RuntimeError: the write failed (disk full, read-only...); ``path`` is unchanged
            and the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(dict(obj), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp creates 0600; keep the usual mode
        if verify is not None:
            verify(Path(tmp_name))
        if before_replace is not None:
            before_replace()
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)
    return path


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files that killed :func:`atomic_save` calls left behind.

    Call it only while no write to ``folder`` is in progress (at the start of a run).
    """
    removed = []
    for tmp in Path(folder).glob(".*.ckpt.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def verify_checkpoint(path: Path, expected: Mapping[str, Any]) -> None:
    """Read ``path`` back and check it holds ``expected``'s progress and model tensors.

    Raises:
        CheckpointError: the file does not read back or differs (a failing disk or filesystem).
    """
    state = load_checkpoint(path)
    model, want = state.get("model", {}), expected["model"]
    same = (
        state.get("progress") == expected.get("progress")
        and model.keys() == want.keys()
        and all(torch.equal(model[k], want[k]) for k in want)
    )
    if not same:
        raise CheckpointError(
            f"the checkpoint written to {path} does not read back as written; the disk or "
            "filesystem is failing"
        )


def describe_write_error(exc: BaseException) -> str:
    """A short cause for a failed write: the OSError in the chain (``No space left on device
    (ENOSPC)``; torch hides it behind ``RuntimeError: [enforce fail ...]``), else the first line."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno is not None:
            name = errno.errorcode.get(current.errno, str(current.errno))
            return f"{current.strerror or current} ({name})"
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    text = str(exc).strip().splitlines()
    detail = text[0] if text else ""
    if "enforce fail" in detail or "file write failed" in detail:
        return "the write failed (disk full or I/O error)"
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dir_fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a training checkpoint with ``weights_only=True`` (nothing in it is executed).

    Raises:
        CheckpointError: missing/unreadable file or not a loftr-train checkpoint (the message
            never suggests loading it unsafely).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass an existing .ckpt file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path} ({load_error_reason(exc)}); it is truncated, corrupt or "
            "not a loftr-train checkpoint, and it is not loaded in a way that could run code"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not a loftr-train checkpoint (format {found!r}, expected "
            f"{CHECKPOINT_FORMAT!r}); to start from model weights only, use a model checkpoint "
            "with loftr_core"
        )
    return state


def checkpoint_chain(folder: str | Path, keep: int) -> list[Path]:
    """``last.ckpt``, ``last-1.ckpt`` ... ``last-<keep - 1>.ckpt`` in ``folder``, newest first."""
    folder = Path(folder)
    return [folder / ("last.ckpt" if k == 0 else f"last-{k}.ckpt") for k in range(max(1, keep))]


def rotate_checkpoints(folder: str | Path, keep: int) -> None:
    """Shift ``last.ckpt`` -> ``last-1.ckpt`` -> ... (the oldest beyond ``keep`` is dropped)."""
    chain = checkpoint_chain(folder, keep)
    for extra in Path(folder).glob("last-*.ckpt"):  # from an earlier run with a larger keep
        if extra not in chain:
            with contextlib.suppress(OSError):
                extra.unlink()
    for older, newer in zip(reversed(chain[1:]), reversed(chain[:-1]), strict=True):
        if newer.is_file():
            os.replace(newer, older)


def find_resume_checkpoint(run_dir: str | Path, keep: int = 1) -> Path | None:
    """The newest readable checkpoint of ``<run_dir>/checkpoints`` (see :func:`checkpoint_chain`).

    An unreadable newer file is skipped with a warning naming it and the one used instead.
    None when there is none.
    """
    failures: list[str] = []
    for path in checkpoint_chain(Path(run_dir) / "checkpoints", keep):
        if not path.is_file():
            continue
        try:
            load_checkpoint(path)
        except CheckpointError as exc:
            failures.append(str(exc))
            continue
        for failure in failures:
            logger.warning("%s; resuming from the older %s instead", failure, path)
        return path
    if failures:
        raise CheckpointError(
            f"no readable checkpoint in {Path(run_dir) / 'checkpoints'}: {'; '.join(failures)}; "
            "start a fresh run folder or pass --resume with a good checkpoint"
        )
    return None


# -------------------------------------------------------------------------------------- RNG
def capture_rng_state() -> dict[str, Any]:
    """This process's python, numpy, torch (and CUDA) RNG states as tensors/primitives."""
    version, internal, gauss = random.getstate()
    # legacy=True always gives the tuple form (name, keys, pos, has_gauss, cached_gaussian)
    np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))  # noqa: NPY002
    name, keys, pos, has_gauss, cached = np_state
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    try:
        version, internal, gauss = state["python"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss))
        np_s = state["numpy"]
        keys = np_s["keys"].numpy().astype(np.uint32)
        np.random.set_state(  # noqa: NPY002 (the global state is what we restore)
            (
                np_s["name"],
                keys,
                int(np_s["pos"]),
                int(np_s["has_gauss"]),
                float(np_s["cached_gaussian"]),
            )
        )
        torch.set_rng_state(state["torch"].cpu())
        if "cuda" in state and torch.cuda.is_available():
            cuda_states = list(state["cuda"])
            if len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
            else:
                logger.warning(
                    "checkpoint holds %d CUDA RNG states but %d devices are visible; "
                    "CUDA RNG not restored",
                    len(cuda_states),
                    torch.cuda.device_count(),
                )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint RNG state is malformed: {exc}") from exc
