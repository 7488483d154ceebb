"""The training loop on a tiny synthetic config: resume after SIGKILL, skipped steps, faults."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import pytest
import torch
import yaml

import loftr_train.trainer.components as trainer_components
from loftr_train.checkpointing import load_checkpoint
from loftr_train.schedule import LRSchedule, scaled_lr_and_warmup
from loftr_train.train_config import TrainConfig, load_config
from loftr_train.trainer import StepInfo, Trainer, TrainerCallbacks, TrainResult
from loftr_train.training_data import DataLoadError


@pytest.fixture
def tiny(tiny_config: Callable[..., dict[str, Any]]) -> Callable[..., TrainConfig]:
    """Factory: the tiny config (10 pairs once per epoch) writing its run to ``run_dir``."""

    def make(run_dir: Path, *overrides: str) -> TrainConfig:
        return load_config(tiny_config(), [f"logging.run_dir={run_dir}", *overrides])

    return make


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    return subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)


def _cli(config: Path, run_dir: Path) -> subprocess.CompletedProcess[str]:
    """``loftr-train CONFIG logging.run_dir=RUN_DIR`` in a fresh process."""
    return _run(
        [sys.executable, "-m", "loftr_train.cli_train", str(config), f"logging.run_dir={run_dir}"]
    )


def _samples(run_dir: Path, rank: int = 0) -> dict[int, tuple[int, list[str]]]:
    """step -> (epoch, sample ids); a step logged twice (redone after a kill) keeps the last."""
    out: dict[int, tuple[int, list[str]]] = {}
    for line in (run_dir / f"samples_rank{rank}.txt").read_text().splitlines():
        step, epoch, *ids = line.split()
        out[int(step)] = (int(epoch), ids)
    return out


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(
    tmp_path: Path, tiny_config: Callable[..., dict[str, Any]], fault_driver: Path
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    full, killed = tmp_path / "full", tmp_path / "killed"

    ref = _cli(config, full)
    assert ref.returncode == 0, ref.stderr[-3000:]
    # killed right after iteration 7 (epoch 1, batch 2); the last checkpoint is iteration 6
    killed_run = [str(fault_driver), str(config), f"logging.run_dir={killed}", "--kill-after", "7"]
    dead = _run([sys.executable, *killed_run])
    assert dead.returncode == -9, dead.stderr[-3000:]
    at_kill = load_checkpoint(killed / "checkpoints" / "last.ckpt")["progress"]
    assert at_kill["step"] == 6 and at_kill["time_s"] > 0
    resumed = _cli(config, killed)  # resumes automatically from the run folder
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr

    a = load_checkpoint(full / "checkpoints" / "last.ckpt")
    b = load_checkpoint(killed / "checkpoints" / "last.ckpt")
    # the same position; the run's wall time kept counting from the killed session's
    time_a, time_b = a["progress"].pop("time_s"), b["progress"].pop("time_s")
    assert a["progress"] == b["progress"] and time_b > at_kill["time_s"] and time_a > 0
    assert a["progress"]["step"] == 10 and a["progress"]["optimizer_steps"] == 10
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    # the same pairs, each once per epoch, in the same order
    sa_, sb_ = _samples(full), _samples(killed)
    assert sa_ == sb_
    for epoch in (0, 1):
        seen = [i for e, ids in sa_.values() if e == epoch for i in ids]
        assert sorted(seen) == sorted(f"procedural:{k}" for k in range(10))
    # the resolved config is in the run folder and in every checkpoint
    assert TrainConfig.from_dict(yaml.safe_load((full / "config.yaml").read_text())) == (
        TrainConfig.from_dict(a["train_config"])
    )


class _Recorder(TrainerCallbacks):
    """Records every hook call as a tuple."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_step_start(self, info: StepInfo) -> None:
        self.events.append(("start", info.step, info.epoch, info.batch_in_epoch))

    def on_batch(self, info: StepInfo, batch: dict[str, Any]) -> dict[str, Any]:
        self.events.append(("batch", info.step, batch["image0"].shape[0]))
        return batch

    def on_loss(self, info: StepInfo, loss: torch.Tensor) -> torch.Tensor:
        self.events.append(("loss", info.step, bool(torch.isfinite(loss))))
        return loss

    def on_step_end(self, info: StepInfo, scalars: Mapping[str, float] | None) -> None:
        self.events.append(("end", info.step, scalars is not None))

    def after_checkpoint(self, info: StepInfo, paths: tuple[Path, ...]) -> None:
        self.events.append(("checkpoint", info.step, tuple(p.name for p in paths)))

    def on_finish(self, info: StepInfo, model: torch.nn.Module, result: TrainResult) -> None:
        self.events.append(("finish", info.step, result.progress.step, type(model).__name__))


def test_fit_checkpoints_schedule_and_best(
    tmp_path: Path, tiny: Callable[..., TrainConfig]
) -> None:
    cfg = tiny(tmp_path / "run", "trainer.max_epochs=1", "checkpoint.every_n_steps=null")
    recorder = _Recorder()
    result = Trainer(cfg, callbacks=[recorder]).fit()
    # the hooks, in order: four per iteration, the epoch-end checkpoint, the end of training
    expected_events: list[tuple[Any, ...]] = []
    for step in range(1, 6):
        expected_events += [
            ("start", step, 0, step - 1),
            ("batch", step, 2),
            ("loss", step, True),
            ("end", step, True),
        ]
    expected_events += [("checkpoint", 5, ("last.ckpt", "best.ckpt")), ("finish", 5, 5, "LoFTR")]
    assert recorder.events == expected_events
    p = result.progress
    assert (p.step, p.optimizer_steps, p.skipped_steps, p.epoch) == (5, 5, 0, 1)
    assert result.last_loss is not None and np.isfinite(result.last_loss)
    assert "5 optimiser steps (0 skipped)" in result.summary()
    ckpt_dir = tmp_path / "run" / "checkpoints"
    last = torch.load(ckpt_dir / "last.ckpt", weights_only=True)  # no pickled code inside
    assert (ckpt_dir / "best.ckpt").is_file()
    assert last["train_config"] == cfg.to_dict()
    assert last["model_config"] == cfg.model.build().to_dict()
    assert len(last["rng"]) == 1 and last["progress"]["epoch_done"]
    # the LR of the last step follows the original schedule: scaled LR, warm-up from 10 %
    lr, warm = scaled_lr_and_warmup(0.064, 64, 2, 1)
    assert (lr, warm) == (pytest.approx(2e-3), 32)
    expected = LRSchedule(true_lr=lr, warmup_steps=warm, milestones=[1]).lr_at(4, 0)
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(expected)
    assert expected == pytest.approx(2e-4 + 4 / 32 * 1.8e-3)
    assert {"prec@3px", "loss", "num_pairs"} <= set(result.last_metrics)
    assert result.last_metrics["num_pairs"] == 4
    # validation scores the inference-path matches of the final weights (no fine-level cap)
    from loftr_core.model import LoFTR
    from loftr_data import collate
    from loftr_train.scoring import match_batch, score_batch, summarize
    from loftr_train.training_data import build_datasets

    model = LoFTR(cfg.model.build())
    model.load_state_dict(last["model"])
    model.eval()
    _, val = build_datasets(cfg.data)
    assert val is not None
    batch = collate([val[k] for k in range(len(val))])  # type: ignore[arg-type]
    out = model({k: batch[k] for k in ("image0", "image1")})
    expected = summarize(score_batch(batch, match_batch(model, batch)))
    assert result.last_metrics["mean_matches"] == pytest.approx(len(out["keypoints0"]) / 4)
    assert result.last_metrics["prec@3px"] == pytest.approx(expected["prec@3px"])


def test_nonfinite_loss_skips_the_step(
    tmp_path: Path, faults: ModuleType, tiny: Callable[..., TrainConfig]
) -> None:
    cfg = tiny(tmp_path / "run", "trainer.max_steps=4", "trainer.val_every_n_epochs=0")
    # a NaN loss at iteration 2; a batch without ground truth at iteration 3 trains on
    result = Trainer(cfg, callbacks=[faults.NanLossAt(2), faults.NoGroundTruthAt(3)]).fit()
    p = result.progress
    assert (p.step, p.optimizer_steps, p.skipped_steps) == (4, 3, 1)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    # Adam counted exactly the three real steps
    steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
    assert steps == {3.0}


def test_data_error_names_the_file(tmp_path: Path, tiny: Callable[..., TrainConfig]) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(
        str(photos / "good.png"), np.random.default_rng(0).integers(0, 255, (96, 96), np.uint8)
    )
    (photos / "broken.png").write_bytes(b"\x89PNG not really")
    cfg = tiny(tmp_path / "run", f"data.root={photos}", "trainer.val_every_n_epochs=0")
    with pytest.raises(DataLoadError, match=r"broken\.png"):
        Trainer(cfg).fit()


def test_explicit_resume_of_a_finished_run_adds_epochs(
    tmp_path: Path, tiny: Callable[..., TrainConfig]
) -> None:
    run = tmp_path / "run"
    Trainer(tiny(run, "trainer.max_epochs=1", "trainer.val_every_n_epochs=0")).fit()
    ckpt = run / "checkpoints" / "last.ckpt"
    cfg = tiny(tmp_path / "run2", "trainer.max_epochs=2", "trainer.val_every_n_epochs=0")
    result = Trainer(cfg, resume=ckpt).fit()
    assert (result.progress.epoch, result.progress.step) == (2, 10)
    seen = _samples(tmp_path / "run2")
    assert sorted(seen) == [6, 7, 8, 9, 10]  # only the second epoch was trained


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains_with_finite_loss(
    tmp_path: Path, precision: str, tiny: Callable[..., TrainConfig]
) -> None:
    cfg = tiny(
        tmp_path / "run",
        f"trainer.precision={precision}",
        "trainer.max_steps=2",
        "trainer.val_every_n_epochs=0",
    )
    result = Trainer(cfg).fit()
    assert result.progress.step == 2
    assert result.last_loss is not None and np.isfinite(result.last_loss)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert state["model"]["backbone.conv1.weight"].dtype == torch.float32  # master weights fp32
    assert bool(state["scaler"]) == (precision == "fp16")  # the gradient scaler only for fp16


class _Float64Steps(TrainerCallbacks):
    """Feeds the model float64 batches; records each step's losses and, after the step, how
    many graphs dynamo has compiled so far."""

    def __init__(self) -> None:
        self.losses: list[dict[str, float]] = []
        self.graphs: list[int] = []

    def on_batch(self, info: StepInfo, batch: dict[str, Any]) -> dict[str, Any]:
        return {
            k: v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
            for k, v in batch.items()
        }

    def on_step_end(self, info: StepInfo, scalars: Mapping[str, float] | None) -> None:
        from torch._dynamo.utils import counters

        assert scalars is not None
        self.losses.append({k: scalars[k] for k in ("loss", "loss_c", "loss_f")})
        self.graphs.append(int(counters["stats"]["unique_graphs"]))


@pytest.mark.slow
def test_compiled_training_gives_the_eager_losses(
    tmp_path: Path, tiny: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``trainer.execution.compile=true`` (``LoFTR.compile_stages``) trains the same model as
    eager: the
    same losses over 3 steps of the tiny synthetic run (within 1e-4), the same weights after
    them, and no recompilation after the first step (in training the fine stage sees the fixed
    budget of predictions and ground-truth pads; test_precision shows that a new match count at
    inference does not recompile either).

    Both runs are float64 (model and batches), so that only a real difference between the
    compiled graphs and eager (a lost BatchNorm update, a wrong gradient) can fail it. In float32
    eager and compiled are each ~5e-5 off the float64 backbone in training-mode BatchNorm, and
    that rounding is amplified, for eager just as for compiled: by the l2_with_std weights (1/std,
    std down to 1e-3 in an untrained model: float32 eager is 5e-4 off float64 eager in loss_f at
    step 1) and by Adam's first steps (about lr * sign(g), so gradients that are rounding noise
    still move weights: 0.05 apart at step 2).
    """
    build = trainer_components._build_model
    monkeypatch.setattr(trainer_components, "_build_model", lambda *a: build(*a).double())
    torch._dynamo.reset()
    runs: dict[bool, _Float64Steps] = {}
    weights: dict[bool, dict[str, torch.Tensor]] = {}
    for compiled in (False, True):
        run = tmp_path / f"run-{compiled}"
        flag = f"trainer.execution.compile={str(compiled).lower()}"
        cfg = tiny(run, "trainer.max_steps=3", "trainer.val_every_n_epochs=0", flag)
        runs[compiled] = _Float64Steps()
        Trainer(cfg, callbacks=[runs[compiled]]).fit()
        weights[compiled] = load_checkpoint(run / "checkpoints" / "last.ckpt")["model"]
    eager, compiled_run = runs[False], runs[True]
    assert len(eager.losses) == len(compiled_run.losses) == 3
    for step, (a, b) in enumerate(zip(eager.losses, compiled_run.losses, strict=True), 1):
        for name in a:
            assert abs(a[name] - b[name]) <= 1e-4, f"step {step} {name}: {a[name]} vs {b[name]}"
    assert weights[True].keys() == weights[False].keys()  # the checkpoint is the same model
    for key, value in weights[False].items():
        assert value.dtype == (torch.float64 if value.is_floating_point() else torch.long), key
        torch.testing.assert_close(weights[True][key], value, rtol=1e-7, atol=1e-9)
    assert compiled_run.graphs[0] > 0 and compiled_run.graphs[-1] == compiled_run.graphs[0]
    torch._dynamo.reset()


def test_megadepth_read_error_names_scene_pair_and_files(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch.utils.data import ConcatDataset

    import loftr_data.megadepth
    from loftr_data import MegaDepthDataset
    from loftr_train.training_data import NamedErrorDataset

    root = shared_data / "megadepth_sample"
    scene = MegaDepthDataset(root, root / "sample.npz", pair_ids=[0], img_resize=256)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("truncated file")

    monkeypatch.setattr(loftr_data.megadepth, "read_depth", broken)
    with pytest.raises(DataLoadError) as info:
        NamedErrorDataset(ConcatDataset([scene]), "training")[0]
    msg = str(info.value)
    assert "sample.npz, pair 0" in msg and "truncated file" in msg
    info_ = scene.scene_info
    i, j = (int(v) for v in info_.pair_indices[0])
    for rel in (
        info_.image_paths[i],
        info_.image_paths[j],
        info_.depth_paths[i],
        info_.depth_paths[j],
    ):
        assert str(root / str(rel)) in msg


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["32", "bf16", "fp16"])
def test_trains_on_one_gpu(
    tmp_path: Path, precision: str, tiny: Callable[..., TrainConfig]
) -> None:
    cfg = tiny(
        tmp_path / "run",
        "trainer.device=cuda",
        f"trainer.precision={precision}",
        "trainer.max_epochs=1",
    )
    result = Trainer(cfg).fit()
    assert result.progress.optimizer_steps + result.progress.skipped_steps == 5
    assert result.last_loss is not None and np.isfinite(result.last_loss)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert all(v.device.type == "cpu" for v in state["model"].values())
    assert "cuda" in state["rng"][0]
