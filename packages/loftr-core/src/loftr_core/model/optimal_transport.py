"""Log-space Sinkhorn optimal transport with a learned dustbin (spec §1.5, after SuperGlue).

The score matrix ``(N, L, S)`` is augmented with a dustbin row and column filled with the scalar
``bin_score``; the marginals are uniform (``1/(L+S)`` per real row/column) with the dustbins taking
the remaining mass (``S/(L+S)`` for the dustbin row, ``L/(L+S)`` for the dustbin column).
``iters`` alternating log-domain normalisations follow (rows first, then columns), so after the
last iteration the column marginals hold exactly and the row marginals approximately.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["log_optimal_transport"]


def log_optimal_transport(scores: Tensor, bin_score: Tensor, iters: int) -> Tensor:
    """Log of the transport plan, scaled by ``L + S`` so that a full match has value ~1.

    Args:
        scores: ``(N, L, S)`` float scores (log-potentials).
        bin_score: 0-dim tensor, the dustbin score (learned).
        iters: Sinkhorn iterations (>= 1).

    Returns:
        ``(N, L+1, S+1)`` tensor ``Z`` with ``exp(Z) / (L+S)`` the transport plan: its rows sum to
        ``[1/(L+S)]*L + [S/(L+S)]`` and its columns to ``[1/(L+S)]*S + [L/(L+S)]`` (columns exactly
        after the last iteration).
    """
    n, rows, cols = scores.shape
    bins0 = bin_score.to(scores.dtype).expand(n, rows, 1)
    bins1 = bin_score.to(scores.dtype).expand(n, 1, cols)
    corner = bin_score.to(scores.dtype).expand(n, 1, 1)
    couplings = torch.cat(
        [torch.cat([scores, bins0], dim=-1), torch.cat([bins1, corner], dim=-1)], dim=1
    )
    norm = -math.log(rows + cols)
    log_mu = torch.full((rows + 1,), norm, device=scores.device, dtype=scores.dtype)
    log_mu[-1] = math.log(cols) + norm
    log_nu = torch.full((cols + 1,), norm, device=scores.device, dtype=scores.dtype)
    log_nu[-1] = math.log(rows) + norm
    log_mu = log_mu.expand(n, -1)
    log_nu = log_nu.expand(n, -1)

    u = torch.zeros_like(log_mu)
    v = torch.zeros_like(log_nu)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(couplings + v[:, None, :], dim=2)
        v = log_nu - torch.logsumexp(couplings + u[:, :, None], dim=1)
    return couplings + u[:, :, None] + v[:, None, :] - norm
