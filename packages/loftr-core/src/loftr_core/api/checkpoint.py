"""Reading, checking and writing LoFTR checkpoints -- the one module that touches weight files.

Four layouts are recognised from the file's content (not its name):

``"lightning"``
    The official ``*.ckpt`` files (zju3dv/LoFTR): a PyTorch-Lightning checkpoint
    ``{"state_dict": {"matcher.backbone.conv1.weight": ...}, "epoch": ..., "global_step": ...,
    "optimizer_states": ..., "callbacks": ...}``. Only ``state_dict`` is used; the ``matcher.``
    prefix is stripped.
``"kornia"``
    The same keys without the prefix, either as a bare state dict or under ``"state_dict"``
    (kornia's hosted weights), in a ``torch.save`` file or a plain safetensors file.
``"native"``
    Our format: a safetensors file whose metadata holds the model config as JSON
    (``loftr_config``), so a checkpoint rebuilds its own model (:func:`save_native`).
``"loftr-train"``
    What ``loftr-train`` writes (``last.ckpt``, ``best.ckpt``): ``format``
    ``"loftr-train-checkpoint/1"``, the state dict under ``model`` and the model config under
    ``model_config`` (any size or design alternative: the model is rebuilt from it); the
    optimiser and loop state are ignored here.

Safety: nothing in a weight file is executed. ``torch.save`` files are read with
``torch.load(weights_only=True)``. Official files written by old Lightning versions also pickle
references to Lightning/yacs classes in their *metadata* (callback states); those references are
resolved to an inert placeholder class, never imported, so the weights load without Lightning
installed and without running any of the file's code. A file whose weights themselves need
arbitrary objects (e.g. ``torch.save(model)``) is refused with a message saying how to re-save it.

Whether a checkpoint is dual-softmax (DS) or optimal transport (OT) is read from its keys
(``coarse_matching.bin_score`` is present only in OT checkpoints); loading it into a preset of the
other kind is refused. Missing keys, unexpected keys and wrong shapes are errors naming the keys
and both shapes.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from loftr_core._version import __version__
from loftr_core.api.devices import resolve_device
from loftr_core.errors import CheckpointError, ConfigError
from loftr_core.execution import ExecutionOptions
from loftr_core.model import LoFTR
from loftr_core.model.config import PRESETS, LoFTRConfig

__all__ = [
    "CheckpointLayout",
    "LoadedCheckpoint",
    "check_finite",
    "check_state_dict",
    "convert_checkpoint",
    "load_error_reason",
    "load_model",
    "match_type_of",
    "read_checkpoint",
    "read_state_dict",
    "save_native",
]

logger = logging.getLogger(__name__)

CheckpointLayout = Literal["lightning", "kornia", "native", "loftr-train"]

#: Prefix of every key in the official Lightning checkpoints (the LightningModule attribute).
OFFICIAL_PREFIX = "matcher."
#: The key that only optimal-transport (sinkhorn) checkpoints have.
OT_KEY = "coarse_matching.bin_score"
NATIVE_FORMAT = "loftr-native"
NATIVE_FORMAT_VERSION = "1"
_CONFIG_META = "loftr_config"

OFFICIAL_CHECKPOINTS_HELP = (
    "the official weights outdoor_ds.ckpt, outdoor_ot.ckpt, indoor_ds.ckpt, indoor_ds_new.ckpt "
    "and indoor_ot.ckpt are linked from the README of https://github.com/zju3dv/LoFTR (the "
    "'pretrained models' link, the authors' Google Drive folder)"
)


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read from disk.

    Attributes:
        state_dict: model keys WITHOUT the ``matcher.`` prefix -> tensors (on CPU).
        layout: which layout the file had.
        config: the stored model config (native files only), else ``None``.
        path: the file it came from.
    """

    state_dict: dict[str, torch.Tensor]
    layout: CheckpointLayout
    config: LoFTRConfig | None
    path: Path

    @property
    def match_type(self) -> str:
        """``"sinkhorn"`` for OT checkpoints, ``"dual_softmax"`` for DS ones."""
        return match_type_of(self.state_dict)


_INERT_MARK = "_loftr_inert_placeholder"


class _InertPickledObject:
    """Stand-in for every class or function a checkpoint's pickle references (never the real one).

    Calling or instantiating it returns an empty ``OrderedDict`` marked as a placeholder (the one
    container type the weights-only unpickler lets pickled objects fill with items and
    attributes), so no code from the checkpoint runs and the placeholder is recognisable.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        inert: OrderedDict[Any, Any] = OrderedDict()
        inert.__dict__[_INERT_MARK] = True
        return inert


def _is_inert(obj: Any) -> bool:
    return bool(getattr(obj, "__dict__", {}).get(_INERT_MARK, False))


def match_type_of(state_dict: Mapping[str, Any]) -> str:
    """``"sinkhorn"`` if the state dict has ``coarse_matching.bin_score`` (OT), else ``"dual_softmax"``."""
    return "sinkhorn" if OT_KEY in state_dict else "dual_softmax"


def _kind(match_type: str) -> str:
    return "optimal-transport (OT)" if match_type == "sinkhorn" else "dual-softmax (DS)"


def _is_safetensors(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < header_len <= path.stat().st_size - 8


def _read_safetensors(path: Path) -> LoadedCheckpoint:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
            state = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{str(path)!r} looks like a safetensors file but cannot be read ({exc}); it may be "
            "truncated, re-create or re-download it"
        ) from None
    config = None
    if _CONFIG_META in metadata:
        try:
            config = LoFTRConfig.from_dict(json.loads(metadata[_CONFIG_META]))
        except (json.JSONDecodeError, ConfigError) as exc:
            raise CheckpointError(
                f"the model config stored in {str(path)!r} is invalid: {exc}; re-create the file "
                "with loftr-convert or save_native"
            ) from None
    layout: CheckpointLayout = "native" if config is not None else "kornia"
    state, prefixed = _strip_prefix(state, path)
    if prefixed:
        layout = "lightning"
    return LoadedCheckpoint(state_dict=state, layout=layout, config=config, path=path)


def _not_a_checkpoint(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"{str(path)!r} is not a PyTorch checkpoint or safetensors file ({why}); pass a LoFTR "
        f"checkpoint ({OFFICIAL_CHECKPOINTS_HELP})"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def load_error_reason(exc: BaseException) -> str:
    """Why ``torch.load`` refused a file, in one phrase: the specific reason inside torch's long
    weights-only message, else its first line, without torch's advice to load it unsafely."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = text.split(marker, 1)[1].strip().splitlines()
        return detail[0].strip() if detail else "unsupported content"
    first = _first_line(exc)
    return first.split(" Please ")[0].split("weights_only")[0].rstrip(" ,(;:")


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; pickled globals are mapped to an inert placeholder."""
    with path.open("rb") as fh:
        head = fh.read(2)
    is_zip = zipfile.is_zipfile(path)
    if not is_zip and not head.startswith(b"\x80"):  # neither torch's zip nor a legacy pickle
        raise _not_a_checkpoint(path, "neither a zip archive nor a pickle")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first_error: BaseException = exc
    except Exception as exc:  # torch raises many types for corrupt files
        raise _not_a_checkpoint(path, _first_line(exc)) from None
    unsafe: list[str] = []
    list_globals = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if is_zip and list_globals is not None:  # torch >= 2.5
        try:
            unsafe = list_globals(str(path))
        except Exception as exc:
            raise _not_a_checkpoint(path, _first_line(exc)) from None
    if not unsafe:
        raise CheckpointError(
            f"{str(path)!r} cannot be read with torch.load(weights_only=True) and is refused "
            f"(loading it otherwise could execute code; {load_error_reason(first_error)}). Re-save "
            "the weights with torch.save(model.state_dict(), path) or convert them to safetensors"
        )
    logger.info("%s: mapping pickled globals %s to an inert placeholder", path, sorted(unsafe))
    stubs: list[Any] = [(_InertPickledObject, name) for name in unsafe]
    try:
        with torch.serialization.safe_globals(stubs):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise CheckpointError(
            f"{str(path)!r} stores pickled Python objects ({', '.join(sorted(unsafe))}) that "
            "cannot be read without running their code; it is refused (nothing was executed). "
            "Re-save the weights with torch.save(model.state_dict(), path)"
        ) from None


def _strip_prefix(state: dict[str, Any], path: Path) -> tuple[dict[str, Any], bool]:
    prefixed = [k for k in state if isinstance(k, str) and k.startswith(OFFICIAL_PREFIX)]
    if not prefixed:
        return state, False
    return {
        (
            k[len(OFFICIAL_PREFIX) :] if isinstance(k, str) and k.startswith(OFFICIAL_PREFIX) else k
        ): v
        for k, v in state.items()
    }, True


def read_checkpoint(path: str | os.PathLike[str]) -> LoadedCheckpoint:
    """Read a checkpoint in any supported layout without building a model.

    Args:
        path: an official Lightning ``.ckpt``, a kornia state dict, a plain or native
            safetensors file.

    Returns:
        The state dict (``matcher.`` stripped), the detected layout and the stored config
        (native files).

    Raises:
        CheckpointError: the file is missing, empty, not a checkpoint, needs arbitrary objects
            to unpickle, or holds no state dict of tensors.
    """
    p = Path(path)
    if not p.is_file():
        what = "does not exist" if not p.exists() else "is not a file"
        raise CheckpointError(
            f"checkpoint {str(p)!r} {what}; pass the path of a LoFTR checkpoint ({OFFICIAL_CHECKPOINTS_HELP})"
        )
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(p)!r} is empty (0 bytes); download it again")
    ckpt = _read_safetensors(p) if _is_safetensors(p) else _read_torch_file(p)
    bad = [k for k, v in ckpt.state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"checkpoint {str(p)!r} has non-tensor values under {_list([str(k) for k in bad], 5)} "
            "(pickled Python objects are never executed); a state dict must map names to tensors, "
            "re-save it with torch.save(model.state_dict(), path)"
        )
    if not ckpt.state_dict:
        raise CheckpointError(f"checkpoint {str(p)!r} holds no tensors")
    logger.debug("%s: layout %s, %d tensors", p, ckpt.layout, len(ckpt.state_dict))
    return ckpt


TRAINER_FORMAT_PREFIX = "loftr-train-checkpoint/"
"""``format`` of the checkpoints ``loftr-train`` writes (model state dict under ``model``, its
config under ``model_config``, plus optimiser and loop state, which inference ignores)."""


def _read_trainer_checkpoint(obj: Mapping[str, Any], p: Path) -> LoadedCheckpoint:
    state, stored = obj.get("model"), obj.get("model_config")
    if not isinstance(state, Mapping) or not isinstance(stored, Mapping):
        raise CheckpointError(
            f"{str(p)!r} is a loftr-train checkpoint ({obj['format']}) without 'model' and "
            "'model_config'; it is truncated or from another tool, use another checkpoint"
        )
    try:
        config = LoFTRConfig.from_dict(stored)
    except ConfigError as exc:
        raise CheckpointError(f"the model config stored in {str(p)!r} is invalid: {exc}") from None
    return LoadedCheckpoint(state_dict=dict(state), layout="loftr-train", config=config, path=p)


def _read_torch_file(p: Path) -> LoadedCheckpoint:
    obj = _torch_load(p)
    if isinstance(obj, Mapping) and str(obj.get("format", "")).startswith(TRAINER_FORMAT_PREFIX):
        return _read_trainer_checkpoint(obj, p)
    state: Any = obj
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        state = obj["state_dict"]
    if not isinstance(state, Mapping) or _is_inert(state):
        found = "a pickled Python object" if _is_inert(obj) else type(obj).__name__
        raise CheckpointError(
            f"{str(p)!r} does not hold a state dict (found {found}); if it is a pickled "
            "model, re-save it with torch.save(model.state_dict(), path)"
        )
    sd = dict(state)
    sd, prefixed = _strip_prefix(sd, p)
    layout: CheckpointLayout = "lightning" if prefixed else "kornia"
    return LoadedCheckpoint(state_dict=sd, layout=layout, config=None, path=p)


def read_state_dict(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], CheckpointLayout]:
    """The state dict (``matcher.`` prefix stripped) and the layout of a checkpoint file.

    See :func:`read_checkpoint` for the accepted files and errors.
    """
    ckpt = read_checkpoint(path)
    return ckpt.state_dict, ckpt.layout


def _list(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(
    expected: Mapping[str, torch.Tensor],
    got: Mapping[str, torch.Tensor],
    *,
    source: str = "checkpoint",
) -> None:
    """Raise unless ``got`` has exactly the keys and shapes of ``expected``.

    Args:
        expected: the model's ``state_dict()``.
        got: the checkpoint's state dict (prefix stripped).
        source: name used in the message (e.g. the file path).

    Raises:
        CheckpointError: naming every missing key, unexpected key and shape mismatch (with both
            shapes).
    """
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [
        f"{k}: checkpoint {list(got[k].shape)} vs model {list(expected[k].shape)}"
        for k in expected
        if k in got and tuple(got[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_list(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_list(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatch(es): {_list(wrong, 5)}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit the model: " + "; ".join(problems) + ". Check that the "
            "checkpoint and the preset/config describe the same architecture"
        )


def check_finite(state_dict: Mapping[str, torch.Tensor], *, source: str = "checkpoint") -> None:
    """Raise unless every floating-point tensor of ``state_dict`` is finite.

    A model with NaN or infinite weights loads without complaint and then finds no matches; this
    names the tensors instead.

    Raises:
        CheckpointError: naming the non-finite tensors (up to 5) and how many values.
    """
    bad = []
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            count = int((~torch.isfinite(value)).sum())
            if count:
                bad.append(f"{key} ({count} of {value.numel()} values)")
    if bad:
        raise CheckpointError(
            f"{source} has non-finite (NaN or inf) weights in {_list(bad, 5)}; the training that "
            "wrote it diverged or the file is damaged: use an earlier checkpoint"
        )


def _infer_preset(path: Path, match_type: str) -> str:
    stem = path.stem.lower()
    for candidate in (stem, stem.removeprefix("loftr_")):
        if candidate in PRESETS and PRESETS[candidate]().match_coarse.match_type == match_type:
            return candidate
    return "outdoor_ot" if match_type == "sinkhorn" else "outdoor_ds"


def resolve_config(
    ckpt: LoadedCheckpoint, preset: str | LoFTRConfig | None = None
) -> tuple[LoFTRConfig, str]:
    """The config to build for a checkpoint, checked against its DS/OT kind.

    Args:
        ckpt: a checkpoint from :func:`read_checkpoint`.
        preset: a preset name, a full config, or ``None`` (native and loftr-train: the stored
            config; others: the preset named like the file, e.g. ``indoor_ds_new.ckpt``, else
            ``outdoor_ds`` / ``outdoor_ot`` by the checkpoint's kind).

    Returns:
        The config and a short description of where it came from.

    Raises:
        CheckpointError: the preset is unknown or of the other kind (DS vs OT).
    """
    match_type = ckpt.match_type
    if isinstance(preset, LoFTRConfig):
        config, origin = preset, "the given config"
    elif preset is not None:
        if preset not in PRESETS:
            raise CheckpointError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        config, origin = PRESETS[preset](), f"preset {preset!r}"
    elif ckpt.config is not None:
        config, origin = ckpt.config, "the config stored in the checkpoint"
    else:
        name = _infer_preset(ckpt.path, match_type)
        config, origin = PRESETS[name](), f"preset {name!r} (inferred; pass a preset to choose)"
        logger.info("%s: no preset given, using %s", ckpt.path, origin)
    if config.match_coarse.match_type != match_type:
        fits = sorted(n for n, f in PRESETS.items() if f().match_coarse.match_type == match_type)
        raise CheckpointError(
            f"checkpoint {str(ckpt.path)!r} is a {_kind(match_type)} checkpoint "
            f"({'has' if match_type == 'sinkhorn' else 'lacks'} {OT_KEY}) but {origin} uses "
            f"match_type={config.match_coarse.match_type!r}; use a matching preset: {fits}"
        )
    return config, origin


def load_model(
    path: str | os.PathLike[str],
    preset: str | LoFTRConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    attention: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    options: ExecutionOptions | None = None,
) -> LoFTR:
    """Build a LoFTR model from a checkpoint in any supported layout, in eval mode.

    Args:
        path: official ``.ckpt``, kornia state dict, or native / plain safetensors file.
        preset: preset name (``"outdoor_ds"``...), a :class:`LoFTRConfig`, or ``None`` (see
            :func:`resolve_config`).
        device: where to put the model.
        attention: override the attention backend of both transformers (e.g. ``"sdpa"``).
        overrides: further config changes, as for :meth:`LoFTRConfig.replace`, e.g.
            ``{"match_coarse": {"thr": 0.1}}``; the DS/OT kind cannot be changed.
        options: how the model runs (:class:`~loftr_core.execution.ExecutionOptions`).

    Returns:
        ``loftr_core.model.LoFTR`` with the checkpoint's weights, ``eval()``-ed.

    Raises:
        CheckpointError: unreadable file, DS/OT mismatch, missing/unexpected keys, wrong shapes.
    """
    target = resolve_device(device)
    ckpt = read_checkpoint(path)
    config, _ = resolve_config(ckpt, preset)
    if attention is not None:
        config = config.replace(coarse={"attention": attention}, fine={"attention": attention})
    if overrides:
        config = config.replace(**dict(overrides))
        if config.match_coarse.match_type != ckpt.match_type:
            raise CheckpointError(
                f"overrides change match_type to {config.match_coarse.match_type!r} but checkpoint "
                f"{str(ckpt.path)!r} is a {_kind(ckpt.match_type)} checkpoint"
            )
    model = LoFTR(config, options)
    check_state_dict(model.state_dict(), ckpt.state_dict, source=f"checkpoint {str(ckpt.path)!r}")
    check_finite(ckpt.state_dict, source=f"checkpoint {str(ckpt.path)!r}")
    model.load_state_dict(ckpt.state_dict, strict=True)
    return model.to(target).eval()


def save_native(model: torch.nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write a model's weights and config as a native safetensors checkpoint.

    Args:
        model: a ``LoFTR`` model (must have ``.config``, a :class:`LoFTRConfig`).
        path: output file (conventionally ``*.safetensors``); parent folders are created.

    Returns:
        The written path.
    """
    from safetensors.torch import save_file

    config = getattr(model, "config", None)
    if not isinstance(config, LoFTRConfig):
        raise CheckpointError(
            f"save_native needs a LoFTR model with a .config LoFTRConfig, got {type(model).__name__}"
        )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {
        "format": NATIVE_FORMAT,
        "format_version": NATIVE_FORMAT_VERSION,
        _CONFIG_META: json.dumps(config.to_dict(), sort_keys=True),
        "loftr_core_version": __version__,
    }
    # atomic: a failed or interrupted write never leaves a truncated file under the final name
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def convert_checkpoint(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], preset: str | LoFTRConfig | None
) -> Path:
    """Convert an official / kornia checkpoint into the native format (weights + config).

    The weights are loaded into a model built from ``preset`` first, so a converted file is
    known to fit its stored config.
    """
    model = load_model(src, preset)
    return save_native(model, dst)
