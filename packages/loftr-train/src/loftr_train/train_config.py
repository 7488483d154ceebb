"""The typed training configuration: YAML file + ``key=value`` overrides -> :class:`TrainConfig`.

A run is described by one YAML file with the sections below (every key optional; missing keys
take the defaults shown by ``loftr-train --print-config``)::

    model:       preset + nested LoFTRConfig changes (``options``)
    data:        dataset kind, roots, train/val lists, image size, loader settings
    sampler:     the scene-balanced sampler (samples per sub-scene, replacement, seed)
    loss:        coarse/fine loss settings (:class:`loftr_train.losses.LossConfig`, spec 3.1)
    optim:       optimiser, canonical LR and batch size, weight decay, gradient clipping
    schedule:    warm-up and multi-step decay (spec section 7)
    trainer:     epochs, seed, precision, device, distributed backend and timeout, validation
    checkpoint:  how often, where, which metric selects the best checkpoint
    logging:     run folder, TensorBoard, progress bar, per-rank sample-id logs

Command-line overrides use dotted keys and YAML-parsed values, e.g. ``optim.canonical_lr=4e-3``
``schedule.milestones=[3,6]`` ``model.options.match_coarse.thr=0.1``. An unknown key anywhere is
a :class:`~loftr_core.errors.ConfigError` that lists the valid keys of its section.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union

import yaml

from loftr_core.config import PRESETS, LoFTRConfig
from loftr_core.errors import ConfigError
from loftr_train.losses import LossConfig

__all__ = [
    "CheckpointConfig",
    "DataConfig",
    "LoggingConfig",
    "ModelConfig",
    "OptimConfig",
    "SamplerConfig",
    "ScheduleConfig",
    "TrainConfig",
    "TrainerConfig",
    "apply_overrides",
    "builtin_config_path",
    "builtin_configs",
    "load_config",
]

_CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def _choice(section: str, name: str, value: object, choices: Sequence[object]) -> None:
    if value not in choices:
        raise ConfigError(
            f"invalid config value {section}.{name}={value!r}: allowed is one of {list(choices)}"
        )


def _positive(section: str, name: str, value: float | int | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(
            f"invalid config value {section}.{name}={value!r}: allowed is a number {bound}"
        )


@dataclass
class ModelConfig:
    """Which LoFTR to train.

    Attributes:
        preset: ``"default"`` (original ``default.py``), ``"modern"`` or an official preset name
            (``outdoor_ds``, ``outdoor_ot``, ``indoor_ds``, ``indoor_ds_new``, ``indoor_ot``).
        options: nested changes applied with ``LoFTRConfig.replace`` (validated there), e.g.
            ``{"match_coarse": {"thr": 0.1}, "coarse": {"layer_names": ["self", "cross"]}}``.
    """

    preset: str = "outdoor_ds"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _choice("model", "preset", self.preset, ["default", "modern", *PRESETS])
        try:
            self.build()  # validate the options now, not at the start of training
        except ConfigError as exc:
            raise ConfigError(f"model.options: {exc}") from exc

    def build(self) -> LoFTRConfig:
        """The resolved, validated :class:`LoFTRConfig`."""
        if self.preset == "default":
            base = LoFTRConfig()
        elif self.preset == "modern":
            base = LoFTRConfig.modern()
        else:
            base = PRESETS[self.preset]()
        return base.replace(**self.options) if self.options else base


@dataclass
class DataConfig:
    """Datasets and loaders.

    Attributes:
        dataset: ``"megadepth"`` or ``"synthetic"`` (homographies).
        root: MegaDepth data root (images + depths), or for ``synthetic`` an optional folder of
            source images (None = procedural textures).
        train_index_dir / val_index_dir: folders of MegaDepth scene-info files.
        train_list / val_list: MegaDepth list files of scene-info names.
        val_root: MegaDepth root of the validation data (None = ``root``).
        img_resize: MegaDepth long side (640 / 840).
        min_overlap_score_train: MegaDepth training pair filter (strict ``>``).
        synthetic: keyword arguments of the synthetic homography dataset (image size, length...),
            shared by train and val; ``synthetic_train`` / ``synthetic_val`` override per split
            (give the held-out split a different seed).
        batch_size: pairs per process and step (the true batch is ``world_size * batch_size``).
        val_batch_size: pairs per process in validation.
        num_workers: DataLoader workers per process.
        pin_memory: pin host memory (GPU runs).
        limit_val_pairs: use only the first N validation pairs (None = all).
    """

    dataset: str = "megadepth"
    root: str | None = None
    train_index_dir: str | None = None
    train_list: str | None = None
    val_root: str | None = None
    val_index_dir: str | None = None
    val_list: str | None = None
    img_resize: int = 640
    min_overlap_score_train: float = 0.0
    synthetic: dict[str, Any] = field(default_factory=dict)
    synthetic_train: dict[str, Any] = field(default_factory=dict)
    synthetic_val: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 1
    val_batch_size: int = 1
    num_workers: int = 4
    pin_memory: bool = True
    limit_val_pairs: int | None = None

    def __post_init__(self) -> None:
        _choice("data", "dataset", self.dataset, ["megadepth", "synthetic"])
        for name in ("img_resize", "batch_size", "val_batch_size", "limit_val_pairs"):
            _positive("data", name, getattr(self, name))
        _positive("data", "num_workers", self.num_workers, allow_zero=True)


@dataclass
class SamplerConfig:
    """The scene-balanced training sampler (original ``RandomConcatSampler``).

    Attributes:
        n_samples_per_subset: pairs drawn from every sub-scene each epoch (MegaDepth: 100).
        replacement: draw with replacement within a sub-scene.
        shuffle: shuffle the concatenated epoch.
        repeat: repeat every drawn pair this many times.
        seed: sampler seed; the epoch's order is a function of (seed, epoch).
    """

    n_samples_per_subset: int = 100
    replacement: bool = True
    shuffle: bool = True
    repeat: int = 1
    seed: int = 66

    def __post_init__(self) -> None:
        _positive("sampler", "n_samples_per_subset", self.n_samples_per_subset)
        _positive("sampler", "repeat", self.repeat)


@dataclass
class OptimConfig:
    """Optimiser (spec section 7): ``lr = canonical_lr * true_batch_size / canonical_bs``.

    Attributes:
        optimizer: ``"adamw"`` (decay ``adamw_decay``) or ``"adam"`` (decay ``adam_decay``).
        canonical_lr / canonical_bs: the LR at the canonical true batch size.
        gradient_clipping: max global L2 norm of the gradients (0 = off).
    """

    optimizer: str = "adamw"
    canonical_lr: float = 8e-3
    canonical_bs: int = 64
    adamw_decay: float = 0.1
    adam_decay: float = 0.0
    gradient_clipping: float = 0.5

    def __post_init__(self) -> None:
        _choice("optim", "optimizer", self.optimizer, ["adamw", "adam"])
        _positive("optim", "canonical_lr", self.canonical_lr)
        _positive("optim", "canonical_bs", self.canonical_bs)
        for name in ("adamw_decay", "adam_decay", "gradient_clipping"):
            _positive("optim", name, getattr(self, name), allow_zero=True)


@dataclass
class ScheduleConfig:
    """Warm-up then multi-step decay (spec section 7).

    Attributes:
        warmup_type: ``"linear"`` or ``"constant"``.
        warmup_step: warm-up length at the canonical batch size (divided by the LR scaling).
        warmup_ratio: warm-up starts at ``warmup_ratio * lr``.
        milestones: epochs at which the LR is multiplied by ``gamma``.
        gamma: decay factor.
    """

    warmup_type: str = "linear"
    warmup_step: int = 1875
    warmup_ratio: float = 0.1
    milestones: list[int] = field(default_factory=lambda: [8, 12, 16, 20, 24])
    gamma: float = 0.5

    def __post_init__(self) -> None:
        _choice("schedule", "warmup_type", self.warmup_type, ["linear", "constant"])
        _positive("schedule", "warmup_step", self.warmup_step, allow_zero=True)
        _positive("schedule", "warmup_ratio", self.warmup_ratio, allow_zero=True)
        _positive("schedule", "gamma", self.gamma)
        if list(self.milestones) != sorted(self.milestones) or any(m < 1 for m in self.milestones):
            raise ConfigError(
                f"invalid config value schedule.milestones={self.milestones!r}: allowed is an "
                "increasing list of epochs >= 1"
            )


@dataclass
class TrainerConfig:
    """The loop.

    Attributes:
        max_epochs: epochs to train.
        max_steps: stop after this many training iterations in total (None = no limit).
        max_time_s: stop (and checkpoint) once this process has trained this many seconds
            (rank 0's clock decides for all ranks; None = no limit).
        limit_train_batches: iterations per epoch (None = the whole epoch).
        seed: seed of model init and of every RNG (rank r uses ``seed + r`` after init).
        precision: ``"32"``, ``"bf16"`` or ``"fp16"`` (autocast; fp16 adds a gradient scaler).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        dist_backend: ``"auto"`` (NCCL on CUDA, gloo on CPU), ``"gloo"`` or ``"nccl"``.
        dist_timeout_s: timeout of every collective; a stalled rank makes the others fail with
            a clear error after this long instead of hanging.
        sync_batchnorm: convert BatchNorm to SyncBatchNorm when world_size > 1.
        find_unused_parameters: DDP option (the loss touches every parameter; keep False).
        val_every_n_epochs: validation frequency (0 = never).
        val_loss: also compute the validation loss (a second, training-path forward per batch;
            the metrics always come from the inference path).
        num_threads: torch intra-op threads per process (None = torch's default).
    """

    max_epochs: int = 30
    max_steps: int | None = None
    max_time_s: float | None = None
    limit_train_batches: int | None = None
    seed: int = 66
    precision: str = "32"
    device: str = "auto"
    dist_backend: str = "auto"
    dist_timeout_s: float = 1800.0
    sync_batchnorm: bool = True
    find_unused_parameters: bool = False
    val_every_n_epochs: int = 1
    val_loss: bool = True
    num_threads: int | None = None

    def __post_init__(self) -> None:
        _choice("trainer", "precision", self.precision, ["32", "bf16", "fp16"])
        _choice("trainer", "device", self.device, ["auto", "cpu", "cuda"])
        _choice("trainer", "dist_backend", self.dist_backend, ["auto", "gloo", "nccl"])
        for name in (
            "max_epochs",
            "max_steps",
            "limit_train_batches",
            "dist_timeout_s",
            "num_threads",
        ):
            _positive("trainer", name, getattr(self, name))
        _positive("trainer", "val_every_n_epochs", self.val_every_n_epochs, allow_zero=True)


@dataclass
class CheckpointConfig:
    """Checkpointing.

    Attributes:
        every_n_steps: also save every N training iterations (None = off).
        every_n_epochs: save at the end of every N epochs (None = off); the end of training
            always saves.
        monitor: validation metric that selects ``best.ckpt`` (higher is better).
        save_best: keep ``best.ckpt``.
        auto_resume: continue from ``<run_dir>/checkpoints/last.ckpt`` when it exists.
    """

    every_n_steps: int | None = None
    every_n_epochs: int | None = 1
    monitor: str = "auc@10"
    save_best: bool = True
    auto_resume: bool = True

    def __post_init__(self) -> None:
        _positive("checkpoint", "every_n_steps", self.every_n_steps)
        _positive("checkpoint", "every_n_epochs", self.every_n_epochs)


@dataclass
class LoggingConfig:
    """What the run writes and shows.

    Attributes:
        run_dir: the run folder (config, checkpoints, TensorBoard events, logs).
        tensorboard: write TensorBoard scalars on rank 0.
        progress_bar: tqdm bar on rank 0.
        log_every_n_steps: scalar logging frequency.
        log_sample_ids: append ``step epoch rank scene_id:pair_id ...`` per iteration to
            ``<run_dir>/samples_rank{r}.txt`` (shows which pairs each rank saw).
    """

    run_dir: str = "runs/loftr"
    tensorboard: bool = True
    progress_bar: bool = True
    log_every_n_steps: int = 1
    log_sample_ids: bool = False

    def __post_init__(self) -> None:
        _positive("logging", "log_every_n_steps", self.log_every_n_steps)


@dataclass
class TrainConfig:
    """The whole training configuration (one dataclass per section)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self) -> None:
        sparse = self.model.build().match_coarse.sparse_spvs
        if self.loss.sparse_spvs != sparse:
            raise ConfigError(
                f"loss.sparse_spvs={self.loss.sparse_spvs} differs from the model's "
                f"match_coarse.sparse_spvs={sparse}; the original uses one flag for both: set "
                "loss.sparse_spvs and model.options.match_coarse.sparse_spvs to the same value"
            )

    def to_dict(self) -> dict[str, Any]:
        """A YAML/JSON-able nested dict of primitives (also what checkpoints store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build and validate; unknown keys raise :class:`ConfigError` listing the valid ones."""
        return typing.cast(TrainConfig, _build(cls, data, "config"))

    def to_yaml(self) -> str:
        """The resolved configuration as YAML text."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------------- type checks
def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"invalid config value {where}={value!r}: allowed is true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"invalid config value {where}={value!r}: allowed is an integer")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads ``1e-3`` (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"invalid config value {where}={value!r}: allowed is a number")
        return float(value)
    if hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # ``trainer.precision=32`` parses as an int
        if not isinstance(value, str):
            raise ConfigError(f"invalid config value {where}={value!r}: allowed is a string")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"invalid config value {where}={value!r}: allowed is a list")
        return [_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"invalid config value {where}={value!r}: allowed is a mapping")
        return dict(value)
    raise ConfigError(f"{where}: unsupported config type {hint!r}")  # pragma: no cover


def _build(cls: Any, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config section {where!r} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {unknown} in section {where!r}; valid keys are {valid}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        label = key if where == "config" else f"{where}.{key}"
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, label)
        else:
            kwargs[key] = _check_type(value, hint, label)
    return cls(**kwargs)


# -------------------------------------------------------------------------------- overrides
def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a nested dict.

    Args:
        data: the nested config dict (not modified).
        overrides: strings like ``"optim.canonical_lr=4e-3"`` or ``"schedule.milestones=[3, 6]"``.

    Returns:
        A new nested dict. Unknown keys are left for :meth:`TrainConfig.from_dict` to reject.

    Raises:
        ConfigError: for a malformed override (no ``=`` or an empty key).
    """
    out = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"malformed override {item!r}: expected dotted.key=value, "
                "e.g. optim.canonical_lr=4e-3"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
        node: dict[str, Any] = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def builtin_configs() -> list[str]:
    """Names of the configs shipped with the package (``megadepth_outdoor_ds``...)."""
    return sorted(p.stem for p in _CONFIG_DIR.glob("*.yaml"))


def builtin_config_path(name: str) -> Path:
    """Path of a shipped config by name (with or without ``.yaml``)."""
    stem = name[:-5] if name.endswith(".yaml") else name
    path = _CONFIG_DIR / f"{stem}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"no shipped config named {name!r}; shipped configs are {builtin_configs()} "
            "(or pass the path of a YAML file)"
        )
    return path


def load_config(
    source: str | Path | Mapping[str, Any], overrides: Sequence[str] = ()
) -> TrainConfig:
    """Read a YAML config (path, shipped name, or dict), apply overrides, validate.

    Args:
        source: a YAML file path, the name of a shipped config (see :func:`builtin_configs`),
            or an already-parsed mapping.
        overrides: ``dotted.key=value`` strings applied on top.

    Raises:
        ConfigError: unreadable file, malformed override, unknown key or invalid value.
    """
    if isinstance(source, Mapping):
        data: Any = source
    else:
        path = Path(source)
        if not path.is_file():
            path = builtin_config_path(str(source))
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping at top level, got {data!r}")
    return TrainConfig.from_dict(apply_overrides(data, overrides))
