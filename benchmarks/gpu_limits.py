"""How close the dense stages come to the GPU's own matrix-multiply peak.

Usage::

    python benchmarks/gpu_limits.py                   # CUDA, 640x480
    python benchmarks/gpu_limits.py --markdown --runs 20
    python benchmarks/gpu_limits.py --device cpu --size 64x48 --mm 512 --runs 2   # dry run

In one run: the GPU's fp32 (TF32 off), TF32 and bf16 ``torch.mm`` peaks (square ``--mm``,
median of ``--runs`` synchronised calls), then our model (``bench.py``'s seeded weights and
pair) in fp32, TF32 and bf16 autocast: the FLOPs of the backbone and of the coarse transformer
(``torch.utils.flop_counter``: matmuls and convolutions, counted once in fp32) over their median
synchronised times (``bench.StageTimer``), as TFLOP/s and as a share of the peak of the same
precision. At batch 1 most of a stage's time can be launches and small products, which is what
the share shows.

Without CUDA and without ``--device cpu`` it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench

PRECISIONS = ("fp32", "tf32", "bf16")
STAGES = ("backbone", "loftr_coarse")


def precision(name: str, device: str) -> contextlib.AbstractContextManager[None]:
    """TF32 on for ``tf32`` only; bf16 autocast for ``bf16``."""
    return bench.gpu_precision(device, tf32=name == "tf32", bf16=name == "bf16")


def _median_s(fn: Callable[[], Any], runs: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(runs):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mm_peaks(device: str, n: int, runs: int, sync: Callable[[], None]) -> dict[str, float]:
    """TFLOP/s of an ``n x n`` ``torch.mm`` per precision (fp32 with TF32 off, TF32, bf16)."""
    import torch

    out = {}
    for name in PRECISIONS:
        dtype = torch.bfloat16 if name == "bf16" else torch.float32
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        with precision("tf32" if name == "tf32" else "fp32", device), torch.inference_mode():
            out[name] = 2.0 * n**3 / _median_s(lambda a=a, b=b: torch.mm(a, b), runs, sync) / 1e12
        del a, b
    return out


def stage_rates(
    device: str, size: tuple[int, int], runs: int, data_dir: Path, sync: Callable[[], None]
) -> dict[str, dict[str, float]]:
    """Per precision: each stage's GFLOP, median ms and TFLOP/s at ``size``."""
    import torch

    w, h = size
    pair = bench.make_pair(data_dir, w, h)
    weights = bench.make_weights(bench.make_pair(data_dir, 640, 480))
    model = bench.build_model("ours", 0.1, weights).to(device)
    data = {k: v.to(device) for k, v in pair.items()}
    flops = bench.count_flops(model, data)
    timer = bench.StageTimer(model, sync)
    if not timer.ok:
        raise SystemExit("cannot time the stages of this model (StageTimer found no stage)")
    out: dict[str, dict[str, float]] = {}
    for name in PRECISIONS:
        per_run = []
        with precision(name, device), torch.inference_mode():
            model(dict(data))  # warm-up (cuDNN autotuning, lazy allocations)
            for _ in range(runs):
                timer.start()
                sync()
                start = time.perf_counter()
                model(dict(data))
                sync()
                end = time.perf_counter()
                per_run.append(timer.finish(end - start, end))
        for stage in STAGES:
            seconds = statistics.median(r[stage] for r in per_run)
            out[f"{stage}/{name}"] = {
                "gflop": flops.get(stage, float("nan")) / 1e9,
                "ms": 1000 * seconds,
                "tflops": flops.get(stage, float("nan")) / seconds / 1e12,
            }
        out[f"total/{name}"] = {
            "gflop": flops["total"] / 1e9,
            "ms": 1000 * statistics.median(sum(r.values()) for r in per_run),
            "tflops": float("nan"),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Achieved TFLOP/s against the GPU's peaks.")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only dry-runs the logic")
    parser.add_argument("--size", type=bench._size, default=(640, 480))
    parser.add_argument("--mm", type=int, default=8192, help="side of the peak's square mm")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--data", type=Path, default=None, help="shared data ($LOFTR_SHARED_DATA)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    data_dir = args.data or Path(os.environ.get("LOFTR_SHARED_DATA", bench.DEFAULT_DATA))

    import torch

    if not bench.cuda_or_explain("gpu_limits.py", args.device):
        return 2
    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    print(bench.device_line(args.device), flush=True)
    peaks = mm_peaks(args.device, args.mm, args.runs, sync)
    print(
        f"torch.mm {args.mm}x{args.mm} peaks (TFLOP/s, median of {args.runs}): "
        + ", ".join(f"{k} {v:.3g}" for k, v in peaks.items()),
        flush=True,
    )
    rates = stage_rates(args.device, args.size, args.runs, data_dir, sync)
    rows = [["stage", "precision", "GFLOP", "ms", "TFLOP/s", "peak TFLOP/s", "share of peak"]]
    for key, r in rates.items():
        stage, name = key.split("/")
        share = r["tflops"] / peaks[name]
        rows.append([
            stage, name, f"{r['gflop']:.1f}", f"{r['ms']:.2f}",
            "-" if r["tflops"] != r["tflops"] else f"{r['tflops']:.3g}", f"{peaks[name]:.3g}",
            "-" if share != share else f"{100 * share:.1f}%",
        ])  # fmt: skip
    w, h = args.size
    print(f"Our model at {w}x{h}, batch 1 (stages synchronised; total = the whole call):")
    print(bench._table(rows, args.markdown), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
