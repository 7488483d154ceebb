"""``loftr-match``: match two images (or a list of pairs) with LoFTR from the command line.

Prints the number of matches (and the relative pose with its inlier count when intrinsics are
given), writes a match plot (``--out``, PNG) and the matches (``--save``, ``.npz``). Bad input
(missing or broken files, a wrong checkpoint, malformed intrinsics) ends with a one-line
``loftr-match: error: ...`` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loftr_core._version import __version__
from loftr_core.api.geometry import ESTIMATORS, estimate_pose, parse_intrinsics
from loftr_core.api.image_io import read_image
from loftr_core.api.matcher import Matcher
from loftr_core.api.memory import MemoryLimit
from loftr_core.api.optional import require
from loftr_core.api.plotting import draw_matches, save_plot
from loftr_core.api.pretrained import check_preset_for, pretrained_name
from loftr_core.api.sfm import (
    MergedMatches,
    PairMatches,
    merge_keypoints,
    reconstruct_colmap,
    verify_colmap,
    write_colmap,
    write_hloc,
)
from loftr_core.cli.runner import (
    SHARED,
    add_shared,
    check_output,
    check_readable,
    execution_options,
    new_parser,
    positive_int,
    run,
    typed,
)
from loftr_core.errors import InputError, LoftrError

__all__ = ["main"]

PROG = "loftr-match"

EPILOG = """\
examples:
  # two images with the official outdoor weights (downloaded on first use), resized to 840 px
  # as the outdoor model was evaluated; plot and matches written
  loftr-match ../shared/data/phototourism_sample/london_bridge_19481797_2295892421.jpg \\
              ../shared/data/phototourism_sample/london_bridge_49190386_5209386933.jpg \\
              --resize 840 --out matches.png --save matches.npz

  # indoor weights; intrinsics (fx,fy,cx,cy or 9 numbers of K, row-major) add the relative pose
  loftr-match a.jpg b.jpg --weights indoor_new --K0 1200,1200,640,480 --K1 1150,1150,600,450

  # many pairs: one 'img0 img1 [K0(9) K1(9)]' per line; results per pair into --out-dir
  loftr-match --pairs pairs.txt --weights my_run/checkpoints/best.ckpt --out-dir results/

Weights: --weights takes a name (outdoor, the default; indoor; indoor_new: kornia's copies of the
official checkpoints, fetched into $LOFTR_HOME, default ~/.cache/loftr, from
$LOFTR_WEIGHTS_MIRROR if set, then huggingface.co/kornia/loftr, then cmp.felk.cvut.cz; reused
offline afterwards; LOFTR_OFFLINE=1 never downloads) or a checkpoint file: the official
*.ckpt files linked from https://github.com/zju3dv/LoFTR (outdoor_ot.ckpt, indoor_ot.ckpt...),
a native .safetensors or a loftr-train checkpoint; nothing in them is executed. For a file
without a stored config the preset is taken from the file name when it is an official one (e.g.
indoor_ds_new.ckpt), else outdoor_ds / outdoor_ot by the checkpoint's kind. Exit status: 0 on
success, 2 on bad input (one line says what to fix), 1 on an internal error (a bug: the line
asks for a report; -v shows the traceback).
"""


def memory_limit(text: str) -> MemoryLimit:
    """An argparse type: ``--memory-limit`` as a :class:`MemoryLimit`."""
    return MemoryLimit.parse(text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``loftr-match`` (every option documented in ``--help``)."""
    parser = new_parser(
        PROG,
        "Match two images (or many pairs) with LoFTR; keypoints are reported in the original "
        "images' pixel coordinates.",
        __version__,
        EPILOG,
    )
    parser.add_argument("image0", nargs="?", help="first image (any format OpenCV reads)")
    parser.add_argument("image1", nargs="?", help="second image")
    parser.add_argument(
        "--resize", type=positive_int, metavar="N", help="resize so the longer side is N px"
    )
    parser.add_argument(
        "--square-pad",
        action="store_true",
        help="zero-pad each image to a square (with masks) as the original MegaDepth evaluation; "
        "with --resize 840 the model sees exactly loftr-eval's inputs",
    )
    parser.add_argument("--out", metavar="PNG", help="write a match plot (PNG) here")
    parser.add_argument(
        "--save",
        metavar="NPZ",
        help="write keypoints0, keypoints1, confidence, image sizes (and R, t, inliers) as .npz",
    )
    parser.add_argument(
        "--K0",
        metavar="K",
        help="intrinsics of image0: 'fx,fy,cx,cy' or 9 comma-separated numbers (row-major 3x3)",
    )
    parser.add_argument("--K1", metavar="K", help="intrinsics of image1, same format as --K0")
    parser.add_argument(
        "--max-matches", type=positive_int, metavar="K", help="keep only the K most confident"
    )
    parser.add_argument(
        "--pairs",
        metavar="FILE",
        help="match every pair listed in FILE, one 'img0 img1 [K0(9) K1(9)]' per line "
        "('#' comments allowed); relative paths are taken from --image-root",
    )
    parser.add_argument(
        "--image-root",
        metavar="DIR",
        help="folder that relative paths in --pairs refer to (default: the pairs file's folder)",
    )
    parser.add_argument(
        "--out-dir",
        metavar="DIR",
        help="with --pairs: write <img0>_<img1>.npz and .png for every pair here",
    )
    parser.add_argument(
        "--hloc",
        metavar="DIR",
        help="with --pairs: merge the matches into per-image keypoints and write hloc's "
        "features.h5 and matches.h5 here (image names as written in the pairs file; needs "
        "h5py: pip install 'loftr-core[hloc]')",
    )
    parser.add_argument(
        "--colmap",
        metavar="DIR",
        help="with --pairs: merge the matches into per-image keypoints, write a COLMAP database "
        "(DIR/database.db: cameras from the pair lines' K, else EXIF or COLMAP's guess), run "
        "COLMAP's geometric verification (needs pycolmap: pip install 'loftr-core[colmap]'); "
        "image paths must be relative to --image-root",
    )
    parser.add_argument(
        "--mapper",
        action="store_true",
        help="with --colmap: also run COLMAP's incremental mapper into DIR/sparse",
    )
    parser.add_argument(
        "--merge-grid",
        type=_grid,
        default=1.0,
        metavar="PX",
        help="with --hloc/--colmap: keypoints of an image within one cell of this grid merge "
        "into one "
        "(default 1 px; 0: only identical coordinates)",
    )
    parser.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        default="opencv",
        help="relative pose estimator where intrinsics are given: opencv (RANSAC, the LoFTR "
        "paper's protocol) or poselib (LO-RANSAC, as glue-factory; pip install "
        "'loftr-core[poselib]')",
    )
    parser.add_argument(
        "--ransac-thr",
        type=_positive_float,
        default=None,
        metavar="PX",
        help="pose inlier threshold in pixels (default 0.5 for opencv, 1.0 for poselib)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="poselib's RANSAC seed (default 0; OpenCV's RANSAC always uses its own fixed seed)",
    )
    parser.add_argument("--no-progress", action="store_true", help="with --pairs: no progress bar")
    parser.add_argument(
        "--memory-limit",
        type=typed(memory_limit),
        default=MemoryLimit("auto"),
        metavar="GIB|auto|none",
        help="stop before matching when the estimated peak memory is above this many GiB "
        "(default auto: on CPU the smaller of 8 GiB and 90%% of the available memory, on CUDA "
        "90%% of the free device memory; none: no check)",
    )
    add_shared(parser, SHARED, weights="outdoor")
    return parser


def _number(text: str, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 if positive else value >= 0) or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a {'positive' if positive else 'non-negative'} number of pixels"
        )
    return value


def _grid(text: str) -> float:
    return _number(text, positive=False)


def _positive_float(text: str) -> float:
    return _number(text, positive=True)


@dataclass
class _Pair:
    image0: Path
    image1: Path
    K0: np.ndarray | None
    K1: np.ndarray | None
    name0: str = ""  # as written in the pairs file (hloc's image names)
    name1: str = ""


def _intrinsics(k0: Any, k1: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    if (k0 is None) != (k1 is None):
        raise InputError("give both --K0 and --K1 (intrinsics of both images) or neither")
    if k0 is None:
        return None, None
    return parse_intrinsics(k0, "K0"), parse_intrinsics(k1, "K1")


def read_pairs(path: Path, image_root: Path | None = None) -> list[_Pair]:
    """Parse a pairs file: ``img0 img1`` or ``img0 img1`` + 9 numbers of K0 + 9 of K1 per line."""
    if not path.is_file():
        raise InputError(f"pairs file {str(path)!r} does not exist or is not a file")
    root = image_root if image_root is not None else path.parent
    pairs: list[_Pair] = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read pairs file {str(path)!r}: {exc}") from None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) not in (2, 20):
            raise InputError(
                f"{path}:{number}: expected 'img0 img1' or 'img0 img1' + 9 numbers of K0 + 9 of "
                f"K1 (20 fields), got {len(parts)} fields"
            )
        K0 = K1 = None
        if len(parts) == 20:
            K0, K1 = _intrinsics(" ".join(parts[2:11]), " ".join(parts[11:20]))
        p0, p1 = (Path(p) if Path(p).is_absolute() else root / p for p in parts[:2])
        pairs.append(_Pair(p0, p1, K0, K1, parts[0], parts[1]))
    if not pairs:
        raise InputError(f"pairs file {str(path)!r} lists no pairs")
    return pairs


def _report(pair: _Pair, result: Any, pose: Any) -> str:
    line = f"{pair.image0.name} {pair.image1.name}: {len(result)} matches"
    if pair.K0 is not None:
        line += f", pose from {pose.num_inliers} inliers" if pose is not None else ", pose: failed"
    return line


def _pose_text(pose: Any) -> list[str]:
    import cv2

    rvec = cv2.Rodrigues(pose.R)[0].ravel()
    angle = float(np.degrees(np.linalg.norm(rvec)))
    return [
        f"inliers: {pose.num_inliers}",
        f"rotation: {angle:.3f} deg about axis "
        + np.array2string(rvec / max(np.linalg.norm(rvec), 1e-12), precision=4),
        "translation direction: " + np.array2string(pose.t, precision=4),
        "R: " + np.array2string(pose.R, precision=5).replace("\n", ""),
    ]


def _save_npz(path: Path, result: Any, pose: Any) -> None:
    arrays: dict[str, np.ndarray] = {
        "keypoints0": result.keypoints0,
        "keypoints1": result.keypoints1,
        "confidence": result.confidence,
        "image0_size": np.array(result.image0_size),
        "image1_size": np.array(result.image1_size),
    }
    if pose is not None:
        arrays.update(R=pose.R, t=pose.t, inliers=pose.inliers)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)  # type: ignore[arg-type]


def _match(
    matcher: Matcher,
    pair: _Pair,
    out: Path | None,
    save: Path | None,
    result: Any = None,
    *,
    estimator: str = "opencv",
    ransac_thr: float | None = None,
    seed: int | None = 0,
) -> tuple[Any, Any]:
    """Match one pair (unless ``result`` is given), estimate its pose, write its outputs."""
    gray0: np.ndarray | None = None
    gray1: np.ndarray | None = None
    if result is None:
        gray0, gray1 = read_image(pair.image0), read_image(pair.image1)  # as the original does
        result = matcher.match(gray0, gray1)
    elif out is not None:  # only the plot needs the pixels
        gray0, gray1 = read_image(pair.image0), read_image(pair.image1)
    pose = None
    if pair.K0 is not None and pair.K1 is not None:
        pose = estimate_pose(
            result.keypoints0,
            result.keypoints1,
            pair.K0,
            pair.K1,
            estimator=estimator,
            threshold_px=ransac_thr,
            seed=seed,
        )
    if out is not None and gray0 is not None and gray1 is not None:
        plot = draw_matches(
            gray0,
            gray1,
            result.keypoints0,
            result.keypoints1,
            confidence=result.confidence,
            inliers=None if pose is None else pose.inliers,
        )
        save_plot(plot, out)
    if save is not None:
        _save_npz(save, result, pose)
    return result, pose


def _silence_opencv(cv2: Any) -> None:
    set_level = getattr(cv2, "setLogLevel", None)
    utils_logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if set_level is None and utils_logging is not None:
        set_level = getattr(utils_logging, "setLogLevel", None)
    if set_level is not None:
        set_level(0)


def _run(args: argparse.Namespace) -> int:
    import cv2

    _silence_opencv(cv2)  # OpenCV's own warnings would bypass our one-line errors
    if args.pairs is None and (args.image0 is None or args.image1 is None):
        raise InputError("give two images (IMG0 IMG1) or --pairs FILE; see loftr-match --help")
    if args.pairs is not None and args.image0 is not None:
        raise InputError("give either two images or --pairs FILE, not both")
    if args.pairs is not None and (args.out or args.save or args.K0 or args.K1):
        raise InputError(
            "with --pairs, write results with --out-dir DIR and put intrinsics on the pair lines "
            "(--out, --save, --K0, --K1 are for a single pair)"
        )
    if args.pairs is None and (args.out_dir or args.image_root or args.hloc or args.colmap):
        raise InputError(
            "--out-dir, --image-root, --hloc and --colmap work with --pairs; use --out / --save"
        )
    hloc = None if args.hloc is None else check_output(Path(args.hloc), "--hloc", folder=True)
    if hloc is not None:
        require("h5py", "hloc")  # before any matching
    if args.colmap is not None:
        check_output(Path(args.colmap), "--colmap", folder=True)
        require("pycolmap", "colmap")
    if args.mapper and args.colmap is None:
        raise InputError(
            "--mapper runs COLMAP's mapper on the --colmap database; give --colmap DIR"
        )
    out = None if args.out is None else check_output(Path(args.out), "--out", suffix=".png")
    save = None if args.save is None else check_output(Path(args.save), "--save", suffix=".npz")
    out_dir = (
        None if args.out_dir is None else check_output(Path(args.out_dir), "--out-dir", folder=True)
    )
    if args.pairs is not None:
        image_root = Path(args.image_root) if args.image_root else None
        pairs = read_pairs(Path(args.pairs), image_root)
    else:
        K0, K1 = _intrinsics(args.K0, args.K1)
        pairs = [_Pair(Path(args.image0), Path(args.image1), K0, K1)]
    if hloc is not None or args.colmap is not None:
        _check_mergeable(pairs, Path(args.pairs))
    for pair in pairs:  # fail fast on a missing image, before loading the model
        for image in (pair.image0, pair.image1):
            check_readable(image, "image file")
        if args.colmap is not None and any(Path(n).is_absolute() for n in (pair.name0, pair.name1)):
            raise InputError(
                f"--colmap: {pair.name0} {pair.name1} is an absolute path; COLMAP needs image "
                "names relative to the image folder (give relative paths and --image-root)"
            )
    rank, world, local_rank = _launch()
    device = args.device
    if world > 1:
        if args.pairs is None or out_dir is None:
            raise InputError(
                f"under torchrun ({world} processes) give --pairs FILE and --out-dir DIR: each "
                "process matches its share of the list and writes its results there"
            )
        if hloc is not None or args.colmap is not None:
            raise InputError(
                "--hloc / --colmap merge every pair's matches in one process; run them without "
                "torchrun"
            )
        pairs = shard_pairs(pairs, world)[rank]
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
        if device in ("auto", "cuda") and torch.cuda.is_available():
            device = f"cuda:{local_rank}"
    settings: dict[str, Any] = {
        "attention": args.attention,
        "device": device,
        "options": execution_options(args),
        "threshold": args.thr,
        "dtype": args.dtype,
        "resize": args.resize,
        "max_matches": args.max_matches,
        "memory_limit": args.memory_limit.setting,
        "pad_to_square": args.square_pad,
    }
    name = pretrained_name(args.weights)
    if name is not None:
        check_preset_for(name, args.preset)
        matcher = Matcher.from_pretrained(name, **settings)
    else:
        matcher = Matcher.from_checkpoint(args.weights, args.preset, **settings)
    if args.pairs is None:
        pair = pairs[0]
        result, pose = _match(matcher, pair, out, save, **_pose_options(args))
        print(f"matches: {len(result)}")
        if pair.K0 is not None:
            print("\n".join(_pose_text(pose)) if pose is not None else "pose: estimation failed")
        return 0
    return _run_pairs(args, matcher, pairs, out_dir, hloc)


def _pose_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"estimator": args.estimator, "ransac_thr": args.ransac_thr, "seed": args.seed}


def _launch() -> tuple[int, int, int]:
    """``(RANK, WORLD_SIZE, LOCAL_RANK)`` set by torchrun, else ``(0, 1, 0)``."""
    try:
        values = [
            int(os.environ.get(k, d))
            for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0))
        ]
    except ValueError:
        raise InputError(
            "RANK / WORLD_SIZE / LOCAL_RANK are not integers (they are set by torchrun)"
        ) from None
    rank, world, local_rank = values
    if not 0 <= rank < max(world, 1):
        raise InputError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return rank, world, local_rank


def shard_pairs(pairs: Sequence[_Pair], world: int) -> list[list[_Pair]]:
    """Split a pair list over ``world`` processes, keeping pairs that share their first image
    together (so each process encodes as few images as possible); every pair in exactly one shard,
    in input order within it. Deterministic: every rank computes the same split."""
    groups: dict[Path, list[int]] = {}
    for k, pair in enumerate(pairs):
        groups.setdefault(pair.image0, []).append(k)
    load = [0] * world
    owner: dict[int, int] = {}
    for members in sorted(groups.values(), key=lambda m: (-len(m), m[0])):  # largest first
        target = min(range(world), key=lambda r: (load[r], r))
        load[target] += len(members)
        for k in members:
            owner[k] = target
    shards: list[list[_Pair]] = [[] for _ in range(world)]
    for k, pair in enumerate(pairs):
        shards[owner[k]].append(pair)
    return shards


def _run_pairs(
    args: argparse.Namespace,
    matcher: Matcher,
    pairs: list[_Pair],
    out_dir: Path | None,
    hloc: Path | None = None,
) -> int:
    from tqdm import tqdm

    rank, world, _ = _launch()
    who = f"[rank {rank}/{world}] " if world > 1 else ""
    counts: list[int] = []
    poses = 0
    failed: list[tuple[int, str]] = []
    found: list[tuple[int, Any]] = []
    # each distinct image is decoded and encoded once while in Matcher's feature cache, the
    # pairs in a cache-friendly order (each line names its pair); a pair that cannot be matched
    # is reported and the list goes on
    results = matcher.iter_match_indexed([(pair.image0, pair.image1) for pair in pairs])
    quiet = args.no_progress or rank > 0  # one bar under torchrun
    with tqdm(total=len(pairs), desc=f"{who}{PROG}", unit="pair", disable=quiet) as bar:
        for index, matched in results:
            pair = pairs[index]
            stem = f"{pair.image0.stem}_{pair.image1.stem}"
            if isinstance(matched, LoftrError):
                failed.append((index, f"{pair.image0.name} {pair.image1.name}"))
                bar.write(f"{pair.image0.name} {pair.image1.name}: failed: {matched}")
                bar.update(1)
                continue
            result, pose = _match(
                matcher,
                pair,
                out_dir / f"{stem}.png" if out_dir else None,
                out_dir / f"{stem}.npz" if out_dir else None,
                matched,
                **_pose_options(args),
            )
            if hloc is not None or args.colmap is not None:
                found.append((index, result))
            counts.append(len(result))
            poses += pose is not None
            bar.write(_report(pair, result, pose))
            bar.update(1)
    mean = f"{np.mean(counts):.1f}" if counts else "-"
    summary = f"{who}pairs: {len(pairs)}, matches per pair: mean {mean}"
    if any(p.K0 is not None for p in pairs):
        summary += f", poses estimated: {poses}/{sum(p.K0 is not None for p in pairs)}"
    summary += f", failures: {len(failed)}"
    print(summary)
    found.sort(key=lambda item: item[0])
    if hloc is not None or args.colmap is not None:
        merged = _merge(pairs, found, args.merge_grid)
        total = sum(len(k) for k in merged.keypoints.values())
        print(
            f"merged: {len(merged.keypoints)} images, {total} keypoints (grid "
            f"{args.merge_grid:g} px), {len(merged.matches)} pairs"
        )
        if hloc is not None:
            write_hloc(merged, hloc / "features.h5", hloc / "matches.h5")
            print(f"hloc: {hloc / 'features.h5'}, {hloc / 'matches.h5'}")
        if args.colmap is not None:
            root = Path(args.image_root) if args.image_root else Path(args.pairs).parent
            _write_colmap(merged, pairs, Path(args.colmap), root, args.mapper)
    if failed:
        first = [name for _, name in sorted(failed)[:3]]  # in list order
        raise InputError(
            f"{len(failed)} of {len(pairs)} pairs could not be matched ({', '.join(first)}"
            f"{', ...' if len(failed) > 3 else ''}; the reasons are listed above); the other "
            "pairs' results were written"
        )
    return 0


def _check_mergeable(pairs: list[_Pair], path: Path) -> None:
    """--hloc / --colmap keep one match set per image pair: refuse, before any matching, a pair
    of an image with itself or a pair listed twice (in either order)."""
    seen: dict[frozenset[str], int] = {}
    for number, pair in enumerate(pairs, start=1):
        if pair.name0 == pair.name1:
            raise InputError(
                f"{path}: pair {number} ({pair.name0} {pair.name1}) matches an image with itself; "
                "--hloc / --colmap need pairs of two images"
            )
        key = frozenset((pair.name0, pair.name1))
        if key in seen:
            raise InputError(
                f"{path}: pair {number} ({pair.name0} {pair.name1}) repeats pair {seen[key]} "
                "(in either order); --hloc / --colmap keep one match set per image pair, so list "
                "each pair once"
            )
        seen[key] = number


def _merge(pairs: list[_Pair], found: list[tuple[int, Any]], grid: float) -> MergedMatches:
    """The matched pairs as per-image keypoints (names as written in the pairs file)."""
    sizes: dict[str, tuple[int, int]] = {}
    matched = []
    for index, result in found:
        pair = pairs[index]
        (h0, w0), (h1, w1) = result.image0_size, result.image1_size
        sizes[pair.name0], sizes[pair.name1] = (w0, h0), (w1, h1)
        matched.append(
            PairMatches(
                pair.name0, pair.name1, result.keypoints0, result.keypoints1, result.confidence
            )
        )
    return merge_keypoints(matched, grid=grid, image_sizes=sizes)


def _write_colmap(
    merged: MergedMatches, pairs: list[_Pair], folder: Path, root: Path, mapper: bool
) -> None:
    """COLMAP database (+ verification, + mapper) in ``folder``; a line per step."""
    intrinsics: dict[str, np.ndarray] = {}
    for pair in pairs:
        for name, K in ((pair.name0, pair.K0), (pair.name1, pair.K1)):
            if K is not None:
                intrinsics.setdefault(name, K)
    written = write_colmap(merged, folder / "database.db", root, intrinsics)
    verified = verify_colmap(written)
    print(
        f"colmap: {written.database} ({len(written.image_ids)} images: cameras from the given K "
        f"{len(written.given_k)}, EXIF focal {len(written.exif)}, COLMAP's guess of 1.2 x the "
        f"longer side {len(written.guessed)}), {len(merged.matches)} pairs, {verified} verified"
    )
    if mapper:
        model = reconstruct_colmap(written, root, folder / "sparse")
        if model is None:
            print("mapper: no reconstruction (too few verified pairs or inliers)")
        else:
            print(
                f"mapper: {model.num_reg_images()} of {len(written.image_ids)} images registered, "
                f"{model.num_points3D()} points, models in {folder / 'sparse'}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``loftr-match``; returns the exit status (0 ok, 2 bad input, 1 a bug)."""
    return run(build_parser(), _run, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
