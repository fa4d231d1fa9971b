"""What to do when a step's loss is NaN or infinite: stop and say where, or skip the step.

The loop asks `NonFiniteGuard.all_finite` once per optimizer step, before the
optimizer touches the weights, so a non-finite loss never reaches them. On a bad
step the guard either skips it (`trainer.on_nonfinite: skip`, counted, and a stop
once more than `trainer.max_nonfinite_steps` were skipped) or stops the run. Before
stopping it replays the batch with forward hooks to name the first module whose
output was non-finite, and every bad step's sample indices go to `nonfinite.jsonl`
in the run folder, so the offending samples can be looked at.

Cost: the check is one `bool()` of a tiny tensor per optimizer step. On the CPU
that is free; on a GPU it is one device sync per step (fp16 training already pays
one in `GradScaler.step`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from brickwork.batch import batch_size_of, move_to_device, split_batch
from brickwork.distributed import get_world_size, sum_across_ranks
from brickwork.errors import BrickworkError

if TYPE_CHECKING:
    from brickwork.state import TrainState

log = logging.getLogger("brickwork")
REPORT_FILE = "nonfinite.jsonl"


class NonFiniteError(BrickworkError):
    """Training produced a NaN or infinite loss and was stopped before the weights were hit."""


class NonFiniteGuard:
    """Checks each step's losses; skips or stops on a non-finite one (a callback for its state).

    Example:
        >>> guard = NonFiniteGuard("skip", 10, run_dir, model, compute_loss, loader, device)
        >>> if not guard.all_finite(losses):
        ...     guard.handle(state, micro_batches)  # raises NonFiniteError to stop
    """

    state_key = "nonfinite"

    def __init__(
        self,
        on_nonfinite: str,
        max_nonfinite_steps: int,
        report_dir: Path,
        model: nn.Module,
        compute_loss: Callable[[nn.Module, Any], dict[str, torch.Tensor]],
        loader: DataLoader[Any],
        device: torch.device,
    ) -> None:
        self.on_nonfinite, self.max_nonfinite_steps = on_nonfinite, max_nonfinite_steps
        self.report_file = report_dir / REPORT_FILE
        self.model, self.compute_loss, self.loader, self.device = (
            model,
            compute_loss,
            loader,
            device,
        )
        self.num_skipped = 0
        self._saved_buffers: list[torch.Tensor] = []

    def remember_buffers(self) -> None:
        """With `skip`: copy the float buffers (BatchNorm statistics) a bad forward would spoil.

        A copy per step of the buffers only (no sync); without it a skipped step would
        still leave NaN in the running statistics.
        """
        if self.on_nonfinite == "skip":
            self._saved_buffers = [b.detach().clone() for b in self._float_buffers()]

    def _float_buffers(self) -> list[torch.Tensor]:
        return [b for b in self.model.buffers() if b.is_floating_point()]

    @staticmethod
    def all_finite(losses: list[tuple[torch.Tensor, int]]) -> bool:
        """Whether every micro-step loss of the step is finite; `bool()` here is a device sync."""
        if len(losses) == 1:  # the common case: one scalar read, no extra tensor ops
            finite = math.isfinite(losses[0][0].item())
        else:
            stacked = torch.stack([loss.float() for loss, _ in losses])
            finite = bool(torch.isfinite(stacked).all())
        if get_world_size() > 1:  # every rank must skip or stop together, or weights diverge
            (num_bad_ranks,) = sum_across_ranks(0.0 if finite else 1.0)
            finite = num_bad_ranks == 0
        return finite

    def handle(self, state: TrainState, micro_batches: list[Any]) -> None:
        """Record the bad step; return to skip it, or raise `NonFiniteError` to stop."""
        step = state.step + 1  # the step that would have been taken
        indices = self._sample_indices(state, micro_batches)
        skipping = self.on_nonfinite == "skip" and self.num_skipped < self.max_nonfinite_steps
        culprit = (
            None
            if skipping
            else find_nonfinite_source(self.model, self.compute_loss, micro_batches, self.device)
        )
        self._report(
            {
                "step": step,
                "epoch": state.epoch,
                "sample_indices": indices,
                "source": culprit,
                "skipped": skipping,
            }
        )
        if skipping:
            with torch.no_grad():
                for buffer, saved in zip(self._float_buffers(), self._saved_buffers, strict=True):
                    buffer.copy_(saved)
            self.num_skipped += 1
            log.warning(
                "non-finite loss at step %d: step skipped (%d of at most %d); samples in %s",
                step,
                self.num_skipped,
                self.max_nonfinite_steps,
                self.report_file,
            )
            return
        limit = (
            f"more than trainer.max_nonfinite_steps={self.max_nonfinite_steps} steps skipped; "
            if self.on_nonfinite == "skip"
            else ""
        )
        raise NonFiniteError(
            f"non-finite loss at step {step} (epoch {state.epoch}): {limit}{culprit}; "
            f"the batch's {len(indices)} sample indices are in {self.report_file}; "
            "lower optimizer.lr, set trainer.gradient_clip_val, check those samples, "
            "or set trainer.on_nonfinite=skip"
        )

    def _sample_indices(self, state: TrainState, micro_batches: list[Any]) -> list[int]:
        """Dataset indices of the step's samples: the sampler's order is known per epoch."""
        sampler = self.loader.sampler
        if not hasattr(sampler, "indices"):
            return []
        start = state.batch_in_epoch * (self.loader.batch_size or 1)
        count = sum(batch_size_of(batch) for batch in micro_batches)
        return [int(i) for i in sampler.indices()[start : start + count]]

    def _report(self, row: dict[str, Any]) -> None:
        with self.report_file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def state_dict(self) -> dict[str, Any]:
        return {"num_skipped": self.num_skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_skipped = int(state["num_skipped"])


@torch.no_grad()
def find_nonfinite_source(
    model: nn.Module,
    compute_loss: Callable[[nn.Module, Any], dict[str, torch.Tensor]],
    micro_batches: list[Any],
    device: torch.device,
) -> str:
    """Replay the batches with forward hooks and describe where non-finite values start.

    Looks, in order, at the parameters, the inputs, each module's output (the first
    hook to see a NaN or Inf names the innermost module that made it), then the loss.
    The replay draws random numbers (dropout) inside `fork_rng`, so it changes nothing.
    """
    for name, param in model.named_parameters():
        if not torch.isfinite(param).all():
            return f"parameter '{name}' is already non-finite"
    first: list[str] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if not first and any(not torch.isfinite(t).all() for t in _tensors(output)):
            first.append(f"{names[module] or 'the model'} ({type(module).__name__})")

    names = {module: name for name, module in model.named_modules()}
    handles = [module.register_forward_hook(hook) for module in names]
    try:
        with torch.random.fork_rng(devices=[] if device.type == "cpu" else None):
            for batch in micro_batches:
                batch = move_to_device(batch, device)
                inputs, _ = split_batch(batch)
                if any(not torch.isfinite(t).all() for t in _tensors(inputs)):
                    return "the batch's inputs contain NaN or Inf"
                loss = compute_loss(model, batch)["loss"]
                if first:
                    return f"first non-finite output in module {first[0]}"
                if not torch.isfinite(loss).all():
                    return "the model's outputs were finite; the loss function made the NaN/Inf"
    finally:
        for handle in handles:
            handle.remove()
    return "the replay was finite (the non-finite value depends on randomness)"


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [t for item in value for t in _tensors(item)]
    return []
