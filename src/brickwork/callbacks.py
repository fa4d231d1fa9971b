"""Callbacks: the named events where extensions hook into the loop.

The loop calls, in this order:

    on_fit_start(state)
      on_epoch_start(state)
        on_step_end(state, logs)            after each optimizer step; `logs` holds
                                            floats on logging steps, else is empty
      on_validation_end(state, metrics)     after each validation pass
      on_epoch_end(state, metrics)          train and val metrics of the epoch
    on_fit_end(state, summary)              always, also after an error
    on_exception(state, error)              before on_fit_end when the loop raised

A callback implements any subset. One that keeps state across a resume adds
`state_dict()` and `load_state_dict()`; that state rides in every checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from brickwork.checkpoint import point_alias, prune_checkpoints, save_checkpoint
from brickwork.distributed import barrier, gather_objects, get_world_size, is_main_process
from brickwork.errors import ConfigError
from brickwork.registry import register
from brickwork.stop import Stop, StopKind

if TYPE_CHECKING:
    from brickwork.state import TrainState

log = logging.getLogger("brickwork")

HOOKS = (
    "on_fit_start",
    "on_epoch_start",
    "on_step_end",
    "on_validation_end",
    "on_epoch_end",
    "on_exception",
    "on_fit_end",
)


@runtime_checkable
class Callback(Protocol):
    """Marker protocol: any object with some of the hooks in `HOOKS` is a callback.

    Example:
        >>> class PrintLR:
        ...     def on_epoch_end(self, state, metrics):
        ...         print(state.epoch, metrics["lr"])
    """


def emit(callbacks: list[Any], hook: str, *args: Any) -> None:
    """Call `hook` on every callback that defines it, in list order."""
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is not None:
            method(*args)


def hook_methods(callbacks: list[Any], hook: str) -> list[Callable[..., Any]]:
    """The bound `hook` of every callback that defines it, in list order.

    For a hook the loop calls every step: looked up once, not once per step and callback.
    """
    return [method for c in callbacks if (method := getattr(c, hook, None)) is not None]


def improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether `value` beats `best` by more than `min_delta` in the direction of `mode`."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def read_monitor(metrics: dict[str, float], monitor: str, owner: str) -> float | None:
    """The monitored value, None on epochs without validation, an error for a wrong name."""
    if monitor in metrics:
        return float(metrics[monitor])
    if any(key.startswith("val/") for key in metrics):
        raise ConfigError(
            f"{owner}.monitor = '{monitor}' is not a logged metric; "
            f"logged: {', '.join(sorted(metrics))}"
        )
    return None


@register("callback", "early_stopping")
class EarlyStopping:
    """Stop when `monitor` has not improved by `min_delta` for `patience` validations."""

    def __init__(
        self,
        monitor: str = "val/loss",
        mode: str = "min",
        patience: int = 5,
        min_delta: float = 0.0,
    ) -> None:
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.best: float | None = None
        self.bad_epochs = 0

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        value = read_monitor(metrics, self.monitor, "early_stopping")
        if value is None:
            return
        if improved(value, self.best, self.mode, self.min_delta):
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            state.request_stop(
                StopKind.EARLY_STOPPED,
                f"{self.monitor} did not improve for {self.patience} validations",
            )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_epochs = state["best"], int(state["bad_epochs"])


class ModelCheckpoint:
    """Save `last` each `every_n_epochs`, `best` on improvement of `monitor`, prune to `keep_k`.

    Optionally also every `every_n_steps` optimizer steps or `every_n_minutes`, mid-epoch
    included, so a crash loses at most that much work. A step-level save that falls on
    the last step of an epoch is moved to the epoch end, so one step never has two
    different checkpoints (one before and one after validation).

    The best value, step and epoch ride in every checkpoint, so a resumed run keeps
    comparing against the true best rather than starting over.

    Not a callback: the loop calls `after_step`, `after_epoch` and `save_final` at their
    own lines, after every other callback has updated the state and every rank has
    agreed whether to stop, so the order needs no list position to hold.
    """

    state_key = "checkpoint"

    def __init__(
        self,
        directory: Path,
        monitor: str,
        mode: str,
        save_last: bool = True,
        keep_k: int = 1,
        every_n_epochs: int = 1,
        every_n_steps: int | None = None,
        every_n_minutes: float | None = None,
        batches_per_epoch: int | None = None,
        extra_state: dict[str, Any] | None = None,
        before_save: Callable[[TrainState], None] | None = None,
    ) -> None:
        self.directory = directory
        self.before_save = before_save  # raises to refuse the save (non-finite weights)
        self.monitor, self.mode = monitor, mode
        self.save_last, self.keep_k, self.every_n_epochs = save_last, keep_k, every_n_epochs
        self.every_n_steps, self.every_n_minutes = every_n_steps, every_n_minutes
        self.batches_per_epoch = batches_per_epoch
        self.extra_state = extra_state or {}
        self.best: dict[str, Any] | None = None  # {"value", "step", "epoch"}
        self._last_saved_step: int | None = None
        self._last_saved_time = time.monotonic()
        self._deferred = False  # a step-level save moved to the epoch end

    def after_step(self, state: TrainState) -> None:
        by_steps = self.every_n_steps is not None and state.step % self.every_n_steps == 0
        by_time = (
            self.every_n_minutes is not None
            and time.monotonic() - self._last_saved_time >= 60 * self.every_n_minutes
        )
        if not (by_steps or by_time):
            return
        ends_epoch = (
            self.batches_per_epoch is not None and state.batch_in_epoch >= self.batches_per_epoch
        )
        if ends_epoch:
            self._deferred = True  # saved in after_epoch, after validation
        else:
            self.save(state)

    def after_epoch(self, state: TrainState, metrics: dict[str, float]) -> None:
        finished_epoch = state.epoch_of_step
        value = read_monitor(metrics, self.monitor, "checkpoint")
        is_best = value is not None and improved(
            value, None if self.best is None else self.best["value"], self.mode
        )
        if is_best:
            self.best = {"value": value, "step": state.step, "epoch": finished_epoch}
        periodic = self.save_last and (finished_epoch + 1) % self.every_n_epochs == 0
        if is_best or periodic or state.should_stop or self._deferred:
            self.save(state, best=is_best)
        self._deferred = False

    def save_final(self, state: TrainState, stop: Stop) -> None:
        """Save the steps taken since the last checkpoint, as the stop's kind allows.

        A preempted run always keeps its last steps (it will be resumed); a failed one
        never does (its state may hold NaN weights); any other end keeps them when
        `save_last` is on.
        """
        if stop.kind is StopKind.FAILED or self._last_saved_step == state.step:
            return
        if stop.kind is StopKind.PREEMPTED or self.save_last:
            self.save(state)

    def save(self, state: TrainState, best: bool = False) -> Path:
        """Write a checkpoint of `state` now and move the aliases.

        Under DDP every rank calls this at the same step (the stop decision is agreed
        first): an all_gather collects each rank's RNG state and loss sums, rank 0
        writes, and a barrier keeps the others from reading the folder before it is
        complete.
        """
        if self.before_save is not None:
            self.before_save(state)  # on every rank: it may be a collective
        payload = state.state_dict()
        if get_world_size() > 1:  # collective: every rank's generators and loss sums
            ranks = gather_objects(state.rank_local_state())
            payload["rng_per_rank"] = [r["rng"] for r in ranks]
            payload["meters_per_rank"] = [r["meters"] for r in ranks]
        self._last_saved_step = state.step
        if not is_main_process():
            barrier()
            return self.directory / f"step-{state.step:08d}"
        payload["extra"] = self.extra_state
        folder = save_checkpoint(payload, self.directory, state.step, replace=True)
        self._last_saved_time = time.monotonic()
        point_alias(self.directory, "last", folder)
        if best:
            point_alias(self.directory, "best", folder)
        prune_checkpoints(self.directory, self.keep_k)
        log.info("saved checkpoint %s%s", folder.name, " (best)" if best else "")
        barrier()
        return folder

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")
