"""ResNet-FPN 8/2: official state-dict layout, equality with kornia's backbone, the 3x3 variant."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from loftr_core.execution import Execution, ExecutionOptions
from loftr_core.model import LoFTR
from loftr_core.model.backbone import ResNetFPN
from loftr_core.model.config import BackboneConfig, LoFTRConfig


def _official_keys(shared_data: Path) -> list[tuple[str, list[int]]]:
    keys_file = shared_data.parent / "reference" / "official-state-dict-keys.txt"
    if not keys_file.is_file():
        pytest.skip(f"reference key list not found at {keys_file}")
    rows = []
    for line in keys_file.read_text().splitlines():
        if not line.startswith("matcher."):
            continue
        key, shape = line.split("\t")[:2]
        dims = [int(d) for d in shape.strip("[]").split(",") if d.strip()]
        rows.append((key.removeprefix("matcher."), dims))
    return rows


@pytest.mark.parametrize("preset", ["outdoor_ds", "outdoor_ot"])
def test_state_dict_equals_the_official_checkpoint_layout(shared_data: Path, preset: str) -> None:
    """Keys, order and shapes equal the official checkpoints (DS 211 keys, OT 212 with bin_score)."""
    official = _official_keys(shared_data)
    model = LoFTR(getattr(LoFTRConfig, preset)())
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    expected = [
        (k, s) for k, s in official if preset.endswith("ot") or k != "coarse_matching.bin_score"
    ]
    assert ours == expected
    assert len(ours) == (212 if preset.endswith("ot") else 211)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 11_561_456 + (1 if preset.endswith("ot") else 0)


def test_backbone_equals_kornia_backbone(randomize_batchnorm: Callable[..., None]) -> None:
    kornia_fpn = pytest.importorskip("kornia.feature.loftr.backbone.resnet_fpn")
    torch.manual_seed(0)
    ref = kornia_fpn.ResNetFPN_8_2({"initial_dim": 128, "block_dims": [128, 196, 256]}).eval()
    randomize_batchnorm(ref)
    # NCHW, BN unfolded (the reference rounding) is bitwise kornia's; the CPU defaults
    # (channels-last, folded BN) are checked against it in test_execution.py
    ours = ResNetFPN(BackboneConfig(), Execution(ExecutionOptions.reference())).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.rand(2, 1, 64, 96)
    with torch.no_grad():
        c_ref, f_ref = ref(x)
        c, f = ours(x)
    assert c.shape == (2, 256, 8, 12) and f.shape == (2, 128, 32, 48)
    assert torch.equal(c, c_ref) and torch.equal(f, f_ref)


def test_conv3x3_downsample_variant() -> None:
    """Only the two stride-2 shortcuts change (1x1 -> 3x3); forward runs and every param learns."""
    base = ResNetFPN(BackboneConfig()).state_dict()
    alt_model = ResNetFPN(BackboneConfig(downsample="conv3x3"))
    alt = alt_model.state_dict()
    assert list(base) == list(alt)
    changed = {k for k in base if base[k].shape != alt[k].shape}
    assert changed == {"layer2.0.downsample.0.weight", "layer3.0.downsample.0.weight"}
    assert alt["layer2.0.downsample.0.weight"].shape == (196, 128, 3, 3)
    coarse, fine = alt_model(torch.rand(1, 1, 32, 32))
    (coarse.square().mean() + fine.square().mean()).backward()
    for name, p in alt_model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_downsample_only_for_strided_blocks() -> None:
    model = ResNetFPN(BackboneConfig())
    assert model.layer1[0].downsample is None and model.layer2[1].downsample is None
    assert model.layer2[0].downsample is not None and model.layer3[0].downsample is not None
