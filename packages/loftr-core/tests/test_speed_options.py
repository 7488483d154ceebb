"""Speed options that change float rounding only: results stay within tight tolerances."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from loftr_core.backbone import ResNetFPN
from loftr_core.config import BackboneConfig


@pytest.mark.parametrize("setting", [True, "auto"])
def test_channels_last_backbone_equals_nchw_up_to_rounding(
    setting: bool | str, randomize_batchnorm: Callable[..., None]
) -> None:
    """``True`` and the default ``"auto"`` (on CPU) run NHWC: NCHW's result up to rounding."""
    torch.manual_seed(0)
    nchw = ResNetFPN(BackboneConfig(channels_last=False, fold_batchnorm=False)).eval()
    randomize_batchnorm(nchw)
    nhwc = ResNetFPN(BackboneConfig(channels_last=setting, fold_batchnorm=False)).eval()
    nhwc.load_state_dict(nchw.state_dict())
    x = torch.rand(2, 1, 64, 96)
    with torch.no_grad():
        c_ref, f_ref = nchw(x)
        c, f = nhwc(x)
    assert c.is_contiguous(memory_format=torch.channels_last)
    assert not c_ref.is_contiguous(memory_format=torch.channels_last)
    for got, ref in ((c, c_ref), (f, f_ref)):
        scale = float(ref.abs().max())
        assert float((got - ref).abs().max()) <= 1e-5 * scale


def test_folded_batchnorm_equals_unfolded_in_eval_and_is_off_in_training(
    randomize_batchnorm: Callable[..., None],
) -> None:
    torch.manual_seed(0)
    plain = ResNetFPN(BackboneConfig(channels_last=False, fold_batchnorm=False))
    randomize_batchnorm(plain, spread=0.2)
    folded = ResNetFPN(BackboneConfig(channels_last=False, fold_batchnorm=True))
    folded.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, 64, 96)
    with torch.no_grad():
        ref = plain.eval()(x)
        out = folded.eval()(x)
    for got, want in zip(out, ref, strict=True):
        assert not torch.equal(got, want)  # the folded kernels really ran
        assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())
    # training: batch statistics, the same computation as without folding (bitwise)
    plain.train()
    folded.train()
    out_t = folded(x)
    ref_t = plain(x)
    for got, want in zip(out_t, ref_t, strict=True):
        assert torch.equal(got, want)
    for (name, a), b in zip(plain.state_dict().items(), folded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # running statistics updated alike


def test_bf16_fine_branch_keeps_the_coarse_map_exact() -> None:
    torch.manual_seed(0)
    ref = ResNetFPN(BackboneConfig()).eval()
    low = ResNetFPN(BackboneConfig(fine_branch_dtype="bfloat16")).eval()
    low.load_state_dict(ref.state_dict())
    x = torch.rand(1, 1, 64, 96)
    with torch.no_grad():
        c_ref, f_ref = ref(x)
        c, f = low(x)
    assert torch.equal(c, c_ref)  # the coarse path never leaves float32
    assert f.dtype == torch.float32
    err = float((f - f_ref).abs().max()) / float(f_ref.abs().max())
    assert 0 < err < 0.05  # bfloat16 rounding (8 mantissa bits), not garbage


def test_bf16_transformer_returns_the_input_dtype_close_to_fp32() -> None:
    from loftr_core.config import CoarseConfig
    from loftr_core.transformer import LocalFeatureTransformer

    torch.manual_seed(0)
    ref = LocalFeatureTransformer(CoarseConfig(layer_names=("self", "cross"))).eval()
    low = LocalFeatureTransformer(
        CoarseConfig(layer_names=("self", "cross"), compute_dtype="bfloat16")
    ).eval()
    low.load_state_dict(ref.state_dict())
    f0, f1 = torch.randn(1, 300, 256), torch.randn(1, 200, 256)
    with torch.no_grad():
        r0, r1 = ref(f0, f1)
        g0, g1 = low(f0, f1)
    assert g0.dtype == g1.dtype == torch.float32
    for got, want in ((g0, r0), (g1, r1)):
        err = float((got - want).abs().max()) / float(want.abs().max())
        assert 0 < err < 0.05  # bfloat16 rounding, not garbage


def test_backbone_one_image_at_a_time_is_bitwise_equal_to_the_batch() -> None:
    from loftr_core.backbone import run_backbone

    torch.manual_seed(0)
    net = ResNetFPN(BackboneConfig()).eval()
    a, b = torch.rand(1, 1, 64, 96), torch.rand(1, 1, 64, 96)
    with torch.no_grad():
        batched = run_backbone(net, a, b)
        single = run_backbone(net, a, b, max_batch_pixels=0)
    assert all(torch.equal(x, y) for x, y in zip(batched, single, strict=True))


def test_fine_stage_in_chunks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import loftr_core.model as model_module
    from loftr_core.config import LoFTRConfig

    torch.manual_seed(0)
    net = model_module.LoFTR(LoFTRConfig.outdoor_ds().replace(match_coarse={"thr": 0.0})).eval()
    img = torch.rand(1, 1, 96, 128)
    data = {"image0": img, "image1": img.clone()}
    with torch.no_grad():
        whole = net(data)
        monkeypatch.setattr(model_module, "FINE_CHUNK_MATCHES", 7)
        chunked = net(data)
    assert whole["keypoints0"].shape[0] >= 20  # several chunks of 7
    assert torch.equal(whole["keypoints0"], chunked["keypoints0"])
    torch.testing.assert_close(chunked["keypoints1"], whole["keypoints1"], atol=1e-4, rtol=0)
    torch.testing.assert_close(chunked["fine_std"], whole["fine_std"], atol=1e-5, rtol=0)
