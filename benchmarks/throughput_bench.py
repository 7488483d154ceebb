"""Throughput on an image list: pairs/s of equal-size 640x480 pairs, ours against a kornia loop.

Usage::

    python benchmarks/throughput_bench.py               # CUDA: 8 photos -> all 28 pairs, batch 8
    python benchmarks/throughput_bench.py --images 10 --batch 16 --markdown
    python benchmarks/throughput_bench.py --device cpu --images 3 --size 160x120 --batch 2 --repeats 1

The photos of ``../shared/data/phototourism_sample``, grayscale, each resized to exactly
``--size`` (so that every pair has one shape), every pair of them once; ``bench.py``'s seeded
weights; one coarse threshold for all (chosen on the first pair, as ``bench.py`` does). Modes:

* ``kornia loop``: kornia's ``LoFTR`` called on each pair (what a kornia user writes);
* ``ours batched``: ``LoFTR.forward`` on ``--batch`` pairs stacked along the batch dimension;
* ``Matcher batch_size=B``: ``Matcher.match_pairs`` batching equal-size pairs;
* ``Matcher cached``: ``Matcher.match_pairs`` with ``batch_size=1``: each image through the
  backbone once, its features reused by every pair it is in;
* each again in bf16 (kornia and ``ours batched`` under ``torch.autocast``; the Matcher with
  ``dtype="bf16"``).

Per mode: pairs/s (median over ``--repeats`` passes over the whole list, after one warm-up pass
over the first pairs), ratio to the kornia fp32 loop, peak GPU memory, mean matches per pair and
the accuracy: fp32 modes against kornia fp32 (pairs whose matches have the same image-0 cells
and keypoints within 1e-3 px), bf16 modes against our fp32 (share of matches within 1 px).

Without CUDA and without ``--device cpu`` it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench

Outputs = list[dict[str, Any]]


KEYS = ("keypoints0", "keypoints1", "confidence")


def _keep(out: dict[str, Any]) -> dict[str, Any]:
    return {k: out[k].float().cpu() for k in KEYS}


def _split(out: dict[str, Any], n: int) -> Outputs:
    """A batched forward's flat matches, one dict per pair (by ``batch_indexes``)."""
    b = out["batch_indexes"]
    return [{k: out[k][b == i].float().cpu() for k in KEYS} for i in range(n)]


def _rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    """The table so far: pairs/s, ratio, memory, matches and accuracy per measured mode."""
    import numpy as np

    rows = [["mode", "pairs/s", "vs kornia loop", "peak GPU MiB", "matches/pair", "accuracy"]]
    base = results.get("kornia loop", {}).get("pairs_s")
    for name, res in results.items():
        if "error" in res:
            rows.append([name, res["error"], "-", "-", "-", "-"])
            continue
        bf16 = name.endswith("bf16")
        ref_name = "ours batched" if bf16 else "kornia loop"
        ref = results.get(ref_name, {}).get("outs")
        acc = "-"
        if ref is not None and name != ref_name:
            cmps = [bench.compare(a, b) for a, b in zip(ref, res["outs"], strict=True)]
            if bf16:
                share = statistics.mean(c["within_1px"] for c in cmps)
                acc = f"{100 * share:.1f}% <=1px of our fp32"
            else:
                same = sum(c["same_cells0"] and c["max_dkpt1_px"] <= 1e-3 for c in cmps)
                acc = f"{same}/{len(cmps)} pairs = kornia"
        rows.append([
            name, f"{res['pairs_s']:.2f}", f"{res['pairs_s'] / base:.2f}" if base else "-",
            f"{res['peak_mib']:.0f}",
            f"{np.mean([o['keypoints0'].shape[0] for o in res['outs']]):.0f}", acc,
        ])  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pairs/s on an image list: ours vs kornia.")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only dry-runs the logic")
    parser.add_argument("--images", type=int, default=8, help="photos; every pair of them (8)")
    parser.add_argument("--size", type=bench._size, default=(640, 480))
    parser.add_argument("--batch", type=int, default=8, help="pairs per batched call (8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None, help="shared data ($LOFTR_SHARED_DATA)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    data_dir = args.data or Path(os.environ.get("LOFTR_SHARED_DATA", bench.DEFAULT_DATA))

    import torch

    from loftr_core import Matcher

    if not bench.cuda_or_explain("throughput_bench.py", args.device):
        return 2
    device = args.device
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 is fp32
    torch.backends.cudnn.allow_tf32 = False
    images = bench.photos(data_dir, args.images, size=args.size)
    pairs = list(itertools.combinations(range(len(images)), 2))
    tensors = [torch.from_numpy(im).float().div(255.0)[None, None].to(device) for im in images]
    weights = bench.make_weights(bench.make_pair(data_dir, 640, 480))
    probe = bench.build_model("ours", 0.0, weights).to(device)
    with torch.inference_mode():
        conf = probe({"image0": tensors[0], "image1": tensors[1]})["confidence"]
    w, h = args.size
    thr = bench.choose_thr(sorted(conf.tolist(), reverse=True), bench._target_matches(w, h))
    del probe
    print(
        f"{bench.device_line(device)}; {len(images)} photos "
        f"{w}x{h} -> {len(pairs)} pairs, batch {args.batch}, thr {thr:.4g}, TF32 off",
        flush=True,
    )

    def autocast(bf16: bool) -> Any:
        if bf16:
            return torch.autocast(device, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def kornia_loop(bf16: bool) -> Callable[[list[tuple[int, int]]], Outputs]:
        model = bench.build_model("kornia", thr, weights).to(device)

        def run(todo: list[tuple[int, int]]) -> Outputs:
            outs = []
            for i, j in todo:
                with autocast(bf16):
                    outs.append(_keep(model({"image0": tensors[i], "image1": tensors[j]})))
            return outs

        return run

    def ours_batched(bf16: bool) -> Callable[[list[tuple[int, int]]], Outputs]:
        model = bench.build_model("ours", thr, weights).to(device)

        def run(todo: list[tuple[int, int]]) -> Outputs:
            outs: Outputs = []
            for start in range(0, len(todo), args.batch):
                chunk = todo[start : start + args.batch]
                data = {
                    "image0": torch.cat([tensors[i] for i, _ in chunk]),
                    "image1": torch.cat([tensors[j] for _, j in chunk]),
                }
                with autocast(bf16):
                    outs.extend(_split(model(data), len(chunk)))
            return outs

        return run

    def matcher(bf16: bool, batch: int) -> Callable[[list[tuple[int, int]]], Outputs]:
        model = bench.build_model("ours", thr, weights)
        m = Matcher(model, device=device, dtype="bf16" if bf16 else "fp32", threshold=thr,
                    batch_size=batch)  # fmt: skip

        def run(todo: list[tuple[int, int]]) -> Outputs:
            results = m.match_pairs([(images[i], images[j]) for i, j in todo])
            return [
                {
                    "keypoints0": torch.from_numpy(r.keypoints0),
                    "keypoints1": torch.from_numpy(r.keypoints1),
                    "confidence": torch.from_numpy(r.confidence),
                }
                for r in results
            ]

        return run

    modes: list[tuple[str, Callable[[], Callable[[list[tuple[int, int]]], Outputs]]]] = []
    for bf16 in (False, True):
        tag = " bf16" if bf16 else ""
        modes += [
            (f"kornia loop{tag}", lambda bf16=bf16: kornia_loop(bf16)),
            (f"ours batched{tag}", lambda bf16=bf16: ours_batched(bf16)),
            (f"Matcher batch_size={args.batch}{tag}", lambda bf16=bf16: matcher(bf16, args.batch)),
            (f"Matcher cached{tag}", lambda bf16=bf16: matcher(bf16, 1)),
        ]
    results: dict[str, dict[str, Any]] = {}
    for name, make in modes:
        run = None
        try:
            run = make()
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            with torch.inference_mode():
                run(pairs[: max(2, args.batch)])  # warm-up: kernels, cuDNN autotuning
                rates, outs = [], []
                for _ in range(args.repeats):
                    sync()
                    start = time.perf_counter()
                    outs = run(pairs)
                    sync()
                    rates.append(len(pairs) / (time.perf_counter() - start))
            results[name] = {
                "pairs_s": statistics.median(rates),
                "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan"),
                "outs": outs,
            }
        except Exception as exc:  # report and go on (e.g. out of memory)
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:80]}
        del run
        print(bench._table(_rows(results), args.markdown), flush=True)  # partial results
    return 0


if __name__ == "__main__":
    sys.exit(main())
