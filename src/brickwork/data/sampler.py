"""A sampler whose position is part of the training state.

Resuming mid-epoch must not replay the loader batch by batch, and it must see the
very same order the interrupted run saw. The order is therefore a pure function of
(seed, epoch), and the sampler can start at any index of it. Splitting across
ranks works like `DistributedSampler` (pad to a multiple of the world size, then
take every `num_replicas`-th index), so one class serves one process and many.
With `weights`, each epoch is a seeded draw with replacement (`data.sampler: weighted`),
equally resumable.
Evaluation uses `pad=False`: ranks may get one sample fewer, but no sample is
counted twice in a metric reduced over ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch shuffling (or weighted drawing) that can start at any position.

    Example:
        >>> sampler = ResumableSampler(100, shuffle=True, seed=0)
        >>> sampler.set_epoch(3, start_index=40)  # skip what the crashed run consumed
    """

    def __init__(
        self,
        num_samples: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        weights: torch.Tensor | None = None,
        pad: bool = True,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.weights = weights
        self.pad = pad
        self.epoch = 0
        self.start_index = 0

    @property
    def samples_per_rank(self) -> int:
        """Samples one rank sees in a whole epoch."""
        if not self.pad:
            return len(range(self.rank, self.num_samples, self.num_replicas))
        if self.drop_last:
            return self.num_samples // self.num_replicas
        return math.ceil(self.num_samples / self.num_replicas)

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        """Choose the epoch's order and where in it to start (in this rank's samples)."""
        self.epoch = epoch
        self.start_index = start_index

    def indices(self) -> list[int]:
        """This rank's full order for the current epoch."""
        if self.weights is not None:  # a weighted draw with replacement, seeded like a shuffle
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            drawn = torch.multinomial(self.weights, self.num_samples, True, generator=generator)
            order = drawn.tolist()
        elif self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        if not self.pad:
            return order[self.rank :: self.num_replicas]
        total = self.samples_per_rank * self.num_replicas
        if total > len(order):  # pad by wrapping, so every rank gets the same count
            order += (order * math.ceil(total / max(len(order), 1)))[: total - len(order)]
        return order[:total][self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start_index :])

    def __len__(self) -> int:
        return max(self.samples_per_rank - self.start_index, 0)
