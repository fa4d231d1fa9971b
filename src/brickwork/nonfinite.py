"""What to do when a step's loss is NaN or infinite: stop and say where, or skip the step.

`trainer.on_nonfinite: stop` (the default) never makes a step wait for the device:
the loop hands each step's losses to `NonFiniteGuard.record`, which keeps them on the
device, and `check` reads them on logging steps, at epoch end and before every
checkpoint is written (one sync there, where the loop syncs anyway). On a bad step
it stops the run naming the first bad step, restores the weights from the newest
checkpoint taken before that step (or says that there was none), and replays that
step's samples on them with forward hooks to name the first module whose output was
non-finite. No checkpoint ever holds weights a bad step touched.

`trainer.on_nonfinite: skip` must decide before each optimizer step, so
`all_finite` reads the losses every step: on a GPU one device sync per step (and
under DDP one all-reduce), the price of skipping. A skipped step is counted, and
the run stops once more than `trainer.max_nonfinite_steps` were skipped.

Either way every bad step's sample indices go to `nonfinite.jsonl` in the run folder,
so the offending samples can be looked at.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from brickwork.batch import batch_size_of, move_to_device, split_batch
from brickwork.checkpoint import MODEL_FILE, list_checkpoints, load_tensors
from brickwork.distributed import get_world_size, min_across_ranks, sum_across_ranks
from brickwork.errors import BrickworkError
from brickwork.state import stack_losses

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
        checkpoints: Path | None = None,
    ) -> None:
        self.on_nonfinite, self.max_nonfinite_steps = on_nonfinite, max_nonfinite_steps
        self.report_file = report_dir / REPORT_FILE
        self.checkpoints = checkpoints
        self.model, self.compute_loss, self.loader, self.device = (
            model,
            compute_loss,
            loader,
            device,
        )
        self.num_skipped = 0
        self._saved_buffers: list[torch.Tensor] = []
        self._recorded: list[_Step] = []  # steps since the last `check`, losses on the device

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
        if not losses:  # this rank held no sample in the step
            finite = True
        elif len(losses) == 1:  # the common case: one scalar read, no extra tensor ops
            finite = math.isfinite(losses[0][0].item())
        else:
            finite = bool(torch.isfinite(stack_losses(losses)).all())
        if get_world_size() > 1:  # every rank must skip or stop together, or weights diverge
            (num_bad_ranks,) = sum_across_ranks(0.0 if finite else 1.0)
            finite = num_bad_ranks == 0
        return finite

    def record(self, state: TrainState, losses: list[tuple[torch.Tensor, int]]) -> None:
        """With `stop`: keep the step's losses, still on the device, for the next `check`.

        Called before the step's counters move: it is step `state.step + 1`. No sync.
        """
        if self.on_nonfinite == "stop":
            self._recorded.append(_Step(state.step + 1, state.epoch, state.batch_in_epoch, losses))

    def check(self, state: TrainState) -> None:
        """Read the losses recorded since the last check; stop at the first bad step.

        One device sync (and under DDP one all-reduce, at the same line on every rank:
        the first bad step over all ranks, since DDP spreads a NaN gradient to all).
        Raises `NonFiniteError` after restoring the weights of the newest checkpoint
        taken before the bad step.
        """
        if self.on_nonfinite != "stop":
            return
        recorded, self._recorded = self._recorded, []
        losses = [pair for step in recorded for pair in step.losses]
        bad_step = math.inf
        if losses:
            finite = torch.isfinite(stack_losses(losses))
            if not bool(finite.all()):  # the sync
                flags = iter(finite.tolist())
                bad_step = next(s.step for s in recorded for _ in s.losses if not next(flags))
        if get_world_size() > 1:
            bad_step = min_across_ranks(bad_step)
        if bad_step < math.inf:
            found = [s for s in recorded if s.step == bad_step]
            self._stop(state, found[0] if found else _Step(int(bad_step), state.epoch, -1, []))

    def _stop(self, state: TrainState, bad: _Step) -> None:
        indices = self._indices_at(bad.batch_in_epoch, bad.num_samples)
        restored = self._restore_before(bad.step)
        if restored is None:
            culprit = "not replayed: no checkpoint was taken before it to replay on"
            weights = "no checkpoint was taken before it, so the weights stay non-finite"
        else:
            culprit = self._replay(indices)
            weights = f"weights restored from checkpoint {restored}"
        self._report(
            {
                "step": bad.step,
                "epoch": bad.epoch + 1,  # counted from 1, as everything a user reads
                "sample_indices": indices,
                "source": culprit,
                "skipped": False,
            }
        )
        raise NonFiniteError(
            f"non-finite loss at step {bad.step} (epoch {bad.epoch + 1}): {culprit}; "
            f"the batch's {len(indices)} sample indices are in {self.report_file}; {weights}; "
            "lower optimizer.lr, set trainer.gradient_clip_val, check those samples, "
            "or set trainer.on_nonfinite=skip"
        )

    def _restore_before(self, step: int) -> str | None:
        """Load the newest checkpoint older than `step` into the model; its name, or None."""
        if self.checkpoints is None:
            return None
        for folder in reversed(list_checkpoints(self.checkpoints)):
            if int(folder.name.split("-")[1]) < step and (folder / MODEL_FILE).is_file():
                self.model.load_state_dict(load_tensors(folder / MODEL_FILE, self.device))
                return folder.name
        return None

    def _replay(self, indices: list[int]) -> str:
        """Name where the bad step's samples, read again, first turn non-finite."""
        if not indices:
            return "not replayed: this process held none of the step's samples"
        dataset, collate = self.loader.dataset, self.loader.collate_fn
        batch = collate([dataset[i] for i in indices])
        return find_nonfinite_source(self.model, self.compute_loss, [batch], self.device)

    def _indices_at(self, batch_in_epoch: int, count: int) -> list[int]:
        sampler = self.loader.sampler
        if batch_in_epoch < 0 or not hasattr(sampler, "indices"):
            return []
        start = batch_in_epoch * (self.loader.batch_size or 1)
        return [int(i) for i in sampler.indices()[start : start + count]]

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
                "epoch": state.epoch + 1,
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
            f"non-finite loss at step {step} (epoch {state.epoch + 1}): {limit}{culprit}; "
            f"the batch's {len(indices)} sample indices are in {self.report_file}; "
            "lower optimizer.lr, set trainer.gradient_clip_val, check those samples, "
            "or set trainer.on_nonfinite=skip"
        )

    def _sample_indices(self, state: TrainState, micro_batches: list[Any]) -> list[int]:
        """Dataset indices of the step's samples: the sampler's order is known per epoch."""
        count = sum(batch_size_of(batch) for batch in micro_batches)
        return self._indices_at(state.batch_in_epoch, count)

    def _report(self, row: dict[str, Any]) -> None:
        with self.report_file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def state_dict(self) -> dict[str, Any]:
        return {"num_skipped": self.num_skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_skipped = int(state["num_skipped"])


@dataclass(slots=True)
class _Step:
    """One optimizer step as `record` keeps it: where its samples are, and its losses
    (the loop's own list of (loss, samples) per micro-step: kept, not copied, each step)."""

    step: int
    epoch: int
    batch_in_epoch: int
    losses: list[tuple[torch.Tensor, int]]

    @property
    def num_samples(self) -> int:
        return sum(n for _, n in self.losses)


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
