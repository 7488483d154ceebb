"""Fine stage: window gathering, coarse-feature merge, heatmap expectation and its std."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from loftr_core.model.fine_matching import fine_expectation, refine_keypoints
from loftr_core.model.fine_preprocess import FinePreprocess, gather_windows


def _unfold_reference(fine: torch.Tensor, ids: torch.Tensor, b_ids: torch.Tensor) -> torch.Tensor:
    """The original: unfold the whole map (k=5, stride 4, pad 2), reorder, index."""
    n, c = fine.shape[:2]
    unfolded = F.unfold(fine, kernel_size=5, stride=4, padding=2)  # (N, C*25, Hc*Wc)
    unfolded = unfolded.view(n, c, 25, -1).permute(0, 3, 2, 1)  # (N, L, 25, C)
    return unfolded[b_ids, ids]


def test_gather_windows_equals_unfold() -> None:
    torch.manual_seed(0)
    fine = torch.randn(2, 16, 24, 32)  # Hc, Wc = 6, 8
    b_ids = torch.tensor([0, 0, 1, 1, 1, 0])
    ids = torch.tensor([0, 7, 47, 9, 40, 20])  # corners and interior cells
    got = gather_windows(fine, b_ids, ids, 5, 4)
    assert torch.equal(got, _unfold_reference(fine, ids, b_ids))
    # the window of cell (r, c) is centred on fine pixel (4r, 4c)
    r, c = divmod(20, 8)
    assert torch.equal(got[5, 12], fine[0, :, 4 * r, 4 * c])


def test_fine_preprocess_equals_reference() -> None:
    kornia_fp = pytest.importorskip("kornia.feature.loftr.loftr_module.fine_preprocess")
    torch.manual_seed(0)
    cfg = {"fine_concat_coarse_feat": True, "fine_window_size": 5}
    cfg |= {"coarse": {"d_model": 256}, "fine": {"d_model": 128}}
    ref = kornia_fp.FinePreprocess(cfg)
    ours = FinePreprocess(256, 128, 5, True)
    ours.load_state_dict(ref.state_dict(), strict=True)
    fine0, fine1 = torch.randn(2, 128, 24, 32), torch.randn(2, 128, 16, 20)
    c0, c1 = torch.randn(2, 48, 256), torch.randn(2, 20, 256)
    b, i, j = torch.tensor([0, 1, 1]), torch.tensor([3, 47, 10]), torch.tensor([0, 19, 7])
    data = {"b_ids": b, "i_ids": i, "j_ids": j, "stride_c": 8, "stride_f": 2}  # kornia 0.9
    data |= {"hw0_c": (6, 8), "hw0_f": (24, 32), "hw1_c": (4, 5), "hw1_f": (16, 20)}  # kornia 0.8
    with torch.no_grad():
        r0, r1 = ref(fine0, fine1, c0, c1, data)
        o0, o1 = ours(fine0, fine1, c0, c1, b, i, j)
    assert torch.equal(o0, r0) and torch.equal(o1, r1)
    empty0, empty1 = ours(fine0, fine1, c0, c1, b[:0], i[:0], j[:0])
    assert empty0.shape == empty1.shape == (0, 25, 128)


def _features_for_heatmap(logits: torch.Tensor, c: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows whose heatmap logits (centre0 · f1[r] / sqrt(C)) equal ``logits`` (M, 25)."""
    m = logits.shape[0]
    f0 = torch.zeros(m, 25, c, dtype=torch.float64)
    f0[:, 12, 0] = 1.0
    f1 = torch.zeros(m, 25, c, dtype=torch.float64)
    f1[:, :, 0] = logits * math.sqrt(c)
    return f0, f1


def test_expectation_known_answers() -> None:
    logits = torch.zeros(3, 25, dtype=torch.float64)  # row 0: uniform
    logits[1, 3 * 5 + 4] = 60.0  # row 1: all mass on (row 3, col 4) -> (x, y) = (1.0, 0.5)
    logits[2, [0, 24]] = 60.0  # row 2: half on (-1,-1), half on (1,1)
    expec = fine_expectation(*_features_for_heatmap(logits))
    # uniform: E = 0, var per axis = mean of {1, .25, 0, .25, 1} = 0.5, std = 2 * sqrt(0.5)
    torch.testing.assert_close(expec[0], torch.tensor([0.0, 0.0, 2 * math.sqrt(0.5)]).double())
    # one-hot: std clamps at sqrt(1e-10) per axis
    torch.testing.assert_close(expec[1], torch.tensor([1.0, 0.5, 2e-5]).double(), atol=1e-9, rtol=0)
    # two points: E = 0, var = 1 per axis
    torch.testing.assert_close(expec[2], torch.tensor([0.0, 0.0, 2.0]).double(), atol=1e-9, rtol=0)
    assert fine_expectation(torch.zeros(0, 25, 8), torch.zeros(0, 25, 8)).shape == (0, 3)


def test_expectation_equals_reference_and_has_finite_gradient() -> None:
    kornia_fm = pytest.importorskip("kornia.feature.loftr.utils.fine_matching")
    torch.manual_seed(0)
    f0, f1 = torch.randn(30, 25, 128), torch.randn(30, 25, 128)
    f0[0, 12] = 0
    f0[0, 12, 0] = 1e3  # saturated heatmap (var below the clamp)
    f1[0, :, 0] = -1.0
    f1[0, 7, 0] = 1.0
    data = {"mkpts0_c": torch.zeros(30, 2), "mkpts1_c": torch.zeros(30, 2), "mconf": torch.ones(30)}
    data |= {"b_ids": torch.zeros(30, dtype=torch.long), "stride_f": 2}  # kornia 0.9
    data |= {"hw0_i": (64, 64), "hw0_f": (32, 32)}  # kornia 0.8 (Python 3.10): the same stride 2
    kornia_fm.FineMatching()(f0, f1, data)
    f0.requires_grad_(True)
    expec = fine_expectation(f0, f1)
    torch.testing.assert_close(expec, data["expec_f"], atol=1e-6, rtol=0)
    expec.sum().backward()
    assert f0.grad is not None and torch.isfinite(f0.grad).all()
    kpts = refine_keypoints(data["mkpts1_c"], expec.detach(), 5, 2.0)
    torch.testing.assert_close(kpts, data["mkpts1_f"], atol=1e-5, rtol=0)
    assert kpts.abs().max() <= 4.0  # offsets within +-(W//2) * 2 px
