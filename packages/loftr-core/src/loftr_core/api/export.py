"""ONNX export of the whole matcher (backbone to fine refinement) at a fixed size and match count.

LoFTR's number of matches depends on the data (threshold and mutual nearest neighbours), which
ONNX runtimes handle badly. :class:`ExportMatcher` keeps the model's computation and replaces
only the final selection by a fixed-size one: the model's match test (confidence above ``thr``,
mutual row/column maximum, off the border) marks each image-0 cell, the ``K`` most confident
marked cells are kept (the same matches as :meth:`LoFTR.forward` whenever it finds at most
``K``; beyond that the ``K`` most confident, as ``Matcher(max_matches=K)``), valid ones first in
the model's order (by image-0 cell), and the fine stage refines all ``K``.

Outputs: ``keypoints0`` / ``keypoints1`` ``(K, 2)`` float32 in the exported image's pixels,
``confidence`` ``(K,)`` and ``valid`` ``(K,)`` bool (rows past the valid ones are padding).
Inputs: ``image0`` / ``image1`` ``(1, 1, H, W)`` float32 in [0, 1], the size given at export.
Needs ``pip install 'loftr-core[onnx]'`` (onnx, onnxscript; onnxruntime to run it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from loftr_core.api.optional import require
from loftr_core.errors import ConfigError
from loftr_core.execution import ExecutionOptions
from loftr_core.model import LoFTR
from loftr_core.model.coarse_matching import (
    CoarseMatches,
    dual_softmax_confidence,
    sinkhorn_confidence,
)
from loftr_core.model.config import check_thr
from loftr_core.model.loftr import _validate

__all__ = ["EXPORTABLE_ATTENTION", "OPSET", "ExportMatcher", "export_onnx"]

OPSET = 18
"""The ONNX opset written."""
EXPORTABLE_ATTENTION = ("linear", "full")
"""Attention backends whose plain tensor formulas export (fused kernels do not)."""


class ExportMatcher(nn.Module):
    """``LoFTR`` with a fixed-size match selection (see the module doc).

    Args:
        model: the matcher; the reference execution options (plain tensor operations) are
            applied to it (``model.set_options``), as ``Matcher(options=...)`` does.
        max_matches: ``K``, at least 1.
        thr: coarse threshold (default the model's ``match_coarse.thr``).
    """

    def __init__(self, model: LoFTR, max_matches: int, thr: float | None = None) -> None:
        super().__init__()
        if isinstance(max_matches, bool) or not isinstance(max_matches, int) or max_matches < 1:
            raise ConfigError(f"max_matches={max_matches!r}; it must be an int >= 1 (K)")
        for stage in (model.config.coarse, model.config.fine):
            if stage.attention not in EXPORTABLE_ATTENTION:
                raise ConfigError(
                    f"attention backend {stage.attention!r} does not export to ONNX; use one of "
                    f"{list(EXPORTABLE_ATTENTION)} (the same weights run with any backend)"
                )
        model.set_options(ExecutionOptions.reference())
        self.model = model.eval()
        self.max_matches = max_matches
        self.thr = model.config.match_coarse.thr if thr is None else check_thr(thr)

    def forward(self, image0: Tensor, image1: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(1, 1, H, W)`` images -> keypoints0, keypoints1 ``(K, 2)``, confidence, valid."""
        m = self.model
        inputs = _validate({"image0": image0, "image1": image1})
        coarse = m._coarse(inputs, None)
        keep0, keep1 = m._keep(inputs, image0.device)
        cfg = m.config.match_coarse
        if cfg.match_type == "dual_softmax":
            conf = dual_softmax_confidence(
                coarse.feat0, coarse.feat1, cfg.dsmax_temperature, execution=m.execution
            )
        else:
            conf, _ = sinkhorn_confidence(
                coarse.feat0,
                coarse.feat1,
                m.coarse_matching.bin_score,
                cfg.skh_iters,
                prefilter=cfg.skh_prefilter,
                execution=m.execution,
            )
        # the model's match test per image-0 cell (select_matches), as a mask
        row_max, row_arg = conf.max(dim=2)
        col_max = conf.amax(dim=1)
        mutual = torch.gather(col_max, 1, row_arg) == row_max
        valid = (row_max > self.thr) & mutual & keep0 & torch.gather(keep1, 1, row_arg)
        score = torch.where(valid, row_max, torch.full_like(row_max, -1.0))[0]
        length = score.shape[0]
        _, top = score.topk(min(self.max_matches, length))
        ok = valid[0, top]
        order = torch.argsort(torch.where(ok, top, top + length))  # valid first, by cell
        i_ids, ok = top[order], ok[order]
        j_ids = row_arg[0, i_ids]
        mconf = row_max[0, i_ids]
        matches = CoarseMatches(torch.zeros_like(i_ids), i_ids, j_ids, mconf)
        expec_f = m._fine(coarse, matches)
        kpts0, _, kpts1 = m._keypoints(inputs, matches, expec_f)
        return kpts0, kpts1, mconf, ok


def export_onnx(
    model: LoFTR,
    path: str | Path,
    height: int,
    width: int,
    max_matches: int,
    thr: float | None = None,
) -> Path:
    """Write ``model`` as ONNX for ``height x width`` images and ``max_matches`` matches.

    The size must be a multiple of 8 per side (the coarse stride) and leave cells to match after
    border removal. The graph is checked with ``onnx.checker`` before it is moved into place.
    """
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 8 or value % 8:
            raise ConfigError(
                f"{name}={value!r}; the export size must be a positive multiple of 8 px per side"
            )
    border = int(model.config.match_coarse.border_rm)
    if min(height, width) // 8 <= 2 * border:
        raise ConfigError(
            f"{height}x{width} px leaves no coarse cell after removing {border} at each border; "
            f"export at least {8 * (2 * border + 1)} px per side"
        )
    wrapper = ExportMatcher(model, max_matches, thr)
    onnx = require("onnx", "onnx")
    require("onnxscript", "onnx")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    example = (torch.rand(1, 1, height, width), torch.rand(1, 1, height, width))
    kwargs: dict[str, Any] = {
        "dynamo": True,
        "opset_version": OPSET,
        "input_names": ["image0", "image1"],
        "output_names": ["keypoints0", "keypoints1", "confidence", "valid"],
    }
    with torch.no_grad():
        torch.onnx.export(wrapper, example, str(tmp), **kwargs)
    onnx.checker.check_model(str(tmp))
    tmp.replace(out)
    return out
