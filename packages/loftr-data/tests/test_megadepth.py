"""MegaDepthDataset on the real shipped pair: contract, known values and geometric consistency."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np
import pytest
import torch

from loftr_data import (
    DataConfigError,
    DatasetFileError,
    MegaDepthDataset,
    MissingDatasetFileError,
    validate_sample,
)
from loftr_data.scene_info import load_scene_info

NAME0 = "5122787062_7ef463a806_o"  # image index 1474, 1194 x 1600 (w x h)
NAME1 = "8583256543_96562c14f2_o"  # image index 1462, 1242 x 827


@pytest.fixture(scope="module")
def sample_dir(shared_data: Path) -> Path:
    return shared_data / "megadepth_sample"


@pytest.fixture(scope="module")
def pair640(sample_dir: Path) -> dict[str, Any]:
    ds = MegaDepthDataset(sample_dir, sample_dir / "sample.npz", pair_ids=[0], img_resize=640)
    assert len(ds) == 1
    return ds[0]


def test_sample_contract_and_known_values(pair640: dict[str, Any], sample_dir: Path) -> None:
    s = pair640
    validate_sample(s)
    assert set(s) == {
        "image0", "image1", "mask0", "mask1", "scale0", "scale1", "K0", "K1", "T_0to1",
        "T_1to0", "depth0", "depth1", "dataset_name", "scene_id", "pair_id", "pair_names",
    }  # fmt: skip
    assert s["image0"].shape == (1, 640, 640) and s["mask0"].shape == (80, 80)
    assert (s["dataset_name"], s["scene_id"], s["pair_id"]) == ("MegaDepth", "sample", 0)
    assert s["pair_names"] == (f"{NAME0}.jpg", f"{NAME1}.jpg")
    # image 0: 1194 x 1600 -> 472 x 640; image 1: 1242 x 827 -> 640 x 424.
    torch.testing.assert_close(s["scale0"], torch.tensor([1194 / 472, 1600 / 640]))
    torch.testing.assert_close(s["scale1"], torch.tensor([1242 / 640, 827 / 424]))
    assert int(s["mask0"].sum()) == 80 * 59 and bool(s["mask0"][:, :59].all())
    assert int(s["mask1"].sum()) == 53 * 80 and bool(s["mask1"][:53].all())
    # Pixels equal the original pipeline: gray -> cv2.resize bilinear -> /255, zero padding.
    gray = cv2.imread(str(sample_dir / f"{NAME0}.jpg"), cv2.IMREAD_GRAYSCALE)
    expected = cv2.resize(gray, (472, 640)).astype(np.float32) / 255.0
    np.testing.assert_array_equal(s["image0"][0, :, :472].numpy(), expected)
    assert float(s["image0"][0, :, 472:].abs().sum()) == 0.0
    # Depth: the h5 content at original resolution, zero elsewhere.
    with h5py.File(sample_dir / f"{NAME1}.h5", "r") as f:
        depth1 = np.asarray(f["depth"], dtype=np.float32)
    np.testing.assert_array_equal(s["depth1"][:827, :1242].numpy(), depth1)
    assert float(s["depth1"][827:].abs().sum()) == 0.0 and float(s["depth1"][:, 1242:].sum()) == 0
    # Intrinsics scaled by 1/scale per axis; poses world-to-camera -> T_0to1 = P1 inv(P0).
    info = load_scene_info(sample_dir / "sample.npz")
    k0 = info.intrinsics[1474]
    assert k0 is not None
    expected_k0 = np.diag([472 / 1194, 640 / 1600, 1.0]) @ k0
    np.testing.assert_allclose(s["K0"].numpy(), expected_k0, rtol=1e-6)
    p0, p1 = info.poses[1474], info.poses[1462]
    assert p0 is not None and p1 is not None
    np.testing.assert_allclose(s["T_0to1"].numpy(), p1 @ np.linalg.inv(p0), rtol=1e-5, atol=1e-6)
    eye = (s["T_1to0"].double() @ s["T_0to1"].double()).numpy()
    np.testing.assert_allclose(eye, np.eye(4), atol=1e-5)


def _agreement(s: dict[str, Any], a: str, b: str, k_scale: bool = True) -> tuple[int, float]:
    """Warp image a's depth into image b (through the sample contract) and compare depths.

    Returns the number of pixels of a with depth that land inside b on a pixel with depth, and the
    share of them whose projected depth agrees with b's depth within 5 % (relative).
    """
    t = (s["T_0to1"] if a == "0" else s["T_1to0"]).double()
    ka, kb = s[f"K{a}"].double(), s[f"K{b}"].double()
    sa, sb = s[f"scale{a}"].double(), s[f"scale{b}"].double()
    if not k_scale:  # the classic bug: original-size K used with resized-image pixels
        ka, kb = ka * torch.tensor([sa[0], sa[1], 1.0])[:, None], kb
    ha, wa = int(s[f"mask{a}"].any(1).sum()) * 8, int(s[f"mask{a}"].any(0).sum()) * 8
    hb, wb = int(s[f"mask{b}"].any(1).sum()) * 8, int(s[f"mask{b}"].any(0).sum()) * 8
    ys, xs = torch.meshgrid(torch.arange(ha), torch.arange(wa), indexing="ij")
    p = torch.stack([xs.flatten(), ys.flatten()], 1).double()
    orig = (p * sa).round().long()
    d = s[f"depth{a}"].double()[orig[:, 1], orig[:, 0]]
    p, d = p[d > 0], d[d > 0]
    pts = torch.linalg.inv(ka) @ torch.cat([p, torch.ones(len(p), 1).double()], 1).T * d
    pts_b = t[:3, :3] @ pts + t[:3, 3:]
    proj = kb @ pts_b
    z = proj[2]
    uv = (proj[:2] / z.clamp_min(1e-9)).T
    inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 1] >= 0) & (uv[:, 0] <= wb - 1)
    inside &= uv[:, 1] <= hb - 1
    uv_orig = (uv[inside] * sb).round().long()
    db = s[f"depth{b}"].double()[uv_orig[:, 1], uv_orig[:, 0]]
    zb = z[inside]
    has = db > 0
    if int(has.sum()) == 0:
        return 0, 0.0
    rel = (zb[has] - db[has]).abs() / db[has]
    return int(has.sum()), float((rel < 0.05).double().mean())


def test_depth_and_pose_are_consistent(pair640: dict[str, Any]) -> None:
    # Measured on the shipped pair at 640 px: 133 325 overlapping pixels 0->1 with 99.14 %
    # agreeing within 5 %; 26 245 pixels 1->0 with 98.40 % agreeing.
    n01, share01 = _agreement(pair640, "0", "1")
    n10, share10 = _agreement(pair640, "1", "0")
    assert n01 > 130_000 and share01 > 0.985
    assert n10 > 25_000 and share10 > 0.975
    # Negative control: the wrong intrinsics scale breaks it (measured: 1 687 pixels, 0 % agree).
    n_bad, share_bad = _agreement(pair640, "0", "1", k_scale=False)
    assert n_bad < 5_000 and share_bad < 0.2


def test_840_resize_and_no_depth(sample_dir: Path) -> None:
    ds = MegaDepthDataset(
        sample_dir, sample_dir / "sample.npz", pair_ids=[0], img_resize=840, load_depth=False
    )
    s = ds[0]
    validate_sample(s)
    assert "depth0" not in s and "depth1" not in s
    assert s["image1"].shape == (1, 840, 840) and s["mask1"].shape == (105, 105)
    assert int(s["mask1"].sum()) == 69 * 105  # 1242 x 827 -> 840 x 552
    torch.testing.assert_close(s["scale1"], torch.tensor([1242 / 840, 827 / 552]))


def test_overlap_range_and_pair_ids(sample_dir: Path) -> None:
    info = load_scene_info(sample_dir / "sample.npz")
    scores = info.overlap_scores
    kw: dict[str, Any] = {"check_files": False}
    ds = MegaDepthDataset(sample_dir, sample_dir / "sample.npz", min_overlap_score=0.5, **kw)
    assert ds.pair_ids == [i for i in range(len(scores)) if scores[i] > 0.5]
    ds = MegaDepthDataset(
        sample_dir, sample_dir / "sample.npz", min_overlap_score=0.3, max_overlap_score=0.5, **kw
    )
    assert len(ds) == int(((scores > 0.3) & (scores <= 0.5)).sum()) > 0
    # pair_ids intersect with the overlap range; pair 0 has score 0.643.
    ds = MegaDepthDataset(
        sample_dir, sample_dir / "sample.npz", pair_ids=[0, 1, 0], min_overlap_score=0.6
    )
    assert ds.pair_ids == [0]
    with pytest.raises(DataConfigError, match=r"pair_ids \[601\] are out of range"):
        MegaDepthDataset(sample_dir, sample_dir / "sample.npz", pair_ids=[601])
    with pytest.raises(DataConfigError, match="multiple of 8"):
        MegaDepthDataset(sample_dir, sample_dir / "sample.npz", pair_ids=[0], img_resize=644)
    with pytest.raises(DataConfigError, match="must exceed"):
        MegaDepthDataset(sample_dir, sample_dir / "sample.npz", max_overlap_score=0.0)


def test_missing_files_fail_at_build(sample_dir: Path) -> None:
    # Pair 1 (images 443 and 482) is not shipped.
    with pytest.raises(MissingDatasetFileError) as err:
        MegaDepthDataset(sample_dir, sample_dir / "sample.npz", pair_ids=[0, 1])
    msg = str(err.value)
    assert "sample.npz" in msg and "4 file(s)" in msg
    info = load_scene_info(sample_dir / "sample.npz")
    assert str(sample_dir / str(info.image_paths[443])) in msg
    assert isinstance(err.value, FileNotFoundError)
    # Skipping the check builds at once; reading the missing pair then fails naming the file.
    ds = MegaDepthDataset(sample_dir, sample_dir / "sample.npz", pair_ids=[0, 1], check_files=False)
    assert len(ds) == 2
    with pytest.raises(DatasetFileError, match=re.escape(str(info.image_paths[443]))):
        ds[1]
    with pytest.raises(IndexError):
        ds[2]
