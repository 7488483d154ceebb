"""The execution layer: every device- and kernel-specific decision of the model, in one place.

The model's stages (:mod:`loftr_core.model`) are written as the paper's formulas; wherever the
computation depends on the device, the kernel route, the memory layout, a chunk size or a
sub-stage precision, they call an :class:`Execution`, built from :class:`ExecutionOptions`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loftr_core.execution.kernels import onednn_linear, use_onednn
from loftr_core.execution.options import ExecutionOptions

__all__ = ["Execution"]

CPU_COARSE_CHUNK = 1 << 25
"""Coarse scores held at once on CPU (128 MiB of float32: a 640x480 pair in one chunk)."""
GPU_COARSE_CHUNK = 1 << 28
"""On CUDA memory is plentiful and each extra pass costs more than it saves (1 GiB)."""
CPU_CANDIDATE_ROWS = 256
"""Rows per chunk of the one-pass coarse evaluation on CPU (measured: 128-512 equally fast)."""
CPU_FINE_CHUNK = 1024
GPU_FINE_CHUNK = 8192
CPU_BACKBONE_BATCH_PIXELS = 2 * 640 * 480


def _is_cpu(x: Tensor) -> bool:
    return x.device.type == "cpu"


class Execution:
    """How the stages run, from frozen :class:`ExecutionOptions` (shared by every stage).

    Args:
        options: the execution options (default: ``ExecutionOptions()``).
        dynamic_shapes: the stage is compiled with dynamic shapes (the fine transformer, whose
            batch is the number of matches): products stay plain inside its graph, since the
            oneDNN route's shape guards would recompile it for every new size.
    """

    def __init__(self, options: ExecutionOptions | None = None, dynamic_shapes: bool = False):
        self.options = ExecutionOptions() if options is None else options
        self.dynamic_shapes = dynamic_shapes

    def __repr__(self) -> str:
        return f"Execution({self.options}, dynamic_shapes={self.dynamic_shapes})"

    # ---------------------------------------------------------------------------------- backbone
    def channels_last_on(self, device: torch.device) -> bool:
        """Whether convolutions run channels-last (NHWC) on ``device``.

        Training should then hold the convolution weights channels-last too
        (``model.to(memory_format=torch.channels_last)`` before wrapping it in DDP): their
        gradients follow the activations' layout, and DDP's buckets follow the parameters'.
        """
        setting = self.options.channels_last
        return setting is True or (setting == "auto" and device.type == "cpu")

    def conv_layout(self, x: Tensor) -> Tensor:
        """``x`` in the memory layout later convolutions should run in (they follow their input)."""
        if self.channels_last_on(x.device):
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def conv_bn(self, x: Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> Tensor:
        """``bn(conv(x))``; with ``fold_batchnorm`` and ``bn`` in eval mode, as one convolution.

        Folding scales the kernel by ``weight / sqrt(running_var + eps)`` and turns the BN shift
        into the convolution's bias (recomputed each call, so parameter updates are always seen).
        """
        if (
            not self.options.fold_batchnorm
            or bn.training
            or bn.running_mean is None
            or bn.running_var is None
        ):
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

    def fine_branch(self, x: Tensor) -> contextlib.AbstractContextManager[Any]:
        """Autocast for the FPN top-down path when ``fine_branch_dtype`` is below ``x``'s."""
        low = self.options.fine_branch_dtype
        if x.dtype in (torch.float16, torch.bfloat16):  # already low precision: as it comes
            return contextlib.nullcontext()
        return self._autocast(low, x)

    def backbone_pair(
        self, backbone: nn.Module, image0: Tensor, image1: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(coarse0, fine0, coarse1, fine1)``: one batched pass when sizes agree and it fits.

        Splitting gives bitwise the same maps (no operation mixes batch elements).
        """
        limit = self.backbone_batch_limit(image0.device)
        fits = limit is None or image0.numel() + image1.numel() <= limit
        if image0.shape[2:] == image1.shape[2:] and fits:
            n = image0.shape[0]
            coarse, fine = backbone(torch.cat([image0, image1], dim=0))
            return coarse[:n], fine[:n], coarse[n:], fine[n:]
        coarse0, fine0 = backbone(image0)
        coarse1, fine1 = backbone(image1)
        return coarse0, fine0, coarse1, fine1

    def backbone_batch_limit(self, device: torch.device) -> int | None:
        """Pixels of both images up to which they share one backbone pass (None: any size)."""
        limit = self.options.backbone_batch_pixels
        if limit is None and device.type == "cpu":
            return CPU_BACKBONE_BATCH_PIXELS
        return limit

    # ------------------------------------------------------------------------------ transformers
    def linear(self, layer: nn.Linear, x: Tensor) -> Tensor:
        """``layer(x)``, through oneDNN on CPU float32 when ``onednn`` is on."""
        if (
            self.options.onednn
            and x.dim() >= 2
            and use_onednn(x, layer.weight, compiled=not self.dynamic_shapes)
        ):
            return onednn_linear(x, layer.weight, layer.bias)
        return F.linear(x, layer.weight, layer.bias)

    def transformer(
        self,
        stage: str,
        module: nn.Module,
        feat0: Tensor,
        feat1: Tensor,
        mask0: Tensor | None = None,
        mask1: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``module(feat0, feat1, mask0, mask1)`` in the ``"coarse"`` / ``"fine"`` stage's precision.

        With ``coarse_dtype`` / ``fine_dtype`` below the input's precision the stack runs under
        autocast and its outputs are cast back to the input dtype; else it runs as called.
        """
        name = self.options.coarse_dtype if stage == "coarse" else self.options.fine_dtype
        context = self._autocast(name, feat0)
        if isinstance(context, contextlib.nullcontext):
            out: tuple[Tensor, Tensor] = module(feat0, feat1, mask0, mask1)
            return out
        dtype = feat0.dtype
        with context:
            out0, out1 = module(feat0, feat1, mask0, mask1)
        return out0.to(dtype), out1.to(dtype)

    @staticmethod
    def _autocast(name: str, x: Tensor) -> contextlib.AbstractContextManager[Any]:
        """Autocast to dtype ``name`` unless it is ``inherit``/``float32`` or ``x`` has it."""
        if name in ("inherit", "float32") or x.dtype == getattr(torch, name):
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=getattr(torch, name))

    # --------------------------------------------------------------------------- coarse matching
    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        """``a @ b^T`` for ``(N, l, C)`` / ``(N, S, C)``, as float32 (or float64): ``(N, l, S)``.

        Through oneDNN (one 1x1 convolution per batch element) on CPU float32 when ``onednn`` is
        on and no gradient is needed; else ``torch.matmul``.
        """
        if self.options.onednn and not torch.is_grad_enabled() and use_onednn(a, b):
            if a.shape[0] == 1:
                return onednn_linear(a[0], b[0])[None]
            return torch.stack([onednn_linear(a[i], b[i]) for i in range(a.shape[0])])
        sim = torch.matmul(a, b.transpose(1, 2))
        return sim.to(torch.promote_types(sim.dtype, torch.float32))

    @staticmethod
    def softmax(x: Tensor, dim: int) -> Tensor:
        """``F.softmax(x, dim)``, fast on every device.

        On CUDA a softmax over a non-last dimension runs PyTorch's slow "spatial" kernel; the
        same softmax over the last dimension of the transposed tensor is the regular one. On CPU
        the direct call (bitwise the original's).
        """
        last = x.dim() - 1
        if _is_cpu(x) or dim in (-1, last):
            return F.softmax(x, dim=dim)
        return F.softmax(x.transpose(dim, last), dim=last).transpose(dim, last)

    def coarse_chunk_elements(self, device: torch.device) -> int:
        """Scores of the coarse matrix held at once in dual-softmax inference."""
        value = self.options.coarse_chunk_elements
        if value is not None:
            return value
        return GPU_COARSE_CHUNK if device.type == "cuda" else CPU_COARSE_CHUNK

    def coarse_candidate_rows(self, device: torch.device, n: int, s: int) -> int:
        """Rows per chunk of the one-pass thresholded evaluation: within the chunk budget and,
        on CPU, at most :data:`CPU_CANDIDATE_ROWS` (chunks stay in cache)."""
        rows = max(1, self.coarse_chunk_elements(device) // max(1, n * s))
        return min(rows, CPU_CANDIDATE_ROWS) if device.type == "cpu" else rows

    # ------------------------------------------------------------------------------- fine stage
    def fine_chunk_matches(self, device: torch.device) -> int:
        """Matches per pass through the fine stage."""
        value = self.options.fine_chunk_matches
        if value is not None:
            return value
        return CPU_FINE_CHUNK if device.type == "cpu" else GPU_FINE_CHUNK
