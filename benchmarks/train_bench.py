"""Training speed: step time and peak memory, eager vs ``trainer.execution.compile``, per attention backend.

Usage::

    python benchmarks/train_bench.py                  # CUDA: batch 4, 640x640, bf16, 12 steps
    python benchmarks/train_bench.py --markdown --steps 20
    python benchmarks/train_bench.py --device cpu --size 64 --batch 2 --steps 3 --tiny  # dry run

Each case is one ``loftr_train.Trainer`` run (the path ``loftr-train`` takes) in a fresh process,
so peak memory and dynamo's counters never mix: synthetic homographies of procedural textures
(no data needed), the official architecture (``model.preset=outdoor_ds``, random weights) built
with the case's attention backend in both transformers (``linear``, the official; ``flash`` and
``memory_efficient``, the softmax kernels one would train a new model with; a ``flash`` model's
fine transformer uses ``sdpa``, since the fine stage runs in float32 and flash needs 16 bits), ``trainer.precision``
(bf16 by default), ``trainer.execution.compile`` off or on. Validation and checkpoints are off during the
timed steps.

Per case: the median step time over the steps after the first ``--warmup`` (synchronised: from
the step's start to its end, excluding data loading), the first step's time (the one-off cost of
compilation), pairs/s, peak GPU memory (``torch.cuda.max_memory_allocated``) and dynamo's
counters after the first step and at the end: ``graphs`` (unique graphs) and ``recompiles``; a
compiled run must not compile anything after its first step (the fine stage sees a fixed budget
of matches in training). The first step's losses are printed too (every case starts from the
same seed; eager and compiled differ by the precision's rounding, which ``loss_f`` amplifies most:
in float64 they agree exactly, ``tests/test_trainer.py``).

Without CUDA and without ``--device cpu`` it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench

BACKENDS = ("linear", "flash", "memory_efficient")
TINY_MODEL = {
    "resnetfpn": {"initial_dim": 16, "block_dims": [16, 24, 32]},
    "coarse": {"d_model": 32, "nhead": 2, "layer_names": ["self", "cross"]},
    "fine": {"d_model": 16, "nhead": 2, "layer_names": ["self", "cross"]},
}


def _config(spec: dict[str, Any], run_dir: Path) -> Any:
    import yaml

    from loftr_train.presets import train_preset_path
    from loftr_train.train_config import load_config

    data = yaml.safe_load(train_preset_path("synthetic_homography").read_text())
    attention = spec["backend"]
    options: dict[str, Any] = {
        "coarse": {"attention": attention},
        # the fine stage runs in float32 even under autocast, which SDPA's flash kernel refuses
        # on CUDA (16-bit only): a flash model's fine stage gets SDPA's own kernel choice
        "fine": {"attention": "sdpa" if attention == "flash" else attention},
        "match_coarse": {"train_coarse_percent": 0.3, "train_pad_num_gt_min": 200},
    }
    if spec["tiny"]:
        for key, value in TINY_MODEL.items():
            options[key] = {**value, **options.get(key, {})}
        options["match_coarse"]["train_pad_num_gt_min"] = 8
    data["model"] = {"preset": "outdoor_ds", "options": options}
    steps = spec["warmup"] + spec["steps"]
    size = spec["size"]
    overrides = [
        f"logging.run_dir={run_dir}",
        f"data.synthetic.size=[{size},{size}]",
        f"data.batch_size={spec['batch']}",
        f"data.num_workers={spec['workers']}",
        f"data.pin_memory={str(spec['device'] == 'cuda').lower()}",
        f"sampler.n_samples_per_subset={steps * spec['batch']}",
        f"data.synthetic_train.length={steps * spec['batch']}",
        "trainer.max_epochs=1",
        f"trainer.max_steps={steps}",
        "trainer.val_every_n_epochs=0",
        f"trainer.device={spec['device']}",
        f"trainer.precision={spec['precision']}",
        f"trainer.execution.compile={str(spec['compile']).lower()}",
        "checkpoint.every_n_steps=null",
        "checkpoint.every_n_epochs=null",
        "logging.progress_bar=false",
        "logging.tensorboard=false",
    ]
    return load_config(data, overrides)


def run_case(spec: dict[str, Any]) -> dict[str, Any]:
    """One Trainer run in this process; step times, memory, dynamo counters, first losses."""
    import tempfile

    import torch
    from torch._dynamo.utils import counters

    from loftr_train.trainer import Trainer, TrainerCallbacks

    cuda = spec["device"] == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    class Timer(TrainerCallbacks):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.after_first: dict[str, int] = {}
            self.losses: dict[str, float] = {}
            self.t0 = 0.0

        def on_step_start(self, info: Any) -> None:
            sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, info: Any, scalars: Any) -> None:
            sync()
            self.times.append(time.perf_counter() - self.t0)
            if len(self.times) == 1:
                self.after_first = _counts(counters)
                self.losses = (
                    {k: float(scalars[k]) for k in ("loss_c", "loss_f")} if scalars else {}
                )

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    timer = Timer()
    with tempfile.TemporaryDirectory(prefix="loftr-train-bench-") as tmp:
        cfg = _config(spec, Path(tmp))
        Trainer(cfg, callbacks=[timer]).fit()
    timed = timer.times[spec["warmup"] :] or timer.times[-1:]
    return {
        "median_s": statistics.median(timed),
        "first_s": timer.times[0],
        "steps": len(timer.times),
        "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan"),
        "after_first": timer.after_first,
        "at_end": _counts(counters),
        "losses": timer.losses,
    }


def _counts(counters: Any) -> dict[str, int]:
    stats = counters["stats"]
    return {
        "graphs": int(stats.get("unique_graphs", 0)),
        "recompiles": int(sum(counters["recompiles"].values())),
    }


def _child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    print("\n".join(lines[-40:]), file=sys.stderr, flush=True)  # the cause, in the log
    tail = lines[-1:] or ["no output"]
    return {"error": f"exit {proc.returncode}: {tail[0][:120]}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Training step time: eager vs compiled.")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only dry-runs the logic")
    parser.add_argument("--size", type=int, default=640, help="square image side (640)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per case (12)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (3)")
    parser.add_argument("--precision", default="bf16", choices=("32", "bf16", "fp16"))
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS))
    parser.add_argument("--no-compile", action="store_true", help="eager cases only")
    parser.add_argument("--workers", type=int, default=4, help="data loader workers (4)")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model (dry runs)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per case (300)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(run_case(json.loads(args.worker))), flush=True)
        return 0

    if not bench.cuda_or_explain("train_bench.py", args.device):
        return 2
    print(
        f"{bench.device_line(args.device)}; batch {args.batch}, {args.size}x{args.size}, "
        f"precision {args.precision}, {args.steps} timed steps after {args.warmup}",
        flush=True,
    )
    rows = [["attention", "mode", "step ms", "vs eager linear", "pairs/s", "peak MiB",
             "first step s", "graphs after step 1 / end", "recompiles", "loss_c, loss_f step 1"]]  # fmt: skip
    base: float | None = None
    order = [(b, False) for b in args.backends]  # every eager case first: compiling is slow
    order += [] if args.no_compile else [(b, True) for b in args.backends]
    for backend, compiled in order:
        spec = {
            "backend": backend,
            "compile": compiled,
            "device": args.device,
            "size": args.size,
            "batch": args.batch,
            "steps": args.steps,
            "warmup": args.warmup,
            "precision": args.precision,
            "workers": args.workers,
            "tiny": args.tiny,
        }
        res = _child(spec, args.timeout)
        mode = "compiled" if compiled else "eager"
        if "error" in res:
            rows.append([backend, mode, "-", res["error"], *["-"] * 6])
            print(bench._table(rows, args.markdown), flush=True)
            continue
        if base is None and backend == "linear" and not compiled:
            base = res["median_s"]
        ratio = f"{res['median_s'] / base:.2f}" if base else "-"
        first, end = res["after_first"], res["at_end"]
        losses = ", ".join(f"{v:.4f}" for v in res["losses"].values())
        rows.append([
            backend, mode, f"{1000 * res['median_s']:.1f}", ratio,
            f"{args.batch / res['median_s']:.2f}", f"{res['peak_mib']:.0f}",
            f"{res['first_s']:.1f}", f"{first['graphs']} / {end['graphs']}",
            str(end["recompiles"]), losses,
        ])  # fmt: skip
        print(bench._table(rows, args.markdown), flush=True)  # after each case: partial results
    return 0


if __name__ == "__main__":
    sys.exit(main())
