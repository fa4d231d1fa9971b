"""The training loop: `fit` reads top to bottom, and `evaluate_loader` validates.

One optimizer step consumes `trainer.accumulate_grad_batches` loader batches (the
micro-steps). Each micro-step's loss is weighted by its share of the step's
samples, so accumulating k batches of n equals one batch of k*n exactly.

Extensions hook in through the callback events listed in `brickwork.callbacks`;
nothing here is meant to be subclassed.

Under torchrun each process runs this same loop on its share of the data; the few
distributed touches (DDP wrapping, `no_sync` during accumulation, the agreed stop,
rank-0-only output) come from `brickwork.distributed`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

import brickwork
from brickwork.callbacks import EarlyStopping, ModelCheckpoint, emit
from brickwork.checkpoint import load_checkpoint, resolve_checkpoint
from brickwork.components import (
    ComputeLoss,
    batch_size_of,
    build_components,
    build_optimization,
    build_split_loader,
    move_to_device,
    resolve_device,
)
from brickwork.config import Config, load_config
from brickwork.console import ConsoleProgress
from brickwork.data.bundle import save_data_facts
from brickwork.data.loader import seed_loader_for_epoch
from brickwork.distributed import (
    StopSync,
    describe_batch,
    distributed_session,
    get_rank,
    get_world_size,
    is_main_process,
    no_sync,
    open_shared_run,
    rank_device,
    resolve_batch_sizes,
    seed_rank,
    sum_across_ranks,
    wrap_model,
)
from brickwork.errors import ConfigError
from brickwork.loggers import MetricsFile, TensorBoardLogger
from brickwork.nonfinite import NonFiniteGuard
from brickwork.preemption import StopOnSignal
from brickwork.run import Run, write_summary
from brickwork.state import TrainState, seed_everything, unwrap_model

log = logging.getLogger("brickwork")


def fit(
    config: Config | str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    resume_force: bool = False,
    callbacks: Iterable[Any] = (),
    compute_loss: ComputeLoss | None = None,
) -> dict[str, Any]:
    """Train from a config (object, YAML path, or None for the digits default).

    `resume` continues a run folder or checkpoint; `"auto"` continues the newest run of
    the config's name under `runs/` if it did not finish, else starts a new one. A
    resume whose config changes the math is refused unless `resume_force`.
    Returns the run summary (also written to `summary.json`). Started by torchrun
    (`RANK`/`WORLD_SIZE` set) it joins the process group and trains as one rank.

    Example:
        >>> summary = brickwork.fit("configs/digits.yaml", overrides=["trainer.max_epochs=3"])
        >>> summary["best"]["value"]
    """
    if str(resume) == "auto":
        config = _resolve_config(config, overrides, None)
        resume_from = _find_auto_resume(config.name)
    else:
        resume_from = resolve_checkpoint(Path(resume)) if resume is not None else None
        config = _resolve_config(config, overrides, resume_from)
    with distributed_session(config.trainer, resolve_device(config.trainer.device)):
        run = open_shared_run(config, run_dir, resume_from, resume_force)
        try:
            return _fit(config, run, list(callbacks), compute_loss)
        finally:
            run.close()


def _fit(
    config: Config, run: Run, user_callbacks: list[Any], compute_loss: ComputeLoss | None
) -> dict[str, Any]:
    world_size = get_world_size()
    config = resolve_batch_sizes(config, world_size)
    trainer = config.trainer
    seed_everything(config.seed)  # the same on every rank: identical initial weights
    device = rank_device(resolve_device(trainer.device))
    parts = build_components(config, device, compute_loss)
    if is_main_process():
        save_data_facts(parts.data, run.directory / "data.json")
    seed_rank(config.seed)
    if trainer.channels_last:
        parts.model.to(memory_format=torch.channels_last)
    steps_per_epoch = -(-parts.batches_per_epoch // trainer.accumulate_grad_batches)
    # Freezing happens here, before DDP wraps the model: DDP syncs only the parameters
    # that require gradients when it is built.
    optimizer, schedule = build_optimization(config, parts.model, steps_per_epoch)
    model = wrap_model(parts.model, trainer, device)
    # fp16 needs loss scaling against gradient underflow; bf16 has fp32's range and does not.
    scaler = torch.amp.GradScaler(device.type) if trainer.precision == "16" else None
    autocast = _autocast(device, trainer.precision)
    checkpointer = ModelCheckpoint(
        run.checkpoints,
        **config.checkpoint.model_dump(),
        batches_per_epoch=parts.batches_per_epoch,
        extra_state={"config": config.to_dict(), "versions": _versions()},
    )
    nonfinite = NonFiniteGuard(
        trainer.on_nonfinite,
        trainer.max_nonfinite_steps,
        run.directory,
        parts.model,  # unwrapped: its replay must not run DDP's hooks
        parts.compute_loss,
        parts.train_loader,
        device,
    )
    main = is_main_process()  # only rank 0 prints and writes files
    callbacks: list[Any] = [
        *_finetune(config, parts.model, optimizer, schedule),
        StopOnSignal(trainer.stop_signals),
        nonfinite,
        *_early_stopping(config),
        *user_callbacks,
        *([MetricsFile(run.metrics_file)] if main else []),
        *(_tensorboard(config, run, parts.data) if main else []),
        *(
            [
                ConsoleProgress(
                    steps_per_epoch,
                    config.data.batch_size * trainer.accumulate_grad_batches * world_size,
                    trainer.max_epochs,
                    progress_bar=config.loggers.progress_bar,
                )
            ]
            if main
            else []
        ),
        StopSync(),  # every rank stops after the same step, before anyone saves
        checkpointer,  # last: it saves the state every other callback has just updated
    ]
    state = TrainState(model, optimizer, schedule, scaler, callbacks)
    if run.resume_from is not None:
        _load_resume_state(state, run.resume_from, run, config, device)
    non_blocking = parts.train_loader.pin_memory
    started, status, metrics = time.perf_counter(), "running", {}
    log.info("training %s on %s, run folder %s", config.name, device, run.directory)
    log.info(describe_batch(config, world_size))
    if main and (world_size > 1 or config.data.global_batch_size is not None):
        print(f"brickwork: {describe_batch(config, world_size)}", flush=True)

    # Marks the run unfinished at once, so `--resume auto` finds it even if it gets killed.
    if main:
        write_summary(
            run,
            {
                "status": "running",
                "run_dir": str(run.directory),
                "num_steps": state.step,
                "world_size": world_size,
            },
        )
    emit(callbacks, "on_fit_start", state)
    try:
        while not _finished(state, config):
            model.train()
            emit(callbacks, "on_epoch_start", state)
            position = state.batch_in_epoch * (parts.train_loader.batch_size or 1)
            seed_loader_for_epoch(parts.train_loader, config.seed, state.epoch, position)
            reached_max_steps = False

            for micro_batches in _group(parts.train_loader, trainer.accumulate_grad_batches):
                optimizer.zero_grad(set_to_none=True)
                step_samples = sum(batch_size_of(b) for b in micro_batches)
                losses: list[tuple[torch.Tensor, int]] = []
                nonfinite.remember_buffers()  # with on_nonfinite=skip only
                for index, batch in enumerate(micro_batches):
                    batch = move_to_device(batch, device, non_blocking, trainer.channels_last)
                    num_samples = batch_size_of(batch)
                    # DDP all-reduces gradients in backward: only on the step's last micro-step.
                    with no_sync(model, sync=index == len(micro_batches) - 1):
                        with autocast:
                            output = parts.compute_loss(model, batch)
                        loss = output["loss"]
                        # Weighted to the mean over the whole step; one micro-step needs no
                        # multiply (x1.0 is exact, and each tiny op costs time on the CPU).
                        single = len(micro_batches) == 1
                        scaled = loss if single else loss * (num_samples / step_samples)
                        (scaler.scale(scaled) if scaler else scaled).backward()
                    losses.append((loss.detach(), num_samples))

                if not nonfinite.all_finite(losses):  # one device sync per step
                    nonfinite.handle(state, micro_batches)  # raises NonFiniteError to stop
                    state.batch_in_epoch += len(micro_batches)  # skipped: no update, no step
                    continue
                for loss, num_samples in losses:  # on device: no sync
                    weighted = loss.float() * num_samples
                    state.interval_loss.add_sum(weighted, num_samples)
                    state.epoch_loss.add_sum(weighted, num_samples)

                if trainer.gradient_clip_val is not None:
                    if scaler is not None:
                        scaler.unscale_(optimizer)  # clip true gradients, not scaled ones
                    _clip_gradients(
                        model, trainer.gradient_clip_val, trainer.gradient_clip_algorithm
                    )
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                if schedule is not None and schedule.interval == "step":
                    schedule.scheduler.step()  # type: ignore[call-arg]
                state.step += 1
                state.batch_in_epoch += len(micro_batches)

                logs: dict[str, float] = {}
                if state.step % trainer.log_every_n_steps == 0:
                    logs = {"train/loss": state.interval_loss.compute(), "lr": _lr(optimizer)}
                    state.interval_loss.reset()
                emit(callbacks, "on_step_end", state, logs)
                if trainer.max_steps is not None and state.step >= trainer.max_steps:
                    reached_max_steps = True
                    state.request_stop(f"reached trainer.max_steps={trainer.max_steps}")
                if state.should_stop:
                    break

            epoch_complete = state.batch_in_epoch >= parts.batches_per_epoch
            if not (epoch_complete or reached_max_steps):
                break  # stopped mid-epoch (a signal): no epoch-end work, resume picks up here
            metrics = {"train/loss_epoch": state.epoch_loss.compute()}
            if reached_max_steps or (
                epoch_complete and (state.epoch + 1) % trainer.val_every_n_epochs == 0
            ):
                seed_loader_for_epoch(parts.val_loader, config.seed, state.epoch, 0)
                val_metrics = evaluate_loader(
                    parts.model,  # unwrapped: evaluation needs no DDP hooks
                    parts.val_loader,
                    parts.compute_loss,
                    parts.metrics,
                    device,
                    "val",
                    autocast,
                )
                metrics.update(val_metrics)
                emit(callbacks, "on_validation_end", state, val_metrics)
            metrics["lr"] = _lr(optimizer)
            if epoch_complete:
                _step_epoch_schedule(schedule, metrics)
                state.epoch += 1
                state.batch_in_epoch = 0
                state.epoch_loss.reset()
            emit(callbacks, "on_epoch_end", state, metrics)
        status = _final_status(state.stop_reason)
    except KeyboardInterrupt as error:
        status = "interrupted"
        emit(callbacks, "on_exception", state, error)
        raise
    except BaseException as error:
        status = "failed"
        emit(callbacks, "on_exception", state, error)
        raise
    finally:
        summary = _summarize(config, run, state, checkpointer, metrics, status, started)
        if status in ("completed", "early_stopped") and trainer.test_after_fit:
            summary["test"] = _test_best(config, run, parts, autocast)
            summary["final"].update(summary["test"])
        if main:
            try:
                write_summary(run, summary)
            except OSError as error:  # a full disk must not hide the error that stopped the run
                log.warning("could not write %s: %s", run.summary_file, error.strerror)
        if world_size > 1 and status == "preempted":
            log.warning(
                "rank %d stopped at step %d (%s)", get_rank(), state.step, state.stop_reason
            )
        emit(callbacks, "on_fit_end", state, summary)
    return summary


@torch.no_grad()
def evaluate_loader(
    model: nn.Module,
    loader: DataLoader[Any],
    compute_loss: ComputeLoss,
    metrics: Any,
    device: torch.device,
    prefix: str,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
) -> dict[str, float]:
    """Mean loss and metrics over `loader` in eval mode, without building autograd graphs."""
    was_training = model.training
    model.eval()
    metrics.reset()
    total = torch.zeros((), device=device)
    count = 0
    for batch in loader:
        batch = move_to_device(batch, device)
        with autocast or contextlib.nullcontext():
            output = compute_loss(model, batch)
        num_samples = batch_size_of(batch)
        total += output["loss"].detach().float() * num_samples
        count += num_samples
        if "preds" in output and output.get("target") is not None and len(metrics):
            metrics.update(output["preds"].float(), output["target"])
    model.train(was_training)
    # The pass's one sync: sums over ranks (each evaluated its own unpadded share).
    total_sum, total_count = sum_across_ranks(total, float(count))
    results = {f"{prefix}/loss": total_sum / max(total_count, 1)}
    if len(metrics):
        results.update({f"{prefix}/{k}": float(v) for k, v in metrics.compute().items()})
    return results


def _group(loader: DataLoader[Any], size: int) -> Iterator[list[Any]]:
    """Batches in lists of `size` (the last list of an epoch may be shorter)."""
    iterator = iter(loader)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _final_status(stop_reason: str | None) -> str:
    """`completed`, or why the loop ended early: `early_stopped` or `preempted` (a signal)."""
    if stop_reason is None or stop_reason.startswith("reached"):
        return "completed"
    return "preempted" if stop_reason.startswith("signal") else "early_stopped"


def _finished(state: TrainState, config: Config) -> bool:
    trainer = config.trainer
    return (
        state.should_stop
        or (trainer.max_epochs is not None and state.epoch >= trainer.max_epochs)
        or (trainer.max_steps is not None and state.step >= trainer.max_steps)
    )


def _clip_gradients(model: nn.Module, value: float, algorithm: str) -> None:
    if algorithm == "norm":
        torch.nn.utils.clip_grad_norm_(model.parameters(), value)
    else:
        torch.nn.utils.clip_grad_value_(model.parameters(), value)


def _step_epoch_schedule(schedule: Any, metrics: dict[str, float]) -> None:
    if schedule is None:
        return
    if schedule.interval == "epoch":
        schedule.scheduler.step()
    elif schedule.interval == "plateau" and schedule.monitor in metrics:
        schedule.scheduler.step(metrics[schedule.monitor])


def _lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _finetune(config: Config, model: nn.Module, optimizer: Any, schedule: Any) -> list[Any]:
    if not config.finetune.active:
        return []
    from brickwork.finetune import Finetune

    if config.finetune.unfreeze and get_world_size() > 1:
        raise ConfigError(
            "finetune.unfreeze with more than one process: DDP fixes the set of trainable "
            "parameters when it wraps the model; freeze statically or unfreeze on one process"
        )

    return [Finetune(model, optimizer, schedule, config.finetune, config.optimizer.lr)]


def _early_stopping(config: Config) -> list[Any]:
    if config.early_stopping is None:
        return []
    return [EarlyStopping(**config.early_stopping.model_dump())]


def _tensorboard(config: Config, run: Run, data: Any) -> list[Any]:
    tensorboard = config.loggers.tensorboard
    if not tensorboard.enabled:
        return []
    return [
        TensorBoardLogger(
            run.tensorboard_dir, tensorboard, data.val, data.label_names, data.denormalize
        )
    ]


def _resolve_config(
    config: Config | str | Path | None, overrides: Sequence[str], resume_from: Path | None
) -> Config:
    if config is None and resume_from is not None:
        from brickwork.run import run_dir_of

        config = run_dir_of(resume_from) / "config.yaml"
    if isinstance(config, Config):
        return load_config(config.to_dict(), overrides)
    return load_config(config, overrides)


def _find_auto_resume(name: str) -> Path | None:
    """`--resume auto`: the last checkpoint of the newest unfinished run named `name`."""
    from brickwork.errors import CheckpointError
    from brickwork.run import find_unfinished_run

    found = find_unfinished_run(name)
    if found is None:
        log.info("--resume auto: no unfinished run of %s; starting a new run", name)
        return None
    try:
        return resolve_checkpoint(found)
    except CheckpointError:
        log.warning("--resume auto: %s has no complete checkpoint; starting a new run", found)
        return None


def _load_resume_state(
    state: TrainState, checkpoint: Path, run: Run, config: Config, device: torch.device
) -> None:
    """Load `checkpoint` into `state`; only then record config changes in the run folder."""
    from brickwork.errors import CheckpointError
    from brickwork.run import record_config_changes

    try:
        state.load_state_dict(load_checkpoint(checkpoint, map_location=device))
    except (RuntimeError, KeyError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"{checkpoint}: does not fit the model and optimizer of this config "
            f"({first_line[:200]}); resume with the run's own config"
        ) from None
    record_config_changes(run, config)
    log.info("resumed from %s at step %d, epoch %d", checkpoint, state.step, state.epoch)


def _versions() -> dict[str, str]:
    return {"brickwork": brickwork.__version__, "torch": torch.__version__}


def _summarize(
    config: Config,
    run: Run,
    state: TrainState,
    checkpointer: ModelCheckpoint,
    metrics: dict[str, float],
    status: str,
    started: float,
) -> dict[str, Any]:
    return {
        "status": status,
        "stop_reason": state.stop_reason,
        "run_dir": str(run.directory),
        "monitor": config.checkpoint.monitor,
        "mode": config.checkpoint.mode,
        "best": checkpointer.best,
        "final": dict(metrics),
        "num_steps": state.step,
        "num_epochs": state.epoch,
        "world_size": get_world_size(),
        "wall_s": round(time.perf_counter() - started, 3),
        "versions": _versions(),
    }


def _test_best(config: Config, run: Run, parts: Any, autocast: Any) -> dict[str, float]:
    """Test-split metrics of the best checkpoint (or the final weights if none is best)."""
    if parts.data.test is None:
        return {}
    best = run.checkpoints / "best"
    model = unwrap_model(parts.model)
    if best.exists():
        from brickwork.checkpoint import MODEL_FILE, load_tensors

        model.load_state_dict(load_tensors(best / MODEL_FILE, parts.device))
    loader = build_split_loader(config, parts.data, "test")
    return evaluate_loader(
        model, loader, parts.compute_loss, parts.metrics, parts.device, "test", autocast
    )
