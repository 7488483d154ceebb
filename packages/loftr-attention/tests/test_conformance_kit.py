"""The conformance kit catches broken backends (each check can fail)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import pytest
import torch
from torch import Tensor

from loftr_attention import BackendSpec, DeviceSupport, FullAttention
from loftr_attention.masking import zero_invalid_rows
from loftr_attention.testing import (
    ConformanceError,
    check_declared_support_enforced,
    check_fully_masked_rows_are_zero,
    check_masked_keys_have_no_influence,
    check_matches_full,
    check_no_dropout_in_eval,
    check_padding_invariance,
    check_shape_dtype_and_inputs_untouched,
    run_check,
    run_conformance,
)

CPU = torch.device("cpu")
F32 = torch.float32


class IgnoresKeyMask(FullAttention):
    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, q_mask: Tensor | None, kv_mask: Tensor | None
    ) -> Tensor:
        return super().attend(q, k, v, q_mask, None)


class NaNRows(FullAttention):
    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, q_mask: Tensor | None, kv_mask: Tensor | None
    ) -> Tensor:
        scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
        if kv_mask is not None:
            scores = scores.masked_fill(~kv_mask[:, None, None, :], float("-inf"))
        out = scores.softmax(-1) @ v
        return out if q_mask is None else out * q_mask[:, None, :, None]


class AlwaysDropout(FullAttention):
    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, q_mask: Tensor | None, kv_mask: Tensor | None
    ) -> Tensor:
        return torch.nn.functional.dropout(super().attend(q, k, v, q_mask, kv_mask), 0.5)


class Unscaled(FullAttention):
    """Forgets the 1/sqrt(D) scale: not the same function as full."""

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, q_mask: Tensor | None, kv_mask: Tensor | None
    ) -> Tensor:
        return super().attend(q * q.shape[-1] ** 0.5, k, v, q_mask, kv_mask)


class MutatesInput(FullAttention):
    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, q_mask: Tensor | None, kv_mask: Tensor | None
    ) -> Tensor:
        out = super().attend(q, k, v, q_mask, kv_mask)
        q.mul_(2)
        return out


class ClaimsLessThanItAccepts(FullAttention):
    """Declares float32 only but skips validation: silently runs float64."""

    support: ClassVar[Mapping[str, DeviceSupport]] = {"cpu": DeviceSupport(frozenset({F32}))}

    def check_inputs(self, *args: object) -> None:
        return None


class PadsChangeValidRows(FullAttention):
    """Uses the padded length in a way that changes valid rows."""

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, q_mask: Tensor | None, kv_mask: Tensor | None
    ) -> Tensor:
        out = super().attend(q, k, v, q_mask, kv_mask)
        if kv_mask is None:
            return out
        return zero_invalid_rows(
            out * kv_mask.float().mean(1)[:, None, None, None], q_mask, kv_mask
        )


@pytest.mark.parametrize(
    ("cls", "check", "message"),
    [
        (IgnoresKeyMask, check_masked_keys_have_no_influence, "masked keys/values"),
        (NaNRows, check_fully_masked_rows_are_zero, "NaN"),
        (AlwaysDropout, check_no_dropout_in_eval, "eval determinism"),
        (Unscaled, check_matches_full, "agreement with full"),
        (MutatesInput, check_shape_dtype_and_inputs_untouched, "modified its input"),
        (ClaimsLessThanItAccepts, check_declared_support_enforced, "did not raise"),
        (PadsChangeValidRows, check_padding_invariance, "padding invariance"),
    ],
)
def test_kit_detects_broken_backend(cls: type[FullAttention], check: object, message: str) -> None:
    spec = BackendSpec("broken", cls)
    with pytest.raises(ConformanceError, match=message):
        check(spec, CPU, F32)  # type: ignore[operator]
    with pytest.raises(AssertionError, match="'broken'"):
        run_conformance(spec, dtypes=(F32,))


def test_kit_passes_the_reference_itself() -> None:
    report = run_conformance(BackendSpec("reference", FullAttention), dtypes=(F32, torch.float64))
    assert len(report.passed) == 12
    assert all("declares every dtype" in s for s in report.skipped)


class DropoutIgnoresMode(FullAttention):
    """Applies its dropout option even in eval mode."""

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, q_mask: Tensor | None, kv_mask: Tensor | None
    ) -> Tensor:
        out = super().attend(q, k, v, q_mask, kv_mask)
        return torch.nn.functional.dropout(out, self.dropout, training=True)


def test_kit_passes_options_to_the_backend() -> None:
    spec = BackendSpec("leaky", DropoutIgnoresMode)
    run_check(check_no_dropout_in_eval, spec)  # dropout=0 by default: fine
    with pytest.raises(ConformanceError, match="eval determinism"):
        run_check(check_no_dropout_in_eval, spec, options={"dropout": 0.5})
