"""Match plots: layout, colours by confidence / epipolar correctness, caption, PNG output."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from loftr_core.api.plotting import GREEN, RED, draw_matches, save_plot
from loftr_core.errors import InputError


def _blank(h: int, w: int) -> np.ndarray:
    return np.zeros((h, w), np.uint8)


def test_layout_and_images_in_place() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (90, 120), dtype=np.uint8)
    b = rng.integers(0, 256, (60, 80), dtype=np.uint8)
    out = draw_matches(a, b, np.zeros((0, 2)), np.zeros((0, 2)), title="")
    assert out.shape == (90, 120 + 10 + 80, 3) and out.dtype == np.uint8
    # away from the caption the images are copied unchanged (gray -> B=G=R)
    np.testing.assert_array_equal(out[60:, :, 0][:, :120], a[60:])
    np.testing.assert_array_equal(out[40:60, 130:, 1], b[40:60])
    assert (out[60:, 130:] == 255).all()  # padding below the shorter image is white


def test_epipolar_colouring_green_correct_red_wrong() -> None:
    img = _blank(100, 100)
    k0 = np.array([[20.0, 80.0], [20.0, 90.0]])
    k1 = np.array([[80.0, 80.0], [80.0, 90.0]])
    out = draw_matches(img, img, k0, k1, epipolar_errors=[1e-5, 1e-2], title="")
    # midpoints of the two lines (x from 20 to 80 + 110); anti-aliasing blurs by a few levels
    mid_good = out[80, 110].astype(int)
    mid_bad = out[90, 110].astype(int)
    assert np.abs(mid_good - np.array(GREEN)).max() < 40
    assert np.abs(mid_bad - np.array(RED)).max() < 40


def test_confidence_colouring_follows_jet() -> None:
    img = _blank(100, 100)
    k0 = np.array([[20.0, 80.0], [20.0, 92.0]])
    k1 = k0.copy()
    out = draw_matches(img, img, k0, k1, confidence=[1.0, 0.0], title="")
    jet = cv2.applyColorMap(np.array([[255], [0]], np.uint8), cv2.COLORMAP_JET).reshape(2, 3)
    # high confidence: red end of JET; low: blue end (anti-aliasing blurs by a few levels)
    assert np.abs(out[80, 100].astype(int) - jet[0]).max() < 40
    assert np.abs(out[92, 100].astype(int) - jet[1]).max() < 40
    assert jet[0][2] > 100 and jet[1][0] > 100


def test_caption_counts_are_drawn() -> None:
    img = _blank(200, 300)
    k = np.tile([[150.0, 190.0]], (3, 1))
    plain = draw_matches(img, img, k, k, title="")
    with_caption = draw_matches(img, img, k, k, inliers=[True, False, True])
    top_left = (slice(0, 100), slice(0, 250))
    assert (with_caption[top_left] > 0).sum() > (plain[top_left] > 0).sum() + 200


def test_mismatched_lengths_are_clear_errors() -> None:
    img = _blank(50, 50)
    with pytest.raises(InputError, match="pair up"):
        draw_matches(img, img, np.zeros((3, 2)), np.zeros((2, 2)))
    with pytest.raises(InputError, match="confidence has 1 values for 2"):
        draw_matches(img, img, np.zeros((2, 2)), np.zeros((2, 2)), confidence=[0.5])


def test_save_plot_png_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    path = save_plot(img, tmp_path / "sub" / "m.png")
    np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_COLOR), img)
    with pytest.raises(InputError, match=r"\.png"):
        save_plot(img, tmp_path / "m.jpg")
