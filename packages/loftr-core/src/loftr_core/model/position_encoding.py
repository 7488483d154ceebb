"""2-D sinusoidal positional encodings of the coarse feature map (spec §1.3).

Computed for the requested ``(Hc, Wc)`` on the fly (no 256x256 table, so any image size works; no
buffer, so nothing enters the state dict). Values equal the original table wherever it exists:
positions are 1-based cell indices, the arithmetic is float32 as in the original, and the result is
cast to the feature dtype only at the end.

Two encodings:

* ``"sine"`` — LoFTR's. Channel ``c`` uses frequency ``div[c // 4]`` and
  ``[sin(x·div), cos(x·div), sin(y·div), cos(y·div)][c % 4]``. With ``temp_bug_fix=False``
  the frequencies are ``exp(-2k)`` (the operator-precedence bug all original checkpoints but
  ``indoor_ds_new`` were trained with); with ``True`` they are ``10000^(-2k/(d/2))``.
* ``"detr"`` — DETR-style (design alternative): positions normalised to ``(0, 2π]`` by the map size,
  temperature 10000, fixed frequencies; the first half of the channels encode y, the second x,
  each as interleaved ``sin, cos`` pairs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["PositionEncodingSine", "detr_encoding", "loftr_sine_encoding"]


def _frequencies(d_model: int, temp_bug_fix: bool, device: torch.device) -> Tensor:
    steps = torch.arange(0, d_model // 2, 2, device=device, dtype=torch.float32)  # 0, 2, 4, ...
    if temp_bug_fix:
        factor = -math.log(10000.0) / (d_model // 2)
    else:
        # the original's "(-log(10000) / d) // 2", i.e. floor(-0.036 / 2) = -1.0
        factor = (-math.log(10000.0) / d_model) // 2
    return torch.exp(steps * factor)  # (d/4,)


def loftr_sine_encoding(
    d_model: int,
    height: int,
    width: int,
    temp_bug_fix: bool,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """LoFTR's 2-D sine encoding of a ``height x width`` grid.

    Args:
        d_model: channels, a multiple of 4.
        height, width: coarse map size (any positive ints).
        temp_bug_fix: False for the original (buggy) frequencies, True for the fixed ones.
        device, dtype: of the result (computed in float32, then cast).

    Returns:
        ``(1, d_model, height, width)`` tensor.
    """
    dev = torch.device("cpu") if device is None else device
    div = _frequencies(d_model, temp_bug_fix, dev)[:, None]  # (d/4, 1)
    xs = torch.arange(1, width + 1, device=dev, dtype=torch.float32)[None, :] * div  # (d/4, W)
    ys = torch.arange(1, height + 1, device=dev, dtype=torch.float32)[None, :] * div  # (d/4, H)
    k = div.shape[0]
    pe = torch.empty(k, 4, height, width, device=dev, dtype=torch.float32)
    pe[:, 0] = torch.sin(xs)[:, None, :]
    pe[:, 1] = torch.cos(xs)[:, None, :]
    pe[:, 2] = torch.sin(ys)[:, :, None]
    pe[:, 3] = torch.cos(ys)[:, :, None]
    return pe.reshape(1, 4 * k, height, width).to(dtype)


def detr_encoding(
    d_model: int,
    height: int,
    width: int,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    temperature: float = 10000.0,
) -> Tensor:
    """DETR-style sine encoding with positions normalised to ``(0, 2π]``.

    Returns:
        ``(1, d_model, height, width)``: channels ``[0, d/2)`` encode y, ``[d/2, d)`` encode x.
    """
    dev = torch.device("cpu") if device is None else device
    half = d_model // 2
    scale, eps = 2.0 * math.pi, 1e-6
    y = torch.arange(1, height + 1, device=dev, dtype=torch.float32) / (height + eps) * scale
    x = torch.arange(1, width + 1, device=dev, dtype=torch.float32) / (width + eps) * scale
    idx = torch.arange(half, device=dev, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / half)  # (d/2,)
    py = y[None, :] / dim_t[:, None]  # (d/2, H)
    px = x[None, :] / dim_t[:, None]  # (d/2, W)
    py = torch.stack([py[0::2].sin(), py[1::2].cos()], dim=1).reshape(half, height)
    px = torch.stack([px[0::2].sin(), px[1::2].cos()], dim=1).reshape(half, width)
    pe = torch.cat(
        [py[:, :, None].expand(half, height, width), px[:, None, :].expand(half, height, width)]
    )
    return pe.unsqueeze(0).to(dtype)


class PositionEncodingSine(nn.Module):
    """Adds a 2-D positional encoding to a ``(N, C, H, W)`` feature map (no parameters/buffers).

    Args:
        d_model: channels C.
        temp_bug_fix: see :func:`loftr_sine_encoding` (ignored for ``kind="detr"``).
        kind: ``"sine"`` (LoFTR) or ``"detr"``.
    """

    def __init__(self, d_model: int, temp_bug_fix: bool = True, kind: str = "sine") -> None:
        super().__init__()
        self.d_model = d_model
        self.temp_bug_fix = temp_bug_fix
        self.kind = kind

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, kind={self.kind!r}, temp_bug_fix={self.temp_bug_fix}"

    def encoding(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """The ``(1, C, height, width)`` encoding in ``dtype`` on ``device``."""
        if self.kind == "detr":
            return detr_encoding(self.d_model, height, width, device, dtype)
        return loftr_sine_encoding(self.d_model, height, width, self.temp_bug_fix, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        """``x + encoding``; ``x`` is ``(N, C, H, W)``, returned with the same shape and dtype."""
        return x + self.encoding(x.shape[2], x.shape[3], x.device, x.dtype)
