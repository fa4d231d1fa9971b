"""TrainState: everything a checkpoint must hold to continue a run exactly.

One object owns the model, optimizer, schedule, grad scaler, the counters
(`step`, `epoch`, `batch_in_epoch`), the callbacks' state and the random number
generators. `state_dict()` captures all of it; `load_state_dict()` puts it back.
Resume equality (a resumed run matches an uninterrupted one bit for bit on CPU)
rests on nothing living outside this object.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

from brickwork.distributed import gather_objects, get_rank, get_world_size

if TYPE_CHECKING:
    from brickwork.callbacks import Callback
    from brickwork.optim import Schedule


class RunningMean:
    """A mean of per-sample losses kept on the device, read with one `.item()`.

    Adding `loss.detach() * n` each micro-step keeps no autograd graph alive and
    forces no device sync; only `compute()` syncs.
    """

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.count = 0

    def update(self, value: torch.Tensor, num_samples: int) -> None:
        """Add a mean `value` over `num_samples` samples."""
        self.add_sum(value.detach().float() * num_samples, num_samples)

    def add_sum(self, weighted: torch.Tensor, num_samples: int) -> None:
        """Add a sum over `num_samples` samples (lets two means share one multiply)."""
        self.total = weighted if self.total is None else self.total + weighted
        self.count += num_samples

    def compute(self) -> float:
        """The mean so far over all ranks (NaN when empty); a device sync.

        Under DDP this is a collective (one all_reduce of sum and count): every rank
        must call it at the same point, which the loop does (logging steps, epoch ends).
        """
        from brickwork.distributed import sum_across_ranks

        total = self.total if self.total is not None else 0.0
        summed, count = sum_across_ranks(total, float(self.count))
        return summed / count if count else math.nan

    def reset(self) -> None:
        self.total, self.count = None, 0

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total, self.count = state["total"], int(state["count"])


@dataclass
class TrainState:
    """The mutable state of one training run.

    Attributes:
        step: optimizer steps taken so far (what checkpoints and logs count).
        epoch: the epoch in progress, from 0; after an epoch ends it names the next one.
        batch_in_epoch: loader batches of `epoch` already consumed, for mid-epoch resume.
        interval_loss: training loss since the last logged step.
        epoch_loss: training loss since the epoch began.
        should_stop: set by a callback (early stopping, a signal) to end after this step.
        stop_reason: why the run ended early, for the summary.
    """

    model: nn.Module
    optimizer: Optimizer
    schedule: Schedule | None = None
    scaler: torch.amp.GradScaler | None = None
    callbacks: list[Callback] = field(default_factory=list)
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    interval_loss: RunningMean = field(default_factory=RunningMean)
    epoch_loss: RunningMean = field(default_factory=RunningMean)
    should_stop: bool = False
    stop_reason: str | None = None

    @property
    def epoch_of_step(self) -> int:
        """The epoch the latest optimizer step belongs to (what logs record as `epoch`).

        Differs from `epoch` right after an epoch ends, when `epoch` already names the next.
        """
        return self.epoch - 1 if self.batch_in_epoch == 0 and self.epoch > 0 else self.epoch

    def request_stop(self, reason: str) -> None:
        """Ask the loop to end after the current step; the first reason given is kept."""
        self.should_stop = True
        self.stop_reason = self.stop_reason or reason

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue; model weights under `model` as a plain state_dict."""
        return {
            "model": unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.scheduler.state_dict() if self.schedule else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "counters": {
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
            },
            "meters": {
                "interval_loss": self.interval_loss.state_dict(),
                "epoch_loss": self.epoch_loss.state_dict(),
            },
            "callbacks": {
                callback_key(cb): cb.state_dict()
                for cb in self.callbacks
                if hasattr(cb, "state_dict")
            },
            "rng": capture_rng(),
            # Under DDP every rank's generators and loss sums, in rank order (collectives:
            # every rank calls this at the same step, rank 0 writes the result).
            "rng_per_rank": gather_objects(capture_rng()) if get_world_size() > 1 else None,
            "meters_per_rank": self._gather_meters() if get_world_size() > 1 else None,
        }

    def load_state_dict(self, state: dict[str, Any], restore_rng_state: bool = True) -> None:
        """Put a `state_dict()` back; the objects must have been built from the same config.

        Callbacks come first: one may reshape the optimizer (gradual unfreezing adds
        param groups), and the optimizer's saved state only loads into the same shape.
        """
        unwrap_model(self.model).load_state_dict(state["model"])
        saved = state.get("callbacks", {})
        for cb in self.callbacks:
            key = callback_key(cb)
            if key in saved and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(saved[key])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.schedule is not None and state.get("scheduler") is not None:
            self.schedule.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        counters = state["counters"]
        self.step = int(counters["step"])
        self.epoch = int(counters["epoch"])
        self.batch_in_epoch = int(counters["batch_in_epoch"])
        meters = _meters_of_this_rank(state)
        self.interval_loss.load_state_dict(meters["interval_loss"])
        self.epoch_loss.load_state_dict(meters["epoch_loss"])
        if restore_rng_state:
            restore_rng(_rng_of_this_rank(state))

    def _gather_meters(self) -> list[dict[str, Any]]:
        own = {"interval_loss": self.interval_loss, "epoch_loss": self.epoch_loss}
        return gather_objects({name: _on_cpu(m.state_dict()) for name, m in own.items()})


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside DDP/DataParallel or torch.compile wrappers.

    Checkpoints store the unwrapped weights, so they carry no `module.` or
    `_orig_mod.` prefixes and load the same in one process or many.
    """
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model


def callback_key(callback: object) -> str:
    """The name a callback's state is saved under (its `state_key`, else its class name)."""
    return str(getattr(callback, "state_key", type(callback).__name__))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so two runs of one config match."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """The state of every random number generator the training process draws from."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Undo `capture_rng`: the next random draw equals the one the saved run made."""
    random.setstate(_as_tuples(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (numpy_state[0], np.asarray(numpy_state[1], dtype=np.uint32), *numpy_state[2:])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rng_of_this_rank(state: dict[str, Any]) -> dict[str, Any]:
    """This rank's saved generators; a run resumed on another world size re-derives them."""
    per_rank = state.get("rng_per_rank")
    rank, world_size = get_rank(), get_world_size()
    if per_rank is not None and len(per_rank) == world_size:
        return dict(per_rank[rank])
    if world_size > 1 and rank > 0:
        # Saved by a different number of processes: rank 0's stream, offset per rank.
        restore_rng(state["rng"])
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        seed_everything(seed + rank)
        return capture_rng()
    return dict(state["rng"])


def _meters_of_this_rank(state: dict[str, Any]) -> dict[str, Any]:
    """This rank's running loss sums, so the logged mean continues exactly across resumes.

    Saved by as many ranks as now: each takes its own. Otherwise rank 0 takes the
    saved ranks' sums added up and the others start empty: the mean over ranks is kept.
    """
    per_rank = state.get("meters_per_rank")
    rank, world_size = get_rank(), get_world_size()
    if per_rank is not None and len(per_rank) == world_size:
        return dict(per_rank[rank])
    if per_rank is None and world_size == 1:
        return dict(state["meters"])
    saved = per_rank or [state["meters"]]
    if rank > 0:
        return {name: {"total": None, "count": 0} for name in saved[0]}
    return {name: _add_meters([ranks[name] for ranks in saved]) for name in saved[0]}


def _add_meters(meters: list[dict[str, Any]]) -> dict[str, Any]:
    totals = [m["total"] for m in meters if m["total"] is not None]
    return {
        "total": torch.stack([t.float().cpu() for t in totals]).sum() if totals else None,
        "count": sum(int(m["count"]) for m in meters),
    }


def _on_cpu(meter: dict[str, Any]) -> dict[str, Any]:
    total = meter["total"]
    return {"total": total.cpu() if total is not None else None, "count": meter["count"]}


def _as_tuples(value: Any) -> Any:
    """`random.setstate` wants nested tuples; JSON gives back lists."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(v) for v in value)
    return value
