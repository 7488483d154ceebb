"""oneDNN products (``loftr_core.execution``): F.linear's result up to rounding, used only where due."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from loftr_core import ExecutionOptions
from loftr_core.execution import Execution, policy
from loftr_core.execution.kernels import onednn_linear
from loftr_core.model.coarse_matching import border_keep, dual_softmax_matches


@pytest.mark.parametrize("shape", [(300, 64), (2, 150, 64), (1, 3, 5, 64)])
@pytest.mark.parametrize("bias", [False, True])
def test_onednn_linear_equals_f_linear_up_to_rounding(shape: tuple[int, ...], bias: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape)
    w = torch.randn(48, 64) / 8
    b = torch.randn(48) if bias else None
    out = onednn_linear(x, w, b)
    ref = F.linear(x, w, b)
    assert out.shape == ref.shape and out.is_contiguous()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_onednn_linear_takes_non_contiguous_input_and_propagates_gradients() -> None:
    torch.manual_seed(0)
    base = torch.randn(64, 40, requires_grad=True)
    x = base.t()  # (40, 64), not contiguous
    w = torch.randn(32, 64, requires_grad=True)
    onednn_linear(x, w).square().sum().backward()
    g_x, g_w = base.grad.clone(), w.grad.clone()  # type: ignore[union-attr]
    base.grad = w.grad = None
    F.linear(x, w).square().sum().backward()
    torch.testing.assert_close(g_x, base.grad, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(g_w, w.grad, atol=1e-4, rtol=1e-5)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Records the input shapes passed to the execution layer's ``onednn_linear``."""
    seen: list[tuple[int, ...]] = []
    real = policy.onednn_linear

    def spy(x: torch.Tensor, *args: Any) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return real(x, *args)

    monkeypatch.setattr(policy, "onednn_linear", spy)
    return seen


def test_linear_routes_cpu_float32_only(calls: list[tuple[int, ...]]) -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    ex, blas = Execution(), Execution(ExecutionOptions(onednn=False))
    x = torch.randn(10, 64)
    torch.testing.assert_close(
        ex.linear(lin, x), F.linear(x, lin.weight, lin.bias), atol=1e-5, rtol=1e-5
    )
    assert calls == [(10, 64)]
    # everything else is plain F.linear, bitwise
    assert torch.equal(blas.linear(lin, x), F.linear(x, lin.weight, lin.bias))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(ex.linear(lin, x), F.linear(x, lin.weight, lin.bias))
    low = torch.nn.Linear(64, 32).to(torch.bfloat16)
    xb = x.to(torch.bfloat16)
    assert torch.equal(ex.linear(low, xb), F.linear(xb, low.weight, low.bias))
    assert calls == [(10, 64)]


def _overlapping_features() -> tuple[torch.Tensor, ...]:
    """Coarse features of a 6x10 and a 7x10 grid, 40 cells of image 0 reappearing in image 1,
    and their keep masks (no border removal)."""
    torch.manual_seed(0)
    f0 = torch.randn(1, 60, 32)
    f1 = torch.cat([f0[:, 10:50] + 0.05 * torch.randn(1, 40, 32), torch.randn(1, 30, 32)], dim=1)
    return (
        f0,
        f1,
        border_keep(1, 6, 10, 0, None, f0.device),
        border_keep(1, 7, 10, 0, None, f0.device),
    )


@pytest.mark.parametrize("chunk", [1 << 25, 700])  # the dense path; then 10-row chunks
def test_coarse_matching_same_matches_with_onednn_scores(
    chunk: int, calls: list[tuple[int, ...]]
) -> None:
    f0, f1, keep0, keep1 = _overlapping_features()
    args = (f0, f1, 0.1, 0.05, keep0, keep1, None, None)
    ref = dual_softmax_matches(
        *args, Execution(ExecutionOptions(onednn=False, coarse_chunk_elements=chunk))
    )
    assert not calls
    out = dual_softmax_matches(*args, Execution(ExecutionOptions(coarse_chunk_elements=chunk)))
    assert calls  # the oneDNN route ran
    assert ref.i_ids.numel() >= 30
    assert torch.equal(out.b_ids, ref.b_ids) and torch.equal(out.i_ids, ref.i_ids)
    assert torch.equal(out.j_ids, ref.j_ids)
    torch.testing.assert_close(out.mconf, ref.mconf, atol=1e-5, rtol=0)


def test_optimal_transport_inference_same_matches_with_onednn_scores(
    calls: list[tuple[int, ...]],
) -> None:
    """Under no_grad the OT matcher's score matrix takes the oneDNN route too: same matches."""
    from loftr_core.model.coarse_matching import CoarseMatching
    from loftr_core.model.config import MatchCoarseConfig

    f0, f1, keep0, keep1 = _overlapping_features()
    config = MatchCoarseConfig(match_type="sinkhorn", thr=0.01, border_rm=0)
    blas = CoarseMatching(config, Execution(ExecutionOptions(onednn=False)))
    fast = CoarseMatching(config, Execution())
    fast.load_state_dict(blas.state_dict())
    with torch.no_grad():
        ref = blas(f0, f1, keep0, keep1)
        assert not calls
        out = fast(f0, f1, keep0, keep1)
    assert calls and ref.i_ids.numel() >= 20
    assert torch.equal(out.i_ids, ref.i_ids) and torch.equal(out.j_ids, ref.j_ids)
    torch.testing.assert_close(out.mconf, ref.mconf, atol=1e-5, rtol=0)
