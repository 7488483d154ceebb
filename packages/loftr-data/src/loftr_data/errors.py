"""Errors raised by loftr-data.

Every error subclasses :class:`LoftrDataError` and one builtin exception type, so callers can catch
either the package's own base class or the usual Python category (``ValueError`` for bad settings,
``FileNotFoundError`` for missing dataset files). Messages say what failed, the offending value,
what is allowed and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "CollateError",
    "DataConfigError",
    "DatasetFileError",
    "LoftrDataError",
    "MissingDatasetFileError",
    "SamplerStateError",
    "SceneInfoError",
]


class LoftrDataError(Exception):
    """Base class of every error raised by loftr-data."""


class DataConfigError(LoftrDataError, ValueError):
    """A dataset, sampler or augmentation setting is invalid (names it, its value, what is allowed)."""


class SceneInfoError(LoftrDataError, ValueError):
    """A MegaDepth scene-info (index) file cannot be read or lacks a required field."""


class DatasetFileError(LoftrDataError, ValueError):
    """An image or depth file exists but cannot be decoded or has an unexpected size."""


class MissingDatasetFileError(LoftrDataError, FileNotFoundError):
    """Image or depth files named by a scene-info file do not exist under the dataset root."""

    def __str__(self) -> str:  # OSError's default str would drop our multi-line message.
        return str(self.args[0]) if self.args else ""


class CollateError(LoftrDataError, ValueError):
    """Samples given to :func:`loftr_data.collate` cannot be batched (keys or shapes differ)."""


class SamplerStateError(LoftrDataError, ValueError):
    """A sampler state dict does not fit the sampler it is loaded into."""
