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
within 1e-3 px, confidence within 1e-4, whenever the count is <= K: "yes"; within 2e-3 px and
2e-4, what float32 rounding explains: "rounding"; else "NO") and kornia's cells. Every row also
gives its distance from the exact answer (the exported computation in float64), and a line gives
the float32 spread of PyTorch's own paths on the pair (our default vs reference options, kornia
NCHW vs channels-last): the scale against which the runtimes' differences are read.
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

    rows = [["runtime", "K", "median ms", "vs kornia", "matches", "same as PyTorch's matches",
             "vs float64"]]  # fmt: skip
    results: dict[str, float] = {}
    a, b = pair["image0"], pair["image1"]
    with torch.inference_mode():
        reference = model({"image0": a, "image1": b})
    n_ref = int(reference["keypoints0"].shape[0])
    log(f"LoFTR.forward: {n_ref} matches")
    exact = _exact_keypoints(ExportMatcher, model, a, b, max(n_ref, *args.max_matches), thr)
    log("float64 answer computed (the exported computation in float64)")

    def vs_exact(k0: Any, k1: Any) -> str:
        """max |keypoints1 - float64's| over the cells both found (px)."""
        cells = [tuple(p) for p in np.asarray(k0).tolist()]
        points = np.asarray(k1, dtype=np.float64)
        gaps = [abs(q - exact[c]).max() for c, q in zip(cells, points, strict=True) if c in exact]
        return f"{max(gaps, default=0.0):.1e} px"

    kornia = None
    if not args.no_kornia:
        try:
            kornia = build_model("kornia", thr, weights)
        except RuntimeError as exc:  # a checkpoint kornia's outdoor architecture cannot hold
            log(f"kornia skipped: {str(exc).splitlines()[0]}")
    if kornia is not None:

        def call_kornia(kornia: Any = kornia) -> Any:
            with torch.inference_mode():
                return kornia({"image0": a, "image1": b})

        ms, out = _median_ms(call_kornia, args.runs, args.warmup)
        same = bool(torch.equal(out["keypoints0"], reference["keypoints0"]))
        results["kornia"] = ms
        rows.append(["kornia", "-", f"{ms:.0f}", "1x", str(out["keypoints0"].shape[0]),
                     "same cells" if same else "different cells",
                     vs_exact(out["keypoints0"], out["keypoints1"])])  # fmt: skip
        log(f"kornia {ms:.0f} ms")
    spread = _float32_spread(model, kornia, a, b, thr, reference)
    log(f"float32 spread: {spread}")
    kornia = None  # free it before the export runs

    eager = model  # ExportMatcher works on its own copy: this one keeps the default options

    def call_eager() -> Any:
        with torch.inference_mode():
            return eager({"image0": a, "image1": b})

    ms, out = _median_ms(call_eager, args.runs, args.warmup)
    results["eager"] = ms
    rows.append(["ours eager (PyTorch)", "-", f"{ms:.0f}", _ratio(ms, results),
                 str(out["keypoints0"].shape[0]), "-",
                 vs_exact(out["keypoints0"], out["keypoints1"])])  # fmt: skip
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
        n = int(out[3].sum())
        rows.append(["ours ExportMatcher (PyTorch)", str(k), f"{ms:.0f}", _ratio(ms, results),
                     str(n), "-", vs_exact(out[0][:n], out[1][:n])])  # fmt: skip
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
            verdict = "yes" if agree.ok else "rounding" if agree.within_rounding else "NO"
            check = f"{top}{verdict} ({agree.keypoints1_max_px:.1e} px, {agree.confidence_max:.0e})"
            label = "onnxruntime " + ("CPU" if provider.startswith("CPU") else "CUDA")
            rows.append([label, str(k), f"{ms:.0f}", _ratio(ms, results), str(n), check,
                         vs_exact(outs[0][:n], outs[1][:n])])  # fmt: skip
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
    print(
        "Same as PyTorch's: the same image-0 cells as LoFTR.forward and image-1 keypoints "
        "(confidences) within 1e-3 px (1e-4): yes; within 2e-3 px (2e-4), what float32 rounding "
        f"explains: rounding; else NO. Float32 spread in this run: {spread}. vs float64: max "
        "|keypoints1 - the float64 answer| (the exported computation in float64) over the "
        "common cells."
    )
    return 0


def _exact_keypoints(
    export_matcher: Any, model: Any, a: Any, b: Any, k: int, thr: float
) -> dict[tuple[float, float], Any]:
    """The exported computation in float64: image-0 keypoint -> image-1 keypoint (float64)."""
    import torch

    wrapper = export_matcher(model, k, thr).double()
    with torch.inference_mode():
        k0, k1, _, valid = wrapper(a.double(), b.double())
    n = int(valid.sum())
    return {tuple(p): q for p, q in zip(k0[:n].float().tolist(), k1[:n].numpy(), strict=True)}


def _float32_spread(model: Any, kornia: Any, a: Any, b: Any, thr: float, reference: Any) -> str:
    """How far PyTorch's own float32 paths lie apart on this pair: our default options against
    the reference options, and kornia (if given) against kornia run channels-last."""
    import torch

    from loftr_core.execution import ExecutionOptions
    from loftr_core.model import LoFTR

    def gap(x: Any, y: Any) -> str:
        if not torch.equal(x["keypoints0"], y["keypoints0"]):
            return "different cells"
        if x["keypoints1"].numel() == 0:
            return "no matches"
        d = (x["keypoints1"] - y["keypoints1"]).abs().max()
        c = (x["confidence"] - y["confidence"]).abs().max()
        return f"{float(d):.1e} px, confidence {float(c):.0e}"

    plain = LoFTR(model.config, ExecutionOptions.reference())
    plain.load_state_dict(model.state_dict())
    plain.eval()
    with torch.inference_mode():
        out = plain({"image0": a, "image1": b}, thr=thr)
    parts = [f"ours default vs reference options {gap(reference, out)}"]
    if kornia is not None:
        nhwc = {k: v.contiguous(memory_format=torch.channels_last) for k, v in
                (("image0", a), ("image1", b))}  # fmt: skip
        with torch.inference_mode():
            nchw = kornia({"image0": a, "image1": b})
            last = kornia.to(memory_format=torch.channels_last)(nhwc)
        parts.append(f"kornia NCHW vs channels-last {gap(nchw, last)}")
    return "; ".join(parts)


def _ratio(ms: float, results: dict[str, float]) -> str:
    return f"{ms / results['kornia']:.2f}x" if "kornia" in results else "-"


if __name__ == "__main__":
    sys.exit(main())
