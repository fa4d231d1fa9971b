"""How a rank that ran out of memory still completes DDP's gradient all-reduce.

Under DistributedDataParallel the last micro-step's backward all-reduces the
gradients, bucket by bucket, as each bucket's gradients become ready. If one rank
runs out of memory anywhere in a step, the others are (or soon will be) inside that
all-reduce, waiting for it. Rather than leave them waiting, the failing rank finishes
its side of the all-reduce with zero-weight gradients, then every rank exchanges one
"did anyone run out of memory?" flag (`brickwork.memory`) and all of them discard the
step and retry it with a halved micro-batch. Nothing is applied from the discarded
step, so the math stays exact.

The failing rank finishes in one of two ways, whichever keeps DDP's own bookkeeping
consistent:

- DDP's forward for the synchronising micro-step had not returned (the error came in
  an earlier micro-step, or inside that forward): DDP expects no gradient yet, so the
  rank runs a fresh zero-weight forward and backward on one sample (`rejoin`), the
  same pass a rank without samples uses to join the all-reduce.
- DDP's forward had returned (the error came in the loss or in the backward): DDP
  expects a gradient for every parameter, and some buckets may already be in flight.
  The rank runs a backward that gives a zero gradient to exactly the parameters whose
  gradient had not been accumulated yet, so DDP marks them ready and launches the
  remaining buckets in order, matching the all-reduces the others are waiting in.

Telling the two apart costs one forward hook on the DDP module and one autograd hook
per parameter (a Python call each, no device sync and no collective); with one
process nothing is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from brickwork.errors import BrickworkError


class GradientSyncCompletion:
    """Tracks the synchronising micro-step so a failing rank can finish its all-reduce.

    Example:
        >>> completion = GradientSyncCompletion(ddp_model, rejoin)
        >>> completion.arm()  # before the last micro-step
        >>> completion.complete(one_sample)  # after an out-of-memory error, on that rank
    """

    def __init__(self, model: nn.Module, rejoin: Callable[[Any], object]) -> None:
        ddp = getattr(model, "_orig_mod", model)  # through a torch.compile wrapper
        if not isinstance(ddp, nn.parallel.DistributedDataParallel):
            raise TypeError(f"GradientSyncCompletion needs a DDP model, got {type(ddp).__name__}")
        self.ddp, self.rejoin = ddp, rejoin
        self.parameters = [p for p in ddp.module.parameters() if p.requires_grad]
        self.forward_returned = False
        self.ready: set[int] = set()
        ddp.register_forward_hook(self._after_forward)
        # Hooks on each parameter's gradient accumulator run after DDP's own (registered
        # when DDP was built), so "seen here" implies "marked ready by DDP".
        self._accumulators = []
        for index, parameter in enumerate(self.parameters):
            accumulator = parameter.view_as(parameter).grad_fn.next_functions[0][0]
            accumulator.register_hook(self._ready_hook(index))
            self._accumulators.append(accumulator)  # the node must outlive the view

    def arm(self) -> None:
        """Start watching: the synchronising micro-step begins now."""
        self.forward_returned = False
        self.ready.clear()

    def complete(self, sample: Any) -> None:
        """Finish this rank's side of the gradient all-reduce with zero-weight gradients."""
        if not self.forward_returned:
            self.rejoin(sample)
            return
        if self.ddp.find_unused_parameters:
            raise BrickworkError(
                "out of memory in the backward of the micro-step that all-reduces gradients, "
                "with trainer.find_unused_parameters=true, which cannot be completed "
                "safely; halve data.batch_size and double trainer.accumulate_grad_batches"
            )
        missing = [p for i, p in enumerate(self.parameters) if i not in self.ready]
        if missing:
            # One element of each, with a zero incoming gradient: an all-zero gradient each.
            elements = [p.reshape(-1)[0] for p in missing]
            torch.autograd.backward(elements, [torch.zeros_like(e) for e in elements])

    def _after_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        # Only a synchronising forward (not under `no_sync`) makes DDP expect gradients.
        self.forward_returned = bool(self.ddp.require_backward_grad_sync)

    def _ready_hook(self, index: int) -> Callable[..., None]:
        def mark(grad_inputs: Any, grad_outputs: Any) -> None:
            self.ready.add(index)

        return mark
