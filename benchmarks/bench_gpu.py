"""Our LoFTR vs kornia's ``LoFTR`` on a CUDA GPU: the table of ``bench.py`` for the GPU.

Usage::

    python benchmarks/bench_gpu.py                       # 640x480, 1024x768, 1600x1200
    python benchmarks/bench_gpu.py --sizes 640x480 --runs 20 --no-compile

Same weights, pair and per-size threshold as ``bench.py`` (see its docstring). Per implementation
and mode: median latency over ``--runs`` calls after warm-up (``torch.cuda.synchronize`` around
each call), peak GPU memory (``torch.cuda.max_memory_allocated`` after a reset, per case), the
number of matches and ours/kornia ratios. Modes:

* ``fp32`` (TF32 matmuls off, so fp32 means fp32), ``bf16`` (``torch.autocast``), ``compile``
  (ours: ``model.compile_stages()``, kornia: ``torch.compile``);
* ``softmax``: both models built with softmax attention instead of LoFTR's linear attention
  (kornia ``"full"``, ours ``"flash"``, i.e. SDPA's flash kernel, in bf16). The official weights
  are trained with linear attention, so this is a speed comparison of the attention kernels on
  the same (random) weights, not a drop-in mode for the official checkpoints.

Without CUDA it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # the CPU benchmark: pair, weights, comparison


def _build(impl: str, thr: float, weights: dict[str, Any], attention: str) -> Any:
    if attention == "linear":
        return bench.build_model(impl, thr, weights)
    if impl == "kornia":
        from kornia.feature.loftr import loftr as kornia_loftr

        cfg = bench._outdoor_kornia_cfg(thr)
        cfg["coarse"]["attention"] = "full"
        model = kornia_loftr.LoFTR(pretrained=None, config=cfg)
    else:
        from loftr_core.config import LoFTRConfig
        from loftr_core.model import LoFTR

        model = LoFTR(
            LoFTRConfig.outdoor_ds().replace(
                match_coarse={"thr": thr}, coarse={"attention": "flash"}
            )
        )
    model.load_state_dict(weights, strict=True)
    return model.eval()


def _case(
    impl: str, mode: str, pair: dict[str, Any], thr: float, weights: dict[str, Any], runs: int
) -> dict[str, Any]:
    import contextlib

    import torch

    attention = "softmax" if "softmax" in mode else "linear"
    model = _build(impl, thr, weights, attention).cuda()
    if "compile" in mode:
        model = model.compile_stages() if impl == "ours" else torch.compile(model)
    data = {k: v.cuda() for k, v in pair.items()}
    bf16 = "bf16" in mode or attention == "softmax"

    def ctx() -> Any:
        if bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    times: list[float] = []
    with torch.inference_mode():
        torch.cuda.synchronize()
        start = time.perf_counter()
        with ctx():
            out = model(dict(data))
        torch.cuda.synchronize()
        first = time.perf_counter() - start
        for _ in range(2):
            with ctx():
                model(dict(data))
        for _ in range(runs):
            torch.cuda.synchronize()
            start = time.perf_counter()
            with ctx():
                out = model(dict(data))
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    res = {
        "median_s": statistics.median(times),
        "first_s": first,
        "peak_mib": torch.cuda.max_memory_allocated() / 2**20,
        "matches": int(out["keypoints0"].shape[0]),
        "out": {k: out[k].float().cpu() for k in ("keypoints0", "keypoints1", "confidence")},
    }
    del model, out
    torch.cuda.empty_cache()
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Our LoFTR vs kornia's on a CUDA GPU.")
    parser.add_argument("--sizes", type=bench._size, nargs="+", default=None)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--data", type=Path, default=bench.DEFAULT_DATA)
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(
            "bench_gpu.py needs a CUDA GPU, and torch.cuda.is_available() is False on this "
            f"machine (torch {torch.__version__}, CUDA build: {torch.version.cuda}). Run it on a "
            "machine with an NVIDIA GPU and a CUDA build of torch; for the CPU table use "
            "benchmarks/bench.py.",
            file=sys.stderr,
        )
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # benchmark-process setting: fp32 is fp32
    torch.backends.cudnn.allow_tf32 = False
    sizes = args.sizes or [bench._size(s) for s in bench.DEFAULT_SIZES]
    weights = bench.make_weights(bench.make_pair(args.data, 640, 480))
    modes = ["fp32", "bf16", "softmax"] + ([] if args.no_compile else ["compile", "bf16+compile"])
    rows = [["size", "impl", "mode", "matches", "latency ms", "vs kornia", "peak GPU MiB",
             "vs kornia", "first call s", "vs our fp32"]]  # fmt: skip
    for w, h in sizes:
        pair = bench.make_pair(args.data, w, h)
        probe = _case("ours", "fp32", bench.make_pair(args.data, w, h), 0.0, weights, 1)
        conf = sorted(probe["out"]["confidence"].tolist(), reverse=True)
        thr = bench.choose_thr(conf, bench._target_matches(w, h))
        results: dict[tuple[str, str], dict[str, Any]] = {}
        for mode in modes:
            for impl in ("kornia", "ours"):
                try:
                    results[impl, mode] = _case(impl, mode, pair, thr, weights, args.runs)
                except Exception as exc:  # report and go on (e.g. out of memory)
                    results[impl, mode] = {"error": f"{type(exc).__name__}: {exc}"[:60]}
        ref = results.get(("ours", "fp32"), {}).get("out")
        for (impl, mode), res in results.items():
            row = [f"{w}x{h}", impl, mode]
            if "error" in res:
                rows.append([*row, "-", res["error"], "-", "-", "-", "-", "-"])
                continue
            k = results.get(("kornia", mode), {})
            ratio = mem = "-"
            if impl == "ours" and "median_s" in k:
                ratio = f"{res['median_s'] / k['median_s']:.2f}"
                mem = f"{res['peak_mib'] / k['peak_mib']:.2f}"
            acc = "-"
            if ref is not None and (impl, mode) != ("ours", "fp32"):
                acc = f"{100 * bench.compare(ref, res['out'])['within_1px']:.1f}% <=1px"
            rows.append([
                *row, str(res["matches"]), f"{1000 * res['median_s']:.1f}", ratio,
                f"{res['peak_mib']:.0f}", mem, f"{res['first_s']:.1f}", acc,
            ])  # fmt: skip
    print(
        f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    )
    print(bench._table(rows, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
