"""loftr-train: Supervision, losses, metrics, the DDP trainer and evaluation for LoFTR."""

__version__ = "0.1.0"

from loftr_train.coarse_supervision import CoarseSupervision, compute_coarse_supervision
from loftr_train.errors import EvaluationError, SupervisionError
from loftr_train.evaluation import EvaluationResult, evaluate
from loftr_train.fine_supervision import compute_fine_supervision, fine_correct_mask
from loftr_train.losses import LoFTRLoss, LossConfig, LossOutput, coarse_loss, fine_loss
from loftr_train.metrics import (
    PairMetrics,
    aggregate_metrics,
    epipolar_precision,
    pair_metrics,
    pose_auc,
)

__all__ = [
    "CoarseSupervision",
    "EvaluationError",
    "EvaluationResult",
    "LoFTRLoss",
    "LossConfig",
    "LossOutput",
    "PairMetrics",
    "SupervisionError",
    "__version__",
    "aggregate_metrics",
    "coarse_loss",
    "compute_coarse_supervision",
    "compute_fine_supervision",
    "epipolar_precision",
    "evaluate",
    "fine_correct_mask",
    "fine_loss",
    "pair_metrics",
    "pose_auc",
]
