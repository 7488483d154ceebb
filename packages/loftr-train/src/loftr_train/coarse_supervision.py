"""Coarse-level ground truth: which coarse cell of image 0 matches which cell of image 1.

This follows the original LoFTR ``spvs_coarse`` (spec §5.1):

1. The coarse grid of each image (integer ``(x, y)`` per cell, row-major, the token order) is
   scaled to ORIGINAL image pixels: ``grid * 8 * scale`` (``scale`` = original / resized size per
   axis). The point of a cell is its top-left corner, as in the model's coarse keypoints.
2. Cells in the padding (``mask == False``) are moved to pixel ``(0, 0)``.
3. Both grids are warped into the other image (by depth + intrinsics + relative pose, or by a
   homography), converted to the other image's coarse grid by dividing by ``8 * scale`` and
   rounding (half to even), and linearised ``x + y * w``. Points outside the grid go to index 0.
4. A pair ``(i, j)`` is kept iff ``j = idx1[i]`` and ``idx0[j] == i`` (mutual / cycle consistent);
   cell 0 is always discarded because it absorbs every invalid point.

Like the original, the depth warp by default does NOT reject points whose warped depth disagrees
with image 1's depth (the authors found that worse; spec §5.1.3, §8.8): zero-depth points land
on the epipole and are removed by the mutual check. ``depth_consistency=True`` applies the
original ``warp_kpts`` validity mask (non-zero depth, inside image 1, relative depth error < 0.2)
on both directions. Unlike the original, a pair is also dropped when either cell is padding, which
the original only achieved "by luck" of the (0, 0) trick.

Convention for the intrinsics: ``K0``/``K1`` in a batch are those of the RESIZED image (the
``loftr_data`` sample contract); depth maps stay at the original resolution. They are converted
to the original resolution with ``diag(scale_x, scale_y, 1) @ K`` before warping.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from loftr_train.errors import SupervisionError

__all__ = [
    "CoarseSupervision",
    "coarse_grid",
    "compute_coarse_supervision",
    "intrinsics_to_original",
    "warp_points_depth",
    "warp_points_homography",
]

logger = logging.getLogger(__name__)

#: Relative depth error under which a depth-warped point is considered consistent (original: 0.2).
DEPTH_CONSISTENCY_THR = 0.2


@dataclass(frozen=True)
class CoarseSupervision:
    """Coarse ground truth of a batch.

    Attributes:
        conf_matrix_gt: ``(N, L, S)`` bool, True at every ground-truth match.
        spv_b_ids: ``(K,)`` int64 batch index of each ground-truth match.
        spv_i_ids: ``(K,)`` int64 coarse index in image 0 (row-major over ``hw0_c``).
        spv_j_ids: ``(K,)`` int64 coarse index in image 1.
        spv_w_pt0_i: ``(N, L, 2)`` float32, image 0's coarse grid warped into image 1, in
            original pixels of image 1 (for the fine ground truth).
        spv_pt1_i: ``(N, S, 2)`` float32, image 1's coarse grid in its original pixels (padded
            cells at (0, 0)).
        num_matches: the true number of matches. When it is 0 the ids hold a single dummy
            ``(0, 0, 0)`` (as the original does) so that the training path can still pad.
        hw0_c: coarse grid size ``(h, w)`` of image 0.
        hw1_c: coarse grid size ``(h, w)`` of image 1.
    """

    conf_matrix_gt: Tensor
    spv_b_ids: Tensor
    spv_i_ids: Tensor
    spv_j_ids: Tensor
    spv_w_pt0_i: Tensor
    spv_pt1_i: Tensor
    num_matches: int
    hw0_c: tuple[int, int]
    hw1_c: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        """The original key names (``conf_matrix_gt``, ``spv_b_ids``...) as a plain dict."""
        return {
            "conf_matrix_gt": self.conf_matrix_gt,
            "spv_b_ids": self.spv_b_ids,
            "spv_i_ids": self.spv_i_ids,
            "spv_j_ids": self.spv_j_ids,
            "spv_w_pt0_i": self.spv_w_pt0_i,
            "spv_pt1_i": self.spv_pt1_i,
        }


def coarse_grid(h: int, w: int, *, device: torch.device | None = None) -> Tensor:
    """Integer cell coordinates of an ``h x w`` grid.

    Returns:
        ``(h * w, 2)`` float32 ``(x, y)``, row-major (index ``x + y * w``).
    """
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs, ys], dim=-1).reshape(h * w, 2)


def intrinsics_to_original(K: Tensor, scale: Tensor) -> Tensor:
    """Intrinsics of a resized image -> intrinsics of the original image.

    Args:
        K: ``(N, 3, 3)`` intrinsics for the resized image.
        scale: ``(N, 2)`` ``(orig_w / resized_w, orig_h / resized_h)``.

    Returns:
        ``(N, 3, 3)`` ``diag(scale_x, scale_y, 1) @ K``.
    """
    diag = torch.ones(K.shape[0], 3, dtype=K.dtype, device=K.device)
    diag[:, :2] = scale.to(K.dtype)
    return torch.diag_embed(diag) @ K


def _gather_depth(depth: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """``depth[b, y, x]`` for integer ``x``/``y`` ``(N, L)``; 0 where outside the map."""
    n, h, w = depth.shape
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    flat = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)).long()
    values = torch.gather(depth.reshape(n, h * w), 1, flat)
    return torch.where(inside, values, torch.zeros_like(values))


def warp_points_depth(
    pts0: Tensor, depth0: Tensor, depth1: Tensor, T_0to1: Tensor, K0: Tensor, K1: Tensor
) -> tuple[Tensor, Tensor]:
    """Warp pixels of image 0 into image 1 with depth and relative pose (original ``warp_kpts``).

    Depth is read at the nearest pixel (``round``, half to even). Points are unprojected with
    ``K0^-1 [x, y, 1] * depth``, moved with ``R X + t`` and projected with ``K1``, dividing by
    ``z + 1e-4``.

    Args:
        pts0: ``(N, L, 2)`` float ``(x, y)`` pixels of image 0 (the frame of ``depth0``/``K0``).
        depth0: ``(N, H0, W0)`` float depth of image 0 (0 = unknown), possibly zero-padded.
        depth1: ``(N, H1, W1)`` float depth of image 1.
        T_0to1: ``(N, 4, 4)`` camera-0 to camera-1 transform.
        K0: ``(N, 3, 3)`` intrinsics of image 0 (same pixel frame as ``pts0``).
        K1: ``(N, 3, 3)`` intrinsics of image 1.

    Returns:
        ``(valid, warped)``: ``valid`` ``(N, L)`` bool = non-zero depth, strictly inside
        ``(0, W1 - 1) x (0, H1 - 1)`` of ``depth1``'s (padded) size, and relative depth error
        ``|d1 - z| / d1 < 0.2`` with ``d1`` read at the truncated warped pixel (as the original);
        ``warped`` ``(N, L, 2)`` float pixels of image 1.
    """
    pts0 = pts0.to(torch.float32)
    pts_round = torch.round(pts0).long()
    d0 = _gather_depth(depth0.to(torch.float32), pts_round[..., 0], pts_round[..., 1])
    nonzero = d0 != 0
    homog = torch.cat([pts0, torch.ones_like(pts0[..., :1])], dim=-1) * d0[..., None]
    cam0 = torch.linalg.inv(K0.to(torch.float32)) @ homog.transpose(1, 2)  # (N, 3, L)
    T = T_0to1.to(torch.float32)
    cam1 = T[:, :3, :3] @ cam0 + T[:, :3, 3:4]
    z = cam1[:, 2, :]
    proj = (K1.to(torch.float32) @ cam1).transpose(1, 2)  # (N, L, 3)
    warped = proj[..., :2] / (proj[..., 2:3] + 1e-4)

    h1, w1 = depth1.shape[1:3]
    covisible = (
        (warped[..., 0] > 0)
        & (warped[..., 0] < w1 - 1)
        & (warped[..., 1] > 0)
        & (warped[..., 1] < h1 - 1)
    )
    trunc = torch.where(covisible[..., None], warped, torch.zeros_like(warped)).long()
    d1 = _gather_depth(depth1.to(torch.float32), trunc[..., 0], trunc[..., 1])
    with torch.no_grad():
        rel = ((d1 - z) / d1).abs()
    consistent = rel < DEPTH_CONSISTENCY_THR  # NaN/inf (d1 == 0) compare False
    return nonzero & covisible & consistent, warped


def warp_points_homography(pts: Tensor, H: Tensor) -> tuple[Tensor, Tensor]:
    """Warp pixels with a homography.

    Args:
        pts: ``(N, L, 2)`` float ``(x, y)`` pixels.
        H: ``(N, 3, 3)`` homography (source pixels -> destination pixels).

    Returns:
        ``(valid, warped)``: ``valid`` ``(N, L)`` bool, False where the point maps to or behind
        the line at infinity (homogeneous ``w <= 1e-8``); ``warped`` ``(N, L, 2)`` float32
        (undefined where not valid).
    """
    pts = pts.to(torch.float64)
    homog = torch.cat([pts, torch.ones_like(pts[..., :1])], dim=-1)
    out = homog @ H.to(torch.float64).transpose(1, 2)
    w = out[..., 2]
    valid = w > 1e-8
    safe_w = torch.where(valid, w, torch.ones_like(w))
    return valid, (out[..., :2] / safe_w[..., None]).to(torch.float32)


def _require(batch: Mapping[str, Any], keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in batch]
    if missing:
        raise SupervisionError(
            f"cannot compute {what}: the batch lacks {missing} (it has {sorted(batch)}); "
            "pass a collated loftr_data sample with either depth0/depth1/K0/K1/T_0to1/T_1to0 "
            "or H_0to1"
        )


def _coarse_size(image: Tensor, name: str, coarse_scale: int) -> tuple[int, int]:
    if image.dim() != 4:
        raise SupervisionError(
            f"{name} must be (N, 1, H, W), got shape {tuple(image.shape)}; collate the samples"
        )
    h, w = image.shape[-2:]
    if h % coarse_scale or w % coarse_scale:
        raise SupervisionError(
            f"{name} has size {h}x{w}, not a multiple of the coarse scale {coarse_scale}; "
            "resize or pad the images to multiples of 8"
        )
    return h // coarse_scale, w // coarse_scale


def _to_index(pts_c: Tensor, valid: Tensor, h: int, w: int) -> Tensor:
    """Round coarse coordinates ``(N, L, 2)`` and linearise; out of grid / invalid -> 0."""
    r = torch.round(pts_c)
    inside = valid & (r[..., 0] >= 0) & (r[..., 0] < w) & (r[..., 1] >= 0) & (r[..., 1] < h)
    r = torch.where(inside[..., None], r, torch.zeros_like(r)).long()
    return r[..., 0] + r[..., 1] * w


@torch.no_grad()
def compute_coarse_supervision(
    batch: Mapping[str, Any], *, coarse_scale: int = 8, depth_consistency: bool = False
) -> CoarseSupervision:
    """Coarse ground-truth matches of a collated batch (spec §5.1).

    Args:
        batch: collated ``loftr_data`` samples: ``image0`` ``(N, 1, H0, W0)``, ``image1``,
            optional ``mask0``/``mask1`` ``(N, H/8, W/8)`` bool and ``scale0``/``scale1``
            ``(N, 2)``; geometry either ``depth0``/``depth1`` ``(N, Hd, Wd)`` (original
            resolution, zero padded), ``K0``/``K1`` ``(N, 3, 3)`` (resized image),
            ``T_0to1``/``T_1to0`` ``(N, 4, 4)``, or ``H_0to1`` ``(N, 3, 3)`` (resized pixels).
            Depth wins when both are present.
        coarse_scale: pixels per coarse cell (the model's ``resolution[0]``, 8).
        depth_consistency: also apply the depth validity mask (off in the original).

    Returns:
        The :class:`CoarseSupervision`.

    Raises:
        SupervisionError: geometry keys missing or images not multiples of ``coarse_scale``.
    """
    _require(batch, ("image0", "image1"), "coarse supervision")
    image0, image1 = batch["image0"], batch["image1"]
    h0, w0 = _coarse_size(image0, "image0", coarse_scale)
    h1, w1 = _coarse_size(image1, "image1", coarse_scale)
    n, device = image0.shape[0], image0.device
    ones = torch.ones(n, 2, device=device)
    s0 = batch["scale0"].to(device, torch.float32) if "scale0" in batch else ones
    s1 = batch["scale1"].to(device, torch.float32) if "scale1" in batch else ones

    # Grids in resized pixels (r) and original pixels (i); padded cells -> (0, 0).
    grid0_r = coarse_grid(h0, w0, device=device)[None].repeat(n, 1, 1) * coarse_scale
    grid1_r = coarse_grid(h1, w1, device=device)[None].repeat(n, 1, 1) * coarse_scale
    valid0_flat = torch.ones(n, h0 * w0, dtype=torch.bool, device=device)
    valid1_flat = torch.ones(n, h1 * w1, dtype=torch.bool, device=device)
    if "mask0" in batch:
        valid0_flat = batch["mask0"].to(device).reshape(n, -1).bool()
        grid0_r = grid0_r * valid0_flat[..., None]
    if "mask1" in batch:
        valid1_flat = batch["mask1"].to(device).reshape(n, -1).bool()
        grid1_r = grid1_r * valid1_flat[..., None]
    grid0_i = grid0_r * s0[:, None]
    grid1_i = grid1_r * s1[:, None]

    if "depth0" in batch or "H_0to1" not in batch:
        _require(batch, ("depth0", "depth1", "K0", "K1", "T_0to1", "T_1to0"), "depth supervision")
        K0 = intrinsics_to_original(batch["K0"].to(device, torch.float32), s0)
        K1 = intrinsics_to_original(batch["K1"].to(device, torch.float32), s1)
        d0, d1 = batch["depth0"].to(device), batch["depth1"].to(device)
        ok0, w_pt0_i = warp_points_depth(grid0_i, d0, d1, batch["T_0to1"].to(device), K0, K1)
        ok1, w_pt1_i = warp_points_depth(grid1_i, d1, d0, batch["T_1to0"].to(device), K1, K0)
        if not depth_consistency:
            ok0 = torch.ones_like(ok0)
            ok1 = torch.ones_like(ok1)
    else:
        H = batch["H_0to1"].to(device, torch.float64)
        ok0, w_pt0_r = warp_points_homography(grid0_r, H)
        ok1, w_pt1_r = warp_points_homography(grid1_r, torch.linalg.inv(H))
        w_pt0_i = w_pt0_r * s1[:, None]
        w_pt1_i = w_pt1_r * s0[:, None]

    idx1 = _to_index(w_pt0_i / (coarse_scale * s1[:, None]), ok0, h1, w1)  # (N, L)
    idx0 = _to_index(w_pt1_i / (coarse_scale * s0[:, None]), ok1, h0, w0)  # (N, S)
    loop_back = torch.gather(idx0, 1, idx1)
    correct = loop_back == torch.arange(h0 * w0, device=device)[None]
    correct[:, 0] = False
    correct &= valid0_flat & torch.gather(valid1_flat, 1, idx1)

    b_ids, i_ids = torch.nonzero(correct, as_tuple=True)
    j_ids = idx1[b_ids, i_ids]
    conf_gt = torch.zeros(n, h0 * w0, h1 * w1, dtype=torch.bool, device=device)
    conf_gt[b_ids, i_ids, j_ids] = True
    num = int(b_ids.numel())
    if num == 0:
        logger.warning("no coarse ground-truth match in the batch %s", batch.get("pair_names"))
        b_ids, i_ids, j_ids = (torch.zeros(1, dtype=torch.long, device=device) for _ in range(3))
    return CoarseSupervision(
        conf_matrix_gt=conf_gt,
        spv_b_ids=b_ids,
        spv_i_ids=i_ids,
        spv_j_ids=j_ids,
        spv_w_pt0_i=w_pt0_i.to(torch.float32),
        spv_pt1_i=grid1_i.to(torch.float32),
        num_matches=num,
        hw0_c=(h0, w0),
        hw1_c=(h1, w1),
    )
