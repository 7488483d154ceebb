"""How the model runs on this machine: one frozen, typed options object, never saved.

The model config (:class:`loftr_core.LoFTRConfig`) says *what the model is*; these options say
*how it is computed*: tensor layouts, BatchNorm folding, kernel routes, chunk sizes, sub-stage
precision and compilation. They are handed to the model (``LoFTR(config, options)``) or to
:class:`loftr_core.Matcher` when it is built, and never written into a checkpoint.

Every default changes float rounding only, never a match (the kornia parity tests check it);
options that can move matches (the ``*_dtype`` ones) are off by default. :meth:`reference`
reproduces the original's kernels and rounding bit for bit.
"""

from __future__ import annotations

import dataclasses
import logging
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Union, get_args, get_origin, get_type_hints

from loftr_core.errors import ConfigError

__all__ = ["EXECUTION_PRESETS", "ExecutionOptions"]

logger = logging.getLogger(__name__)

_LOW_DTYPES = ("float32", "bfloat16", "float16")
_STAGE_DTYPES = ("inherit", "bfloat16", "float16")


def _bad(name: str, value: object, allowed: str) -> ConfigError:
    return ConfigError(f"invalid execution option {name}={value!r}: allowed is {allowed}")


@dataclass(frozen=True)
class ExecutionOptions:
    """How the model's stages are computed (not part of the model; never saved).

    Attributes:
        channels_last: backbone convolutions on channels-last (NHWC) activations: ``"auto"``
            (on for CPU inputs, where oneDNN is faster; off on CUDA), ``True`` or ``False``.
            Float rounding only.
        fold_batchnorm: in eval mode fold each BatchNorm into the convolution before it (one
            pass over the activation instead of two). Float rounding only; training unaffected.
        onednn: CPU float32 matrix products (transformer projections and MLPs, the coarse score
            matrix) as oneDNN 1x1 convolutions, which run near the CPU's peak where the BLAS
            does not. Float rounding only; no effect on CUDA or in lower precision.
        fine_branch_dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (CUDA) for the FPN
            top-down path, which feeds only the fine map: coarse matches stay exact, sub-pixel
            positions move (opt-in).
        coarse_dtype, fine_dtype: ``"inherit"`` (the caller's precision) or ``"bfloat16"`` /
            ``"float16"``: that transformer runs under ``torch.autocast`` to this dtype and
            returns the input dtype. Moves matches (opt-in).
        coarse_chunk_elements: at most this many scores ``N * rows * S`` of the coarse matrix at
            once in dual-softmax inference; a matrix that fits runs the dense formula, a larger
            one is streamed over row chunks. ``None``: 2^25 on CPU, 2^28 on CUDA.
        coarse_one_pass: dual-softmax inference matches with a threshold of at least
            :data:`~loftr_core.execution.streaming.MIN_CANDIDATE_THR` in one pass over row
            chunks (one score product, no ``(N, L, S)`` matrix; only the entries that can exceed
            the threshold are kept): chunks of ``coarse_chunk_elements`` scores, candidates up to
            that many bytes (at least 64 MiB), else the two-pass stream. Float rounding of the
            confidences only; off: the dense formula (or the two-pass stream when too large).
        fine_chunk_matches: matches per pass through the fine stage (bounds its memory).
            ``None``: 1024 on CPU, 8192 elsewhere.
        backbone_batch_pixels: both images go through the backbone as one batch when their
            sizes agree and their pixels together are at most this (else one at a time: the
            same result, about half the backbone's peak memory). ``None``: 2*640*480 on CPU,
            no limit elsewhere.
        compile: ``torch.compile`` the dense stages when the options are applied
            (:meth:`loftr_core.LoFTR.compile_stages`).
    """

    channels_last: bool | str = "auto"
    fold_batchnorm: bool = True
    onednn: bool = True
    fine_branch_dtype: str = "float32"
    coarse_dtype: str = "inherit"
    fine_dtype: str = "inherit"
    coarse_chunk_elements: int | None = None
    coarse_one_pass: bool = True
    fine_chunk_matches: int | None = None
    backbone_batch_pixels: int | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if self.channels_last not in (True, False, "auto"):
            raise _bad("channels_last", self.channels_last, 'true, false or "auto"')
        for name in ("fold_batchnorm", "onednn", "coarse_one_pass", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise _bad(name, getattr(self, name), "true or false")
        if self.fine_branch_dtype not in _LOW_DTYPES:
            raise _bad("fine_branch_dtype", self.fine_branch_dtype, f"one of {list(_LOW_DTYPES)}")
        for name in ("coarse_dtype", "fine_dtype"):
            if getattr(self, name) not in _STAGE_DTYPES:
                raise _bad(name, getattr(self, name), f"one of {list(_STAGE_DTYPES)}")
        for name in ("coarse_chunk_elements", "fine_chunk_matches", "backbone_batch_pixels"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise _bad(name, value, "a positive int, or none for the device's default")

    @classmethod
    def reference(cls) -> ExecutionOptions:
        """The original's kernels and rounding: NCHW, unfolded BatchNorm, torch's BLAS, the
        dense dual-softmax matrix."""
        return cls(channels_last=False, fold_batchnorm=False, onednn=False, coarse_one_pass=False)

    def replace(self, **changes: Any) -> ExecutionOptions:
        """A copy with ``changes``; unknown names raise :class:`ConfigError` listing the valid."""
        valid = [f.name for f in fields(self)]
        unknown = sorted(set(changes) - set(valid))
        if unknown:
            raise ConfigError(f"unknown execution option(s) {unknown}; valid are {valid}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dict (for logs and benchmark tables; never saved)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_preset(
        cls, preset: str = "default", settings: Sequence[str] | Mapping[str, Any] = ()
    ) -> ExecutionOptions:
        """A preset of :data:`EXECUTION_PRESETS` with ``settings`` applied.

        Args:
            preset: ``"default"`` or ``"reference"``.
            settings: ``NAME=VALUE`` strings (as given on a command line: ``true``/``false``,
                ints, ``none``, dtype names) or a mapping of already typed values.
        """
        if preset not in EXECUTION_PRESETS:
            raise ConfigError(
                f"unknown execution preset {preset!r}; choose one of {sorted(EXECUTION_PRESETS)}"
            )
        base = EXECUTION_PRESETS[preset]()
        if isinstance(settings, Mapping):
            return base.replace(**dict(settings))
        return base.replace(**dict(parse_setting(text) for text in settings))


def parse_setting(text: str) -> tuple[str, Any]:
    """``"fine_chunk_matches=256"`` -> ``("fine_chunk_matches", 256)`` by the field's type."""
    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    hints = get_type_hints(ExecutionOptions)
    if not sep or name not in hints:
        raise ConfigError(
            f"execution option {text!r} is not NAME=VALUE with NAME one of {sorted(hints)}"
        )
    hint = hints[name]
    args = set(get_args(hint)) if get_origin(hint) in (Union, types.UnionType) else {hint}
    low = raw.lower()
    if low in ("none", "default") and type(None) in args:
        return name, None
    if bool in args and low in ("true", "on", "yes", "1", "false", "off", "no", "0"):
        return name, low in ("true", "on", "yes", "1")
    if int in args:
        try:
            return name, int(raw)
        except ValueError:
            pass
    if str in args:
        return name, raw
    raise _bad(name, raw, f"a value of type {hint}")


EXECUTION_PRESETS: dict[str, Callable[[], ExecutionOptions]] = {
    "default": ExecutionOptions,
    "reference": ExecutionOptions.reference,
}
"""Named execution presets: ``default`` (fast, same matches) and ``reference`` (the original's
rounding)."""
