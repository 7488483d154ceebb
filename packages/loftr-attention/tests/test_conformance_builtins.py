"""Every built-in backend passes the conformance kit on CPU, for every dtype it declares."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from loftr_attention import BackendSpec, MemoryEfficientAttention, get_spec
from loftr_attention.testing import CHECKS, applicable_checks, run_check, run_conformance

BUILTINS = ("linear", "full", "flash", "memory_efficient", "sdpa")
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _cases() -> list[object]:
    return [
        pytest.param(
            name,
            dtype,
            check,
            id=f"{name}-{str(dtype)[6:]}-{check.__name__.removeprefix('check_')}",
        )
        for name in BUILTINS
        for dtype in DTYPES
        if get_spec(name).supports("cpu", dtype)
        for check in applicable_checks(name, "cpu", dtype)
    ]


@pytest.mark.parametrize(("name", "dtype", "check"), _cases())
def test_builtin_conformance(name: str, dtype: torch.dtype, check: Callable[..., None]) -> None:
    run_check(check, name, device="cpu", dtype=dtype)


def test_every_builtin_and_check_is_covered() -> None:
    covered = {(p.values[0], p.values[2]) for p in _cases()}  # type: ignore[attr-defined]
    assert {name for name, _ in covered} == set(BUILTINS)
    assert {check for _, check in covered} == set(CHECKS)
    assert len(_cases()) == 106  # linear 4x5, full/flash/sdpa 3x4x6, memory_efficient 2x7


class _SmallChunks(MemoryEfficientAttention):
    """The CPU chunked path forced into many 1..3-query blocks."""

    def __init__(self) -> None:
        super().__init__(max_chunk_elements=2 * 2 * 17 * 3)


def test_chunked_path_with_many_blocks_conforms() -> None:
    report = run_conformance(BackendSpec("me_small_chunks", _SmallChunks), dtypes=(torch.float32,))
    assert "check_matches_full[float32]" in report.passed
    assert "check_padding_invariance[float32]" in report.passed
    assert len(report.passed) == len(CHECKS)


def test_exact_backends_are_declared_exact_and_linear_is_not() -> None:
    assert [get_spec(n).exact for n in BUILTINS] == [False, True, True, True, True]


def test_linear_differs_from_softmax_attention() -> None:
    # Different functions: the same input gives clearly different outputs.
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 20, 16, generator=g) for _ in range(3))
    diff = (get_spec("linear").create()(q, k, v) - get_spec("full").create()(q, k, v)).abs()
    assert diff.max().item() > 0.1


@pytest.mark.parametrize("name", ["full", "flash", "memory_efficient", "sdpa"])
def test_softmax_backends_with_dropout_conform_in_eval(name: str) -> None:
    report = run_conformance(name, dtypes=(torch.float32,), options={"dropout": 0.5})
    assert "check_no_dropout_in_eval[float32]" in report.passed
    assert "check_matches_full[float32]" in report.passed
    assert report.skipped == [] or all("declares every" in s for s in report.skipped)


@pytest.mark.gpu
@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_conformance_on_cuda(name: str) -> None:
    # Declared dtypes run every applicable check; undeclared ones must raise clearly.
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for check in applicable_checks(name, "cuda", dtype):
            run_check(check, name, device="cuda", dtype=dtype)
