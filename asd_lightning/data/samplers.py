"""Batch samplers the methods need: equal-length evaluation batches, same-machine pairs,
and target machine vs other machine types at 1:1 (outlier exposure).

All are deterministic per ``seed`` and epoch (Lightning calls ``set_epoch``) and split the
batches of an epoch across DDP ranks (each rank takes every ``world_size``-th batch).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _EpochBatchSampler(Sampler[list[int]]):
    """Base: subclasses build an epoch's list of batches; this shards it across ranks."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self, rng: np.random.Generator) -> list[list[int]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = _rank_and_world()
        batches = self._batches(np.random.default_rng((self.seed, self.epoch)))
        usable = len(batches) - len(batches) % world if world > 1 else len(batches)
        return iter(batches[rank:usable:world])

    def __len__(self) -> int:
        _, world = _rank_and_world()
        return self._num_batches() // world

    def _num_batches(self) -> int:
        raise NotImplementedError


class EqualLengthBatchSampler(_EpochBatchSampler):
    """Sequential batches of clips that share a length, so whole clips stack without padding."""

    def __init__(self, lengths: np.ndarray, batch_size: int) -> None:
        super().__init__()
        self.batches: list[list[int]] = []
        lengths = np.asarray(lengths)
        for length in np.unique(lengths):
            members = np.flatnonzero(lengths == length)
            self.batches += [members[i:i + batch_size].tolist() for i in range(0, len(members), batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = _rank_and_world()
        return iter(self.batches[rank::world])  # evaluation: every clip exactly once overall

    def __len__(self) -> int:
        rank, world = _rank_and_world()
        return len(self.batches[rank::world])


class SameMachinePairBatchSampler(_EpochBatchSampler):
    """Batches of ``batch_size`` (even) indices where items ``k`` and ``k + batch_size // 2``
    come from the same machine type: the mixing partners of DG-Mix. Each batch holds one
    machine type; every clip appears once per epoch as a first partner."""

    def __init__(self, machine: np.ndarray, batch_size: int, seed: int = 0, drop_last: bool = True) -> None:
        super().__init__(seed)
        if batch_size < 2 or batch_size % 2:
            raise ValueError(f"batch_size must be even and >= 2 for pairs, got {batch_size}")
        self.groups = [np.flatnonzero(machine == m) for m in np.unique(machine)]
        self.half = batch_size // 2
        self.drop_last = drop_last

    def _num_batches(self) -> int:
        count = (lambda n: n // self.half) if self.drop_last else (lambda n: -(-n // self.half))
        return sum(count(len(g)) for g in self.groups)

    def _batches(self, rng: np.random.Generator) -> list[list[int]]:
        batches = []
        for group in self.groups:
            first = rng.permutation(group)
            for i in range(0, len(first), self.half):
                chunk = first[i:i + self.half]
                if len(chunk) < self.half and self.drop_last:
                    break
                partners = rng.choice(group, size=len(chunk), replace=len(group) < len(chunk))
                batches.append(chunk.tolist() + partners.tolist())
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]


class OutlierExposureBatchSampler(_EpochBatchSampler):
    """Half target-machine clips, half clips of other machine types in every batch (1:1).

    An epoch visits every target clip once; outliers are drawn without replacement and
    reshuffled when exhausted.
    """

    def __init__(self, is_target: np.ndarray, batch_size: int, seed: int = 0, drop_last: bool = True) -> None:
        super().__init__(seed)
        if batch_size < 2 or batch_size % 2:
            raise ValueError(f"batch_size must be even and >= 2 for 1:1 batches, got {batch_size}")
        self.targets = np.flatnonzero(is_target)
        self.outliers = np.flatnonzero(~np.asarray(is_target, dtype=bool))
        if len(self.targets) == 0 or len(self.outliers) == 0:
            raise ValueError("1:1 outlier-exposure batches need target clips and clips of other machine types "
                             f"(got {len(self.targets)} target and {len(self.outliers)} other clips)")
        self.half = batch_size // 2
        self.drop_last = drop_last

    def _num_batches(self) -> int:
        n = len(self.targets)
        return n // self.half if self.drop_last else -(-n // self.half)

    def _batches(self, rng: np.random.Generator) -> list[list[int]]:
        targets = rng.permutation(self.targets)
        needed = self._num_batches() * self.half
        outliers = np.concatenate([rng.permutation(self.outliers) for _ in range(-(-needed // len(self.outliers)))])
        batches = []
        for b in range(self._num_batches()):
            chunk = targets[b * self.half:(b + 1) * self.half]
            batches.append(chunk.tolist() + outliers[b * self.half:b * self.half + len(chunk)].tolist())
        return batches
