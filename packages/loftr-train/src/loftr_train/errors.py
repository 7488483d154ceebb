"""The error hierarchy of loftr-train.

Every error is a :class:`loftr_core.errors.LoftrError` and also subclasses the matching builtin
(``ValueError``...), so ``except ValueError`` keeps working. Messages say what failed, the
offending value, what is allowed and how to fix it.
"""

from __future__ import annotations

from loftr_core.errors import ConfigError, LoftrError

__all__ = ["ConfigError", "EvaluationError", "LoftrError", "SupervisionError"]


class SupervisionError(LoftrError, ValueError):
    """A batch cannot be supervised: missing ground-truth keys or tensors of the wrong shape."""


class EvaluationError(LoftrError, ValueError):
    """An evaluation input (checkpoint, test list, data root, predictions) is unusable."""
