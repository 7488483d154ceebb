"""Optional dependencies: imported where used, their absence one line naming the extra."""

from __future__ import annotations

import importlib
from typing import Any

from loftr_core.errors import ConfigError

__all__ = ["require"]


def require(module: str, extra: str) -> Any:
    """Import ``module``, or raise one :class:`ConfigError` line naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"this needs the optional dependency {module!r}: pip install 'loftr-core[{extra}]'"
        ) from None
