"""The execution layer: how the model runs (layouts, kernels, chunks, precision), never saved.

:class:`ExecutionOptions` is the frozen, typed options object users set; :class:`Execution` turns
it into the device- and kernel-specific decisions the model's stages call.
"""

from loftr_core.execution.options import EXECUTION_PRESETS, ExecutionOptions
from loftr_core.execution.policy import Execution

__all__ = ["EXECUTION_PRESETS", "Execution", "ExecutionOptions"]
