"""What a plugin registers: a named :class:`BackendSpec` (capabilities read from the backend's
:class:`~loftr_attention.support.DeviceSupport` declarations)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from loftr_attention.backend import AttentionBackend
from loftr_attention.errors import InvalidBackendSpecError
from loftr_attention.support import FLOAT_DTYPES, DeviceSupport

__all__ = ["FLOAT_DTYPES", "BackendSpec", "DeviceSupport"]

_NAME_RE = re.compile(r"^[a-z][a-z0-9_\-]*$")


@dataclass(frozen=True)
class BackendSpec:
    """A named attention backend, as returned by the ``loftr_attention_backends`` hook.

    The capabilities (``exact``, ``support``) are declared once, on the backend class, and read
    from it here, so the spec and the module that enforces them can never disagree.

    Attributes:
        name: Registry name, lowercase (``[a-z][a-z0-9_-]*``), e.g. ``"linear"``.
        backend: An :class:`~loftr_attention.AttentionBackend` subclass; ``get_backend(name,
            **options)`` calls ``backend(**options)``.
        description: One line shown by ``available_backends`` listings.
        plugin: Which plugin registered it (filled in by the plugin manager).
    """

    name: str
    backend: type[AttentionBackend]
    description: str = ""
    plugin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise InvalidBackendSpecError(
                f"backend name {self.name!r} is invalid: use lowercase letters, digits, '_' or '-', "
                "starting with a letter (e.g. 'my_attention')"
            )
        if not (isinstance(self.backend, type) and issubclass(self.backend, AttentionBackend)):
            raise InvalidBackendSpecError(
                f"BackendSpec {self.name!r}: backend must be a subclass of "
                f"loftr_attention.AttentionBackend, got {self.backend!r}"
            )
        support = getattr(self.backend, "support", None)
        if not isinstance(support, Mapping) or not support:
            raise InvalidBackendSpecError(
                f"BackendSpec {self.name!r}: {self.backend.__qualname__}.support must be a non-empty "
                "mapping of device type -> DeviceSupport"
            )
        for device, sup in support.items():
            if not isinstance(sup, DeviceSupport):
                raise InvalidBackendSpecError(
                    f"BackendSpec {self.name!r}: support[{device!r}] is {sup!r}, expected DeviceSupport"
                )
        if not isinstance(getattr(self.backend, "exact", None), bool):
            raise InvalidBackendSpecError(
                f"BackendSpec {self.name!r}: {self.backend.__qualname__}.exact must be True (computes "
                "exact softmax attention) or False"
            )

    @property
    def exact(self) -> bool:
        """Whether the backend computes exact softmax attention (same function as ``full``)."""
        return self.backend.exact

    @property
    def support(self) -> Mapping[str, DeviceSupport]:
        """Supported device types, with the dtypes and mask support on each."""
        return self.backend.support

    def create(self, **options: Any) -> AttentionBackend:
        """Build a new backend module (no parameters) from this spec."""
        return self.backend(**options)

    def supports(self, device: str | torch.device, dtype: torch.dtype, masks: bool = False) -> bool:
        """Whether input on ``device`` with ``dtype`` (and masks, if ``masks``) is supported."""
        sup = self.support.get(torch.device(device).type)
        return sup is not None and dtype in sup.dtypes and (sup.masks or not masks)
