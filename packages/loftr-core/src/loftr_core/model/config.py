"""Typed, frozen, validated configuration of the LoFTR model, with the official presets.

Field names follow the original LoFTR configuration (lower-cased yacs keys), so papers, official
checkpoints and kornia line up::

    LoFTRConfig
    ├── backbone_type, resolution, fine_window_size, fine_concat_coarse_feat
    ├── resnetfpn:     BackboneConfig      (initial_dim, block_dims, + downsample option)
    ├── coarse:        CoarseConfig        (d_model, nhead, layer_names, attention, temp_bug_fix..)
    ├── match_coarse:  MatchCoarseConfig   (thr, border_rm, match_type, dsmax_temperature, skh_*..)
    └── fine:          FineConfig          (d_model, nhead, layer_names, attention, ...)

It holds what defines the model and its matching only; how it runs (layouts, kernels, chunk
sizes, sub-stage precision) is :class:`loftr_core.ExecutionOptions`, never saved with it.

Every dataclass validates itself in ``__post_init__`` and raises :class:`ConfigError` naming the
field, the value and what is allowed. Presets are constructors (``LoFTRConfig.outdoor_ds()``...),
never mutations of a shared default. ``to_dict`` gives a JSON-able nested dict (stored inside
checkpoints); ``from_dict`` rebuilds the config, rejects unknown keys and fills missing keys with
their defaults.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from loftr_core.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "PRESETS",
    "BackboneConfig",
    "CoarseConfig",
    "FineConfig",
    "LoFTRConfig",
    "MatchCoarseConfig",
    "TransformerConfig",
    "check_thr",
    "drop_legacy_keys",
]

LAYER_NAMES = ("self", "cross")
MATCH_TYPES = ("dual_softmax", "sinkhorn")
DOWNSAMPLE_TYPES = ("conv1x1", "conv3x3")
POS_ENCODINGS = ("sine", "detr")
MESSAGE_FUSIONS = ("concat", "add")
LEGACY_KEYS: dict[str, frozenset[str]] = {
    "resnetfpn": frozenset({"channels_last", "fold_batchnorm", "fine_branch_dtype"}),
    "coarse": frozenset({"d_ffn", "compute_dtype", "onednn_linear"}),
    "fine": frozenset({"d_ffn", "compute_dtype", "onednn_linear"}),
    "match_coarse": frozenset(
        {"sparse_spvs", "max_chunk_elements", "cuda_max_chunk_elements", "onednn_matmul"}
    ),
}
"""Keys that configs (and so checkpoints) written by earlier versions may hold and that are not
part of the model: the original's unused ``d_ffn``, ``sparse_spvs`` (a loss setting:
``loftr_train.LossConfig.sparse_spvs``) and the execution options now in
:class:`loftr_core.ExecutionOptions`. ``from_dict`` accepts and ignores them (logged at debug);
``replace`` refuses them with that hint."""


def drop_legacy_keys(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``data`` (a nested config dict) without :data:`LEGACY_KEYS`, and the dotted keys dropped."""
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in data.items():
        legacy = LEGACY_KEYS.get(key, frozenset())
        if isinstance(value, Mapping) and legacy:
            dropped += [f"{key}.{k}" for k in sorted(set(value) & legacy)]
            value = {k: v for k, v in value.items() if k not in legacy}
        kept[key] = value
    return kept, dropped


def _fail(name: str, value: object, allowed: str, fix: str = "") -> ConfigError:
    msg = f"invalid config value {name}={value!r}: allowed is {allowed}"
    return ConfigError(msg + (f"; {fix}" if fix else ""))


def _int(obj: object, name: str, lo: int | None = None) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"{type(obj).__name__}.{name}", value, "an int")
    if lo is not None and value < lo:
        raise _fail(f"{type(obj).__name__}.{name}", value, f"an int >= {lo}")


def _float(obj: object, name: str, lo: float, hi: float, lo_open: bool, hi_open: bool) -> None:
    value = getattr(obj, name)
    label = f"{type(obj).__name__}.{name}"
    lo_s, hi_s = ("(" if lo_open else "["), (")" if hi_open else "]")
    allowed = f"a finite number in {lo_s}{lo}, {hi}{hi_s}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(label, value, allowed)
    value = float(value)
    too_low = value <= lo if lo_open else value < lo
    too_high = value >= hi if hi_open else value > hi
    if not math.isfinite(value) or too_low or too_high:
        raise _fail(label, value, allowed)
    object.__setattr__(obj, name, value)


def check_thr(value: object, label: str = "thr") -> float:
    """The coarse confidence threshold rule, in one place: a finite number in [0, 1).

    Used by :class:`MatchCoarseConfig`, :class:`loftr_core.Matcher` and every command's ``--thr``.
    """
    allowed = "a finite number in [0, 1) (matches need confidence > thr)"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(label, value, allowed)
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise _fail(label, value, allowed)
    return float(value)


def _bool(obj: object, name: str) -> None:
    value = getattr(obj, name)
    if not isinstance(value, bool):
        raise _fail(f"{type(obj).__name__}.{name}", value, "True or False")


def _choice(obj: object, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    if value not in choices:
        raise _fail(f"{type(obj).__name__}.{name}", value, f"one of {list(choices)}")


def _int_tuple(obj: object, name: str, length: int | None, lo: int) -> None:
    value = getattr(obj, name)
    label = f"{type(obj).__name__}.{name}"
    allowed = f"a sequence of {length if length is not None else 'some'} ints >= {lo}"
    if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length):
        raise _fail(label, value, allowed)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < lo for v in value):
        raise _fail(label, value, allowed)
    object.__setattr__(obj, name, tuple(value))


@dataclass(frozen=True)
class BackboneConfig:
    """ResNet-FPN 8/2 backbone (original section ``resnetfpn``).

    Attributes:
        initial_dim: channels of the stem (and of ``layer1``), 128 in every official model.
        block_dims: output channels of layer1..3; ``block_dims[0]`` is the fine feature width and
            ``block_dims[2]`` the coarse one.
        downsample: shortcut projection of the stride-2 blocks: ``"conv1x1"`` (official) or
            ``"conv3x3"`` (a 3x3 stride-2 convolution; design alternative, changes the state dict).
    """

    initial_dim: int = 128
    block_dims: tuple[int, int, int] = (128, 196, 256)
    downsample: str = "conv1x1"

    def __post_init__(self) -> None:
        _int(self, "initial_dim", 1)
        _int_tuple(self, "block_dims", 3, 1)
        _choice(self, "downsample", DOWNSAMPLE_TYPES)


@dataclass(frozen=True)
class TransformerConfig:
    """A local feature transformer (a stack of self/cross encoder layers).

    Attributes:
        d_model: token width.
        nhead: attention heads; must divide ``d_model``.
        layer_names: sequence of ``"self"`` / ``"cross"``.
        attention: name of a ``loftr_attention`` backend (``"linear"`` reproduces the original).
        norm_first: pre-LayerNorm encoder layers (design alternative; official: False, i.e. the
            original "norm on the branch" layer).
        message_fusion: how the attention message meets the input before the feed-forward:
            ``"concat"`` (official: MLP over ``[x, message]``) or ``"add"`` (MLP over
            ``x + message``, half as wide; design alternative, changes the state dict).
    """

    d_model: int = 256
    nhead: int = 8
    layer_names: tuple[str, ...] = ("self", "cross") * 4
    attention: str = "linear"
    norm_first: bool = False
    message_fusion: str = "concat"

    def __post_init__(self) -> None:
        _int(self, "d_model", 1)
        _int(self, "nhead", 1)
        name = type(self).__name__
        if self.d_model % self.nhead != 0:
            raise _fail(
                f"{name}.nhead",
                self.nhead,
                f"a divisor of d_model={self.d_model}",
                "change nhead or d_model",
            )
        names = self.layer_names
        if (
            not isinstance(names, (list, tuple))
            or len(names) == 0
            or any(n not in LAYER_NAMES for n in names)
        ):
            raise _fail(
                f"{name}.layer_names", names, f"a non-empty sequence of {list(LAYER_NAMES)}"
            )
        object.__setattr__(self, "layer_names", tuple(names))
        if not isinstance(self.attention, str) or not self.attention:
            raise _fail(f"{name}.attention", self.attention, "a loftr_attention backend name")
        _bool(self, "norm_first")
        _choice(self, "message_fusion", MESSAGE_FUSIONS)


@dataclass(frozen=True)
class CoarseConfig(TransformerConfig):
    """The coarse transformer and its positional encoding (original section ``coarse``).

    Attributes:
        temp_bug_fix: False reproduces the original positional encoding with its operator
            precedence bug (frequencies exp(-2k)), which outdoor_ds/ot, indoor_ds/ot need; True is
            the fixed encoding (10000^(-2k/(d/2))) of indoor_ds_new.
        pos_encoding: ``"sine"`` (LoFTR's, 1-based pixel-cell positions) or ``"detr"`` (DETR-style:
            normalised coordinates times 2*pi, temperature 10000; design alternative).
    """

    temp_bug_fix: bool = True
    pos_encoding: str = "sine"

    def __post_init__(self) -> None:
        super().__post_init__()
        _bool(self, "temp_bug_fix")
        _choice(self, "pos_encoding", POS_ENCODINGS)
        if self.d_model % 4 != 0:
            raise _fail("CoarseConfig.d_model", self.d_model, "a multiple of 4 (2-D sine encoding)")


@dataclass(frozen=True)
class FineConfig(TransformerConfig):
    """The fine transformer (original section ``fine``)."""

    d_model: int = 128
    nhead: int = 8
    layer_names: tuple[str, ...] = ("self", "cross")


@dataclass(frozen=True)
class MatchCoarseConfig:
    """Coarse matching (original section ``match_coarse``).

    Attributes:
        thr: confidence threshold (strict ``>``), in [0, 1).
        border_rm: coarse cells removed at every border (relative to the valid region with masks).
        match_type: ``"dual_softmax"`` or ``"sinkhorn"`` (optimal transport with a dustbin).
        dsmax_temperature: dual-softmax temperature.
        skh_iters: Sinkhorn iterations.
        skh_init_bin_score: initial value of the learned dustbin score.
        skh_prefilter: in eval, drop rows/columns whose best entry is the dustbin.
        train_coarse_percent: share of the candidates kept for fine training (spec §5.3).
        train_pad_num_gt_min: minimum number of ground-truth pads in training.
    """

    thr: float = 0.2
    border_rm: int = 2
    match_type: str = "dual_softmax"
    dsmax_temperature: float = 0.1
    skh_iters: int = 3
    skh_init_bin_score: float = 1.0
    skh_prefilter: bool = False
    train_coarse_percent: float = 0.2
    train_pad_num_gt_min: int = 200

    def __post_init__(self) -> None:
        object.__setattr__(self, "thr", check_thr(self.thr, "MatchCoarseConfig.thr"))
        _int(self, "border_rm", 0)
        _choice(self, "match_type", MATCH_TYPES)
        _float(self, "dsmax_temperature", 0.0, math.inf, lo_open=True, hi_open=True)
        _int(self, "skh_iters", 1)
        _float(self, "skh_init_bin_score", -math.inf, math.inf, lo_open=True, hi_open=True)
        _bool(self, "skh_prefilter")
        _float(self, "train_coarse_percent", 0.0, 1.0, lo_open=True, hi_open=False)
        _int(self, "train_pad_num_gt_min", 0)


_SECTIONS: dict[str, type[Any]] = {
    "resnetfpn": BackboneConfig,
    "coarse": CoarseConfig,
    "match_coarse": MatchCoarseConfig,
    "fine": FineConfig,
}


def _section_from_dict(cls: Any, data: Any, where: str) -> Any:
    valid = [f.name for f in fields(cls)]
    if not isinstance(data, Mapping):
        raise _fail(where, data, f"a mapping with keys from {valid}")
    kept, dropped = drop_legacy_keys({where: data})
    if dropped:
        logger.debug("config: ignoring %s (not part of the model)", dropped)
    _check_known(kept[where], valid, where)
    return cls(**kept[where])


def _check_known(given: Iterable[str], valid: list[str], where: str) -> None:
    """Raise a :class:`ConfigError` naming every key of ``given`` not in ``valid``."""
    unknown = sorted(set(given) - set(valid))
    if unknown:
        hint = ""
        if set(unknown) & LEGACY_KEYS.get(where, frozenset()):
            hint = (
                " (how the model runs is not part of its config: set it with "
                "loftr_core.ExecutionOptions; sparse_spvs is loftr_train.LossConfig's)"
            )
        raise ConfigError(
            f"unknown config key(s) {unknown} in {where!r}; valid keys are {valid}{hint}"
        )


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class LoFTRConfig:
    """The whole LoFTR model configuration.

    The default instance equals the original ``default.py`` (fixed positional encoding,
    dual-softmax). Use the presets for the official checkpoints.

    Attributes:
        backbone_type: only ``"ResNetFPN"``.
        resolution: (coarse, fine) strides; only (8, 2).
        fine_window_size: side of the fine window (odd), 5 officially.
        fine_concat_coarse_feat: merge the coarse token into every fine window position.
        resnetfpn, coarse, match_coarse, fine: the sections.
    """

    backbone_type: str = "ResNetFPN"
    resolution: tuple[int, int] = (8, 2)
    fine_window_size: int = 5
    fine_concat_coarse_feat: bool = True
    resnetfpn: BackboneConfig = field(default_factory=BackboneConfig)
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    match_coarse: MatchCoarseConfig = field(default_factory=MatchCoarseConfig)
    fine: FineConfig = field(default_factory=FineConfig)

    def __post_init__(self) -> None:
        _choice(self, "backbone_type", ("ResNetFPN",))
        _int_tuple(self, "resolution", 2, 1)
        if self.resolution != (8, 2):
            raise _fail("LoFTRConfig.resolution", self.resolution, "(8, 2) (ResNet-FPN 8/2)")
        _int(self, "fine_window_size", 1)
        if self.fine_window_size % 2 != 1:
            raise _fail("LoFTRConfig.fine_window_size", self.fine_window_size, "an odd int >= 1")
        _bool(self, "fine_concat_coarse_feat")
        for name, cls in _SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise _fail(f"LoFTRConfig.{name}", getattr(self, name), f"a {cls.__name__}")
        dims = self.resnetfpn.block_dims
        if self.coarse.d_model != dims[2]:
            raise _fail(
                "CoarseConfig.d_model",
                self.coarse.d_model,
                f"resnetfpn.block_dims[2]={dims[2]} (the coarse feature width)",
            )
        if self.fine.d_model != dims[0]:
            raise _fail(
                "FineConfig.d_model",
                self.fine.d_model,
                f"resnetfpn.block_dims[0]={dims[0]} (the fine feature width)",
            )

    # ----------------------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able nested dict (tuples become lists); ``from_dict`` inverts it."""
        return dict(_to_jsonable(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoFTRConfig:
        """Build a config from a (possibly partial) nested dict.

        Missing keys take their defaults; unknown keys raise :class:`ConfigError` listing the
        valid ones. Keys are case-insensitive (the original yacs configs are upper case).
        """
        if not isinstance(data, Mapping):
            raise _fail("LoFTRConfig", data, "a mapping")
        data = _lower_keys(data)
        _check_known(data, [f.name for f in fields(cls)], "LoFTRConfig")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            section = _SECTIONS.get(key)
            kwargs[key] = _section_from_dict(section, value, key) if section else value
        return cls(**kwargs)

    def replace(self, **changes: Any) -> LoFTRConfig:
        """A copy with changes; a section may be given as a dict of its changed fields.

        Example: ``cfg.replace(match_coarse={"thr": 0.1}, fine_window_size=7)``.
        """
        _check_known(changes, [f.name for f in fields(self)], "LoFTRConfig")
        resolved: dict[str, Any] = {}
        for key, value in changes.items():
            if key in _SECTIONS and isinstance(value, Mapping):
                _check_known(value, [f.name for f in fields(getattr(self, key))], key)
                value = dataclasses.replace(getattr(self, key), **value)
            resolved[key] = value
        return dataclasses.replace(self, **resolved)

    # ----------------------------------------------------------------------------------- presets
    @classmethod
    def outdoor_ds(cls) -> LoFTRConfig:
        """``outdoor_ds.ckpt`` (MegaDepth, dual-softmax, buggy pos-enc, border_rm 2)."""
        return cls(
            coarse=CoarseConfig(temp_bug_fix=False),
            match_coarse=MatchCoarseConfig(match_type="dual_softmax", train_coarse_percent=0.3),
        )

    @classmethod
    def outdoor_ot(cls) -> LoFTRConfig:
        """``outdoor_ot.ckpt`` (MegaDepth, optimal transport 3 iters, buggy pos-enc)."""
        return cls(
            coarse=CoarseConfig(temp_bug_fix=False),
            match_coarse=MatchCoarseConfig(match_type="sinkhorn", train_coarse_percent=0.3),
        )

    @classmethod
    def indoor_ds(cls) -> LoFTRConfig:
        """``indoor_ds.ckpt`` (ScanNet, dual-softmax, buggy pos-enc, border_rm 0 as evaluated)."""
        return cls(
            coarse=CoarseConfig(temp_bug_fix=False),
            match_coarse=MatchCoarseConfig(match_type="dual_softmax", border_rm=0),
        )

    @classmethod
    def indoor_ds_new(cls) -> LoFTRConfig:
        """``indoor_ds_new.ckpt`` (ScanNet, dual-softmax, FIXED pos-enc, border_rm 0)."""
        return cls(
            coarse=CoarseConfig(temp_bug_fix=True),
            match_coarse=MatchCoarseConfig(match_type="dual_softmax", border_rm=0),
        )

    @classmethod
    def indoor_ot(cls) -> LoFTRConfig:
        """``indoor_ot.ckpt`` (ScanNet, optimal transport, buggy pos-enc, border_rm 2)."""
        return cls(
            coarse=CoarseConfig(temp_bug_fix=False),
            match_coarse=MatchCoarseConfig(match_type="sinkhorn"),
        )

    @classmethod
    def modern(cls) -> LoFTRConfig:
        """All design alternatives on (no official checkpoint; for training from scratch).

        Pre-LayerNorm encoder layers, message added (not concatenated) before the feed-forward,
        3x3 stride-2 shortcut convolutions, DETR-style positional encoding; otherwise outdoor DS.
        """
        return cls(
            resnetfpn=BackboneConfig(downsample="conv3x3"),
            coarse=CoarseConfig(
                temp_bug_fix=True, pos_encoding="detr", norm_first=True, message_fusion="add"
            ),
            match_coarse=MatchCoarseConfig(match_type="dual_softmax", train_coarse_percent=0.3),
            fine=FineConfig(norm_first=True, message_fusion="add"),
        )


def _lower_keys(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        k = key.lower() if isinstance(key, str) else key
        out[k] = _lower_keys(value) if isinstance(value, Mapping) else value
    return out


PRESETS: dict[str, Callable[[], LoFTRConfig]] = {
    "outdoor_ds": LoFTRConfig.outdoor_ds,
    "outdoor_ot": LoFTRConfig.outdoor_ot,
    "indoor_ds": LoFTRConfig.indoor_ds,
    "indoor_ds_new": LoFTRConfig.indoor_ds_new,
    "indoor_ot": LoFTRConfig.indoor_ot,
}
"""The official checkpoints' configurations, keyed by checkpoint name (``modern`` is not here)."""
