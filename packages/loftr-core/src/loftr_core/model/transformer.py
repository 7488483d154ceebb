"""The local feature transformer: interleaved self- and cross-attention layers (spec §1.4).

Attention itself comes from ``loftr_attention`` backends chosen by name (``"linear"`` reproduces
the original bit-for-bit). Parameter names equal the official checkpoint's
(``layers.3.q_proj.weight``, ``layers.3.mlp.0.weight``...).

The official encoder layer ("norm on the branch")::

    m = norm1(merge(attention(q_proj(x), k_proj(src), v_proj(src))))
    return x + norm2(mlp([x, m]))

Design alternatives (off in the official presets): ``norm_first`` (pre-LayerNorm)::

    m = merge(attention(q_proj(norm1(x)), k_proj(norm1(src)), v_proj(norm1(src))))
    return x + m + mlp(norm2(fuse(x, m)))

and ``message_fusion="add"`` (``fuse(x, m) = x + m`` instead of ``[x, m]``, so ``mlp.0`` takes
``d`` instead of ``2d`` inputs).
"""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import Tensor, nn

from loftr_attention import get_backend
from loftr_core.execution import Execution
from loftr_core.model.config import TransformerConfig

__all__ = ["LoFTREncoderLayer", "LocalFeatureTransformer"]


class LoFTREncoderLayer(nn.Module):
    """One attention + feed-forward layer; self- or cross-attention depends on what is passed.

    Args:
        d_model: token width C.
        nhead: heads H (C = H * D).
        attention: ``loftr_attention`` backend name.
        norm_first: pre-LayerNorm variant.
        message_fusion: ``"concat"`` or ``"add"``.
        execution: how the linear maps run (:meth:`loftr_core.execution.Execution.linear`).
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        attention: str = "linear",
        norm_first: bool = False,
        message_fusion: str = "concat",
        execution: Execution | None = None,
    ) -> None:
        super().__init__()
        self.execution = Execution() if execution is None else execution
        self.nhead = nhead
        self.dim = d_model // nhead
        self.norm_first = norm_first
        self.concat = message_fusion == "concat"
        fused = 2 * d_model if self.concat else d_model
        # registration order = state-dict order of the official checkpoints
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.attention = get_backend(attention)
        self.merge = nn.Linear(d_model, d_model, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(fused, 2 * d_model, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(2 * d_model, d_model, bias=False),
        )
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(fused if norm_first else d_model)

    def _message(
        self, x: Tensor, source: Tensor, x_mask: Tensor | None, source_mask: Tensor | None
    ) -> Tensor:
        n, length, _ = x.shape
        s = source.shape[1]
        linear = self.execution.linear
        # (N, L, C) -> (N, L, H, D) -> (N, H, L, D): views, as the original's layout
        q = linear(self.q_proj, x).view(n, length, self.nhead, self.dim).transpose(1, 2)
        k = linear(self.k_proj, source).view(n, s, self.nhead, self.dim).transpose(1, 2)
        v = linear(self.v_proj, source).view(n, s, self.nhead, self.dim).transpose(1, 2)
        message = self.attention(q, k, v, q_mask=x_mask, kv_mask=source_mask)  # (N, H, L, D)
        return linear(self.merge, message.transpose(1, 2).reshape(n, length, self.nhead * self.dim))

    def _mlp(self, x: Tensor) -> Tensor:
        """``mlp``: Linear, ReLU, Linear."""
        first, relu, second = self.mlp.children()
        linear = self.execution.linear
        return linear(cast(nn.Linear, second), relu(linear(cast(nn.Linear, first), x)))

    def _fuse(self, x: Tensor, message: Tensor) -> Tensor:
        return torch.cat([x, message], dim=2) if self.concat else x + message

    def forward(
        self,
        x: Tensor,
        source: Tensor,
        x_mask: Tensor | None = None,
        source_mask: Tensor | None = None,
    ) -> Tensor:
        """Update ``x`` with a message from ``source``.

        Args:
            x: ``(N, L, C)`` queries.
            source: ``(N, S, C)`` keys/values (``x`` itself for self-attention).
            x_mask: optional ``(N, L)`` bool, True = valid.
            source_mask: optional ``(N, S)`` bool, True = valid.

        Returns:
            ``(N, L, C)``, same dtype as ``x``.
        """
        if self.norm_first:
            xn = self.norm1(x)
            sn = xn if source is x else self.norm1(source)
            message = self._message(xn, sn, x_mask, source_mask)
            return x + message + self._mlp(self.norm2(self._fuse(x, message)))
        message = self.norm1(self._message(x, source, x_mask, source_mask))
        return x + self.norm2(self._mlp(self._fuse(x, message)))


class LocalFeatureTransformer(nn.Module):
    """A stack of encoder layers applied to two token sets (spec §1.4).

    ``"self"`` layers update each image from itself; ``"cross"`` layers update image 0 from image 1,
    then image 1 from the *updated* image 0 (sequential, as the original). Both images share the
    layer weights.

    Args:
        config: the coarse or fine transformer section of the model config.
        execution: how its linear maps run (shared by every layer).
    """

    def __init__(self, config: TransformerConfig, execution: Execution | None = None) -> None:
        super().__init__()
        self.d_model = config.d_model
        self.layer_names = tuple(config.layer_names)
        layer = LoFTREncoderLayer(
            config.d_model,
            config.nhead,
            config.attention,
            config.norm_first,
            config.message_fusion,
        )
        # copies of one layer (the original's construction, so seeded weights match it)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in self.layer_names)
        ex = Execution() if execution is None else execution
        for each in self.layers:
            cast(LoFTREncoderLayer, each).execution = ex
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The original initialisation: xavier-uniform on every parameter with dim > 1."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(
        self,
        feat0: Tensor,
        feat1: Tensor,
        mask0: Tensor | None = None,
        mask1: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Transform both token sets.

        Args:
            feat0: ``(N, L, C)``; feat1: ``(N, S, C)``.
            mask0: optional ``(N, L)`` bool; mask1: optional ``(N, S)`` bool (True = valid).

        Returns:
            The updated ``(feat0, feat1)``.
        """
        for layer, name in zip(self.layers, self.layer_names, strict=True):
            if name == "self":
                feat0 = layer(feat0, feat0, mask0, mask0)
                feat1 = layer(feat1, feat1, mask1, mask1)
            else:
                feat0 = layer(feat0, feat1, mask0, mask1)
                feat1 = layer(feat1, feat0, mask1, mask0)
        return feat0, feat1
