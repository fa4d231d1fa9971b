"""A sampler whose position is part of the training state, and that shards without padding.

Resuming mid-epoch must not replay the loader batch by batch, and it must see the
very same order the interrupted run saw. The order is therefore a pure function of
(seed, epoch), and the sampler can start at any index of it. With `weights`, each
epoch is a seeded draw with replacement (`data.sampler: weighted`), equally resumable.

Across ranks nothing is padded or repeated. The epoch's order is cut into global
batches of `batch_total` samples (what one process would take per micro-step); rank
*r* takes positions r, r+N, r+2N, ... of each. So micro-step *k* sees the same samples
in 1 or N processes, and a rank may hold fewer samples than the others, or none, in
the epoch's last global batch. The loop weights each rank's loss by its share of the
step's samples over all ranks (`step_samples`), so DDP's gradient average is the
mean over the global batch. Without `batch_total` the whole epoch is one block:
evaluation's split, where every sample is counted once.
"""

from __future__ import annotations

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
        batch_total: int | None = None,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        if batch_total is not None and batch_total < num_replicas:
            raise ValueError(
                f"batch_total {batch_total} is smaller than {num_replicas} processes: "
                "some rank would never get a sample"
            )
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last and batch_total is not None
        self.weights = weights
        self.batch_total = batch_total
        self.epoch = 0
        self.start_index = 0

    @property
    def samples_per_epoch(self) -> int:
        """Samples all ranks together see in a whole epoch (the last short batch dropped or not)."""
        if self.drop_last and self.batch_total:
            return self.num_samples // self.batch_total * self.batch_total
        return self.num_samples

    @property
    def block(self) -> int:
        """Samples per global batch; the whole epoch when no `batch_total` was given."""
        return self.batch_total or max(self.samples_per_epoch, 1)

    @property
    def batch_size(self) -> int:
        """This rank's share of a full global batch (the loader's batch size)."""
        return len(range(self.rank, self.block, self.num_replicas))

    @property
    def num_batches(self) -> int:
        """Global batches in an epoch: the same on every rank."""
        return -(-self.samples_per_epoch // self.block)

    @property
    def samples_per_rank(self) -> int:
        """Samples this rank sees in a whole epoch."""
        full, tail = divmod(self.samples_per_epoch, self.block)
        return full * self.batch_size + len(range(self.rank, tail, self.num_replicas))

    def step_samples(self, first_batch: int, num_batches: int) -> int:
        """Samples over all ranks in global batches `first_batch` .. `first_batch + num_batches`."""
        start = first_batch * self.block
        return max(min(start + num_batches * self.block, self.samples_per_epoch) - start, 0)

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        """Choose the epoch's order and where in it to start (in this rank's samples)."""
        self.epoch = epoch
        self.start_index = start_index

    def indices(self) -> list[int]:
        """This rank's full order for the current epoch."""
        order = self._order()[: self.samples_per_epoch]
        step, block = self.num_replicas, self.block
        if block % step == 0 or block >= len(order):  # then plain striding is the same cut
            return order[self.rank :: step]
        blocks = (order[start : start + block] for start in range(0, len(order), block))
        return [i for chunk in blocks for i in chunk[self.rank :: step]]

    def _order(self) -> list[int]:
        if self.weights is not None:  # a weighted draw with replacement, seeded like a shuffle
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            drawn = torch.multinomial(self.weights, self.num_samples, True, generator=generator)
            return list(drawn.tolist())
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            return list(torch.randperm(self.num_samples, generator=generator).tolist())
        return list(range(self.num_samples))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start_index :])

    def __len__(self) -> int:
        return max(self.samples_per_rank - self.start_index, 0)
