"""The evaluation core: matching -> per-pair metrics -> dataset summary.

``loftr-eval`` (:func:`loftr_train.evaluation.evaluate`) and the trainer's validation
(:mod:`loftr_train.trainer.validation`) both go through these three functions, so a metric is
computed in one place:

1. :func:`match_batch` runs the model's inference path (``LoFTR.forward``: no ground-truth
   padding, no fine-level cap) on a batch and returns :class:`BatchMatches` in ORIGINAL-image
   pixels (the batch's ``scale0``/``scale1`` are passed to the model).
2. :func:`score_batch` scores each pair of the batch against its ground truth:

   * depth/pose pairs (MegaDepth: ``K0``, ``K1``, ``T_0to1``):
     :func:`loftr_train.metrics.pair_metrics` with the original-resolution intrinsics
     ``diag(scale) @ K`` in float64 (the dataset's ``K`` is for the resized image), giving the
     epipolar precision and the RANSAC pose error;
   * homography pairs (synthetic: ``H_0to1``): the reprojection error ``|H x0 - x1|`` of every
     match (:class:`HomographyPairMetrics`).

3. :func:`summarize` aggregates the pair results, deduplicated by identifier (the last one wins,
   as the original): ``auc@5/10/20`` and ``prec@5e-04`` (pose pairs), ``prec@1px``/``prec@3px``
   and ``mean_error_px`` (homography pairs), ``num_pairs``, ``mean_matches`` and, with pose pairs,
   ``mean_inliers``.

Pair results are small frozen dataclasses (picklable), so ranks can gather them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from loftr_train.errors import EvaluationError
from loftr_train.metrics import (
    EPI_ERR_THR,
    RANSAC_CONF,
    RANSAC_PIXEL_THR,
    PairMetrics,
    aggregate_metrics,
    pair_metrics,
)

__all__ = [
    "MODEL_INPUTS",
    "BatchMatches",
    "HomographyPairMetrics",
    "PairResult",
    "ScoringProtocol",
    "homography_errors",
    "match_batch",
    "original_intrinsics",
    "pair_identifier",
    "score_batch",
    "summarize",
]

#: Batch keys the model's inference path reads.
MODEL_INPUTS = ("image0", "image1", "mask0", "mask1", "scale0", "scale1")


@dataclass(frozen=True)
class ScoringProtocol:
    """Thresholds of the metrics (defaults: the original test protocol).

    Attributes:
        epi_err_thr: epipolar precision threshold (names the key, ``prec@5e-04``).
        ransac_pixel_thr: RANSAC threshold in original pixels.
        ransac_conf: RANSAC confidence.
        estimator: relative pose estimator, ``"opencv"`` (the paper's) or ``"poselib"``.
        seed: PoseLib's RANSAC seed (None: its default; OpenCV's is fixed internally).
        auc_thresholds: pose AUC thresholds in degrees.
        homography_thresholds_px: reprojection thresholds of ``prec@{t}px`` in pixels.
    """

    epi_err_thr: float = EPI_ERR_THR
    ransac_pixel_thr: float = RANSAC_PIXEL_THR
    ransac_conf: float = RANSAC_CONF
    estimator: str = "opencv"
    seed: int | None = None
    auc_thresholds: tuple[float, ...] = (5, 10, 20)
    homography_thresholds_px: tuple[float, ...] = (1.0, 3.0)


@dataclass(frozen=True)
class BatchMatches:
    """The predicted matches of a batch.

    Attributes:
        batch_indexes: ``(M,)`` int64, the pair of each match.
        keypoints0: ``(M, 2)`` float32 pixels of the ORIGINAL image 0.
        keypoints1: ``(M, 2)`` float32 pixels of the ORIGINAL image 1.
    """

    batch_indexes: Tensor
    keypoints0: Tensor
    keypoints1: Tensor

    def of_pair(self, b: int) -> tuple[Tensor, Tensor]:
        """The ``(M_b, 2)`` keypoints of pair ``b`` (on the CPU, float32)."""
        sel = self.batch_indexes.detach().cpu() == b
        k0 = self.keypoints0.detach().float().cpu()
        k1 = self.keypoints1.detach().float().cpu()
        return k0[sel], k1[sel]


@dataclass(frozen=True)
class HomographyPairMetrics:
    """Metrics of one homography pair.

    Attributes:
        identifier: deduplication key (see :func:`pair_identifier`).
        num_matches: number of matches.
        errors: ``(M,)`` float64 reprojection errors ``|H_0to1 x0 - x1|`` in pixels.
    """

    identifier: str
    num_matches: int
    errors: np.ndarray


#: What :func:`score_batch` gives per pair.
PairResult = PairMetrics | HomographyPairMetrics


@torch.no_grad()
def match_batch(
    model: torch.nn.Module,
    batch: Mapping[str, Any],
    *,
    device: str | torch.device | None = None,
    amp_dtype: torch.dtype | None = None,
) -> BatchMatches:
    """Run the model's inference path on the :data:`MODEL_INPUTS` of a collated batch.

    Args:
        model: a matcher with LoFTR's inference contract: ``model(data)`` returning
            ``keypoints0``/``keypoints1`` ``(M, 2)`` in original-image pixels when the scales are
            given, and ``batch_indexes`` ``(M,)`` (optional for a batch of one pair). Put in eval
            mode by the caller.
        batch: ``image0``/``image1`` ``(N, 1, H, W)`` float, optional ``mask0``/``mask1``
            ``(N, H/8, W/8)`` bool and ``scale0``/``scale1`` ``(N, 2)``.
        device: move the inputs there first (None = leave them where they are).
        amp_dtype: autocast dtype (``torch.bfloat16`` / ``torch.float16``) or None for fp32.

    Raises:
        EvaluationError: the model output lacks keypoints, or batch indexes for several pairs.
    """
    data = {k: batch[k] for k in MODEL_INPUTS if k in batch}
    if device is not None:
        data = {k: v.to(device) for k, v in data.items()}
    autocast: Any = contextlib.nullcontext()
    if amp_dtype is not None:
        autocast = torch.autocast(data["image0"].device.type, dtype=amp_dtype)
    with autocast:
        out = model(data)
    if "keypoints0" not in out or "keypoints1" not in out:
        raise EvaluationError(
            f"the model returned {sorted(out)}; expected keypoints0/keypoints1 (the "
            "loftr_core.model.LoFTR inference contract)"
        )
    k0, k1 = out["keypoints0"].float(), out["keypoints1"].float()
    bids = out.get("batch_indexes")
    if bids is None:
        if data["image0"].shape[0] != 1:
            raise EvaluationError(
                f"the model returned no batch_indexes for a batch of {data['image0'].shape[0]} "
                "pairs; return batch_indexes (M,) or evaluate one pair at a time"
            )
        bids = torch.zeros(k0.shape[0], dtype=torch.int64, device=k0.device)
    return BatchMatches(batch_indexes=bids, keypoints0=k0, keypoints1=k1)


def homography_errors(kpts0: Tensor, kpts1: Tensor, H_0to1: Tensor) -> Tensor:
    """Reprojection error ``|H x0 - x1|`` (pixels) of each match.

    Args:
        kpts0: ``(M, 2)`` float pixels in image 0.
        kpts1: ``(M, 2)`` float pixels in image 1.
        H_0to1: ``(3, 3)`` homography image 0 -> image 1 (same pixel frame as the keypoints).

    Returns:
        ``(M,)`` float64 errors.
    """
    p = torch.cat([kpts0.double(), kpts0.new_ones(kpts0.shape[0], 1).double()], dim=1)
    q = p @ H_0to1.double().T
    w = q[:, 2:].clamp_min(1e-12)
    return torch.linalg.vector_norm(q[:, :2] / w - kpts1.double(), dim=1)


def original_intrinsics(K: Tensor, scale: Tensor | None) -> np.ndarray:
    """``diag(scale_x, scale_y, 1) @ K`` in float64: the intrinsics of the original image.

    Args:
        K: ``(3, 3)`` intrinsics of the resized image.
        scale: ``(2,)`` ``(orig_w / resized_w, orig_h / resized_h)``, or None (not resized).
    """
    k = K.detach().cpu().double().numpy().reshape(3, 3)
    if scale is None:
        return k
    s = scale.detach().cpu().double().numpy().reshape(2)
    return np.diag([s[0], s[1], 1.0]) @ k


def pair_identifier(batch: Mapping[str, Any], b: int) -> str:
    """Deduplication key of pair ``b``: ``name0#name1`` from ``pair_names`` (the original's),
    else ``scene_id#pair_id``."""
    names = batch.get("pair_names")
    if names is not None:
        n0, n1 = names[b]
        return f"{n0}#{n1}"
    scene = batch["scene_id"][b] if "scene_id" in batch else "?"
    pid = batch["pair_id"][b] if "pair_id" in batch else b
    pid = int(pid.item()) if isinstance(pid, Tensor) else int(pid)
    return f"{scene}#{pid}"


def score_batch(
    batch: Mapping[str, Any],
    matches: BatchMatches,
    protocol: ScoringProtocol = ScoringProtocol(),
) -> list[PairResult]:
    """Score every pair of a collated batch against its ground truth.

    Args:
        batch: the collated batch: ``K0``/``K1`` ``(N, 3, 3)`` (resized images) and ``T_0to1``
            ``(N, 4, 4)``, or ``H_0to1`` ``(N, 3, 3)`` (returned-image pixels); optional
            ``scale0``/``scale1`` ``(N, 2)``, ``pair_names``, ``scene_id``, ``pair_id``.
        matches: the predicted matches (original pixels), e.g. from :func:`match_batch`.
        protocol: thresholds.

    Returns:
        One :class:`~loftr_train.metrics.PairMetrics` (pose pairs) or
        :class:`HomographyPairMetrics` per pair, in batch order.

    Raises:
        EvaluationError: the batch has neither pose nor homography ground truth.
    """
    is_pose = all(k in batch for k in ("K0", "K1", "T_0to1"))
    if not is_pose and "H_0to1" not in batch:
        raise EvaluationError(
            f"the batch has keys {sorted(batch)}; scoring needs K0/K1/T_0to1 (pose pairs) or "
            "H_0to1 (homography pairs)"
        )
    scale0, scale1 = batch.get("scale0"), batch.get("scale1")
    results: list[PairResult] = []
    for b in range(batch["image0"].shape[0]):
        p0, p1 = matches.of_pair(b)
        identifier = pair_identifier(batch, b)
        if is_pose:
            results.append(
                pair_metrics(
                    p0,
                    p1,
                    original_intrinsics(batch["K0"][b], None if scale0 is None else scale0[b]),
                    original_intrinsics(batch["K1"][b], None if scale1 is None else scale1[b]),
                    batch["T_0to1"][b],
                    identifier=identifier,
                    epi_err_thr=protocol.epi_err_thr,
                    ransac_pixel_thr=protocol.ransac_pixel_thr,
                    ransac_conf=protocol.ransac_conf,
                    estimator=protocol.estimator,
                    seed=protocol.seed,
                )
            )
            continue
        # keypoints are in original pixels; the synthetic homography is in returned pixels
        if scale0 is not None and scale1 is not None:
            p0 = p0 / scale0[b].float().cpu()
            p1 = p1 / scale1[b].float().cpu()
        errors = homography_errors(p0, p1, batch["H_0to1"][b].cpu()).numpy()
        results.append(HomographyPairMetrics(identifier, int(p0.shape[0]), errors))
    return results


def summarize(
    results: Sequence[PairResult],
    protocol: ScoringProtocol = ScoringProtocol(),
) -> dict[str, float]:
    """Dataset metrics of pair results (deduplicated by identifier, the last one wins).

    Returns:
        Pose pairs (or no pairs at all): ``auc@{t}`` for each AUC threshold and
        ``prec@{epi_err_thr:.0e}`` (fractions). Homography pairs: ``prec@{t:g}px`` (mean over
        pairs of the fraction of a pair's matches within ``t`` px; a pair without matches
        counts 0) and ``mean_error_px`` (over all matches). Always ``num_pairs`` and
        ``mean_matches``; with pose pairs (or none) also ``mean_inliers``. With pose pairs
        only this equals :func:`loftr_train.metrics.aggregate_metrics`.
    """
    unique = list({r.identifier: r for r in results}.values())
    pose = [r for r in unique if isinstance(r, PairMetrics)]
    homog = [r for r in unique if isinstance(r, HomographyPairMetrics)]
    out: dict[str, float] = {}
    pose_summary: dict[str, float] = {}
    if pose or not homog:
        pose_summary = aggregate_metrics(
            pose, thresholds=protocol.auc_thresholds, epi_err_thr=protocol.epi_err_thr
        )
        out.update({k: v for k, v in pose_summary.items() if k.startswith(("auc@", "prec@"))})
    if homog:
        for thr in protocol.homography_thresholds_px:
            fractions = [float(np.mean(r.errors < thr)) if r.errors.size else 0.0 for r in homog]
            out[f"prec@{thr:g}px"] = float(np.mean(fractions))
        all_err = np.concatenate([np.asarray(r.errors, dtype=np.float64) for r in homog])
        out["mean_error_px"] = float(all_err.mean()) if all_err.size else float("nan")
    out["num_pairs"] = float(len(unique))
    out["mean_matches"] = float(np.mean([r.num_matches for r in unique])) if unique else 0.0
    if pose_summary:
        out["mean_inliers"] = pose_summary["mean_inliers"]
    return out
