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

Every section is a frozen dataclass validated in ``__post_init__``; a changed config is a new
object (:meth:`TrainConfig.replace`, :meth:`TrainConfig.with_overrides`). The shipped configs
and the model presets are listed by :func:`loftr_train.presets.list_presets`.

Command-line overrides use dotted keys and YAML-parsed values, e.g. ``optim.canonical_lr=4e-3``
``schedule.milestones=[3,6]`` ``model.options.match_coarse.thr=0.1``. An unknown key anywhere is
a :class:`~loftr_core.errors.ConfigError` that lists the valid keys of its section.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from loftr_core.errors import ConfigError
from loftr_core.execution import ExecutionOptions
from loftr_core.model.config import LoFTRConfig, drop_legacy_keys
from loftr_train.config_parsing import apply_overrides, build_dataclass, freeze_dicts, plain
from loftr_train.losses import LossConfig
from loftr_train.presets import list_presets, model_preset, train_preset_path

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True)
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
        _choice("model", "preset", self.preset, list_presets("model"))
        freeze_dicts(self, "options")
        options, dropped = drop_legacy_keys(self.options)
        if dropped:  # run configs written before the model/execution split
            logger.warning(
                "model.options: ignoring %s (not model settings: execution options go in "
                "trainer.execution, sparse_spvs is loss.sparse_spvs)",
                ", ".join(dropped),
            )
            object.__setattr__(self, "options", options)
        try:
            self.build()  # validate the options now, not at the start of training
        except ConfigError as exc:
            raise ConfigError(f"model.options: {exc}") from exc

    def build(self) -> LoFTRConfig:
        """The resolved, validated :class:`LoFTRConfig`."""
        base = model_preset(self.preset)
        return base.replace(**self.options) if self.options else base


@dataclass(frozen=True)
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
        freeze_dicts(self, "synthetic", "synthetic_train", "synthetic_val")
        for name in ("img_resize", "batch_size", "val_batch_size", "limit_val_pairs"):
            _positive("data", name, getattr(self, name))
        _positive("data", "num_workers", self.num_workers, allow_zero=True)


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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
    milestones: tuple[int, ...] = (8, 12, 16, 20, 24)
    gamma: float = 0.5

    def __post_init__(self) -> None:
        _choice("schedule", "warmup_type", self.warmup_type, ["linear", "constant"])
        _positive("schedule", "warmup_step", self.warmup_step, allow_zero=True)
        _positive("schedule", "warmup_ratio", self.warmup_ratio, allow_zero=True)
        _positive("schedule", "gamma", self.gamma)
        if isinstance(self.milestones, list):
            object.__setattr__(self, "milestones", tuple(self.milestones))
        if list(self.milestones) != sorted(self.milestones) or any(m < 1 for m in self.milestones):
            raise ConfigError(
                f"invalid config value schedule.milestones={self.milestones!r}: allowed is an "
                "increasing list of epochs >= 1"
            )


@dataclass(frozen=True)
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
        execution: how the model runs in training and validation, as fields of
            :class:`loftr_core.ExecutionOptions` over its defaults (e.g. ``{"onednn": false}``
            or ``{"coarse_chunk_elements": 1000000}``); not part of the model or its checkpoint.
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
    execution: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        freeze_dicts(self, "execution")
        try:
            self.execution_options()  # validate now, not at the start of training
        except ConfigError as exc:
            raise ConfigError(f"trainer.execution: {exc}") from exc
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

    def execution_options(self) -> ExecutionOptions:
        """The :class:`~loftr_core.ExecutionOptions` of ``execution``."""
        return ExecutionOptions.from_preset("default", self.execution)


@dataclass(frozen=True)
class CheckpointConfig:
    """Checkpointing.

    Attributes:
        every_n_steps: also save every N training iterations (None = off).
        every_n_epochs: save at the end of every N epochs (None = off); the end of training
            always saves.
        monitor: validation metric that selects ``best.ckpt`` (higher is better).
        save_best: keep ``best.ckpt``.
        auto_resume: continue from ``<run_dir>/checkpoints/last.ckpt`` when it exists (falling
            back to the newest readable older one when it is not readable).
        keep_last: how many of the newest checkpoints to keep: ``last.ckpt`` and the older
            ``last-1.ckpt`` ... ``last-<keep_last - 1>.ckpt`` (resume falls back along them).
    """

    every_n_steps: int | None = None
    every_n_epochs: int | None = 1
    monitor: str = "auc@10"
    save_best: bool = True
    auto_resume: bool = True
    keep_last: int = 3

    def __post_init__(self) -> None:
        _positive("checkpoint", "every_n_steps", self.every_n_steps)
        _positive("checkpoint", "every_n_epochs", self.every_n_epochs)
        _positive("checkpoint", "keep_last", self.keep_last)


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class TrainConfig:
    """The whole training configuration (one frozen dataclass per section).

    Every section is validated when it is built, and the whole when the sections are combined.
    Change a config by building a new one: :meth:`replace` (sections given as dicts of changed
    fields) or :meth:`with_overrides` (dotted ``key=value`` strings); shipped configs are
    constructors too (:meth:`preset`).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict[str, Any]:
        """A YAML/JSON-able nested dict of primitives, tuples as lists (what checkpoints store)."""
        return typing.cast(dict[str, Any], plain(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build and validate; unknown keys raise :class:`ConfigError` listing the valid ones."""
        return typing.cast(TrainConfig, build_dataclass(cls, data, "config"))

    def to_yaml(self) -> str:
        """The resolved configuration as YAML text."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def preset(cls, name: str, overrides: Sequence[str] = ()) -> TrainConfig:
        """A shipped training config (see :func:`loftr_train.presets.list_presets`).

        Raises:
            ConfigError: unknown name (the message lists the shipped configs) or bad override.
        """
        return load_config(train_preset_path(name), overrides)

    def replace(self, **changes: Any) -> TrainConfig:
        """A new, validated config with changes; a section may be a dict of its changed fields.

        Example: ``cfg.replace(trainer={"max_steps": 10}, logging={"run_dir": "runs/x"})``.

        Raises:
            ConfigError: unknown section or field, or an invalid value.
        """
        valid = [f.name for f in fields(self)]
        unknown = sorted(set(changes) - set(valid))
        if unknown:
            raise ConfigError(f"unknown config section(s) {unknown}; valid sections are {valid}")
        resolved: dict[str, Any] = {}
        for key, value in changes.items():
            if isinstance(value, Mapping):
                section = getattr(self, key)
                known = [f.name for f in fields(section)]
                bad = sorted(set(value) - set(known))
                if bad:
                    raise ConfigError(
                        f"unknown config key(s) {bad} in section {key!r}; valid keys are {known}"
                    )
                value = dataclasses.replace(section, **value)
            resolved[key] = value
        return dataclasses.replace(self, **resolved)

    def with_overrides(self, overrides: Sequence[str]) -> TrainConfig:
        """A new config with dotted ``key=value`` overrides (YAML values) applied.

        Raises:
            ConfigError: malformed override, unknown key or invalid value.
        """
        return TrainConfig.from_dict(apply_overrides(self.to_dict(), overrides))


def builtin_configs() -> list[str]:
    """Names of the shipped training configs (``list_presets("train")``)."""
    return list_presets("train")


def builtin_config_path(name: str) -> Path:
    """Path of a shipped config by name (:func:`loftr_train.presets.train_preset_path`)."""
    return train_preset_path(name)


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
            path = train_preset_path(str(source))
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping at top level, got {data!r}")
    return TrainConfig.from_dict(apply_overrides(data, overrides))
