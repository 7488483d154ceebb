"""The ``loftr-eval`` command: evaluate a checkpoint on MegaDepth-format test pairs.

Examples::

    # MegaDepth-1500 with the official outdoor weights by name (downloaded on first use;
    # images under ROOT/Undistorted_SfM/..., index from zju3dv/LoFTR assets)
    loftr-eval outdoor --data-root data/megadepth/test \\
        --index-dir assets/megadepth_test_1500_scene_info --output md1500.jsonl
    # any scene-info file, a subset of its pairs, at a smaller size
    loftr-eval model.safetensors --data-root ../shared/data/megadepth_sample \\
        --scene-info ../shared/data/megadepth_sample/sample.npz --pair-ids 0 --img-resize 320

Prints a table of AUC@5/10/20 (percent), epipolar precision and match counts, shows a tqdm
progress bar, and with ``--output`` writes one JSON line per pair (checked writable before the
evaluation starts; if the write still fails, the results go to a temporary file that the error
names). Errors follow the policy of every loftr command (:mod:`loftr_core.cli.runner`): exit
status 0 on success, 2 with one line saying what to fix, 1 on an internal error.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from loftr_core.api.checkpoint import load_model
from loftr_core.api.devices import resolve_device, resolve_dtype
from loftr_core.api.geometry import DEFAULT_THRESHOLD_PX, ESTIMATORS
from loftr_core.api.optional import require
from loftr_core.api.pretrained import pretrained_name, resolve_weights
from loftr_core.cli.runner import (
    SHARED,
    add_shared,
    check_output,
    check_readable,
    execution_options,
    new_parser,
    positive_int,
    run,
)
from loftr_data import MegaDepthDataset, megadepth1500
from loftr_data.errors import LoftrDataError
from loftr_train import __version__
from loftr_train.errors import EvaluationError
from loftr_train.evaluation import EvaluationResult, evaluate, format_table, write_pair_results

__all__ = ["build_parser", "main"]

PROG = "loftr-eval"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``loftr-eval``."""
    p = new_parser(
        PROG,
        "Evaluate a LoFTR checkpoint on MegaDepth-format pairs (pose AUC@5/10/20, epipolar "
        "precision, match counts).",
        __version__,
    )
    p.add_argument(
        "checkpoint",
        nargs="?",
        help="official weights by name (outdoor, indoor, indoor_new; downloaded on first use) or "
        "a checkpoint file: official .ckpt, kornia state dict, native .safetensors or a "
        "loftr-train checkpoint (or --weights)",
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
        "--img-resize",
        type=positive_int,
        default=840,
        help="long side of the resized images (default 840)",
    )
    p.add_argument(
        "--max-pairs", type=positive_int, default=None, help="evaluate only the first N pairs"
    )
    p.add_argument(
        "--output", type=Path, default=None, help="write per-pair results here (JSON Lines)"
    )
    p.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        default="opencv",
        help="relative pose estimator: opencv (RANSAC at 0.5 px: reproduces the LoFTR paper) or "
        "poselib (LO-RANSAC at 1.0 px, as glue-factory and the LightGlue paper evaluate; pip "
        "install 'loftr-core[poselib]')",
    )
    p.add_argument(
        "--ransac-thr",
        type=float,
        default=None,
        metavar="PX",
        help="pose inlier threshold in original pixels (default 0.5 for opencv, 1.0 for poselib)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="poselib's RANSAC seed per pair (default 0; OpenCV's RANSAC seeds itself)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_shared(p, SHARED)
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


def _model(args: argparse.Namespace, weights: str) -> torch.nn.Module:
    path, preset = resolve_weights(weights, args.preset)
    return load_model(
        path,
        preset,
        device=args.device,
        attention=args.attention,
        overrides=None if args.thr is None else {"match_coarse": {"thr": args.thr}},
        options=execution_options(args),
    )


def _write(result: EvaluationResult, path: Path) -> Path:
    """Write the per-pair results; on failure keep them in a temporary file and say where."""
    try:
        return write_pair_results(result, path)
    except OSError as exc:
        fd, fallback = tempfile.mkstemp(prefix="loftr_eval_pairs_", suffix=".jsonl")
        os.close(fd)
        write_pair_results(result, fallback)
        raise EvaluationError(
            f"cannot write --output {str(path)!r} ({exc.strerror or exc}); the per-pair results "
            f"are kept in {fallback}"
        ) from exc


def _run(args: argparse.Namespace) -> int:
    weights = args.weights if args.weights is not None else args.checkpoint
    if weights is None:
        raise EvaluationError(
            "give the checkpoint to evaluate (CHECKPOINT, --weights PATH, or a name: outdoor)"
        )
    if args.weights is not None and args.checkpoint is not None:
        raise EvaluationError("give the checkpoint once: CHECKPOINT or --weights, not both")
    if pretrained_name(weights) is None:
        check_readable(Path(weights), "checkpoint file")
    if args.output is not None:  # before the (long) evaluation
        check_output(args.output, "--output")
    thr = DEFAULT_THRESHOLD_PX[args.estimator] if args.ransac_thr is None else args.ransac_thr
    if not thr > 0 or thr == float("inf"):
        raise EvaluationError(f"--ransac-thr {args.ransac_thr}: give a positive number of pixels")
    if args.estimator == "poselib":
        require("poselib", "poselib")  # before the (long) evaluation
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    dataset = _dataset(args)
    model = _model(args, str(weights))
    result = evaluate(
        model,
        dataset,
        device=device,
        dtype=None if dtype == torch.float32 else dtype,
        max_pairs=args.max_pairs,
        progress=not args.no_progress,
        estimator=args.estimator,
        ransac_pixel_thr=thr,
        seed=args.seed,
    )
    print(
        f"pose: {args.estimator} at {thr:g} px (confidence {result.pose['ransac_conf']}, seed "
        f"{args.seed})"
    )
    print(format_table(result.summary))  # the table first: never lost to a failed write
    if args.output is not None:
        print(f"per-pair results: {_write(result, args.output)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``loftr-eval``; returns the exit status (0 ok, 2 bad input, 1 a bug)."""
    return run(build_parser(), _run, argv, user_errors=(LoftrDataError,), log_level=logging.INFO)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
