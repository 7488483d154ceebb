"""Errors raised by loftr-attention.

Every error subclasses :class:`LoftrAttentionError` and one builtin exception type, so callers can
catch either the package's own base class or the usual Python category (``LookupError`` for an
unknown backend name, ``ValueError`` for unsupported input, ``ImportError`` for a broken plugin).
"""

from __future__ import annotations

__all__ = [
    "AttentionInputError",
    "BackendOptionError",
    "DuplicateBackendError",
    "InvalidBackendSpecError",
    "LoftrAttentionError",
    "PluginLoadError",
    "UnknownBackendError",
    "UnsupportedInputError",
]


class LoftrAttentionError(Exception):
    """Base class of every error raised by loftr-attention."""


class UnknownBackendError(LoftrAttentionError, LookupError):
    """No registered backend has the requested name."""

    def __str__(self) -> str:  # LookupError/KeyError-style repr quoting is unhelpful here.
        return str(self.args[0]) if self.args else ""


class DuplicateBackendError(LoftrAttentionError, ValueError):
    """Two plugins registered a backend under the same name."""


class PluginLoadError(LoftrAttentionError, ImportError):
    """A third-party plugin's entry point could not be imported or its hook failed."""


class InvalidBackendSpecError(LoftrAttentionError, TypeError):
    """A plugin's hook returned something that is not a valid :class:`BackendSpec`."""


class BackendOptionError(LoftrAttentionError, ValueError):
    """A backend was constructed with an invalid option (e.g. a dropout outside [0, 1))."""


class AttentionInputError(LoftrAttentionError, ValueError):
    """The tensors passed to a backend are malformed (shapes, ranks, mask dtypes)."""


class UnsupportedInputError(AttentionInputError):
    """Well-formed input that this backend declares it does not support (device, dtype, masks)."""
