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
_NESTED = (torch.Tensor, Mapping, list, tuple)  # what a batch's size can be read from


class ModelKwargs(dict[str, Any]):
    """Inputs a model takes as keyword arguments, `model(**inputs)`: what a Hugging Face
    model wants (`input_ids=`, `attention_mask=`, `token_type_ids=`).

    A plain dict stays one positional argument (brickwork's own text models take the
    whole dict), so the batch itself says how the model is called.
    """


def call_model(model: Any, inputs: Any) -> Any:
    """`model(**inputs)` for `ModelKwargs`, else `model(inputs)`."""
    return model(**inputs) if isinstance(inputs, ModelKwargs) else model(inputs)


def logits_of(output: Any) -> torch.Tensor:
    """The class scores in a model's output: the tensor itself, or its `logits` (a Hugging
    Face `ModelOutput`)."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise TypeError(
        f"the model returned {type(output).__name__}, neither a tensor of logits nor an object "
        "with .logits; return logits, or pass fit(compute_loss=...) to read the output yourself"
    )


def split_batch(batch: Batch) -> tuple[Any, Any]:
    """`(inputs, targets)` from a tuple/list batch or a dict with `input` and `target`."""
    if isinstance(batch, tuple | list):  # checked first: cheaper than the abstract classes
        return batch[0], (batch[1] if len(batch) > 1 else None)
    if isinstance(batch, Mapping):
        return batch["input"], batch.get("target")
    if isinstance(batch, Sequence) and not isinstance(batch, torch.Tensor):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def batch_size_of(batch: Batch) -> int:
    """Samples in a batch: the leading dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    items: Any
    if isinstance(batch, tuple | list):  # checked before Mapping: cheaper than an ABC check
        items = batch
    else:
        items = batch.values() if isinstance(batch, Mapping) else batch
    for item in items:
        if isinstance(item, torch.Tensor):  # the usual (inputs, targets): no recursion
            return int(item.shape[0])
        if isinstance(item, _NESTED):
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
        if batch.device == device:  # a CPU run's batches: a comparison, not a dispatched no-op
            return batch
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, list | tuple):  # checked before Mapping: cheaper than an ABC check
        items = [move_to_device(v, device, non_blocking, channels_last) for v in batch]
        return items if type(batch) is list else type(batch)(items)
    if isinstance(batch, Mapping):
        moved = {
            k: move_to_device(v, device, non_blocking, channels_last) for k, v in batch.items()
        }
        return ModelKwargs(moved) if isinstance(batch, ModelKwargs) else moved
    return batch
