"""Evaluate a matcher on MegaDepth-format pairs: pose AUC, epipolar precision, match counts.

The protocol is the original ``test.py`` (spec §6, §9): batch size 1, images resized by the
dataset (840 px and padded to a square for MegaDepth-1500) with coarse padding masks, the model's
matches expressed in ORIGINAL-image pixels (``scale0``/``scale1`` passed to the model), the
original-resolution intrinsics ``diag(scale) @ K`` (the dataset's ``K`` is for the resized image),
the relative pose by RANSAC on the essential matrix (0.5 px, confidence 0.99999) and the AUC of
``max(R_err, t_err)`` at 5/10/20 degrees over pairs deduplicated by ``name0#name1``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from loftr_core.api.geometry import DEFAULT_THRESHOLD_PX, check_estimator
from loftr_data import collate
from loftr_train.errors import EvaluationError
from loftr_train.metrics import EPI_ERR_THR, RANSAC_CONF, PairMetrics
from loftr_train.scoring import ScoringProtocol, match_batch, score_batch, summarize

__all__ = ["EvaluationResult", "evaluate", "format_table", "write_pair_results"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationResult:
    """Per-pair metrics and the dataset summary.

    Attributes:
        pairs: one :class:`~loftr_train.metrics.PairMetrics` per evaluated pair, in order.
        summary: :func:`~loftr_train.scoring.summarize` of ``pairs`` (``auc@5``, ``auc@10``,
            ``auc@20``, ``prec@5e-04``, ``num_pairs``, ``mean_matches``, ``mean_inliers``); AUC
            and precision are fractions.
        scene_ids: scene of each pair (same order as ``pairs``).
        pair_ids: index of each pair in its scene-info file.
        pose: how poses were estimated: ``estimator``, ``ransac_pixel_thr``, ``ransac_conf``,
            ``seed`` (written into every per-pair line).
    """

    pairs: list[PairMetrics]
    summary: dict[str, float]
    scene_ids: list[str]
    pair_ids: list[int]
    pose: dict[str, Any] = field(default_factory=dict)


_REQUIRED = ("K0", "K1", "T_0to1", "scale0", "scale1", "pair_names")


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: Iterable[Mapping[str, Any]],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    max_pairs: int | None = None,
    progress: bool = True,
    epi_err_thr: float = EPI_ERR_THR,
    ransac_pixel_thr: float | None = None,
    ransac_conf: float = RANSAC_CONF,
    thresholds: Sequence[float] = (5, 10, 20),
    estimator: str = "opencv",
    seed: int | None = 0,
) -> EvaluationResult:
    """Run ``model`` on every pair of ``dataset`` and compute LoFTR's test metrics.

    Each pair goes through the evaluation core of :mod:`loftr_train.scoring` (the one the
    trainer's validation uses): :func:`~loftr_train.scoring.match_batch` ->
    :func:`~loftr_train.scoring.score_batch` -> :func:`~loftr_train.scoring.summarize`.

    Args:
        model: a matcher with LoFTR's inference contract: ``model(data)`` with ``image0``,
            ``image1`` ``(1, 1, H, W)``, optional ``mask0``/``mask1``/``scale0``/``scale1``,
            returning ``keypoints0``/``keypoints1`` ``(M, 2)`` in original-image pixels when
            the scales are given. Put in eval mode by the caller (``load_model`` does).
        dataset: unbatched MegaDepth-format samples (``loftr_data.MegaDepthDataset`` or
            ``loftr_data.megadepth1500``): they need ``K0``, ``K1``, ``T_0to1``, ``scale0``,
            ``scale1`` and ``pair_names``; depth is not needed.
        device: where the model runs.
        dtype: autocast dtype (``torch.bfloat16`` / ``torch.float16``), None for fp32.
        max_pairs: evaluate only the first ``max_pairs`` pairs.
        progress: show a tqdm progress bar (stderr).
        epi_err_thr: epipolar precision threshold.
        ransac_pixel_thr: RANSAC threshold in original pixels (None: the estimator's default,
            0.5 for opencv as the paper, 1.0 for poselib).
        ransac_conf: RANSAC confidence.
        thresholds: AUC thresholds in degrees.
        estimator: relative pose estimator: ``"opencv"`` (RANSAC at 0.5 px, the paper's
            protocol) or ``"poselib"`` (LO-RANSAC, as glue-factory; give its threshold, e.g.
            1.0 px, in ``ransac_pixel_thr``).
        seed: PoseLib's RANSAC seed for every pair (None: its default; OpenCV's RANSAC
            always seeds itself with a fixed value).

    Returns:
        The :class:`EvaluationResult`.

    Raises:
        EvaluationError: a sample lacks the keys needed, or the model output lacks keypoints.
    """
    check_estimator(estimator)
    if ransac_pixel_thr is None:
        ransac_pixel_thr = DEFAULT_THRESHOLD_PX[estimator]
    protocol = ScoringProtocol(
        epi_err_thr=epi_err_thr,
        ransac_pixel_thr=ransac_pixel_thr,
        ransac_conf=ransac_conf,
        estimator=check_estimator(estimator),
        seed=seed,
        auc_thresholds=tuple(thresholds),
    )
    total: int | None = None
    if isinstance(dataset, Sized):
        total = len(dataset)
        if max_pairs is not None:
            total = min(total, max_pairs)
    pairs: list[PairMetrics] = []
    scene_ids: list[str] = []
    pair_ids: list[int] = []
    bar = tqdm(total=total, desc="loftr-eval", unit="pair", disable=not progress, leave=False)
    try:
        for index, sample in enumerate(dataset):
            if max_pairs is not None and index >= max_pairs:
                break
            missing = [k for k in _REQUIRED if k not in sample]
            if missing:
                raise EvaluationError(
                    f"pair {index} lacks {missing} (it has {sorted(sample)}); evaluation needs "
                    "MegaDepth-format samples with intrinsics, relative pose and scales"
                )
            batch = collate([sample])
            matches = match_batch(model, batch, device=device, amp_dtype=dtype)
            (metrics,) = score_batch(batch, matches, protocol)
            if not isinstance(metrics, PairMetrics):  # pragma: no cover - keys checked above
                raise EvaluationError(f"pair {index} was not scored as a pose pair")
            pairs.append(metrics)
            scene_ids.append(str(sample.get("scene_id", "")))
            pair_ids.append(int(sample.get("pair_id", index)))
            bar.update(1)
            bar.set_postfix(matches=metrics.num_matches)
    finally:
        bar.close()
    summary = summarize(pairs, protocol)
    pose = {
        "estimator": protocol.estimator,
        "ransac_pixel_thr": protocol.ransac_pixel_thr,
        "ransac_conf": protocol.ransac_conf,
        "seed": protocol.seed,
    }
    return EvaluationResult(pairs, summary, scene_ids, pair_ids, pose)


def write_pair_results(result: EvaluationResult, path: str | Path) -> Path:
    """Write one JSON object per pair (JSON Lines); infinite errors are written as ``null``.

    Each line has ``identifier``, ``scene_id``, ``pair_id``, ``num_matches``, ``precision``,
    ``R_err``, ``t_err``, ``pose_error`` (degrees), ``num_inliers`` and how the pose was
    estimated (``estimator``, ``ransac_pixel_thr``, ``ransac_conf``, ``seed``).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for pm, scene, pid in zip(result.pairs, result.scene_ids, result.pair_ids, strict=True):
            row = {"scene_id": scene, "pair_id": pid, **pm.to_json(), **result.pose}
            fh.write(json.dumps(row, sort_keys=True) + "\n")
    return out


def format_table(summary: Mapping[str, float]) -> str:
    """A plain-text table of the summary: AUC and precision in percent, counts as numbers."""
    rows: list[tuple[str, str]] = []
    for key, value in summary.items():
        if key.startswith(("auc@", "prec@")):
            rows.append((key, f"{100.0 * value:.2f}" if math.isfinite(value) else "nan"))
        elif key == "num_pairs":
            rows.append((key, f"{int(value)}"))
        else:
            rows.append((key, f"{value:.1f}"))
    width = max([len("metric")] + [len(k) for k, _ in rows])
    vwidth = max([len("value")] + [len(v) for _, v in rows])
    lines = [f"| {'metric'.ljust(width)} | {'value'.rjust(vwidth)} |"]
    lines.append(f"|{'-' * (width + 2)}|{'-' * (vwidth + 2)}|")
    lines += [f"| {k.ljust(width)} | {v.rjust(vwidth)} |" for k, v in rows]
    return "\n".join(lines)
