"""Fine matching: sub-pixel refinement of image-1 points by a heatmap expectation (spec §1.8).

For every match the centre feature of image 0's window is correlated with the ``W x W`` window of
image 1; the softmax of the correlation (temperature ``sqrt(C)``) is a heatmap whose expectation
over the normalised grid ``linspace(-1, 1, W)`` is the offset, and whose spread (sum of the per-axis
standard deviations) is the uncertainty used by the fine loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["fine_expectation", "refine_keypoints"]


def fine_expectation(feat0: Tensor, feat1: Tensor) -> Tensor:
    """Expected normalised offset and its std per match.

    Args:
        feat0, feat1: ``(M, W*W, C)`` window features of image 0 and image 1.

    Returns:
        ``expec_f`` ``(M, 3)`` = ``(x, y, std)``, x/y in ``[-1, 1]`` window units; float32 (or
        float64) whatever the input dtype. ``M = 0`` gives ``(0, 3)``.
    """
    m, ww, c = feat1.shape
    dtype = torch.promote_types(feat0.dtype, torch.float32)
    if m == 0:
        return feat0.new_empty(0, 3, dtype=dtype)
    window = round(ww**0.5)
    centre = feat0[:, ww // 2, :]
    sim = torch.einsum("mc,mrc->mr", centre, feat1).to(dtype)
    heatmap = F.softmax(sim * (1.0 / c**0.5), dim=1)  # (M, WW)
    axis = torch.linspace(-1.0, 1.0, window, device=feat0.device, dtype=dtype)
    gx = axis.repeat(window)  # x varies along columns (row-major window)
    gy = axis.repeat_interleave(window)
    grid = torch.stack([gx, gy], dim=1)  # (WW, 2)
    coords = heatmap @ grid  # (M, 2)
    var = heatmap @ (grid * grid) - coords * coords
    # std = sqrt(clamp(var, 1e-10)), with a zero gradient at the floor instead of sqrt'(0) = inf
    floor = 1e-10
    above = var > floor
    std = torch.where(above, torch.where(above, var, 1.0).sqrt(), floor**0.5).sum(dim=1)
    return torch.cat([coords, std[:, None]], dim=1)


def refine_keypoints(
    kpts1_c: Tensor, expec_f: Tensor, window: int, scale1: Tensor | float
) -> Tensor:
    """``mkpts1_f = mkpts1_c + offset * (W // 2) * scale1`` (image 0 is never refined).

    Args:
        kpts1_c: ``(M, 2)`` coarse keypoints of image 1 (pixels).
        expec_f: ``(M', 3)`` with ``M' >= M`` (training GT pads follow the M predictions).
        window: W.
        scale1: fine stride in pixels (2.0), or ``(M, 2)`` per-match per-axis stride.
    """
    m = kpts1_c.shape[0]
    if expec_f.shape[0] == 0:
        return kpts1_c
    return kpts1_c + (expec_f[:m, :2] * (window // 2) * scale1).to(kpts1_c.dtype)
