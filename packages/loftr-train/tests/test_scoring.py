"""The evaluation core shared by ``loftr-eval`` and the trainer's validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from loftr_train.errors import EvaluationError
from loftr_train.metrics import PairMetrics, aggregate_metrics
from loftr_train.scoring import (
    BatchMatches,
    HomographyPairMetrics,
    match_batch,
    score_batch,
    summarize,
)


def test_scoring_on_the_real_megadepth_pair(shared_data: Path) -> None:
    """Ground-truth matches of the real pair, scored like predictions, give a near-exact pose."""
    from loftr_data import MegaDepthDataset, collate
    from loftr_train.coarse_supervision import coarse_grid, compute_coarse_supervision

    root = shared_data / "megadepth_sample"
    batch = collate([MegaDepthDataset(root, root / "sample.npz", pair_ids=[0], img_resize=640)[0]])
    sup = compute_coarse_supervision(batch)
    b, i = sup.spv_b_ids, sup.spv_i_ids
    grid0 = coarse_grid(*sup.hw0_c).float() * 8 * batch["scale0"][0]  # original pixels
    matches = BatchMatches(b, grid0[i], sup.spv_w_pt0_i[b, i])
    (rec,) = score_batch(batch, matches)
    assert isinstance(rec, PairMetrics)
    assert rec.num_matches == sup.num_matches > 300
    assert rec.pose_error < 1.0  # degrees
    assert rec.precision > 0.95
    n0, n1 = batch["pair_names"][0]
    assert rec.identifier == f"{n0}#{n1}"
    agg = summarize([rec, rec])  # duplicates count once
    assert agg["num_pairs"] == 1
    assert agg["auc@10"] > 0.9
    # pose pairs only: exactly the dataset numbers of loftr_train.metrics (what loftr-eval prints)
    assert agg == aggregate_metrics([rec])


def test_scoring_homography_pairs() -> None:
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
    recs = score_batch(batch, BatchMatches(torch.zeros(4, dtype=torch.long), k0, k1))
    homog = [r for r in recs if isinstance(r, HomographyPairMetrics)]
    assert len(homog) == 2
    assert [r.identifier for r in homog] == ["s#0", "s#1"]
    assert homog[0].errors.tolist() == pytest.approx([0.0, 2.0, 2.5, 4.0])
    assert homog[1].errors.tolist() == []  # a pair without matches
    agg = summarize(recs)
    assert agg["prec@3px"] == pytest.approx((3 / 4 + 0.0) / 2)
    assert agg["prec@1px"] == pytest.approx((1 / 4) / 2)
    assert agg["mean_error_px"] == pytest.approx(8.5 / 4)
    assert agg["mean_matches"] == pytest.approx(2.0)
    assert "auc@5" not in agg and "mean_inliers" not in agg


class _Fixed(torch.nn.Module):
    def __init__(self, with_batch_indexes: bool) -> None:
        super().__init__()
        self.with_batch_indexes = with_batch_indexes
        self.seen: list[set[str]] = []

    def forward(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.seen.append(set(data))
        out = {"keypoints0": torch.ones(3, 2, dtype=torch.float64), "keypoints1": torch.ones(3, 2)}
        if self.with_batch_indexes:
            out["batch_indexes"] = torch.tensor([0, 1, 1])
        return out


def test_match_batch_reads_only_model_inputs_and_needs_batch_indexes() -> None:
    batch = {"image0": torch.zeros(2, 1, 8, 8), "image1": torch.zeros(2, 1, 8, 8), "K0": None}
    model = _Fixed(with_batch_indexes=True)
    m = match_batch(model, batch)
    assert model.seen == [{"image0", "image1"}]
    assert m.keypoints0.dtype == torch.float32
    assert [len(m.of_pair(b)[0]) for b in (0, 1)] == [1, 2]
    with pytest.raises(EvaluationError, match="batch_indexes"):
        match_batch(_Fixed(with_batch_indexes=False), batch)
    one = {k: v[:1] for k, v in batch.items() if v is not None}
    assert match_batch(_Fixed(with_batch_indexes=False), one).batch_indexes.tolist() == [0, 0, 0]
    with pytest.raises(EvaluationError, match="H_0to1"):
        score_batch(one, m)


def test_summary_of_no_pairs_is_the_metrics_summary() -> None:
    assert summarize([]) == aggregate_metrics([])
    assert np.isfinite(summarize([])["auc@5"])
