"""Fine-level ground truth: the sub-pixel target of each coarse match inside its fine window.

Original ``spvs_fine`` (spec §5.2): for every coarse pair ``(b, i, j)`` selected by the model's
training path (predictions and ground-truth pads alike)::

    expec_f_gt = (spv_w_pt0_i[b, i] - spv_pt1_i[b, j]) / (fine_scale * scale1[b]) / (W // 2)

i.e. where image 0's cell ``i`` lands in image 1, measured from the centre of image 1's fine
window around cell ``j``, in fine-level pixels (``fine_scale`` = 2 image pixels), divided by the
window radius (``W // 2`` = 2 for ``W = 5``). The model's ``expec_f[:, :2]`` lives in the same
normalised units (``linspace(-1, 1, W)``), so a target with ``|.|_inf >= 1`` lies outside the
window and cannot be predicted: :func:`fine_correct_mask` marks those, and the fine loss drops
them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from loftr_train.errors import SupervisionError

__all__ = ["compute_fine_supervision", "fine_correct_mask"]


@torch.no_grad()
def compute_fine_supervision(
    spv_w_pt0_i: Tensor,
    spv_pt1_i: Tensor,
    b_ids: Tensor,
    i_ids: Tensor,
    j_ids: Tensor,
    *,
    scale1: Tensor | None = None,
    fine_scale: int = 2,
    window_size: int = 5,
) -> Tensor:
    """Normalised fine targets of the selected coarse matches.

    Args:
        spv_w_pt0_i: ``(N, L, 2)`` image 0's grid warped into image 1 (original pixels), from
            :class:`~loftr_train.coarse_supervision.CoarseSupervision`.
        spv_pt1_i: ``(N, S, 2)`` image 1's grid in original pixels.
        b_ids: ``(M,)`` int64 batch index of each selected coarse match (the model's ``b_ids``).
        i_ids: ``(M,)`` int64 cell in image 0.
        j_ids: ``(M,)`` int64 cell in image 1.
        scale1: ``(N, 2)`` original / resized size of image 1, or None (= 1).
        fine_scale: image pixels per fine-level pixel (the model's ``resolution[1]``, 2).
        window_size: fine window size ``W`` (5); the radius is ``W // 2``.

    Returns:
        ``(M, 2)`` float32 ``expec_f_gt``; ``|.|_inf < 1`` means inside the window.

    Raises:
        SupervisionError: when ``window_size`` < 3 or the id tensors differ in length.
    """
    if window_size < 3:
        raise SupervisionError(
            f"fine window_size must be >= 3 (radius >= 1), got {window_size}; LoFTR uses 5"
        )
    if not b_ids.shape == i_ids.shape == j_ids.shape:
        raise SupervisionError(
            "b_ids, i_ids and j_ids must have one shape, got "
            f"{tuple(b_ids.shape)}, {tuple(i_ids.shape)}, {tuple(j_ids.shape)}"
        )
    radius = window_size // 2
    offset = spv_w_pt0_i[b_ids, i_ids] - spv_pt1_i[b_ids, j_ids]
    scale: Tensor | float = float(fine_scale)
    if scale1 is not None:
        scale = fine_scale * scale1.to(offset)[b_ids]
    return (offset / scale / radius).to(torch.float32)


def fine_correct_mask(expec_f_gt: Tensor, thr: float = 1.0) -> Tensor:
    """Which fine targets lie inside the window: ``max(|x|, |y|) < thr``.

    Args:
        expec_f_gt: ``(M, 2)`` normalised targets.
        thr: the original ``FINE_CORRECT_THR`` (1.0 = the window border).

    Returns:
        ``(M,)`` bool. Non-finite targets are not correct.
    """
    return torch.linalg.vector_norm(expec_f_gt, ord=float("inf"), dim=-1) < thr
