"""Datasets and loaders.

A dataset builder (registered under kind `dataset`) returns a `DataBundle`: the
splits plus what the model and the reports need to know about them. Loaders are
built separately by `build_dataloader`, so every dataset, built-in or a user's,
gets the same resumable sampler, worker seeding and pinned memory.
"""

from brickwork.data.bundle import DataBundle, build_data
from brickwork.data.loader import build_dataloader
from brickwork.data.sampler import ResumableSampler

__all__ = ["DataBundle", "ResumableSampler", "build_data", "build_dataloader"]
