"""What a backend supports on one device type: :class:`DeviceSupport` (no other imports of
the package, so :mod:`~loftr_attention.backend` and :mod:`~loftr_attention.spec` both use it)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from loftr_attention.errors import InvalidBackendSpecError

__all__ = ["FLOAT_DTYPES", "DeviceSupport"]

#: The floating dtypes a backend may declare.
FLOAT_DTYPES: frozenset[torch.dtype] = frozenset(
    {torch.float16, torch.bfloat16, torch.float32, torch.float64}
)


@dataclass(frozen=True)
class DeviceSupport:
    """What a backend supports on one device type (``"cpu"``, ``"cuda"``...).

    Attributes:
        dtypes: Input dtypes accepted on this device (output has the same dtype).
        masks: Whether ``q_mask`` / ``kv_mask`` may be given on this device.
    """

    dtypes: frozenset[torch.dtype]
    masks: bool = True

    def __post_init__(self) -> None:
        dtypes = frozenset(self.dtypes)
        bad = sorted(str(d) for d in dtypes - FLOAT_DTYPES)
        if bad or not dtypes:
            raise InvalidBackendSpecError(
                f"DeviceSupport.dtypes must be a non-empty set of floating dtypes; got {bad or '{}'}; "
                f"allowed: {sorted(str(d) for d in FLOAT_DTYPES)}"
            )
        object.__setattr__(self, "dtypes", dtypes)
