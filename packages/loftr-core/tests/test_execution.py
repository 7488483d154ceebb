"""Execution options (``loftr_core.execution``): parsing and presets, and the options that change
float rounding only stay within tight tolerances."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from loftr_core import ConfigError, ExecutionOptions, LoFTR, LoFTRConfig
from loftr_core.execution import Execution
from loftr_core.model.backbone import ResNetFPN
from loftr_core.model.config import BackboneConfig

REF = Execution(ExecutionOptions.reference())


def _backbone(**options: object) -> ResNetFPN:
    return ResNetFPN(BackboneConfig(), Execution(ExecutionOptions.reference().replace(**options)))


def test_options_parse_like_a_command_line_and_reject_bad_values() -> None:
    opts = ExecutionOptions.from_preset(
        "reference", ["fine_chunk_matches=256", "channels_last=auto", "coarse_chunk_elements=none"]
    )
    assert opts == ExecutionOptions(
        channels_last="auto",
        fold_batchnorm=False,
        onednn=False,
        coarse_one_pass=False,
        fine_chunk_matches=256,
    )
    assert ExecutionOptions.from_preset("default", ["onednn=off"]).onednn is False
    assert ExecutionOptions.from_preset("default", {"compile": True}).compile is True
    for bad, words in [
        (["nope=1"], "nope=1"),
        (["fine_chunk_matches=0"], "fine_chunk_matches=0"),
        (["fine_chunk_matches=many"], "fine_chunk_matches"),
        (["coarse_dtype=float64"], "coarse_dtype"),
        (["onednn"], "NAME=VALUE"),
    ]:
        with pytest.raises(ConfigError, match=words):
            ExecutionOptions.from_preset("default", bad)
    with pytest.raises(ConfigError, match="reference"):
        ExecutionOptions.from_preset("fastest")


def test_options_are_not_part_of_the_model_or_its_checkpoint() -> None:
    cfg = LoFTRConfig.outdoor_ds()
    assert "channels_last" not in str(cfg.to_dict()) and "onednn" not in str(cfg.to_dict())
    net = LoFTR(cfg, ExecutionOptions.reference())
    keys = list(net.state_dict())
    assert keys == list(LoFTR(cfg).state_dict())
    net.set_options(ExecutionOptions(fine_chunk_matches=3))
    holders = [m for m in net.modules() if "execution" in vars(m)]
    # the model, the backbone and its 6 blocks, the 8 + 2 transformer layers, coarse matching
    assert len(holders) == 1 + 1 + 6 + 10 + 1
    assert all(m.execution.options.fine_chunk_matches == 3 for m in holders)


def test_set_options_keeps_the_compiled_fine_stage_dynamic() -> None:
    """compile_stages() (lazy: nothing compiles until a call) marks the fine graph dynamic; later
    options must keep it so, or oneDNN's shape guards would recompile it per match count."""
    net = LoFTR(LoFTRConfig.outdoor_ds())
    assert not net.compiled
    net.compile_stages()
    net.set_options(ExecutionOptions(fine_chunk_matches=5))
    fine = [m.execution for m in net.loftr_fine.modules() if "execution" in vars(m)]
    coarse = [m.execution for m in net.loftr_coarse.modules() if "execution" in vars(m)]
    assert net.compiled and fine and coarse
    assert all(e.dynamic_shapes and e.options.fine_chunk_matches == 5 for e in fine)
    assert not any(e.dynamic_shapes for e in coarse)


@pytest.mark.parametrize("setting", [True, "auto"])
def test_channels_last_backbone_equals_nchw_up_to_rounding(
    setting: bool | str, randomize_batchnorm: Callable[..., None]
) -> None:
    """``True`` and the default ``"auto"`` (on CPU) run NHWC: NCHW's result up to rounding."""
    torch.manual_seed(0)
    nchw = _backbone().eval()
    randomize_batchnorm(nchw)
    nhwc = _backbone(channels_last=setting).eval()
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
    plain = _backbone()
    randomize_batchnorm(plain, spread=0.2)
    folded = _backbone(fold_batchnorm=True)
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
    low = ResNetFPN(BackboneConfig(), Execution(ExecutionOptions(fine_branch_dtype="bfloat16")))
    low = low.eval()
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
    from loftr_core.model.config import CoarseConfig
    from loftr_core.model.transformer import LocalFeatureTransformer

    torch.manual_seed(0)
    net = LocalFeatureTransformer(CoarseConfig(layer_names=("self", "cross"))).eval()
    low = Execution(ExecutionOptions(coarse_dtype="bfloat16"))
    f0, f1 = torch.randn(1, 300, 256), torch.randn(1, 200, 256)
    with torch.no_grad():
        r0, r1 = Execution().transformer("coarse", net, f0, f1)
        g0, g1 = low.transformer("coarse", net, f0, f1)
    assert g0.dtype == g1.dtype == torch.float32
    for got, want in ((g0, r0), (g1, r1)):
        err = float((got - want).abs().max()) / float(want.abs().max())
        assert 0 < err < 0.05  # bfloat16 rounding, not garbage


def test_backbone_one_image_at_a_time_is_bitwise_equal_to_the_batch() -> None:
    torch.manual_seed(0)
    net = ResNetFPN(BackboneConfig()).eval()
    a, b = torch.rand(1, 1, 64, 96), torch.rand(1, 1, 64, 96)
    with torch.no_grad():
        batched = Execution().backbone_pair(net, a, b)
        single = Execution(ExecutionOptions(backbone_batch_pixels=1)).backbone_pair(net, a, b)
    assert all(torch.equal(x, y) for x, y in zip(batched, single, strict=True))


def test_fine_stage_in_chunks_equals_one_pass() -> None:
    torch.manual_seed(0)
    net = LoFTR(LoFTRConfig.outdoor_ds().replace(match_coarse={"thr": 0.0})).eval()
    img = torch.rand(1, 1, 96, 128)
    data = {"image0": img, "image1": img.clone()}
    with torch.no_grad():
        whole = net(data)
        chunked = net.set_options(ExecutionOptions(fine_chunk_matches=7))(data)
    assert whole["keypoints0"].shape[0] >= 20  # several chunks of 7
    assert torch.equal(whole["keypoints0"], chunked["keypoints0"])
    torch.testing.assert_close(chunked["keypoints1"], whole["keypoints1"], atol=1e-4, rtol=0)
    torch.testing.assert_close(chunked["fine_std"], whole["fine_std"], atol=1e-5, rtol=0)
