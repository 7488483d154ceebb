"""Datasets and loaders of a training run, built from :class:`~loftr_train.train_config.DataConfig`.

* MegaDepth: one :class:`loftr_data.MegaDepthDataset` per scene-info file of the train list
  (depth loaded), and the validation list the same way.
* Synthetic: :class:`loftr_data.SyntheticHomographyDataset` for train and for the held-out
  validation split (``data.synthetic`` merged with ``data.synthetic_train`` / ``_val``; give
  the validation split another seed).

Training batches come from :class:`loftr_data.SceneBalancedSampler` (sharded across ranks, a pure
function of ``(seed, epoch)``, resumable mid-epoch); validation pairs are split ``rank::world``.
Every loader gets its own seeded ``torch.Generator`` so building one never consumes the global
RNG (which keeps resumed runs bit-identical). A sample that fails to load raises
:class:`DataLoadError` naming the scene, the pair and its files.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from loftr_core.errors import ConfigError, LoftrError
from loftr_data import (
    HomographyConfig,
    MegaDepthDataset,
    PhotometricConfig,
    SceneBalancedSampler,
    SyntheticHomographyDataset,
    collate,
    megadepth_scenes,
)
from loftr_data.errors import DataConfigError
from loftr_train.train_config import DataConfig, SamplerConfig

__all__ = [
    "DataLoadError",
    "NamedErrorDataset",
    "build_datasets",
    "make_train_loader",
    "make_train_sampler",
    "make_val_loader",
]


class DataLoadError(LoftrError, RuntimeError):
    """A training or validation sample could not be read (names the files)."""


class NamedErrorDataset(Dataset[dict[str, Any]]):
    """Wrap a dataset so a failing ``__getitem__`` says which scene, pair and files failed."""

    def __init__(self, dataset: Dataset[dict[str, Any]], split: str) -> None:
        self.dataset = dataset
        self.split = split

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return self.dataset[index]
        except Exception as exc:
            raise DataLoadError(
                f"{self.split} sample {index} failed to load: {describe_sample(self.dataset, index)}"
                f": {type(exc).__name__}: {exc}"
            ) from exc


def describe_sample(dataset: Any, index: int) -> str:
    """Scene, pair and file names of sample ``index`` (best effort, for error messages)."""
    try:
        while True:
            if isinstance(dataset, ConcatDataset):
                k = bisect.bisect_right(dataset.cumulative_sizes, index)
                index -= dataset.cumulative_sizes[k - 1] if k > 0 else 0
                dataset = dataset.datasets[k]
            elif isinstance(dataset, Subset):
                index = int(dataset.indices[index])
                dataset = dataset.dataset
            else:
                break
        if isinstance(dataset, MegaDepthDataset):
            info = dataset.scene_info
            pid = dataset.pair_ids[index]
            i, j = (int(v) for v in info.pair_indices[pid])
            files = [info.image_paths[i], info.image_paths[j]]
            if dataset.load_depth:
                files += [info.depth_paths[i], info.depth_paths[j]]
            paths = [str(dataset.root / f) if f else "None" for f in files]
            return f"scene-info {info.path}, pair {pid}, files {paths}"
        if isinstance(dataset, SyntheticHomographyDataset):
            src = (
                str(dataset.files[index % len(dataset.files)])
                if dataset.files
                else "procedural texture"
            )
            return f"synthetic pair {index} (seed {dataset.seed}), source {src}"
    except Exception:  # describing must never hide the real error
        pass
    return f"{type(dataset).__name__}[{index}]"


def _synthetic_kwargs(data: DataConfig, split: str) -> dict[str, Any]:
    merged: dict[str, Any] = dict(data.synthetic)
    merged.update(data.synthetic_train if split == "train" else data.synthetic_val)
    out: dict[str, Any] = {}
    allowed = ["length", "size", "seed", "homography", "photometric", "cache_size", "scene_id"]
    for key, value in merged.items():
        if key not in allowed:
            raise ConfigError(
                f"unknown key {key!r} in data.synthetic / data.synthetic_{split}; valid keys "
                f"are {allowed}"
            )
        if key in ("homography", "photometric") and isinstance(value, Mapping):
            cls: Any = HomographyConfig if key == "homography" else PhotometricConfig
            valid = [f.name for f in fields(cls)]
            bad = sorted(set(value) - set(valid))
            if bad:
                raise ConfigError(
                    f"unknown key(s) {bad} in data.synthetic*.{key}; valid keys are {valid}"
                )
            value = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
        if key == "size":
            value = tuple(value)
        out[key] = value
    return out


def build_datasets(
    data: DataConfig,
) -> tuple[list[Dataset[dict[str, Any]]], Dataset[dict[str, Any]] | None]:
    """The training scenes (a list, one dataset per scene) and the validation dataset.

    Raises:
        ConfigError: when a required path is missing from the config.
        DataConfigError / MissingDatasetFileError: from ``loftr_data`` (naming the file).
    """
    if data.dataset == "synthetic":
        train = SyntheticHomographyDataset(data.root, **_synthetic_kwargs(data, "train"))
        val: Dataset[dict[str, Any]] | None = SyntheticHomographyDataset(
            data.root, **_synthetic_kwargs(data, "val")
        )
        scenes: list[Dataset[dict[str, Any]]] = [train]
    else:
        root, index_dir, train_list = data.root, data.train_index_dir, data.train_list
        if root is None or index_dir is None or train_list is None:
            missing = [
                f"data.{k}"
                for k in ("root", "train_index_dir", "train_list")
                if getattr(data, k) is None
            ]
            raise ConfigError(
                f"MegaDepth training needs {missing}; set them in the YAML or as overrides, e.g. "
                "data.root=/data/megadepth/train"
            )
        scenes = list(
            megadepth_scenes(
                root,
                index_dir,
                train_list,
                img_resize=data.img_resize,
                min_overlap_score=data.min_overlap_score_train,
                load_depth=True,
            )
        )
        val = None
        if data.val_index_dir is not None and data.val_list is not None:
            val = ConcatDataset(
                megadepth_scenes(
                    data.val_root or root,
                    data.val_index_dir,
                    data.val_list,
                    img_resize=data.img_resize,
                    load_depth=True,
                )
            )
    if val is not None and data.limit_val_pairs is not None:
        val = Subset(val, range(min(data.limit_val_pairs, len(val))))  # type: ignore[arg-type]
    return scenes, val


def make_train_sampler(
    scenes: list[Dataset[dict[str, Any]]], sampler: SamplerConfig, rank: int, world_size: int
) -> SceneBalancedSampler:
    """The scene-balanced sampler of this rank."""
    try:
        return SceneBalancedSampler(
            scenes,
            sampler.n_samples_per_subset,
            replacement=sampler.replacement,
            shuffle=sampler.shuffle,
            repeat=sampler.repeat,
            seed=sampler.seed,
            num_replicas=world_size,
            rank=rank,
        )
    except DataConfigError as exc:
        raise ConfigError(f"sampler: {exc}") from exc


def make_train_loader(
    scenes: list[Dataset[dict[str, Any]]],
    sampler: SceneBalancedSampler,
    data: DataConfig,
    seed: int,
    pin_memory: bool,
) -> DataLoader[dict[str, Any]]:
    """Training loader over ``ConcatDataset(scenes)`` (drop_last: equal batches on every rank)."""
    dataset = NamedErrorDataset(ConcatDataset(scenes), "training")
    return DataLoader(
        dataset,
        batch_size=data.batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=data.num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )


def make_val_loader(
    val: Dataset[dict[str, Any]], data: DataConfig, rank: int, world_size: int, pin_memory: bool
) -> DataLoader[dict[str, Any]]:
    """Validation loader of this rank's share (``rank::world_size``, nothing duplicated)."""
    n = len(val)  # type: ignore[arg-type]
    share = Subset(NamedErrorDataset(val, "validation"), range(rank, n, world_size))
    return DataLoader(
        share,
        batch_size=data.val_batch_size,
        shuffle=False,
        collate_fn=collate,
        num_workers=data.num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(0),
    )
