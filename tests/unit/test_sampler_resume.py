"""The resumable sampler: a resumed epoch starts where it stopped without replaying."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from brickwork.config import DataConfig
from brickwork.data.loader import build_dataloader, seed_loader_for_epoch


class CountingDataset(TensorDataset):
    def __init__(self, n: int) -> None:
        super().__init__(torch.arange(n))
        self.fetched = 0

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        self.fetched += 1
        return super().__getitem__(index)


def test_resumed_epoch_fetches_only_the_remaining_samples() -> None:
    dataset = CountingDataset(100)
    loader: DataLoader = build_dataloader(dataset, DataConfig(batch_size=8), train=True, seed=3)
    seed_loader_for_epoch(loader, 3, epoch=2, start_index=0)
    full = [batch[0] for batch in loader]
    dataset.fetched = 0
    seed_loader_for_epoch(loader, 3, epoch=2, start_index=9 * 8)
    tail = [batch[0] for batch in loader]
    assert dataset.fetched == 100 - 72  # no replay: resume cost does not grow with the step
    assert all(torch.equal(a, b) for a, b in zip(full[9:], tail, strict=True))
