"""Endless, resumable, DDP-aware batch streams (the labeled and the unlabeled loader).

The stream is one endless sequence of sample positions: epoch e is a permutation of the
dataset drawn from ``np.random.default_rng([seed, e])``, epochs are concatenated, and global
step t takes positions [t*B, (t+1)*B). Batches may straddle an epoch boundary, so no image is
dropped and a dataset smaller than B still works. Under DDP (``world_size`` > 1) rank r takes
the r-th slice of B // world_size of every global batch: ranks are disjoint within a step and
their union is the single-process batch for the same seed.

The position (epoch, index within the epoch) of the next unread sample is `state_dict()`;
`load_state_dict()` restarts the loader there, so a resumed run reads the same images in the
same order. Augmentation randomness is seeded per sample from (seed, global position): each
item is requested as ``(dataset position, sample seed)`` (see `Views.__getitem__`), so the views
of a sample do not depend on the number of loader workers, on how a global batch is split over
DDP ranks, or on whether the run was resumed.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def sample_seed(seed: int, position: int) -> int:
    """A distinct, reproducible augmentation seed for each global stream position."""
    return int(np.random.SeedSequence([seed, position]).generate_state(1, dtype=np.uint64)[0] >> 1)


class EndlessBatchSampler(Sampler[list[int]]):
    """This rank's slice of each global batch, from global position ``start`` on, forever."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int, world_size: int, start: int) -> None:
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.local = batch_size // world_size
        self.rank = rank
        self.start = start
        self._perms: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.size)}
        return self._perms[epoch]

    def indices(self, first: int, count: int) -> list[tuple[int, int]]:
        """(dataset index, augmentation seed) at global positions first .. first + count - 1."""
        out = []
        for position in range(first, first + count):
            epoch, offset = divmod(position, self.size)
            out.append((int(self.permutation(epoch)[offset]), sample_seed(self.seed, position)))
        return out

    def __iter__(self) -> Iterator[list[int]]:
        position = self.start
        while True:
            yield self.indices(position + self.rank * self.local, self.local)
            position += self.batch_size


class Stream:
    """An endless iterator of batches (dicts, see `Views`) with a resumable position."""

    def __init__(
        self, dataset: Dataset, batch_size: int, seed: int, num_workers: int, rank: int = 0, world_size: int = 1,
        pin_memory: bool = False,
    ) -> None:
        if len(dataset) == 0:
            raise ValueError("cannot stream an empty dataset")
        if batch_size % world_size != 0:
            raise ValueError(f"batch_size {batch_size} is not divisible by world_size {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.rank = rank
        self.world_size = world_size
        self.pin_memory = pin_memory  # page-locked batches: asynchronous host-to-GPU copies
        self.position = 0  # global position of the next unread sample
        self._iterator: Iterator[Any] | None = None

    def _start(self) -> Iterator[Any]:
        sampler = EndlessBatchSampler(
            len(self.dataset), self.batch_size, self.seed, self.rank, self.world_size, self.position
        )
        worker_seed = np.random.SeedSequence([self.seed, self.rank, self.position]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(worker_seed))
        loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers, generator=generator,
                            pin_memory=self.pin_memory)
        return iter(loader)

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._start()
        batch = next(self._iterator)
        self.position += self.batch_size
        return batch

    def state_dict(self) -> dict[str, int]:
        epoch, index = divmod(self.position, len(self.dataset))
        return {"epoch": epoch, "index": index, "seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in ("seed", "batch_size"):
            if state[key] != getattr(self, key):
                raise ValueError(f"stream state has {key}={state[key]} but this stream has {getattr(self, key)}")
        self.position = state["epoch"] * len(self.dataset) + state["index"]
        self._iterator = None  # restart the loader (and its prefetching) at the restored position


def make_stream(
    dataset: Dataset, batch_size: int, seed: int, num_workers: int, rank: int = 0, world_size: int = 1,
    pin_memory: bool = False,
) -> Stream:
    """Endless stream of this rank's share (``batch_size // world_size``) of global batches."""
    return Stream(dataset, batch_size, seed, num_workers, rank, world_size, pin_memory)
