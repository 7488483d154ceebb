"""Coarse matching: confidence from dual-softmax or optimal transport, then mutual nearest
neighbours above a threshold away from the border (spec §1.5).

Two paths with identical match semantics:

* inference, dual-softmax: :func:`dual_softmax_matches` streams over chunks of image-0 rows and
  never holds the ``(N, L, S)`` confidence matrix (two passes: column max / sum-of-exp over all rows,
  then row-wise confidence, row argmax and column maxima);
* training (and optimal transport, which needs every row and column in each Sinkhorn iteration):
  the dense matrix (:func:`dual_softmax_confidence`, :func:`sinkhorn_confidence`) and
  :func:`select_matches` on it.

A match is a cell ``i`` of image 0 and the first column ``j`` of its row maximum with
``conf[i, j] > thr``, both cells off the border, and ``conf[i, j]`` also the maximum of column
``j``. Matches are ordered by batch, then ``i``. Arithmetic is float32 (or float64 for float64
features) whatever the feature dtype, so masks use a finite ``-1e9`` fill without overflowing
float16/bfloat16, and masked pairs get confidence exactly 0.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loftr_core.config import MatchCoarseConfig
from loftr_core.kernels import onednn_linear, use_onednn
from loftr_core.optimal_transport import log_optimal_transport

__all__ = [
    "CoarseMatches",
    "CoarseMatching",
    "border_keep",
    "dual_softmax_confidence",
    "dual_softmax_matches",
    "select_matches",
    "sinkhorn_confidence",
]

MASK_FILL = -1e9
"""Score of masked pairs (finite: the scores are float32/float64 here, see the module doc)."""


class CoarseMatches(NamedTuple):
    """Selected coarse matches (all ``(M,)``): batch index, cell in image 0 and 1, confidence."""

    b_ids: Tensor
    i_ids: Tensor
    j_ids: Tensor
    mconf: Tensor


def _scores(feat0: Tensor, feat1: Tensor, onednn: bool = False) -> Tensor:
    """``(f0 / sqrt(C)) @ (f1 / sqrt(C))^T`` as float32 (or float64): ``(N, l, S)``.

    ``onednn``: one oneDNN 1x1 convolution per batch element where :func:`use_onednn` allows
    (CPU float32; float rounding only), else ``torch.matmul``.
    """
    scale = feat0.shape[-1] ** 0.5
    if onednn and use_onednn(feat0, feat1):
        a, b = feat0 / scale, feat1 / scale
        if a.shape[0] == 1:
            return onednn_linear(a[0], b[0])[None]
        return torch.stack([onednn_linear(a[i], b[i]) for i in range(a.shape[0])])
    sim = torch.matmul(feat0 / scale, (feat1 / scale).transpose(1, 2))
    return sim.to(torch.promote_types(sim.dtype, torch.float32))


def _softmax_over_rows(sim: Tensor) -> Tensor:
    """``F.softmax(sim, dim=1)`` for ``(N, L, S)`` scores, fast on every device.

    On CUDA a softmax over a non-last dimension runs PyTorch's "spatial" softmax kernel, which
    took 7.9 ms of a 42 ms 640x480 pair on an H200 (the whole rest of coarse matching: 1 ms); the
    same softmax over the last dimension of the transposed scores is a regular, fast kernel.
    On CPU the direct call is kept (bitwise the original's).
    """
    if sim.device.type == "cpu":
        return F.softmax(sim, dim=1)
    return F.softmax(sim.transpose(1, 2), dim=2).transpose(1, 2)


def _invalid(mask0: Tensor | None, mask1: Tensor | None) -> Tensor | None:
    """``(N, L, S)`` (broadcastable) True where a pair involves a padded cell."""
    if mask0 is None and mask1 is None:
        return None
    if mask0 is None:
        assert mask1 is not None
        return ~mask1[:, None, :]
    if mask1 is None:
        return ~mask0[:, :, None]
    return ~(mask0[:, :, None] & mask1[:, None, :])


def border_keep(
    n: int, height: int, width: int, border: int, mask: Tensor | None, device: torch.device
) -> Tensor:
    """Cells that border removal keeps, ``(N, height*width)`` bool.

    Without a mask the first and last ``border`` rows/columns go; with a ``(N, h, w)`` mask the
    far borders are measured from the valid extent (the max number of valid rows over columns and
    of valid columns over rows, i.e. bottom/right padding), as the original.
    """
    rows = torch.arange(height, device=device)[None, :, None]
    cols = torch.arange(width, device=device)[None, None, :]
    if border <= 0:
        return torch.ones(n, height * width, dtype=torch.bool, device=device)
    if mask is None:
        h_end = torch.full((n, 1, 1), height, device=device)
        w_end = torch.full((n, 1, 1), width, device=device)
    else:
        h_end = mask.sum(1).amax(-1).view(n, 1, 1)
        w_end = mask.sum(2).amax(-1).view(n, 1, 1)
    keep = (rows >= border) & (cols >= border) & (rows < h_end - border) & (cols < w_end - border)
    return keep.reshape(n, height * width)


def _finish(
    row_max: Tensor, row_arg: Tensor, col_max: Tensor, thr: float, keep0: Tensor, keep1: Tensor
) -> CoarseMatches:
    mutual = torch.gather(col_max, 1, row_arg) == row_max
    valid = (row_max > thr) & mutual & keep0 & torch.gather(keep1, 1, row_arg)
    b_ids, i_ids = torch.nonzero(valid, as_tuple=True)
    return CoarseMatches(b_ids, i_ids, row_arg[b_ids, i_ids], row_max[b_ids, i_ids])


@torch.no_grad()
def select_matches(conf: Tensor, thr: float, keep0: Tensor, keep1: Tensor) -> CoarseMatches:
    """Mutual nearest neighbours above ``thr`` in a dense ``(N, L, S)`` confidence matrix.

    Args:
        conf: ``(N, L, S)`` confidences (masked pairs 0).
        thr: strict threshold.
        keep0, keep1: ``(N, L)`` / ``(N, S)`` bool, cells kept by border removal.
    """
    row_max, row_arg = conf.max(dim=2)
    return _finish(row_max, row_arg, conf.amax(dim=1), thr, keep0, keep1)


def dual_softmax_confidence(
    feat0: Tensor,
    feat1: Tensor,
    temperature: float,
    mask0: Tensor | None = None,
    mask1: Tensor | None = None,
) -> Tensor:
    """Dense, differentiable dual-softmax confidence ``softmax_L(sim) * softmax_S(sim)``.

    Args:
        feat0: ``(N, L, C)``; feat1: ``(N, S, C)`` transformer outputs.
        temperature: ``sim = f0·f1 / C / temperature``.
        mask0, mask1: optional ``(N, L)`` / ``(N, S)`` bool (True = valid).

    Returns:
        ``(N, L, S)`` float32 (float64 for float64 features), 0 at masked pairs.
    """
    sim = _scores(feat0, feat1) / temperature
    invalid = _invalid(mask0, mask1)
    if invalid is not None:
        sim = sim.masked_fill(invalid, MASK_FILL)
    conf = _softmax_over_rows(sim) * F.softmax(sim, dim=2)
    return conf if invalid is None else conf.masked_fill(invalid, 0.0)


def sinkhorn_confidence(
    feat0: Tensor,
    feat1: Tensor,
    bin_score: Tensor,
    iters: int,
    mask0: Tensor | None = None,
    mask1: Tensor | None = None,
    prefilter: bool = False,
) -> tuple[Tensor, Tensor]:
    """Dense optimal-transport confidence.

    Returns:
        ``(conf (N, L, S), conf_with_bin (N, L+1, S+1))``; ``conf`` is 0 at masked pairs and, with
        ``prefilter``, on rows/columns whose best entry is the dustbin.
    """
    sim = _scores(feat0, feat1)
    invalid = _invalid(mask0, mask1)
    if invalid is not None:
        sim = sim.masked_fill(invalid, MASK_FILL)
    assign = log_optimal_transport(sim, bin_score, iters).exp()
    length, s = sim.shape[1:]
    conf = assign[:, :length, :s]
    if prefilter:
        drop0 = assign.argmax(dim=2)[:, :length] == s  # (N, L)
        drop1 = assign.argmax(dim=1)[:, :s] == length  # (N, S)
        conf = conf.masked_fill(drop0[:, :, None] | drop1[:, None, :], 0.0)
    if invalid is not None:
        conf = conf.masked_fill(invalid, 0.0)
    return conf, assign


@torch.no_grad()
def dual_softmax_matches(
    feat0: Tensor,
    feat1: Tensor,
    temperature: float,
    thr: float,
    keep0: Tensor,
    keep1: Tensor,
    mask0: Tensor | None = None,
    mask1: Tensor | None = None,
    max_chunk_elements: int = 1 << 25,
    onednn: bool = False,
) -> CoarseMatches:
    """Dual-softmax matches without materialising the ``(N, L, S)`` confidence matrix.

    Pass 1 streams over row chunks of image 0 and accumulates, per column, the max score and the
    sum of ``exp(score - max)`` (rescaled online when the max grows). Pass 2 recomputes each chunk
    and forms ``softmax_S(sim) * exp(sim - col_max) / col_sum`` for it, keeping its row max/argmax
    and the running column max of the confidence. The last chunk of pass 1 is reused by pass 2.
    When the whole matrix fits in one chunk, the dense formula runs instead. Results equal :func:`select_matches` on
    :func:`dual_softmax_confidence` (up to float rounding of the column sums).

    Args:
        feat0: ``(N, L, C)``; feat1: ``(N, S, C)``.
        temperature, thr: see :class:`~loftr_core.config.MatchCoarseConfig`.
        keep0, keep1: ``(N, L)`` / ``(N, S)`` bool from :func:`border_keep`.
        mask0, mask1: optional ``(N, L)`` / ``(N, S)`` bool (True = valid).
        max_chunk_elements: at most this many ``N * rows * S`` scores per chunk.
        onednn: score matrix products through oneDNN on CPU float32 (see :func:`_scores`).
    """
    n, length, _ = feat0.shape
    s = feat1.shape[1]
    if n * length * s <= max_chunk_elements:
        # one chunk: the dense formula itself (two softmaxes, one matrix product; the fastest),
        # in place where it is bitwise the same: softmax_S(sim) * softmax_L(sim)
        sim = _scores(feat0, feat1, onednn).div_(temperature)
        invalid = _invalid(mask0, mask1)
        if invalid is not None:
            sim.masked_fill_(invalid, MASK_FILL)
        # a * b == b * a bitwise, so this is the original product on every device
        conf = F.softmax(sim, dim=2)
        conf.mul_(_softmax_over_rows(sim))
        del sim
        if invalid is not None:
            conf.masked_fill_(invalid, 0.0)
        return select_matches(conf, thr, keep0, keep1)
    rows = max(1, min(length, max_chunk_elements // max(1, n * s)))
    starts = list(range(0, length, rows))

    def chunk_scores(start: int) -> tuple[Tensor, Tensor | None]:
        stop = min(start + rows, length)
        sim = _scores(feat0[:, start:stop], feat1, onednn).div_(temperature)
        m0 = None if mask0 is None else mask0[:, start:stop]
        invalid = _invalid(m0, mask1)
        if invalid is not None:
            sim.masked_fill_(invalid, MASK_FILL)
        return sim, invalid

    dtype = torch.promote_types(feat0.dtype, torch.float32)
    # pass 1: column statistics over all rows
    col_max = torch.full((n, s), float("-inf"), device=feat0.device, dtype=dtype)
    col_sum = torch.zeros((n, s), device=feat0.device, dtype=dtype)
    last: tuple[Tensor, Tensor | None] | None = None
    for start in starts:
        sim, invalid = chunk_scores(start)
        new_max = torch.maximum(col_max, sim.amax(dim=1))
        shifted = sim - new_max[:, None]  # one temporary: exp in place (bitwise the same)
        col_sum = col_sum * torch.exp(col_max - new_max) + shifted.exp_().sum(1)
        del shifted
        col_max = new_max
        last = (sim, invalid)

    # pass 2: row-wise confidence, its row maxima and the running column maxima
    row_maxes: list[Tensor] = []
    row_args: list[Tensor] = []
    conf_col_max = torch.zeros((n, s), device=feat0.device, dtype=dtype)
    for start in reversed(starts):
        sim, invalid = last if last is not None else chunk_scores(start)
        last = None
        conf = F.softmax(sim, dim=2)
        conf.mul_(sim.sub_(col_max[:, None]).exp_().div_(col_sum[:, None]))
        if invalid is not None:
            conf.masked_fill_(invalid, 0.0)
        chunk_max, chunk_arg = conf.max(dim=2)
        row_maxes.append(chunk_max)
        row_args.append(chunk_arg)
        conf_col_max = torch.maximum(conf_col_max, conf.amax(dim=1))
    row_max = torch.cat(row_maxes[::-1], dim=1)
    row_arg = torch.cat(row_args[::-1], dim=1)
    return _finish(row_max, row_arg, conf_col_max, thr, keep0, keep1)


class CoarseMatching(nn.Module):
    """Coarse matching with the configured method; holds ``bin_score`` for optimal transport.

    Args:
        config: the ``match_coarse`` section.
    """

    def __init__(self, config: MatchCoarseConfig) -> None:
        super().__init__()
        self.config = config
        if config.match_type == "sinkhorn":
            self.bin_score = nn.Parameter(torch.tensor(config.skh_init_bin_score))

    def keep_masks(
        self,
        n: int,
        hw0: tuple[int, int],
        hw1: tuple[int, int],
        mask0: Tensor | None,
        mask1: Tensor | None,
        device: torch.device,
    ) -> tuple[Tensor, Tensor]:
        """Border-removal keep masks ``(N, L)``, ``(N, S)`` from ``(N, Hc, Wc)`` masks (or None).

        As the original, the valid extent is read from the masks only when ``mask0`` is given.
        """
        b = self.config.border_rm
        pad0, pad1 = (mask0, mask1) if mask0 is not None else (None, None)
        keep0 = border_keep(n, hw0[0], hw0[1], b, pad0, device)
        keep1 = border_keep(n, hw1[0], hw1[1], b, pad1, device)
        return keep0, keep1

    def confidence(
        self, feat0: Tensor, feat1: Tensor, mask0: Tensor | None, mask1: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Dense differentiable confidence (training path): ``(conf, conf_with_bin or None)``."""
        cfg = self.config
        if cfg.match_type == "dual_softmax":
            return dual_softmax_confidence(feat0, feat1, cfg.dsmax_temperature, mask0, mask1), None
        conf, with_bin = sinkhorn_confidence(
            feat0, feat1, self.bin_score, cfg.skh_iters, mask0, mask1
        )
        return conf, with_bin

    @torch.no_grad()
    def forward(
        self,
        feat0: Tensor,
        feat1: Tensor,
        keep0: Tensor,
        keep1: Tensor,
        mask0: Tensor | None = None,
        mask1: Tensor | None = None,
    ) -> CoarseMatches:
        """Inference matches (no gradient): chunked for dual-softmax, dense for optimal transport.

        Args:
            feat0: ``(N, L, C)``; feat1: ``(N, S, C)`` coarse transformer outputs.
            keep0, keep1: border keep masks from :meth:`keep_masks`.
            mask0, mask1: optional ``(N, L)`` / ``(N, S)`` bool (True = valid).
        """
        cfg = self.config
        if cfg.match_type == "dual_softmax":
            return dual_softmax_matches(
                feat0,
                feat1,
                cfg.dsmax_temperature,
                cfg.thr,
                keep0,
                keep1,
                mask0,
                mask1,
                cfg.max_chunk_elements
                if feat0.device.type != "cuda"
                else cfg.cuda_max_chunk_elements,
                cfg.onednn_matmul,
            )
        conf, _ = sinkhorn_confidence(
            feat0, feat1, self.bin_score, cfg.skh_iters, mask0, mask1, cfg.skh_prefilter
        )
        return select_matches(conf, cfg.thr, keep0, keep1)
