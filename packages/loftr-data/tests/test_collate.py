"""collate: stacking, non-tensor keys, clear errors; loading with workers."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from loftr_data import CollateError, SyntheticHomographyDataset, collate


def test_collate_batches_samples() -> None:
    ds = SyntheticHomographyDataset(length=3, size=(64, 48))
    samples = [ds[i] for i in range(3)]
    batch = collate(samples)
    assert batch["image0"].shape == (3, 1, 48, 64)
    assert torch.equal(batch["image1"][2], samples[2]["image1"])
    assert torch.equal(batch["H_0to1"][1], samples[1]["H_0to1"])
    assert batch["pair_id"].dtype == torch.int64 and batch["pair_id"].tolist() == [0, 1, 2]
    assert batch["pair_names"] == [s["pair_names"] for s in samples]
    assert batch["scene_id"] == ["procedural"] * 3
    assert set(samples[0]) == set(batch)  # samples untouched


def test_collate_errors() -> None:
    a = SyntheticHomographyDataset(length=1, size=(64, 48))[0]
    b = SyntheticHomographyDataset(length=1, size=(64, 64))[0]
    with pytest.raises(CollateError, match=r"'image0'.*\(1, 48, 64\).*sample 1 has \(1, 64, 64\)"):
        collate([a, b])
    c = dict(a)
    del c["H_0to1"]
    with pytest.raises(CollateError, match=r"missing \['H_0to1'\]"):
        collate([a, c])
    with pytest.raises(CollateError, match="empty"):
        collate([])


def test_loader_with_workers_is_deterministic() -> None:
    ds = SyntheticHomographyDataset(length=6, size=(64, 48))
    serial = list(DataLoader(ds, batch_size=3, collate_fn=collate))
    parallel = list(DataLoader(ds, batch_size=3, collate_fn=collate, num_workers=2))
    for x, y in zip(serial, parallel, strict=True):
        assert torch.equal(x["image0"], y["image0"]) and torch.equal(x["H_0to1"], y["H_0to1"])
