"""From a validated config to the objects the loop runs: data, loaders, model, loss,
metrics, optimizer, schedule, and the step function.

`fit`, `evaluate` and `predict` all assemble their pieces here, so the CLI and the
Python API cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from brickwork.batch import Batch, call_model, logits_of, split_batch
from brickwork.config import Config
from brickwork.data import DataBundle, build_data, build_dataloader
from brickwork.data.sampler import ResumableSampler
from brickwork.errors import ConfigError
from brickwork.losses import build_loss
from brickwork.models import build_model
from brickwork.optim import Horizon, Schedule, build_optimizer, build_scheduler

if TYPE_CHECKING:
    from brickwork.metrics import MetricCollection

StepOutput = dict[str, torch.Tensor]
ComputeLoss = Callable[[nn.Module, Batch], StepOutput]


class SupervisedStep:
    """The default `compute_loss`: `(inputs, targets)` in, logits and loss out.

    The model may return logits or an object holding them (a Hugging Face
    `SequenceClassifierOutput`); `ModelKwargs` inputs are passed as keyword arguments.

    Replace it with any `compute_loss(model, batch) -> {"loss": ..., ...}`; include
    `preds` and `target` to have metrics updated.
    """

    def __init__(self, loss_fn: nn.Module) -> None:
        self.loss_fn = loss_fn

    def __call__(self, model: nn.Module, batch: Batch) -> StepOutput:
        inputs, targets = split_batch(batch)
        logits = logits_of(call_model(model, inputs))  # (B, num_classes)
        return {"loss": self.loss_fn(logits, targets), "preds": logits, "target": targets}


@dataclass
class Components:
    """Everything `fit` needs besides the optimizer, which depends on the model's placement."""

    config: Config
    data: DataBundle
    model: nn.Module
    compute_loss: ComputeLoss
    metrics: MetricCollection
    train_loader: DataLoader[Any]
    val_loader: DataLoader[Any]
    device: torch.device

    @property
    def train_sampler(self) -> ResumableSampler:
        return self.train_loader.sampler  # type: ignore[return-value]

    @property
    def batches_per_epoch(self) -> int:
        """Global micro-batches in a whole epoch: the same on every rank, whatever its share."""
        return self.train_sampler.num_batches


def build_components(
    config: Config,
    device: torch.device,
    compute_loss: ComputeLoss | None = None,
    fitted: dict[str, Any] | None = None,
) -> Components:
    """Data, loaders, model (on `device`), loss and metrics for `config`.

    `fitted` (a finished run's `data.json`) rebuilds the data without the training set,
    where the dataset can (`brickwork.data.build_data`): predict and export.
    """
    from brickwork.metrics import build_metrics

    data = build_data(config, fitted)
    model = build_model(config.model, data, config.finetune.lora).to(device)
    loss_fn = build_loss(
        config.loss.name,
        config.loss.kwargs,
        {"num_classes": data.num_classes, "train_targets": data.train_targets},
    ).to(device)
    pin_memory = (
        config.data.pin_memory if config.data.pin_memory is not None else device.type == "cuda"
    )

    return Components(
        config=config,
        data=data,
        model=model,
        compute_loss=compute_loss or SupervisedStep(loss_fn),
        metrics=build_metrics(config.metrics, data.num_classes).to(device),
        train_loader=build_split_loader(config, data, "train", train=True, pin_memory=pin_memory),
        val_loader=build_split_loader(config, data, "val", pin_memory=pin_memory),
        device=device,
    )


def build_split_loader(
    config: Config, data: DataBundle, split: str, *, train: bool = False, pin_memory: bool = False
) -> DataLoader[Any]:
    """A loader over this rank's share of one split (all of it in one process).

    `train=True` shuffles (or draws weighted) and cuts each global micro-batch (the
    global batch over the accumulated micro-steps) across ranks; evaluation does neither.
    """
    from brickwork.distributed import get_rank, get_world_size

    data_config, world_size = config.data, get_world_size()
    batch_total = data_config.batch_size * world_size
    if data_config.global_batch_size is not None:
        batch_total = data_config.global_batch_size // config.trainer.accumulate_grad_batches
    return build_dataloader(
        data.split(split),
        config.data,
        train=train,
        seed=config.seed,
        collate_fn=data.collate_fn,
        pin_memory=pin_memory,
        targets=data.train_targets if train else None,
        num_replicas=world_size,
        rank=get_rank(),
        batch_total=batch_total if train else None,
    )


def build_optimization(
    config: Config, model: nn.Module, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, Schedule | None]:
    """The optimizer over the trainable parameters, and the schedule (or None).

    `finetune:` freezes parameters first and splits the rest into LR groups.
    """
    params: list[Any] = [p for p in model.parameters() if p.requires_grad]
    if config.finetune.active:
        from brickwork.finetune import build_param_groups, freeze_parameters

        freeze_parameters(model, config.finetune)
        params = build_param_groups(model, config.finetune, config.optimizer.lr)
    optimizer = build_optimizer(config.optimizer.name, params, config.optimizer.kwargs)
    if config.scheduler is None:
        return optimizer, None
    trainer = config.trainer
    by_epochs = trainer.max_epochs * steps_per_epoch if trainer.max_epochs else None
    total = min(s for s in (by_epochs, trainer.max_steps) if s is not None)
    horizon = Horizon(steps_per_epoch=steps_per_epoch, total_steps=total)
    return optimizer, build_scheduler(
        config.scheduler.name, optimizer, horizon, config.scheduler.kwargs
    )


def resolve_device(requested: str) -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; an unavailable choice is an error."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if requested == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if requested.startswith("cuda") and not cuda:
        raise ConfigError(f"trainer.device = '{requested}': CUDA is not available; use auto or cpu")
    if requested == "mps" and not mps:
        raise ConfigError("trainer.device = 'mps': MPS is not available; use auto or cpu")
    return torch.device(requested)


def resolve_batch_sizes(config: Config, world_size: int) -> Config:
    """Derive `data.batch_size` and accumulation from `data.global_batch_size`, if set.

    The global batch (samples per optimizer step over all ranks) is reached by
    accumulating the fewest micro-batches that cut it evenly and keep each rank's share
    at most `data.batch_size`, so `data.batch_size` caps memory use. A global batch the
    processes cannot share evenly (32 on 3) gives ranks shares that differ by one
    sample (11, 11, 10): the loss weighting keeps the math that of one process.
    """
    data, trainer = config.data, config.trainer
    target = data.global_batch_size
    if target is None:
        return config
    if trainer.accumulate_grad_batches != 1:
        raise ConfigError(
            f"data.global_batch_size = {target} and trainer.accumulate_grad_batches = "
            f"{trainer.accumulate_grad_batches}: the global batch derives the accumulation; "
            "drop one of them"
        )
    if target < world_size:
        raise ConfigError(
            f"data.global_batch_size = {target}: smaller than the {world_size} processes, "
            f"so some would get no sample; use at least {world_size}"
        )
    accumulate = _fewest_micro_batches(target, world_size, data.batch_size)
    micro_total = target // accumulate
    return config.model_copy(
        update={
            "data": data.model_copy(update={"batch_size": -(-micro_total // world_size)}),
            "trainer": trainer.model_copy(update={"accumulate_grad_batches": accumulate}),
        }
    )


def _fewest_micro_batches(target: int, world_size: int, cap: int) -> int:
    """Micro-steps per optimizer step: equal shares per rank where the global batch allows."""
    if target % world_size == 0:
        per_rank = target // world_size
        accumulate = -(-per_rank // cap)
        while per_rank % accumulate:
            accumulate += 1
        return accumulate
    accumulate = -(-target // (world_size * cap))
    while target % accumulate:
        accumulate += 1
    if target // accumulate < world_size:
        raise ConfigError(
            f"data.global_batch_size = {target} on {world_size} processes with "
            f"data.batch_size = {cap}: no cut into equal micro-batches gives every process a "
            f"sample; raise data.batch_size or use a multiple of {world_size}"
        )
    return accumulate


def describe_batch(config: Config, world_size: int) -> str:
    """`global batch 64 = 2 processes x 16 per process x 2 accumulated micro-batches`."""
    per_rank, accumulate = config.data.batch_size, config.trainer.accumulate_grad_batches
    total = config.data.global_batch_size or per_rank * accumulate * world_size
    micro_total = total // accumulate
    smallest = micro_total // world_size
    share = f"{per_rank}" if smallest == per_rank else f"{smallest}-{per_rank}"
    return (
        f"global batch {total} = {world_size} process(es) "
        f"x {share} per process x {accumulate} accumulated micro-batch(es)"
    )


def build_callbacks(config: Config) -> list[Any]:
    """The callbacks named under `callbacks:` in the config, built with their arguments.

    Project callbacks register with `@register("callback", NAME)` in a module listed
    under `imports:`.
    """
    from brickwork import registry

    return [registry.get("callback", spec.name)(**spec.kwargs) for spec in config.callbacks]
