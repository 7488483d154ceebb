"""Coarse matching: the chunked inference matcher against a literal dense reference (spec §1.5)."""

from __future__ import annotations

import pytest
import torch

from loftr_core.execution import Execution, ExecutionOptions
from loftr_core.model.coarse_matching import (
    CoarseMatching,
    border_keep,
    dual_softmax_confidence,
    dual_softmax_matches,
    select_matches,
)
from loftr_core.model.config import MatchCoarseConfig


def _dense_reference(
    f0: torch.Tensor,
    f1: torch.Tensor,
    hw0: tuple[int, int],
    hw1: tuple[int, int],
    thr: float,
    border: int,
    temperature: float = 0.1,
    grid0: torch.Tensor | None = None,
    grid1: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """The original algorithm, written out densely: (b, i, j, conf)."""
    n, length, c = f0.shape
    s = f1.shape[1]
    sim = torch.einsum("nlc,nsc->nls", f0 / c**0.5, f1 / c**0.5) / temperature
    if grid0 is not None and grid1 is not None:
        valid = grid0.reshape(n, -1)[:, :, None] & grid1.reshape(n, -1)[:, None, :]
        sim = sim.masked_fill(~valid, -1e9)
    conf = torch.softmax(sim, 1) * torch.softmax(sim, 2)
    mask = (conf > thr).view(n, *hw0, *hw1)
    if border > 0:
        b = border
        mask[:, :b] = False
        mask[:, :, :b] = False
        mask[:, :, :, :b] = False
        mask[:, :, :, :, :b] = False
        if grid0 is None or grid1 is None:
            mask[:, -b:] = False
            mask[:, :, -b:] = False
            mask[:, :, :, -b:] = False
            mask[:, :, :, :, -b:] = False
        else:
            for k in range(n):
                h0, w0 = int(grid0[k].sum(0).max()), int(grid0[k].sum(1).max())
                h1, w1 = int(grid1[k].sum(0).max()), int(grid1[k].sum(1).max())
                mask[k, h0 - b :] = False
                mask[k, :, w0 - b :] = False
                mask[k, :, :, h1 - b :] = False
                mask[k, :, :, :, w1 - b :] = False
    mask = mask.view(n, length, s)
    mask = (
        mask
        & (conf == conf.max(dim=2, keepdim=True).values)
        & (conf == conf.max(dim=1, keepdim=True).values)
    )
    any_row, j_all = mask.max(dim=2)
    b_ids, i_ids = torch.where(any_row)
    j_ids = j_all[b_ids, i_ids]
    return b_ids, i_ids, j_ids, conf[b_ids, i_ids, j_ids]


def _features(n: int, length: int, s: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # correlated features so that there are many confident mutual matches
    base = torch.randn(n, max(length, s), 256, generator=g) * 4
    perm = torch.randperm(max(length, s), generator=g)[:s]
    f0 = base[:, :length] + torch.randn(n, length, 256, generator=g)
    f1 = base[:, perm] + torch.randn(n, s, 256, generator=g)
    return f0, f1


def _grid(n: int, h: int, w: int, valid: list[tuple[int, int]]) -> torch.Tensor:
    g = torch.zeros(n, h, w, dtype=torch.bool)
    for k, (vh, vw) in enumerate(valid):
        g[k, :vh, :vw] = True
    return g


@pytest.mark.parametrize("max_chunk_elements", [1 << 24, 2 * 7 * 132, 1000, 2 * 3 * 132 + 1])
@pytest.mark.parametrize("masked", [False, True])
def test_chunked_equals_dense_reference(max_chunk_elements: int, masked: bool) -> None:
    """Same matches and confidences for one chunk, many chunks, ragged chunks; with/without masks."""
    n, hw0, hw1 = 2, (10, 12), (11, 12)
    length, s = 120, 132
    f0, f1 = _features(n, length, s, seed=int(masked) * 7 + max_chunk_elements % 97)
    grid0 = _grid(n, *hw0, [(10, 10), (9, 12)]) if masked else None
    grid1 = _grid(n, *hw1, [(11, 12), (10, 9)]) if masked else None
    m0 = None if grid0 is None else grid0.reshape(n, -1)
    m1 = None if grid1 is None else grid1.reshape(n, -1)
    for thr, border in [(0.2, 2), (0.01, 0), (0.0, 1)]:
        b, i, j, conf = _dense_reference(f0, f1, hw0, hw1, thr, border, 0.1, grid0, grid1)
        pad0, pad1 = (grid0, grid1) if masked else (None, None)
        keep0 = border_keep(n, *hw0, border, pad0, f0.device)
        keep1 = border_keep(n, *hw1, border, pad1, f0.device)
        ex = Execution(ExecutionOptions(coarse_chunk_elements=max_chunk_elements))
        got = dual_softmax_matches(f0, f1, 0.1, thr, keep0, keep1, m0, m1, ex)
        assert b.numel() >= (15 if border == 2 else 60), (thr, border, b.numel())
        assert torch.equal(got.b_ids, b) and torch.equal(got.i_ids, i)
        assert torch.equal(got.j_ids, j)
        # equal up to float32 rounding of the score GEMM on a chunk vs the whole matrix
        # (1 ulp of a score ~100 is ~1e-5, and conf ~ exp(2 * score)): relative 2e-5
        torch.testing.assert_close(got.mconf, conf, rtol=2e-5, atol=1e-7)
        # the dense training-path matrix gives the same matches
        dense = select_matches(dual_softmax_confidence(f0, f1, 0.1, m0, m1), thr, keep0, keep1)
        assert torch.equal(dense.i_ids, i) and torch.equal(dense.j_ids, j)


def test_masked_pairs_have_zero_confidence_and_never_match() -> None:
    n, length, s = 1, 12, 12
    f0, f1 = _features(n, length, s, seed=3)
    m0 = torch.ones(n, length, dtype=torch.bool)
    m1 = torch.ones(n, s, dtype=torch.bool)
    m0[:, 8:] = False
    m1[:, :3] = False
    conf = dual_softmax_confidence(f0, f1, 0.1, m0, m1)
    assert (conf[:, 8:] == 0).all() and (conf[:, :, :3] == 0).all()
    keep = torch.ones(n, length, dtype=torch.bool)
    got = dual_softmax_matches(f0, f1, 0.1, 0.0, keep, keep, m0, m1)
    assert (got.i_ids < 8).all() and (got.j_ids >= 3).all() and got.b_ids.numel() > 0
    # a fully masked batch element: no NaN, no match
    got = dual_softmax_matches(f0, f1, 0.1, 0.0, keep, keep, torch.zeros_like(m0), m1)
    assert got.b_ids.numel() == 0


def test_border_keep() -> None:
    keep = border_keep(1, 5, 6, 2, None, torch.device("cpu")).view(5, 6)
    want = torch.zeros(5, 6, dtype=torch.bool)
    want[2:3, 2:4] = True
    assert torch.equal(keep, want)
    grid = _grid(1, 8, 8, [(6, 7)])
    keep = border_keep(1, 8, 8, 1, grid, torch.device("cpu")).view(8, 8)
    want = torch.zeros(8, 8, dtype=torch.bool)
    want[1:5, 1:6] = True
    assert torch.equal(keep, want)
    assert border_keep(1, 3, 3, 0, None, torch.device("cpu")).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_features_are_safe(dtype: torch.dtype) -> None:
    """fp16/bf16 features with masks: finite confidences, same matches as fp32 on the same values."""
    n, length, s = 1, 48, 48
    f0, f1 = _features(n, length, s, seed=5)
    f0, f1 = f0.to(dtype), f1.to(dtype)
    m0 = torch.ones(n, length, dtype=torch.bool)
    m0[:, 40:] = False
    m1 = torch.ones(n, s, dtype=torch.bool)
    conf = dual_softmax_confidence(f0, f1, 0.1, m0, m1)
    assert conf.dtype == torch.float32 and torch.isfinite(conf).all()
    keep = torch.ones(n, length, dtype=torch.bool)
    low = dual_softmax_matches(f0, f1, 0.1, 0.2, keep, keep, m0, m1)
    high = dual_softmax_matches(f0.float(), f1.float(), 0.1, 0.2, keep, keep, m0, m1)
    assert torch.isfinite(low.mconf).all() and low.i_ids.numel() >= 10
    same = (low.i_ids[:, None] == high.i_ids[None]) & (low.j_ids[:, None] == high.j_ids[None])
    assert same.any(1).float().mean() >= 0.9


def test_optimal_transport_module_keeps_bin_score_parameter() -> None:
    mod = CoarseMatching(MatchCoarseConfig(match_type="sinkhorn", skh_init_bin_score=0.5))
    assert [name for name, _ in mod.named_parameters()] == ["bin_score"]
    assert mod.bin_score.shape == () and mod.bin_score.item() == 0.5
    assert list(CoarseMatching(MatchCoarseConfig()).parameters()) == []
    f0, f1 = _features(1, 30, 30, seed=11)
    keep = torch.ones(1, 30, dtype=torch.bool)
    got = mod(f0, f1, keep, keep)
    conf, with_bin = mod.confidence(f0, f1, None, None)
    assert with_bin is not None and with_bin.shape == (1, 31, 31)
    ref = select_matches(conf, 0.2, keep, keep)
    assert torch.equal(got.i_ids, ref.i_ids) and got.i_ids.numel() >= 10


@pytest.mark.gpu
@pytest.mark.parametrize("max_chunk_elements", [1 << 24, 1000])  # dense, then chunked
@pytest.mark.parametrize("masked", [False, True])
def test_cuda_matches_equal_the_dense_reference(max_chunk_elements: int, masked: bool) -> None:
    """On CUDA (transposed softmax over rows, see _softmax_over_rows): the CPU reference's answer."""
    n, hw0, hw1 = 2, (10, 12), (11, 12)
    f0, f1 = _features(n, 120, 132, seed=3)
    grid0 = _grid(n, *hw0, [(10, 10), (9, 12)]) if masked else None
    grid1 = _grid(n, *hw1, [(11, 12), (10, 9)]) if masked else None
    b, i, j, conf = _dense_reference(f0, f1, hw0, hw1, 0.01, 1, 0.1, grid0, grid1)
    cuda = torch.device("cuda")
    m0 = None if grid0 is None else grid0.reshape(n, -1).to(cuda)
    m1 = None if grid1 is None else grid1.reshape(n, -1).to(cuda)
    keep0 = border_keep(n, *hw0, 1, None if grid0 is None else grid0.to(cuda), cuda)
    keep1 = border_keep(n, *hw1, 1, None if grid1 is None else grid1.to(cuda), cuda)
    g0, g1 = f0.to(cuda), f1.to(cuda)
    ex = Execution(ExecutionOptions(coarse_chunk_elements=max_chunk_elements))
    got = dual_softmax_matches(g0, g1, 0.1, 0.01, keep0, keep1, m0, m1, ex)
    assert b.numel() >= 60
    assert torch.equal(got.i_ids.cpu(), i) and torch.equal(got.j_ids.cpu(), j)
    torch.testing.assert_close(got.mconf.cpu(), conf, rtol=2e-5, atol=1e-7)
    # the differentiable dense matrix (training) agrees with the CPU one, gradients flow
    g0.requires_grad_(True)
    dense = dual_softmax_confidence(g0, g1, 0.1, m0, m1)
    ref = dual_softmax_confidence(
        f0, f1, 0.1, None if m0 is None else m0.cpu(), None if m1 is None else m1.cpu()
    )
    torch.testing.assert_close(dense.detach().cpu(), ref, rtol=2e-5, atol=1e-6)
    dense.sum().backward()
    assert g0.grad is not None and torch.isfinite(g0.grad).all()


def _count_products(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Record the output shape of every score product ``Execution.similarity`` computes."""
    shapes: list[tuple[int, ...]] = []
    real = Execution.similarity

    def spy(self: Execution, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = real(self, a, b)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(Execution, "similarity", spy)
    return shapes


# one chunk; 8-row chunks (the 8-byte word search); 7-row chunks, the last one ragged (120 = 17*7+1)
@pytest.mark.parametrize("chunk", [1 << 24, 16 * 132, 14 * 132])
@pytest.mark.parametrize("masked", [False, True])
def test_one_pass_computes_each_score_once_and_matches_like_the_dense_formula(
    chunk: int, masked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-pass path (default options): every score product once, the dense answer."""
    n, hw0, hw1 = 2, (10, 12), (11, 12)
    f0, f1 = _features(n, 120, 132, seed=17 + masked)
    grid0 = _grid(n, *hw0, [(10, 10), (9, 12)]) if masked else None
    grid1 = _grid(n, *hw1, [(11, 12), (10, 9)]) if masked else None
    m0 = None if grid0 is None else grid0.reshape(n, -1)
    m1 = None if grid1 is None else grid1.reshape(n, -1)
    keep0 = border_keep(n, *hw0, 1, grid0, f0.device)
    keep1 = border_keep(n, *hw1, 1, grid1, f0.device)
    shapes = _count_products(monkeypatch)
    for thr in (0.2, 0.05, 0.01):
        b, i, j, conf = _dense_reference(f0, f1, hw0, hw1, thr, 1, 0.1, grid0, grid1)
        shapes.clear()
        ex = Execution(ExecutionOptions(coarse_chunk_elements=chunk))
        got = dual_softmax_matches(f0, f1, 0.1, thr, keep0, keep1, m0, m1, ex)
        # transposed (N, S, rows) chunks that together cover the L rows exactly once
        assert all(shape[:2] == (n, 132) for shape in shapes), shapes
        assert sum(shape[2] for shape in shapes) == 120
        assert len(shapes) == -(-120 // min(120, chunk // (n * 132)))
        assert b.numel() >= 40, (thr, b.numel())
        assert torch.equal(got.b_ids, b) and torch.equal(got.i_ids, i)
        assert torch.equal(got.j_ids, j)
        torch.testing.assert_close(got.mconf, conf, rtol=2e-5, atol=1e-7)
    # the two-pass stream computes every chunk twice (but the last): the work saved
    shapes.clear()
    two_pass = Execution(ExecutionOptions(coarse_chunk_elements=16 * 132, coarse_one_pass=False))
    dual_softmax_matches(f0, f1, 0.1, 0.2, keep0, keep1, m0, m1, two_pass)
    assert sum(shape[1] for shape in shapes) == 2 * 120 - (120 - 112)


def test_one_pass_ties_take_the_first_column_as_the_dense_argmax(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Duplicate image-1 features: equal confidences in a row; both paths pick the first."""
    import loftr_core.model.coarse_matching as cm

    calls: list[object] = []
    real = cm.thresholded_dual_softmax

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cm, "thresholded_dual_softmax", spy)
    f0, f1 = _features(1, 40, 40, seed=23)
    f1[:, 30] = f1[:, 7]  # columns 7 and 30 tie in every row
    f0[:, 5] = f1[:, 7] * 3  # row 5 prefers them over anything else
    keep = torch.ones(1, 40, dtype=torch.bool)
    dense = Execution(ExecutionOptions(coarse_one_pass=False))
    conf = dual_softmax_confidence(f0, f1, 0.1)
    assert conf[0, 5, 7] == conf[0, 5, 30] and conf[0, 5].argmax() == 7
    thr = 0.5 * float(conf[0, 5, 7])  # the tied pair clears it
    ref = dual_softmax_matches(f0, f1, 0.1, thr, keep, keep, execution=dense)
    got = dual_softmax_matches(f0, f1, 0.1, thr, keep, keep)
    assert calls  # the one-pass path ran
    assert torch.equal(got.i_ids, ref.i_ids) and torch.equal(got.j_ids, ref.j_ids)
    row5 = (got.i_ids == 5).nonzero()
    assert row5.numel() == 1 and int(got.j_ids[row5[0, 0]]) == 7  # the first of the tie


def test_one_pass_falls_back_when_its_candidates_exceed_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Below MIN_CANDIDATE_THR, or once more candidates turn up than the budget holds, the
    two-pass evaluation answers (the same matches)."""
    import loftr_core.model.coarse_matching as cm
    from loftr_core.execution import streaming

    results: list[bool] = []
    real = streaming.thresholded_dual_softmax

    def spy(*args: object, **kwargs: object) -> object:
        out = real(*args, **kwargs)  # type: ignore[arg-type]
        results.append(out is not None)
        return out

    monkeypatch.setattr(cm, "thresholded_dual_softmax", spy)
    f0, f1 = _features(1, 200, 64, seed=29)
    keep = torch.ones(1, 200, dtype=torch.bool)
    dense = Execution(ExecutionOptions(coarse_one_pass=False))
    ex = Execution(ExecutionOptions(coarse_chunk_elements=64 * 16))
    for thr in (0.05, streaming.MIN_CANDIDATE_THR / 4):
        results.clear()
        got = dual_softmax_matches(f0, f1, 0.1, thr, keep, keep, execution=ex)
        ref = dual_softmax_matches(f0, f1, 0.1, thr, keep, keep, execution=dense)
        assert results == ([True] if thr >= streaming.MIN_CANDIDATE_THR else []), thr
        assert torch.equal(got.i_ids, ref.i_ids) and torch.equal(got.j_ids, ref.j_ids)
        assert got.i_ids.numel() >= 20
    # room for 10 candidates only: the pass stops early, the two-pass stream answers
    monkeypatch.setattr(cm, "MIN_CANDIDATE_BUDGET", 10 * streaming.CANDIDATE_BYTES)
    tight = Execution(ExecutionOptions(coarse_chunk_elements=1))
    results.clear()
    got = dual_softmax_matches(f0, f1, 0.1, 0.05, keep, keep, execution=tight)
    ref = dual_softmax_matches(f0, f1, 0.1, 0.05, keep, keep, execution=dense)
    assert results == [False]
    assert torch.equal(got.i_ids, ref.i_ids) and torch.equal(got.j_ids, ref.j_ids)


@pytest.mark.parametrize("last", [64, 61])  # the 8-byte word search, then plain nonzero
def test_sparse_nonzero_equals_torch_nonzero(last: int) -> None:
    from loftr_core.execution.streaming import _nonzero_sparse

    g = torch.Generator().manual_seed(last)
    for density in (0.0, 0.001, 0.05, 1.0):
        mask = torch.rand(3, 50, last, generator=g) < density
        got = _nonzero_sparse(mask)
        want = torch.nonzero(mask, as_tuple=True)
        assert all(torch.equal(x, y) for x, y in zip(got, want, strict=True))


def test_one_pass_float64_features() -> None:
    f0, f1 = _features(1, 48, 48, seed=31)
    keep = torch.ones(1, 48, dtype=torch.bool)
    got = dual_softmax_matches(f0.double(), f1.double(), 0.1, 0.1, keep, keep)
    ref = select_matches(dual_softmax_confidence(f0.double(), f1.double(), 0.1), 0.1, keep, keep)
    assert got.mconf.dtype == torch.float64 and got.i_ids.numel() >= 10
    assert torch.equal(got.i_ids, ref.i_ids) and torch.equal(got.j_ids, ref.j_ids)
    torch.testing.assert_close(got.mconf, ref.mconf, rtol=1e-12, atol=0)
