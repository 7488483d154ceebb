"""Side-by-side speed and peak extra memory of every loftr-attention backend on this CPU.

Usage::

    python benchmarks/attention_bench.py                 # L = S = 4800 and 12288, all backends
    python benchmarks/attention_bench.py --sizes 4800 --repeats 3 --markdown

Shapes: B = 1, H = 8, D = 32, float32, self-attention L = S (4800 tokens = a 640x480 image at 1/8,
12288 = 1024x768), no masks. A second table times the fine-level call LoFTR makes (B = 2000
matches, L = S = 25, H = 8, D = 16), which is dominated by per-call overhead.

How memory is measured (honestly, per case, in isolation): every (backend, size) case runs in a
fresh subprocess, so no allocator cache or earlier case can hide or inflate its memory. The
child imports torch, builds the inputs, then resets the kernel's resident-set high-water mark
(``echo 5 > /proc/self/clear_refs``, Linux >= 4.0) and reads its current RSS as the baseline. It
runs the backend once and reports ``VmHWM - baseline`` from ``/proc/self/status``: the peak
resident memory the call added on top of the inputs, including every temporary and the output
``(B, H, L, D)`` (12 MiB at 12288 tokens). RSS only counts pages actually touched, which all
computed tensors are. Where ``clear_refs`` is not writable the child falls back to
``ru_maxrss`` before/after (an upper bound on the baseline, so never an over-estimate).

Time: the median wall time of ``--repeats`` further calls (the memory-measuring call is the
warm-up). The machine's cores may be shared: treat times as indicative, memory as exact.

The script exits non-zero when ``memory_efficient`` uses more than 1/4 of ``full``'s peak extra
memory at the largest size (the bound loftr-attention promises for its CPU path).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

BACKENDS = ("linear", "full", "flash", "memory_efficient", "sdpa")
MIB = 1024 * 1024


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_high_water() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def run_case(
    backend_name: str, batch: int, heads: int, length: int, dim: int, repeats: int
) -> dict:
    """In this (fresh) process: peak extra memory of one call, then the median time of more."""
    import gc

    import torch

    from loftr_attention import get_backend

    torch.manual_seed(0)
    q, k, v = (torch.randn(batch, heads, length, dim) for _ in range(3))
    backend = get_backend(backend_name).eval()
    gc.collect()
    exact_method = _reset_high_water()
    baseline_kib = _status_kib("VmRSS") if exact_method else None
    if baseline_kib is None:
        exact_method = False
        baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.inference_mode():
        start = time.perf_counter()
        out = backend(q, k, v)
        first = time.perf_counter() - start
        peak_kib = _status_kib("VmHWM") if exact_method else None
        if peak_kib is None:
            peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        del out
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            backend(q, k, v)
            times.append(time.perf_counter() - start)
    return {
        "backend": backend_name,
        "length": length,
        "batch": batch,
        "median_s": statistics.median(times) if times else first,
        "first_s": first,
        "peak_extra_mib": max(0, peak_kib - baseline_kib) / 1024,
        "method": "VmHWM-reset" if exact_method else "ru_maxrss",
    }


def _child(args: list[str], timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"rc {proc.returncode}"]
        return {"error": tail[0][:80]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(rows: list[list[str]], markdown: bool) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    if markdown:
        lines = [
            "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
            for r in rows
        ]
        lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
        return "\n".join(lines)
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4800, 12288])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS))
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per case")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--no-fine", action="store_true", help="skip the fine-level table")
    parser.add_argument("--child", nargs=6, metavar="X", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, b, h, length, d, reps = args.child
        print(json.dumps(run_case(name, int(b), int(h), int(length), int(d), int(reps))))
        return 0

    import torch

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, B=1, H=8, D=32, "
        "L=S, no masks; time = median of "
        f"{args.repeats} calls; memory = peak RSS added by one call (fresh process per case)"
    )
    results: dict[tuple[str, int], dict] = {}
    for length in args.sizes:
        for name in args.backends:
            res = _child([name, "1", "8", str(length), "32", str(args.repeats)], args.timeout)
            results[name, length] = res
            print(f"  measured {name} L={length}: {res}", file=sys.stderr, flush=True)

    header = ["backend"]
    for length in args.sizes:
        header += [f"time L={length}", f"peak extra MiB L={length}"]
    rows = [header]
    for name in args.backends:
        row = [name]
        for length in args.sizes:
            res = results[name, length]
            if "error" in res:
                row += [res["error"], "-"]
            else:
                row += [f"{res['median_s'] * 1000:.0f} ms", f"{res['peak_extra_mib']:.1f}"]
        rows.append(row)
    print(_table(rows, args.markdown))

    status = 0
    big = max(args.sizes)
    full, mem = results.get(("full", big)), results.get(("memory_efficient", big))
    if full and mem and "error" not in full and "error" not in mem:
        ratio = mem["peak_extra_mib"] / max(full["peak_extra_mib"], 1e-9)
        ok = ratio <= 0.25
        status = 0 if ok else 1
        print(
            f"memory_efficient / full peak extra memory at L={big}: {ratio:.4f} "
            f"({'PASS' if ok else 'FAIL'}: bound 0.25)"
        )

    if not args.no_fine:
        fine = [["backend", "fine call B=2000 L=S=25 H=8 D=16"]]
        for name in args.backends:
            res = _child([name, "2000", "8", "25", "16", "20"], args.timeout)
            fine.append([name, res.get("error") or f"{res['median_s'] * 1000:.2f} ms"])
        print(_table(fine, args.markdown))
    return status


if __name__ == "__main__":
    sys.exit(main())
