"""The attention-backend contract: :class:`AttentionBackend`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor, nn

from loftr_attention.errors import AttentionInputError, UnsupportedInputError
from loftr_attention.support import DeviceSupport

__all__ = ["AttentionBackend"]


class AttentionBackend(nn.Module):
    """Base class of every attention backend (built-in or from a plugin).

    Contract, on ``(B, H, L, D)`` tensors (the layout ``scaled_dot_product_attention`` uses):

    * ``forward(q, k, v, *, q_mask=None, kv_mask=None)`` with ``q`` ``(B, H, L, D)``, ``k``
      ``(B, H, S, D)``, ``v`` ``(B, H, S, D)``, all the same floating dtype and device; masks are
      ``bool`` ``(B, L)`` / ``(B, S)`` with ``True`` = valid token.
    * Returns ``(B, H, L, D)`` with the dtype of ``q`` (it may be a non-contiguous view).
    * Masked keys/values never influence the output; a query row that is masked, or that has no
      valid key, gives zeros (never NaN).
    * Dropout (if any) only while ``self.training``. No process-wide torch flags.

    Subclasses set the class attributes ``exact`` and ``support`` and implement :meth:`attend`;
    :meth:`forward` validates the input against ``support`` first, so unsupported input is a clear
    :class:`~loftr_attention.UnsupportedInputError`, never a silent fallback.
    """

    #: True when the backend computes exact softmax attention (the same function as ``full``).
    exact: ClassVar[bool]
    #: Device type -> what is supported there. Anything absent is unsupported.
    support: ClassVar[Mapping[str, DeviceSupport]]

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        q_mask: Tensor | None = None,
        kv_mask: Tensor | None = None,
    ) -> Tensor:
        """Attend from ``q`` to ``k``/``v``.

        Args:
            q: Queries ``(B, H, L, D)``, floating.
            k: Keys ``(B, H, S, D)``, same dtype/device as ``q``.
            v: Values ``(B, H, S, D)``, same dtype/device as ``q``.
            q_mask: Optional ``bool`` ``(B, L)``, ``True`` = valid query.
            kv_mask: Optional ``bool`` ``(B, S)``, ``True`` = valid key/value.

        Returns:
            ``(B, H, L, D)`` tensor with the dtype of ``q``; zero rows for masked queries.

        Raises:
            AttentionInputError: Malformed input (ranks, shapes, mask dtype).
            UnsupportedInputError: A device, dtype or mask this backend does not support.
        """
        self.check_inputs(q, k, v, q_mask, kv_mask)
        return self.attend(q, k, v, q_mask, kv_mask)

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, q_mask: Tensor | None, kv_mask: Tensor | None
    ) -> Tensor:
        """Compute attention on already validated input (see :meth:`forward`)."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement attend()")

    def extra_repr(self) -> str:
        return f"exact={self.exact}"

    def check_inputs(
        self, q: Tensor, k: Tensor, v: Tensor, q_mask: Tensor | None, kv_mask: Tensor | None
    ) -> None:
        """Raise a clear error when the input breaks the contract or is unsupported."""
        name = type(self).__qualname__
        if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
            raise AttentionInputError(
                f"{name}: q, k, v must be 4-D (B, H, L, D); got shapes {tuple(q.shape)}, "
                f"{tuple(k.shape)}, {tuple(v.shape)}. Reshape (N, L, C) features to "
                "(N, L, H, C/H) and transpose(1, 2)."
            )
        b, h, _, d = q.shape
        if k.shape[0] != b or k.shape[1] != h or k.shape[3] != d or v.shape != k.shape:
            raise AttentionInputError(
                f"{name}: incompatible shapes q {tuple(q.shape)}, k {tuple(k.shape)}, "
                f"v {tuple(v.shape)}; expected q (B, H, L, D), k and v (B, H, S, D)"
            )
        if k.dtype != q.dtype or v.dtype != q.dtype:
            raise AttentionInputError(
                f"{name}: q, k, v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}"
            )
        if k.device != q.device or v.device != q.device:
            raise AttentionInputError(
                f"{name}: q, k, v must be on one device; got {q.device}, {k.device}, {v.device}"
            )
        sup = self.support.get(q.device.type)
        if sup is None:
            raise UnsupportedInputError(
                f"{name}: device type {q.device.type!r} is not supported; supported: "
                f"{sorted(self.support)}. Move the tensors or choose another backend."
            )
        if q.dtype not in sup.dtypes:
            raise UnsupportedInputError(
                f"{name}: dtype {q.dtype} is not supported on {q.device.type}; supported there: "
                f"{sorted(str(t) for t in sup.dtypes)}. Cast the input or choose another backend."
            )
        for mask, label, length in (
            (q_mask, "q_mask", q.shape[2]),
            (kv_mask, "kv_mask", k.shape[2]),
        ):
            if mask is None:
                continue
            if not sup.masks:
                raise UnsupportedInputError(
                    f"{name}: {label} given, but masks are not supported on {q.device.type}. Use a "
                    "backend that supports masks there (e.g. 'sdpa' or 'full'), or drop the mask."
                )
            if mask.dtype != torch.bool:
                raise AttentionInputError(
                    f"{name}: {label} must be torch.bool (True = valid), got {mask.dtype}. Float "
                    "(additive) masks are not part of the contract; convert with mask > 0."
                )
            if mask.shape != (b, length) or mask.device != q.device:
                raise AttentionInputError(
                    f"{name}: {label} must have shape {(b, length)} on {q.device}; got "
                    f"{tuple(mask.shape)} on {mask.device}"
                )
