"""loftr-core: the LoFTR matcher: model, official checkpoint loading, a matching API and CLI.

Layers (each imports only the ones below it; ``nox -s lint`` checks it):

- :mod:`loftr_core.cli`: the commands (``loftr-match``, ``loftr-convert``) and their shared runner;
- :mod:`loftr_core.api`: the user-facing layer: :class:`Matcher`, checkpoints, image I/O,
  geometry, plots;
- :mod:`loftr_core.model`: LoFTR's stages as in the paper and :class:`LoFTRConfig`;
- :mod:`loftr_core.execution`: how the model runs (:class:`ExecutionOptions`), never saved.
"""

from loftr_core._version import __version__
from loftr_core.api.checkpoint import (
    convert_checkpoint,
    load_model,
    read_checkpoint,
    read_state_dict,
    save_native,
)
from loftr_core.api.devices import resolve_device, resolve_dtype
from loftr_core.api.geometry import (
    PoseEstimate,
    estimate_pose,
    relative_pose_error,
    symmetric_epipolar_distance,
)
from loftr_core.api.image_io import read_image, to_gray
from loftr_core.api.matcher import Matcher, MatchResult
from loftr_core.api.memory import estimate_peak_bytes
from loftr_core.api.plotting import draw_matches, save_plot
from loftr_core.api.pretrained import PRETRAINED, fetch_pretrained
from loftr_core.errors import (
    CheckpointError,
    ConfigError,
    InputError,
    LoftrError,
    MemoryLimitError,
    WeightsUnavailableError,
)
from loftr_core.execution import EXECUTION_PRESETS, ExecutionOptions
from loftr_core.model import LoFTR
from loftr_core.model.config import (
    PRESETS,
    BackboneConfig,
    CoarseConfig,
    FineConfig,
    LoFTRConfig,
    MatchCoarseConfig,
)

__all__ = [
    "EXECUTION_PRESETS",
    "PRESETS",
    "PRETRAINED",
    "BackboneConfig",
    "CheckpointError",
    "CoarseConfig",
    "ConfigError",
    "ExecutionOptions",
    "FineConfig",
    "InputError",
    "LoFTR",
    "LoFTRConfig",
    "LoftrError",
    "MatchCoarseConfig",
    "MatchResult",
    "Matcher",
    "MemoryLimitError",
    "PoseEstimate",
    "WeightsUnavailableError",
    "__version__",
    "convert_checkpoint",
    "draw_matches",
    "estimate_peak_bytes",
    "estimate_pose",
    "fetch_pretrained",
    "load_model",
    "read_checkpoint",
    "read_image",
    "read_state_dict",
    "relative_pose_error",
    "resolve_device",
    "resolve_dtype",
    "save_native",
    "save_plot",
    "symmetric_epipolar_distance",
    "to_gray",
]
