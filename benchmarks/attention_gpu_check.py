"""One prepared GPU check for loftr-attention: conformance on CUDA, then a speed/memory table.

Usage (on a machine with CUDA and loftr-attention installed)::

    python benchmarks/attention_gpu_check.py            # conformance + benchmark
    python benchmarks/attention_gpu_check.py --quick    # conformance + benchmark at 4800 only

1. Runs the conformance kit (``loftr_attention.testing``) for every registered backend on CUDA
   in float32, float16 and bfloat16 (the flash and memory-efficient SDPA kernels included). A
   dtype or mask a backend does not declare on CUDA (e.g. ``flash`` with float32 or with a mask)
   is checked to raise ``UnsupportedInputError``. Tolerances vs ``full`` in float32:
   ``loftr_attention.testing.TOLERANCES``.
2. Prints, per backend and dtype, at L = S = 4800 and 12288 (B = 1, H = 8, D = 32): the median
   CUDA-event time of 10 calls and the peak extra memory of one call
   (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the memory
   allocated before the call: the caching allocator's own view, temporaries and output
   included).

Exit status: 0 when every check passed, 1 when one failed; without a CUDA device it prints why
and exits 0 without checking anything (``--require-cuda`` makes that exit 2 instead).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import traceback

import torch

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def conformance(device: torch.device) -> bool:
    """Run every applicable check for every backend and dtype; print a line per case."""
    from loftr_attention import available_backends
    from loftr_attention.testing import ConformanceSkip, applicable_checks, run_check

    ok = True
    for name, spec in available_backends().items():
        for dtype in DTYPES:
            declared = spec.supports(device, dtype)
            checks = applicable_checks(spec, device, dtype)
            passed, skipped, failed = [], [], []
            for check in checks:
                label = check.__name__.removeprefix("check_")
                try:
                    run_check(check, spec, device=device, dtype=dtype)
                except ConformanceSkip:
                    skipped.append(label)
                except Exception as exc:  # report every failure, keep going
                    failed.append(f"{label}: {type(exc).__name__}: {exc}")
                else:
                    passed.append(label)
            ok = ok and not failed
            tag = "FAIL" if failed else "ok  "
            scope = "declared" if declared else "undeclared (must raise)"
            print(
                f"{tag} {name:<17} {str(dtype)[6:]:<9} {scope:<24} "
                f"{len(passed)} passed, {len(skipped)} skipped"
            )
            for line in failed:
                print(f"       {line}")
    return ok


def bench_case(name: str, dtype: torch.dtype, length: int, device: torch.device) -> str:
    """'time ms / peak MiB' for one backend, dtype and size, or why it could not run."""
    from loftr_attention import get_backend, get_spec

    if not get_spec(name).supports(device, dtype):
        return "n/a"
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (
        torch.randn(1, 8, length, 32, device=device, dtype=dtype, generator=gen) for _ in range(3)
    )
    backend = get_backend(name).eval()
    try:
        with torch.inference_mode():
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            out = backend(q, k, v)
            torch.cuda.synchronize(device)
            peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20
            del out
            times = []
            for _ in range(10):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                backend(q, k, v)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "OOM"
    except Exception as exc:
        return f"{type(exc).__name__}"
    finally:
        del q, k, v
        torch.cuda.empty_cache()
    return f"{statistics.median(times):.2f} ms / {peak:.0f} MiB"


def benchmark(device: torch.device, sizes: list[int]) -> None:
    from loftr_attention import available_backends

    header = ["backend", "dtype"] + [f"L=S={n}: time / peak extra" for n in sizes]
    rows = [header]
    for name in available_backends():
        for dtype in DTYPES:
            rows.append(
                [name, str(dtype)[6:]] + [bench_case(name, dtype, n, device) for n in sizes]
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="benchmark L = 4800 only")
    parser.add_argument("--no-bench", action="store_true", help="conformance only")
    parser.add_argument("--require-cuda", action="store_true", help="exit 2 without CUDA")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "attention_gpu_check: no CUDA device is available (torch "
            f"{torch.__version__}, cuda build: {torch.version.cuda}); nothing was checked. "
            "Run this script on a machine with an NVIDIA GPU."
        )
        return 2 if args.require_cuda else 0
    device = torch.device("cuda")
    print(
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"{torch.cuda.get_device_name(device)}"
    )
    try:
        ok = conformance(device)
    except Exception:
        traceback.print_exc()
        ok = False
    print(f"conformance on CUDA: {'PASSED' if ok else 'FAILED'}")
    if not args.no_bench:
        benchmark(device, [4800] if args.quick else [4800, 12288])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
