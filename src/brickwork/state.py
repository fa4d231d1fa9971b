"""TrainState: everything a checkpoint must hold to continue a run exactly.

One object owns the model, optimizer, schedule, grad scaler, the counters
(`step`, `epoch`, `batch_in_epoch`), the callbacks' state and the random number
generators. `state_dict()` captures all of it; `load_state_dict()` puts it back.
Resume equality (a resumed run matches an uninterrupted one bit for bit on CPU)
rests on nothing living outside this object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim import Optimizer

from brickwork.distributed import get_rank, get_world_size
from brickwork.models.anatomy import unwrap_model
from brickwork.rng import capture_rng, restore_rng, seed_everything
from brickwork.stop import Stop, StopKind

if TYPE_CHECKING:
    from brickwork.optim import Schedule


class RunningMean:
    """A sum of per-sample losses and their count, kept on the device.

    Reading the mean is the loop's job, at its logging lines, because it is a device
    sync and, under DDP, a collective (`distributed.mean_across_ranks`).
    """

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.count = 0

    def add_sum(self, weighted: torch.Tensor, num_samples: int) -> None:
        """Add a sum over `num_samples` samples."""
        self.total = weighted if self.total is None else self.total + weighted
        self.count += num_samples

    def totals(self) -> tuple[torch.Tensor | None, int]:
        """The sum so far (on the device, None when empty) and the number of samples."""
        return self.total, self.count

    def reset(self) -> None:
        self.total, self.count = None, 0

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total, self.count = state["total"], int(state["count"])


class UnfoldedLosses:
    """Micro-step losses not yet added to the running means: detached, on the device.

    A step only appends its losses here: no tensor operation, no sync. `take_sum` adds
    them up, each weighted by its samples, in a few tensor operations whatever their
    number. The loop folds at logging steps and at the epoch's end, and where
    `MAX_UNFOLDED` are pending (a long logging interval: a scalar holds a block of
    device memory), and a checkpoint keeps what is still unfolded, so a resumed run
    adds the same losses at the same steps as an uninterrupted one and logs the same
    means, bit for bit.
    """

    MAX_UNFOLDED = 1024

    def __init__(self) -> None:
        self.losses: list[tuple[torch.Tensor, int]] = []

    def extend(self, losses: list[tuple[torch.Tensor, int]]) -> None:
        self.losses += losses

    def take_sum(self) -> tuple[torch.Tensor | None, int]:
        """The losses' sum weighted by their samples (None when empty) and the samples; empties."""
        losses, self.losses = self.losses, []
        if not losses:
            return None, 0
        values, counts = stack_losses(losses), [int(n) for _, n in losses]
        weights = torch.tensor(counts, dtype=values.dtype).to(values.device, non_blocking=True)
        return torch.dot(values, weights), sum(counts)

    def state_dict(self) -> dict[str, Any]:
        """The unfolded losses as one float32 vector (None when empty) and their samples."""
        if not self.losses:
            return {"losses": None, "counts": []}
        return {"losses": stack_losses(self.losses), "counts": [int(n) for _, n in self.losses]}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """`None`: a checkpoint from before unfolded losses were kept (they were all folded)."""
        if state is None or state["losses"] is None:
            self.losses = []
        else:
            self.losses = list(zip(state["losses"].unbind(), state["counts"], strict=True))


def stack_losses(losses: list[tuple[torch.Tensor, int]]) -> torch.Tensor:
    """Micro-step losses as one float32 vector, whatever their dtype or a (1,) shape."""
    scalars = [loss if loss.dim() == 0 else loss.reshape(()) for loss, _ in losses]
    return torch.stack(scalars).float()


@dataclass
class TrainState:
    """The mutable state of one training run.

    Attributes:
        step: optimizer steps taken so far (what checkpoints and logs count).
        epoch: the epoch in progress, from 0; after an epoch ends it names the next one.
        batch_in_epoch: loader batches of `epoch` already consumed, for mid-epoch resume.
        interval_loss: training loss since the last logged step, as of the last fold.
        epoch_loss: training loss since the epoch began, as of the last fold.
        unfolded_loss: the steps' losses not yet in those two (see `fold_losses`).
        callbacks: the objects whose `state_dict()` rides in checkpoints (callbacks,
            loggers, the checkpointer), saved under their `state_key` or class name.
        stop: the requested stop (see `request_stop`), None while training goes on.
    """

    model: nn.Module
    optimizer: Optimizer
    schedule: Schedule | None = None
    scaler: torch.amp.GradScaler | None = None
    callbacks: list[Any] = field(default_factory=list)
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    interval_loss: RunningMean = field(default_factory=RunningMean)
    epoch_loss: RunningMean = field(default_factory=RunningMean)
    unfolded_loss: UnfoldedLosses = field(default_factory=UnfoldedLosses)
    stop: Stop | None = None

    @property
    def epoch_of_step(self) -> int:
        """The epoch the latest optimizer step belongs to (what logs record as `epoch`).

        Differs from `epoch` right after an epoch ends, when `epoch` already names the next.
        """
        return self.epoch - 1 if self.batch_in_epoch == 0 and self.epoch > 0 else self.epoch

    @property
    def should_stop(self) -> bool:
        return self.stop is not None

    @property
    def stop_reason(self) -> str | None:
        """The stop's detail, for people (decisions read `stop.kind`)."""
        return self.stop.detail if self.stop is not None else None

    def keep_losses(self, losses: list[tuple[torch.Tensor, int]]) -> None:
        """Keep a step's losses (detached, with their samples) for the running means."""
        self.unfolded_loss.extend(losses)
        if len(self.unfolded_loss.losses) >= UnfoldedLosses.MAX_UNFOLDED:
            self.fold_losses()

    def fold_losses(self) -> None:
        """Add the unfolded step losses to the interval and epoch means (no sync).

        The loop calls it where it reads a mean; see `UnfoldedLosses`.
        """
        total, count = self.unfolded_loss.take_sum()
        if total is not None:
            self.interval_loss.add_sum(total, count)
            self.epoch_loss.add_sum(total, count)

    def request_stop(self, kind: StopKind | str = StopKind.USER, detail: str = "") -> None:
        """Ask the loop to end after the current step; the first request is kept.

        Example:
            >>> state.request_stop(StopKind.USER, "val/acc reached 0.99")

        A plain sentence (`state.request_stop("enough")`, the older form) is a USER stop
        with that sentence as its detail.
        """
        if self.stop is not None:
            return
        if not isinstance(kind, StopKind):
            kind, detail = StopKind.USER, detail or str(kind)
        self.stop = Stop(kind, detail)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue; model weights under `model` as a plain state_dict.

        Local: no collective runs here, so any rank may call it at any time.
        """
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
            "meters": self._meters(),
            "callbacks": {
                callback_key(cb): cb.state_dict()
                for cb in self.callbacks
                if hasattr(cb, "state_dict")
            },
            "rng": capture_rng(),
        }

    def rank_local_state(self) -> dict[str, Any]:
        """This rank's random generators and loss sums: what differs between DDP ranks.

        The checkpointer gathers it from every rank (`rng_per_rank`, `meters_per_rank`).
        """
        return {"rng": capture_rng(), "meters": _on_cpu(self._meters())}

    def _meters(self) -> dict[str, Any]:
        return {
            "interval_loss": self.interval_loss.state_dict(),
            "epoch_loss": self.epoch_loss.state_dict(),
            "unfolded_loss": self.unfolded_loss.state_dict(),
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
        self.unfolded_loss.load_state_dict(meters.get("unfolded_loss"))
        if restore_rng_state:
            restore_rng(_rng_of_this_rank(state))


def callback_key(callback: object) -> str:
    """The name a callback's state is saved under (its `state_key`, else its class name)."""
    return str(getattr(callback, "state_key", type(callback).__name__))


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
    means = ("interval_loss", "epoch_loss")
    if rank > 0:
        return {name: {"total": None, "count": 0} for name in means}
    merged = {name: _add_meters([ranks[name] for ranks in saved]) for name in means}
    merged["unfolded_loss"] = _join_unfolded([ranks.get("unfolded_loss") for ranks in saved])
    return merged


def _add_meters(meters: list[dict[str, Any]]) -> dict[str, Any]:
    totals = [m["total"] for m in meters if m["total"] is not None]
    return {
        "total": torch.stack([t.float().cpu() for t in totals]).sum() if totals else None,
        "count": sum(int(m["count"]) for m in meters),
    }


def _join_unfolded(unfolded: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Every saved rank's unfolded losses, one after another (rank 0 folds them all)."""
    parts = [u for u in unfolded if u and u["losses"] is not None]
    if not parts:
        return {"losses": None, "counts": []}
    return {
        "losses": torch.cat([u["losses"].float() for u in parts]),  # where they were loaded
        "counts": [int(count) for u in parts for count in u["counts"]],
    }


def _on_cpu(meters: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in meter.items()}
        for name, meter in meters.items()
    }
