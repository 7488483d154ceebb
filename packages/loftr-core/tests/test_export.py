"""ONNX export of the whole matcher: onnxruntime gives PyTorch's matches."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from loftr_core import LoFTR, LoFTRConfig
from loftr_core.api.export import ExportMatcher, export_onnx
from loftr_core.errors import ConfigError

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")


def _tiny(match_type: str = "dual_softmax") -> LoFTR:
    torch.manual_seed(0)
    cfg = LoFTRConfig.outdoor_ds().replace(
        resnetfpn={"initial_dim": 16, "block_dims": (16, 24, 32)},
        coarse={"d_model": 32, "nhead": 4, "layer_names": ("self", "cross")},
        fine={"d_model": 16, "nhead": 2},
        match_coarse={"match_type": match_type},
    )
    return LoFTR(cfg).eval()


@pytest.fixture(scope="module")
def pair(shared_data: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Two overlapping 120x160 crops of a real photo (8 px apart)."""
    img = cv2.imread(
        str(shared_data / "megadepth_sample" / "8583256543_96562c14f2_o.jpg"), cv2.IMREAD_GRAYSCALE
    )
    img = cv2.resize(img, (168, 128), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    a = torch.from_numpy(img[:120, :160].copy())[None, None]
    b = torch.from_numpy(img[8:, 8:].copy())[None, None]
    return a, b


@pytest.mark.parametrize("match_type", ["dual_softmax", "sinkhorn"])
def test_onnxruntime_gives_the_pytorch_matches(
    match_type: str, pair: tuple[torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    import onnx

    a, b = pair
    model = _tiny(match_type)
    with torch.no_grad():
        ref = model({"image0": a, "image1": b}, thr=0.0)
    n = ref["keypoints0"].shape[0]
    assert n >= 20
    path = export_onnx(model, tmp_path / "m.onnx", 120, 160, max_matches=256, thr=0.0)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert graph.opset_import[0].version == 18
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    k0, k1, conf, valid = sess.run(None, {"image0": a.numpy(), "image1": b.numpy()})
    assert k0.shape == (256, 2) and valid.dtype == np.bool_
    assert int(valid.sum()) == n and valid[:n].all()  # valid first
    np.testing.assert_array_equal(k0[:n], ref["keypoints0"].numpy())  # the same coarse cells
    np.testing.assert_allclose(k1[:n], ref["keypoints1"].numpy(), rtol=0, atol=1e-3)
    np.testing.assert_allclose(conf[:n], ref["confidence"].numpy(), rtol=0, atol=1e-4)


def test_k_below_the_count_keeps_the_most_confident(
    pair: tuple[torch.Tensor, torch.Tensor],
) -> None:
    a, b = pair
    model = _tiny()
    with torch.no_grad():
        ref = model({"image0": a, "image1": b}, thr=0.0)
        k0, _, conf, valid = ExportMatcher(model, 10, thr=0.0)(a, b)
    assert bool(valid.all())
    top = torch.sort(ref["confidence"], descending=True).values[:10]
    torch.testing.assert_close(torch.sort(conf, descending=True).values, top)
    best = torch.argsort(ref["confidence"], descending=True)[:10]
    want = {tuple(p) for p in ref["keypoints0"][best].tolist()}
    assert {tuple(p) for p in k0.tolist()} == want


def test_bad_export_options_are_one_line(tmp_path: Path) -> None:
    model = _tiny()
    with pytest.raises(ConfigError, match="max_matches=0"):
        export_onnx(model, tmp_path / "m.onnx", 120, 160, max_matches=0)
    with pytest.raises(ConfigError, match="multiple of 8"):
        export_onnx(model, tmp_path / "m.onnx", 124, 160, max_matches=8)
    with pytest.raises(ConfigError, match="no coarse cell"):
        export_onnx(model, tmp_path / "m.onnx", 32, 160, max_matches=8)
    sdpa = LoFTR(model.config.replace(coarse={"attention": "sdpa"}))
    with pytest.raises(ConfigError, match="does not export"):
        export_onnx(sdpa, tmp_path / "m.onnx", 120, 160, max_matches=8)
    assert not (tmp_path / "m.onnx").exists()
