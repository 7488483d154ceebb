"""The inference contract (new dict, input untouched, clear errors) and the training path."""

from __future__ import annotations

import pytest
import torch

from loftr_core.errors import InputError
from loftr_core.model import LoFTR
from loftr_core.model.coarse_matching import select_matches
from loftr_core.model.config import LoFTRConfig


@pytest.fixture(scope="module")
def model() -> LoFTR:
    torch.manual_seed(0)
    return LoFTR(LoFTRConfig.outdoor_ds().replace(match_coarse={"thr": 0.0})).eval()


def _pair(n: int = 1, h: int = 64, w: int = 96, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, h, w + 16, generator=g)
    return {"image0": base[..., :w].contiguous(), "image1": base[..., 16:].contiguous()}


def test_inference_returns_new_dict_and_never_mutates_input(model: LoFTR) -> None:
    data = _pair(2)
    data["mask0"] = torch.ones(2, 8, 12, dtype=torch.bool)
    data["mask0"][1, :, 10:] = False
    data["mask1"] = torch.ones(2, 8, 12, dtype=torch.bool)
    before = {k: (v, v.clone(), v._version) for k, v in data.items()}
    keys = list(data)
    with torch.no_grad():
        out = model(data)
    assert out is not data and list(data) == keys
    for k, (obj, copy, version) in before.items():
        assert data[k] is obj and obj._version == version and torch.equal(obj, copy), k
    assert {"keypoints0", "keypoints1", "confidence", "batch_indexes"} <= set(out)
    m = out["keypoints0"].shape[0]
    assert m > 0
    assert out["keypoints1"].shape == (m, 2) and out["batch_indexes"].dtype == torch.int64
    assert out["fine_std"].shape == (m,) and (out["fine_std"] > 0).all()
    # refinement moves image-1 points by at most (W // 2) * 2 = 4 px; image 0 stays on the lattice
    assert (out["keypoints1"] - out["keypoints1_c"]).abs().max() <= 4.0
    assert torch.equal(out["keypoints0"], out["keypoints0_c"])
    assert torch.equal(out["keypoints0"] % 8, torch.zeros_like(out["keypoints0"]))
    # padded cells of batch element 1 (columns >= 10) never match
    sel = out["batch_indexes"] == 1
    assert (out["keypoints0"][sel, 0] < 80).all()


def test_scales_give_original_pixels(model: LoFTR) -> None:
    data = _pair()
    with torch.no_grad():
        plain = model(data)
        scaled = model({**data, "scale0": torch.tensor([[2.0, 3.0]]), "scale1": torch.ones(1, 2)})
    torch.testing.assert_close(scaled["keypoints0"], plain["keypoints0"] * torch.tensor([2.0, 3.0]))
    torch.testing.assert_close(scaled["keypoints1"], plain["keypoints1"])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"image1": None}, "missing input 'image1'"),
        ({"image0": torch.zeros(1, 1, 64, 96, dtype=torch.uint8)}, "floating-point"),
        ({"image0": torch.zeros(1, 3, 64, 96)}, r"\(N, 1, H, W\)"),
        ({"image0": torch.zeros(1, 1, 60, 96)}, "multiples of 8.*pad.*resize"),
        ({"image1": torch.zeros(2, 1, 64, 96)}, "batch sizes differ"),
        ({"mask0": torch.ones(1, 8, 12, dtype=torch.uint8)}, "bool"),
        ({"mask0": torch.ones(1, 64, 96, dtype=torch.bool)}, r"coarse shape .*\(1, 8, 12\)"),
        ({"scale0": torch.ones(2)}, r"\(N, 2\)"),
    ],
)
def test_input_errors(model: LoFTR, change: dict[str, object], match: str) -> None:
    data: dict[str, object] = dict(_pair())
    for k, v in change.items():
        if v is None:
            del data[k]
        else:
            data[k] = v
    with pytest.raises(InputError, match=match) as info:
        model(data)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def _gt(n: int, length: int, count: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(n, (count,), generator=g)
    i = torch.randint(length, (count,), generator=g)
    return b, i, (i + 2) % length


def test_forward_train_budget_and_ordering() -> None:
    torch.manual_seed(0)
    cfg = LoFTRConfig.outdoor_ds().replace(
        match_coarse={"thr": 0.0, "train_coarse_percent": 0.5, "train_pad_num_gt_min": 5}
    )
    model = LoFTR(cfg).train()
    data = _pair(2)
    spv = _gt(2, 96, 40)
    out = model.forward_train(data, *spv)
    n_train = int(2 * 96 * 0.5)  # N * max(L, S) * percent
    assert out["b_ids"].shape == out["gt_mask"].shape == (n_train,)
    assert out["expec_f"].shape == (n_train, 3)
    assert out["conf_matrix"].shape == (2, 96, 96) and out["conf_matrix"].requires_grad
    n_pred = int((~out["gt_mask"]).sum())
    assert int(out["gt_mask"].sum()) >= 5
    assert not out["gt_mask"][:n_pred].any() and out["gt_mask"][n_pred:].all()  # preds first
    # the predictions are the matches of the (detached) confidence matrix
    keep = torch.ones(2, 96, dtype=torch.bool)
    keep = keep.view(2, 8, 12)
    keep[:, :2] = keep[:, -2:] = False
    keep[:, :, :2] = keep[:, :, -2:] = False
    pred = select_matches(out["conf_matrix"].detach(), 0.0, keep.view(2, -1), keep.view(2, -1))
    assert n_pred == min(pred.i_ids.numel(), n_train - 5)
    assert out["mconf"].shape == (n_pred,) and (out["mconf"] > 0).all()
    # GT pads are drawn from the supervision
    gt_pairs = set(zip(*(t.tolist() for t in spv), strict=True))
    pads = zip(*(out[k][n_pred:].tolist() for k in ("b_ids", "i_ids", "j_ids")), strict=True)
    assert set(pads) <= gt_pairs
    assert out["mkpts1_f"].shape == (n_pred, 2)
    assert (out["hw0_c"], out["hw1_f"], out["W"]) == ((8, 12), (32, 48), 5)
    # gradients reach every parameter (DS: no bin_score)
    loss = (out["conf_matrix"] * torch.rand_like(out["conf_matrix"])).sum() + out["expec_f"].sum()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_forward_train_is_robust_where_the_original_crashes() -> None:
    """Tiny images (budget <= train_pad_num_gt_min) and batches without ground truth."""
    torch.manual_seed(0)
    cfg = LoFTRConfig.outdoor_ds().replace(match_coarse={"thr": 0.0, "border_rm": 0})
    model = LoFTR(cfg).train()
    data = _pair(1, 64, 64)
    # n_train = int(64 * 0.3) = 19 <= 200: the whole budget goes to ground truth
    out = model.forward_train(data, *_gt(1, 64, 10))
    assert out["gt_mask"].shape == (19,) and out["gt_mask"].all()
    assert out["mkpts0_f"].shape == (0, 2) and out["expec_f"].shape == (19, 3)
    # no ground truth at all: predictions only (never more than the budget)
    empty = torch.zeros(0, dtype=torch.long)
    out = model.forward_train(data, empty, empty, empty)
    assert not out["gt_mask"].any() and 0 < out["b_ids"].numel() <= 19
    with pytest.raises(InputError, match="int64"):
        model.forward_train(data, empty.int(), empty, empty)


def test_forward_train_optimal_transport_with_masks() -> None:
    torch.manual_seed(0)
    cfg = LoFTRConfig.outdoor_ot().replace(
        match_coarse={"thr": 0.0, "train_coarse_percent": 0.5, "train_pad_num_gt_min": 3}
    )
    model = LoFTR(cfg).train()
    data = dict(_pair(1))
    data["mask0"] = torch.ones(1, 8, 12, dtype=torch.bool)
    data["mask0"][:, 6:] = False  # valid 6 x 12
    data["mask1"] = torch.ones(1, 8, 12, dtype=torch.bool)
    out = model.forward_train(data, *_gt(1, 72, 10))
    assert out["conf_matrix_with_bin"].shape == (1, 97, 97)
    assert out["b_ids"].numel() == int(min(6 * 12, 8 * 12) * 0.5)  # budget from the valid areas
    assert (out["conf_matrix"][0, 72:] == 0).all()  # padded rows
    (out["conf_matrix_with_bin"].sum() + out["expec_f"].sum()).backward()
    assert model.coarse_matching.bin_score.grad is not None


def test_modern_preset_end_to_end() -> None:
    """All design alternatives together: forward, training path, gradients to every parameter."""
    torch.manual_seed(0)
    cfg = LoFTRConfig.modern().replace(match_coarse={"thr": 0.0, "border_rm": 0})
    modern = LoFTR(cfg).train()
    official = LoFTR(LoFTRConfig.outdoor_ds()).state_dict()
    sd = modern.state_dict()
    assert list(sd) == list(official)
    changed = {k for k in sd if sd[k].shape != official[k].shape}
    assert changed == (
        {"backbone.layer2.0.downsample.0.weight", "backbone.layer3.0.downsample.0.weight"}
        | {f"loftr_coarse.layers.{i}.mlp.0.weight" for i in range(8)}
        | {f"loftr_fine.layers.{i}.mlp.0.weight" for i in range(2)}
    )
    out = modern.forward_train(_pair(1), *_gt(1, 96, 30))
    (out["conf_matrix"].sum() + out["expec_f"].square().sum()).backward()
    for name, p in modern.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with torch.no_grad():
        res = modern.eval()(_pair(1))
    assert res["keypoints0"].shape[0] > 0 and torch.isfinite(res["keypoints1"]).all()
