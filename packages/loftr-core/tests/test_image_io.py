"""Image reading and grayscale conversion: original semantics, awkward and broken files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from loftr_core.api.image_io import is_truncated_jpeg, read_image, resize_long_side, to_gray
from loftr_core.errors import InputError


def _colour_image(h: int = 37, w: int = 53, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_read_image_equals_imread_grayscale(shared_data: Path) -> None:
    path = next(iter(sorted((shared_data / "phototourism_sample").glob("*.jpg"))))
    ours = read_image(path)
    ref = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, ref)


def test_png_colour_file_matches_imread_and_cvtcolor(tmp_path: Path) -> None:
    rgb = _colour_image()
    path = tmp_path / "c.png"
    cv2.imwrite(str(path), rgb[:, :, ::-1])  # stored as RGB on disk
    gray = read_image(path)
    # files: exactly cv2.imread(IMREAD_GRAYSCALE), as the original reads them
    np.testing.assert_array_equal(gray, cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
    # arrays: cv2.cvtColor weights, RGB by default, BGR on request
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(to_gray(rgb), expected)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    np.testing.assert_array_equal(to_gray(bgr, channel_order="bgr"), expected)
    # the decoder's own colour conversion differs from cvtColor by at most one grey level
    assert np.abs(gray.astype(int) - expected.astype(int)).max() <= 1


def test_known_gray_weights() -> None:
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    assert int(to_gray(red)[0, 0]) == 76  # round(0.299 * 255)
    green = np.zeros((4, 4, 3), np.float32)
    green[..., 1] = 1.0
    assert float(to_gray(green)[0, 0]) == pytest.approx(0.587, abs=1e-3)


def test_sixteen_bit_png_becomes_eight_bit(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    gray8 = rng.integers(0, 256, size=(30, 41), dtype=np.uint8)
    path = tmp_path / "g16.png"
    cv2.imwrite(str(path), gray8.astype(np.uint16) * 257)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    out = read_image(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, gray8)
    # in-memory uint16 arrays follow the same rule
    np.testing.assert_array_equal(to_gray(gray8.astype(np.uint16) * 257), gray8)


def test_alpha_png_drops_alpha(tmp_path: Path) -> None:
    rgb = _colour_image(seed=2)
    alpha = np.linspace(0, 255, rgb.shape[0] * rgb.shape[1]).reshape(rgb.shape[:2]).astype(np.uint8)
    bgra = np.dstack([rgb[:, :, ::-1], alpha])
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), bgra)
    # alpha is dropped: same grey as the file without alpha / the colour array without alpha
    cv2.imwrite(str(tmp_path / "no_alpha.png"), rgb[:, :, ::-1])
    np.testing.assert_array_equal(read_image(path), read_image(tmp_path / "no_alpha.png"))
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(to_gray(np.dstack([rgb, alpha])), expected)


def test_tensor_inputs_match_numpy() -> None:
    rgb = _colour_image(seed=3)
    expected = to_gray(rgb)
    np.testing.assert_array_equal(to_gray(torch.from_numpy(rgb).permute(2, 0, 1)), expected)
    f = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    np.testing.assert_allclose(to_gray(f) * 255, expected, atol=0.51)
    g = torch.rand(1, 1, 20, 30)
    np.testing.assert_array_equal(to_gray(g), g[0, 0].numpy())


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.zeros((5, 5, 2), np.uint8), "shape"),
        (np.full((5, 5), 3.0, np.float32), r"\[0, 1\]"),
        (np.zeros((5, 5), np.int32), "dtype"),
        (torch.zeros(2, 3, 5, 5), "shape"),
        (np.zeros((0, 5), np.uint8), "empty"),
        (42, "int"),
    ],
)
def test_bad_in_memory_images(value: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        to_gray(value, name="image0")  # type: ignore[arg-type]


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(InputError, match="not a file"):
        read_image(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_image(path)


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n" * 20)
    with pytest.raises(InputError, match="not an image"):
        read_image(path)


def test_truncated_jpeg(tmp_path: Path) -> None:
    ok, data = cv2.imencode(".jpg", _colour_image(64, 80, seed=4))
    assert ok
    full = data.tobytes()
    assert not is_truncated_jpeg(full)
    assert not is_truncated_jpeg(full + b"trailing bytes after EOI")
    assert not is_truncated_jpeg(b"\x89PNG not a jpeg")
    for cut in (len(full) // 2, len(full) - 2, 200):
        assert is_truncated_jpeg(full[:cut])
    path = tmp_path / "cut.jpg"
    path.write_bytes(full[: len(full) * 2 // 3])
    with pytest.raises(InputError, match="truncated JPEG"):
        read_image(path)


def test_resize_long_side_known_sizes() -> None:
    """The original's test-time rule: long side to N (Python round), then floor each side to 8."""
    img = np.zeros((1087, 791), np.uint8)
    out, (sx, sy) = resize_long_side(img, 640)
    assert out.shape == (640, 464)  # round(791 * 640 / 1087) = 466, floored to 464
    assert sx == pytest.approx(791 / 464)
    assert sy == pytest.approx(1087 / 640)
    # the example: 1026x768 at 840 is 840x624 (not 840x629 plus padding)
    assert resize_long_side(np.zeros((768, 1026), np.uint8), 840)[0].shape == (624, 840)
    same, scale = resize_long_side(np.zeros((1088, 792), np.uint8), 1088)
    assert scale == (1.0, 1.0) and same.shape == (1088, 792)
    with pytest.raises(InputError, match="positive int"):
        resize_long_side(img, 0)
    with pytest.raises(InputError, match="empty side"):
        resize_long_side(np.zeros((10, 1000), np.uint8), 100)  # 100 x 1 -> 96 x 0


@pytest.mark.parametrize(("w", "h"), [(1026, 768), (1194, 1600), (1242, 827), (791, 1087)])
@pytest.mark.parametrize("long_side", [640, 840, 1024])
def test_resize_rule_equals_the_dataset_path(w: int, h: int, long_side: int) -> None:
    """Matcher's resize and loftr-data's (the evaluation pipeline, exact to the original)."""
    preprocess = pytest.importorskip("loftr_data.preprocess")
    rng = np.random.default_rng(w + h)
    img = rng.integers(0, 256, (h, w), dtype=np.uint8)
    ours, (sx, sy) = resize_long_side(img, long_side)
    theirs, scale = preprocess.resize_long_side(img, long_side)
    assert ours.shape == theirs.shape
    assert (ours.shape[1], ours.shape[0]) == preprocess.resized_size(w, h, long_side)
    assert ours.shape[0] % 8 == 0 and ours.shape[1] % 8 == 0
    np.testing.assert_array_equal(ours, theirs)  # the same pixels, not only the same size
    np.testing.assert_allclose([sx, sy], scale, rtol=1e-6)
