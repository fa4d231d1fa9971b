"""One DataLoader builder for every dataset.

It owns the knobs that decide speed and reproducibility: the resumable sampler,
per-epoch worker seeds, pinned memory and worker persistence.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from brickwork.config import DataConfig
from brickwork.data.sampler import ResumableSampler
from brickwork.errors import ConfigError


def build_dataloader(
    dataset: Dataset[Any],
    data: DataConfig,
    *,
    train: bool,
    seed: int,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    pin_memory: bool = False,
    num_replicas: int = 1,
    rank: int = 0,
    targets: torch.Tensor | None = None,
    batch_total: int | None = None,
) -> DataLoader[Any]:
    """A DataLoader driven by a `ResumableSampler`.

    The loader's generator is re-seeded by the loop at each epoch start (see
    `seed_loader_for_epoch`), so worker seeds depend on (seed, epoch) only and a
    resumed run hands its workers the same seeds the interrupted one did.
    With `data.sampler: weighted` and training `targets`, samples are drawn with
    probability inversely proportional to their class's frequency.

    With `num_replicas > 1` each rank reads its own share, never padded: training cuts
    each global batch of `batch_total` samples (default `batch_size` x ranks) across the
    ranks, so the loader's batch size is this rank's share of it; evaluation
    (`train=False`) splits the whole split, so no sample is counted twice.
    """
    weights = None
    if train and data.sampler == "weighted":
        weights = balanced_sample_weights(targets)
    sampler = ResumableSampler(
        len(dataset),  # type: ignore[arg-type]
        shuffle=train and data.shuffle,
        seed=seed,
        num_replicas=num_replicas,
        rank=rank,
        drop_last=train and data.drop_last,  # the epoch's last short global batch
        weights=weights,
        batch_total=(batch_total or data.batch_size * num_replicas) if train else None,
    )
    workers = data.num_workers
    return DataLoader(
        dataset,
        batch_size=sampler.batch_size if train else (data.eval_batch_size or data.batch_size),
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        persistent_workers=data.persistent_workers and workers > 0,
        prefetch_factor=data.prefetch_factor if workers > 0 else None,
        worker_init_fn=seed_worker if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )


def balanced_sample_weights(targets: torch.Tensor | None) -> torch.Tensor:
    """One weight per sample, 1 / (count of its class), so each class is drawn equally often."""
    if targets is None:
        raise ConfigError(
            "data.sampler = 'weighted' needs the training labels, and this dataset gives none "
            "(DataBundle.train_targets); use data.sampler: default"
        )
    counts = torch.bincount(targets.long())
    return 1.0 / counts[targets.long()].double()


def seed_loader_for_epoch(loader: DataLoader[Any], seed: int, epoch: int, start_index: int) -> None:
    """Point the loader's sampler at (epoch, position) and fix its workers' base seed.

    Worker seeds also depend on the rank, so two ranks' workers never draw the same
    augmentations; rank 0 keeps the single-process seeds.
    """
    sampler = loader.sampler
    rank = 0
    if isinstance(sampler, ResumableSampler):
        sampler.set_epoch(epoch, start_index)
        rank = sampler.rank
    if loader.generator is not None:
        loader.generator.manual_seed(seed * 100_003 + epoch + rank * 1_000_003)


def seed_worker(worker_id: int) -> None:
    """Give numpy and `random` in each worker the seed torch chose for it."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)
