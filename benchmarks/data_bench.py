"""Data-loading throughput of loftr-data (samples per second), printed as a table.

Measures, with ``DataLoader(batch_size=1, collate_fn=loftr_data.collate)``:

* MegaDepth: the real shipped pair (``../shared/data/megadepth_sample``) at 640 px with depth
  (training mode), read repeatedly through a :class:`loftr_data.SceneBalancedSampler`;
* the synthetic homography dataset at 320 x 240, procedural textures and the photo folder.

Each row runs with 0 and 2 workers. The main process runs with ``torch.set_num_threads(1)``, as
DataLoader workers do: on a busy machine torch's intra-op threads make ``collate``'s
``torch.stack`` (and so the 0-worker figure) many times slower without measuring the data code.
Usage (from the repository root)::

    python benchmarks/data_bench.py [--samples 40] [--data ../shared/data]

Numbers depend on the machine and its load; the package README records a run.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from loftr_data import MegaDepthDataset, SceneBalancedSampler, SyntheticHomographyDataset, collate


def _throughput(dataset: Dataset, n: int, workers: int) -> float:  # type: ignore[type-arg]
    sampler = SceneBalancedSampler(dataset, n, seed=0, num_replicas=1, rank=0)  # type: ignore[arg-type]
    loader = DataLoader(
        dataset, batch_size=1, sampler=sampler, num_workers=workers, collate_fn=collate
    )
    it = iter(loader)
    next(it)  # warm-up: worker start-up, first decode, caches
    start = time.perf_counter()
    count = 1
    for _ in it:
        count += 1
    return (count - 1) / (time.perf_counter() - start)


def main() -> None:
    default = Path(
        os.environ.get("LOFTR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default, help="the shared data folder")
    parser.add_argument("--samples", type=int, default=40, help="samples per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)  # what every DataLoader worker does; see the module docstring
    sample_dir = args.data / "megadepth_sample"
    rows = [
        ("MegaDepth pair, 640 px + depth", MegaDepthDataset(sample_dir, sample_dir / "sample.npz", pair_ids=[0])),
        ("MegaDepth pair, 840 px, no depth", MegaDepthDataset(
            sample_dir, sample_dir / "sample.npz", pair_ids=[0], img_resize=840, load_depth=False
        )),
        ("Homography 320x240, procedural", SyntheticHomographyDataset(length=10_000)),
        ("Homography 320x240, photos", SyntheticHomographyDataset(args.data / "phototourism_sample", length=10_000)),
    ]  # fmt: skip
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"cpu cores: {os.cpu_count()}, load average: {load:.1f}, torch threads: 1, "
        f"samples per measurement: {args.samples}"
    )
    print(f"| {'dataset':34} | 0 workers (samples/s) | 2 workers (samples/s) |")
    print(f"| {'-' * 34} | --------------------: | --------------------: |")
    for name, dataset in rows:
        r0 = _throughput(dataset, args.samples, 0)
        r2 = _throughput(dataset, args.samples, 2)
        print(f"| {name:34} | {r0:21.1f} | {r2:21.1f} |")


if __name__ == "__main__":
    main()
