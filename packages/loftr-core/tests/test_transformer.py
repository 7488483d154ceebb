"""Local feature transformer: equality with the reference layer, masking, the design alternatives."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
import torch

from loftr_core.execution import Execution, ExecutionOptions
from loftr_core.model.config import CoarseConfig, FineConfig
from loftr_core.model.transformer import LocalFeatureTransformer, LoFTREncoderLayer


@pytest.fixture
def ref_mod(original_kornia_attention: Callable[[], AbstractContextManager[Any]]) -> Iterator[Any]:
    """kornia's transformer module, its linear attention on the original formula."""
    with original_kornia_attention() as transformer:
        yield transformer


@pytest.mark.parametrize("onednn", [False, True])
def test_coarse_transformer_equals_reference_with_masks(ref_mod: Any, onednn: bool) -> None:
    """BLAS products: bitwise the reference. oneDNN products (the CPU default): rounding only."""
    torch.manual_seed(0)
    cfg = CoarseConfig(layer_names=("self", "cross") * 2)
    ref = ref_mod.LocalFeatureTransformer(
        {"d_model": 256, "nhead": 8, "layer_names": list(cfg.layer_names), "attention": "linear"}
    )
    ours = LocalFeatureTransformer(cfg, Execution(ExecutionOptions(onednn=onednn)))
    ours.load_state_dict(ref.state_dict(), strict=True)
    f0, f1 = torch.randn(2, 40, 256), torch.randn(2, 30, 256)
    m0 = torch.ones(2, 40, dtype=torch.bool)
    m1 = torch.ones(2, 30, dtype=torch.bool)
    m0[1, 33:] = False
    m1[0, 20:] = False
    with torch.no_grad():
        r0, r1 = ref(f0, f1, m0, m1)
        o0, o1 = ours(f0, f1, m0, m1)
    if not onednn:
        assert torch.equal(o0, r0) and torch.equal(o1, r1)
    else:
        # LayerNorm-scaled outputs of unit size: float rounding is ~1e-6
        torch.testing.assert_close(o0, r0, atol=2e-5, rtol=0)
        torch.testing.assert_close(o1, r1, atol=2e-5, rtol=0)
        assert not (torch.equal(o0, r0) and torch.equal(o1, r1))  # the other kernel really ran


def test_cross_layer_updates_image1_from_the_updated_image0() -> None:
    torch.manual_seed(0)
    t = LocalFeatureTransformer(FineConfig(layer_names=("cross",)))
    f0, f1 = torch.randn(1, 25, 128), torch.randn(1, 25, 128)
    with torch.no_grad():
        o0, o1 = t(f0, f1)
        layer = t.layers[0]
        new0 = layer(f0, f1)
        assert torch.equal(o0, new0)
        assert torch.equal(o1, layer(f1, new0))  # sequential, not layer(f1, f0)
        assert not torch.allclose(o1, layer(f1, f0))


def test_padded_source_tokens_do_not_influence_valid_outputs() -> None:
    torch.manual_seed(0)
    t = LocalFeatureTransformer(CoarseConfig(layer_names=("self", "cross")))
    f0, f1 = torch.randn(1, 20, 256), torch.randn(1, 24, 256)
    m0 = torch.ones(1, 20, dtype=torch.bool)
    m1 = torch.ones(1, 24, dtype=torch.bool)
    m1[:, 18:] = False
    g1 = f1.clone()
    g1[:, 18:] = 100 * torch.randn(1, 6, 256)  # garbage in the padding
    with torch.no_grad():
        a0, a1 = t(f0, f1, m0, m1)
        b0, b1 = t(f0, g1, m0, m1)
    torch.testing.assert_close(a0, b0, rtol=0, atol=1e-5)
    torch.testing.assert_close(a1[:, :18], b1[:, :18], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("norm_first", "fusion", "changed"),
    [
        (True, "concat", {"norm2.weight": (512,), "norm2.bias": (512,)}),
        (False, "add", {"mlp.0.weight": (512, 256)}),
        (True, "add", {"mlp.0.weight": (512, 256)}),
    ],
)
def test_design_alternatives(
    norm_first: bool, fusion: str, changed: dict[str, tuple[int, ...]]
) -> None:
    """Forward runs, gradients reach every parameter, the state dict differs exactly where expected."""
    official = LoFTREncoderLayer(256, 8).state_dict()
    torch.manual_seed(0)
    layer = LoFTREncoderLayer(256, 8, "linear", norm_first=norm_first, message_fusion=fusion)
    sd = layer.state_dict()
    assert list(sd) == list(official)
    diff = {k: tuple(v.shape) for k, v in sd.items() if v.shape != official[k].shape}
    assert diff == changed
    x, src = torch.randn(2, 12, 256), torch.randn(2, 9, 256)
    out = layer(x, src)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # it is a different function from the official layer
    ref = LoFTREncoderLayer(256, 8)
    ref.load_state_dict(
        {k: (sd[k] if sd[k].shape == official[k].shape else official[k]) for k in sd}
    )
    with torch.no_grad():
        assert not torch.allclose(ref(x, src), layer(x, src))


def test_pre_norm_add_is_the_standard_pre_ln_layer() -> None:
    """norm_first + add: y = x + attn(LN(x)); out = y + mlp(LN(y))."""
    torch.manual_seed(0)
    layer = LoFTREncoderLayer(64, 4, "linear", norm_first=True, message_fusion="add")
    x = torch.randn(1, 10, 64)
    with torch.no_grad():
        xn = layer.norm1(x)
        y = x + layer._message(xn, xn, None, None)
        want = y + layer.mlp(layer.norm2(y))
        torch.testing.assert_close(layer(x, x), want, rtol=0, atol=1e-6)
