"""The LoFTR trainer, one concept per module.

* :mod:`~loftr_train.trainer.run`: :class:`Trainer` (one run: set up, resume, loop, result);
* :mod:`~loftr_train.trainer.process_group`: process group and device;
* :mod:`~loftr_train.trainer.components`: model, DDP, loss, optimiser, scaler, LR, data;
* :mod:`~loftr_train.trainer.loop`: epochs, iterations, when to validate, save and stop;
* :mod:`~loftr_train.trainer.step`: one iteration and its non-finite skip policy;
* :mod:`~loftr_train.trainer.validation`: the validation pass (the evaluation core of
  :mod:`loftr_train.scoring`);
* :mod:`~loftr_train.trainer.checkpoints`: the checkpoint manager (complete, atomic, exact
  resume);
* :mod:`~loftr_train.trainer.metrics_log`: TensorBoard, ``metrics.jsonl``, sample-id logs;
* :mod:`~loftr_train.trainer.callbacks`: the hook interface (tests inject faults through it);
* :mod:`~loftr_train.trainer.state`: loop position, best metric, the result.
"""

from loftr_train.trainer.callbacks import CallbackList, StepInfo, TrainerCallbacks
from loftr_train.trainer.run import Trainer
from loftr_train.trainer.state import BestMetric, Progress, TrainResult

__all__ = [
    "BestMetric",
    "CallbackList",
    "Progress",
    "StepInfo",
    "TrainResult",
    "Trainer",
    "TrainerCallbacks",
]
