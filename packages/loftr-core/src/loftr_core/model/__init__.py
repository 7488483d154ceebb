"""The model layer: LoFTR's stages as in the paper, and the configuration that defines them.

One module per stage (backbone, positional encoding, transformer, coarse matching, optimal
transport, fine preprocessing, fine matching) plus the training-time ground-truth padding. Device-
and kernel-specific code is not here: the stages call :mod:`loftr_core.execution`.
"""

from loftr_core.model.loftr import LoFTR

__all__ = ["LoFTR"]
