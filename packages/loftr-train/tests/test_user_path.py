"""The path a user walks: train -> evaluate -> match -> convert -> match -> export, with one
checkpoint."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loftr_core import Matcher, read_checkpoint
from loftr_core.cli import convert as cli_convert
from loftr_core.cli import export as cli_export
from loftr_core.cli import match as cli_match
from loftr_train import cli_eval
from loftr_train.train_config import load_config
from loftr_train.trainer import Trainer


@pytest.mark.slow
@pytest.mark.parametrize("design", ["official", "modern"])
def test_a_trained_checkpoint_works_in_every_command(
    design: str,
    tiny_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
    shared_data: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A tiny (non-preset size) model, official layers or every design alternative, trained for a
    few iterations: its ``last.ckpt`` is read by every command, the model rebuilt from the config
    inside, and the converted file gives the identical matches."""
    run = tmp_path / "run"
    overrides = [f"logging.run_dir={run}", "trainer.max_steps=3", "trainer.val_every_n_epochs=0"]
    if design == "modern":
        overrides += [
            "model.preset=modern",
            "model.options.coarse.norm_first=true",
            "model.options.resnetfpn.downsample=conv3x3",
        ]
    Trainer(load_config(tiny_config(), overrides)).fit()
    last = run / "checkpoints" / "last.ckpt"
    loaded = read_checkpoint(last)
    assert loaded.layout == "loftr-train" and loaded.config is not None
    assert loaded.config.resnetfpn.block_dims == (16, 24, 32)
    capsys.readouterr()

    sample = shared_data / "megadepth_sample"
    eval_args = ["--data-root", str(sample), "--scene-info", str(sample / "sample.npz")]
    eval_args += ["--pair-ids", "0", "--img-resize", "160", "--thr", "0", "--no-progress"]
    assert cli_eval.main([str(last), *eval_args]) == 0
    assert "auc@5" in capsys.readouterr().out

    photos = sorted((shared_data / "phototourism_sample").glob("*.jpg"))[:2]
    args = [str(photos[0]), str(photos[0]), "--resize", "160", "--thr", "0", "--device", "cpu"]
    assert cli_match.main([*args, "--weights", str(last), "--save", str(tmp_path / "a.npz")]) == 0
    converted = tmp_path / "model.safetensors"
    assert cli_convert.main([str(last), str(converted)]) == 0
    assert read_checkpoint(converted).config == loaded.config
    assert (
        cli_match.main([*args, "--weights", str(converted), "--save", str(tmp_path / "b.npz")]) == 0
    )
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert len(a["confidence"]) > 0
    for key in ("keypoints0", "keypoints1", "confidence"):
        np.testing.assert_array_equal(a[key], b[key])
    # the Python API reads it the same way
    api = Matcher.from_checkpoint(last, resize=160, threshold=0.0).match(photos[0], photos[0])
    np.testing.assert_array_equal(api.keypoints0, a["keypoints0"])
    _export_gives_the_same_matches(last, photos[0], a, tmp_path, capsys)


def _export_gives_the_same_matches(
    checkpoint: Path,
    photo: Path,
    matched: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """loftr-export of the trained checkpoint at loftr-match's resized size: in onnxruntime,
    the matches loftr-match saved, in the original image's pixels."""
    if any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")):
        return  # the [onnx] extra is not installed; tests/test_export.py says so too
    import onnxruntime as ort

    from loftr_core.api.export import export_input
    from loftr_core.api.image_io import read_image, resize_long_side

    height, width = resize_long_side(read_image(photo), 160)[0].shape[:2]
    onnx_file = tmp_path / "trained.onnx"
    argv = [str(onnx_file), "--weights", str(checkpoint), "--size", f"{width}x{height}"]
    assert cli_export.main([*argv, "--thr", "0", "--max-matches", "512"]) == 0
    assert "the same image-0 cells" in capsys.readouterr().out
    image, scale = export_input(photo, height, width)
    session = ort.InferenceSession(str(onnx_file))
    k0, k1, conf, valid = session.run(None, {"image0": image, "image1": image})
    n = len(matched["confidence"])
    assert int(valid.sum()) == n
    np.testing.assert_allclose(k0[valid] * scale, matched["keypoints0"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(k1[valid] * scale, matched["keypoints1"], rtol=0, atol=1e-2)
    np.testing.assert_allclose(conf[valid], matched["confidence"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("img_resize", [320, 840])
def test_matcher_gives_the_evaluation_pipelines_matches(shared_data: Path, img_resize: int) -> None:
    """``Matcher(resize=N, pad_to_square=True)`` on the image files gives exactly the matches of
    the model on loftr-data's MegaDepth test sample (the original's resize and square padding)."""
    import torch

    from loftr_core import LoFTR, LoFTRConfig
    from loftr_data import MegaDepthDataset

    sample_dir = shared_data / "megadepth_sample"
    ds = MegaDepthDataset(
        sample_dir, sample_dir / "sample.npz", pair_ids=[0], img_resize=img_resize, load_depth=False
    )
    sample = ds[0]
    torch.manual_seed(0)
    model = LoFTR(LoFTRConfig.outdoor_ds()).eval()
    keys = ("image0", "image1", "mask0", "mask1", "scale0", "scale1")
    with torch.inference_mode():
        reference = model({k: sample[k][None] for k in keys}, thr=0.0)
    names = [Path(p).name for p in sample["pair_names"]]
    paths = [sample_dir / name for name in names]
    matcher = Matcher(model, resize=img_resize, threshold=0.0, pad_to_square=True)
    result = matcher.match(*paths)
    assert len(result) == reference["keypoints0"].shape[0] > 20
    # the same matches; keypoints to float32 rounding of the scale (1 ulp at ~1200 px)
    np.testing.assert_allclose(
        result.keypoints0, reference["keypoints0"].numpy(), rtol=1e-6, atol=0
    )
    np.testing.assert_allclose(
        result.keypoints1, reference["keypoints1"].numpy(), rtol=1e-6, atol=0
    )
    np.testing.assert_array_equal(result.confidence, reference["confidence"].numpy())
