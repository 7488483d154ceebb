"""Side-by-side speed and memory of our LoFTR and kornia's ``LoFTR`` on this machine.

Usage::

    python benchmarks/bench.py                      # 640x480, 1024x768, 1600x1200; 5 runs
    python benchmarks/bench.py --quick              # 640x480 only, 3 runs, no compile (iteration)
    python benchmarks/bench.py --compile            # + torch.compile modes at 640x480
    python benchmarks/bench.py --sizes 640x480 1024x768 --runs 7 --markdown
    nox -s bench                                    # = --compile --markdown (posargs override)

What is compared, and how it is kept fair:

* Same weights: a seeded ``kornia.feature.LoFTR(pretrained=None)`` (``torch.manual_seed(0)``,
  the original initialisation) whose BatchNorm running statistics are calibrated on the benchmark
  pair (one cumulative train-mode pass), loaded into both models (our ``state_dict`` keys equal
  kornia's). Same architecture: ``outdoor_ds`` = kornia's default config (dual-softmax, buggy PE,
  ``border_rm=2``).
* Same input: a real photo (``megadepth_sample/8583256543_96562c14f2_o.jpg``) resized to the
  benchmark size plus 8 px, and the pair is two overlapping crops of it, shifted by 8 px (one
  coarse cell) with a gamma change in image 1. Random weights find many mutual nearest neighbours
  on such a pair (on two different photos they find a few hundred at most).
* Same number of matches: ``thr`` is lowered in BOTH configs to a value chosen per size by a probe
  run of our model: the widest gap between consecutive confidences just above the target count
  (1000 matches at 640x480, 5000 at larger sizes), so both sides give the target count (or a few
  more). The check compares the match sets: identical cells, image-1 keypoints within 1e-3 px.
* Fresh subprocess per case (implementation x mode x size), so peak RSS (``ru_maxrss``: the whole
  process, including torch, the model and the inputs) never mixes between cases. Threads:
  ``torch.set_num_threads(os.cpu_count())``. Every call runs under ``torch.inference_mode()``.
* Latency: median of ``--runs`` calls after ``--warmup`` warm-up calls (the first call of a
  compiled model is reported separately as its compile time). Stages of eager runs are timed with
  forward hooks on ``backbone``, ``loftr_coarse`` and ``coarse_matching`` (fine stage = the rest
  after coarse matching; "other" = validation, positional encoding, flattening).
* FLOPs are counted (``torch.utils.flop_counter.FlopCounterMode``: convolutions and matrix
  products, per module) on our fp32 model, and achieved GFLOP/s is set against a measured fp32
  matrix-multiply peak (median of large ``torch.mm``) in the same run.

Modes (tokens joined by ``+``): ``eager`` (fp32, the default configuration, exact), ``nhwc``
(``ExecutionOptions(channels_last=True)``), ``fbf16`` (``fine_branch_dtype="bfloat16"``: the
FPN path that only feeds the fine map in bf16, coarse matches unchanged), ``tbf16``
(``coarse_dtype="bfloat16"``: the coarse transformer under bf16 autocast), ``bf16``
(``torch.autocast("cpu", torch.bfloat16)`` around the call, as ``Matcher(dtype="bf16")``; our fine
stage stays float32), ``compile`` (ours: ``model.compile_stages()``; kornia: ``torch.compile``),
``twopass`` (``coarse_one_pass=False``: coarse matching dense or in two passes, as before).
Accuracy of a mode: the share of its matches whose image-0 cell is an fp32 match of ours and whose
image-1 keypoint lies within 1 px of that match's. "CPU s" is the process CPU time per call (all
threads): steadier than wall time when other jobs share the cores.

The machine's cores may be shared; check ``uptime`` before trusting a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data"
IMAGE = "megadepth_sample/8583256543_96562c14f2_o.jpg"
SHIFT = 8  # pixels between the two crops: one coarse cell
DEFAULT_SIZES = ("640x480", "1024x768", "1600x1200")
KORNIA_MEMORY_LIMIT_GIB = 14.0  # address-space cap of kornia workers (it needs L x S matrices)


# ------------------------------------------------------------------------------------- helpers
def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x480, got {text!r}") from None
    if w % 8 or h % 8 or w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"width and height must be multiples of 8, got {text}")
    return w, h


def _target_matches(w: int, h: int) -> int:
    return 1000 if w * h <= 640 * 480 else 5000


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _peak_rss_mib() -> float:
    """Peak resident set of this process in MiB.

    ``VmHWM`` of ``/proc/self/status`` (per address space, so it starts afresh at ``exec``);
    ``ru_maxrss`` is the fallback, but on Linux it inherits the parent's peak across fork+exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def cuda_or_explain(script: str, device: str) -> bool:
    """False (after saying why on stderr) when ``device`` is ``cuda`` and there is no CUDA GPU."""
    import torch

    if device != "cuda" or torch.cuda.is_available():
        return True
    print(
        f"{script} needs a CUDA GPU (torch.cuda.is_available() is False here: torch "
        f"{torch.__version__}, CUDA build {torch.version.cuda}); --device cpu dry-runs it.",
        file=sys.stderr,
    )
    return False


@contextlib.contextmanager
def gpu_precision(device: str, *, tf32: bool = False, bf16: bool = False) -> Iterator[None]:
    """TF32 matmuls and convolutions on or off (restored after) and bf16 autocast or not."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def device_line(device: str) -> str:
    """The GPU (or, for a dry run, the CPU), torch and CUDA versions, for a table's header."""
    import torch

    where = torch.cuda.get_device_name() if device == "cuda" else f"cpu (dry run): {_cpu_model()}"
    return f"{where}, torch {torch.__version__}, CUDA {torch.version.cuda}"


# ---------------------------------------------------------------------------- models and inputs
def _outdoor_kornia_cfg(thr: float) -> dict[str, Any]:
    import copy

    from kornia.feature.loftr import loftr as kornia_loftr

    cfg = copy.deepcopy(kornia_loftr.default_cfg)
    cfg["match_coarse"]["thr"] = thr
    return cfg


def build_model(
    impl: str, thr: float, weights: dict[str, Any], mode: str = "eager", attention: str = "linear"
) -> Any:
    """Our model or kornia's with the given weights and coarse threshold, in eval mode.

    Our execution options by mode token: ``nhwc`` / ``nchw`` = ``channels_last`` on / off
    (neither: the default, "auto"), ``fbf16`` = ``fine_branch_dtype="bfloat16"``, ``tbf16`` =
    ``coarse_dtype="bfloat16"``, ``blas`` = ``onednn=False``, ``twopass`` =
    ``coarse_one_pass=False`` (coarse matching as before issue 16: dense, or two passes over
    chunks), ``ref`` = ``ExecutionOptions.reference()`` (the original's kernels and float
    rounding). ``attention="softmax"`` builds both with softmax attention in the coarse
    transformer (kornia ``"full"``, ours ``"flash"``).
    """
    if impl == "kornia":
        from kornia.feature.loftr import loftr as kornia_loftr

        kcfg = _outdoor_kornia_cfg(thr)
        if attention == "softmax":
            kcfg["coarse"]["attention"] = "full"
        model = kornia_loftr.LoFTR(pretrained=None, config=kcfg)
    else:
        from loftr_core import ExecutionOptions, LoFTR, LoFTRConfig

        tokens = mode.split("+")
        options = ExecutionOptions.reference() if "ref" in tokens else ExecutionOptions()
        changes: dict[str, Any] = {}
        if "nhwc" in tokens or "nchw" in tokens:
            changes["channels_last"] = "nhwc" in tokens
        if "blas" in tokens:
            changes["onednn"] = False
        if "twopass" in tokens:
            changes["coarse_one_pass"] = False
        if "fbf16" in tokens:
            changes["fine_branch_dtype"] = "bfloat16"
        if "tbf16" in tokens:
            changes["coarse_dtype"] = "bfloat16"
        cfg = LoFTRConfig.outdoor_ds().replace(match_coarse={"thr": thr})
        if attention == "softmax":
            cfg = cfg.replace(coarse={"attention": "flash"})
        model = LoFTR(cfg, options.replace(**changes))
    model.load_state_dict(weights, strict=True)
    return model.eval()


def make_pair(data_dir: Path, w: int, h: int) -> dict[str, Any]:
    """Two overlapping crops (8 px apart, gamma 0.8 on image 1) of one real photo, (1,1,h,w)."""
    import cv2
    import numpy as np
    import torch

    path = data_dir / IMAGE
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise SystemExit(f"cannot read {path}; pass --data pointing at the shared data folder")
    big = cv2.resize(img, (w + SHIFT, h + SHIFT), interpolation=cv2.INTER_AREA)
    a = big[:h, :w].astype(np.float32) / 255.0
    b = (big[SHIFT:, SHIFT:].astype(np.float32) / 255.0) ** 0.8

    def t(x: Any) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x))[None, None].float()

    return {"image0": t(a), "image1": t(b)}


def photos(
    data_dir: Path, count: int, long_side: int | None = None, size: tuple[int, int] | None = None
) -> list[Any]:
    """The first ``count`` photos of ``phototourism_sample``, grayscale uint8: resized by the
    original's rule to ``long_side`` (each side floored to a multiple of 8), or to exactly
    ``size`` (w, h)."""
    import cv2
    import numpy as np

    from loftr_core.api.image_io import resize_long_side

    paths = sorted((data_dir / "phototourism_sample").glob("*.jpg"))[:count]
    if len(paths) < count:
        raise SystemExit(
            f"need {count} photos in {data_dir / 'phototourism_sample'}, found {len(paths)}"
        )
    out = []
    for path in paths:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if size is not None:
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        elif long_side is not None:
            gray = resize_long_side(gray, long_side)[0]
        out.append(np.ascontiguousarray(gray))
    return out


def make_weights(pair: dict[str, Any]) -> dict[str, Any]:
    """Seeded random kornia weights, BatchNorm statistics calibrated on ``pair``."""
    import torch
    from kornia.feature.loftr import loftr as kornia_loftr

    torch.manual_seed(0)
    ref = kornia_loftr.LoFTR(pretrained=None)
    for mod in ref.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None  # cumulative: one pass = the batch statistics
    ref.backbone.train()
    with torch.no_grad():
        ref.backbone(torch.cat([pair["image0"], pair["image1"]]))
    return {k: v.clone() for k, v in ref.state_dict().items()}


# ----------------------------------------------------------------------------------- the worker
class _Timed:
    """Callable stand-in for a stage module that adds its wall time to a timer."""

    def __init__(self, inner: Any, timer: StageTimer, name: str) -> None:
        self.inner, self.timer, self.name = inner, timer, name
        self.sync = timer.sync

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.sync()
        start = time.perf_counter()
        out = self.inner(*args, **kwargs)
        self.sync()
        end = time.perf_counter()
        self.timer.totals[self.name] = self.timer.totals.get(self.name, 0.0) + end - start
        self.timer.marks[self.name + "_end"] = end
        return out


class StageTimer:
    """Wall time spent in the backbone, coarse transformer and coarse matching.

    The stage modules are replaced (in ``model.__dict__``, outside any compiled region) by
    callables that time them, so this also works after ``model.compile_stages()``; the fine stage
    is the rest after coarse matching, "other" what precedes the backbone and sits between stages.
    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before and after each timed stage.
    """

    STAGES = ("backbone", "loftr_coarse", "coarse_matching")

    def __init__(self, model: Any, sync: Any = None) -> None:
        self.sync = sync or (lambda: None)
        self.totals: dict[str, float] = {}
        self.marks: dict[str, float] = {}
        for name in self.STAGES:
            mod = getattr(model, name, None)
            if mod is not None:
                # an instance attribute shadows the registered submodule for attribute lookup
                object.__setattr__(model, name, _Timed(mod, self, name))
        self.ok = all(isinstance(model.__dict__.get(n), _Timed) for n in self.STAGES)

    def start(self) -> None:
        self.totals = {}
        self.marks = {}

    def finish(self, total: float, end: float) -> dict[str, float]:
        out = dict(self.totals)
        fine_start = self.marks.get("coarse_matching_end")
        out["fine"] = end - fine_start if fine_start is not None else float("nan")
        out["other"] = total - sum(out.values())
        return out


def _prepare(model: Any, impl: str, mode: str) -> tuple[Any, Any]:
    """The model for a mode and the context manager to call it in.

    ``bf16``: ``torch.autocast("cpu", torch.bfloat16)`` around the call (what ``Matcher(dtype=
    "bf16")`` does; our fine stage opts out and runs in float32). ``compile``: for ours
    ``model.compile_stages()`` (backbone and coarse transformer static, fine transformer
    ``dynamic=True``), for kornia ``torch.compile(model)``.
    """
    import contextlib

    import torch

    if "compile" in mode.split("+"):
        model = model.compile_stages() if impl == "ours" else torch.compile(model)
    if "bf16" in mode.split("+"):
        return model, lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return model, contextlib.nullcontext


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One case in this (fresh) process: latency, stages, peak RSS, matches; outputs saved."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    if spec["impl"] == "kornia" and spec.get("mem_limit_gib"):
        cap = int(spec["mem_limit_gib"] * 1024**3)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    weights = torch.load(spec["weights"], weights_only=True)
    pair = torch.load(spec["pair"], weights_only=True)
    model = build_model(spec["impl"], spec["thr"], weights, spec["mode"])
    del weights
    estimate = None
    if spec["impl"] == "ours":  # what Matcher's memory check predicts for this call
        from loftr_core.api.memory import estimate_peak_bytes

        shapes = tuple(pair["image0"].shape), tuple(pair["image1"].shape)
        estimate = estimate_peak_bytes(model, *shapes) / 2**20
    model, context = _prepare(model, spec["impl"], spec["mode"])
    data = dict(pair)
    rss_loaded = _peak_rss_mib()
    compiled_whole = spec["impl"] == "kornia" and "compile" in spec["mode"].split("+")
    timer = None if compiled_whole else StageTimer(model)

    first_s = None
    recompiles = None
    with torch.inference_mode():
        for i in range(spec["warmup"]):
            start = time.perf_counter()
            with context():
                out = model(dict(data))
            if i == 0:
                first_s = time.perf_counter() - start
        times: list[float] = []
        cpu: list[float] = []
        stages: list[dict[str, float]] = []
        for _ in range(spec["runs"]):
            if timer is not None:
                timer.start()
            cpu_start = time.process_time()
            start = time.perf_counter()
            with context():
                out = model(dict(data))
            end = time.perf_counter()
            cpu.append(time.process_time() - cpu_start)
            times.append(end - start)
            if timer is not None:
                stages.append(timer.finish(end - start, end))
        if "compile" in spec["mode"] and spec.get("recompile_check"):
            # a second pair with a different number of matches must not trigger a recompile
            from torch._dynamo.utils import counters

            before = sum(counters["stats"].values())
            other = {k: v.flip(-1).contiguous() for k, v in data.items()}
            with context():
                model(other)
            recompiles = sum(counters["stats"].values()) - before
    peak = _peak_rss_mib()
    torch.save({k: out[k].float() for k in ("keypoints0", "keypoints1", "confidence")}, spec["out"])
    result: dict[str, Any] = {
        "median_s": statistics.median(times),
        "cpu_s": statistics.median(cpu),
        "times": times,
        "first_s": first_s,
        "peak_rss_mib": peak,
        "rss_loaded_mib": rss_loaded,
        "estimate_mib": estimate,
        "matches": int(out["keypoints0"].shape[0]),
        "recompile_stats_delta": recompiles,
    }
    if stages:
        result["stages"] = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
    if spec.get("count_flops"):
        result["flops"] = count_flops(model, data)
    return result


def count_flops(model: Any, data: dict[str, Any]) -> dict[str, float]:
    """Matmul/conv FLOPs of one call: total and per top-level submodule."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(dict(data))
    out: dict[str, float] = {}
    for name, ops in counter.get_flop_counts().items():
        parts = name.split(".")
        key = "total" if name == "Global" else (parts[1] if len(parts) == 2 else None)
        if key is not None:
            out[key] = float(sum(ops.values()))
    return out


def run_weights(spec: dict[str, Any]) -> dict[str, Any]:
    """Make the shared weights (in a worker, so the orchestrator stays small)."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    torch.save(make_weights(make_pair(Path(spec["data"]), 640, 480)), spec["out"])
    return {"ok": True}


def run_mm_peak() -> dict[str, Any]:
    """Median matrix-multiply throughput (GFLOP/s) of this machine, fp32 and bf16.

    Two GEMM engines: ``torch.mm`` (MKL/BLAS for fp32, square 2048 and 4096) and oneDNN, reached
    through a 1x1 channels-last convolution (a ``(N*H*W, 512) @ (512, 512)`` product), which is
    the engine the backbone's convolutions use. ``peak`` is the best of them.
    """
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(os.cpu_count() or 1)

    def rate(fn: Any, flops: float, reps: int = 7) -> float:
        fn()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return flops / statistics.median(times) / 1e9

    res: dict[str, Any] = {}
    with torch.inference_mode():
        for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            best: dict[str, float] = {}
            for n in (2048, 4096):
                a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
                best[f"mm{n}"] = rate(lambda a=a, b=b: torch.mm(a, b), 2.0 * n**3)
            x = torch.randn(4, 512, 64, 64, dtype=dtype).contiguous(
                memory_format=torch.channels_last
            )
            w = torch.randn(512, 512, 1, 1, dtype=dtype)
            best["onednn"] = rate(lambda x=x, w=w: F.conv2d(x, w), 2.0 * 4 * 64 * 64 * 512 * 512)
            res[name] = max(best.values())
            res[name + "_detail"] = best
    return res


def run_probe(spec: dict[str, Any]) -> dict[str, Any]:
    """Our fp32 model with ``thr = 0``: every mutual nearest neighbour's confidence, sorted."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    weights = torch.load(spec["weights"], weights_only=True)
    pair = torch.load(spec["pair"], weights_only=True)
    model = build_model("ours", 0.0, weights)
    with torch.inference_mode():
        conf = model(dict(pair))["confidence"]
    return {"conf": sorted(conf.tolist(), reverse=True)}


# ----------------------------------------------------------------------------- the orchestrator
def _child(
    kind: str, spec: dict[str, Any], timeout: float, script: str = __file__
) -> dict[str, Any]:
    """Run ``script --worker KIND SPEC`` in a fresh process; its last stdout line (JSON), or
    ``{"error": ...}``."""
    cmd = [sys.executable, os.path.abspath(script), "--worker", kind, json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        err = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else "")
        if proc.returncode < 0 or "memory" in err.lower() or "alloc" in err.lower():
            err = f"out of memory ({err[:60]})" if err else f"killed (signal {-proc.returncode})"
        return {"error": err[:100] or f"exit status {proc.returncode}"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def choose_thr(conf: list[float], target: int) -> float:
    """A threshold in the widest confidence gap among ranks [target, 1.05 * target]."""
    if len(conf) <= target:
        return 0.0
    hi = min(len(conf) - 1, int(target * 1.05))
    best = max(range(target, hi + 1), key=lambda i: conf[i - 1] - conf[i])
    return 0.5 * (conf[best - 1] + conf[best])


def compare(ref: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """How ``out``'s matches relate to ``ref``'s (both dicts of keypoints0/1, confidence)."""
    import torch

    k0r, k0o = ref["keypoints0"], out["keypoints0"]
    same = k0r.shape == k0o.shape and bool(torch.equal(k0r, k0o))
    res: dict[str, Any] = {"same_cells0": same}
    if same:
        res["max_dkpt1_px"] = float((ref["keypoints1"] - out["keypoints1"]).abs().max())
        res["max_dconf"] = float((ref["confidence"] - out["confidence"]).abs().max())
    # share of out's matches within 1 px of a ref match with the same image-0 cell
    index = {tuple(p): i for i, p in enumerate(k0r.round().long().tolist())}
    hits = 0
    for i, p in enumerate(k0o.round().long().tolist()):
        j = index.get(tuple(p))
        if j is not None and float((ref["keypoints1"][j] - out["keypoints1"][i]).norm()) <= 1.0:
            hits += 1
    n = max(1, k0o.shape[0])
    res["within_1px"] = hits / n
    res["recall_1px"] = hits / max(1, k0r.shape[0])
    return res


def _detail(mm: dict[str, Any], name: str) -> str:
    parts = mm.get(name + "_detail", {})
    return "(" + ", ".join(f"{k} {v:.0f}" for k, v in parts.items()) + ")" if parts else ""


def _mode_label(mode: str) -> str:
    tokens = mode.split("+")
    rest = [t for t in tokens if t != "bf16"] or ["eager"]
    return ("bf16 " if "bf16" in tokens else "fp32 ") + "+".join(rest)


def _targets(
    results: dict[tuple[str, str, tuple[int, int]], dict[str, Any]],
    outputs: dict[tuple[str, str, tuple[int, int]], Any],
) -> list[str]:
    """The issue's targets that this run can judge, each PASS/FAIL with its number."""
    lines: list[str] = []

    def get(impl: str, mode: str, size: tuple[int, int], key: str) -> float | None:
        val = results.get((impl, mode, size), {}).get(key)
        return None if val is None else float(val)

    def check(name: str, value: float | None, bound: float, fmt: str = "{:.2f}") -> None:
        if value is None:
            return
        verdict = "PASS" if value <= bound else "FAIL"
        lines.append(f"{verdict}  {name}: {fmt.format(value)} (target <= {fmt.format(bound)})")

    small, mid, big = (640, 480), (1024, 768), (1600, 1200)
    for mode in sorted({m for (i, m, s) in results if i == "ours"}):
        if not set(mode.split("+")) <= {"eager", "nhwc"}:
            continue  # the fp32 eager targets: exact modes only
        for size, bound in ((small, 0.8), (mid, 0.7)):
            ours, ref = (
                get("ours", mode, size, "median_s"),
                get("kornia", "eager", size, "median_s"),
            )
            if ours is not None and ref is not None:
                check(f"latency ours {_mode_label(mode)} / kornia, {size[0]}x{size[1]}",
                      ours / ref, bound)  # fmt: skip
        ours, ref = (
            get("ours", mode, mid, "peak_rss_mib"),
            get("kornia", "eager", mid, "peak_rss_mib"),
        )
        if ours is not None and ref is not None:
            check(f"peak RSS ours {_mode_label(mode)} / kornia, 1024x768", ours / ref, 0.5)
        for size in (small, mid):
            kout, oout = outputs.get(("kornia", "eager", size)), outputs.get(("ours", mode, size))
            if kout is not None and oout is not None:
                same = compare(kout, oout)["same_cells0"]
                lines.append(
                    f"{'PASS' if same else 'FAIL'}  matches of ours {_mode_label(mode)} identical "
                    f"to kornia's, {size[0]}x{size[1]}: {'yes' if same else 'no'}"
                )
        for size in (small, mid, big):
            est, loaded = (
                get("ours", mode, size, "estimate_mib"),
                get("ours", mode, size, "rss_loaded_mib"),
            )
            peak = get("ours", mode, size, "peak_rss_mib")
            if est is not None and loaded is not None and peak is not None:
                check(f"memory estimate ours {_mode_label(mode)}, {size[0]}x{size[1]}: "
                      "|loaded + estimate - peak RSS| / peak RSS",
                      abs(loaded + est - peak) / peak, 0.30)  # fmt: skip
        check(f"peak RSS ours {_mode_label(mode)}, 1600x1200 (MiB)",
              get("ours", mode, big, "peak_rss_mib"), 3 * 1024, "{:.0f}")  # fmt: skip
    kc = get("kornia", "compile", small, "median_s")
    for mode in [m for (i, m, s) in results if i == "ours" and "compile" in m and s == small]:
        fp32 = set(mode.split("+")) <= {"compile", "nhwc"}
        if kc is not None and fp32 and "error" not in results["ours", mode, small]:
            check(f"latency ours {_mode_label(mode)} / kornia fp32 compile, 640x480",
                  get("ours", mode, small, "median_s") / kc, 0.85)  # type: ignore[operator]  # fmt: skip
    ke = get("kornia", "eager", small, "median_s")
    ref = outputs.get(("ours", "eager", small))
    best: tuple[float, str, float] | None = None
    for (impl, mode, size), res in results.items():
        if impl != "ours" or size != small or "median_s" not in res or ref is None:
            continue
        acc = compare(ref, outputs[impl, mode, size])["within_1px"]
        if acc >= 0.95 and (best is None or res["median_s"] < best[0]):
            best = (res["median_s"], mode, acc)
    if best is not None and ke is not None:
        check(f"fastest mode with >= 95% of matches within 1 px ({_mode_label(best[1])}, "
              f"{100 * best[2]:.1f}%) / kornia fp32 eager, 640x480", best[0] / ke, 0.5)  # fmt: skip
    return lines


def _fmt_s(s: float | None) -> str:
    return "-" if s is None else f"{s:.2f}"


def _table(rows: list[list[str]], markdown: bool) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    if markdown:
        lines = [
            "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + " |"
            for r in rows
        ]
        lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
        return "\n".join(lines)
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=False)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


MODES_FIRST = ("eager", "ref", "fbf16", "fbf16+tbf16", "bf16")
MODES_OTHER = ("eager", "ref", "fbf16+tbf16")
MODES_COMPILE = ("compile", "fbf16+tbf16+compile")


def _cases(
    sizes: list[tuple[int, int]], modes: list[str], modes_other: list[str], kornia: bool
) -> list[tuple[Any, ...]]:
    """(impl, mode, size) in run order: kornia eager, ours...; compile modes on the first size."""
    cases: list[tuple[Any, ...]] = []
    for i, size in enumerate(sizes):
        ours = modes if i == 0 else modes_other
        if kornia:
            cases.append(("kornia", "eager", size))
            if any("compile" in m for m in ours):
                cases.append(("kornia", "compile", size))
        cases += [("ours", m, size) for m in ours]
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Our LoFTR vs kornia's: latency, peak RSS, matches, stages, FLOP/s."
    )
    parser.add_argument(
        "--sizes", type=_size, nargs="+", help="WxH, default: " + " ".join(DEFAULT_SIZES)
    )
    parser.add_argument("--runs", type=int, default=None, help="timed runs per case (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up calls per case")
    parser.add_argument("--quick", action="store_true", help="640x480 only, 3 runs, no compile")
    parser.add_argument("--compile", action="store_true", help="also torch.compile modes (slow)")
    parser.add_argument("--no-kornia", action="store_true", help="our model only")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=None,
        help="our modes at the first size (tokens joined by +: nhwc = channels_last, "
        "fbf16 = fine_branch_dtype bfloat16, tbf16 = coarse_dtype bfloat16, "
        "bf16 = autocast, twopass = coarse_one_pass off, compile = "
        f"compile_stages); default {' '.join(MODES_FIRST)} (+ "
        f"{' '.join(MODES_COMPILE)} with --compile)",
    )
    parser.add_argument(
        "--modes-other",
        nargs="+",
        default=list(MODES_OTHER),
        help=f"our modes at the other sizes (default {' '.join(MODES_OTHER)})",
    )
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--data", type=Path, default=None, help="shared data folder")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per case")
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        kind, spec = args.worker[0], json.loads(args.worker[1])
        fn = {
            "case": run_worker,
            "mm": lambda _: run_mm_peak(),
            "probe": run_probe,
            "weights": run_weights,
        }[kind]
        print(json.dumps(fn(spec)))
        return 0

    import torch

    if args.quick:
        sizes = args.sizes or [(640, 480)]
        runs = args.runs or 3
        compile_ = False
    else:
        sizes = args.sizes or [_size(s) for s in DEFAULT_SIZES]
        runs = args.runs or 5
        compile_ = args.compile
    if runs < 1:
        parser.error("--runs must be >= 1")
    data_dir = args.data or Path(os.environ.get("LOFTR_SHARED_DATA", DEFAULT_DATA))
    started = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - started:6.0f} s] {msg}", file=sys.stderr, flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="loftr-bench-"))
    wpath = tmp / "weights.pt"
    setup = _child("weights", {"data": str(data_dir), "out": str(wpath)}, 600)
    if "error" in setup:
        raise SystemExit(f"could not make the benchmark weights: {setup['error']}")

    mm = _child("mm", {}, 300)
    log(f"matmul peak: {mm}")
    thr: dict[tuple[int, int], float] = {}
    pairs: dict[tuple[int, int], Path] = {}
    for w, h in sizes:
        pairs[w, h] = tmp / f"pair_{w}x{h}.pt"
        torch.save(make_pair(data_dir, w, h), pairs[w, h])
        probe = _child("probe", {"weights": str(wpath), "pair": str(pairs[w, h])}, args.timeout)
        if "error" in probe:
            log(f"probe {w}x{h} failed: {probe['error']}")
            thr[w, h] = 0.0
            continue
        thr[w, h] = choose_thr(probe["conf"], _target_matches(w, h))
        log(f"{w}x{h}: {len(probe['conf'])} mutual NN at thr=0; thr={thr[w, h]:.6g}")

    results: dict[tuple[str, str, tuple[int, int]], dict[str, Any]] = {}
    outputs: dict[tuple[str, str, tuple[int, int]], Any] = {}
    modes = args.modes or [*MODES_FIRST, *(MODES_COMPILE if compile_ else ())]
    if "eager" not in modes:
        modes.insert(0, "eager")  # the reference of every accuracy column
    for impl, mode, (w, h) in _cases(sizes, modes, args.modes_other, not args.no_kornia):
        out_path = tmp / f"out_{impl}_{mode}_{w}x{h}.pt"
        spec = {
            "impl": impl,
            "mode": mode,
            "thr": thr[w, h],
            "weights": str(wpath),
            "pair": str(pairs[w, h]),
            "out": str(out_path),
            "runs": runs,
            "warmup": max(args.warmup, 2 if "compile" in mode else 1),
            "count_flops": impl == "ours" and mode == "eager" and w * h <= 1024 * 768,
            "recompile_check": impl == "ours",
            "mem_limit_gib": KORNIA_MEMORY_LIMIT_GIB,
        }
        res = _child("case", spec, args.timeout)
        results[impl, mode, (w, h)] = res
        if "error" not in res:
            outputs[impl, mode, (w, h)] = torch.load(out_path, weights_only=True)
        brief = {k: v for k, v in res.items() if k not in ("times", "flops")}
        log(f"{impl} {mode} {w}x{h}: {brief}")

    report = render(results, outputs, sizes, runs, mm, thr, args.markdown)
    print(report)
    if args.json:
        raw = {f"{i}|{m}|{w}x{h}": r for (i, m, (w, h)), r in results.items()}
        args.json.write_text(json.dumps({"results": raw, "mm": mm}, indent=1))
    return 0


def render(
    results: dict[tuple[str, str, tuple[int, int]], dict[str, Any]],
    outputs: dict[tuple[str, str, tuple[int, int]], Any],
    sizes: list[tuple[int, int]],
    runs: int,
    mm: dict[str, Any],
    thr: dict[tuple[int, int], float],
    markdown: bool,
) -> str:
    import torch

    flags = _cpu_flags()
    isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)
    lines = [
        f"Machine: {_cpu_model()}, {os.cpu_count()} cores ({isa}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.2f}.",
        f"Latency: median of {runs} runs after warm-up; peak RSS of the whole process (fresh "
        "process per case); ratios ours/kornia against kornia in the same mode (fp32 eager for "
        "bf16).",
        "",
    ]
    rows = [
        [
            "size", "impl", "mode", "thr", "matches", "latency s", "vs kornia", "CPU s",
            "vs kornia", "peak RSS MiB", "vs kornia", "first call s", "vs our fp32",
        ]
    ]  # fmt: skip
    for impl, mode, size in results:
        res = results[impl, mode, size]
        w, h = size
        row = [f"{w}x{h}", impl, _mode_label(mode)]
        row.append(f"{thr[size]:.3g}")
        if "error" in res:
            rows.append([*row, "-", res["error"], *["-"] * 7])
            continue
        kmode = "compile" if "compile" in mode else "eager"
        kres = results.get(("kornia", kmode, size), {})
        lat_ratio = cpu_ratio = mem_ratio = "-"
        if impl == "ours" and "median_s" in kres:
            lat_ratio = f"{res['median_s'] / kres['median_s']:.2f}"
            cpu_ratio = f"{res['cpu_s'] / kres['cpu_s']:.2f}"
            mem_ratio = f"{res['peak_rss_mib'] / kres['peak_rss_mib']:.2f}"
        acc = "-"
        ref = outputs.get(("ours", "eager", size))
        if ref is not None and (impl, mode, size) in outputs and (impl, mode) != ("ours", "eager"):
            c = compare(ref, outputs[impl, mode, size])
            acc = f"{100 * c['within_1px']:.1f}% <=1px"
        first = _fmt_s(res["first_s"]) if "compile" in mode else "-"
        row += [
            str(res["matches"]), f"{res['median_s']:.2f}", lat_ratio, f"{res['cpu_s']:.2f}",
            cpu_ratio, f"{res['peak_rss_mib']:.0f}", mem_ratio, first, acc,
        ]  # fmt: skip
        rows.append(row)
    lines.append(_table(rows, markdown))
    lines.append("")

    # the memory estimate of Matcher's check (loftr_core.api.memory) against the measurement
    lines.append(
        "Memory estimate (loftr_core.api.memory.estimate_peak_bytes, what Matcher checks before "
        "a call) against the measured peak RSS, our modes:"
    )
    mem_rows = [["size", "mode", "RSS loaded MiB", "estimate MiB", "loaded + estimate",
                 "peak RSS MiB", "ratio", "peak - loaded", "ratio"]]  # fmt: skip
    for (impl, mode, (w, h)), res in results.items():
        if impl != "ours" or res.get("estimate_mib") is None:
            continue
        est, loaded, peak = res["estimate_mib"], res["rss_loaded_mib"], res["peak_rss_mib"]
        mem_rows.append([
            f"{w}x{h}", _mode_label(mode), f"{loaded:.0f}", f"{est:.0f}", f"{loaded + est:.0f}",
            f"{peak:.0f}", f"{(loaded + est) / peak:.2f}", f"{peak - loaded:.0f}",
            f"{est / max(peak - loaded, 1.0):.2f}",
        ])  # fmt: skip
    lines.append(_table(mem_rows, markdown))
    lines.append("")

    # parity with kornia fp32 eager of our fp32 modes
    lines.append("Our fp32 modes against kornia fp32 eager (same weights, pair and thr):")
    for (impl, mode, size), o in outputs.items():
        k = outputs.get(("kornia", "eager", size))
        if impl != "ours" or k is None or not set(mode.split("+")) <= {"eager", "nhwc", "compile"}:
            continue
        c = compare(k, o)
        w, h = size
        head = f"  {w}x{h} {_mode_label(mode)}:"
        if c["same_cells0"]:
            lines.append(
                f"{head} same matches ({o['keypoints0'].shape[0]}), keypoints1 within "
                f"{c['max_dkpt1_px']:.2e} px, confidence within {c['max_dconf']:.2e}"
            )
        else:
            lines.append(
                f"{head} MATCHES DIFFER: ours {o['keypoints0'].shape[0]}, kornia "
                f"{k['keypoints0'].shape[0]}, {100 * c['recall_1px']:.1f}% of kornia's within 1 px"
            )
    lines.append("")

    # stages
    stage_rows = [["size", "impl", "mode", "backbone", "coarse transformer", "coarse matching",
                   "fine stage", "other", "total"]]  # fmt: skip
    for (impl, mode, (w, h)), res in results.items():
        st = res.get("stages")
        if not st:
            continue
        vals = [st.get(k, float("nan")) for k in ("backbone", "loftr_coarse", "coarse_matching")]
        vals += [st.get("fine", float("nan")), st.get("other", float("nan"))]
        stage_rows.append(
            [f"{w}x{h}", impl, mode] + [f"{v:.3f}" for v in vals] + [f"{res['median_s']:.3f}"]
        )
    lines.append("Stages (median seconds per stage):")
    lines.append(_table(stage_rows, markdown))
    lines.append("")

    # efficiency
    peak = mm.get("fp32")
    lines.append(
        f"Measured matrix-multiply peak (best median of torch.mm 2048^3 / 4096^3 and a oneDNN "
        f"1x1-convolution GEMM): fp32 {peak:.0f} GFLOP/s {_detail(mm, 'fp32')}, bf16 "
        f"{mm.get('bf16', 0):.0f} GFLOP/s {_detail(mm, 'bf16')}."
        if peak
        else "matmul peak: not measured"
    )
    eff_checks: list[str] = []
    eff_rows = [["size", "mode", "GFLOP/pair (total)", "backbone GFLOP", "ours GFLOP/s",
                 "backbone GFLOP/s", "backbone % of fp32 peak", "coarse tr. GFLOP/s"]]  # fmt: skip
    for size in sizes:
        fl = results.get(("ours", "eager", size), {}).get("flops")
        if not fl:
            continue
        for mode in ("eager", "ref"):  # fp32 modes: the same FLOPs
            res = results.get(("ours", mode, size), {})
            st = res.get("stages")
            if not st:
                continue
            w, h = size
            bb = fl.get("backbone", 0.0)
            bb_rate = bb / st["backbone"] / 1e9
            tr_rate = fl.get("loftr_coarse", 0.0) / st["loftr_coarse"] / 1e9
            eff_rows.append([
                f"{w}x{h}", _mode_label(mode), f"{fl['total'] / 1e9:.1f}", f"{bb / 1e9:.1f}",
                f"{fl['total'] / res['median_s'] / 1e9:.0f}", f"{bb_rate:.0f}",
                f"{100 * bb_rate / peak:.0f}%" if peak else "-", f"{tr_rate:.0f}",
            ])  # fmt: skip
            if peak and mode == "eager":
                share = 100 * bb_rate / peak
                eff_checks.append(
                    f"{'PASS' if share >= 75 else 'FAIL'}  backbone ours fp32 eager, {w}x{h}: "
                    f"{share:.1f}% of the measured fp32 peak (target >= 75%)"
                )
    lines.append(_table(eff_rows, markdown))
    for (impl, mode, _size), res in results.items():
        rc = res.get("recompile_stats_delta")
        if impl == "ours" and rc is not None:
            lines.append(
                f"ours {_mode_label(mode)}: dynamo compile counters changed by {rc} on a further "
                "pair with a different number of matches (0 = no recompilation)."
            )
    lines.append("")
    lines.append("Targets (issue 9):")
    lines += _targets(results, outputs)
    lines += eff_checks
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
