"""Matching an image list: every pair of N real photos, kornia's loop against ours, side by side.

Usage::

    python benchmarks/pairs_bench.py                 # 8 photos, all 28 pairs, long side 640
    python benchmarks/pairs_bench.py --images 5 --long-side 480 --markdown
    nox -s pairs_bench                               # the same, with --markdown

What is compared (each mode in a fresh process, so peak RSS never mixes):

* ``kornia``: a loop calling kornia's ``LoFTR`` on every pair (what kornia and hloc-through-kornia
  users run);
* ``ours per pair``: ``Matcher.match`` on every pair (the whole model per pair);
* ``ours cached``: ``Matcher.match_pairs`` on the list: each image through the backbone once,
  its features reused by every pair it is in.

Same weights (the seeded, BatchNorm-calibrated kornia weights of ``bench.py``), same inputs (the
photos of ``../shared/data/phototourism_sample``, grayscale, resized by the original's rule: long
side N, each side floored to a multiple of 8), same coarse threshold. Every pair's matches are
compared with kornia's: the same image-0 cells and image-1 keypoints within 1e-3 px.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # the sibling script: its weights, RSS probe, table and comparison
    DEFAULT_DATA,
    _cpu_flags,
    _cpu_model,
    _peak_rss_mib,
    _table,
    build_model,
    compare,
    make_pair,
    make_weights,
    photos,
)
from bench import (
    _child as bench_child,
)

MODES = ("kornia", "ours per pair", "ours cached")


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One mode over every pair, in this fresh process."""
    import numpy as np
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    weights = torch.load(spec["weights"], weights_only=True)
    images = [np.load(p) for p in spec["images"]]
    pairs = [tuple(p) for p in spec["pairs"]]
    mode = spec["mode"]
    impl = "kornia" if mode == "kornia" else "ours"
    model = build_model(impl, spec["thr"], weights)
    del weights
    outputs: list[dict[str, Any]] = []
    start = time.perf_counter()
    with torch.inference_mode():
        if mode == "kornia":
            tensors = [torch.from_numpy(im).float()[None, None] / 255.0 for im in images]
            for i, j in pairs:
                out = model({"image0": tensors[i], "image1": tensors[j]})
                outputs.append(
                    {k: out[k].float() for k in ("keypoints0", "keypoints1", "confidence")}
                )
        else:
            from loftr_core import Matcher

            matcher = Matcher(model, threshold=spec["thr"])
            if mode == "ours per pair":
                results = [matcher.match(images[i], images[j]) for i, j in pairs]
            else:
                results = matcher.match_pairs([(images[i], images[j]) for i, j in pairs])
            for r in results:
                outputs.append(
                    {
                        "keypoints0": torch.from_numpy(r.keypoints0),
                        "keypoints1": torch.from_numpy(r.keypoints1),
                        "confidence": torch.from_numpy(r.confidence),
                    }
                )
    total = time.perf_counter() - start
    torch.save(outputs, spec["out"])
    return {
        "total_s": total,
        "pairs_s": len(pairs) / total,
        "peak_rss_mib": _peak_rss_mib(),
        "matches": statistics.mean(o["keypoints0"].shape[0] for o in outputs),
    }


def run_weights(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.save(make_weights(make_pair(Path(spec["data"]), 640, 480)), spec["out"])
    return {}


def _child(kind: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    return bench_child(kind, spec, timeout, script=__file__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="photos (all pairs are matched)")
    parser.add_argument("--long-side", type=int, default=640, help="resize: long side in px")
    parser.add_argument(
        "--thr", type=float, default=0.0, help="coarse threshold (both models; 0: every mutual NN)"
    )
    parser.add_argument("--data", type=Path, default=None, help="shared data folder")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per mode")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, spec = args.worker[0], json.loads(args.worker[1])
        print(json.dumps({"mode": run_worker, "weights": run_weights}[kind](spec)))
        return 0

    import numpy as np
    import torch

    data = args.data or Path(os.environ.get("LOFTR_SHARED_DATA", DEFAULT_DATA))
    tmp = Path(tempfile.mkdtemp(prefix="loftr-pairs-bench-"))
    images = photos(data, args.images, long_side=args.long_side)
    image_files = []
    for k, image in enumerate(images):
        image_files.append(str(tmp / f"image{k}.npy"))
        np.save(image_files[-1], image)
    pairs = list(itertools.combinations(range(len(images)), 2))
    weights = tmp / "weights.pt"
    setup = _child("weights", {"data": str(data), "out": str(weights)}, 600)
    if "error" in setup:
        raise SystemExit(f"could not make the weights: {setup['error']}")
    results: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        out = tmp / f"{mode.replace(' ', '_')}.pt"
        spec = {
            "mode": mode, "weights": str(weights), "images": image_files, "pairs": pairs,
            "thr": args.thr, "out": str(out),
        }  # fmt: skip
        results[mode] = _child("mode", spec, args.timeout)
        print(f"{mode}: {results[mode]}", file=sys.stderr, flush=True)
        if "error" not in results[mode]:
            results[mode]["outputs"] = torch.load(out, weights_only=True)

    flags = _cpu_flags()
    isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)
    sizes = sorted({f"{im.shape[1]}x{im.shape[0]}" for im in images})
    print(
        f"Machine: {_cpu_model()}, {os.cpu_count()} cores ({isa}), torch {torch.__version__}; "
        f"load average {os.getloadavg()[0]:.2f}."
    )
    print(
        f"{len(images)} photos of phototourism_sample at long side {args.long_side} "
        f"({', '.join(sizes)}), all {len(pairs)} pairs, thr {args.thr}; one fresh process per mode."
    )
    reference = results.get("kornia", {}).get("outputs")
    rows = [["mode", "pairs/s", "vs kornia", "total s", "peak RSS MiB", "vs kornia",
             "mean matches", "pairs identical to kornia's"]]  # fmt: skip
    for mode, res in results.items():
        if "error" in res:
            rows.append([mode, res["error"], *["-"] * 6])
            continue
        kres = results.get("kornia", {})
        same = "-"
        if reference is not None and mode != "kornia":
            checks = [compare(r, o) for r, o in zip(reference, res["outputs"], strict=True)]
            ok = sum(c["same_cells0"] and c["max_dkpt1_px"] <= 1e-3 for c in checks)
            same = f"{ok}/{len(checks)}"
        rows.append([
            mode, f"{res['pairs_s']:.3f}",
            f"{res['pairs_s'] / kres['pairs_s']:.2f}x" if "pairs_s" in kres else "-",
            f"{res['total_s']:.1f}", f"{res['peak_rss_mib']:.0f}",
            f"{res['peak_rss_mib'] / kres['peak_rss_mib']:.2f}" if "peak_rss_mib" in kres else "-",
            f"{res['matches']:.1f}", same,
        ])  # fmt: skip
    print(_table(rows, args.markdown))
    cached, kornia = results.get("ours cached", {}), results.get("kornia", {})
    if "pairs_s" in cached and "pairs_s" in kornia:
        ratio = cached["pairs_s"] / kornia["pairs_s"]
        print(
            f"{'PASS' if ratio >= 3 else 'FAIL'}  ours cached / kornia pairs/s: {ratio:.2f} "
            "(target >= 3)"
        )
        rss = cached["peak_rss_mib"] / kornia["peak_rss_mib"]
        print(
            f"{'PASS' if rss <= 1 else 'FAIL'}  peak RSS ours cached / kornia: {rss:.2f} (target <= 1)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
