"""The ONNX export at 640x480 with the official architecture: same matches, and its latency
beside our PyTorch eager and kornia, in one run.

Usage::

    python benchmarks/export_bench.py                    # 640x480, K 1024 and 2048, 10 runs
    python benchmarks/export_bench.py --max-matches 2048 --runs 5 --markdown
    nox -s export_bench                                  # the same, with --markdown

What runs (one process, one after the other, the same threads; medians of ``--runs`` calls
after ``--warmup``):

* ``kornia``: kornia's ``LoFTR`` (the original architecture) called on the pair;
* ``ours eager``: our ``LoFTR`` with the default execution options (``LoFTR.forward``);
* ``ours ExportMatcher``: the exported computation in PyTorch (reference options, K rows);
* ``onnxruntime CPU``: the exported file (``export_onnx``: opset 18, fixed size, K rows) in
  onnxruntime's CPU provider; ``onnxruntime CUDA`` too where a GPU and onnxruntime-gpu exist.

Weights: the seeded, BatchNorm-calibrated outdoor weights of ``bench.py`` (kornia's layout;
nothing is downloaded), with the coarse threshold chosen by its probe so that about 1000
matches pass; ``--weights NAME|PATH`` runs a real checkpoint at its own threshold instead.
Input: two overlapping crops of a real MegaDepth photo (``bench.make_pair``). The check: the
valid rows of every onnxruntime run against ``LoFTR.forward`` (the same image-0 cells, keypoints1
within 1e-3 px, confidence within 1e-4, whenever the count is <= K) and kornia's cells.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # the sibling script: its weights, pair, threshold probe and table
    DEFAULT_DATA,
    _cpu_flags,
    _cpu_model,
    _size,
    _table,
    build_model,
    choose_thr,
    make_pair,
    make_weights,
)

TARGET_MATCHES = 1000


def _median_ms(call: Callable[[], Any], runs: int, warmup: int) -> tuple[float, Any]:
    out = None
    for _ in range(warmup):
        out = call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=_size, default=(640, 480), help="WxH (default 640x480)")
    parser.add_argument(
        "--max-matches", type=int, nargs="+", default=[1024, 2048], metavar="K", help="K values"
    )
    parser.add_argument("--runs", type=int, default=10, help="timed calls per runtime")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    parser.add_argument("--weights", default=None, help="a checkpoint or name instead of seeded")
    parser.add_argument("--no-kornia", action="store_true", help="skip kornia")
    parser.add_argument("--data", type=Path, default=None, help="shared data folder")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)

    import numpy as np
    import onnxruntime as ort
    import torch

    from loftr_core.api.export import ExportMatcher, compare_with_onnxruntime, export_onnx

    torch.set_num_threads(os.cpu_count() or 1)
    width, height = args.size
    data = args.data or Path(os.environ.get("LOFTR_SHARED_DATA", DEFAULT_DATA))
    pair = make_pair(data, width, height)
    weights = make_weights(make_pair(data, 640, 480))
    if args.weights is None:  # the threshold that lets about TARGET_MATCHES pass
        probe = build_model("ours", 0.0, weights)
        with torch.inference_mode():
            conf = probe(dict(pair))["confidence"]
        thr = choose_thr(sorted(conf.tolist(), reverse=True), TARGET_MATCHES)
        model = build_model("ours", thr, weights)
    else:
        from loftr_core.api.checkpoint import load_model
        from loftr_core.api.pretrained import resolve_weights

        model = load_model(*resolve_weights(args.weights))
        thr = model.config.match_coarse.thr
        weights = model.state_dict()  # kornia's layout is ours
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    log(f"{width}x{height}, thr {thr:.6g}")

    rows = [["runtime", "K", "median ms", "vs kornia", "matches", "same as PyTorch's matches"]]
    results: dict[str, float] = {}
    a, b = pair["image0"], pair["image1"]
    with torch.inference_mode():
        reference = model({"image0": a, "image1": b})
    n_ref = int(reference["keypoints0"].shape[0])
    log(f"LoFTR.forward: {n_ref} matches")

    kornia = None
    if not args.no_kornia:
        try:
            kornia = build_model("kornia", thr, weights)
        except RuntimeError as exc:  # a checkpoint kornia's outdoor architecture cannot hold
            log(f"kornia skipped: {str(exc).splitlines()[0]}")
    if kornia is not None:

        def call_kornia() -> Any:
            with torch.inference_mode():
                return kornia({"image0": a, "image1": b})

        ms, out = _median_ms(call_kornia, args.runs, args.warmup)
        same = bool(torch.equal(out["keypoints0"], reference["keypoints0"]))
        results["kornia"] = ms
        rows.append(["kornia", "-", f"{ms:.0f}", "1x", str(out["keypoints0"].shape[0]),
                     "same cells" if same else "different cells"])  # fmt: skip
        log(f"kornia {ms:.0f} ms")
        del kornia

    eager = model  # ExportMatcher works on its own copy: this one keeps the default options

    def call_eager() -> Any:
        with torch.inference_mode():
            return eager({"image0": a, "image1": b})

    ms, out = _median_ms(call_eager, args.runs, args.warmup)
    results["eager"] = ms
    rows.append(["ours eager (PyTorch)", "-", f"{ms:.0f}", _ratio(ms, results),
                 str(out["keypoints0"].shape[0]), "-"])  # fmt: skip
    log(f"ours eager {ms:.0f} ms")

    tmp = Path(tempfile.mkdtemp(prefix="loftr-export-bench-"))
    providers = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        providers.append("CUDAExecutionProvider")
    notes = []
    for k in args.max_matches:
        wrapper = ExportMatcher(model, k, thr)

        def call_wrapper(wrapper: Any = wrapper) -> Any:
            with torch.inference_mode():
                return wrapper(a, b)

        ms, out = _median_ms(call_wrapper, args.runs, args.warmup)
        rows.append(["ours ExportMatcher (PyTorch)", str(k), f"{ms:.0f}", _ratio(ms, results),
                     str(int(out[3].sum())), "-"])  # fmt: skip
        start = time.perf_counter()
        path = export_onnx(model, tmp / f"k{k}.onnx", height, width, k, thr)
        export_s = time.perf_counter() - start
        notes.append(f"K={k}: export {export_s:.1f} s, {path.stat().st_size / 2**20:.1f} MiB")
        for provider in providers:
            session = ort.InferenceSession(str(path), providers=[provider])
            feeds = {"image0": a.numpy(), "image1": b.numpy()}
            ms, outs = _median_ms(lambda s=session, f=feeds: s.run(None, f), args.runs, args.warmup)
            n = int(np.asarray(outs[3]).sum())
            agree = compare_with_onnxruntime(
                session, model, feeds["image0"], feeds["image1"], thr, k
            )  # LoFTR.forward's matches (its K most confident beyond K)
            top = "" if n_ref <= k else f"top {k}: "
            check = f"{top}{'yes' if agree.ok else 'NO'} ({agree.keypoints1_max_px:.1e} px)"
            label = "onnxruntime " + ("CPU" if provider.startswith("CPU") else "CUDA")
            rows.append([label, str(k), f"{ms:.0f}", _ratio(ms, results), str(n), check])
            log(f"{label} K={k}: {ms:.0f} ms, {n} valid, {check}")

    flags = _cpu_flags()
    isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)
    print(
        f"Machine: {_cpu_model()}, {os.cpu_count()} cores ({isa}), torch {torch.__version__}, "
        f"onnxruntime {ort.__version__} ({', '.join(providers)}); load average "
        f"{os.getloadavg()[0]:.2f}."
    )
    print(
        f"{width}x{height} pair (bench.make_pair), official outdoor architecture, "
        + ("seeded calibrated weights" if args.weights is None else f"weights {args.weights}")
        + f", thr {thr:.4g}: LoFTR.forward finds {n_ref} matches; medians of {args.runs} calls "
        f"after {args.warmup} warm-up; {'; '.join(notes)}."
    )
    print(_table(rows, args.markdown))
    return 0


def _ratio(ms: float, results: dict[str, float]) -> str:
    return f"{ms / results['kornia']:.2f}x" if "kornia" in results else "-"


if __name__ == "__main__":
    sys.exit(main())
