"""Batches as loaders yield them: a tuple `(inputs, targets)`, a dict, or nested tensors.

The loop, evaluation, prediction and the non-finite replay all need the same three
things from a batch, whatever its shape: its inputs and targets, its size, and a copy
on the device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

Batch = Any


def split_batch(batch: Batch) -> tuple[Any, Any]:
    """`(inputs, targets)` from a tuple/list batch or a dict with `input` and `target`."""
    if isinstance(batch, Mapping):
        return batch["input"], batch.get("target")
    if isinstance(batch, Sequence) and not isinstance(batch, torch.Tensor):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def batch_size_of(batch: Batch) -> int:
    """Samples in a batch: the leading dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    items = batch.values() if isinstance(batch, Mapping) else batch
    for item in items:
        if isinstance(item, torch.Tensor | Mapping | list | tuple):
            return batch_size_of(item)
    raise TypeError("cannot tell the batch size: the batch holds no tensor")


def move_to_device(
    batch: Batch, device: torch.device, non_blocking: bool = False, channels_last: bool = False
) -> Batch:
    """Move every tensor in a (nested) batch; `non_blocking` pays off with pinned memory.

    `channels_last` stores 4-D tensors (images) as NHWC, which tensor cores prefer.
    """
    if isinstance(batch, torch.Tensor):
        if channels_last and batch.dim() == 4:
            return batch.to(device, non_blocking=non_blocking, memory_format=torch.channels_last)
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device, non_blocking, channels_last) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(v, device, non_blocking, channels_last) for v in batch)
    return batch
