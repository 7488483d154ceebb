"""Speed options that change float rounding only: results stay within tight tolerances."""

from __future__ import annotations

import torch

from loftr_core.backbone import ResNetFPN
from loftr_core.config import BackboneConfig


def test_channels_last_backbone_equals_nchw_up_to_rounding() -> None:
    torch.manual_seed(0)
    nchw = ResNetFPN(BackboneConfig()).eval()
    with torch.no_grad():
        for m in nchw.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    nhwc = ResNetFPN(BackboneConfig(channels_last=True)).eval()
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
