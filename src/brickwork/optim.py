"""Optimizers and learning-rate schedules, by registry name.

Schedulers differ in when they step: per optimizer step (warmup, one-cycle), per
epoch (step decay) or on a validation metric (reduce-on-plateau). Each factory
returns a `Schedule` that says which, so the loop never guesses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau, StepLR

from brickwork import registry
from brickwork.registry import register

Interval = Literal["step", "epoch", "plateau"]


@dataclass(frozen=True)
class Horizon:
    """How long training runs, for schedules that need to know the end."""

    steps_per_epoch: int
    total_steps: int


@dataclass
class Schedule:
    """A scheduler and when the loop steps it."""

    scheduler: LRScheduler | ReduceLROnPlateau
    interval: Interval
    monitor: str | None = None


register("optimizer", "sgd")(torch.optim.SGD)
register("optimizer", "adam")(torch.optim.Adam)
register("optimizer", "adamw")(torch.optim.AdamW)


# Built-ins with a fused CUDA kernel: one launch per step instead of one per parameter.
_FUSED_ON_CUDA = frozenset({"sgd", "adam", "adamw"})


def build_optimizer(name: str, params: Iterable[Any], kwargs: dict[str, Any]) -> Optimizer:
    """Instantiate the optimizer `name` over `params` (tensors or param groups).

    On CUDA the built-in SGD, Adam and AdamW take their fused implementation unless the
    config chooses (`optimizer.fused` or `optimizer.foreach`).
    """
    params = list(params)
    chosen = {"fused", "foreach"} & kwargs.keys()
    if name in _FUSED_ON_CUDA and not chosen and _all_on_cuda(params):
        kwargs = {**kwargs, "fused": True}
    return registry.build("optimizer", name, kwargs, params)


def _all_on_cuda(params: list[Any]) -> bool:
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    return bool(tensors) and all(t.is_cuda and t.is_floating_point() for t in tensors)


def build_scheduler(
    name: str, optimizer: Optimizer, horizon: Horizon, kwargs: dict[str, Any]
) -> Schedule:
    """Instantiate the schedule `name`; its factory receives the optimizer and horizon."""
    return registry.build("scheduler", name, kwargs, optimizer, horizon)


class WarmupCosine:
    """LR multiplier: linear warmup from 0, then cosine decay to `min_lr_ratio`.

    A plain callable object (not a lambda) so LambdaLR can save its state.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> None:
        self.warmup_steps = warmup_steps
        self.total_steps = max(total_steps, warmup_steps + 1)
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        progress = min((step - self.warmup_steps) / (self.total_steps - self.warmup_steps), 1.0)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine


@register("scheduler", "cosine")
def cosine(
    optimizer: Optimizer,
    horizon: Horizon,
    warmup_steps: NonNegativeInt = 0,
    warmup_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.0,
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.0,
) -> Schedule:
    """Cosine decay over the whole run, after `warmup_steps` (or a fraction of all steps)."""
    warmup = warmup_steps or round(warmup_fraction * horizon.total_steps)
    schedule = WarmupCosine(warmup, horizon.total_steps, min_lr_ratio)
    return Schedule(LambdaLR(optimizer, schedule), "step")


@register("scheduler", "step")
def step(
    optimizer: Optimizer, horizon: Horizon, step_size: PositiveInt = 10, gamma: PositiveFloat = 0.1
) -> Schedule:
    """Multiply the LR by `gamma` every `step_size` epochs."""
    return Schedule(StepLR(optimizer, step_size=step_size, gamma=gamma), "epoch")


@register("scheduler", "onecycle")
def onecycle(
    optimizer: Optimizer,
    horizon: Horizon,
    max_lr: PositiveFloat | None = None,
    pct_start: Annotated[float, Field(gt=0, lt=1)] = 0.3,
    div_factor: PositiveFloat = 25.0,
    final_div_factor: PositiveFloat = 1e4,
) -> Schedule:
    """Leslie Smith's one-cycle policy; `max_lr` defaults to the optimizer's LR."""
    peak = max_lr if max_lr is not None else [g["lr"] for g in optimizer.param_groups]
    return Schedule(
        OneCycleLR(
            optimizer,
            max_lr=peak,
            total_steps=horizon.total_steps,
            pct_start=pct_start,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
        ),
        "step",
    )


@register("scheduler", "reduce_on_plateau")
def reduce_on_plateau(
    optimizer: Optimizer,
    horizon: Horizon,
    monitor: str = "val/loss",
    mode: Literal["min", "max"] = "min",
    factor: Annotated[float, Field(gt=0, lt=1)] = 0.1,
    patience: NonNegativeInt = 3,
    min_lr: NonNegativeFloat = 0.0,
) -> Schedule:
    """Cut the LR by `factor` when `monitor` stops improving for `patience` validations."""
    scheduler = ReduceLROnPlateau(
        optimizer, mode=mode, factor=factor, patience=patience, min_lr=min_lr
    )
    return Schedule(scheduler, "plateau", monitor=monitor)
