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

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from loftr_attention import get_spec
from loftr_core._version import __version__
from loftr_core.api.image_io import to_gray
from loftr_core.api.optional import require
from loftr_core.errors import ConfigError
from loftr_core.execution import ExecutionOptions
from loftr_core.model import LoFTR
from loftr_core.model.coarse_matching import (
    CoarseMatches,
    dual_softmax_confidence,
    match_mask,
    sinkhorn_confidence,
)
from loftr_core.model.config import check_thr
from loftr_core.model.loftr import _validate

__all__ = [
    "CONFIDENCE_TOL",
    "EXPORTABLE_ATTENTION",
    "INPUTS",
    "KEYPOINT_TOL_PX",
    "OPSET",
    "OUTPUTS",
    "ROUNDING_CONFIDENCE",
    "ROUNDING_KEYPOINT_PX",
    "ExportCheck",
    "ExportMatcher",
    "check_export_size",
    "compare_with_onnxruntime",
    "export_input",
    "export_onnx",
    "exportable_attention",
    "reference_matches",
    "top_rows",
]

OPSET = 18
"""The ONNX opset written."""
INPUTS = ("image0", "image1")
"""The exported graph's inputs: ``(1, 1, H, W)`` float32 gray images in [0, 1]."""
OUTPUTS = ("keypoints0", "keypoints1", "confidence", "valid")
"""Its outputs: ``(K, 2)`` float32, ``(K, 2)`` float32, ``(K,)`` float32, ``(K,)`` bool."""
EXPORTABLE_ATTENTION = ("linear", "full")
"""Attention backends whose plain tensor formulas export (fused kernels do not)."""


def exportable_attention(name: str) -> str:
    """The backend to export a model built with ``name``: ``name`` itself if it exports, else
    ``"full"`` for any exact softmax backend (``sdpa``, ``flash``...: the same function).

    Raises:
        ConfigError: an approximate (non-exact) third-party backend, which has no exportable
            equivalent.
    """
    if name in EXPORTABLE_ATTENTION:
        return name
    if get_spec(name).exact:
        return "full"
    raise ConfigError(
        f"attention backend {name!r} does not export to ONNX and is not exact softmax attention, "
        f"so no exportable backend computes the same; use one of {list(EXPORTABLE_ATTENTION)}"
    )


def top_rows(score: Tensor, k: int) -> Tensor:
    """The indices of the ``k`` largest of ``score`` ``(L,)``, largest first, ties to the lower
    index, so PyTorch, onnxruntime and ``Matcher(max_matches=K)`` keep the same cells.

    In PyTorch a stable descending sort (``torch.topk`` on CPU promises no order among ties);
    in an ONNX export TopK, whose specification breaks ties to the lower index (the exporter
    has no stable sort).
    """
    if torch.onnx.is_in_onnx_export():
        return score.topk(k).indices
    return torch.sort(score, descending=True, stable=True).indices[:k]


class ExportMatcher(nn.Module):
    """``LoFTR`` with a fixed-size match selection (see the module doc).

    Args:
        model: the matcher. It is copied (CPU, float32, eval, the reference execution options:
            plain tensor operations), so the caller's model is left as it was.
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
                    f"{list(EXPORTABLE_ATTENTION)} (exportable_attention() names the one that "
                    "computes the same function, where one does)"
                )
        self.thr = model.config.match_coarse.thr if thr is None else check_thr(thr)
        copy = LoFTR(model.config, ExecutionOptions.reference())
        copy.load_state_dict({k: v.detach().cpu().float() for k, v in model.state_dict().items()})
        self.model = copy.eval()
        self.max_matches = max_matches

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
        else:  # with the inference prefilter, as CoarseMatching.forward
            conf, _ = sinkhorn_confidence(
                coarse.feat0,
                coarse.feat1,
                m.coarse_matching.bin_score,
                cfg.skh_iters,
                prefilter=cfg.skh_prefilter,
                execution=m.execution,
            )
        row_max, row_arg = conf.max(dim=2)
        valid = match_mask(row_max, row_arg, conf.amax(dim=1), self.thr, keep0, keep1)
        score = torch.where(valid, row_max, torch.full_like(row_max, -1.0))[0]
        length = score.shape[0]
        top = top_rows(score, min(self.max_matches, length))
        ok = valid[0, top]
        order = torch.argsort(torch.where(ok, top, top + length))  # valid first, by cell
        i_ids, ok = top[order], ok[order]
        j_ids = row_arg[0, i_ids]
        mconf = row_max[0, i_ids]
        matches = CoarseMatches(torch.zeros_like(i_ids), i_ids, j_ids, mconf)
        expec_f = m._fine(coarse, matches)
        kpts0, _, kpts1 = m._keypoints(inputs, matches, expec_f)
        mconf = torch.where(ok, mconf, torch.zeros_like(mconf))  # padding rows: confidence 0
        pad = self.max_matches - length  # fewer cells than K: padding rows, never valid
        if pad > 0:
            kpts0, kpts1 = (torch.cat([k, k.new_zeros(pad, 2)]) for k in (kpts0, kpts1))
            mconf = torch.cat([mconf, mconf.new_zeros(pad)])
            ok = torch.cat([ok, ok.new_zeros(pad)])
        return kpts0, kpts1, mconf, ok


_OWN_METADATA = frozenset(
    (
        "loftr.height",
        "loftr.width",
        "loftr.max_matches",
        "loftr.thr",
        "loftr.config",
        "loftr.version",
    )
)


def check_export_size(model: LoFTR, height: int, width: int) -> None:
    """ConfigError (one line) unless ``height x width`` can be exported for ``model``: a
    positive multiple of 8 px per side (the coarse stride) with cells left after border removal."""
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 8 or value % 8:
            raise ConfigError(
                f"{name}={value!r}; the export size must be a positive multiple of 8 px per side"
            )
    border = int(model.config.match_coarse.border_rm)
    if min(height, width) // 8 <= 2 * border:
        raise ConfigError(
            f"{width}x{height} px (W x H) leaves no coarse cell after removing {border} at each "
            "border; "
            f"export at least {8 * (2 * border + 1)} px per side"
        )


def export_onnx(
    model: LoFTR,
    path: str | Path,
    height: int,
    width: int,
    max_matches: int,
    thr: float | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model`` as ONNX for ``height x width`` images and ``max_matches`` matches.

    One self-contained file (weights inside; 46 MiB for the official models), opset
    :data:`OPSET`, checked with ``onnx.checker`` before it is moved into place. Its metadata
    (``onnxruntime``: ``session.get_modelmeta().custom_metadata_map``) records the size, ``K``,
    the threshold, the model config and ``metadata``.

    Raises:
        ConfigError: a bad size or ``K``, an attention backend that does not export, or a
            missing optional dependency (before the export starts).
    """
    check_export_size(model, height, width)
    extra = dict(metadata or {})
    for key, value in extra.items():
        if not isinstance(key, str) or not isinstance(value, str) or key in _OWN_METADATA:
            raise ConfigError(
                f"metadata {key!r}: {value!r}; give str keys and values, other than "
                f"{sorted(_OWN_METADATA)} (the export writes those)"
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
        "input_names": list(INPUTS),
        "output_names": list(OUTPUTS),
        "external_data": False,  # one file: a moved file keeps its weights
        "verbose": False,
    }
    try:
        with torch.no_grad(), _quiet_exporter():
            torch.onnx.export(wrapper, example, str(tmp), **kwargs)
        graph = onnx.load(str(tmp))
        info = {
            "loftr.height": str(height),
            "loftr.width": str(width),
            "loftr.max_matches": str(max_matches),
            "loftr.thr": repr(wrapper.thr),
            "loftr.config": json.dumps(model.config.to_dict(), sort_keys=True),
            "loftr.version": __version__,
            **extra,
        }
        onnx.helper.set_model_props(graph, info)
        onnx.save(graph, str(tmp))
        onnx.checker.check_model(str(tmp))
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's progress prints, its optimiser's log lines and its deprecation warnings are
    not the user's business (errors still show)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def export_input(
    image: Any, height: int, width: int, name: str = "image"
) -> tuple[np.ndarray, tuple[float, float]]:
    """An image as the exported model takes it, and the factors back to its pixels.

    The image (path, array or tensor, as :class:`~loftr_core.Matcher` accepts; colour is made
    gray) is resized to exactly ``width x height`` in one bilinear step, as the original's
    test-time resize does, and scaled to [0, 1].

    Returns:
        ``(1, 1, height, width)`` float32 and ``(sx, sy)``: multiply the model's keypoints by
        them for the original image's pixel coordinates.
    """
    gray = to_gray(image, name=name)
    h, w = gray.shape[:2]
    if (h, w) != (height, width):
        gray = cv2.resize(gray, (width, height), interpolation=cv2.INTER_LINEAR)
    array = gray.astype(np.float32) / 255.0 if gray.dtype == np.uint8 else gray.astype(np.float32)
    return np.ascontiguousarray(array[None, None]), (w / width, h / height)


@dataclass(frozen=True)
class ExportCheck:
    """onnxruntime's answer against PyTorch's (:func:`reference_matches`) on one pair.

    ``borderline`` counts the cells only one side kept whose confidence lies within
    :data:`CONFIDENCE_TOL` of the cut (the threshold, or the K-th confidence when K limits):
    float rounding may put those on either side. Any other difference makes ``same_cells``
    false. Keypoints and confidences are compared on the cells both kept.
    """

    valid_torch: int
    valid_onnx: int
    same_cells: bool
    keypoints1_max_px: float
    confidence_max: float
    borderline: int = 0

    @property
    def ok(self) -> bool:
        """The tight bar: the same cells, keypoints within 1e-3 px, confidence within 1e-4."""
        return (
            self.same_cells
            and self.keypoints1_max_px <= KEYPOINT_TOL_PX
            and self.confidence_max <= CONFIDENCE_TOL
        )

    @property
    def within_rounding(self) -> bool:
        """The same cells, with differences float32 rounding explains (see
        :data:`ROUNDING_KEYPOINT_PX`): below this, the export computes something else."""
        return (
            self.same_cells
            and self.keypoints1_max_px <= ROUNDING_KEYPOINT_PX
            and self.confidence_max <= ROUNDING_CONFIDENCE
        )

    def __str__(self) -> str:
        edge = f" ({self.borderline} at the threshold, kept by one side)" if self.borderline else ""
        return (
            f"{self.valid_onnx} valid matches (PyTorch {self.valid_torch}), "
            f"{'the same' if self.same_cells else 'different'} image-0 cells{edge}, keypoints1 "
            f"within {self.keypoints1_max_px:.2g} px, confidence within {self.confidence_max:.2g}"
        )


KEYPOINT_TOL_PX = 1e-3
CONFIDENCE_TOL = 1e-4
ROUNDING_KEYPOINT_PX = 2e-3
"""Keypoint differences up to this are float32 rounding, not a different computation: the
sub-pixel expectation of a heatmap split between two cells amplifies rounding. At 640x480
(official architecture, seeded weights) kornia's model differs from itself by up to 9.2e-4 px
when merely run channels-last, our default CPU path from our reference path by up to 8.9e-4 px
(confidences by up to 1.0e-4 between such paths), and onnxruntime on an AVX2 host reached
1.3e-3 px. Twice the reference's own spread, as the parity test of our default kernels allows."""
ROUNDING_CONFIDENCE = 2e-4
"""Confidence differences up to this are float32 rounding (see :data:`ROUNDING_KEYPOINT_PX`)."""


def reference_matches(
    model: LoFTR, image0: np.ndarray, image1: np.ndarray, thr: float, max_matches: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``LoFTR.forward``'s matches at ``thr`` with at most ``max_matches``, kept as
    ``Matcher(max_matches=K)`` keeps them (the most confident, ties to the earlier match, in the
    model's order): the answer an export must give. Keypoints ``(M, 2)``, ``(M, 2)``,
    confidence ``(M,)``."""
    with torch.no_grad():
        out = model(
            {"image0": torch.from_numpy(image0), "image1": torch.from_numpy(image1)}, thr=thr
        )
    k0, k1, conf = (
        out[k].float().cpu().numpy() for k in ("keypoints0", "keypoints1", "confidence")
    )
    if len(conf) > max_matches:
        idx = np.sort(np.argsort(-conf, kind="stable")[:max_matches])
        k0, k1, conf = k0[idx], k1[idx], conf[idx]
    return k0, k1, conf


def compare_with_onnxruntime(
    session: Any,
    model: LoFTR,
    image0: np.ndarray,
    image1: np.ndarray,
    thr: float,
    max_matches: int,
) -> ExportCheck:
    """Run ``session`` (an ``onnxruntime.InferenceSession`` of an export of ``model``) on the
    ``(1, 1, H, W)`` float32 images and compare its valid rows with :func:`reference_matches`
    (see :class:`ExportCheck`)."""
    outputs = session.run(list(OUTPUTS), {"image0": image0, "image1": image1})
    k0, k1, conf, valid = (np.asarray(o) for o in outputs)
    n_onnx = int(valid.sum())
    k0, k1, conf = k0[:n_onnx], k1[:n_onnx], conf[:n_onnx]
    r0, r1, rconf = reference_matches(model, image0, image1, thr, max_matches)
    mine = {tuple(p): i for i, p in enumerate(k0.tolist())}
    theirs = {tuple(p): i for i, p in enumerate(r0.tolist())}
    both = [(mine[c], theirs[c]) for c in theirs if c in mine]
    cut = thr if len(rconf) < max_matches else max(thr, float(rconf.min(initial=thr)))
    only = [conf[i] for c, i in mine.items() if c not in theirs]
    only += [rconf[i] for c, i in theirs.items() if c not in mine]
    borderline = sum(abs(float(c) - cut) <= CONFIDENCE_TOL for c in only)
    a, b = (np.array([p[k] for p in both], dtype=np.int64) for k in (0, 1))
    return ExportCheck(
        valid_torch=len(rconf),
        valid_onnx=n_onnx,
        same_cells=bool(valid[:n_onnx].all()) and borderline == len(only),
        keypoints1_max_px=float(np.abs(k1[a] - r1[b]).max(initial=0.0)),
        confidence_max=float(np.abs(conf[a] - rconf[b]).max(initial=0.0)),
        borderline=borderline,
    )
