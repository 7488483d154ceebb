"""Synthetic homography dataset: determinism, correct H_0to1, full coverage, augmentation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from loftr_data import (
    DataConfigError,
    HomographyConfig,
    PhotometricConfig,
    SyntheticHomographyDataset,
    validate_sample,
)
from loftr_data.homography import random_homography, render_pair
from loftr_data.photometric import photometric_augment
from loftr_data.textures import procedural_texture


def test_deterministic_per_seed_and_index() -> None:
    a = SyntheticHomographyDataset(length=10, seed=3)
    b = SyntheticHomographyDataset(length=10, seed=3)
    s1, s2 = a[7], b[7]
    _ = b[2]  # order and other reads do not matter
    s3 = b[7]
    for key in ("image0", "image1", "H_0to1"):
        assert torch.equal(s1[key], s2[key]) and torch.equal(s1[key], s3[key])
    other = SyntheticHomographyDataset(length=10, seed=4)[7]
    assert not torch.equal(other["image0"], s1["image0"])
    assert not torch.equal(a[6]["H_0to1"], s1["H_0to1"])


def test_contract_and_defaults() -> None:
    ds = SyntheticHomographyDataset(length=5)
    s = ds[4]
    validate_sample(s)
    assert s["image0"].shape == (1, 240, 320) and "mask0" not in s and "depth0" not in s
    assert s["pair_id"] == 4 and s["scene_id"] == "procedural"
    assert s["dataset_name"] == "SyntheticHomography"
    torch.testing.assert_close(s["scale0"], torch.ones(2))
    # Textures have structure: plenty of strong gradients.
    img = (s["image0"][0].numpy() * 255).astype(np.uint8)
    grad = np.hypot(cv2.Sobel(img, cv2.CV_32F, 1, 0), cv2.Sobel(img, cv2.CV_32F, 0, 1))
    assert float((grad > 100).mean()) > 0.05


def test_h_0to1_maps_image0_onto_image1() -> None:
    rng = np.random.default_rng(0)
    texture = procedural_texture(rng, 640, 480)
    errs, errs_identity = [], []
    for k in range(5):
        img0, img1, h = render_pair(texture, np.random.default_rng(k), 320, 240, HomographyConfig())
        warped = cv2.warpPerspective(img0, h, (320, 240)).astype(np.float32)
        valid = cv2.warpPerspective(np.ones_like(img0), h, (320, 240)) > 0
        valid = cv2.erode(valid.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert valid.mean() > 0.3
        errs.append(np.abs(warped - img1.astype(np.float32))[valid].mean())
        errs_identity.append(np.abs(img0.astype(np.float32) - img1)[valid].mean())
    # Resampling twice blurs a little; a wrong (identity) H is far off.
    assert max(errs) < 2.5 and min(errs_identity) > 10 * max(errs)  # measured 1.37 and 28.9


def test_image1_always_covered_by_content() -> None:
    white = np.full((480, 640), 255, dtype=np.uint8)
    strong = HomographyConfig(max_rotation_deg=60, max_perspective=0.4, max_translation=0.3)
    for k in range(40):
        img0, img1, h = render_pair(white, np.random.default_rng(k), 320, 240, strong)
        assert img0.min() == 255 and img1.min() == 255, k
        assert abs(np.linalg.det(h)) > 0


def test_random_homography_ranges() -> None:
    cfg = HomographyConfig(max_rotation_deg=10, scale_range=(1.0, 1.0), max_translation=0.0,
                           max_perspective=0.0)  # fmt: skip
    for k in range(20):
        h = random_homography(np.random.default_rng(k), 320, 240, cfg)
        angle = np.degrees(np.arctan2(h[1, 0], h[0, 0]))
        assert abs(angle) <= 10 + 1e-9
        assert np.allclose(h @ [160, 120, 1], [160, 120, 1])  # about the centre
        assert np.isclose(np.linalg.det(h[:2, :2]), 1.0)
    assert np.allclose(random_homography(np.random.default_rng(0), 320, 240, cfg, 0.0), np.eye(3))


def test_photometric_augmentation() -> None:
    img = np.random.default_rng(0).random((240, 320), dtype=np.float32) * 0.5 + 0.25
    cfg = PhotometricConfig(brightness=0.2, contrast=0.0, blur_prob=0.0, noise_std=0.0)
    out = photometric_augment(img, np.random.default_rng(1), cfg)
    shift = float((out - img).mean())
    assert 0 < abs(shift) <= 0.2 and np.allclose(out - img, shift, atol=1e-5)
    out = photometric_augment(img, np.random.default_rng(1), PhotometricConfig(noise_std=0.5))
    assert out.min() >= 0.0 and out.max() <= 1.0 and out.dtype == np.float32
    with pytest.raises(DataConfigError, match="contrast"):
        PhotometricConfig(contrast=1.5)
    plain = SyntheticHomographyDataset(length=2, photometric=None)[1]
    augmented = SyntheticHomographyDataset(length=2)[1]
    assert torch.equal(plain["H_0to1"], augmented["H_0to1"])  # augmentation leaves geometry
    assert not torch.equal(plain["image0"], augmented["image0"])


def test_photo_folder(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "phototourism_sample"
    ds = SyntheticHomographyDataset(folder, length=26, size=(160, 120), cache_size=2)
    assert len(ds.files) == 13 and ds.scene_id == "phototourism_sample"
    s0, s13 = ds[0], ds[13]  # both from the first photo, different views
    validate_sample(s0)
    assert s0["image0"].shape == (1, 120, 160)
    assert s0["pair_names"][0].startswith(ds.files[0].name)
    assert not torch.equal(s0["image0"], s13["image0"])
    assert torch.equal(ds[5]["image1"], ds[5]["image1"])  # cached and uncached reads agree
    with pytest.raises(DataConfigError, match="holds no images"):
        SyntheticHomographyDataset(tmp_path)
    with pytest.raises(DataConfigError, match="multiples of 8"):
        SyntheticHomographyDataset(size=(321, 240))
    with pytest.raises(IndexError):
        ds[26]
