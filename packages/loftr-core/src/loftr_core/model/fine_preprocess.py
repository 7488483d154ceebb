"""Fine preprocessing: crop a window of the fine map around every coarse match and merge the
coarse transformer feature into it (spec §1.6).

The window of coarse cell ``(r, c)`` is the ``W x W`` patch of the 1/2-resolution map centred on
fine pixel ``(4r, 4c)`` with zero padding ``W // 2``: exactly window ``r * Wc + c`` of
``F.unfold(fine, W, stride=4, padding=W // 2)``, with positions in row-major order. Only the
matched windows are gathered (from one channels-last copy of the padded map per image) instead of
unfolding the whole map, which would be ``W * W`` times larger than the map itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FinePreprocess", "gather_windows"]


def gather_windows(
    fine: Tensor, b_ids: Tensor, cell_ids: Tensor, window: int, stride: int
) -> Tensor:
    """The fine windows of the given coarse cells.

    Args:
        fine: ``(N, C, Hf, Wf)`` fine feature map.
        b_ids: ``(M,)`` int64 batch indices; cell_ids: ``(M,)`` int64 coarse cell indices
            (``row * Wc + col``).
        window: odd window side W.
        stride: fine pixels per coarse cell (4).

    Returns:
        ``(M, W*W, C)``, window positions row-major.
    """
    pad = window // 2
    c, wf = fine.shape[1], fine.shape[3]
    padded = F.pad(fine, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # (N, Hf+2p, Wf+2p, C) view
    wc = (wf + 2 * pad - window) // stride + 1  # coarse columns (= unfold's window columns)
    offsets = torch.arange(window, device=fine.device)
    rows = (cell_ids // wc * stride)[:, None] + offsets  # (M, W) top-left aligned in padded map
    cols = (cell_ids % wc * stride)[:, None] + offsets
    patches = padded[b_ids[:, None, None], rows[:, :, None], cols[:, None, :]]  # (M, W, W, C)
    return patches.reshape(-1, window * window, c)


class FinePreprocess(nn.Module):
    """Gather fine windows of the matches, optionally merged with their coarse features.

    Args:
        d_model_c: coarse feature width (256).
        d_model_f: fine feature width (128).
        window: fine window side W (5).
        concat_coarse_feat: merge ``down_proj(coarse)`` into every window position through
            ``merge_feat`` (official: True).
        stride: fine pixels per coarse cell (8 / 2 = 4).
    """

    def __init__(
        self,
        d_model_c: int,
        d_model_f: int,
        window: int,
        concat_coarse_feat: bool,
        stride: int = 4,
    ) -> None:
        super().__init__()
        self.window = window
        self.stride = stride
        self.d_model_f = d_model_f
        self.concat_coarse_feat = concat_coarse_feat
        if concat_coarse_feat:
            self.down_proj = nn.Linear(d_model_c, d_model_f, bias=True)
            self.merge_feat = nn.Linear(2 * d_model_f, d_model_f, bias=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The original initialisation: kaiming-normal (fan_out, relu) weights, default biases."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")

    def forward(
        self,
        fine0: Tensor,
        fine1: Tensor,
        coarse0: Tensor,
        coarse1: Tensor,
        b_ids: Tensor,
        i_ids: Tensor,
        j_ids: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Window features of image 0 around ``i_ids`` and of image 1 around ``j_ids``.

        Args:
            fine0, fine1: ``(N, Cf, Hf, Wf)`` fine maps (sizes may differ between the images).
            coarse0, coarse1: ``(N, L, Cc)`` / ``(N, S, Cc)`` coarse transformer outputs.
            b_ids, i_ids, j_ids: ``(M,)`` int64 matches.

        Returns:
            ``(M, W*W, Cf)`` for image 0 and image 1 (``M = 0`` gives empty tensors).
        """
        ww = self.window * self.window
        if b_ids.numel() == 0:
            empty = fine0.new_empty(0, ww, self.d_model_f)
            return empty, empty.clone()
        win0 = gather_windows(fine0, b_ids, i_ids, self.window, self.stride)
        win1 = gather_windows(fine1, b_ids, j_ids, self.window, self.stride)
        if not self.concat_coarse_feat:
            return win0, win1
        m = b_ids.shape[0]
        coarse = self.down_proj(torch.cat([coarse0[b_ids, i_ids], coarse1[b_ids, j_ids]], dim=0))
        windows = torch.cat([win0, win1], dim=0)  # (2M, WW, Cf)
        merged = self.merge_feat(
            torch.cat([windows, coarse[:, None, :].expand(-1, ww, -1)], dim=-1)
        )
        return merged[:m], merged[m:]
