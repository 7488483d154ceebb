"""ResNet-FPN 8/2: the local feature CNN of LoFTR (spec §1.2).

A ResNet-18-like stem and three stages of two basic blocks (strides 2, 1, 2, 2 overall: 1/2, 1/2,
1/4, 1/8), then a top-down FPN that returns the coarse map (1/8, ``block_dims[2]`` channels) and
the fine map (1/2, ``block_dims[0]`` channels). Module and parameter names equal the official
checkpoint's (``backbone.layer2.0.downsample.0.weight``...).
"""

from __future__ import annotations

import contextlib
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loftr_core.config import BackboneConfig

__all__ = ["BasicBlock", "ResNetFPN"]


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1, without bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv_bn(x: Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, fold: bool) -> Tensor:
    """``bn(conv(x))``; with ``fold`` and ``bn`` in eval mode, as one convolution.

    Folding scales the kernel by ``weight / sqrt(running_var + eps)`` and turns the BN shift
    into the convolution's bias: one pass over the activation instead of two, float rounding
    only (the folded kernel is recomputed each call, so parameter updates are always seen).
    """
    if not fold or bn.training or bn.running_mean is None or bn.running_var is None:
        return bn(conv(x))
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    weight = conv.weight * scale.reshape(-1, 1, 1, 1)
    return F.conv2d(x, weight, shift, conv.stride, conv.padding, conv.dilation, conv.groups)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual shortcut.

    The shortcut is projected (``downsample``) only when ``stride != 1`` (the official layout): a
    1x1 stride-s convolution + BN, or with ``downsample="conv3x3"`` a 3x3 stride-s convolution + BN.
    """

    fold_bn: bool = False
    """Fold the BatchNorms into the convolutions in eval mode (:func:`conv_bn`)."""

    def __init__(self, in_planes: int, planes: int, stride: int, downsample: str) -> None:
        super().__init__()
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
        fold = self.fold_bn
        y = self.relu(conv_bn(x, self.conv1, self.bn1, fold))
        y = conv_bn(y, self.conv2, self.bn2, fold)
        if self.downsample is None:
            shortcut = x
        else:
            proj, norm = self.downsample.children()
            shortcut = conv_bn(x, cast(nn.Conv2d, proj), cast(nn.BatchNorm2d, norm), fold)
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
        config: the backbone section of :class:`~loftr_core.config.LoFTRConfig`.
    """

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        d0, d1, d2 = config.block_dims
        init = config.initial_dim
        self.channels_last: bool | str = config.channels_last
        self.fold_bn = config.fold_batchnorm
        self.fine_branch_dtype: torch.dtype = getattr(torch, config.fine_branch_dtype)
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
        for block in self.modules():
            if isinstance(block, BasicBlock):
                block.fold_bn = self.fold_bn

    @staticmethod
    def _make_layer(in_planes: int, planes: int, stride: int, downsample: str) -> nn.Sequential:
        return nn.Sequential(
            BasicBlock(in_planes, planes, stride, downsample),
            BasicBlock(planes, planes, 1, downsample),
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
            channels-last memory layout when ``config.channels_last`` is True, or "auto" on CPU.
        """
        # Intermediates are released as soon as they are used (``del``): at 1/2 resolution every
        # activation is large (196 x H/2 x W/2 floats), so the peak memory is a few of them.
        fold = self.fold_bn
        x0 = self.relu(conv_bn(x, self.conv1, self.bn1, fold))
        if self.channels_last is True or (self.channels_last == "auto" and x.device.type == "cpu"):
            # every later convolution follows its input's layout (the weights stay NCHW)
            x0 = x0.contiguous(memory_format=torch.channels_last)
        x1 = self.layer1(x0)  # 1/2
        del x0
        x2 = self.layer2(x1)  # 1/4
        x3 = self.layer3(x2)  # 1/8
        x3_out = self.layer3_outconv(x3)
        del x3
        # FPN: ``outconv2(lateral + up(top))``, the sum written into the lateral buffer (bitwise
        # equal to the out-of-place sum) and the steps of ``outconv2`` run one by one, so that each
        # input is freed once the next output exists (``nn.Sequential`` would keep its input).
        # Everything from here on feeds only the fine map: ``fine_branch_dtype`` applies.
        dtype = x3_out.dtype
        with self._fine_branch_precision(x3_out):
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
        """``outconv2``: conv3x3, BN, LeakyReLU, conv3x3 (BN folded when ``fold_bn``)."""
        conv_a, bn, act, conv_b = merge.children()
        y = act(conv_bn(y, cast(nn.Conv2d, conv_a), cast(nn.BatchNorm2d, bn), self.fold_bn))
        out: Tensor = conv_b(y)
        return out

    def _fine_branch_precision(self, x: Tensor) -> contextlib.AbstractContextManager[object]:
        """Autocast to ``fine_branch_dtype`` when it is lower than ``x``'s precision."""
        low = self.fine_branch_dtype
        if low == torch.float32 or x.dtype in (low, torch.float16, torch.bfloat16):
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=low)


MAX_BATCH_PIXELS = 2 * 640 * 480
"""Largest pixel count of ``image0`` + ``image1`` that :func:`run_backbone` runs as one batch."""


def run_backbone(
    backbone: nn.Module,
    image0: Tensor,
    image1: Tensor,
    max_batch_pixels: int = MAX_BATCH_PIXELS,
) -> tuple[Tensor, ...]:
    """Run the backbone on both images: one batched pass when their sizes agree (as the original).

    On CPU above ``max_batch_pixels`` (both images together) the images go one at a time (on a
    GPU the batch stays whole: there the split costs more speed than it saves memory): the results
    are bitwise the same (no operation mixes batch elements), the backbone's extra peak memory
    halves (a 1600x1200 pair: peak RSS of the backbone 2.7 -> 1.8 GB; 1024x768: 1.35 -> 0.9 GB)
    and it costs a few percent of speed.

    Returns:
        ``(coarse0, fine0, coarse1, fine1)``.
    """
    pixels = image0.numel() + image1.numel()
    small = pixels <= max_batch_pixels or image0.device.type != "cpu"
    if image0.shape[2:] == image1.shape[2:] and small:
        n = image0.shape[0]
        coarse, fine = backbone(torch.cat([image0, image1], dim=0))
        return coarse[:n], fine[:n], coarse[n:], fine[n:]
    coarse0, fine0 = backbone(image0)
    coarse1, fine1 = backbone(image1)
    return coarse0, fine0, coarse1, fine1
