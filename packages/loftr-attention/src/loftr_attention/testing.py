"""Conformance kit: run the attention-backend contract against any backend.

Plugin authors::

    from loftr_attention.testing import run_conformance
    report = run_conformance("my_attention")          # raises ConformanceError on a failure
    print(report)

or, in pytest, one test per check::

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    def test_conformance(check):
        run_check(check, "my_attention", device="cpu", dtype=torch.float32)

Checks (each on self-attention ``L == S`` and cross-attention ``L != S`` shapes, with a different
padding per sample): output shape/dtype and untouched inputs; declared support enforced (an
undeclared dtype or a mask where masks are unsupported raises ``UnsupportedInputError``); masked
keys/values have no influence; fully masked query rows are zeros, not NaN; no dropout in eval
mode; padding invariance (a padded sample gives what it gives alone); and, for exact backends,
agreement with ``full`` computed in float32 on the same (upcast) input, within :data:`TOLERANCES`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from loftr_attention.backend import AttentionBackend
from loftr_attention.errors import UnsupportedInputError
from loftr_attention.manager import BackendManager, default_manager
from loftr_attention.softmax_attention import FullAttention
from loftr_attention.spec import FLOAT_DTYPES, BackendSpec

__all__ = [
    "CHECKS",
    "SHAPES",
    "TOLERANCES",
    "ConformanceError",
    "ConformanceReport",
    "ConformanceSkip",
    "applicable_checks",
    "check_declared_support_enforced",
    "check_fully_masked_rows_are_zero",
    "check_masked_keys_have_no_influence",
    "check_matches_full",
    "check_no_dropout_in_eval",
    "check_padding_invariance",
    "check_shape_dtype_and_inputs_untouched",
    "run_check",
    "run_conformance",
]

#: (atol, rtol) for comparing a backend's output with ``full`` computed in float32 (float64 for
#: float64 input) on the same input. float32: max abs diff <= 1e-5 (the issue's bound); the
#: half-precision bounds allow for rounding of inputs/outputs (fp16: 10 bits, bf16: 7 bits of
#: mantissa) on outputs of magnitude ~1.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 0.0),
    torch.float32: (1e-5, 0.0),
    torch.float16: (4e-3, 4e-3),
    torch.bfloat16: (3e-2, 2e-2),
}

#: (L, S) shapes every check runs: self-attention and cross-attention.
SHAPES: tuple[tuple[int, int], ...] = ((13, 13), (11, 17))
_BATCH, _HEADS, _DIM = 3, 2, 16


class ConformanceError(AssertionError):
    """A backend broke the attention-backend contract."""


class ConformanceSkip(Exception):
    """A check does not apply (e.g. masks unsupported on this device, inexact backend)."""


@dataclass
class ConformanceReport:
    """What :func:`run_conformance` ran: ``passed`` and ``skipped`` (check, dtype, reason)."""

    backend: str
    device: str
    passed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.backend} on {self.device}: {len(self.passed)} passed"]
        lines += [f"  passed  {p}" for p in self.passed]
        lines += [f"  skipped {s}" for s in self.skipped]
        return "\n".join(lines)


Check = Callable[[BackendSpec, torch.device, torch.dtype], None]


def _inputs(
    length: int, source: int, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """q, k, v and per-sample masks: sample 0 unpadded, 1 and 2 padded differently."""
    g = torch.Generator().manual_seed(seed + 1000 * length + source)
    q, k, v = (
        torch.randn(_BATCH, _HEADS, n, _DIM, generator=g).to(device=device, dtype=dtype)
        for n in (length, source, source)
    )
    q_mask = torch.ones(_BATCH, length, dtype=torch.bool)
    kv_mask = torch.ones(_BATCH, source, dtype=torch.bool)
    q_mask[1, length - 3 :] = False
    kv_mask[1, source - 5 :] = False
    q_mask[2, length // 2 :] = False
    kv_mask[2, 2:] = False
    return q, k, v, q_mask.to(device), kv_mask.to(device)


def _require(spec: BackendSpec, device: torch.device, dtype: torch.dtype, masks: bool) -> None:
    if not spec.supports(device, dtype, masks=masks):
        what = f"{dtype} on {device.type}" + (" with masks" if masks else "")
        raise ConformanceSkip(f"{spec.name} does not declare support for {what}")


def _fail(spec: BackendSpec, check: str, msg: str) -> ConformanceError:
    return ConformanceError(f"backend {spec.name!r} fails {check}: {msg}")


def _eval_backend(spec: BackendSpec) -> AttentionBackend:
    return spec.create().eval()


def check_shape_dtype_and_inputs_untouched(
    spec: BackendSpec, device: torch.device, dtype: torch.dtype
) -> None:
    """Output is ``(B, H, L, D)`` in the input dtype/device, finite, and inputs are not mutated."""
    _require(spec, device, dtype, masks=False)
    backend = _eval_backend(spec)
    for length, source in SHAPES:
        q, k, v, _, _ = _inputs(length, source, device, dtype)
        copies = [t.clone() for t in (q, k, v)]
        out = backend(q, k, v)
        if tuple(out.shape) != (_BATCH, _HEADS, length, _DIM):
            raise _fail(spec, "shape", f"got {tuple(out.shape)} for L={length}, S={source}")
        if out.dtype != dtype or out.device != q.device:
            raise _fail(spec, "dtype", f"got {out.dtype} on {out.device} for {dtype} on {device}")
        if not torch.isfinite(out).all():
            raise _fail(spec, "finiteness", "output has NaN/inf for finite unmasked input")
        if not all(torch.equal(a, b) for a, b in zip((q, k, v), copies, strict=True)):
            raise _fail(spec, "purity", "the backend modified its input tensors in place")


def check_declared_support_enforced(
    spec: BackendSpec, device: torch.device, dtype: torch.dtype
) -> None:
    """Undeclared dtypes, and masks where masks are undeclared, raise ``UnsupportedInputError``."""
    backend = _eval_backend(spec)
    sup = spec.support.get(device.type)
    cases: list[tuple[str, torch.dtype, bool]] = []
    if sup is None:
        cases.append((f"device {device.type}", dtype, False))
    else:
        cases += [(f"dtype {d}", d, False) for d in sorted(FLOAT_DTYPES - sup.dtypes, key=str)]
        if not sup.masks:
            cases.append(("a kv_mask", next(iter(sorted(sup.dtypes, key=str))), True))
    if not cases:
        raise ConformanceSkip(f"{spec.name} declares every dtype and masks on {device.type}")
    for what, case_dtype, masks in cases:
        q, k, v, _, kv_mask = _inputs(7, 7, device, case_dtype)
        try:
            backend(q, k, v, kv_mask=kv_mask if masks else None)
        except UnsupportedInputError:
            continue
        raise _fail(spec, "declared support", f"{what} is undeclared but did not raise")


def check_masked_keys_have_no_influence(
    spec: BackendSpec, device: torch.device, dtype: torch.dtype
) -> None:
    """Changing keys/values at masked positions changes nothing in the output."""
    _require(spec, device, dtype, masks=True)
    backend = _eval_backend(spec)
    for length, source in SHAPES:
        q, k, v, q_mask, kv_mask = _inputs(length, source, device, dtype)
        out = backend(q, k, v, q_mask=q_mask, kv_mask=kv_mask)
        hidden = ~kv_mask[:, None, :, None]
        noise = torch.full_like(k, 7.0)
        k2 = torch.where(hidden, k * 3 + noise, k)
        v2 = torch.where(hidden, v * -5 - noise, v)
        out2 = backend(q, k2, v2, q_mask=q_mask, kv_mask=kv_mask)
        diff = (out.float() - out2.float()).abs().max().item()
        if not diff <= TOLERANCES[dtype][0]:
            raise _fail(spec, "masked keys/values", f"perturbing them changed the output by {diff}")


def check_fully_masked_rows_are_zero(
    spec: BackendSpec, device: torch.device, dtype: torch.dtype
) -> None:
    """Padded query rows and queries with no valid key give exactly 0, never NaN."""
    _require(spec, device, dtype, masks=True)
    backend = _eval_backend(spec)
    for length, source in SHAPES:
        q, k, v, q_mask, kv_mask = _inputs(length, source, device, dtype)
        kv_mask[0] = False  # sample 0: no valid key at all
        out = backend(q, k, v, q_mask=q_mask, kv_mask=kv_mask)
        if torch.isnan(out).any():
            raise _fail(spec, "fully masked rows", "output contains NaN")
        zero_rows = (~q_mask) | (~kv_mask.any(dim=1, keepdim=True))
        leaked = out.float().abs().amax(dim=(1, 3))[zero_rows]
        if leaked.numel() and leaked.max().item() != 0.0:
            raise _fail(spec, "fully masked rows", f"max |out| there is {leaked.max().item()}")
        if not torch.isfinite(out[1:]).all():
            raise _fail(spec, "fully masked rows", "valid rows are not finite")


def check_no_dropout_in_eval(spec: BackendSpec, device: torch.device, dtype: torch.dtype) -> None:
    """In eval mode two calls on the same input give bit-identical output."""
    _require(spec, device, dtype, masks=False)
    backend = _eval_backend(spec)
    q, k, v, _, _ = _inputs(*SHAPES[1], device, dtype)
    torch.manual_seed(0)
    first = backend(q, k, v)
    torch.manual_seed(1)
    second = backend(q, k, v)
    if not torch.equal(first, second):
        raise _fail(spec, "eval determinism", "two eval-mode calls differ (dropout in eval?)")


def check_padding_invariance(spec: BackendSpec, device: torch.device, dtype: torch.dtype) -> None:
    """A padded sample's valid rows equal the output of its unpadded part alone."""
    _require(spec, device, dtype, masks=True)
    backend = _eval_backend(spec)
    atol, rtol = TOLERANCES[dtype]
    atol, rtol = max(atol, 1e-5 if dtype == torch.float32 else atol), max(rtol, 1e-5)
    for length, source in SHAPES:
        q, k, v, q_mask, kv_mask = _inputs(length, source, device, dtype)
        out = backend(q, k, v, q_mask=q_mask, kv_mask=kv_mask)
        for b in range(1, _BATCH):
            lq, ls = int(q_mask[b].sum()), int(kv_mask[b].sum())
            alone = backend(q[b : b + 1, :, :lq], k[b : b + 1, :, :ls], v[b : b + 1, :, :ls])
            got = out[b : b + 1, :, :lq]
            if not torch.allclose(got.float(), alone.float(), atol=atol, rtol=rtol):
                diff = (got.float() - alone.float()).abs().max().item()
                raise _fail(spec, "padding invariance", f"sample {b}: max abs diff {diff}")


def check_matches_full(spec: BackendSpec, device: torch.device, dtype: torch.dtype) -> None:
    """Exact backends agree with ``full`` (float32 reference) within :data:`TOLERANCES`."""
    if not spec.exact:
        raise ConformanceSkip(f"{spec.name} is not exact softmax attention")
    _require(spec, device, dtype, masks=False)
    backend = _eval_backend(spec)
    reference = FullAttention().eval()
    ref_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    atol, rtol = TOLERANCES[dtype]
    masked = spec.supports(device, dtype, masks=True)
    for length, source in SHAPES:
        q, k, v, q_mask, kv_mask = _inputs(length, source, device, dtype)
        masks = {"q_mask": q_mask, "kv_mask": kv_mask} if masked else {}
        out = backend(q, k, v, **masks).to(ref_dtype)
        up = [t.to(ref_dtype) for t in (q, k, v)]
        ref = reference(*up, **masks)
        diff = (out - ref).abs()
        bound = atol + rtol * ref.abs()
        if not bool((diff <= bound).all()):
            raise _fail(
                spec,
                "agreement with full",
                f"{dtype}, L={length}, S={source}, masks={masked}: max abs diff "
                f"{diff.max().item():.3g} > atol {atol} + rtol {rtol}",
            )


#: Every check, in the order :func:`run_conformance` runs them.
CHECKS: tuple[Check, ...] = (
    check_shape_dtype_and_inputs_untouched,
    check_declared_support_enforced,
    check_masked_keys_have_no_influence,
    check_fully_masked_rows_are_zero,
    check_no_dropout_in_eval,
    check_padding_invariance,
    check_matches_full,
)


def applicable_checks(
    backend: str | BackendSpec,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    manager: BackendManager | None = None,
) -> list[Check]:
    """The checks of :data:`CHECKS` that apply to ``backend`` on ``device`` with ``dtype``
    (the others would raise :class:`ConformanceSkip`): for parametrising a test suite."""
    spec = _resolve(backend, manager)
    dev = torch.device(device)
    sup = spec.support.get(dev.type)
    if sup is None or dtype not in sup.dtypes:
        return [check_declared_support_enforced]
    masks = sup.masks
    undeclared = bool(FLOAT_DTYPES - sup.dtypes) or not masks
    needs_masks = {
        check_masked_keys_have_no_influence,
        check_fully_masked_rows_are_zero,
        check_padding_invariance,
    }
    return [
        c
        for c in CHECKS
        if (c is not check_declared_support_enforced or undeclared)
        and (c is not check_matches_full or spec.exact)
        and (c not in needs_masks or masks)
    ]


def _resolve(
    backend: str | BackendSpec,
    manager: BackendManager | None,
    options: Mapping[str, Any] | None = None,
) -> BackendSpec:
    spec = (
        backend
        if isinstance(backend, BackendSpec)
        else (manager or default_manager()).get_spec(backend)
    )
    if not options:
        return spec
    base, kwargs = spec.backend, dict(options)

    class Configured(base):  # type: ignore[valid-type, misc]
        def __init__(self) -> None:
            super().__init__(**kwargs)

    label = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
    Configured.__name__ = Configured.__qualname__ = f"{base.__qualname__}({label})"
    return BackendSpec(spec.name, Configured, spec.description, spec.plugin)


def run_check(
    check: Check,
    backend: str | BackendSpec,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    manager: BackendManager | None = None,
    options: Mapping[str, Any] | None = None,
) -> None:
    """Run one check; raises :class:`ConformanceError` or :class:`ConformanceSkip`.

    ``options`` are passed to the backend's constructor (e.g. ``{"dropout": 0.5}`` to check
    that dropout stays off in eval mode)."""
    check(_resolve(backend, manager, options), torch.device(device), dtype)


def _dtypes_for(spec: BackendSpec, device: torch.device) -> Iterator[torch.dtype]:
    sup = spec.support.get(device.type)
    order = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
    yield from (d for d in order if sup is not None and d in sup.dtypes)


def run_conformance(
    backend: str | BackendSpec,
    *,
    device: str | torch.device = "cpu",
    dtypes: tuple[torch.dtype, ...] | None = None,
    manager: BackendManager | None = None,
    options: Mapping[str, Any] | None = None,
) -> ConformanceReport:
    """Run every check in :data:`CHECKS` on ``device`` for each dtype.

    Args:
        backend: A registered name or a :class:`~loftr_attention.BackendSpec`.
        device: Device to run on.
        dtypes: Dtypes to test (default: every dtype the backend declares on that device).
        manager: Where to look the name up (default: the process-wide manager).
        options: Constructor options for the backend (e.g. ``{"dropout": 0.5}``).

    Returns:
        A :class:`ConformanceReport` of passed and skipped checks.

    Raises:
        ConformanceError: The first failed check (an ``AssertionError``).
    """
    spec = _resolve(backend, manager, options)
    dev = torch.device(device)
    report = ConformanceReport(spec.name, str(dev))
    for dtype in dtypes if dtypes is not None else tuple(_dtypes_for(spec, dev)):
        for check in CHECKS:
            label = f"{check.__name__}[{str(dtype).removeprefix('torch.')}]"
            try:
                check(spec, dev, dtype)
            except ConformanceSkip as skip:
                report.skipped.append(f"{label}: {skip}")
            else:
                report.passed.append(label)
    return report
