"""Per-pair validation records and their aggregation across ranks.

Validation takes the model's inference-path matches (``m_bids``, ``mkpts0_f``, ``mkpts1_f``, in
ORIGINAL image pixels; see :func:`loftr_train.training_step.predict_matches`). Then per pair:

* depth/pose pairs (MegaDepth): :func:`loftr_train.metrics.pair_metrics` with the intrinsics
  brought back to the original resolution (as the original evaluates), giving the pose error and
  the epipolar precision; aggregated to ``auc@5/10/20`` and ``prec@5e-04``;
* homography pairs (synthetic): the reprojection error ``|H_0to1 x0 - x1|`` of every match, giving
  ``prec@3px`` (fraction of matches within 3 px; 0 for a pair without matches), ``prec@1px`` and
  the mean number of matches.

Records are small dicts (picklable) so ranks can gather them; duplicates (same identifier) are
dropped, the last one winning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from loftr_train.coarse_supervision import intrinsics_to_original
from loftr_train.metrics import PairMetrics, aggregate_metrics, pair_metrics

__all__ = ["aggregate_records", "homography_errors", "pair_records"]

#: Pixel thresholds of the homography precision.
HOMOGRAPHY_THRESHOLDS = (1.0, 3.0)


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


def _identifier(batch: Mapping[str, Any], b: int) -> str:
    scene = batch["scene_id"][b] if "scene_id" in batch else "?"
    pid = batch["pair_id"][b] if "pair_id" in batch else b
    pid = int(pid.item()) if isinstance(pid, Tensor) else int(pid)
    return f"{scene}#{pid}"


def pair_records(batch: Mapping[str, Any], outputs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One record per pair of a validated batch.

    Args:
        batch: the collated batch (depth variant with ``K0/K1/T_0to1``, or ``H_0to1``).
        outputs: predicted matches ``m_bids``, ``mkpts0_f``, ``mkpts1_f`` (original pixels).

    Returns:
        Dicts with ``identifier``, ``num_matches`` and either ``pose_error``/``precision``
        (depth) or ``errors`` (homography, a float list).
    """
    n = batch["image0"].shape[0]
    m_bids = outputs["m_bids"].detach().cpu()
    k0 = outputs["mkpts0_f"].detach().float().cpu()
    k1 = outputs["mkpts1_f"].detach().float().cpu()
    records: list[dict[str, Any]] = []
    for b in range(n):
        sel = m_bids == b
        p0, p1 = k0[sel], k1[sel]
        rec: dict[str, Any] = {"identifier": _identifier(batch, b), "num_matches": int(sel.sum())}
        if "T_0to1" in batch:
            ones = torch.ones(2)
            s0 = batch["scale0"][b].float().cpu() if "scale0" in batch else ones
            s1 = batch["scale1"][b].float().cpu() if "scale1" in batch else ones
            K0 = intrinsics_to_original(batch["K0"][b].float().cpu()[None], s0[None])[0]
            K1 = intrinsics_to_original(batch["K1"][b].float().cpu()[None], s1[None])[0]
            pm = pair_metrics(
                p0, p1, K0, K1, batch["T_0to1"][b].cpu(), identifier=rec["identifier"]
            )
            rec.update(
                pose_error=pm.pose_error, precision=pm.precision, R_err=pm.R_err, t_err=pm.t_err
            )
        else:
            H = batch["H_0to1"][b].cpu()
            # keypoints are in original pixels; the synthetic homography is in returned pixels
            if "scale0" in batch:
                p0 = p0 / batch["scale0"][b].float().cpu()
                p1 = p1 / batch["scale1"][b].float().cpu()
            rec["errors"] = homography_errors(p0, p1, H).tolist()
        records.append(rec)
    return records


def aggregate_records(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Dataset metrics from pair records (deduplicated by identifier, the last one wins).

    Returns:
        For depth pairs ``auc@5``, ``auc@10``, ``auc@20``, ``prec@5e-04``; for homography pairs
        ``prec@1px``, ``prec@3px`` (means over pairs of each pair's fraction of matches within the
        threshold; a pair without matches counts 0) and ``mean_error_px`` (over all matches);
        always ``num_pairs`` and ``mean_matches``.
    """
    unique = list({r["identifier"]: r for r in records}.values())
    out: dict[str, float] = {}
    pose = [r for r in unique if "pose_error" in r]
    homog = [r for r in unique if "errors" in r]
    if pose:
        pms = [
            PairMetrics(
                identifier=r["identifier"],
                num_matches=r["num_matches"],
                epi_errs=np.zeros(0),
                precision=r["precision"],
                R_err=r["R_err"],
                t_err=r["t_err"],
                num_inliers=0,
            )
            for r in pose
        ]
        agg = aggregate_metrics(pms)
        out.update({k: v for k, v in agg.items() if k.startswith(("auc@", "prec@"))})
    if homog:
        for thr in HOMOGRAPHY_THRESHOLDS:
            fr = [
                float(np.mean(np.asarray(r["errors"]) < thr)) if r["errors"] else 0.0 for r in homog
            ]
            out[f"prec@{thr:g}px"] = float(np.mean(fr))
        all_err = np.concatenate([np.asarray(r["errors"], dtype=np.float64) for r in homog])
        out["mean_error_px"] = float(all_err.mean()) if all_err.size else float("nan")
    out["num_pairs"] = float(len(unique))
    out["mean_matches"] = float(np.mean([r["num_matches"] for r in unique])) if unique else 0.0
    return out
