"""``loftr-export``: the whole matcher as one ONNX file, checked in onnxruntime.

The export has a fixed input size and a fixed number of output rows ``K`` (see
:mod:`loftr_core.api.export`); after writing it, the command runs the file in onnxruntime on a
pair (``--check-images``, else a synthetic one) and compares the matches with PyTorch's.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from loftr_core._version import __version__
from loftr_core.api.checkpoint import load_model
from loftr_core.api.export import (
    CONFIDENCE_TOL,
    EXPORTABLE_ATTENTION,
    KEYPOINT_TOL_PX,
    OPSET,
    ROUNDING_CONFIDENCE,
    ROUNDING_KEYPOINT_PX,
    ExportMatcher,
    check_export_size,
    compare_with_onnxruntime,
    export_input,
    export_onnx,
    exportable_attention,
)
from loftr_core.api.optional import require
from loftr_core.api.pretrained import resolve_weights
from loftr_core.cli.runner import (
    add_shared,
    check_output,
    new_parser,
    positive_int,
    run,
)
from loftr_core.errors import InputError
from loftr_core.model import LoFTR

__all__ = ["DEFAULT_MAX_MATCHES", "DEFAULT_SIZE", "main", "parse_size"]

PROG = "loftr-export"
DEFAULT_SIZE = (640, 480)
"""``(width, height)`` exported by default: the ScanNet evaluation size, MegaDepth's 640 px."""
DEFAULT_MAX_MATCHES = 2048
"""``K`` by default: 43% of the 4800 coarse cells of 640x480; raise it for larger sizes or lower
thresholds (the outputs say how many were valid)."""
log = logging.getLogger("loftr.export")

EPILOG = f"""\
examples:
  loftr-export outdoor_640x480.onnx                        # official outdoor weights, 640x480
  loftr-export indoor.onnx --weights indoor_new --max-matches 1024
  loftr-export run.onnx --weights my_run/checkpoints/best.ckpt --size 832x624 --thr 0.1

The file takes image0, image1: (1, 1, H, W) float32 gray in [0, 1] at exactly the exported size,
and gives keypoints0, keypoints1 (K, 2) float32 in those pixels, confidence (K,) and valid (K,)
bool, valid rows first; beyond K candidates it keeps the K most confident. ONNX opset {OPSET}.
Attention must be one of {", ".join(EXPORTABLE_ATTENTION)} (the same weights run with either).
Exit status: 0 on success, 2 on bad input (one line says what to fix), 1 on an internal error or
a failed onnxruntime check.
"""


def parse_size(text: str) -> tuple[int, int]:
    """An argparse ``type``: ``WxH`` -> ``(width, height)``, each a positive multiple of 8."""
    parts = text.lower().replace(" ", "").split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT (e.g. 640x480)") from None
    for side, value in (("width", width), ("height", height)):
        if value < 8 or value % 8:
            raise argparse.ArgumentTypeError(
                f"{text!r}: {side} {value} must be a positive multiple of 8 (the coarse stride)"
            )
    return width, height


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``loftr-export``."""
    parser = new_parser(
        PROG,
        "Export the whole LoFTR matcher (backbone to fine refinement) to one ONNX file with a "
        "fixed input size and at most K matches, then check it in onnxruntime.",
        __version__,
        EPILOG,
    )
    parser.add_argument("output", help="the ONNX file to write, must end in .onnx")
    parser.add_argument(
        "--size",
        type=parse_size,
        default=DEFAULT_SIZE,
        metavar="WxH",
        help="input size of both images, multiples of 8 (default 640x480); resize to it before "
        "running the file (loftr_core.api.export.export_input does it as the original does)",
    )
    parser.add_argument(
        "--max-matches",
        type=positive_int,
        default=DEFAULT_MAX_MATCHES,
        metavar="K",
        help=f"rows of the outputs; more candidates keep the K most confident (default "
        f"{DEFAULT_MAX_MATCHES})",
    )
    check = parser.add_mutually_exclusive_group()
    check.add_argument(
        "--check-images",
        nargs=2,
        metavar=("IMG0", "IMG1"),
        help="the pair the onnxruntime check runs on (default: a synthetic textured pair)",
    )
    check.add_argument(
        "--no-check",
        action="store_true",
        help="skip the onnxruntime check (then onnxruntime need not be installed)",
    )
    add_shared(parser, ["weights", "preset", "thr", "attention"], weights="outdoor")
    return parser


def synthetic_pair(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two ``(1, 1, H, W)`` float32 views of one smooth random texture, 16 x 8 px apart."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 4 + 8, width // 4 + 16), dtype=np.uint8)
    texture = cv2.resize(coarse, (width + 64, height + 32), interpolation=cv2.INTER_CUBIC)
    a = texture[:height, :width]
    b = texture[8 : 8 + height, 16 : 16 + width]
    return tuple(  # type: ignore[return-value]
        np.ascontiguousarray(x.astype(np.float32)[None, None] / 255.0) for x in (a, b)
    )


def _run(args: argparse.Namespace) -> int:
    out = check_output(Path(args.output), "output", suffix=".onnx")
    width, height = args.size
    pair = None
    if args.check_images:  # decoded now: a bad image is refused before the export, not after
        pair = [
            export_input(image, height, width, name=f"--check-images {image}")[0]
            for image in args.check_images
        ]
    require("onnx", "onnx")  # before a download or a model load
    require("onnxscript", "onnx")
    ort = None if args.no_check else require("onnxruntime", "onnx")
    attention = args.attention
    if attention is not None and attention not in EXPORTABLE_ATTENTION:
        raise InputError(
            f"--attention {attention}: this backend does not export to ONNX; use one of "
            f"{', '.join(EXPORTABLE_ATTENTION)} (a model built with an exact softmax backend "
            "exports as full by itself)"
        )
    path, preset = resolve_weights(args.weights, args.preset)
    model = load_model(path, preset, attention=attention)
    stored = (model.config.coarse.attention, model.config.fine.attention)
    wanted = tuple(exportable_attention(name) for name in stored)
    if wanted != stored:  # a model trained with a fused softmax kernel: the same function
        log.info("attention %s -> %s (the same function, and it exports)", stored, wanted)
        config = model.config.replace(
            coarse={"attention": wanted[0]}, fine={"attention": wanted[1]}
        )
        swapped = LoFTR(config).eval()
        swapped.load_state_dict(model.state_dict())
        model = swapped
    check_export_size(model, height, width)
    wrapper = ExportMatcher(model, args.max_matches, args.thr)  # refuses before the export
    config = model.config
    log.info(
        "exporting %s (%s, %s attention) at %dx%d px, K=%d, thr=%g, opset %d ...",
        args.weights,
        config.match_coarse.match_type,
        config.coarse.attention,
        width,
        height,
        args.max_matches,
        wrapper.thr,
        OPSET,
    )
    start = time.perf_counter()
    export_onnx(
        model,
        out,
        height,
        width,
        args.max_matches,
        wrapper.thr,
        metadata={"loftr.weights": str(args.weights)},
    )
    size_mb = out.stat().st_size / 2**20
    print(
        f"wrote {out} ({size_mb:.1f} MiB, {width}x{height} px, K={args.max_matches}, "
        f"thr={wrapper.thr:g}, opset {OPSET}) in {time.perf_counter() - start:.1f} s"
    )
    if ort is None:
        return 0
    what = "a synthetic pair" if pair is None else " ".join(args.check_images)
    image0, image1 = synthetic_pair(height, width) if pair is None else pair
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    result = compare_with_onnxruntime(session, model, image0, image1, wrapper.thr, args.max_matches)
    if not result.within_rounding:
        print(
            f"{PROG}: error: onnxruntime's matches differ from PyTorch's on {what}: {result}; "
            "the file was written, but please report this with the command line",
            file=sys.stderr,
        )
        return 1
    print(f"onnxruntime check on {what}: {result} (PyTorch's LoFTR.forward)")
    if not result.ok:
        log.warning(
            "the keypoints or confidences differ by more than %g px / %g but by less than %g px "
            "/ %g: float32 rounding on this CPU's kernels (PyTorch's own CPU paths differ by "
            "as much), not a different computation",
            KEYPOINT_TOL_PX,
            CONFIDENCE_TOL,
            ROUNDING_KEYPOINT_PX,
            ROUNDING_CONFIDENCE,
        )
    if result.valid_torch == 0:
        log.warning(
            "the check compared no matches: give a pair that overlaps with --check-images, or a "
            "lower --thr"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``loftr-export``; returns the exit status (0 ok, 2 bad input, 1 a bug)."""
    return run(build_parser(), _run, argv, log_level=logging.INFO)
