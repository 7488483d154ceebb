"""Resize/pad/depth reading: known answers from the original's formulas."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from loftr_data.errors import DataConfigError, DatasetFileError
from loftr_data.preprocess import (
    coarse_mask,
    pad_bottom_right,
    read_depth,
    read_gray,
    resize_long_side,
    resized_size,
)


@pytest.mark.parametrize(
    ("w", "h", "r", "expected"),
    [
        (1194, 1600, 640, (472, 640)),  # the sample's image 0: 477.6 -> 478 -> 472
        (1242, 827, 640, (640, 424)),  # image 1: 426.2 -> 426 -> 424
        (1194, 1600, 840, (624, 840)),  # 626.85 -> 627 -> 624
        (1242, 827, 840, (840, 552)),  # 559.3 -> 559 -> 552
        (1599, 1600, 640, (640, 640)),  # 639.6 rounds to 640; truncation would give 632
        (100, 100, 64, (64, 64)),
    ],
)
def test_resized_size_known_answers(w: int, h: int, r: int, expected: tuple[int, int]) -> None:
    assert resized_size(w, h, r) == expected


def test_resized_size_rejects_bad_sizes() -> None:
    with pytest.raises(DataConfigError, match="positive"):
        resized_size(0, 10, 640)


def test_resize_matches_opencv_bilinear_and_scale() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(827, 1242), dtype=np.uint8)
    resized, scale = resize_long_side(image, 640)
    expected = cv2.resize(image, (640, 424), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(resized, expected)
    np.testing.assert_allclose(scale, [1242 / 640, 827 / 424], rtol=1e-6)
    assert scale.dtype == np.float32


def test_pad_and_coarse_mask() -> None:
    image = np.full((424, 640), 7, dtype=np.uint8)
    padded, mask = pad_bottom_right(image, 640)
    assert padded.shape == (640, 640)
    assert int(padded[:424].sum()) == 7 * 424 * 640 and int(padded[424:].sum()) == 0
    coarse = coarse_mask(mask)
    assert coarse.shape == (80, 80)
    assert int(coarse.sum()) == 53 * 80  # 424 / 8 = 53 rows of valid cells
    assert bool(coarse[52].all()) and not bool(coarse[53].any())
    with pytest.raises(DataConfigError, match="too large"):
        pad_bottom_right(np.zeros((10, 700)), 640)


def test_read_depth_pads_and_checks(tmp_path: Path) -> None:
    depth = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("depth", data=depth)
    out = read_depth(path)
    assert out.shape == (2000, 2000)
    np.testing.assert_array_equal(out[:3, :4].numpy(), depth)
    assert float(out.sum()) == float(depth.sum())
    big = tmp_path / "big.h5"
    with h5py.File(big, "w") as f:
        f.create_dataset("depth", data=np.zeros((2001, 3), dtype=np.float32))
    with pytest.raises(DatasetFileError, match="at most 2000x2000"):
        read_depth(big)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("z", data=depth)
    with pytest.raises(DatasetFileError, match="no dataset 'depth'"):
        read_depth(other)


def test_read_gray_error_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetFileError, match=r"broken\.jpg"):
        read_gray(bad)
