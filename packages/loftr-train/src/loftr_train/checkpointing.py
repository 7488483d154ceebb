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
import logging
import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from loftr_core.errors import CheckpointError

__all__ = [
    "CHECKPOINT_FORMAT",
    "atomic_save",
    "capture_rng_state",
    "find_resume_checkpoint",
    "load_checkpoint",
    "restore_rng_state",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "loftr-train-checkpoint/1"


def atomic_save(obj: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``obj`` with ``torch.save`` so that ``path`` is never left truncated.

    Args:
        obj: tensors and primitive containers only (checked by re-reading nothing; keep it so).
        path: destination file; its folder is created when missing.

    Returns:
        The destination path.
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
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)
    return path


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
    """Load a training checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: missing/unreadable file or not a loftr-train checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass an existing .ckpt file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path}: {exc}; the file is corrupt or not a torch checkpoint"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not a loftr-train checkpoint (format {found!r}, expected "
            f"{CHECKPOINT_FORMAT!r}); to start from model weights only, use a model checkpoint "
            "with loftr_core"
        )
    return state


def find_resume_checkpoint(run_dir: str | Path) -> Path | None:
    """``<run_dir>/checkpoints/last.ckpt`` if it exists, else None."""
    path = Path(run_dir) / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


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
