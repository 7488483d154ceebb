"""Log-space Sinkhorn with a dustbin: marginals, dustbin behaviour, a hand-computed 2x2 case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from loftr_core.model.coarse_matching import sinkhorn_confidence
from loftr_core.model.optimal_transport import log_optimal_transport


def _plan(z: torch.Tensor, length: int, s: int) -> torch.Tensor:
    """The transport plan: exp(Z) / (L + S)."""
    return z.double().exp() / (length + s)


def _marginals(length: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    mu = torch.full((length + 1,), 1.0 / (length + s), dtype=torch.float64)
    mu[-1] = s / (length + s)
    nu = torch.full((s + 1,), 1.0 / (length + s), dtype=torch.float64)
    nu[-1] = length / (length + s)
    return mu, nu


@pytest.mark.parametrize(("length", "s"), [(7, 5), (4, 9)])
def test_marginals(length: int, s: int) -> None:
    """After the final v update the COLUMN marginals are exact; rows converge with iterations."""
    torch.manual_seed(0)
    scores = torch.randn(2, length, s) * 3
    bin_score = torch.tensor(0.7)
    mu, nu = _marginals(length, s)
    p3 = _plan(log_optimal_transport(scores, bin_score, 3), length, s)
    torch.testing.assert_close(p3.sum(1), nu.expand(2, -1), rtol=1e-5, atol=0)  # columns: exact
    row_err3 = (p3.sum(2) - mu).abs().max().item()
    assert 1e-6 < row_err3 < 0.5 * mu.max().item()  # rows: only approximately after 3 iterations
    p100 = _plan(log_optimal_transport(scores, bin_score, 100), length, s)
    torch.testing.assert_close(p100.sum(1), nu.expand(2, -1), rtol=1e-5, atol=0)
    torch.testing.assert_close(p100.sum(2), mu.expand(2, -1), rtol=1e-4, atol=0)
    assert (p100.sum(2) - mu).abs().max().item() < row_err3 / 100


def _sinkhorn_by_hand(scores: np.ndarray, bin_score: float, iters: int) -> np.ndarray:
    """SuperGlue's algorithm for one (L, S) matrix, written with explicit loops in float64."""
    length, s = scores.shape
    c = np.full((length + 1, s + 1), bin_score)
    c[:length, :s] = scores
    norm = -math.log(length + s)
    log_mu = [norm] * length + [math.log(s) + norm]
    log_nu = [norm] * s + [math.log(length) + norm]
    u = [0.0] * (length + 1)
    v = [0.0] * (s + 1)
    for _ in range(iters):
        u = [
            log_mu[i] - math.log(sum(math.exp(c[i, j] + v[j]) for j in range(s + 1)))
            for i in range(length + 1)
        ]
        v = [
            log_nu[j] - math.log(sum(math.exp(c[i, j] + u[i]) for i in range(length + 1)))
            for j in range(s + 1)
        ]
    return np.array(
        [[c[i, j] + u[i] + v[j] - norm for j in range(s + 1)] for i in range(length + 1)]
    )


def test_two_by_two_case_by_hand() -> None:
    scores = np.array([[2.0, -1.0], [0.5, 1.5]])
    want = _sinkhorn_by_hand(scores, 1.0, 3)
    got = log_optimal_transport(
        torch.tensor(scores)[None], torch.tensor(1.0, dtype=torch.float64), 3
    )[0]
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
    # a few hand-checkable facts about the plan: (L+S) * plan = exp(Z); columns sum to nu
    plan = np.exp(want) / 4
    np.testing.assert_allclose(plan.sum(0), [0.25, 0.25, 0.5], atol=1e-12)
    assert plan[0, 0] > plan[0, 1] and plan[1, 1] > plan[1, 0]  # the diagonal wins
    # one iteration, first entry, fully by hand
    c = np.array([[2.0, -1.0, 1.0], [0.5, 1.5, 1.0], [1.0, 1.0, 1.0]])
    n = -math.log(4)
    u = [n - math.log(np.exp(c[0]).sum()), n - math.log(np.exp(c[1]).sum()),
         math.log(2) + n - math.log(np.exp(c[2]).sum())]  # fmt: skip
    v0 = n - math.log(sum(math.exp(c[i, 0] + u[i]) for i in range(3)))
    z1 = log_optimal_transport(torch.tensor(scores)[None], torch.tensor(1.0).double(), 1)[0]
    assert z1[0, 0].item() == pytest.approx(c[0, 0] + u[0] + v0 - n, abs=1e-12)


def test_dustbin_takes_unmatched_mass_and_prefilter_drops_it() -> None:
    """Rows 0-2 match columns 0-2; row 3 and column 3 are dissimilar to everything."""
    scores = torch.full((1, 4, 4), -8.0)
    scores[0, [0, 1, 2], [0, 1, 2]] = 8.0
    bin_score = torch.tensor(0.0)
    z = log_optimal_transport(scores, bin_score, 100)
    p = z.exp()  # (L+S) * plan: ~1 for a full match
    assert p[0, [0, 1, 2], [0, 1, 2]].min() > 0.95
    assert (
        p[0, 3, 4] > 0.95 and p[0, 4, 3] > 0.95
    )  # row 3 -> column dustbin, column 3 -> row dustbin
    assert p[0, 3, :4].max() < 1e-3
    # the confidence used for matching, with and without prefilter
    f0 = torch.eye(4)[None] * 4  # features whose scores (f0 f1^T / C) become large on 3 pairs
    f1 = torch.eye(4)[None] * 4
    f1[0, 3] = -f1[0, 3]  # row 3 / column 3 anti-correlated
    conf, with_bin = sinkhorn_confidence(f0 * 8, f1 * 8, torch.tensor(0.0), 50, prefilter=False)
    assert with_bin.shape == (1, 5, 5)
    assert torch.equal(conf, with_bin[:, :4, :4])
    conf_pf, _ = sinkhorn_confidence(f0 * 8, f1 * 8, torch.tensor(0.0), 50, prefilter=True)
    dust_rows = with_bin[0, :4].argmax(1) == 4
    assert dust_rows.tolist() == [False, False, False, True]
    assert (conf_pf[0, 3] == 0).all() and (conf_pf[0, :, 3] == 0).all()
    assert torch.equal(conf_pf[0, :3, :3], conf[0, :3, :3])


def test_gradient_reaches_bin_score() -> None:
    bin_score = torch.nn.Parameter(torch.tensor(1.0))
    scores = torch.randn(1, 5, 6, requires_grad=True)
    z = log_optimal_transport(scores, bin_score, 3)
    z.exp()[:, :5, :6].sum().backward()
    assert bin_score.grad is not None and bin_score.grad.abs() > 0
    assert scores.grad is not None and torch.isfinite(scores.grad).all()
