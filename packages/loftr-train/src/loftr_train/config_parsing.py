"""From nested dicts of YAML values to typed, frozen config dataclasses; dotted overrides.

The machinery behind :meth:`loftr_train.train_config.TrainConfig.from_dict` and
:func:`loftr_train.train_config.load_config`: :func:`build_dataclass` checks every value
against the field's type hint (a :class:`~loftr_core.errors.ConfigError` naming the key, the
value and what is allowed) and rejects unknown keys listing the valid ones;
:func:`apply_overrides` applies ``dotted.key=value`` strings to a nested dict.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any, Union

import yaml

from loftr_core.errors import ConfigError

__all__ = ["apply_overrides", "build_dataclass", "freeze_dicts", "plain"]


def freeze_dicts(obj: object, *names: str) -> None:
    """Give a frozen section its own copies of its mapping fields (callers keep theirs)."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, Mapping):
            object.__setattr__(obj, name, copy.deepcopy(dict(value)))


def plain(value: Any) -> Any:
    """Tuples -> lists, recursively (YAML- and JSON-able)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


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
    if origin is list or origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"invalid config value {where}={value!r}: allowed is a list")
        items = [_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"invalid config value {where}={value!r}: allowed is a mapping")
        return dict(value)
    raise ConfigError(f"{where}: unsupported config type {hint!r}")  # pragma: no cover


def build_dataclass(cls: Any, data: Any, where: str) -> Any:
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
            kwargs[key] = build_dataclass(hint, value, label)
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
