"""Compatibility names: the validation metrics moved to the evaluation core.

The per-pair scoring and aggregation that validation and ``loftr-eval`` share live in
:mod:`loftr_train.scoring`; the trainer's validation pass is
:mod:`loftr_train.trainer.validation`. This module keeps :func:`homography_errors` importable
from its old place (``experiments/train_synthetic.py`` uses it).
"""

from loftr_train.scoring import homography_errors

__all__ = ["homography_errors"]
