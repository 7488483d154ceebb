"""The one preset registry of loftr-train: shipped training configs and model presets.

* ``train`` presets are the YAML files shipped under ``loftr_train/configs/`` (a whole
  :class:`~loftr_train.train_config.TrainConfig`; ``loftr-train NAME`` or
  ``TrainConfig.preset(NAME)``);
* ``model`` presets are the Python-side :class:`~loftr_core.model.config.LoFTRConfig`
  constructors that ``model.preset`` names: ``default`` (the original ``default.py``),
  ``modern`` and the official checkpoints' configurations (``outdoor_ds``...).

:func:`list_presets` lists both kinds; nothing else keeps a list of names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from loftr_core.errors import ConfigError
from loftr_core.model.config import PRESETS, LoFTRConfig

__all__ = [
    "MODEL_PRESETS",
    "TRAIN_PRESET_DIR",
    "list_presets",
    "model_preset",
    "train_preset_path",
]

#: Folder of the shipped training configs (``<name>.yaml``).
TRAIN_PRESET_DIR = Path(__file__).resolve().parent / "configs"

#: Model presets by name: constructors of a fresh :class:`LoFTRConfig`.
MODEL_PRESETS: Mapping[str, Callable[[], LoFTRConfig]] = MappingProxyType(
    {"default": LoFTRConfig, "modern": LoFTRConfig.modern, **PRESETS}
)

PresetKind = Literal["train", "model"]


def list_presets(kind: PresetKind = "train") -> list[str]:
    """Names of the ``train`` presets (shipped YAML configs) or of the ``model`` presets.

    Raises:
        ConfigError: ``kind`` is neither ``"train"`` nor ``"model"``.
    """
    if kind == "train":
        return sorted(p.stem for p in TRAIN_PRESET_DIR.glob("*.yaml"))
    if kind == "model":
        return list(MODEL_PRESETS)
    raise ConfigError(f"unknown preset kind {kind!r}; allowed is 'train' or 'model'")


def train_preset_path(name: str) -> Path:
    """Path of a shipped training config by name (with or without ``.yaml``).

    Raises:
        ConfigError: no shipped config has that name (the message lists them).
    """
    stem = name[:-5] if name.endswith(".yaml") else name
    path = TRAIN_PRESET_DIR / f"{stem}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"no shipped config named {name!r}; shipped configs are {list_presets('train')} "
            "(or pass the path of a YAML file)"
        )
    return path


def model_preset(name: str) -> LoFTRConfig:
    """A fresh :class:`LoFTRConfig` of the model preset ``name``.

    Raises:
        ConfigError: unknown name (the message lists the model presets).
    """
    try:
        return MODEL_PRESETS[name]()
    except KeyError:
        raise ConfigError(
            f"invalid config value model.preset={name!r}: allowed is one of {list_presets('model')}"
        ) from None
