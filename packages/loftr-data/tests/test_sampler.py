"""SceneBalancedSampler: balance, sharding, determinism and exact resumption (property tests)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import ConcatDataset, DataLoader, TensorDataset

from loftr_data import DataConfigError, SamplerStateError, SceneBalancedSampler


class _Sized:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


scene_sizes = st.lists(st.integers(1, 30), min_size=1, max_size=6)
settings_ = settings(max_examples=60, deadline=None)


def _scene_of(index: int, lengths: list[int]) -> int:
    return int(np.searchsorted(np.cumsum(lengths), index, side="right"))


@settings_
@given(
    sizes=scene_sizes,
    n=st.integers(1, 12),
    world=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
    epoch=st.integers(0, 50),
    replacement=st.booleans(),
    repeat=st.integers(1, 3),
)
def test_shards_are_equal_disjoint_and_cover(
    sizes: list[int], n: int, world: int, seed: int, epoch: int, replacement: bool, repeat: int
) -> None:
    scenes = [_Sized(s) for s in sizes]
    samplers = [
        SceneBalancedSampler(
            scenes, n, replacement=replacement, repeat=repeat, seed=seed, num_replicas=world, rank=r
        )
        for r in range(world)
    ]
    for s in samplers:
        s.set_epoch(epoch)
    full = samplers[0].epoch_indices()
    assert len(full) == len(sizes) * n * repeat
    # Scene balance: every scene contributes exactly n * repeat draws, all inside the scene.
    counts = Counter(_scene_of(i, sizes) for i in full.tolist())
    assert counts == {k: n * repeat for k in range(len(sizes))}
    if not replacement:  # each scene's draws are distinct while the scene has enough samples
        first_copy = full[: len(sizes) * n]
        for k, size in enumerate(sizes):
            mine = [i for i in first_copy.tolist() if _scene_of(i, sizes) == k]
            assert len(set(mine)) == min(n, size)
    shards = [list(s) for s in samplers]
    per_rank = -(-len(full) // world)
    assert all(len(sh) == per_rank == len(s) for sh, s in zip(shards, samplers, strict=True))
    # Interleaving the shards position by position rebuilds the (padded) epoch list exactly:
    # disjoint positions that together cover every entry of the epoch's list.
    rebuilt = [shards[r][k] for k in range(per_rank) for r in range(world)]
    assert rebuilt[: len(full)] == full.tolist()
    pad = rebuilt[len(full) :]
    # Padding repeats the list from its start (cycling when the list is shorter than the world).
    assert len(pad) < world and pad == np.resize(full, len(full) + len(pad))[len(full) :].tolist()
    # Deterministic given (seed, epoch); another epoch gives another list.
    again = SceneBalancedSampler(scenes, n, replacement=replacement, repeat=repeat, seed=seed,
                                 num_replicas=world, rank=0)  # fmt: skip
    again.set_epoch(epoch)
    assert list(again) == shards[0]


@settings_
@given(
    sizes=scene_sizes,
    world=st.integers(1, 8),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
def test_resume_neither_repeats_nor_skips(
    sizes: list[int], world: int, seed: int, data: st.DataObject
) -> None:
    scenes = [_Sized(s) for s in sizes]
    rank = data.draw(st.integers(0, world - 1))
    sampler = SceneBalancedSampler(scenes, 5, seed=seed, num_replicas=world, rank=rank)
    sampler.set_epoch(3)
    expected = list(sampler)
    stop = data.draw(st.integers(0, len(expected)))
    sampler.set_epoch(3)
    it = iter(sampler)
    seen = [next(it) for _ in range(stop)]
    state = sampler.state_dict()
    assert state["consumed"] == stop and state["epoch"] == 3
    fresh = SceneBalancedSampler(scenes, 5, seed=seed, num_replicas=world, rank=rank)
    fresh.load_state_dict(state)
    if stop == len(expected):  # a finished epoch resumes at the start of the next one
        assert fresh.epoch == 4 and len(fresh) == len(expected)
        return
    fresh.set_epoch(3)  # the trainer's usual call keeps the resume position
    assert len(fresh) == len(expected) - stop
    assert seen + list(fresh) == expected
    assert list(fresh) == expected  # the next pass of the same epoch starts from the beginning


def test_state_dict_with_trainer_count_and_mismatch() -> None:
    scenes = [_Sized(10), _Sized(3)]
    sampler = SceneBalancedSampler(scenes, 8, seed=1, num_replicas=2, rank=1)
    expected = list(sampler)
    state = sampler.state_dict(consumed=2)  # what the trainer really consumed
    fresh = SceneBalancedSampler(scenes, 8, seed=1, num_replicas=2, rank=1)
    fresh.load_state_dict(state)
    it = iter(fresh)
    assert [next(it) for _ in range(3)] == expected[2:5]
    # The trainer counts from 0 in the resumed iteration; the sampler adds where it resumed.
    again = fresh.state_dict(consumed=3)
    assert again["consumed"] == 5
    last = SceneBalancedSampler(scenes, 8, seed=1, num_replicas=2, rank=1)
    last.load_state_dict(again)
    assert list(last) == expected[5:]
    with pytest.raises(SamplerStateError, match="num_replicas"):
        SceneBalancedSampler(scenes, 8, seed=1, num_replicas=4, rank=1).load_state_dict(state)
    with pytest.raises(SamplerStateError, match="consumed"):
        sampler.state_dict(consumed=99)


def test_inputs_concat_and_single_dataset() -> None:
    a = TensorDataset(torch.arange(4))
    b = TensorDataset(torch.arange(100, 107))
    scenes = [a, b]
    concat = ConcatDataset(scenes)
    s_list = SceneBalancedSampler(scenes, 6, seed=0)
    s_concat = SceneBalancedSampler(concat, 6, seed=0)
    assert list(s_list) == list(s_concat)
    assert scenes == [a, b] and len(concat) == 11  # inputs untouched
    values = [int(concat[i][0]) for i in s_list]
    assert sum(v < 100 for v in values) == 6 and sum(v >= 100 for v in values) == 6
    single = SceneBalancedSampler(a, None, replacement=False, seed=0)
    assert sorted(single) == [0, 1, 2, 3]
    loader = DataLoader(concat, batch_size=4, sampler=s_concat)
    assert sum(len(batch[0]) for batch in loader) == 12


def test_invalid_settings() -> None:
    with pytest.raises(DataConfigError, match="empty"):
        SceneBalancedSampler([_Sized(3), _Sized(0)], 2)
    with pytest.raises(DataConfigError, match="n_samples_per_scene"):
        SceneBalancedSampler([_Sized(3)], 0)
    with pytest.raises(DataConfigError, match="rank"):
        SceneBalancedSampler([_Sized(3)], 2, num_replicas=2, rank=2)
    with pytest.raises(DataConfigError, match="repeat"):
        SceneBalancedSampler([_Sized(3)], 2, repeat=0)
