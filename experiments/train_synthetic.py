"""Train a small LoFTR on synthetic homographies on the CPU and report held-out match precision.

Not part of the test run. It trains the shipped ``synthetic_homography`` config (procedural
textures, 128x96 images, a slim LoFTR) for a wall-clock budget, then prints the precision of the
matches on the held-out split (a different seed) before and after training:

    prec@3px   fraction of a pair's matches whose reprojection error |H x0 - x1| is < 3 px,
               averaged over pairs (a pair without matches counts 0)
    matches    mean number of matches per pair, and correct (< 3 px) matches per pair

Matches come from the inference path (``LoFTR.forward``), exactly what users get. It also writes
``<run_dir>/curve.png`` (validation precision per epoch, from ``metrics.jsonl``) and prints the
per-epoch table.

    python experiments/train_synthetic.py --minutes 16 --threads 2 --run-dir runs/train_synthetic
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from loftr_core.model import LoFTR
from loftr_data import collate
from loftr_train.checkpointing import load_checkpoint
from loftr_train.train_config import TrainConfig, load_config
from loftr_train.trainer import Trainer
from loftr_train.training_data import build_datasets
from loftr_train.training_step import seed_everything
from loftr_train.validation import homography_errors


@torch.no_grad()
def held_out_precision(model: LoFTR, cfg: TrainConfig, thr: float = 3.0) -> dict[str, float]:
    """Inference-path matches on the held-out split: precision within ``thr`` px and counts."""
    _, val = build_datasets(cfg.data)
    if val is None:
        raise SystemExit("the config has no validation split")
    loader = DataLoader(val, batch_size=8, shuffle=False, collate_fn=collate)
    model.eval()
    precisions, counts, correct = [], [], []
    for batch in loader:
        out = model({k: batch[k] for k in ("image0", "image1")})
        for b in range(batch["image0"].shape[0]):
            sel = out["batch_indexes"] == b
            err = homography_errors(
                out["keypoints0"][sel], out["keypoints1"][sel], batch["H_0to1"][b]
            )
            ok = err < thr
            counts.append(int(sel.sum()))
            correct.append(int(ok.sum()))
            precisions.append(float(ok.double().mean()) if err.numel() else 0.0)
    return {
        f"prec@{thr:g}px": float(np.mean(precisions)),
        "matches_per_pair": float(np.mean(counts)),
        "correct_per_pair": float(np.mean(correct)),
        "pairs": float(len(counts)),
    }


def _fmt(m: dict[str, float]) -> str:
    return (
        f"prec@3px {m['prec@3px']:.3f}, {m['matches_per_pair']:.1f} matches/pair, "
        f"{m['correct_per_pair']:.1f} correct/pair over {m['pairs']:.0f} held-out pairs"
    )


def _curve(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _plot(rows: list[dict[str, Any]], before: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    steps = [0] + [r["step"] for r in rows]
    ax.plot(steps, [before] + [r["prec@3px"] for r in rows], "o-", label="held-out prec@3px")
    ax.set_xlabel("optimiser iterations (batch 4)")
    ax.set_ylabel("precision within 3 px")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=16.0, help="training wall-clock budget")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--run-dir", default="runs/train_synthetic")
    parser.add_argument("overrides", nargs="*", help="extra dotted.key=value config overrides")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    cfg = load_config(
        "synthetic_homography",
        [
            f"logging.run_dir={run_dir}",
            f"trainer.max_time_s={args.minutes * 60}",
            f"trainer.num_threads={args.threads}",
            "logging.progress_bar=false",
            *args.overrides,
        ],
    )
    t0 = time.perf_counter()
    seed_everything(cfg.trainer.seed)  # the same initial weights as the trainer's model
    untrained = LoFTR(cfg.model.build())
    before = held_out_precision(untrained, cfg)
    print(f"before training: {_fmt(before)}", flush=True)

    result = Trainer(cfg).fit()
    print(result.summary(), flush=True)

    ckpt = (
        run_dir
        / "checkpoints"
        / ("best.ckpt" if (run_dir / "checkpoints" / "best.ckpt").is_file() else "last.ckpt")
    )
    trained = LoFTR(cfg.model.build())
    trained.load_state_dict(load_checkpoint(ckpt)["model"])
    after = held_out_precision(trained, cfg)
    print(f"after training ({ckpt.name}): {_fmt(after)}", flush=True)

    rows = _curve(run_dir)
    print("\n| epoch | iterations | train time (s) | held-out prec@3px | matches/pair |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| - | 0 | 0 | {before['prec@3px']:.3f} | {before['matches_per_pair']:.1f} |")
    for r in rows:
        print(
            f"| {r['epoch']} | {r['step']} | {r['time_s']:.0f} | {r['prec@3px']:.3f} | "
            f"{r['mean_matches']:.1f} |"
        )
    if rows:
        _plot(rows, before["prec@3px"], run_dir / "curve.png")
        print(f"\ncurve: {run_dir / 'curve.png'}")
    print(f"total wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
