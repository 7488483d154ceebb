"""The error hierarchy of loftr-core.

Every error raised on bad user input is a :class:`LoftrError` and also subclasses the matching
builtin (``ValueError``...), so ``except ValueError`` keeps working. Messages say what failed, the
offending value, what is allowed and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "InputError",
    "LoftrError",
    "MemoryLimitError",
    "WeightsUnavailableError",
]


class LoftrError(Exception):
    """Base class of every error raised by loftr-core."""


class ConfigError(LoftrError, ValueError):
    """A model configuration value is invalid (names the field, the value and what is allowed)."""


class CheckpointError(LoftrError, ValueError):
    """A checkpoint cannot be read or does not fit the model it is loaded into."""


class InputError(LoftrError, ValueError):
    """The tensors passed to the model or the matcher have the wrong type, dtype or shape."""


class WeightsUnavailableError(CheckpointError):
    """Named weights could not be fetched (offline, every mirror failed, or the cache is not writable).

    The message names the file, the URLs tried and the exact cache path where a manually
    downloaded copy is picked up.
    """


class MemoryLimitError(InputError):
    """A matching call would need more memory than the limit; the message gives the image sizes,
    the estimate and the fix (a ``resize`` that fits, or the option that lifts the limit)."""
