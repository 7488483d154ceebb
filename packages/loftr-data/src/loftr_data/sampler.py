"""The scene-balanced distributed sampler.

Per epoch it draws ``n_samples_per_scene`` indices from every scene, shuffles them, optionally
repeats the list (each copy shuffled again), then gives every rank an equal, disjoint share. The
epoch's list is a pure function of ``(seed, epoch)``, so all ranks build the same list without
communicating. Unlike the original ``RandomConcatSampler`` (whose generator state carried over
epochs and restarted on resume, repeating samples), a resumed run continues exactly where it
stopped: :meth:`SceneBalancedSampler.state_dict` records the epoch and how many samples this rank
has consumed in it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence, Sized
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import ConcatDataset, Sampler

from loftr_data.errors import DataConfigError, SamplerStateError

__all__ = ["SceneBalancedSampler", "scene_lengths"]


def scene_lengths(scenes: Sequence[Sized] | ConcatDataset[Any] | Sized) -> list[int]:
    """Lengths of the scenes a sampler draws from.

    Args:
        scenes: a list of per-scene datasets, a ``ConcatDataset`` of them (its ``datasets`` are
            the scenes), or any single sized dataset (one scene).

    Returns:
        One length per scene, in order; the sampler's indices address the concatenation of the
        scenes in this order (``ConcatDataset(scenes)``).
    """
    if isinstance(scenes, ConcatDataset):
        return [len(d) for d in scenes.datasets]  # type: ignore[arg-type]
    if isinstance(scenes, (list, tuple)):
        return [len(d) for d in scenes]
    return [len(scenes)]


class SceneBalancedSampler(Sampler[int]):
    """Draw the same number of samples from every scene each epoch, sharded across ranks.

    The epoch's list has ``len(scenes) * n_samples_per_scene * repeat`` entries, built from
    ``np.random.default_rng([seed, epoch])``. It is padded with its own first entries to a multiple
    of ``num_replicas`` and rank ``r`` takes positions ``r, r + num_replicas, ...``: every rank gets
    ``ceil(total / num_replicas)`` samples, the shards are disjoint as positions and together they
    cover the whole list.

    Args:
        scenes: per-scene datasets (a list), a ``ConcatDataset`` of them, or one sized dataset (a
            single scene, e.g. the synthetic homography dataset). Only their lengths are read;
            nothing is modified. Indices refer to ``ConcatDataset(scenes)`` in the given order.
        n_samples_per_scene: samples drawn per scene per epoch (the original's
            ``N_SAMPLES_PER_SUBSET``, 100 for MegaDepth). None = the scene's own length.
        replacement: draw with replacement (the original's default). Without replacement a
            scene shorter than ``n_samples_per_scene`` contributes all its samples once, topped up
            with random draws so every scene still contributes exactly ``n_samples_per_scene``.
        shuffle: shuffle the epoch's list (otherwise scene by scene).
        repeat: how many copies of the list an epoch holds (the original's ``SB_REPEAT``).
        seed: base seed, identical on every rank.
        num_replicas: world size; defaults to ``torch.distributed``'s when initialised, else 1.
        rank: this rank; defaults to ``torch.distributed``'s when initialised, else 0.

    Raises:
        DataConfigError: on an empty scene, an invalid count or rank.
    """

    def __init__(
        self,
        scenes: Sequence[Sized] | ConcatDataset[Any] | Sized,
        n_samples_per_scene: int | None = 100,
        *,
        replacement: bool = True,
        shuffle: bool = True,
        repeat: int = 1,
        seed: int = 66,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        lengths = scene_lengths(scenes)
        if not lengths:
            raise DataConfigError("the sampler needs at least one scene, got none")
        empty = [i for i, n in enumerate(lengths) if n <= 0]
        if empty:
            raise DataConfigError(
                f"scenes {empty[:10]} are empty; every scene needs at least one sample (drop "
                "empty scenes, e.g. those whose overlap filter kept no pair)"
            )
        if n_samples_per_scene is not None and (
            isinstance(n_samples_per_scene, bool)
            or not isinstance(n_samples_per_scene, int)
            or n_samples_per_scene <= 0
        ):
            raise DataConfigError(
                f"n_samples_per_scene must be a positive int or None, got {n_samples_per_scene!r}"
            )
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise DataConfigError(f"repeat must be an int >= 1, got {repeat!r}")
        if num_replicas is None:
            num_replicas = (
                dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
            )
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise DataConfigError(
                f"rank must lie in [0, num_replicas) with num_replicas >= 1, got rank={rank}, "
                f"num_replicas={num_replicas}"
            )
        self.lengths = lengths
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.n_samples_per_scene = n_samples_per_scene
        self.replacement = replacement
        self.shuffle = shuffle
        self.repeat = repeat
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        self._resume_offset = 0  # samples of the current epoch to skip at the next __iter__
        self._yielded = 0  # samples of the current epoch handed out so far (incl. skipped)
        self._iter_start = 0  # epoch position at which the latest iteration started

    # -- the epoch's list ---------------------------------------------------------------------
    @property
    def total_size(self) -> int:
        """Entries in the epoch's list before padding (all ranks together)."""
        if self.n_samples_per_scene is None:
            return sum(self.lengths) * self.repeat
        return len(self.lengths) * self.n_samples_per_scene * self.repeat

    @property
    def num_samples(self) -> int:
        """Samples per rank per epoch: ``ceil(total_size / num_replicas)``."""
        return math.ceil(self.total_size / self.num_replicas)

    def epoch_indices(self, epoch: int | None = None) -> np.ndarray:
        """The whole epoch's list (all ranks, before padding), as int64 global indices.

        Args:
            epoch: the epoch; defaults to the current one.
        """
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, int(epoch)])
        parts = []
        for offset, length in zip(self.offsets, self.lengths, strict=True):
            n = length if self.n_samples_per_scene is None else self.n_samples_per_scene
            if self.replacement:
                local = rng.integers(0, length, size=n)
            else:
                local = rng.permutation(length)[:n]
                if n > length:
                    local = np.concatenate([local, rng.integers(0, length, size=n - length)])
            parts.append(local.astype(np.int64) + offset)
        indices = np.concatenate(parts)
        if self.shuffle:
            indices = indices[rng.permutation(len(indices))]
        copies = [indices]
        for _ in range(self.repeat - 1):
            copies.append(indices[rng.permutation(len(indices))] if self.shuffle else indices)
        return np.concatenate(copies)

    def rank_indices(self, epoch: int | None = None, rank: int | None = None) -> np.ndarray:
        """The shard of ``rank`` (default: this rank) for ``epoch``: ``num_samples`` indices."""
        rank = self.rank if rank is None else rank
        indices = self.epoch_indices(epoch)
        padded_size = self.num_samples * self.num_replicas
        if padded_size > len(indices):
            reps = math.ceil((padded_size - len(indices)) / len(indices))
            indices = np.concatenate(
                [indices, np.tile(indices, reps)[: padded_size - len(indices)]]
            )
        return indices[rank : padded_size : self.num_replicas]

    # -- epochs and resumption ----------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose list the next ``__iter__`` yields.

        Setting the epoch restored by :meth:`load_state_dict` keeps the resume position; any
        other epoch starts from its beginning.
        """
        if int(epoch) != self.epoch:
            self._resume_offset = 0
            self._yielded = 0
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Samples the next iteration yields (fewer than ``num_samples`` right after a resume)."""
        return self.num_samples - self._resume_offset

    def __iter__(self) -> Iterator[int]:
        # Set up eagerly (not inside a generator) so state_dict() is right before the first next().
        start = self._resume_offset
        self._resume_offset = 0
        self._yielded = start
        self._iter_start = start
        return self._generate(self.rank_indices()[start:].tolist())

    def _generate(self, values: list[int]) -> Iterator[int]:
        for value in values:
            self._yielded += 1
            yield value

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """The resume state of this rank.

        Args:
            consumed: samples this rank has actually trained on since the current iteration
                over the sampler began (e.g. ``batches_done * batch_size``, counted from 0 even
                after a resume: the sampler adds the position it resumed from). Defaults to the
                count this sampler handed out, which runs ahead of training when a
                ``DataLoader`` prefetches (workers > 0), so trainers should pass the exact number.

        Returns:
            A plain, picklable dict: ``epoch``, ``consumed`` (position in the epoch), ``seed`` and what identifies the
            sampling setup (checked by :meth:`load_state_dict`).
        """
        if consumed is None:
            position = self._yielded
        else:
            if not 0 <= int(consumed) <= self.num_samples - self._iter_start:
                raise SamplerStateError(
                    f"consumed must lie in [0, {self.num_samples - self._iter_start}] (samples of "
                    f"this iteration: {self.num_samples} per rank per epoch, resumed at "
                    f"{self._iter_start}), got {consumed}"
                )
            position = self._iter_start + int(consumed)
        return {
            "epoch": self.epoch,
            "consumed": position,
            "seed": self.seed,
            "num_replicas": self.num_replicas,
            "rank": self.rank,
            "total_size": self.total_size,
            "lengths": list(self.lengths),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next ``__iter__`` yields the rest of the saved epoch (nothing repeated or
        skipped). At the end of an epoch (``consumed == num_samples``) it moves to the next epoch.

        Raises:
            SamplerStateError: if the state was saved with another seed, world size, rank or set
                of scenes.
        """
        for key in ("seed", "num_replicas", "rank", "total_size", "lengths"):
            mine = getattr(self, key) if key != "lengths" else list(self.lengths)
            if key in state and state[key] != mine:
                raise SamplerStateError(
                    f"sampler state has {key}={state[key]!r} but this sampler has {mine!r}; "
                    "resume with the same scenes, seed, samples per scene and world size"
                )
        consumed = int(state["consumed"])
        epoch = int(state["epoch"])
        if not 0 <= consumed <= self.num_samples:
            raise SamplerStateError(
                f"sampler state has consumed={consumed}; it must lie in [0, {self.num_samples}]"
            )
        if consumed == self.num_samples:
            epoch, consumed = epoch + 1, 0
        self.epoch = epoch
        self._resume_offset = consumed
        self._yielded = consumed
