"""Padding masks: which output rows are valid, and the key mask in the layout SDPA expects."""

from __future__ import annotations

from torch import Tensor

__all__ = ["row_valid", "zero_invalid_rows"]


def row_valid(q_mask: Tensor | None, kv_mask: Tensor | None) -> Tensor | None:
    """Which query rows have a defined output.

    Args:
        q_mask: ``bool`` ``(B, L)`` or None.
        kv_mask: ``bool`` ``(B, S)`` or None.

    Returns:
        ``bool`` ``(B, L)`` (or ``(B, 1)`` when only ``kv_mask`` is given): query valid and at
        least one valid key; ``None`` when neither mask is given (every row is valid).
    """
    if kv_mask is None:
        return q_mask
    any_key = kv_mask.any(dim=1, keepdim=True)
    return any_key if q_mask is None else q_mask & any_key


def zero_invalid_rows(out: Tensor, q_mask: Tensor | None, kv_mask: Tensor | None) -> Tensor:
    """Set the rows of ``out`` ``(B, H, L, D)`` without a defined output to exactly 0 (not NaN)."""
    valid = row_valid(q_mask, kv_mask)
    if valid is None:
        return out
    return out.masked_fill(~valid[:, None, :, None], 0)
