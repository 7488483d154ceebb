"""The LoFTR training loop: plain ``torch.distributed`` DDP, one process or many (torchrun).

One iteration (spec section 5): coarse ground truth -> ``LoFTR.forward_train`` (through DDP) ->
fine ground truth -> loss -> all ranks agree the loss is finite -> backward -> unscale + clip the
global gradient norm -> optimiser step with the scheduled LR. A non-finite loss on ANY rank skips
the step on EVERY rank (a flag is all-reduced before backward, so replicas never diverge); a
non-finite gradient norm (identical on all ranks after DDP's all-reduce) skips it too. A batch
without ground truth still gives a zero loss that touches every parameter (``LoFTRLoss``), so no
rank waits forever in DDP's all-reduce.

Resumption is exact: a checkpoint stores the model, optimiser, gradient scaler, every rank's
sampler position and RNG states, and the loop position; the LR is a pure function of the
position (:mod:`loftr_train.schedule`) and loaders never touch the global RNG. A run killed at
any point and resumed from its last checkpoint reaches the same weights (on CPU, bit for bit) as
an uninterrupted run.

Test hooks (environment variables, used by the package's tests only):
``LOFTR_TRAIN_TEST_KILL_AFTER_STEP=k`` SIGKILLs the process after iteration ``k`` (after its
checkpoint); ``LOFTR_TRAIN_TEST_NAN_AT=step:rank`` makes that rank's loss NaN at that iteration;
``LOFTR_TRAIN_TEST_NO_GT_AT=step:rank`` moves that rank's homography batch so it has no ground
truth; ``LOFTR_TRAIN_TEST_DUMP_DIR=dir`` saves every rank's final state dict there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from loftr_core.errors import CheckpointError, ConfigError
from loftr_core.model import LoFTR
from loftr_data.errors import LoftrDataError
from loftr_train.checkpointing import (
    CHECKPOINT_FORMAT,
    atomic_save,
    capture_rng_state,
    find_resume_checkpoint,
    load_checkpoint,
    restore_rng_state,
)
from loftr_train.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_any,
    all_reduce_mean,
    barrier,
    broadcast_buffers,
    cleanup_distributed,
    init_distributed,
)
from loftr_train.losses import LoFTRLoss
from loftr_train.schedule import LRSchedule, scaled_lr_and_warmup
from loftr_train.train_config import TrainConfig
from loftr_train.training_data import (
    build_datasets,
    make_train_loader,
    make_train_sampler,
    make_val_loader,
)
from loftr_train.training_step import (
    TrainStepModule,
    hook_fires,
    predict_matches,
    seed_everything,
    supervised_step,
    to_device,
)
from loftr_train.validation import aggregate_records, pair_records

__all__ = ["Progress", "TrainResult", "Trainer"]

logger = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where the loop stands (stored in every checkpoint).

    Attributes:
        epoch: current epoch (0-based).
        batch_in_epoch: batches of ``epoch`` already trained.
        step: training iterations in total (skipped ones included).
        optimizer_steps: optimiser steps actually taken.
        skipped_steps: iterations skipped for a non-finite loss or gradient.
        epoch_done: ``epoch`` is finished (validated); resuming starts the next one.
    """

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    optimizer_steps: int = 0
    skipped_steps: int = 0
    epoch_done: bool = False


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns (rank 0's view; identical numbers on every rank)."""

    run_dir: Path
    progress: Progress
    last_loss: float | None
    monitor: str
    best_value: float | None
    best_epoch: int | None
    last_metrics: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0

    def summary(self) -> str:
        """The one-line final summary."""
        p = self.progress
        best = (
            "n/a" if self.best_value is None else f"{self.best_value:.4f} (epoch {self.best_epoch})"
        )
        loss = "n/a" if self.last_loss is None else f"{self.last_loss:.4f}"
        return (
            f"loftr-train finished: {p.epoch} epochs, {p.step} iterations, "
            f"{p.optimizer_steps} optimiser steps ({p.skipped_steps} skipped), last loss {loss}, "
            f"best {self.monitor} {best}, {self.wall_time_s:.1f} s; checkpoints in "
            f"{self.run_dir / 'checkpoints'}"
        )


class Trainer:
    """Train LoFTR from a :class:`TrainConfig`.

    Args:
        config: the resolved configuration.
        resume: a checkpoint to continue from; None = ``<run_dir>/checkpoints/last.ckpt`` when
            it exists and ``checkpoint.auto_resume`` is on, else a fresh start.

    Construction does nothing; :meth:`fit` sets up the process group, data, model and runs.
    """

    def __init__(self, config: TrainConfig, *, resume: str | Path | None = None) -> None:
        self.config = config
        self.resume = None if resume is None else Path(resume)

    # --------------------------------------------------------------------------------- public
    def fit(self) -> TrainResult:
        """Run the training; returns the :class:`TrainResult` (every rank)."""
        t = self.config.trainer
        ctx = init_distributed(t.device, t.dist_backend, t.dist_timeout_s)
        try:
            result = self._fit(ctx)
            # every rank past its last collective before any rank tears the group down (a gloo
            # peer that exits while another still closes its pairs can abort that process)
            barrier(ctx)
            return result
        finally:
            cleanup_distributed()

    # ---------------------------------------------------------------------------------- setup
    def _fit(self, ctx: DistContext) -> TrainResult:
        cfg = self.config
        t0 = self._t_start = time.perf_counter()
        if cfg.trainer.num_threads is not None:
            torch.set_num_threads(cfg.trainer.num_threads)
        self.ctx = ctx
        run_dir = Path(cfg.logging.run_dir)
        self.run_dir = run_dir
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)  # every rank writes logs
        if ctx.is_main:
            (run_dir / "config.yaml").write_text(cfg.to_yaml())
        model_cfg = cfg.model.build()
        seed_everything(cfg.trainer.seed)  # identical initial weights on every rank
        model = LoFTR(model_cfg)
        if ctx.distributed and cfg.trainer.sync_batchnorm:
            if ctx.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            elif ctx.is_main:
                logger.info("SyncBatchNorm needs CUDA: per-process BatchNorm statistics on CPU")
        model.to(ctx.device)
        self.model = model
        seed_everything(cfg.trainer.seed + ctx.rank)

        scenes, val = build_datasets(cfg.data)
        self.scenes, self.val = scenes, val
        self.sampler = make_train_sampler(scenes, cfg.sampler, ctx.rank, ctx.world_size)
        bs = cfg.data.batch_size
        self.batches_per_epoch = self.sampler.num_samples // bs
        if cfg.trainer.limit_train_batches is not None:
            self.batches_per_epoch = min(self.batches_per_epoch, cfg.trainer.limit_train_batches)
        if self.batches_per_epoch < 1:
            raise ConfigError(
                f"an epoch has {self.sampler.num_samples} samples per rank, fewer than "
                f"data.batch_size={bs}; raise sampler.n_samples_per_subset or lower the batch size"
            )
        true_bs = ctx.world_size * bs
        lr, warmup = scaled_lr_and_warmup(
            cfg.optim.canonical_lr, cfg.optim.canonical_bs, true_bs, cfg.schedule.warmup_step
        )
        self.schedule = LRSchedule(
            true_lr=lr,
            warmup_steps=warmup,
            warmup_ratio=cfg.schedule.warmup_ratio,
            warmup_type=cfg.schedule.warmup_type,
            milestones=tuple(cfg.schedule.milestones),
            gamma=cfg.schedule.gamma,
        )
        if cfg.optim.optimizer == "adamw":
            self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(
                model.parameters(), lr=lr, weight_decay=cfg.optim.adamw_decay
            )
        else:
            self.optimizer = torch.optim.Adam(
                model.parameters(), lr=lr, weight_decay=cfg.optim.adam_decay
            )
        precision = cfg.trainer.precision
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=precision == "fp16")
        step_module = TrainStepModule(model)
        self.raw_step = step_module
        self.step_module: nn.Module = step_module
        if ctx.distributed:
            self.step_module = DistributedDataParallel(
                step_module,
                device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=cfg.trainer.find_unused_parameters,
            )
        self.loss_fn = LoFTRLoss(cfg.loss, match_type=model_cfg.match_coarse.match_type)
        self.progress = Progress()
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.last_metrics: dict[str, float] = {}
        self.last_loss: float | None = None
        self._last_saved: tuple[int, int, int] | None = None

        resume = self.resume
        if resume is None and cfg.checkpoint.auto_resume:
            resume = find_resume_checkpoint(run_dir)
        if resume is not None:
            self._restore(load_checkpoint(resume, map_location="cpu"), resume)
        if ctx.is_main:
            logger.info(
                "training on %d process(es) x batch %d: lr %.3g, warm-up %d steps, %d batches/epoch",
                ctx.world_size,
                bs,
                lr,
                warmup,
                self.batches_per_epoch,
            )
        self.writer: Any = None
        if ctx.is_main and cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"))
        try:
            self._loop()
        finally:
            if self.writer is not None:
                self.writer.close()
        result = TrainResult(
            run_dir=run_dir,
            progress=dataclasses.replace(self.progress),
            last_loss=self.last_loss,
            monitor=cfg.checkpoint.monitor,
            best_value=self.best,
            best_epoch=self.best_epoch,
            last_metrics=dict(self.last_metrics),
            wall_time_s=time.perf_counter() - t0,
        )
        if ctx.is_main:
            logger.info(result.summary())
        return result

    # ----------------------------------------------------------------------------------- loop
    def _elapsed(self) -> float:
        return time.perf_counter() - self._t_start

    def _out_of_time(self) -> bool:
        """Whether ``trainer.max_time_s`` is spent (rank 0 decides for every rank)."""
        limit = self.config.trainer.max_time_s
        if limit is None:
            return False
        spent = time.perf_counter() - self._t_start > limit if self.ctx.is_main else False
        return all_reduce_any(self.ctx, spent)

    def _should_stop(self) -> bool:
        max_steps = self.config.trainer.max_steps
        if max_steps is not None and self.progress.step >= max_steps:
            return True
        return self._out_of_time()

    def _loop(self) -> None:
        cfg, p = self.config, self.progress
        if p.epoch_done:
            p.epoch, p.batch_in_epoch, p.epoch_done = p.epoch + 1, 0, False
        while p.epoch < cfg.trainer.max_epochs:
            if self._should_stop():
                break
            self._train_epoch()
            if p.batch_in_epoch < self.batches_per_epoch:
                break  # stopped by max_steps or max_time_s
            self._end_epoch()
            p.epoch, p.batch_in_epoch, p.epoch_done = p.epoch + 1, 0, False
        broadcast_buffers(self.ctx, self.model)
        if self._last_saved != self._position():
            self._save(best=False)
        dump = os.environ.get("LOFTR_TRAIN_TEST_DUMP_DIR")
        if dump:  # test hook: every rank's final state, to compare replicas
            Path(dump).mkdir(parents=True, exist_ok=True)
            torch.save(self.model.state_dict(), Path(dump) / f"rank{self.ctx.rank}.pt")

    def _train_epoch(self) -> None:
        cfg, p, ctx = self.config, self.progress, self.ctx
        if p.batch_in_epoch >= self.batches_per_epoch:
            return
        self.sampler.set_epoch(p.epoch)
        if p.batch_in_epoch > 0:
            self.sampler.load_state_dict(
                {"epoch": p.epoch, "consumed": p.batch_in_epoch * cfg.data.batch_size}
            )
        loader = make_train_loader(
            self.scenes,
            self.sampler,
            cfg.data,
            seed=cfg.trainer.seed * 100003 + p.epoch,
            pin_memory=cfg.data.pin_memory and ctx.device.type == "cuda",
        )
        self.step_module.train()
        self.loss_fn.train()
        bar = tqdm(
            total=self.batches_per_epoch,
            initial=p.batch_in_epoch,
            desc=f"epoch {p.epoch}",
            disable=not (ctx.is_main and cfg.logging.progress_bar),
            dynamic_ncols=True,
        )
        kill_after = os.environ.get("LOFTR_TRAIN_TEST_KILL_AFTER_STEP")
        try:
            it = iter(loader)
            while p.batch_in_epoch < self.batches_per_epoch:
                if self._should_stop():
                    break
                t_start = time.perf_counter()
                batch = next(it)
                scalars = self._train_step(batch)
                p.step += 1
                p.batch_in_epoch += 1
                if cfg.logging.log_sample_ids:
                    self._log_samples(batch)
                if p.step % cfg.logging.log_every_n_steps == 0:
                    self._log_scalars(scalars)
                rate = (
                    cfg.data.batch_size * ctx.world_size / max(time.perf_counter() - t_start, 1e-9)
                )
                if scalars is not None:
                    bar.set_postfix(
                        loss=f"{scalars['loss']:.4f}",
                        lr=f"{scalars['lr']:.2e}",
                        pairs_s=f"{rate:.1f}",
                    )
                bar.update(1)
                every = cfg.checkpoint.every_n_steps
                if every is not None and p.step % every == 0:
                    self._save(best=False)
                if kill_after and p.step == int(kill_after):
                    os.kill(os.getpid(), signal.SIGKILL)
        finally:
            bar.close()

    def _train_step(self, batch: Mapping[str, Any]) -> dict[str, float] | None:
        cfg, ctx, p = self.config, self.ctx, self.progress
        data = to_device(batch, ctx.device)
        step_no = p.step + 1
        if hook_fires("LOFTR_TRAIN_TEST_NO_GT_AT", step_no, ctx.rank) and "H_0to1" in data:
            far = torch.eye(3, device=ctx.device, dtype=data["H_0to1"].dtype)
            far[0, 2] = 1e5
            data["H_0to1"] = far.expand_as(data["H_0to1"]).contiguous()
        step = supervised_step(self.step_module, self.model, self.loss_fn, data, self.amp_dtype)
        loss_out, num_gt = step.loss, step.num_gt
        loss = loss_out.loss
        if hook_fires("LOFTR_TRAIN_TEST_NAN_AT", step_no, ctx.rank):
            loss = loss * float("nan")
        bad_here = not bool(torch.isfinite(loss.detach()).item())
        if bad_here:
            logger.warning(
                "rank %d: non-finite loss %s at iteration %d (pairs %s)",
                ctx.rank,
                float(loss.detach()),
                step_no,
                batch.get("pair_names"),
            )
        if all_reduce_any(ctx, bad_here):
            if ctx.is_main:
                logger.warning("iteration %d skipped on all ranks: non-finite loss", step_no)
            self.optimizer.zero_grad(set_to_none=True)
            p.skipped_steps += 1
            return None
        lr = self.schedule.apply(self.optimizer, p.step, p.epoch)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip = cfg.optim.gradient_clipping
        gnorm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), clip if clip > 0 else math.inf
        )
        finite_grad = bool(torch.isfinite(gnorm).item())
        if finite_grad or self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # the scaler itself skips non-finite fp16 steps
            self.scaler.update()
            p.optimizer_steps += 1
        else:  # identical on every rank: gradients were all-reduced by DDP
            if ctx.is_main:
                logger.warning("iteration %d skipped on all ranks: non-finite gradient", step_no)
            p.skipped_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        scalars = loss_out.scalars()
        scalars.update(lr=lr, grad_norm=float(gnorm), num_gt=float(num_gt))
        self.last_loss = scalars["loss"]
        return scalars

    # ------------------------------------------------------------------------- epoch end, eval
    def _end_epoch(self) -> None:
        cfg, p = self.config, self.progress
        broadcast_buffers(self.ctx, self.model)
        every_val = cfg.trainer.val_every_n_epochs
        improved = False
        if self.val is not None and every_val and (p.epoch + 1) % every_val == 0:
            metrics = self._validate()
            self.last_metrics = metrics
            value = metrics.get(cfg.checkpoint.monitor)
            if (
                value is not None
                and math.isfinite(value)
                and (self.best is None or value > self.best)
            ):
                self.best, self.best_epoch, improved = value, p.epoch, True
            if self.ctx.is_main:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                logger.info("epoch %d validation: %s", p.epoch, shown)
                record = {"epoch": p.epoch, "step": p.step, "time_s": self._elapsed(), **metrics}
                with (self.run_dir / "metrics.jsonl").open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
                if self.writer is not None:
                    for k, v in metrics.items():
                        group = "val" if k.startswith("loss") else "metrics"
                        self.writer.add_scalar(f"{group}/{k}", v, p.step)
        p.epoch_done = True
        every = cfg.checkpoint.every_n_epochs
        due = every is not None and (p.epoch + 1) % every == 0
        if due or (improved and cfg.checkpoint.save_best):
            self._save(best=improved and cfg.checkpoint.save_best, write_last=due)

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        cfg, ctx = self.config, self.ctx
        if self.val is None:
            return {}
        loader = make_val_loader(self.val, cfg.data, ctx.rank, ctx.world_size, pin_memory=False)
        self.model.eval()
        self.loss_fn.eval()
        records: list[dict[str, Any]] = []
        sums = torch.zeros(4, dtype=torch.float64)  # loss, loss_c, loss_f, count
        for batch in loader:
            data = to_device(batch, ctx.device)
            # no DDP here: ranks may hold different numbers of validation batches
            if cfg.trainer.val_loss:
                step = supervised_step(
                    self.raw_step, self.model, self.loss_fn, data, self.amp_dtype
                )
                s = step.loss.scalars()
                sums += torch.tensor(
                    [s["loss"], s["loss_c"], s["loss_f"], 1.0], dtype=torch.float64
                )
            records.extend(pair_records(batch, predict_matches(self.model, data, self.amp_dtype)))
        self.model.train()
        self.loss_fn.train()
        gathered = all_gather_objects(ctx, (records, sums.tolist()))
        all_records = [r for recs, _ in gathered for r in recs]
        total = np.sum([s for _, s in gathered], axis=0)
        metrics = aggregate_records(all_records)
        if total[3] > 0:
            metrics.update(
                loss=float(total[0] / total[3]),
                loss_c=float(total[1] / total[3]),
                loss_f=float(total[2] / total[3]),
            )
        return metrics

    # ------------------------------------------------------------------------------- logging
    def _log_scalars(self, scalars: dict[str, float] | None) -> None:
        ctx = self.ctx
        keys = ("loss", "loss_c", "loss_f")
        local = torch.tensor(
            [scalars[k] for k in keys] if scalars is not None else [math.nan] * 3,
            dtype=torch.float64,
        )
        mean = all_reduce_mean(ctx, local)
        if self.writer is None:
            return
        step = self.progress.step
        for k, v in zip(keys, mean.tolist(), strict=True):
            if math.isfinite(v):
                self.writer.add_scalar(f"train/{k}", v, step)
        if scalars is not None:
            self.writer.add_scalar("train/lr", scalars["lr"], step)
            self.writer.add_scalar("train/grad_norm", scalars["grad_norm"], step)
        self.writer.add_scalar("train/skipped_steps", self.progress.skipped_steps, step)

    def _log_samples(self, batch: Mapping[str, Any]) -> None:
        ids = [f"{s}:{int(i)}" for s, i in zip(batch["scene_id"], batch["pair_id"], strict=True)]
        p = self.progress
        path = self.run_dir / f"samples_rank{self.ctx.rank}.txt"
        with path.open("a") as fh:
            fh.write(f"{p.step} {p.epoch} {' '.join(ids)}\n")

    # ---------------------------------------------------------------------------- checkpoints
    def _position(self) -> tuple[int, int, int]:
        """(step, epoch, batch) with a finished epoch counted as the start of the next one."""
        p = self.progress
        if p.epoch_done:
            return (p.step, p.epoch + 1, 0)
        return (p.step, p.epoch, p.batch_in_epoch)

    def _save(self, *, best: bool, write_last: bool = True) -> None:
        """Gather every rank's RNG and sampler state; rank 0 writes ``last`` (and ``best``)."""
        ctx, p, cfg = self.ctx, self.progress, self.config
        # the sampler's identity fields, with OUR exact position (workers may prefetch ahead)
        sampler_state = self.sampler.state_dict()
        sampler_state["epoch"] = p.epoch
        sampler_state["consumed"] = min(
            p.batch_in_epoch * cfg.data.batch_size, self.sampler.num_samples
        )
        local = {"rng": capture_rng_state(), "sampler": sampler_state}
        gathered = all_gather_objects(ctx, local)
        if write_last:
            self._last_saved = self._position()
        if not ctx.is_main:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "model_config": self.model.config.to_dict(),
            "train_config": cfg.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "sampler": [g["sampler"] for g in gathered],
            "rng": [g["rng"] for g in gathered],
            "world_size": ctx.world_size,
            "progress": dataclasses.asdict(p),
            "best": {
                "monitor": cfg.checkpoint.monitor,
                "value": self.best,
                "epoch": self.best_epoch,
            },
        }
        folder = self.run_dir / "checkpoints"
        if write_last:
            atomic_save(state, folder / "last.ckpt")
        if best:
            atomic_save(state, folder / "best.ckpt")
        logger.debug("checkpoint at iteration %d (best=%s)", p.step, best)

    def _restore(self, state: Mapping[str, Any], path: Path) -> None:
        ctx = self.ctx
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler") and self.scaler.is_enabled():
                self.scaler.load_state_dict(state["scaler"])
            self.progress = Progress(**state["progress"])
            best = state.get("best") or {}
            self.best, self.best_epoch = best.get("value"), best.get("epoch")
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"cannot resume from {path}: {exc}; was it written by another model config? "
                "Start a fresh run folder or fix the config to match the checkpoint"
            ) from exc
        p = self.progress
        saved_world = int(state.get("world_size", 1))
        if saved_world != ctx.world_size:
            if p.batch_in_epoch not in (0, self.batches_per_epoch) and not p.epoch_done:
                raise CheckpointError(
                    f"{path} was saved mid-epoch by {saved_world} process(es) but this run has "
                    f"{ctx.world_size}; resume with the same world size, or from an epoch-end "
                    "checkpoint"
                )
            logger.warning(
                "resuming with world size %d (checkpoint: %d): RNG streams restart",
                ctx.world_size,
                saved_world,
            )
        else:
            restore_rng_state(state["rng"][ctx.rank])
            try:  # checks that seed, scenes and samples per scene did not change
                self.sampler.load_state_dict(state["sampler"][ctx.rank])
            except (LoftrDataError, KeyError, IndexError) as exc:
                raise CheckpointError(
                    f"cannot resume from {path}: the training sampler differs from the "
                    f"checkpoint's ({exc}); keep data and sampler settings when resuming"
                ) from exc
        if ctx.is_main:
            logger.info(
                "resumed from %s at epoch %d, iteration %d (%d optimiser steps)",
                path,
                p.epoch,
                p.step,
                p.optimizer_steps,
            )
