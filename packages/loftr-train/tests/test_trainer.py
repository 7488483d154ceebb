"""The training loop on a tiny synthetic config: resume after SIGKILL, skipped steps, faults."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
import yaml

from loftr_train.checkpointing import load_checkpoint
from loftr_train.schedule import LRSchedule, scaled_lr_and_warmup
from loftr_train.train_config import TrainConfig, load_config
from loftr_train.trainer import Trainer
from loftr_train.training_data import DataLoadError


@pytest.fixture
def tiny(tiny_config: Callable[..., dict[str, Any]]) -> Callable[..., TrainConfig]:
    """Factory: the tiny config (10 pairs once per epoch) writing its run to ``run_dir``."""

    def make(run_dir: Path, *overrides: str) -> TrainConfig:
        return load_config(tiny_config(), [f"logging.run_dir={run_dir}", *overrides])

    return make


def _cli(
    config: Path, run_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        full_env.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "loftr_train.cli_train", str(config), f"logging.run_dir={run_dir}"],
        capture_output=True,
        text=True,
        timeout=240,
        env=full_env,
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
    tmp_path: Path, tiny_config: Callable[..., dict[str, Any]]
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    full, killed = tmp_path / "full", tmp_path / "killed"

    ref = _cli(config, full)
    assert ref.returncode == 0, ref.stderr[-3000:]
    # killed right after iteration 7 (epoch 1, batch 2); the last checkpoint is iteration 6
    dead = _cli(config, killed, {"LOFTR_TRAIN_TEST_KILL_AFTER_STEP": "7"})
    assert dead.returncode == -9, dead.stderr[-3000:]
    assert load_checkpoint(killed / "checkpoints" / "last.ckpt")["progress"]["step"] == 6
    resumed = _cli(config, killed)  # resumes automatically from the run folder
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr

    a = load_checkpoint(full / "checkpoints" / "last.ckpt")
    b = load_checkpoint(killed / "checkpoints" / "last.ckpt")
    assert a["progress"] == b["progress"]
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


def test_fit_checkpoints_schedule_and_best(
    tmp_path: Path, tiny: Callable[..., TrainConfig]
) -> None:
    cfg = tiny(tmp_path / "run", "trainer.max_epochs=1", "checkpoint.every_n_steps=null")
    result = Trainer(cfg).fit()
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
    from loftr_train.training_data import build_datasets
    from loftr_train.training_step import predict_matches
    from loftr_train.validation import aggregate_records, pair_records

    model = LoFTR(cfg.model.build())
    model.load_state_dict(last["model"])
    model.eval()
    _, val = build_datasets(cfg.data)
    assert val is not None
    batch = collate([val[k] for k in range(len(val))])  # type: ignore[arg-type]
    out = model({k: batch[k] for k in ("image0", "image1")})
    expected = aggregate_records(pair_records(batch, predict_matches(model, batch)))
    assert result.last_metrics["mean_matches"] == pytest.approx(len(out["keypoints0"]) / 4)
    assert result.last_metrics["prec@3px"] == pytest.approx(expected["prec@3px"])


def test_nonfinite_loss_skips_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny: Callable[..., TrainConfig]
) -> None:
    monkeypatch.setenv("LOFTR_TRAIN_TEST_NAN_AT", "2")
    monkeypatch.setenv("LOFTR_TRAIN_TEST_NO_GT_AT", "3")  # a batch without ground truth trains on
    cfg = tiny(tmp_path / "run", "trainer.max_steps=4", "trainer.val_every_n_epochs=0")
    result = Trainer(cfg).fit()
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


def test_validation_records_on_the_real_megadepth_pair(shared_data: Path) -> None:
    """Ground-truth matches of the real pair, scored like predictions, give a near-exact pose."""
    from loftr_data import MegaDepthDataset, collate
    from loftr_train.coarse_supervision import coarse_grid, compute_coarse_supervision
    from loftr_train.validation import aggregate_records, pair_records

    root = shared_data / "megadepth_sample"
    batch = collate([MegaDepthDataset(root, root / "sample.npz", pair_ids=[0], img_resize=640)[0]])
    sup = compute_coarse_supervision(batch)
    b, i = sup.spv_b_ids, sup.spv_i_ids
    grid0 = coarse_grid(*sup.hw0_c).float() * 8 * batch["scale0"][0]  # original pixels
    outputs = {"m_bids": b, "mkpts0_f": grid0[i], "mkpts1_f": sup.spv_w_pt0_i[b, i]}
    (rec,) = pair_records(batch, outputs)
    assert rec["num_matches"] == sup.num_matches > 300
    assert rec["pose_error"] < 1.0  # degrees
    assert rec["precision"] > 0.95
    agg = aggregate_records([rec, dict(rec)])  # duplicates count once
    assert agg["num_pairs"] == 1
    assert agg["auc@10"] > 0.9


def test_validation_records_homography() -> None:
    from loftr_train.validation import aggregate_records, pair_records

    H = torch.tensor([[1.0, 0.0, 5.0], [0.0, 1.0, -2.0], [0.0, 0.0, 1.0]])
    k0 = torch.tensor([[10.0, 10.0], [20.0, 30.0], [40.0, 8.0], [1.0, 1.0]])
    k1 = (
        k0
        + torch.tensor([5.0, -2.0])
        + torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.5], [4.0, 0.0]])
    )
    batch = {
        "image0": torch.zeros(2, 1, 64, 64),
        "H_0to1": torch.stack([H, H]),
        "scene_id": ["s", "s"],
        "pair_id": torch.tensor([0, 1]),
    }
    outputs = {"m_bids": torch.zeros(4, dtype=torch.long), "mkpts0_f": k0, "mkpts1_f": k1}
    recs = pair_records(batch, outputs)
    assert recs[0]["errors"] == pytest.approx([0.0, 2.0, 2.5, 4.0])
    assert recs[1]["errors"] == []  # a pair without matches
    agg = aggregate_records(recs)
    assert agg["prec@3px"] == pytest.approx((3 / 4 + 0.0) / 2)
    assert agg["prec@1px"] == pytest.approx((1 / 4) / 2)
    assert agg["mean_matches"] == pytest.approx(2.0)


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
