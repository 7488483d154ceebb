"""The trainer's validation pass, on the evaluation core that ``loftr-eval`` uses.

Each rank validates its share of the held-out pairs (``rank::world_size``) through
:func:`loftr_train.scoring.match_batch` (the inference path, as the original's eval mode: no
ground-truth padding, no cap at the fine-level budget) and :func:`loftr_train.scoring.score_batch`;
rank results are gathered and summarised by :func:`loftr_train.scoring.summarize`, so the
numbers are computed exactly as :func:`loftr_train.evaluation.evaluate` computes them. With
``trainer.val_loss`` a second, training-path forward per batch adds ``loss``, ``loss_c`` and
``loss_f`` (means over batches of every rank).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from loftr_train.distributed import DistContext, all_gather_objects
from loftr_train.metrics import PairMetrics
from loftr_train.scoring import PairResult, ScoringProtocol, match_batch, score_batch, summarize
from loftr_train.train_config import TrainConfig
from loftr_train.trainer.components import TrainComponents
from loftr_train.training_data import make_val_loader
from loftr_train.training_step import supervised_step, to_device

__all__ = ["Validator"]


def _slim(result: PairResult) -> PairResult:
    """Drop per-match epipolar errors before gathering (the summary does not read them)."""
    if isinstance(result, PairMetrics):
        return dataclasses.replace(result, epi_errs=np.zeros(0))
    return result


class Validator:
    """Validate the model of a run on its held-out dataset.

    Args:
        config: the run's configuration (``data`` loader settings, ``trainer.val_loss``).
        ctx: this process's distributed context.
        parts: the model, training-path module, loss and autocast dtype.
        val: the validation dataset (None = nothing to validate).
        protocol: metric thresholds (None = the original test protocol).
    """

    def __init__(
        self,
        config: TrainConfig,
        ctx: DistContext,
        parts: TrainComponents,
        val: Dataset[dict[str, Any]] | None,
        protocol: ScoringProtocol | None = None,
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.parts = parts
        self.val = val
        self.protocol = protocol if protocol is not None else ScoringProtocol()

    @torch.no_grad()
    def run(self) -> dict[str, float]:
        """Metrics of the current weights (identical on every rank; a collective).

        Returns:
            :func:`~loftr_train.scoring.summarize` of every rank's pairs, plus ``loss``,
            ``loss_c`` and ``loss_f`` with ``trainer.val_loss``; empty without a dataset.
        """
        cfg, ctx, parts = self.config, self.ctx, self.parts
        if self.val is None:
            return {}
        loader = make_val_loader(self.val, cfg.data, ctx.rank, ctx.world_size, pin_memory=False)
        parts.model.eval()
        parts.loss_fn.eval()
        results: list[PairResult] = []
        sums = torch.zeros(4, dtype=torch.float64)  # loss, loss_c, loss_f, count
        try:
            for batch in loader:
                data = to_device(batch, ctx.device)
                # no DDP here: ranks may hold different numbers of validation batches
                if cfg.trainer.val_loss:
                    step = supervised_step(
                        parts.raw_step, parts.model, parts.loss_fn, data, parts.amp_dtype
                    )
                    s = step.loss.scalars()
                    sums += torch.tensor(
                        [s["loss"], s["loss_c"], s["loss_f"], 1.0], dtype=torch.float64
                    )
                matches = match_batch(parts.model, data, amp_dtype=parts.amp_dtype)
                results.extend(_slim(r) for r in score_batch(batch, matches, self.protocol))
        finally:
            parts.model.train()
            parts.loss_fn.train()
        gathered = all_gather_objects(ctx, (results, sums.tolist()))
        metrics = summarize([r for recs, _ in gathered for r in recs], self.protocol)
        total = np.sum([s for _, s in gathered], axis=0)
        if total[3] > 0:
            metrics.update(
                loss=float(total[0] / total[3]),
                loss_c=float(total[1] / total[3]),
                loss_f=float(total[2] / total[3]),
            )
        return metrics
