"""Evaluation metrics of LoFTR (spec §6): epipolar precision, relative pose, pose AUC.

The per-match geometry is :mod:`loftr_core.api.geometry` (shared with inference): the squared
symmetric epipolar distance, the RANSAC essential-matrix pose (0.5 px / mean focal length,
confidence 0.99999, OpenCV called as the original calls it) and the angular pose errors. This
module adds what evaluation needs on top:

* :func:`epipolar_precision`: fraction of a pair's matches with distance < 5e-4 (the threshold
  the original uses for MegaDepth and ScanNet alike); 0 for a pair without matches.
* :func:`pair_metrics`: every number of one pair (epipolar errors, precision, R/t errors,
  inliers); a pose failure (fewer than 5 matches, no E) gives infinite errors.
* :func:`pose_auc`: the original ``error_auc``: errors sorted with 0 prepended, recall ``k / P``,
  trapezoid up to the threshold (the last recall below it is held flat), divided by it.
* :func:`aggregate_metrics`: dataset numbers (``auc@5/10/20``, ``prec@5e-04``, match counts),
  deduplicated by pair identifier (the last occurrence wins, as the original).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from loftr_core.api.geometry import estimate_pose, relative_pose_error, symmetric_epipolar_distance

__all__ = [
    "EPI_ERR_THR",
    "RANSAC_CONF",
    "RANSAC_PIXEL_THR",
    "PairMetrics",
    "aggregate_metrics",
    "epipolar_precision",
    "pair_metrics",
    "pose_auc",
]

#: Epipolar-distance threshold of ``prec@5e-04`` (MegaDepth and ScanNet).
EPI_ERR_THR = 5e-4
#: RANSAC inlier threshold in pixels (normalised by the focal length).
RANSAC_PIXEL_THR = 0.5
#: RANSAC confidence.
RANSAC_CONF = 0.99999


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def epipolar_precision(errors: Any, thr: float = EPI_ERR_THR) -> float:
    """Fraction of matches whose epipolar distance is below ``thr`` (0.0 without matches)."""
    e = _np(errors).reshape(-1)
    return float(np.mean(e < thr)) if e.size else 0.0


@dataclass(frozen=True)
class PairMetrics:
    """Metrics of one image pair.

    Attributes:
        identifier: ``"name0#name1"`` (deduplication key).
        num_matches: number of matches evaluated.
        epi_errs: ``(M,)`` float64 squared symmetric epipolar distances.
        precision: fraction of ``epi_errs`` below the threshold.
        R_err: rotation error in degrees (``inf`` on pose failure).
        t_err: translation-direction error in degrees (``inf`` on pose failure).
        num_inliers: RANSAC inliers (0 on failure).
    """

    identifier: str
    num_matches: int
    epi_errs: np.ndarray
    precision: float
    R_err: float
    t_err: float
    num_inliers: int

    @property
    def pose_error(self) -> float:
        """``max(R_err, t_err)``, the quantity the AUC integrates."""
        return max(self.R_err, self.t_err)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (infinite errors become ``None``)."""

        def fin(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {
            "identifier": self.identifier,
            "num_matches": self.num_matches,
            "precision": self.precision,
            "R_err": fin(self.R_err),
            "t_err": fin(self.t_err),
            "pose_error": fin(self.pose_error),
            "num_inliers": self.num_inliers,
        }


def pair_metrics(
    kpts0: Any,
    kpts1: Any,
    K0: Any,
    K1: Any,
    T_0to1: Any,
    *,
    identifier: str = "",
    epi_err_thr: float = EPI_ERR_THR,
    ransac_pixel_thr: float = RANSAC_PIXEL_THR,
    ransac_conf: float = RANSAC_CONF,
    estimator: str = "opencv",
    seed: int | None = None,
) -> PairMetrics:
    """Epipolar and pose metrics of one pair's matches (the original ``compute_*_errors``).

    Args:
        kpts0: ``(M, 2)`` pixels in image 0, in the frame of ``K0``. The original evaluates in
            ORIGINAL-image pixels with the original K; the RANSAC threshold depends on it.
        kpts1: ``(M, 2)`` pixels in image 1.
        K0: ``(3, 3)`` intrinsics of image 0.
        K1: ``(3, 3)`` intrinsics of image 1.
        T_0to1: ``(4, 4)`` ground-truth relative pose.
        identifier: pair identifier for deduplication.
        epi_err_thr: precision threshold.
        ransac_pixel_thr: RANSAC threshold in pixels.
        ransac_conf: RANSAC confidence.
        estimator: ``"opencv"`` (the paper's protocol) or ``"poselib"`` (LO-RANSAC, as
            glue-factory); see :func:`loftr_core.api.geometry.estimate_pose`.
        seed: PoseLib's RANSAC seed (None: its default; OpenCV's is fixed internally).

    Returns:
        The :class:`PairMetrics`.
    """
    p0 = _np(kpts0).reshape(-1, 2)
    p1 = _np(kpts1).reshape(-1, 2)
    k0, k1, T = _np(K0), _np(K1), _np(T_0to1)
    errs = symmetric_epipolar_distance(p0, p1, T, k0, k1)
    pose = estimate_pose(
        p0,
        p1,
        k0,
        k1,
        threshold_px=ransac_pixel_thr,
        confidence=ransac_conf,
        estimator=estimator,
        seed=seed,
    )
    if pose is None:
        r_err = t_err = math.inf
        inliers = 0
    else:
        r_err, t_err = relative_pose_error(T, pose.R, pose.t)
        inliers = pose.num_inliers
    return PairMetrics(
        identifier=identifier,
        num_matches=len(p0),
        epi_errs=errs,
        precision=epipolar_precision(errs, epi_err_thr),
        R_err=float(r_err),
        t_err=float(t_err),
        num_inliers=int(inliers),
    )


def pose_auc(
    errors: Iterable[float], thresholds: Sequence[float] = (5, 10, 20)
) -> dict[str, float]:
    """Area under the pose-error/recall curve up to each threshold (the original ``error_auc``).

    Args:
        errors: pose errors in degrees, one per pair (``max(R_err, t_err)``; ``inf`` = failure).
        thresholds: thresholds in degrees (> 0).

    Returns:
        ``{"auc@5": ..., "auc@10": ..., "auc@20": ...}`` as fractions in [0, 1].

    Raises:
        ValueError: a threshold is not positive.
    """
    bad = [t for t in thresholds if not t > 0]
    if bad:
        raise ValueError(f"pose_auc thresholds must be > 0 degrees, got {bad}; e.g. (5, 10, 20)")
    errs = [0.0, *sorted(float(e) for e in errors)]
    recall = np.linspace(0, 1, len(errs))
    out = {}
    for thr in thresholds:
        last = int(np.searchsorted(errs, thr))
        x = np.array([*errs[:last], float(thr)])
        y = np.array([*recall[:last], recall[last - 1]])
        area = float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))
        out[f"auc@{thr:g}"] = area / thr
    return out


def aggregate_metrics(
    pairs: Sequence[PairMetrics],
    *,
    thresholds: Sequence[float] = (5, 10, 20),
    epi_err_thr: float = EPI_ERR_THR,
) -> dict[str, float]:
    """Dataset numbers from per-pair metrics (deduplicated by identifier, last wins).

    Args:
        pairs: per-pair results.
        thresholds: AUC thresholds in degrees.
        epi_err_thr: the precision threshold (names the key, e.g. ``prec@5e-04``).

    Returns:
        ``auc@5``, ``auc@10``, ``auc@20``, ``prec@5e-04`` (mean of per-pair precision),
        ``num_pairs``, ``mean_matches``, ``mean_inliers``.
    """
    unique = list({p.identifier: p for p in pairs}.values())
    out = pose_auc([p.pose_error for p in unique], thresholds)
    n = len(unique)
    out[f"prec@{epi_err_thr:.0e}"] = float(np.mean([p.precision for p in unique])) if n else 0.0
    out["num_pairs"] = float(n)
    out["mean_matches"] = float(np.mean([p.num_matches for p in unique])) if n else 0.0
    out["mean_inliers"] = float(np.mean([p.num_inliers for p in unique])) if n else 0.0
    return out
