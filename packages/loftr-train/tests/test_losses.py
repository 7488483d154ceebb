"""Losses on small hand-computed cases (numbers typed in from the formulas), and gradient flow."""

from __future__ import annotations

import math

import pytest
import torch

from loftr_core.model import LoFTR
from loftr_core.model.config import LoFTRConfig
from loftr_data import SyntheticHomographyDataset, collate
from loftr_train.coarse_supervision import compute_coarse_supervision
from loftr_train.errors import ConfigError
from loftr_train.fine_supervision import compute_fine_supervision
from loftr_train.losses import LoFTRLoss, LossConfig, LossOutput, coarse_loss, fine_loss

A = 0.25  # focal alpha
DENSE = LossConfig(sparse_spvs=False)


def _focal_pos(p: float) -> float:
    return -A * (1 - p) ** 2 * math.log(p)


def _focal_neg(p: float) -> float:  # alpha (not 1 - alpha) on negatives: the original's quirk
    return -A * p**2 * math.log(1 - p)


CONF = torch.tensor([[[0.9, 0.1], [0.2, 0.6]]], dtype=torch.float64)
GT = torch.tensor([[[True, False], [False, False]]])


def test_dense_focal_hand_computed() -> None:
    loss = coarse_loss(CONF, GT, config=DENSE)
    pos = _focal_pos(0.9)
    neg = (_focal_neg(0.1) + _focal_neg(0.2) + _focal_neg(0.6)) / 3
    assert loss.item() == pytest.approx(pos + neg, rel=1e-12)
    # The negative term really uses alpha = 0.25 (1 - alpha would triple it).
    only_neg = coarse_loss(CONF, GT, config=LossConfig(sparse_spvs=False, pos_weight=0.0))
    assert float(only_neg) == pytest.approx(neg, rel=1e-12)


def test_dense_focal_weight_keeps_padded_elements_in_the_mean() -> None:
    weight = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]], dtype=torch.float64)  # column 1 padded
    loss = coarse_loss(CONF, GT, config=DENSE, weight=weight)
    # Negatives: 0.1 (w 0), 0.2 (w 1), 0.6 (w 0); the mean still divides by 3.
    assert loss.item() == pytest.approx(_focal_pos(0.9) + _focal_neg(0.2) / 3, rel=1e-12)


def test_pos_and_neg_weights_and_coarse_weight() -> None:
    cfg = LossConfig(sparse_spvs=False, pos_weight=2.0, neg_weight=0.5)
    loss = coarse_loss(CONF, GT, config=cfg)
    neg = (_focal_neg(0.1) + _focal_neg(0.2) + _focal_neg(0.6)) / 3
    assert loss.item() == pytest.approx(2 * _focal_pos(0.9) + 0.5 * neg, rel=1e-12)


def test_cross_entropy_hand_computed_and_clamp() -> None:
    cfg = LossConfig(coarse_type="cross_entropy", sparse_spvs=False)
    loss = coarse_loss(CONF, GT, config=cfg)
    ref = -math.log(0.9) - (math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3
    assert loss.item() == pytest.approx(ref, rel=1e-12)
    conf = torch.tensor([[[0.0, 1.0]]], dtype=torch.float64)  # clamped to [1e-6, 1 - 1e-6]
    loss = coarse_loss(conf, torch.tensor([[[True, False]]]), config=cfg)
    assert loss.item() == pytest.approx(-2 * math.log(1e-6), rel=1e-6)
    with pytest.raises(ConfigError, match="sparse_spvs"):
        LossConfig(coarse_type="cross_entropy")


def test_sparse_dual_softmax_supervises_positives_only() -> None:
    loss = coarse_loss(CONF, GT, config=LossConfig())
    assert loss.item() == pytest.approx(_focal_pos(0.9), rel=1e-12)


def test_sparse_optimal_transport_dustbins() -> None:
    # L = S = 2 plus dustbins; GT match (0, 0). Row 1 has no match -> its dustbin entry [1, 2];
    # column 1 has no match -> dustbin entry [2, 1]; both with the POSITIVE focal form.
    with_bin = torch.tensor(
        [[[0.7, 0.05, 0.1], [0.02, 0.3, 0.5], [0.15, 0.4, 0.9]]], dtype=torch.float64
    )
    loss = coarse_loss(
        with_bin[:, :2, :2],
        GT,
        config=LossConfig(),
        match_type="sinkhorn",
        conf_matrix_with_bin=with_bin,
    )
    ref = _focal_pos(0.7) + (_focal_pos(0.5) + _focal_pos(0.4)) / 2
    assert loss.item() == pytest.approx(ref, rel=1e-12)
    # With column 1 padded, its dustbin term is dropped (weight sum 0); row 1 stays.
    weight = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]], dtype=torch.float64)
    loss = coarse_loss(
        with_bin[:, :2, :2],
        GT,
        config=LossConfig(),
        weight=weight,
        match_type="sinkhorn",
        conf_matrix_with_bin=with_bin,
    )
    assert loss.item() == pytest.approx(_focal_pos(0.7) + _focal_pos(0.5), rel=1e-12)
    with pytest.raises(ConfigError, match="conf_matrix_with_bin"):
        coarse_loss(with_bin[:, :2, :2], GT, match_type="sinkhorn")
    # Dense OT: the matrix without dustbins, as dual-softmax.
    dense = coarse_loss(with_bin[:, :2, :2], GT, config=DENSE, match_type="sinkhorn")
    neg = (_focal_neg(0.05) + _focal_neg(0.02) + _focal_neg(0.3)) / 3
    assert float(dense) == pytest.approx(_focal_pos(0.7) + neg, rel=1e-12)


def test_no_positive_gives_zero_loss_with_gradient() -> None:
    conf = CONF.clone().requires_grad_(True)
    gt = torch.zeros_like(GT)
    loss = coarse_loss(conf, gt, config=LossConfig())
    assert loss.item() == 0.0
    loss.backward()
    assert conf.grad is not None and torch.all(conf.grad == 0)
    # Dense: the positive term vanishes, all four negatives remain.
    dense = coarse_loss(CONF, gt, config=DENSE)
    ref = sum(_focal_neg(p) for p in (0.9, 0.1, 0.2, 0.6)) / 4
    assert float(dense) == pytest.approx(ref, rel=1e-12)
    # No negative at all: only the positive term.
    full = coarse_loss(CONF, torch.ones_like(GT), config=DENSE)
    ref = sum(_focal_pos(p) for p in (0.9, 0.1, 0.2, 0.6)) / 4
    assert float(full) == pytest.approx(ref, rel=1e-12)


EXPEC_F = torch.tensor([[0.1, 0.2, 0.5], [0.3, -0.1, 0.25], [0.0, 0.0, 1.0]], dtype=torch.float64)
EXPEC_F_GT = torch.tensor([[0.0, 0.0], [0.5, 0.5], [1.5, 0.0]], dtype=torch.float64)


def test_fine_l2_with_std_hand_computed() -> None:
    # correct = [T, T, F]; 1/std = [2, 4, 1], mean over ALL = 7/3 -> w = [6/7, 12/7, 3/7].
    # squared offsets: 0.01 + 0.04 = 0.05 and 0.04 + 0.36 = 0.40.
    loss = fine_loss(EXPEC_F, EXPEC_F_GT)
    assert loss is not None
    assert loss.item() == pytest.approx((6 / 7 * 0.05 + 12 / 7 * 0.40) / 2, rel=1e-12)
    l2 = fine_loss(EXPEC_F, EXPEC_F_GT, config=LossConfig(fine_type="l2"))
    assert l2 is not None and float(l2) == pytest.approx((0.05 + 0.40) / 2, rel=1e-12)
    # The correctness threshold is strict: |.|_inf == 1 is outside.
    edge = torch.tensor([[1.0, 0.0], [0.5, -1.0], [0.999, 0.0]], dtype=torch.float64)
    one = fine_loss(EXPEC_F, edge, config=LossConfig(fine_type="l2"))
    assert one is not None and float(one) == pytest.approx(0.999**2, rel=1e-12)


def test_fine_loss_without_correct_target() -> None:
    expec_f = EXPEC_F.clone().requires_grad_(True)
    far = torch.full((3, 2), 5.0, dtype=torch.float64)
    loss = fine_loss(expec_f, far, training=True)
    assert loss is not None and loss.item() == 0.0
    loss.backward()
    assert expec_f.grad is not None and torch.all(expec_f.grad == 0)
    assert fine_loss(EXPEC_F, far, training=False) is None
    nan_gt = torch.full((3, 2), float("nan"), dtype=torch.float64)
    nan_loss = fine_loss(EXPEC_F, nan_gt, training=True)
    assert nan_loss is not None and float(nan_loss) == 0.0


def test_total_loss_and_scalars() -> None:
    conf = CONF.clone().requires_grad_(True)
    expec_f = EXPEC_F.clone().requires_grad_(True)
    crit = LoFTRLoss(LossConfig(sparse_spvs=False, fine_weight=0.5))
    mask0 = torch.tensor([[[True, True]]])
    mask1 = torch.tensor([[[True, False]]])
    out = crit({"conf_matrix": conf, "expec_f": expec_f}, GT, EXPEC_F_GT, mask0=mask0, mask1=mask1)
    loss_c = _focal_pos(0.9) + _focal_neg(0.2) / 3
    loss_f = (6 / 7 * 0.05 + 12 / 7 * 0.40) / 2
    assert out.loss_c.item() == pytest.approx(loss_c, rel=1e-12)
    assert out.scalars() == pytest.approx(
        {"loss_c": loss_c, "loss_f": loss_f, "loss": loss_c + 0.5 * loss_f}
    )
    out.loss.backward()
    assert conf.grad is not None and expec_f.grad is not None
    assert float(conf.grad[0, 0, 1]) == 0.0  # padded element: zero weight
    crit.eval()
    out = crit({"conf_matrix": CONF, "expec_f": EXPEC_F}, GT, torch.full((3, 2), 9.0))
    assert out.loss_f is None and out.scalars()["loss_f"] == 1.0


def test_loss_config_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match="coarse_type"):
        LossConfig(coarse_type="dice")
    with pytest.raises(ConfigError, match="fine_type"):
        LossConfig(fine_type="l1")
    with pytest.raises(ConfigError, match="focal_gamma"):
        LossConfig(focal_gamma=-1.0)
    with pytest.raises(ConfigError, match="match_type"):
        LoFTRLoss(match_type="argmax")


# ---------------------------------------------------------------- gradient flow through LoFTR
def _train_step(preset: str, *, no_overlap: bool) -> tuple[LoFTR, LossOutput]:
    """One forward_train + loss + backward on a 128 x 128 synthetic pair."""
    torch.manual_seed(0)
    cfg = getattr(LoFTRConfig, preset)().replace(
        match_coarse={"train_coarse_percent": 0.5, "train_pad_num_gt_min": 16}
    )
    model = LoFTR(cfg).train()
    batch = collate([SyntheticHomographyDataset(length=1, size=(128, 128), seed=0)[0]])
    if no_overlap:  # image 0 maps 10 000 px away: not a single ground-truth match
        batch["H_0to1"] = torch.tensor([[[1.0, 0, 1e4], [0, 1, 0], [0, 0, 1]]])
    spv = compute_coarse_supervision(batch)
    assert (spv.num_matches == 0) == no_overlap
    out = model.forward_train(batch, spv.spv_b_ids, spv.spv_i_ids, spv.spv_j_ids)
    expec_f_gt = compute_fine_supervision(
        spv.spv_w_pt0_i,
        spv.spv_pt1_i,
        out["b_ids"],
        out["i_ids"],
        out["j_ids"],
        scale1=batch["scale1"],
    )
    crit = LoFTRLoss(LossConfig(), match_type=cfg.match_coarse.match_type)
    result = crit(out, spv.conf_matrix_gt, expec_f_gt)
    result.loss.backward()
    return model, result


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["outdoor_ds", "outdoor_ot"])
def test_gradient_reaches_every_parameter(preset: str) -> None:
    model, result = _train_step(preset, no_overlap=False)
    assert math.isfinite(result.loss.item()) and result.loss.item() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
        assert bool((p.grad != 0).any()), f"{name} gets no gradient"


@pytest.mark.slow
def test_batch_without_ground_truth_gives_zero_loss_touching_every_parameter() -> None:
    # DDP (find_unused_parameters=False) deadlocks if one rank leaves a parameter without grad.
    model, result = _train_step("outdoor_ds", no_overlap=True)
    assert result.loss.item() == 0.0
    assert result.loss_c.item() == 0.0 and result.loss_f is not None
    assert result.loss_f.item() == 0.0
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
        assert bool((p.grad == 0).all()), name
