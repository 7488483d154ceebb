"""loftr-train: Supervision, losses, metrics, the DDP trainer and evaluation for LoFTR."""

__version__ = "0.1.0"

from loftr_train.checkpointing import load_checkpoint
from loftr_train.coarse_supervision import CoarseSupervision, compute_coarse_supervision
from loftr_train.distributed import DistributedError
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
from loftr_train.schedule import LRSchedule, scaled_lr_and_warmup
from loftr_train.train_config import TrainConfig, load_config
from loftr_train.trainer import StepInfo, Trainer, TrainerCallbacks, TrainResult
from loftr_train.training_data import DataLoadError

__all__ = [
    "CoarseSupervision",
    "DataLoadError",
    "DistributedError",
    "EvaluationError",
    "EvaluationResult",
    "LRSchedule",
    "LoFTRLoss",
    "LossConfig",
    "LossOutput",
    "PairMetrics",
    "StepInfo",
    "SupervisionError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainerCallbacks",
    "__version__",
    "aggregate_metrics",
    "coarse_loss",
    "compute_coarse_supervision",
    "compute_fine_supervision",
    "epipolar_precision",
    "evaluate",
    "fine_correct_mask",
    "fine_loss",
    "load_checkpoint",
    "load_config",
    "pair_metrics",
    "pose_auc",
    "scaled_lr_and_warmup",
]
