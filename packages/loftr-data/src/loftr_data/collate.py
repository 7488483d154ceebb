"""Batching samples of the contract in :mod:`loftr_data.sample`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from loftr_data.errors import CollateError

__all__ = ["collate"]


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch samples that share one (padded) image size.

    Tensors are stacked along a new dim 0 (``image0`` -> ``(N, 1, H, W)``, ``mask0`` ->
    ``(N, H/8, W/8)``, ``K0`` -> ``(N, 3, 3)``...); ``dataset_name`` and ``scene_id`` become
    ``list[str]``; ``pair_id`` becomes an int64 tensor ``(N,)``; ``pair_names`` becomes
    ``list[tuple[str, str]]``, one tuple per sample (other non-tensor values become lists too).
    Use it as ``DataLoader(..., collate_fn=loftr_data.collate)``.

    Args:
        samples: one or more samples with the same keys and, per key, the same tensor shape.

    Returns:
        The batch dict (a new object; the samples are not modified).

    Raises:
        CollateError: if there are no samples, their keys differ, or a tensor's shape or dtype
            differs between samples (naming the key, the sample and both shapes).
    """
    if len(samples) == 0:
        raise CollateError("cannot collate an empty list of samples; give at least one")
    first = samples[0]
    keys = list(first.keys())
    for n, sample in enumerate(samples[1:], start=1):
        if set(sample.keys()) != set(keys):
            extra = sorted(set(sample.keys()) - set(keys))
            lacking = sorted(set(keys) - set(sample.keys()))
            raise CollateError(
                f"sample {n} has other keys than sample 0 (extra {extra}, missing {lacking}); "
                "batch samples of one dataset kind (depth or homography, same depth setting)"
            )
    batch: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in samples]
        ref = values[0]
        if isinstance(ref, torch.Tensor):
            for n, value in enumerate(values):
                if not isinstance(value, torch.Tensor):
                    raise CollateError(
                        f"sample {n}[{key!r}] is a {type(value).__name__}, sample 0's is a Tensor"
                    )
                if value.shape != ref.shape or value.dtype != ref.dtype:
                    raise CollateError(
                        f"cannot batch {key!r}: sample 0 has shape {tuple(ref.shape)} "
                        f"({ref.dtype}) but sample {n} has {tuple(value.shape)} ({value.dtype}); "
                        "samples of one batch must share one padded size: use the same "
                        "img_resize (MegaDepth pads to img_resize x img_resize) or output size, "
                        "or batch size 1"
                    )
            batch[key] = torch.stack(values, 0)
        elif key == "pair_id":
            batch[key] = torch.tensor([int(v) for v in values], dtype=torch.int64)
        elif key == "pair_names":
            batch[key] = [tuple(v) for v in values]
        else:
            batch[key] = list(values)
    return batch
