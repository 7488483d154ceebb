"""Coarse and fine ground truth: hand-made homographies, a synthetic depth plane, and the real
MegaDepth pair of ``../shared/data/megadepth_sample`` loaded through ``loftr_data``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from loftr_data import MegaDepthDataset, SyntheticHomographyDataset, collate
from loftr_train.coarse_supervision import (
    coarse_grid,
    compute_coarse_supervision,
    warp_points_depth,
)
from loftr_train.errors import SupervisionError
from loftr_train.fine_supervision import compute_fine_supervision, fine_correct_mask

# Pinned counts of coarse ground-truth matches on the real pair at 640 px.
REAL_PAIR_MATCHES = 406
REAL_PAIR_MATCHES_DEPTH_CHECKED = 402
# ... and on the first two samples of SyntheticHomographyDataset(size=(128, 128), seed=0).
SYNTHETIC_MATCHES = 427


def _hbatch(H: np.ndarray, h: int = 48, w: int = 64, **extra: torch.Tensor) -> dict[str, Any]:
    batch: dict[str, Any] = {
        "image0": torch.zeros(1, 1, h, w),
        "image1": torch.zeros(1, 1, h, w),
        "H_0to1": torch.tensor(H, dtype=torch.float32)[None],
    }
    batch.update(extra)
    return batch


def _translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0, tx], [0, 1.0, ty], [0, 0, 1.0]])


def test_coarse_grid_is_row_major_xy() -> None:
    g = coarse_grid(2, 3)
    assert g.tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]]


def test_identity_homography_matches_every_cell_but_zero() -> None:
    spv = compute_coarse_supervision(_hbatch(np.eye(3)))  # 6 x 8 coarse cells
    assert spv.hw0_c == (6, 8) and spv.num_matches == 47
    assert torch.equal(spv.spv_i_ids, torch.arange(1, 48))
    assert torch.equal(spv.spv_j_ids, spv.spv_i_ids)
    expected = torch.eye(48, dtype=torch.bool)
    expected[0, 0] = False
    assert torch.equal(spv.conf_matrix_gt[0], expected)


def test_translation_by_whole_cells() -> None:
    spv = compute_coarse_supervision(_hbatch(_translation(8, 16)))
    # cell (x, y) -> (x + 1, y + 2) while inside the 8 x 6 grid; cell 0 discarded.
    assert spv.num_matches == 7 * 4 - 1
    xi, yi = spv.spv_i_ids % 8, spv.spv_i_ids // 8
    assert torch.equal(spv.spv_j_ids, (xi + 1) + (yi + 2) * 8)
    assert torch.allclose(spv.spv_w_pt0_i[0], coarse_grid(6, 8) * 8 + torch.tensor([8.0, 16.0]))


def test_half_cell_translation_rounds_half_to_even() -> None:
    # +4 px: x -> x + 0.5 rounds to the even neighbour; only even columns survive the cycle check.
    spv = compute_coarse_supervision(_hbatch(_translation(4, 0)))
    assert spv.num_matches == 4 * 6 - 1
    assert torch.all(spv.spv_i_ids % 2 == 0)
    assert torch.equal(spv.spv_j_ids, spv.spv_i_ids)


def test_scale_puts_points_in_original_pixels() -> None:
    s = torch.tensor([[2.0, 3.0]])
    spv = compute_coarse_supervision(_hbatch(_translation(8, 0), scale0=s, scale1=s))
    grid = coarse_grid(6, 8)
    assert torch.allclose(spv.spv_pt1_i[0], grid * 8 * s)
    assert torch.allclose(spv.spv_w_pt0_i[0], (grid * 8 + torch.tensor([8.0, 0.0])) * s)
    assert spv.num_matches == 7 * 6 - 1


def test_padding_masks_are_respected() -> None:
    mask0 = torch.ones(1, 6, 8, dtype=torch.bool)
    mask0[:, 5:] = False  # last row padded
    mask1 = torch.ones(1, 6, 8, dtype=torch.bool)
    mask1[:, :, 6:] = False  # last two columns padded
    spv = compute_coarse_supervision(_hbatch(np.eye(3), mask0=mask0, mask1=mask1))
    both = (mask0 & mask1).reshape(-1)
    assert spv.num_matches == int(both.sum()) - 1
    assert bool(both[spv.spv_i_ids].all()) and bool(both[spv.spv_j_ids].all())
    assert torch.all(spv.spv_pt1_i[0][~mask1.reshape(-1)] == 0)  # padded cells at (0, 0)


def test_no_overlap_gives_dummy_ids_and_empty_matrix() -> None:
    spv = compute_coarse_supervision(_hbatch(_translation(10_000, 0)))
    assert spv.num_matches == 0 and not spv.conf_matrix_gt.any()
    assert spv.spv_b_ids.tolist() == spv.spv_i_ids.tolist() == spv.spv_j_ids.tolist() == [0]


def test_missing_geometry_and_bad_sizes_are_clear_errors() -> None:
    with pytest.raises(SupervisionError, match="H_0to1"):
        compute_coarse_supervision(
            {"image0": torch.zeros(1, 1, 8, 8), "image1": torch.zeros(1, 1, 8, 8)}
        )
    with pytest.raises(SupervisionError, match="multiple"):
        compute_coarse_supervision(_hbatch(np.eye(3), h=20, w=64))


def test_warp_points_depth_on_a_plane() -> None:
    K = torch.tensor([[[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]]])
    T = torch.eye(4)[None]
    T[0, 0, 3] = 0.5  # camera 1 sees points shifted by +0.5 m in x
    depth0 = torch.full((1, 48, 64), 5.0)
    depth0[0, 20, 30] = 0.0  # no depth at (30, 20)
    pts = torch.tensor([[[10.0, 10.0], [50.0, 40.0], [58.0, 10.0], [30.0, 20.0]]])
    valid, warped = warp_points_depth(pts, depth0, torch.full((1, 48, 64), 5.0), T, K, K)
    # x' = x + fx * 0.5 / 5 = x + 10 (up to the +1e-4 in the projection denominator)
    assert torch.allclose(warped[0, :3], pts[0, :3] + torch.tensor([10.0, 0.0]), atol=1e-3)
    # (68, 10) leaves the 64-px-wide depth map; zero depth projects to the epipole (invalid).
    assert valid.tolist() == [[True, True, False, False]]
    # Image 1 twice as far: relative depth error |10 - 5| / 10 = 0.5 >= 0.2 -> inconsistent.
    valid, _ = warp_points_depth(pts, depth0, torch.full((1, 48, 64), 10.0), T, K, K)
    assert not valid.any()
    # Depth 5.5 in image 1: error 0.5 / 5.5 < 0.2 -> consistent.
    valid, _ = warp_points_depth(pts, depth0, torch.full((1, 48, 64), 5.5), T, K, K)
    assert valid.tolist() == [[True, True, False, False]]


def test_fine_supervision_hand_computed() -> None:
    w_pt0 = torch.tensor([[[0.0, 0.0], [20.0, 12.0], [17.0, 7.0]]])
    pt1 = torch.tensor([[[0.0, 0.0], [16.0, 8.0]]])
    b, i, j = torch.tensor([0, 0]), torch.tensor([1, 2]), torch.tensor([1, 1])
    gt = compute_fine_supervision(w_pt0, pt1, b, i, j, scale1=torch.tensor([[2.0, 1.0]]))
    # (4, 4) / (2 * (2, 1)) / 2 = (0.5, 1.0);  (1, -1) / (4, 2) / 2 = (0.125, -0.25)
    assert gt.tolist() == [[0.5, 1.0], [0.125, -0.25]]
    assert fine_correct_mask(gt).tolist() == [False, True]  # |.|_inf == 1 is outside
    gt = compute_fine_supervision(w_pt0, pt1, b, i, j)  # no scale: fine pixels are 2 px
    assert gt.tolist() == [[1.0, 1.0], [0.25, -0.25]]
    with pytest.raises(SupervisionError, match="window_size"):
        compute_fine_supervision(w_pt0, pt1, b, i, j, window_size=1)


@pytest.fixture(scope="module")
def real_batch(shared_data: Path) -> dict[str, Any]:
    root = shared_data / "megadepth_sample"
    ds = MegaDepthDataset(root, root / "sample.npz", img_resize=640, pair_ids=[0])
    return collate([ds[0]])


def _independent_warp(
    root: Path, pts: np.ndarray, src: int, dst: int
) -> tuple[np.ndarray, np.ndarray]:
    """float64 numpy warp of original pixels from image ``src`` to ``dst`` of pair 0, straight
    from sample.npz (original K, world-to-camera poses) and the .h5 depth."""
    info = np.load(root / "sample.npz", allow_pickle=True)
    idx = [int(v) for v in info["pair_infos"][0][0]]
    a, b = idx[src], idx[dst]
    depth = h5py.File(root / str(info["depth_paths"][a]), "r")["depth"][()].astype(np.float64)
    T = info["poses"][b] @ np.linalg.inv(info["poses"][a])
    r = np.round(pts).astype(int)
    d = depth[r[:, 1], r[:, 0]]
    X = np.linalg.inv(info["intrinsics"][a]) @ np.c_[pts, np.ones(len(pts))].T * d
    Y = T[:3, :3] @ X + T[:3, 3:4]
    y = info["intrinsics"][b] @ Y
    return (y[:2] / y[2]).T, Y[2]


def test_real_pair_ground_truth_is_geometrically_right(
    real_batch: dict[str, Any], shared_data: Path
) -> None:
    spv = compute_coarse_supervision(real_batch)
    assert spv.num_matches == REAL_PAIR_MATCHES
    assert spv.hw0_c == spv.hw1_c == (80, 80)
    assert int(spv.conf_matrix_gt.sum()) == REAL_PAIR_MATCHES
    s0 = real_batch["scale0"][0].double().numpy()
    s1 = real_batch["scale1"][0].double().numpy()
    grid = coarse_grid(80, 80).double().numpy() * 8
    i, j = spv.spv_i_ids.numpy(), spv.spv_j_ids.numpy()
    root = shared_data / "megadepth_sample"
    # Cell i of image 0, reprojected into image 1, lies within half a cell of cell j ...
    w01, _ = _independent_warp(root, grid[i] * s0, 0, 1)
    assert np.all(np.abs(w01 / s1 - grid[j]) <= 4.0 + 1e-3)
    # ... and cell j of image 1 reprojected into image 0 lies within half a cell of cell i.
    w10, _ = _independent_warp(root, grid[j] * s1, 1, 0)
    assert np.all(np.abs(w10 / s0 - grid[i]) <= 4.0 + 1e-3)
    # Padded cells never match.
    assert bool(real_batch["mask0"].reshape(-1)[spv.spv_i_ids].all())
    assert bool(real_batch["mask1"].reshape(-1)[spv.spv_j_ids].all())
    # The fine targets of the ground-truth matches sit inside their windows.
    gt = compute_fine_supervision(
        spv.spv_w_pt0_i,
        spv.spv_pt1_i,
        spv.spv_b_ids,
        spv.spv_i_ids,
        spv.spv_j_ids,
        scale1=real_batch["scale1"],
    )
    assert float(gt.abs().max()) <= 1.0 + 1e-4
    assert float(fine_correct_mask(gt).float().mean()) > 0.99


def test_real_pair_depth_consistency_and_symmetry(real_batch: dict[str, Any]) -> None:
    spv = compute_coarse_supervision(real_batch)
    checked = compute_coarse_supervision(real_batch, depth_consistency=True)
    assert checked.num_matches == REAL_PAIR_MATCHES_DEPTH_CHECKED
    assert bool((spv.conf_matrix_gt | ~checked.conf_matrix_gt).all())  # a subset
    swapped = {
        k: real_batch[k.translate(str.maketrans("01", "10"))]
        for k in real_batch
        if k[-1] in "01" or k in ("T_0to1", "T_1to0")
    }
    swapped["T_0to1"], swapped["T_1to0"] = real_batch["T_1to0"], real_batch["T_0to1"]
    back = compute_coarse_supervision(swapped)
    a, b = spv.conf_matrix_gt[0, 1:, 1:], back.conf_matrix_gt[0, 1:, 1:].T
    assert torch.equal(a, b)


def test_synthetic_homography_batch_is_geometrically_right() -> None:
    ds = SyntheticHomographyDataset(length=2, size=(128, 128), seed=0)
    batch = collate([ds[0], ds[1]])
    spv = compute_coarse_supervision(batch)
    assert spv.num_matches == SYNTHETIC_MATCHES
    grid = coarse_grid(16, 16).double().numpy() * 8
    for b in range(2):
        sel = spv.spv_b_ids == b
        i, j = spv.spv_i_ids[sel].numpy(), spv.spv_j_ids[sel].numpy()
        H = batch["H_0to1"][b].double().numpy()
        p = H @ np.c_[grid[i], np.ones(len(i))].T
        w = (p[:2] / p[2]).T
        assert np.all(np.abs(w - grid[j]) <= 4.0 + 1e-3)


@pytest.mark.gpu
def test_real_pair_ground_truth_on_cuda_matches_cpu(real_batch: dict[str, Any]) -> None:
    cpu = compute_coarse_supervision(real_batch)
    cuda_batch = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in real_batch.items()}
    gpu = compute_coarse_supervision(cuda_batch)
    assert gpu.conf_matrix_gt.device.type == "cuda"
    # Float reductions may differ in the last bit, which can flip a rounding at a cell border.
    both = int((gpu.conf_matrix_gt.cpu() & cpu.conf_matrix_gt).sum())
    assert abs(gpu.num_matches - cpu.num_matches) <= 2 and both >= cpu.num_matches - 2
    assert torch.allclose(gpu.spv_w_pt0_i.cpu(), cpu.spv_w_pt0_i, atol=1e-2)


def _literal_original(
    batch: dict[str, Any], K0: torch.Tensor, K1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """spvs_coarse written out step by step from spec §5.1, in the ORIGINAL convention
    (unscaled intrinsics, grid points multiplied by 8 * scale), float32 like the original."""
    h, w = 80, 80
    grid = coarse_grid(h, w)[None]
    p0 = grid * 8 * batch["scale0"][:, None]
    p1 = grid * 8 * batch["scale1"][:, None]
    p0[~batch["mask0"].reshape(1, -1)] = 0
    p1[~batch["mask1"].reshape(1, -1)] = 0

    def warp(
        p: torch.Tensor, depth: torch.Tensor, T: torch.Tensor, Ka: torch.Tensor, Kb: torch.Tensor
    ) -> torch.Tensor:
        r = p.round().long()
        z = depth[0, r[0, :, 1], r[0, :, 0]][None]
        X = Ka.inverse() @ (
            torch.cat([p, torch.ones_like(p[..., :1])], -1) * z[..., None]
        ).transpose(2, 1)
        q = (Kb @ (T[:, :3, :3] @ X + T[:, :3, [3]])).transpose(2, 1)
        return q[..., :2] / (q[..., [2]] + 1e-4)

    def index(pt: torch.Tensor) -> torch.Tensor:
        r = pt.round().long()
        i = r[..., 0] + r[..., 1] * w
        i[(r[..., 0] < 0) | (r[..., 0] >= w) | (r[..., 1] < 0) | (r[..., 1] >= h)] = 0
        return i

    n1 = index(warp(p0, batch["depth0"], batch["T_0to1"], K0, K1) / (8 * batch["scale1"][:, None]))
    n0 = index(warp(p1, batch["depth1"], batch["T_1to0"], K1, K0) / (8 * batch["scale0"][:, None]))
    ok = n0[0][n1[0]] == torch.arange(h * w)
    ok[0] = False
    return ok.nonzero()[:, 0], n1[0][ok]


def test_real_pair_equals_the_original_convention(
    real_batch: dict[str, Any], shared_data: Path
) -> None:
    # Our path scales the dataset's resized-image K back; the original used the file's K as is.
    info = np.load(shared_data / "megadepth_sample" / "sample.npz", allow_pickle=True)
    a, b = (int(v) for v in info["pair_infos"][0][0])
    K0 = torch.from_numpy(info["intrinsics"][a].astype(np.float32))[None]
    K1 = torch.from_numpy(info["intrinsics"][b].astype(np.float32))[None]
    i, j = _literal_original(real_batch, K0, K1)
    spv = compute_coarse_supervision(real_batch)
    assert torch.equal(spv.spv_i_ids, i) and torch.equal(spv.spv_j_ids, j)
