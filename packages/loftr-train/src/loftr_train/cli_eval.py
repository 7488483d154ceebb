"""The ``loftr-eval`` command: evaluate a checkpoint on MegaDepth-format test pairs.

Examples::

    # MegaDepth-1500 (images under ROOT/Undistorted_SfM/..., index from zju3dv/LoFTR assets)
    loftr-eval outdoor_ds.ckpt --data-root data/megadepth/test \\
        --index-dir assets/megadepth_test_1500_scene_info --output md1500.jsonl

    # any scene-info file, a subset of its pairs, at a smaller size
    loftr-eval model.safetensors --data-root ../shared/data/megadepth_sample \\
        --scene-info ../shared/data/megadepth_sample/sample.npz --pair-ids 0 --img-resize 320

Prints a table of AUC@5/10/20 (percent), epipolar precision and match counts, shows a tqdm
progress bar, and writes one JSON line per pair to ``--output``. Exit status 0 on success, 2 when
an input is unusable (the message says which and how to fix it).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from loftr_core.api.checkpoint import load_model, read_checkpoint, resolve_config
from loftr_core.errors import LoftrError
from loftr_data import MegaDepthDataset, megadepth1500
from loftr_data.errors import LoftrDataError
from loftr_train.errors import EvaluationError
from loftr_train.evaluation import evaluate, format_table, write_pair_results

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``loftr-eval``."""
    p = argparse.ArgumentParser(
        prog="loftr-eval",
        description="Evaluate a LoFTR checkpoint on MegaDepth-format pairs (pose AUC@5/10/20, "
        "epipolar precision, match counts).",
    )
    p.add_argument(
        "checkpoint", type=Path, help="official .ckpt, kornia state dict or native .safetensors"
    )
    p.add_argument(
        "--data-root", type=Path, required=True, help="dataset root the index paths are relative to"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--index-dir",
        type=Path,
        help="MegaDepth-1500 index directory (five scene-info files + megadepth_test_1500.txt)",
    )
    src.add_argument("--scene-info", type=Path, help="a single scene-info .npz file")
    p.add_argument(
        "--pair-ids", type=str, default=None, help="comma-separated pair indices of --scene-info"
    )
    p.add_argument(
        "--img-resize", type=int, default=840, help="long side of the resized images (default 840)"
    )
    p.add_argument(
        "--preset", default=None, help="model preset (default: stored config or inferred)"
    )
    p.add_argument("--thr", type=float, default=None, help="override the coarse matching threshold")
    p.add_argument("--attention", default=None, help="override the attention backend (e.g. sdpa)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--max-pairs", type=int, default=None, help="evaluate only the first N pairs")
    p.add_argument(
        "--output",
        type=Path,
        default=Path("loftr_eval_pairs.jsonl"),
        help="per-pair JSON Lines file",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _pair_ids(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        ids = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise EvaluationError(
            f"--pair-ids={text!r} must be comma-separated integers, e.g. 0,3,7"
        ) from None
    if not ids:
        raise EvaluationError("--pair-ids is empty; give at least one pair index")
    return ids


def _dataset(args: argparse.Namespace) -> Any:
    if args.index_dir is not None:
        if args.pair_ids is not None:
            raise EvaluationError(
                "--pair-ids applies to --scene-info only; use --max-pairs with --index-dir"
            )
        return megadepth1500(
            args.data_root, args.index_dir, img_resize=args.img_resize, load_depth=False
        )
    return MegaDepthDataset(
        args.data_root,
        args.scene_info,
        img_resize=args.img_resize,
        min_overlap_score=0.0,
        pair_ids=_pair_ids(args.pair_ids),
        load_depth=False,
    )


def _model(args: argparse.Namespace) -> torch.nn.Module:
    if args.thr is None:
        return load_model(
            args.checkpoint, args.preset, device=args.device, attention=args.attention
        )
    config, _ = resolve_config(read_checkpoint(args.checkpoint), args.preset)
    config = config.replace(match_coarse={"thr": args.thr})
    return load_model(args.checkpoint, config, device=args.device, attention=args.attention)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``loftr-eval``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.max_pairs is not None and args.max_pairs <= 0:
            raise EvaluationError(f"--max-pairs must be a positive int, got {args.max_pairs}")
        dataset = _dataset(args)
        model = _model(args)
        result = evaluate(
            model,
            dataset,
            device=args.device,
            max_pairs=args.max_pairs,
            progress=not args.no_progress,
        )
        out = write_pair_results(result, args.output)
    except (LoftrError, LoftrDataError) as exc:
        print(f"loftr-eval: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result.summary))
    print(f"per-pair results: {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
