"""Atomic checkpoints, weights_only loading, RNG capture/restore."""

# ruff: noqa: NPY002  (the legacy global numpy RNG is exactly what checkpoints must restore)

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from loftr_core.errors import CheckpointError
from loftr_train.checkpointing import (
    CHECKPOINT_FORMAT,
    atomic_save,
    capture_rng_state,
    find_resume_checkpoint,
    load_checkpoint,
    restore_rng_state,
)


def _state(value: float) -> dict[str, object]:
    return {"format": CHECKPOINT_FORMAT, "w": torch.full((4,), value), "meta": {"step": 3}}


def test_roundtrip_weights_only(tmp_path: Path) -> None:
    path = atomic_save(_state(1.5), tmp_path / "sub" / "last.ckpt")
    state = load_checkpoint(path)
    assert torch.equal(state["w"], torch.full((4,), 1.5))
    assert state["meta"] == {"step": 3}
    # plain torch.load with weights_only=True works too (no pickled classes inside)
    assert torch.load(path, weights_only=True)["meta"]["step"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temp file left


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = atomic_save(_state(1.0), tmp_path / "last.ckpt")

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_save(_state(2.0), path)
    assert torch.equal(load_checkpoint(path)["w"], torch.full((4,), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_sigkill_during_save_never_truncates(tmp_path: Path) -> None:
    """A process killed while writing a big checkpoint leaves the previous one intact."""
    path = tmp_path / "last.ckpt"
    atomic_save(_state(1.0), path)
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from loftr_train import checkpointing
        real = torch.save
        def save_then_die(obj, fh):
            real({{"format": "x", "big": torch.zeros(2_000_000)}}, fh)
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = save_then_die
        checkpointing.atomic_save({{"format": "x"}}, {str(path)!r})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9
    assert torch.equal(load_checkpoint(path)["w"], torch.full((4,), 1.0))


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(bad)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a loftr-train checkpoint"):
        load_checkpoint(other)


def test_find_resume_checkpoint(tmp_path: Path) -> None:
    assert find_resume_checkpoint(tmp_path) is None
    atomic_save(_state(0.0), tmp_path / "checkpoints" / "last.ckpt")
    assert find_resume_checkpoint(tmp_path) == tmp_path / "checkpoints" / "last.ckpt"


def test_rng_state_roundtrips_through_a_weights_only_file(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leave a cached gaussian in numpy's state
    atomic_save({"format": CHECKPOINT_FORMAT, "rng": capture_rng_state()}, tmp_path / "r.ckpt")
    expected = (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(load_checkpoint(tmp_path / "r.ckpt")["rng"])
    got = (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist())
    assert got == expected
