"""oneDNN matrix products for the CPU, with the original's parameters.

On x86 CPUs torch's ``F.linear`` / ``torch.mm`` call the BLAS (MKL in the official wheels), which
on some processors (AMD Zen among them) runs far below the machine's peak, while oneDNN's
convolutions run near it (the README's benchmark table gives the measured rates).
:func:`onednn_linear` computes ``F.linear`` as a 1x1 convolution over a channels-last view of the
same memory: the same sums in another order, so results move by float rounding only (the same
matches in the kornia parity cases). :class:`~loftr_core.execution.Execution` decides where it
runs (``ExecutionOptions.onednn``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["onednn_linear", "use_onednn"]


def use_onednn(*tensors: Tensor, compiled: bool = False) -> bool:
    """Whether :func:`onednn_linear` applies: CPU float32 tensors, no CPU autocast.

    Under ``torch.compile`` only where ``compiled`` is set: shapes there must be static, since
    the convolution's shape guards would recompile a dynamic graph (the fine stage, whose batch
    is the number of matches) for every new size.
    """
    if torch.compiler.is_compiling() and not compiled:
        return False
    return not torch.is_autocast_enabled("cpu") and all(
        t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors
    )


def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)`` as a oneDNN 1x1 convolution (CPU).

    Args:
        x: ``(..., K)``.
        weight: ``(M, K)``; bias: optional ``(M,)``.

    Returns:
        ``(..., M)``, contiguous.
    """
    k = x.shape[-1]
    rows = x.reshape(-1, k).contiguous()
    n = rows.shape[0]
    # (n, K) row-major memory is a (1, K, n, 1) image in channels-last layout: no copy
    image = rows.view(1, n, 1, k).permute(0, 3, 1, 2)
    out = F.conv2d(image, weight.reshape(weight.shape[0], k, 1, 1), bias)  # (1, M, n, 1)
    return out.permute(0, 2, 3, 1).reshape(*x.shape[:-1], weight.shape[0])
