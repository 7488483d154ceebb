"""loftr-core: the LoFTR matcher: model, official checkpoint loading, a matching API and CLI."""

from loftr_core.checkpoint import (
    convert_checkpoint,
    load_model,
    read_checkpoint,
    read_state_dict,
    save_native,
)
from loftr_core.config import (
    PRESETS,
    BackboneConfig,
    CoarseConfig,
    FineConfig,
    LoFTRConfig,
    MatchCoarseConfig,
)
from loftr_core.errors import CheckpointError, ConfigError, InputError, LoftrError
from loftr_core.geometry import (
    PoseEstimate,
    estimate_pose,
    relative_pose_error,
    symmetric_epipolar_distance,
)
from loftr_core.image_io import read_image, to_gray
from loftr_core.matcher import Matcher, MatchResult
from loftr_core.model import LoFTR
from loftr_core.plotting import draw_matches, save_plot

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
__all__ += [
    "MatchResult",
    "Matcher",
    "PoseEstimate",
    "convert_checkpoint",
    "draw_matches",
    "estimate_pose",
    "load_model",
    "read_checkpoint",
    "read_image",
    "read_state_dict",
    "relative_pose_error",
    "save_native",
    "save_plot",
    "symmetric_epipolar_distance",
    "to_gray",
]
__all__ += ["LoFTR"]
