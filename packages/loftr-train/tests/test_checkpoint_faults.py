"""Checkpoints that survive: the newest few kept and verified, fallback on resume, full or
read-only disks stop with one line, stale temporaries removed, strict-JSON records."""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from loftr_core.errors import CheckpointError
from loftr_train import checkpointing, cli_train
from loftr_train.checkpointing import atomic_save, load_checkpoint
from loftr_train.train_config import TrainConfig, load_config
from loftr_train.trainer import Trainer
from loftr_train.trainer.metrics_log import json_record
from loftr_train.trainer.state import Progress

EVERY_STEP = ["checkpoint.every_n_steps=1", "trainer.val_every_n_epochs=0"]


@pytest.fixture
def tiny(tiny_config: Callable[..., dict[str, Any]]) -> Callable[..., TrainConfig]:
    def make(run_dir: Path, *overrides: str) -> TrainConfig:
        return load_config(tiny_config(), [f"logging.run_dir={run_dir}", *overrides])

    return make


def _steps(folder: Path) -> dict[str, int]:
    return {p.name: load_checkpoint(p)["progress"]["step"] for p in sorted(folder.glob("*.ckpt"))}


def test_the_newest_checkpoints_are_kept_and_resume_falls_back(
    tiny: Callable[..., TrainConfig], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    folder = run / "checkpoints"
    Trainer(tiny(run, *EVERY_STEP, "trainer.max_steps=5", "checkpoint.keep_last=3")).fit()
    assert _steps(folder) == {"last.ckpt": 5, "last-1.ckpt": 4, "last-2.ckpt": 3}

    # a truncated newest file (a crash of the disk, not of our write) and a stale temporary
    newest = folder / "last.ckpt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    stale = folder / ".last.ckpt.abcd1234.tmp"
    stale.write_bytes(b"half a checkpoint")
    with caplog.at_level(logging.WARNING):
        resumed = Trainer(
            tiny(run, *EVERY_STEP, "trainer.max_steps=6", "checkpoint.keep_last=3")
        ).fit()
    warning = next(r.getMessage() for r in caplog.records if "instead" in r.getMessage())
    assert f"cannot read checkpoint {newest}" in warning
    assert f"resuming from the older {folder / 'last-1.ckpt'} instead" in warning
    assert resumed.progress.step == 6 and not stale.exists()
    assert _steps(folder) == {"last.ckpt": 6, "last-1.ckpt": 5, "last-2.ckpt": 4}
    assert (folder / "last.ckpt.unreadable").is_file()  # set aside, not rotated along

    # resuming from the step-4 checkpoint reproduced the uninterrupted run bit for bit
    straight = tmp_path / "straight"
    Trainer(tiny(straight, *EVERY_STEP, "trainer.max_steps=6")).fit()
    a = load_checkpoint(straight / "checkpoints" / "last.ckpt")["model"]
    b = load_checkpoint(newest)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_no_readable_checkpoint_is_one_error(
    tiny: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    Trainer(tiny(run, *EVERY_STEP, "trainer.max_steps=2", "checkpoint.keep_last=2")).fit()
    for path in (run / "checkpoints").glob("last*.ckpt"):
        path.write_bytes(b"\0" * 100)
    with pytest.raises(CheckpointError, match=r"no readable checkpoint in .*checkpoints"):
        Trainer(tiny(run, *EVERY_STEP, "trainer.max_steps=3")).fit()


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_file_that_is_not_a_checkpoint_is_never_loaded_unsafely(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"format": checkpointing.CHECKPOINT_FORMAT, "x": _Evil(marker)}, evil)
    raw = tmp_path / "raw.ckpt"
    raw.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(os.urandom(2048))
    for path in (evil, raw, noise):
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(path)
        message = str(caught.value)
        assert f"cannot read checkpoint {path}" in message
        assert "weights_only=False" not in message and "Please" not in message, message
    assert not marker.exists()


def _failing_save(error: BaseException) -> Callable[..., None]:
    def save(*args: Any, **kwargs: Any) -> None:
        raise error

    return save


def _enospc() -> RuntimeError:
    """What torch raises for a full disk: the ENOSPC hidden in the chained exception."""
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as cause:
        try:
            raise RuntimeError(
                "[enforce fail at inline_container.cc:672] . unexpected pos"
            ) from cause
        except RuntimeError as exc:
            return exc


@pytest.mark.parametrize(
    ("where", "error", "reason"),
    [
        ("torch.save", _enospc(), "No space left on device (ENOSPC)"),
        ("mkstemp", OSError(errno.EROFS, "Read-only file system"), "Read-only file system (EROFS)"),
    ],
)
def test_a_full_or_read_only_disk_stops_with_one_line(
    where: str,
    error: BaseException,
    reason: str,
    tiny_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(tiny_config()))
    base = [str(config), f"logging.run_dir={run}", *EVERY_STEP, "logging.progress_bar=false"]
    assert cli_train.main([*base, "trainer.max_steps=2"]) == 0
    before = (run / "checkpoints" / "last.ckpt").read_bytes()
    capsys.readouterr()
    if where == "torch.save":
        monkeypatch.setattr(checkpointing.torch, "save", _failing_save(error))
    else:
        monkeypatch.setattr(checkpointing.tempfile, "mkstemp", _failing_save(error))
    assert cli_train.main([*base, "trainer.max_steps=4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith("loftr-train: error: cannot write checkpoint "), err
    assert f"last.ckpt: {reason}; the previous checkpoints in" in err[-1], err[-1]
    monkeypatch.undo()
    # the previous checkpoint is intact and loadable, and nothing half-written is left
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == before
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["progress"]["step"] == 2
    assert not list((run / "checkpoints").glob("*.tmp"))


def test_a_checkpoint_is_verified_before_it_replaces_the_last_one(tmp_path: Path) -> None:
    good = {
        "format": checkpointing.CHECKPOINT_FORMAT,
        "model": {"w": torch.ones(3)},
        "progress": {},
    }
    target = atomic_save(good, tmp_path / "last.ckpt")
    other = {**good, "model": {"w": torch.zeros(3)}}

    def verify(tmp: Path) -> None:  # a disk that returns other bytes than were written
        checkpointing.verify_checkpoint(tmp, other)

    with pytest.raises(CheckpointError, match="does not read back as written"):
        atomic_save(good, target, verify=verify)
    assert torch.equal(load_checkpoint(target)["model"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_non_finite_weights_are_refused_at_resume(
    tiny: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    Trainer(tiny(run, *EVERY_STEP, "trainer.max_steps=1")).fit()
    path = run / "checkpoints" / "last.ckpt"
    state = load_checkpoint(path)
    key = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][key].view(-1)[0] = float("nan")
    atomic_save(state, path)
    with pytest.raises(CheckpointError, match=rf"non-finite \(NaN or inf\) weights in {key}"):
        Trainer(tiny(run, *EVERY_STEP, "trainer.max_steps=2")).fit()


def test_metrics_lines_are_strict_json() -> None:
    line = json_record(Progress(epoch=1, step=7), 12.3456, {"auc@5": float("nan"), "prec": 0.5})

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    record = json.loads(line, parse_constant=refuse)
    assert record == {
        "epoch": 1, "step": 7, "time_s": 12.346, "auc@5": None, "prec": 0.5, "nonfinite": ["auc@5"]
    }  # fmt: skip
