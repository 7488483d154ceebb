"""loftr-core: the LoFTR matcher: model, official checkpoint loading, a matching API and CLI."""

from loftr_core.config import (
    PRESETS,
    BackboneConfig,
    CoarseConfig,
    FineConfig,
    LoFTRConfig,
    MatchCoarseConfig,
)
from loftr_core.errors import CheckpointError, ConfigError, InputError, LoftrError

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "BackboneConfig",
    "CheckpointError",
    "CoarseConfig",
    "ConfigError",
    "FineConfig",
    "InputError",
    "LoFTRConfig",
    "LoftrError",
    "MatchCoarseConfig",
    "__version__",
]
