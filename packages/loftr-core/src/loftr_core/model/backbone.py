"""ResNet-FPN 8/2: the local feature CNN of LoFTR (spec §1.2).

A ResNet-18-like stem and three stages of two basic blocks (strides 2, 1, 2, 2 overall: 1/2, 1/2,
1/4, 1/8), then a top-down FPN that returns the coarse map (1/8, ``block_dims[2]`` channels) and
the fine map (1/2, ``block_dims[0]`` channels). Module and parameter names equal the official
checkpoint's (``backbone.layer2.0.downsample.0.weight``...).
"""

from __future__ import annotations

from typing import cast

import torch.nn.functional as F
from torch import Tensor, nn

from loftr_core.execution import Execution
from loftr_core.model.config import BackboneConfig

__all__ = ["BasicBlock", "ResNetFPN"]


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1, without bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual shortcut.

    The shortcut is projected (``downsample``) only when ``stride != 1`` (the official layout): a
    1x1 stride-s convolution + BN, or with ``downsample="conv3x3"`` a 3x3 stride-s convolution + BN.
    """

    def __init__(
        self, in_planes: int, planes: int, stride: int, downsample: str, execution: Execution
    ) -> None:
        super().__init__()
        self.execution = execution
        # registration order = state-dict order of the official checkpoints
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.conv2 = conv3x3(planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1:
            proj = conv1x1 if downsample == "conv1x1" else conv3x3
            self.downsample = nn.Sequential(proj(in_planes, planes, stride), nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in, H, W) -> (N, planes, H/stride, W/stride)``."""
        conv_bn = self.execution.conv_bn
        y = self.relu(conv_bn(x, self.conv1, self.bn1))
        y = conv_bn(y, self.conv2, self.bn2)
        if self.downsample is None:
            shortcut = x
        else:
            proj, norm = self.downsample.children()
            shortcut = conv_bn(x, cast(nn.Conv2d, proj), cast(nn.BatchNorm2d, norm))
        # in place: one activation-sized buffer less; ``y + shortcut`` == ``shortcut + y`` bitwise,
        # and BatchNorm's backward does not need its output
        return self.relu(y.add_(shortcut))


def _fpn_merge(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        conv3x3(in_dim, in_dim),
        nn.BatchNorm2d(in_dim),
        nn.LeakyReLU(inplace=True),
        conv3x3(in_dim, out_dim),
    )


def _upsample2x(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)


class ResNetFPN(nn.Module):
    """ResNet-FPN with coarse resolution 1/8 and fine resolution 1/2.

    Args:
        config: the backbone section of :class:`~loftr_core.model.config.LoFTRConfig`.
        execution: how it runs (layout, BatchNorm folding, fine-branch precision); default
            :class:`~loftr_core.execution.ExecutionOptions`' defaults.
    """

    def __init__(self, config: BackboneConfig, execution: Execution | None = None) -> None:
        super().__init__()
        d0, d1, d2 = config.block_dims
        init = config.initial_dim
        self.execution = Execution() if execution is None else execution
        self.conv1 = nn.Conv2d(1, init, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(init)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(init, d0, 1, config.downsample)  # 1/2
        self.layer2 = self._make_layer(d0, d1, 2, config.downsample)  # 1/4
        self.layer3 = self._make_layer(d1, d2, 2, config.downsample)  # 1/8
        self.layer3_outconv = conv1x1(d2, d2)
        self.layer2_outconv = conv1x1(d1, d2)
        self.layer2_outconv2 = _fpn_merge(d2, d1)
        self.layer1_outconv = conv1x1(d0, d1)
        self.layer1_outconv2 = _fpn_merge(d1, d0)
        self.reset_parameters()

    def _make_layer(
        self, in_planes: int, planes: int, stride: int, downsample: str
    ) -> nn.Sequential:
        return nn.Sequential(
            BasicBlock(in_planes, planes, stride, downsample, self.execution),
            BasicBlock(planes, planes, 1, downsample, self.execution),
        )

    def reset_parameters(self) -> None:
        """The original initialisation: kaiming-normal (fan_out, relu) convs, BN weight 1 bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1.0)
                nn.init.constant_(m.bias, 0.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Extract the coarse and fine feature maps.

        Args:
            x: ``(N, 1, H, W)`` float images, H and W multiples of 8.

        Returns:
            ``(coarse (N, block_dims[2], H/8, W/8), fine (N, block_dims[0], H/2, W/2))``, in
            in the memory layout the execution chose (channels-last on CPU by default).
        """
        # Intermediates are released as soon as they are used (``del``): at 1/2 resolution every
        # activation is large (196 x H/2 x W/2 floats), so the peak memory is a few of them.
        ex = self.execution
        x0 = ex.conv_layout(self.relu(ex.conv_bn(x, self.conv1, self.bn1)))
        x1 = self.layer1(x0)  # 1/2
        del x0
        x2 = self.layer2(x1)  # 1/4
        x3 = self.layer3(x2)  # 1/8
        x3_out = self.layer3_outconv(x3)
        del x3
        # FPN: ``outconv2(lateral + up(top))``, the sum written into the lateral buffer (bitwise
        # equal to the out-of-place sum) and the steps of ``outconv2`` run one by one, so that each
        # input is freed once the next output exists (``nn.Sequential`` would keep its input).
        # Everything from here on feeds only the fine map (its precision is an execution option).
        dtype = x3_out.dtype
        with ex.fine_branch(x3_out):
            y = self.layer2_outconv(x2)
            del x2
            y.add_(_upsample2x(x3_out))
            x2_out = self._merge(self.layer2_outconv2, y)
            del y
            y = self.layer1_outconv(x1)
            del x1
            y.add_(_upsample2x(x2_out))
            del x2_out
            y = self._merge(self.layer1_outconv2, y)
        return x3_out, y.to(dtype)

    def _merge(self, merge: nn.Module, y: Tensor) -> Tensor:
        """``outconv2``: conv3x3, BN, LeakyReLU, conv3x3."""
        conv_a, bn, act, conv_b = merge.children()
        y = act(self.execution.conv_bn(y, cast(nn.Conv2d, conv_a), cast(nn.BatchNorm2d, bn)))
        out: Tensor = conv_b(y)
        return out
