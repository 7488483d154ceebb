"""The high-level Matcher: original-pixel coordinates, resizing, padding/batching, options, sizes.

A small randomly initialised model (same architecture family, narrower) keeps these fast; its
``thr`` is 0 so random weights still produce mutual-nearest-neighbour matches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from loftr_core.api.matcher import Matcher, MatchResult, min_image_size
from loftr_core.errors import ConfigError, InputError
from loftr_core.model import LoFTR
from loftr_core.model.config import LoFTRConfig


def tiny_config(**match_coarse: object) -> LoFTRConfig:
    return LoFTRConfig.outdoor_ds().replace(
        resnetfpn={"initial_dim": 32, "block_dims": (32, 48, 64)},
        coarse={"d_model": 64, "nhead": 4, "layer_names": ("self", "cross")},
        fine={"d_model": 32, "nhead": 4},
        match_coarse={"thr": 0.0, **match_coarse},
    )


@pytest.fixture(scope="module")
def model() -> LoFTR:
    torch.manual_seed(0)
    return LoFTR(tiny_config()).eval()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A textured 171x237 (H x W) gray image (not a multiple of 8)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (22, 30), dtype=np.uint8)
    img = cv2.resize(base, (237, 171), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(img, (3, 3), 0)


@pytest.fixture(scope="module")
def self_match(model: LoFTR, photo: np.ndarray) -> MatchResult:
    return Matcher(model).match(photo, photo)


def test_self_match_is_in_original_pixels(self_match: MatchResult) -> None:
    res = self_match
    assert isinstance(res, MatchResult)
    assert res.image0_size == (171, 237) and res.image1_size == (171, 237)
    assert len(res) > 50
    assert res.keypoints0.dtype == np.float32 and res.confidence.dtype == np.float32
    # image-0 keypoints sit on the 8-px lattice; image-1 keypoints are refined by at most +-4 px
    np.testing.assert_array_equal(res.keypoints0 % 8, 0)
    assert float(np.abs(res.keypoints0 - res.keypoints1).max()) <= 4.0 + 1e-4
    # border removal (2 cells) relative to the valid 30x22-cell grid (ceil of 237/8, 171/8)
    assert res.keypoints0[:, 0].min() >= 16 and res.keypoints0[:, 0].max() <= (30 - 3) * 8
    assert res.keypoints0[:, 1].min() >= 16 and res.keypoints0[:, 1].max() <= (22 - 3) * 8


def test_resize_equals_scaled_result_of_prescaled_image(model: LoFTR, photo: np.ndarray) -> None:
    resized = Matcher(model, resize=160).match(photo, photo)
    # round(171 * 160 / 237) = 115, floored to a multiple of 8: 112 (the original's rule)
    small = cv2.resize(photo, (160, 112), interpolation=cv2.INTER_LINEAR)
    direct = Matcher(model).match(small, small)
    sx, sy = 237 / 160, 171 / 112
    assert len(resized) == len(direct) > 10
    scale = np.array([sx, sy], np.float32)
    np.testing.assert_allclose(resized.keypoints0, direct.keypoints0 * scale, rtol=1e-6)
    np.testing.assert_allclose(resized.keypoints1, direct.keypoints1 * scale, rtol=1e-6)
    np.testing.assert_array_equal(resized.confidence, direct.confidence)
    assert resized.image0_size == (171, 237)
    # in original pixels the self-match still agrees up to the refinement window (4 px scaled)
    assert float(np.abs(resized.keypoints0 - resized.keypoints1).max()) <= 4 * max(sx, sy) + 1e-3


def test_channel_order_of_colour_arrays(model: LoFTR, photo: np.ndarray) -> None:
    """A cv2.imread (BGR) array matches like its RGB copy only when the order is given."""
    rng = np.random.default_rng(1)
    rgb = np.stack([photo, rng.permutation(photo.ravel()).reshape(photo.shape), photo // 2], -1)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    ref = Matcher(model).match(rgb, rgb)
    as_bgr = Matcher(model).match(bgr, bgr, channel_order="bgr")
    np.testing.assert_array_equal(as_bgr.keypoints0, ref.keypoints0)
    np.testing.assert_array_equal(as_bgr.confidence, ref.confidence)
    assert len(Matcher(model, channel_order="bgr").match(bgr, bgr)) == len(ref)
    wrong = Matcher(model).match(bgr, bgr)  # read as RGB: other gray values, other matches
    assert not np.array_equal(wrong.confidence, ref.confidence)
    with pytest.raises(ConfigError, match="channel_order='hsv'"):
        Matcher(model, channel_order="hsv")


def test_input_forms_give_identical_results(
    model: LoFTR, photo: np.ndarray, self_match: MatchResult, tmp_path: Path
) -> None:
    path = tmp_path / "p.png"
    cv2.imwrite(str(path), photo)
    matcher = Matcher(model)
    ref = self_match
    as_tensor = torch.from_numpy(photo).float()[None, None] / 255.0
    as_rgb = np.repeat(photo[:, :, None], 3, axis=2)
    for a, b in [(path, str(path)), (as_tensor, as_tensor), (as_rgb, photo)]:
        res = matcher.match(a, b)  # type: ignore[arg-type]
        np.testing.assert_array_equal(res.keypoints0, ref.keypoints0)
        np.testing.assert_array_equal(res.keypoints1, ref.keypoints1)


def test_batches_return_one_result_per_pair_in_order(model: LoFTR, photo: np.ndarray) -> None:
    big = photo[:96, :136]
    small = photo[:64, :80]
    other = np.ascontiguousarray(photo[::-1, ::-1][:80, :104])
    pairs = [(big, big), (small, small), (big, big), (other, small)]
    single = Matcher(model, batch_size=1).match_pairs(pairs)
    batched = Matcher(model, batch_size=4).match_pairs(pairs)
    assert [r.image0_size for r in batched] == [(96, 136), (64, 80), (96, 136), (80, 104)]
    assert [r.image1_size for r in batched] == [(96, 136), (64, 80), (96, 136), (64, 80)]
    # equal-size pairs are grouped and never padded: identical to one-at-a-time
    for k in (0, 2):
        np.testing.assert_allclose(batched[k].keypoints1, single[k].keypoints1, atol=1e-4)
        np.testing.assert_array_equal(batched[k].keypoints0, single[k].keypoints0)
    # padded pairs: every match lies inside the pair's own image, away from the padding
    for res in batched[1:]:
        h0, w0 = res.image0_size
        assert len(res) > 0
        assert res.keypoints0[:, 0].max() < w0 and res.keypoints0[:, 1].max() < h0
    # the smaller pair padded to the big one's size keeps most of its matches
    common = {tuple(p) for p in batched[1].keypoints0} & {tuple(p) for p in single[1].keypoints0}
    assert len(common) >= 0.5 * len(single[1])


def test_threshold_and_max_matches(
    model: LoFTR, photo: np.ndarray, self_match: MatchResult
) -> None:
    full = self_match
    t = float(np.median(full.confidence))
    above = Matcher(model, threshold=t).match(photo, photo)
    assert len(above) == int((full.confidence > t).sum())
    assert float(above.confidence.min()) > t
    top = Matcher(model, max_matches=7).match(photo, photo)
    assert len(top) == 7
    np.testing.assert_allclose(np.sort(top.confidence), np.sort(full.confidence)[-7:])
    # below the model's own thr: the model selects with it (no weight depends on thr), so the
    # matches are a superset, and the model itself is left as it was
    model_thr = model.config.match_coarse.thr
    lower = Matcher(model, threshold=t / 4).match(photo, photo)
    assert len(lower) > len(above)
    assert set(map(tuple, above.keypoints0)) <= set(map(tuple, lower.keypoints0))
    assert model.config.match_coarse.thr == model_thr
    assert len(Matcher(model).match(photo, photo)) == len(full)
    for bad in (1.0, -0.1, float("nan"), True):
        with pytest.raises(
            ConfigError, match=r"threshold=.*allowed is a finite number in \[0, 1\)"
        ):
            Matcher(model, threshold=bad)


def test_smallest_image_size(model: LoFTR, photo: np.ndarray) -> None:
    assert min_image_size(2) == 33
    assert min_image_size(0) == 8
    matcher = Matcher(model)
    with pytest.raises(InputError, match=r"100x32 px.*at least 33 px"):
        matcher.match(photo[:32, :100], photo)
    with pytest.raises(InputError, match="after resizing"):
        Matcher(model, resize=40).match(photo, photo)  # 40x29 after resize
    res = matcher.match(photo[:33, :64], photo[:33, :64])  # 5 coarse rows: only row 2 survives
    assert len(res) > 0
    np.testing.assert_array_equal(res.keypoints0[:, 1], 16.0)


def test_long_side_above_2048(model: LoFTR) -> None:
    rng = np.random.default_rng(3)
    strip = cv2.resize(rng.integers(0, 256, (5, 260), dtype=np.uint8), (2100, 40))
    res = Matcher(model).match(strip, strip)
    assert len(res) > 0
    assert float(res.keypoints0[:, 0].max()) > 2048


def test_dtypes(model: LoFTR, photo: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="fp16 is not supported on the CPU"):
        Matcher(model, dtype="fp16")
    with pytest.raises(ConfigError, match="fp64"):
        Matcher(model, dtype="fp64")
    res = Matcher(model, dtype="bf16").match(photo[:64, :96], photo[:64, :96])
    assert len(res) > 0 and res.keypoints0.dtype == np.float32
    assert float(np.abs(res.keypoints0 - res.keypoints1).max()) <= 4.0 + 1e-2


def test_bad_options(model: LoFTR) -> None:
    with pytest.raises(ConfigError, match="resize"):
        Matcher(model, resize=0)
    with pytest.raises(ConfigError, match="max_matches"):
        Matcher(model, max_matches=0)
    with pytest.raises(ConfigError, match=r"CUDA is not available|device"):
        Matcher(model, device="cuda:7" if not torch.cuda.is_available() else "nonsense")
    with pytest.raises(ConfigError, match="LoFTR model"):
        Matcher(torch.nn.Linear(2, 2))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_cuda_dtypes_agree_with_cpu(model: LoFTR, photo: np.ndarray, dtype: str) -> None:
    cpu = Matcher(model).match(photo, photo)
    gpu = Matcher(LoFTR(model.config).eval(), device="cuda", dtype=dtype)
    gpu.model.load_state_dict(model.state_dict())
    res = gpu.match(photo, photo)
    assert res.keypoints0.dtype == np.float32
    assert float(np.abs(res.keypoints0 - res.keypoints1).max()) <= 4.0 + 1e-2
    common = {tuple(p) for p in res.keypoints0} & {tuple(p) for p in cpu.keypoints0}
    need = 0.95 if dtype == "fp32" else 0.5  # low precision may flip near-tied neighbours
    assert len(common) >= need * len(cpu)


def test_attention_backend_option(model: LoFTR, photo: np.ndarray) -> None:
    matcher = Matcher(model, attention="full")
    assert matcher.model is not model and model.config.coarse.attention == "linear"
    assert matcher.model.config.coarse.attention == "full"
    assert matcher.model.config.fine.attention == "full"
    for key, value in model.state_dict().items():
        assert torch.equal(matcher.model.state_dict()[key], value), key
    res = matcher.match(photo[:64, :96], photo[:64, :96])
    assert len(res) > 0
    assert float(np.abs(res.keypoints0 - res.keypoints1).max()) <= 4.0 + 1e-4
    assert Matcher(model, attention="linear").model is model  # nothing to change


def test_match_pairs_encodes_each_image_once_with_the_single_pair_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pair list where images repeat: every distinct image goes through the backbone once,
    and each pair's matches equal matching that pair alone (the full forward pass)."""
    rng = np.random.default_rng(7)
    base = cv2.resize(rng.integers(0, 256, (40, 52), dtype=np.uint8), (416, 320))
    images = {
        "a": base[:200, :256],
        "b": np.roll(base, 8, axis=1)[:200, :256],
        "c": base[40:232, 40:312],  # another size (272x192)
    }
    paths = {}
    for name, img in images.items():
        paths[name] = tmp_path / f"{name}.png"
        cv2.imwrite(str(paths[name]), img)
    torch.manual_seed(0)
    model = LoFTR(LoFTRConfig.outdoor_ds()).eval()
    matcher = Matcher(model, threshold=0.0)
    pairs = [("a", "b"), ("a", "c"), ("b", "c"), ("c", "a"), ("a", "b"), ("b", "a")]
    calls = []
    encode = model.encode

    def counting(image: torch.Tensor) -> Any:
        calls.append(tuple(image.shape))
        return encode(image)

    monkeypatch.setattr(model, "encode", counting)
    results = matcher.match_pairs([(paths[x], paths[y]) for x, y in pairs])
    assert len(calls) == 3  # a, b, c once each
    for (x, y), got in zip(pairs, results, strict=True):
        alone = matcher.match(paths[x], paths[y])  # the full forward pass, backbone batched
        assert len(got) == len(alone) > 0, (x, y)
        np.testing.assert_array_equal(got.keypoints0, alone.keypoints0)  # the same coarse cells
        np.testing.assert_allclose(got.keypoints1, alone.keypoints1, rtol=0, atol=1e-3)
        np.testing.assert_allclose(got.confidence, alone.confidence, rtol=0, atol=1e-5)
        assert got.image0_size == alone.image0_size
    # arrays are keyed by object; a cache too small for two images re-encodes, same matches
    calls.clear()
    small = Matcher(model, threshold=0.0, feature_cache_mb=1)
    again = small.match_pairs([(images[x], images[y]) for x, y in pairs])
    assert len(calls) == 2 * len(pairs)  # nothing fits: every pair encodes both images
    for got, ref in zip(again, results, strict=True):
        np.testing.assert_array_equal(got.keypoints0, ref.keypoints0)
        np.testing.assert_array_equal(got.keypoints1, ref.keypoints1)
    with pytest.raises(ConfigError, match="feature_cache_mb"):
        Matcher(model, feature_cache_mb=-1)


def test_pair_list_reordered_for_the_cache_decoded_ahead_results_in_input_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache with room for two images and a list alternating between two pairs of images:
    reordered, each image is encoded once (8 in input order); decoding runs in the background
    loader's thread; every result is in its input slot and equals the pair matched alone."""
    import threading

    from loftr_core.errors import LoftrError

    rng = np.random.default_rng(11)
    base = cv2.resize(rng.integers(0, 256, (30, 40), dtype=np.uint8), (320, 240))
    paths = {}
    for k, name in enumerate("abcd"):
        paths[name] = tmp_path / f"{name}.png"
        cv2.imwrite(str(paths[name]), np.roll(base, 8 * k, axis=1)[:160, :224])
    torch.manual_seed(0)
    model = LoFTR(LoFTRConfig.outdoor_ds()).eval()
    with torch.inference_mode():
        one = model.encode(torch.zeros(1, 1, 160, 224)).nbytes
    assert model.encoded_nbytes(160, 224) == one  # what the order plans the cache with
    matcher = Matcher(model, threshold=0.0, feature_cache_mb=2.5 * one / 2**20)
    names = [("a", "b"), ("c", "d"), ("a", "b"), ("c", "d"), ("b", "a"), ("d", "c")]
    pairs = [(paths[x], paths[y]) for x, y in names]
    encoded: list[tuple[int, ...]] = []
    decoded: list[str] = []
    encode, prepare = model.encode, matcher._prepare

    def counting_encode(image: torch.Tensor) -> Any:
        encoded.append(tuple(image.shape))
        return encode(image)

    def recording_prepare(*args: Any, **kwargs: Any) -> Any:
        decoded.append(threading.current_thread().name)
        return prepare(*args, **kwargs)

    monkeypatch.setattr(model, "encode", counting_encode)
    monkeypatch.setattr(matcher, "_prepare", recording_prepare)
    results = matcher.match_pairs(pairs)
    assert len(encoded) == 4  # a, b, c, d once each (input order: all 12)
    assert any(name.startswith("loftr-loader") for name in decoded), decoded
    for (x, y), got in zip(names, results, strict=True):
        alone = matcher.match(paths[x], paths[y])
        assert len(got) == len(alone) > 0, (x, y)
        np.testing.assert_array_equal(got.keypoints0, alone.keypoints0)
        np.testing.assert_allclose(got.keypoints1, alone.keypoints1, rtol=0, atol=1e-3)
    encoded.clear()
    in_order = list(matcher.iter_match_indexed(pairs, reorder=False))
    assert [k for k, _ in in_order] == list(range(len(pairs))) and len(encoded) == 12
    # a missing image: its pairs yield the error (naming the pair), the others go on
    broken = [*pairs[:2], (paths["a"], tmp_path / "missing.png"), pairs[3]]
    seen = dict(matcher.iter_match_indexed(broken))
    assert sorted(seen) == [0, 1, 2, 3]
    assert isinstance(seen[2], LoftrError) and "missing.png" in str(seen[2])
    assert "pair 2" in str(seen[2])  # named after its own pair, whatever the order
    assert all(isinstance(seen[k], MatchResult) for k in (0, 1, 3))
    with pytest.raises(LoftrError, match=r"missing\.png"):
        matcher.match_pairs(broken)
