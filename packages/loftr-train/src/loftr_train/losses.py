"""LoFTR's training losses: coarse focal / cross-entropy (dense, sparse, optimal transport) and the
fine L2 loss weighted by inverse standard deviation (spec §5.4, §5.5).

Quirks of the original reproduced on purpose:

* **Focal α on negatives** (spec §8.6): the dense focal loss weighs negatives by ``α`` (0.25), not
  by ``1 - α`` as in the focal-loss paper: ``loss_neg = -α p^γ log(1 - p)``.
* Means are taken over every element of each set, padded (zero-weight) ones included.
* Sparse optimal transport supervises dustbins with the *positive* focal form.
* When a set is empty (no positive, no negative, no correct fine target), element 0 is forced into
  it with weight 0, so the loss is unchanged but the graph is the same on every rank.

On top of that :class:`LoFTRLoss` adds ``0 * sum`` of every prediction it receives (coarse
confidences, dustbin matrix, fine expectations) so that even a batch without any usable ground
truth yields a finite zero-valued gradient on EVERY parameter: under DDP
(``find_unused_parameters=False``) a parameter without gradient on one rank deadlocks the
all-reduce.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from loftr_train.errors import ConfigError
from loftr_train.fine_supervision import fine_correct_mask

__all__ = ["LoFTRLoss", "LossConfig", "LossOutput", "coarse_loss", "fine_loss"]

logger = logging.getLogger(__name__)

COARSE_TYPES = ("focal", "cross_entropy")
FINE_TYPES = ("l2_with_std", "l2")
MATCH_TYPES = ("dual_softmax", "sinkhorn")
_EPS = 1e-6


@dataclass(frozen=True)
class LossConfig:
    """Loss settings, the original ``LOSS`` section plus ``sparse_spvs`` (defaults of default.py).

    Attributes:
        coarse_type: ``"focal"`` or ``"cross_entropy"`` (dense only).
        coarse_weight: factor of the coarse loss in the total.
        focal_alpha: focal α, applied to positives AND negatives (original quirk).
        focal_gamma: focal γ.
        pos_weight: factor of the positive term.
        neg_weight: factor of the negative (or dustbin) term.
        fine_type: ``"l2_with_std"`` or ``"l2"``.
        fine_weight: factor of the fine loss in the total.
        fine_correct_thr: fine targets with ``|.|_inf >= thr`` are ignored.
        sparse_spvs: sparse coarse supervision (positives only; OT adds dustbins). The released
            ``*_dense`` training configs set it False.
    """

    coarse_type: str = "focal"
    coarse_weight: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    pos_weight: float = 1.0
    neg_weight: float = 1.0
    fine_type: str = "l2_with_std"
    fine_weight: float = 1.0
    fine_correct_thr: float = 1.0
    sparse_spvs: bool = True

    def __post_init__(self) -> None:
        if self.coarse_type not in COARSE_TYPES:
            raise ConfigError(
                f"LossConfig.coarse_type={self.coarse_type!r} is not allowed; use one of "
                f"{COARSE_TYPES}"
            )
        if self.fine_type not in FINE_TYPES:
            raise ConfigError(
                f"LossConfig.fine_type={self.fine_type!r} is not allowed; use one of {FINE_TYPES}"
            )
        if self.coarse_type == "cross_entropy" and self.sparse_spvs:
            raise ConfigError(
                "LossConfig.coarse_type='cross_entropy' needs dense supervision, but "
                "sparse_spvs=True; set sparse_spvs=False or use coarse_type='focal'"
            )
        for name in ("coarse_weight", "focal_alpha", "focal_gamma", "pos_weight", "neg_weight"):
            value = getattr(self, name)
            if not value >= 0:
                raise ConfigError(f"LossConfig.{name}={value!r} must be a number >= 0")
        if not self.fine_weight >= 0 or not self.fine_correct_thr > 0:
            raise ConfigError(
                f"LossConfig.fine_weight={self.fine_weight!r} must be >= 0 and "
                f"fine_correct_thr={self.fine_correct_thr!r} > 0"
            )


def _safe_mean(values: Tensor, anchor: Tensor) -> Tensor:
    """Mean of ``values``; 0 (connected to ``anchor``'s graph) when empty."""
    if values.numel() == 0:
        return anchor.sum() * 0.0
    return values.mean()


def coarse_loss(
    conf_matrix: Tensor,
    conf_matrix_gt: Tensor,
    *,
    config: LossConfig | None = None,
    weight: Tensor | None = None,
    match_type: str = "dual_softmax",
    conf_matrix_with_bin: Tensor | None = None,
) -> Tensor:
    """The coarse loss over the confidence matrix.

    Args:
        conf_matrix: ``(N, L, S)`` float predicted confidences (dual-softmax or OT assignment).
        conf_matrix_gt: ``(N, L, S)`` bool (or 0/1 float) ground truth.
        config: loss settings (defaults: focal, sparse, α 0.25, γ 2).
        weight: optional ``(N, L, S)`` float element weight (``mask0 x mask1``).
        match_type: ``"dual_softmax"`` or ``"sinkhorn"``.
        conf_matrix_with_bin: ``(N, L+1, S+1)`` OT assignment with dustbins; required for sparse
            OT supervision.

    Returns:
        0-dim loss ``pos_weight * mean(loss_pos) + neg_weight * mean(loss_neg)`` (sparse DS: the
        positive term only).

    Raises:
        ConfigError: unknown ``match_type`` or sparse OT without ``conf_matrix_with_bin``.
    """
    cfg = config or LossConfig()
    if match_type not in MATCH_TYPES:
        raise ConfigError(f"match_type={match_type!r} is not allowed; use one of {MATCH_TYPES}")
    sparse_ot = cfg.sparse_spvs and match_type == "sinkhorn"
    if sparse_ot and conf_matrix_with_bin is None:
        raise ConfigError(
            "sparse supervision of the optimal-transport matcher needs conf_matrix_with_bin "
            "(N, L+1, S+1), which LoFTR.forward_train returns for a sinkhorn model; pass it, "
            "or set LossConfig.sparse_spvs=False"
        )
    gt = conf_matrix_gt.bool()
    pos, neg = gt.clone(), ~gt
    c_pos_w, c_neg_w = cfg.pos_weight, cfg.neg_weight
    w = None if weight is None else weight.to(conf_matrix.dtype).clone()
    if not pos.any():
        pos[0, 0, 0] = True
        if w is not None:
            w[0, 0, 0] = 0.0
        c_pos_w = 0.0
    if not neg.any():
        neg[0, 0, 0] = True
        if w is not None:
            w[0, 0, 0] = 0.0
        c_neg_w = 0.0
    alpha, gamma = cfg.focal_alpha, cfg.focal_gamma

    if cfg.coarse_type == "cross_entropy":
        conf = conf_matrix.clamp(_EPS, 1 - _EPS)
        loss_pos = -torch.log(conf[pos])
        loss_neg = -torch.log(1 - conf[neg])
        if w is not None:
            loss_pos, loss_neg = loss_pos * w[pos], loss_neg * w[neg]
        return c_pos_w * loss_pos.mean() + c_neg_w * loss_neg.mean()

    if not cfg.sparse_spvs:  # dense focal
        conf = conf_matrix.clamp(_EPS, 1 - _EPS)
        p_pos, p_neg = conf[pos], conf[neg]
        loss_pos = -alpha * (1 - p_pos) ** gamma * p_pos.log()
        loss_neg = -alpha * p_neg**gamma * (1 - p_neg).log()  # α, not 1 - α (§8.6)
        if w is not None:
            loss_pos, loss_neg = loss_pos * w[pos], loss_neg * w[neg]
        return c_pos_w * loss_pos.mean() + c_neg_w * loss_neg.mean()

    if not sparse_ot:  # sparse dual-softmax: positives only
        conf = conf_matrix.clamp(_EPS, 1 - _EPS)
        p_pos = conf[pos]
        loss_pos = -alpha * (1 - p_pos) ** gamma * p_pos.log()
        if w is not None:
            loss_pos = loss_pos * w[pos]
        return c_pos_w * loss_pos.mean()

    assert conf_matrix_with_bin is not None  # checked above
    conf = conf_matrix_with_bin.clamp(_EPS, 1 - _EPS)
    p_pos = conf[:, :-1, :-1][pos]
    loss_pos = -alpha * (1 - p_pos) ** gamma * p_pos.log()
    neg0 = gt.sum(-1) == 0  # (N, L) rows without a match -> their dustbin column
    neg1 = gt.sum(1) == 0  # (N, S) columns without a match -> their dustbin row
    p_neg = torch.cat([conf[:, :-1, -1][neg0], conf[:, -1, :-1][neg1]], 0)
    loss_neg = -alpha * (1 - p_neg) ** gamma * p_neg.log()  # positive form on dustbins
    if w is not None:
        loss_pos = loss_pos * w[pos]
        keep = torch.cat([(w.sum(-1) != 0)[neg0], (w.sum(1) != 0)[neg1]], 0)
        loss_neg = loss_neg[keep]
    return c_pos_w * loss_pos.mean() + c_neg_w * _safe_mean(loss_neg, conf)


def fine_loss(
    expec_f: Tensor,
    expec_f_gt: Tensor,
    *,
    config: LossConfig | None = None,
    training: bool = True,
) -> Tensor | None:
    """The fine loss on the expected sub-pixel positions.

    ``l2_with_std``: ``mean over correct of w * ||gt - pred||^2`` with ``w = (1 / std) /
    mean_all(1 / std)`` (std clamped at 1e-10, detached, mean over ALL matches). ``l2``: plain
    mean squared distance over correct targets.

    Args:
        expec_f: ``(M, 3)`` float ``(x, y, std)`` from the model (``(M, 2)`` suffices for ``l2``).
        expec_f_gt: ``(M, 2)`` normalised targets from
            :func:`~loftr_train.fine_supervision.compute_fine_supervision`.
        config: loss settings.
        training: with no correct target, training forces sample 0 in with weight 0 (loss 0,
            graph kept); evaluation returns None (the original then logs 1.0).

    Returns:
        0-dim loss, or None (evaluation, no correct target).
    """
    cfg = config or LossConfig()
    if expec_f.shape[0] == 0:
        return expec_f.sum() * 0.0 if training else None
    correct = fine_correct_mask(expec_f_gt, cfg.fine_correct_thr)
    if cfg.fine_type == "l2_with_std":
        inv_std = 1.0 / expec_f[:, 2].clamp(min=1e-10)
        w = (inv_std / inv_std.mean()).detach()
    else:
        w = torch.ones_like(expec_f[:, 0]).detach()
    if not correct.any():
        if not training:
            return None
        logger.debug("no correct fine target: forcing a zero-weight sample (DDP graph)")
        correct = correct.clone()
        correct[0] = True
        w = w.clone()
        w[0] = 0.0
    offset_l2 = ((expec_f_gt[correct] - expec_f[correct, :2]) ** 2).sum(-1)
    # Where the zero-weight sample has a non-finite target, keep the loss finite.
    offset_l2 = torch.where(w[correct] == 0, torch.zeros_like(offset_l2), offset_l2)
    return (offset_l2 * w[correct]).mean()


@dataclass(frozen=True)
class LossOutput:
    """Result of :class:`LoFTRLoss`.

    Attributes:
        loss: 0-dim total ``coarse_weight * loss_c + fine_weight * loss_f``.
        loss_c: 0-dim coarse loss.
        loss_f: 0-dim fine loss, or None in evaluation when no fine target is correct.
    """

    loss: Tensor
    loss_c: Tensor
    loss_f: Tensor | None

    def scalars(self) -> dict[str, float]:
        """``loss_c``, ``loss_f`` (1.0 when None, as the original logs) and ``loss`` as floats."""
        return {
            "loss_c": float(self.loss_c.detach()),
            "loss_f": 1.0 if self.loss_f is None else float(self.loss_f.detach()),
            "loss": float(self.loss.detach()),
        }


class LoFTRLoss(torch.nn.Module):
    """Total LoFTR loss of one training/validation step (no parameters).

    Args:
        config: loss settings.
        match_type: the model's ``match_coarse.match_type``.
    """

    def __init__(self, config: LossConfig | None = None, *, match_type: str = "dual_softmax"):
        super().__init__()
        if match_type not in MATCH_TYPES:
            raise ConfigError(f"match_type={match_type!r} is not allowed; use one of {MATCH_TYPES}")
        self.config = config or LossConfig()
        self.match_type = match_type

    def forward(
        self,
        outputs: Mapping[str, Tensor],
        conf_matrix_gt: Tensor,
        expec_f_gt: Tensor,
        *,
        mask0: Tensor | None = None,
        mask1: Tensor | None = None,
    ) -> LossOutput:
        """Compute the loss.

        Args:
            outputs: the model's training outputs: ``conf_matrix`` ``(N, L, S)``, ``expec_f``
                ``(M, 3)``, and ``conf_matrix_with_bin`` ``(N, L+1, S+1)`` for sparse OT.
            conf_matrix_gt: ``(N, L, S)`` bool coarse ground truth.
            expec_f_gt: ``(M, 2)`` fine ground truth of the model's selected matches.
            mask0: optional ``(N, Hc0, Wc0)`` bool valid cells of image 0.
            mask1: optional ``(N, Hc1, Wc1)`` bool valid cells of image 1.

        Returns:
            The :class:`LossOutput`.
        """
        cfg = self.config
        conf = outputs["conf_matrix"]
        weight = None
        if mask0 is not None and mask1 is not None:
            n = conf.shape[0]
            m0 = mask0.reshape(n, -1).to(conf.dtype)
            m1 = mask1.reshape(n, -1).to(conf.dtype)
            weight = m0[:, :, None] * m1[:, None, :]
        with_bin = outputs.get("conf_matrix_with_bin")
        loss_c = coarse_loss(
            conf,
            conf_matrix_gt,
            config=cfg,
            weight=weight,
            match_type=self.match_type,
            conf_matrix_with_bin=with_bin,
        )
        loss = cfg.coarse_weight * loss_c
        loss_f = fine_loss(outputs["expec_f"], expec_f_gt, config=cfg, training=self.training)
        if loss_f is not None:
            loss = loss + cfg.fine_weight * loss_f
        # Touch every prediction so every parameter gets a (zero) gradient: DDP never deadlocks.
        for key in ("conf_matrix", "conf_matrix_with_bin", "expec_f"):
            value = outputs.get(key)
            if isinstance(value, Tensor) and value.requires_grad:
                loss = loss + 0.0 * value.sum()
        return LossOutput(loss=loss, loss_c=loss_c, loss_f=loss_f)
