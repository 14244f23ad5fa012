"""Batch samplers of the training and evaluation loaders: shuffled batches, class-balanced
batches, same-machine pairs, target machine vs other machine types at 1:1 (outlier exposure),
and equal-length evaluation batches.

Every training sampler is a function of ``(seed, epoch)`` only, so that

* Lightning's epoch hook reaches it: Lightning calls ``set_epoch`` on
  ``dataloader.batch_sampler.sampler``, and :attr:`EpochBatchSampler.sampler` is the batch
  sampler itself (a batch sampler without it stays at epoch 0 forever);
* each batch carries its random key ``(epoch, batch number)`` (:class:`KeyedBatch`), from
  which the dataset draws the crop positions: results do not depend on the number of loader
  workers, and a resumed run draws what the uninterrupted run drew;
* under DDP each rank takes every ``world_size``-th batch of the same epoch plan: the ranks'
  batches are disjoint and equal in number.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler


OUTLIER_STREAM = 1  # spawn key of the outlier permutations' seed sequences


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def drops_partial(drop_last: bool, full_batches: int, world: int) -> bool:
    """Whether an epoch leaves out its partial batch: with ``drop_last``, when it has a full batch
    for every rank (a batch of one breaks BatchNorm); otherwise data smaller than one batch per
    rank would train on nothing."""
    return drop_last and full_batches >= world


class KeyedBatch(list):
    """The dataset items of one batch plus ``key = (epoch, batch number)``: the seed of the
    batch's random crop positions (see :meth:`CropDataset.__getitems__`)."""

    def __init__(self, items, key: tuple[int, int]) -> None:
        super().__init__(items)
        self.key = key


class EpochBatchSampler(Sampler[list[int]]):
    """Base: a subclass plans an epoch's batches from an RNG seeded by ``(seed, epoch)``; this
    shards them across DDP ranks and keys them."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.epoch = 0

    @property
    def sampler(self) -> "EpochBatchSampler":
        """What Lightning calls ``set_epoch`` on (``dataloader.batch_sampler.sampler``)."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches(self, rng: np.random.Generator) -> list[list[int]]:
        raise NotImplementedError

    def _num_batches(self) -> int:
        raise NotImplementedError

    def epoch_plan(self) -> list[list[int]]:
        """All batches of the current epoch, before sharding."""
        return self._batches(np.random.default_rng((self.seed, self.epoch)))

    def __iter__(self) -> Iterator[KeyedBatch]:
        rank, world = _rank_and_world()
        batches = self.epoch_plan()
        usable = len(batches) - len(batches) % world
        return iter([KeyedBatch(batches[b], (self.epoch, b)) for b in range(rank, usable, world)])

    def __len__(self) -> int:
        _, world = _rank_and_world()
        return self._num_batches() // world


class ShuffledBatchSampler(EpochBatchSampler):
    """A new permutation of ``num_items`` every epoch, cut into batches of ``batch_size``; the
    partial last batch is left out as :func:`drops_partial` says."""

    def __init__(self, num_items: int, batch_size: int, seed: int = 0) -> None:
        super().__init__(seed)
        if batch_size < 1 or num_items < 1:
            raise ValueError(f"need items and a positive batch size, got {num_items} items, batch {batch_size}")
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)

    def _num_batches(self) -> int:
        full, (_, world) = self.num_items // self.batch_size, _rank_and_world()
        return full if drops_partial(True, full, world) else -(-self.num_items // self.batch_size)

    def _batches(self, rng: np.random.Generator) -> list[list[int]]:
        order = rng.permutation(self.num_items)
        return [order[b * self.batch_size:(b + 1) * self.batch_size].tolist() for b in range(self._num_batches())]


class ClassBalancedBatchSampler(ShuffledBatchSampler):
    """As many items per epoch as :class:`ShuffledBatchSampler`, drawn with replacement so that
    every class is drawn equally often in expectation (item weight ``1 / its class's size``):
    rare classes, such as the few target-domain clips of an attribute class, are oversampled."""

    def __init__(self, classes: np.ndarray, batch_size: int, seed: int = 0) -> None:
        super().__init__(len(classes), batch_size, seed)
        _, inverse, counts = np.unique(np.asarray(classes), return_inverse=True, return_counts=True)
        self.weights = 1.0 / counts[inverse]
        self.weights /= self.weights.sum()

    def _batches(self, rng: np.random.Generator) -> list[list[int]]:
        order = rng.choice(self.num_items, size=self.num_items, p=self.weights)
        return [order[b * self.batch_size:(b + 1) * self.batch_size].tolist() for b in range(self._num_batches())]


class SameMachinePairBatchSampler(EpochBatchSampler):
    """Batches of ``pairs`` pairs (``2 * pairs`` items) where items ``k`` and ``k + pairs``
    come from the same machine type: the mixing partners of DG-Mix, so ``pairs`` is the
    ``N`` of each of its branches. Each batch holds one machine type; its partner is drawn
    from the whole machine type. With ``drop_last`` a machine type's partial last batch is
    left out (as :func:`drops_partial` says); without, every item appears exactly once per
    epoch as a first partner: the partial batch is kept, and a lone remaining item joins the
    batch before it (a branch of one window has no batch statistics)."""

    def __init__(self, machine: np.ndarray, pairs: int, seed: int = 0, drop_last: bool = True) -> None:
        super().__init__(seed)
        if pairs < 1:
            raise ValueError(f"a pair batch needs at least one pair, got {pairs}")
        self.groups = [np.flatnonzero(machine == m) for m in np.unique(machine)]
        self.half = int(pairs)
        self.drop_last = drop_last

    def _drops_partial(self) -> bool:
        _, world = _rank_and_world()
        return drops_partial(self.drop_last, sum(len(g) // self.half for g in self.groups), world)

    def _group_batches(self, size: int, drop: bool) -> int:
        full, rest = divmod(size, self.half)
        if drop or rest == 0:
            return full
        return full if rest == 1 and full else full + 1  # a lone item joins the batch before it

    def _num_batches(self) -> int:
        drop = self._drops_partial()
        return sum(self._group_batches(len(g), drop) for g in self.groups)

    def _batches(self, rng: np.random.Generator) -> list[list[int]]:
        batches, drop = [], self._drops_partial()
        for group in self.groups:
            first = rng.permutation(group)
            count = self._group_batches(len(group), drop)
            for b in range(count):
                end = len(first) if b == count - 1 and not drop else (b + 1) * self.half
                chunk = first[b * self.half:end]
                partners = rng.choice(group, size=len(chunk), replace=len(group) < len(chunk))
                batches.append(chunk.tolist() + partners.tolist())
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]


class OutlierExposureBatchSampler(EpochBatchSampler):
    """Half target-machine items, half items of other machine types in every batch (1:1).

    An epoch visits every target item once. The other machine types' items form one stream
    across epochs (a new permutation each time the stream has passed them all), and epoch
    ``e`` takes its next stretch: every pseudo-anomaly is seen before any is seen twice,
    however few an epoch needs.
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
        n, (_, world) = len(self.targets), _rank_and_world()
        return n // self.half if drops_partial(self.drop_last, n // self.half, world) else -(-n // self.half)

    def outlier_stream(self, start: int, count: int) -> np.ndarray:
        """Positions ``start .. start + count`` of the endless stream of outlier permutations
        (permutation ``c`` from its own seed sequence, independent of the epoch RNG)."""
        n = len(self.outliers)
        cycles = range(start // n, (start + count - 1) // n + 1)
        seeds = [np.random.SeedSequence(self.seed, spawn_key=(OUTLIER_STREAM, c)) for c in cycles]
        stream = np.concatenate([np.random.default_rng(s).permutation(self.outliers) for s in seeds])
        offset = start - cycles[0] * n
        return stream[offset:offset + count]

    def _batches(self, rng: np.random.Generator) -> list[list[int]]:
        targets = rng.permutation(self.targets)
        chunks = [targets[b * self.half:(b + 1) * self.half] for b in range(self._num_batches())]
        needed = sum(len(c) for c in chunks)
        outliers = self.outlier_stream(self.epoch * needed, needed)
        batches, used = [], 0
        for chunk in chunks:
            batches.append(chunk.tolist() + outliers[used:used + len(chunk)].tolist())
            used += len(chunk)
        return batches


class EqualLengthBatchSampler(Sampler[list[int]]):
    """Sequential batches of clips that share a length, so whole clips stack without padding;
    under DDP every clip goes to exactly one rank."""

    def __init__(self, lengths: np.ndarray, batch_size: int) -> None:
        self.batches: list[list[int]] = []
        lengths = np.asarray(lengths)
        for length in np.unique(lengths):
            members = np.flatnonzero(lengths == length)
            self.batches += [members[i:i + batch_size].tolist() for i in range(0, len(members), batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = _rank_and_world()
        return iter(self.batches[rank::world])

    def __len__(self) -> int:
        rank, world = _rank_and_world()
        return len(self.batches[rank::world])
