"""loftr-data: MegaDepth and synthetic homography datasets and the scene-balanced distributed sampler for LoFTR.

The sample contract (keys, shapes, dtypes) is documented once, in :mod:`loftr_data.sample`.
"""

__version__ = "0.1.0"

from loftr_data.collate import collate
from loftr_data.errors import (
    CollateError,
    DataConfigError,
    DatasetFileError,
    LoftrDataError,
    MissingDatasetFileError,
    SamplerStateError,
    SceneInfoError,
)
from loftr_data.homography import HomographyConfig, SyntheticHomographyDataset
from loftr_data.megadepth import MegaDepthDataset, megadepth_scenes
from loftr_data.megadepth1500 import megadepth1500
from loftr_data.photometric import PhotometricConfig
from loftr_data.sample import SampleContractError, validate_sample
from loftr_data.sampler import SceneBalancedSampler
from loftr_data.scene_info import SceneInfo, load_scene_info

__all__ = [
    "CollateError",
    "DataConfigError",
    "DatasetFileError",
    "HomographyConfig",
    "LoftrDataError",
    "MegaDepthDataset",
    "MissingDatasetFileError",
    "PhotometricConfig",
    "SampleContractError",
    "SamplerStateError",
    "SceneBalancedSampler",
    "SceneInfo",
    "SceneInfoError",
    "SyntheticHomographyDataset",
    "__version__",
    "collate",
    "load_scene_info",
    "megadepth1500",
    "megadepth_scenes",
    "validate_sample",
]
