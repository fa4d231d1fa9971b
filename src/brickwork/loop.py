"""The training loop: `fit` reads top to bottom, and `evaluate_loader` validates.

`_fit` is five parts in order: resolve (batch split, device, seeds), build (data,
model, optimizer, callbacks, loggers), load state (a resume), the loop, and finish
(final checkpoint, test pass, summary). Everything that must happen in a fixed order
is a line of the loop, not a position in a list: the stop agreement across ranks
comes right before the checkpointer, which comes after every callback.

One optimizer step consumes `trainer.accumulate_grad_batches` loader batches (the
micro-steps). Each micro-step's loss is weighted by its share of the step's
samples, so accumulating k batches of n equals one batch of k*n exactly.

Extensions hook in through the callback events listed in `brickwork.callbacks` and
the `Logger` protocol in `brickwork.loggers`; nothing here is meant to be subclassed.
Under torchrun each process runs this same loop on its share of the data; every
collective it runs is marked where it happens (docs/distributed.md lists them).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from brickwork.batch import batch_size_of, move_to_device
from brickwork.callbacks import EarlyStopping, ModelCheckpoint, emit, hook_methods
from brickwork.checkpoint import MODEL_FILE, load_checkpoint, load_tensors
from brickwork.compilation import compile_model, explain_compile_error, is_compile_error
from brickwork.components import (
    Components,
    ComputeLoss,
    build_callbacks,
    build_components,
    build_optimization,
    build_split_loader,
    describe_batch,
    resolve_batch_sizes,
    resolve_device,
)
from brickwork.config import Config
from brickwork.console import ConsoleProgress
from brickwork.data.bundle import save_data_facts
from brickwork.data.hf_tokenizer import save_run_tokenizer
from brickwork.data.loader import seed_loader_for_epoch
from brickwork.distributed import (
    distributed_session,
    get_rank,
    get_world_size,
    is_main_process,
    mean_across_ranks,
    no_sync,
    rank_device,
    sum_across_ranks,
    wrap_model,
)
from brickwork.errors import CheckpointError, ConfigError
from brickwork.loggers import Logger, build_loggers
from brickwork.memory import Attempt, OutOfMemoryRecovery
from brickwork.models import save_model_files
from brickwork.models.anatomy import unwrap_model
from brickwork.nonfinite import NonFiniteGuard
from brickwork.optim import Schedule
from brickwork.rng import seed_everything, seed_rank
from brickwork.run import (
    Run,
    open_shared_run,
    record_config_changes,
    remove_unstarted_run,
    resolve_training,
    write_summary,
)
from brickwork.state import TrainState
from brickwork.stop import SignalStop, Stop, StopKind, agree_stop
from brickwork.version import RUN_FORMAT_VERSION, __version__

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
    plan = resolve_training(config, overrides, resume)
    trainer = plan.config.trainer
    with distributed_session(trainer, resolve_device(trainer.device)):
        run_dir = run_dir if run_dir is not None else plan.restart_in
        run = open_shared_run(plan.config, run_dir, plan.resume_from, resume_force)
        try:
            return _fit(plan.config, run, list(callbacks), compute_loss)
        except BaseException as error:
            if not run.started and is_main_process():
                remove_unstarted_run(run)  # a mistake found in setup leaves no folder
            compiling = trainer.compile.enabled and isinstance(error, Exception)
            if compiling and is_compile_error(error):
                raise explain_compile_error(error) from None
            raise
        finally:
            run.close()


@dataclass
class _Training:
    """What `_fit` builds before the first step."""

    parts: Components
    model: nn.Module  # wrapped for DDP where needed; `parts.model` is the user's module
    optimizer: torch.optim.Optimizer
    schedule: Schedule | None
    scaler: torch.amp.GradScaler | None
    autocast: contextlib.AbstractContextManager[Any]
    callbacks: list[Any]  # in the order their hooks run; loggers included
    loggers: list[Logger]
    nonfinite: NonFiniteGuard
    recovery: OutOfMemoryRecovery
    checkpointer: ModelCheckpoint
    state: TrainState
    world_size: int


def _fit(
    config: Config, run: Run, user_callbacks: list[Any], compute_loss: ComputeLoss | None
) -> dict[str, Any]:
    # Resolve: this many processes' share of the batch, this rank's device, the seeds.
    config = resolve_batch_sizes(config, get_world_size())
    trainer = config.trainer
    device = rank_device(resolve_device(trainer.device))
    seed_everything(config.seed)  # the same on every rank: identical initial weights
    # Build.
    built = _build_training(config, run, device, compute_loss, user_callbacks)
    parts, model, optimizer, schedule = built.parts, built.model, built.optimizer, built.schedule
    callbacks, loggers, state, scaler = built.callbacks, built.loggers, built.state, built.scaler
    # Load state.
    if run.resume_from is not None:
        _load_resume_state(state, run.resume_from, run, config, device)
    _announce_start(config, run, state, device)
    signals, world_size = SignalStop(trainer.stop_signals), built.world_size
    skip_nonfinite, batches_per_epoch = trainer.on_nonfinite == "skip", parts.batches_per_epoch
    on_step_end = hook_methods(callbacks, "on_step_end")  # every step: looked up once
    started, stop, metrics = time.perf_counter(), Stop(StopKind.FAILED), {}

    with signals.installed():  # the previous handlers come back whatever happens
        try:
            emit(callbacks, "on_fit_start", state)
            _start_loggers(loggers, state.step, config)
            # The loop.
            while not _finished(state, config):
                model.train()
                emit(callbacks, "on_epoch_start", state)
                # A callback may stop the run before the epoch's first step (a search that
                # pauses the trial at its last checkpoint): no step is taken past it.
                state.stop = agree_stop(state.stop)  # collective: all ranks stop together
                if state.should_stop:
                    break
                position = state.batch_in_epoch * (parts.train_loader.batch_size or 1)
                seed_loader_for_epoch(parts.train_loader, config.seed, state.epoch, position)

                spare: Any = None  # this rank's latest batch, for a step where it holds none
                for micro_batches in _steps(parts, trainer.accumulate_grad_batches, state):
                    # Global micro-batches in this step: the epoch's last step may be short.
                    blocks = min(
                        trainer.accumulate_grad_batches, batches_per_epoch - state.batch_in_epoch
                    )
                    # Forward and backward over the micro-batches (out of memory: retried).
                    losses, spare = _forward_backward(built, micro_batches, blocks, spare)

                    if skip_nonfinite and not built.nonfinite.all_finite(losses):  # a sync
                        built.nonfinite.handle(state, micro_batches)  # raises past the limit
                        state.batch_in_epoch += blocks  # skipped: no update
                        continue
                    built.nonfinite.record(state, losses)  # on the device: read by `check`
                    state.keep_losses(losses)  # added up where a mean is read

                    if trainer.gradient_clip_val is not None:
                        if scaler is not None:
                            scaler.unscale_(optimizer)  # clip true gradients, not scaled ones
                        clip_gradients(
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
                    state.batch_in_epoch += blocks

                    logging_step = state.step % trainer.log_every_n_steps == 0
                    logs = _log_step(built) if logging_step else {}  # a sync (collective)
                    for hook in on_step_end:  # emit(callbacks, "on_step_end", state, logs)
                        hook(state, logs)
                    if trainer.max_steps is not None and state.step >= trainer.max_steps:
                        state.request_stop(StopKind.MAX_STEPS, f"step {trainer.max_steps}")
                    if (preempted := signals.stop()) is not None:
                        state.request_stop(preempted.kind, preempted.detail)
                    # Under DDP ranks agree on logging steps and at max_steps only: a plain
                    # step waits for no other rank, and every rank stops after the same step.
                    agreed = logging_step or world_size == 1 or state.step == trainer.max_steps
                    if agreed and world_size > 1:  # one process has nothing to agree on
                        state.stop = agree_stop(state.stop)  # collective: all stop together
                    built.checkpointer.after_step(state)
                    if agreed and state.should_stop:
                        break

                built.nonfinite.check(state)  # a device sync (and a collective)
                epoch_complete = state.batch_in_epoch >= batches_per_epoch
                reached_max_steps = state.stop is not None and state.stop.kind is StopKind.MAX_STEPS
                if not (epoch_complete or reached_max_steps):
                    break  # stopped mid-epoch (a signal): no epoch-end work; resume picks up here
                metrics = _end_epoch(built, config, epoch_complete)  # validates: collectives
                _log_metrics(loggers, metrics, state)
                emit(callbacks, "on_epoch_end", state, metrics)
                state.stop = agree_stop(state.stop)  # collective: all ranks stop together
                built.checkpointer.after_epoch(state, metrics)
            stop = state.stop or Stop(StopKind.COMPLETED)
        except BaseException as error:
            stop = Stop(StopKind.FAILED, _describe_error(error))
            emit(callbacks, "on_exception", state, error)
            raise
        finally:
            summary = _finish(config, run, built, stop, metrics, started)
    return summary


def _forward_backward(
    built: _Training, micro_batches: list[Any], blocks: int, spare: Any
) -> tuple[list[tuple[torch.Tensor, int]], Any]:
    """Forward and backward over one step's micro-batches: each loss (detached) with its
    number of samples, and this rank's latest batch (the next `spare`).

    Where memory can run out (a GPU, or injected faults), each try is an attempt: out of
    memory frees it, halves the micro-batch and retries the step on the same samples
    with twice the micro-steps (brickwork.memory; same math). On the CPU there is
    nothing to recover from: the micro-steps run without an attempt around them.
    """
    state, recovery = built.state, built.recovery
    # Samples in the step over all ranks: known from the sampler, no collective.
    step_samples = built.parts.train_sampler.step_samples(state.batch_in_epoch, blocks)
    if not recovery.active:  # still cut as small as an earlier recovery made them
        return _micro_steps(built, recovery.cut(micro_batches), step_samples, spare)
    result: tuple[list[tuple[torch.Tensor, int]], Any] = ([], spare)
    for attempt in recovery.attempts(micro_batches, state.step):
        with attempt:  # a failed attempt's tensors go with `_micro_steps`' frame
            result = _micro_steps(built, attempt.micro_batches, step_samples, spare, attempt)
    return result


def _micro_steps(
    built: _Training,
    pieces: list[Any],
    step_samples: int,
    spare: Any,
    attempt: Attempt | None = None,
) -> tuple[list[tuple[torch.Tensor, int]], Any]:
    """One try at a step's forward and backward passes, over `pieces` (this rank's batches).

    Each micro-step's loss is weighted by this rank's share of the step's samples over all
    ranks, times the ranks DDP divides by, so the gradient is the global mean. A rank
    holding no sample in the step joins DDP's all-reduce with `spare`, a batch it trained
    on before (inside the attempt: the out-of-memory agreement comes after it on every rank).
    """
    parts, model, scaler = built.parts, built.model, built.scaler
    device, channels_last = parts.device, parts.config.trainer.channels_last
    non_blocking, last = parts.train_loader.pin_memory, len(pieces) - 1
    built.optimizer.zero_grad(set_to_none=True)
    built.nonfinite.remember_buffers()  # with on_nonfinite=skip only
    losses: list[tuple[torch.Tensor, int]] = []
    for index, batch in enumerate(pieces):
        if attempt is not None:
            attempt.before_micro_step(index)  # injected faults; DDP watch
        batch = move_to_device(batch, device, non_blocking, channels_last)
        num_samples = batch_size_of(batch)
        # DDP all-reduces gradients in backward: on the last micro-step only.
        with no_sync(model, sync=index == last):
            with built.autocast:
                loss = parts.compute_loss(model, batch)["loss"]
            share = num_samples * built.world_size / step_samples  # 1: no multiply
            scaled = loss if share == 1 else loss * share
            (scaler.scale(scaled) if scaler else scaled).backward()
        losses.append((loss.detach(), num_samples))
    if not pieces:  # no sample here: join DDP's all-reduce
        return losses, join_gradient_sync(model, parts, spare, device, built.autocast)
    return losses, pieces[-1]


def _log_step(built: _Training) -> dict[str, float]:
    """A logging step: the non-finite check, the interval's mean loss and the learning rate.

    Both reads are device syncs and, under DDP, collectives at the same line on every rank.
    """
    state = built.state
    built.nonfinite.check(state)  # reads the kept flags: a sync (collective)
    state.fold_losses()
    train_loss = mean_across_ranks(*state.interval_loss.totals())  # the mean over all ranks
    logs = {"train/loss": train_loss, "lr": _lr(built.optimizer)}
    state.interval_loss.reset()
    _log_metrics(built.loggers, logs, state)
    return logs


def _end_epoch(built: _Training, config: Config, epoch_complete: bool) -> dict[str, float]:
    """The epoch's training loss, validation when due, the epoch schedule, the counters.

    Runs after a whole epoch, or at `max_steps` (validated, but the epoch stays open).
    The loss mean is a device sync and, like validation, a collective under DDP.
    """
    state, trainer = built.state, config.trainer
    reached_max_steps = state.stop is not None and state.stop.kind is StopKind.MAX_STEPS
    state.fold_losses()
    metrics = {"train/loss_epoch": mean_across_ranks(*state.epoch_loss.totals())}
    if reached_max_steps or (state.epoch + 1) % trainer.val_every_n_epochs == 0:
        val_metrics = _validate(built.parts, config.seed, state.epoch, built)
        metrics.update(val_metrics)
        emit(built.callbacks, "on_validation_end", state, val_metrics)
    metrics["lr"] = _lr(built.optimizer)
    if epoch_complete:
        _step_epoch_schedule(built.schedule, metrics)
        state.epoch += 1
        state.batch_in_epoch = 0
        state.epoch_loss.reset()
    return metrics


@torch.no_grad()
def evaluate_loader(
    model: nn.Module,
    loader: DataLoader[Any],
    compute_loss: ComputeLoss,
    metrics: Any,
    device: torch.device,
    prefix: str,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
    recovery: OutOfMemoryRecovery | None = None,
) -> dict[str, float]:
    """Mean loss and metrics over `loader` in eval mode, without building autograd graphs.

    Out of memory halves the evaluation batch and retries (`recovery`, one per pass if None).
    """
    was_training = model.training
    model.eval()
    metrics.reset()
    total = torch.zeros((), device=device)
    counted = [0]
    recovery = recovery or OutOfMemoryRecovery(loader.batch_size or 1, device)

    def evaluate_batch(batch: Any) -> None:
        batch = move_to_device(batch, device)
        with autocast or contextlib.nullcontext():
            output = compute_loss(model, batch)
        num_samples = batch_size_of(batch)
        total.add_(output["loss"].detach().float() * num_samples)
        counted[0] += num_samples
        if "preds" in output and output.get("target") is not None and len(metrics):
            metrics.update(output["preds"].float(), output["target"])

    for batch in loader:
        recovery.evaluate_in_pieces(batch, evaluate_batch)
    model.train(was_training)
    # The pass's one sync: sums over ranks (each evaluated its own unpadded share).
    total_sum, total_count = sum_across_ranks(total, float(counted[0]))
    results = {f"{prefix}/loss": total_sum / max(total_count, 1)}
    if len(metrics):
        results.update({f"{prefix}/{k}": float(v) for k, v in metrics.compute().items()})
    return results


def _validate(parts: Components, seed: int, epoch: int, built: _Training) -> dict[str, float]:
    seed_loader_for_epoch(parts.val_loader, seed, epoch, 0)
    return evaluate_loader(
        parts.model,  # unwrapped: evaluation needs no DDP hooks
        parts.val_loader,
        parts.compute_loss,
        parts.metrics,
        parts.device,
        "val",
        built.autocast,
        built.recovery,
    )


def clip_gradients(model: nn.Module, value: float, algorithm: str) -> None:
    """Clip the total gradient norm to `value` (`norm`), or each element to ±`value`."""
    if algorithm == "norm":
        torch.nn.utils.clip_grad_norm_(model.parameters(), value)
    else:
        torch.nn.utils.clip_grad_value_(model.parameters(), value)


def _build_training(
    config: Config,
    run: Run,
    device: torch.device,
    compute_loss: ComputeLoss | None,
    user_callbacks: list[Any],
) -> _Training:
    """Data, model, optimizer, callbacks, loggers and the state that ties them together."""
    trainer, main = config.trainer, is_main_process()  # only rank 0 prints and writes
    parts = build_components(config, device, compute_loss)
    if main:
        save_data_facts(parts.data, run.directory / "data.json")
        save_model_files(parts.model, parts.data, run.directory)  # hf/: config, tokenizer
        save_run_tokenizer(config.data.kwargs.get("tokenizer"), run.directory)  # hf:<folder>
    seed_rank(config.seed)
    if trainer.channels_last:
        parts.model.to(memory_format=torch.channels_last)
    steps_per_epoch = -(-parts.batches_per_epoch // trainer.accumulate_grad_batches)
    # Freezing happens here, before DDP wraps the model: DDP syncs only the parameters
    # that require gradients when it is built.
    optimizer, schedule = build_optimization(config, parts.model, steps_per_epoch)
    model = compile_model(wrap_model(parts.model, trainer, device), trainer.compile)
    nonfinite = NonFiniteGuard(
        trainer.on_nonfinite,
        trainer.max_nonfinite_steps,
        run.directory,
        parts.model,  # unwrapped: its replay must not run DDP's hooks
        parts.compute_loss,
        parts.train_loader,
        device,
        run.checkpoints,
    )
    checkpointer = ModelCheckpoint(
        run.checkpoints,
        **config.checkpoint.model_dump(),
        batches_per_epoch=parts.batches_per_epoch,
        extra_state={"config": config.to_dict(), "versions": _versions()},
        before_save=nonfinite.check,  # no checkpoint holds weights a bad step touched
    )
    recovery = OutOfMemoryRecovery(config.data.batch_size, device, run.directory)
    autocast = _autocast(device, trainer.precision)
    # A rank that runs out of memory finishes DDP's all-reduce with a zero-weight pass.
    recovery.watch(
        model,
        optimizer,
        functools.partial(join_gradient_sync, model, parts, autocast=autocast, device=device),
    )
    loggers = build_loggers(config, run.directory, parts.model, parts.data) if main else []
    callbacks: list[Any] = [
        *_finetune(config, parts.model, optimizer, schedule),
        *_early_stopping(config),
        *build_callbacks(config),
        *user_callbacks,
        *loggers,  # for the hooks some loggers have (TensorBoard's histograms and images)
        *([_console(config, steps_per_epoch)] if main else []),
    ]
    # fp16 needs loss scaling against gradient underflow; bf16 has fp32's range and does not.
    scaler = torch.amp.GradScaler(device.type) if trainer.precision == "16" else None
    state = TrainState(
        model, optimizer, schedule, scaler, [*callbacks, nonfinite, recovery, checkpointer]
    )
    return _Training(
        parts=parts,
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        scaler=scaler,
        autocast=autocast,
        callbacks=callbacks,
        loggers=loggers,
        nonfinite=nonfinite,
        recovery=recovery,
        checkpointer=checkpointer,
        state=state,
        world_size=get_world_size(),
    )


def _announce_start(config: Config, run: Run, state: TrainState, device: torch.device) -> None:
    """Log where the run goes, and mark it unfinished at once, so `--resume auto` finds it
    even if it gets killed."""
    world_size = get_world_size()
    run.started = True
    log.info("training %s on %s, run folder %s", config.name, device, run.directory)
    log.info(describe_batch(config, world_size))
    if not is_main_process():
        return
    if world_size > 1 or config.data.global_batch_size is not None:
        print(f"brickwork: {describe_batch(config, world_size)}", flush=True)
    write_summary(
        run,
        {
            "status": "running",
            "run_dir": str(run.directory),
            "working_folder": str(Path.cwd()),  # relative data paths start here
            "format_version": RUN_FORMAT_VERSION,
            "num_steps": state.step,
            "world_size": world_size,
        },
    )


def _finish(
    config: Config,
    run: Run,
    built: _Training,
    stop: Stop,
    metrics: dict[str, float],
    started: float,
) -> dict[str, Any]:
    """Final checkpoint, test pass, `summary.json`, then `on_fit_end` and closed loggers.

    Runs whatever ended the loop; `on_fit_end` and the loggers' `close` run even when
    the final save or the test pass raises (the error then propagates).
    """
    state = built.state
    summary = _summarize(config, run, state, built.checkpointer, metrics, stop, started)
    summary["out_of_memory"] = built.recovery.summary()
    try:
        built.checkpointer.save_final(state, stop)
        # A pruned trial is abandoned: no test pass for it.
        if (
            stop.kind.finished
            and stop.kind is not StopKind.PRUNED
            and config.trainer.test_after_fit
        ):
            summary["test"] = _test_best(config, run, built.parts, built.autocast, built.recovery)
            summary["final"].update(summary["test"])
            _log_metrics(built.loggers, summary["test"], state)  # metrics.jsonl, TensorBoard
    except BaseException as error:
        failed = Stop(StopKind.FAILED, _describe_error(error))
        summary.update(status=failed.kind.status, stop=failed.to_dict())
        raise
    finally:
        if is_main_process():
            try:
                write_summary(run, summary)
            except OSError as error:  # a full disk must not hide the error that stopped the run
                log.warning("could not write %s: %s", run.summary_file, error.strerror)
        if get_world_size() > 1 and stop.kind is StopKind.PREEMPTED:
            log.warning("rank %d stopped at step %d (%s)", get_rank(), state.step, stop.detail)
        try:
            emit(built.callbacks, "on_fit_end", state, summary)
        finally:
            for logger in built.loggers:
                logger.close(summary)
    return summary


def _start_loggers(loggers: list[Logger], step: int, config: Config) -> None:
    for logger in loggers:
        logger.start(step)
        logger.log_config(config.to_dict())


def _log_metrics(loggers: list[Logger], metrics: dict[str, float], state: TrainState) -> None:
    epoch = state.epoch_of_step + 1  # what users read counts epochs from 1 (the N-th epoch)
    for logger in loggers:
        logger.log_metrics(metrics, state.step, epoch)


def _steps(parts: Components, size: int, state: TrainState) -> Iterator[list[Any]]:
    """This rank's batches in lists of `size`, one list per optimizer step of the epoch's rest.

    Every rank gets as many lists as the epoch has steps over all ranks: a rank whose
    share ran out early gets a shorter or an empty list, and still takes the step.
    """
    num_steps = -(-(parts.batches_per_epoch - state.batch_in_epoch) // size)
    iterator = iter(parts.train_loader)
    for _ in range(num_steps):
        yield list(itertools.islice(iterator, size))


def join_gradient_sync(
    model: nn.Module,
    parts: Components,
    spare: Any,
    device: torch.device,
    autocast: contextlib.AbstractContextManager[Any],
) -> Any:
    """A zero-weight forward and backward, so a rank without samples joins DDP's all-reduce.

    Runs in eval mode on a batch this rank already trained on (BatchNorm statistics and
    random draws stay untouched); its gradients are exactly zero, so the average over
    ranks, which DDP divides by the number of ranks, is what the others' weights make it.
    Returns the batch used. With one process there is no all-reduce to join.
    """
    if get_world_size() == 1:
        return spare
    if spare is None:  # nothing seen yet (a resume at such a step): the first sample
        with torch.random.fork_rng(devices=[]):
            spare = parts.train_loader.collate_fn([parts.train_loader.dataset[0]])
    model.eval()
    try:
        with autocast:
            loss = parts.compute_loss(model, move_to_device(spare, device))["loss"]
        (loss * 0.0).backward()
    finally:
        model.train()
    return spare


def _finished(state: TrainState, config: Config) -> bool:
    trainer = config.trainer
    return (
        state.should_stop
        or (trainer.max_epochs is not None and state.epoch >= trainer.max_epochs)
        or (trainer.max_steps is not None and state.step >= trainer.max_steps)
    )


def _step_epoch_schedule(schedule: Schedule | None, metrics: dict[str, float]) -> None:
    if schedule is None:
        return
    if schedule.interval == "epoch":
        schedule.scheduler.step()  # type: ignore[call-arg]
    elif schedule.interval == "plateau" and schedule.monitor in metrics:
        schedule.scheduler.step(metrics[schedule.monitor])  # type: ignore[arg-type]


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


def _console(config: Config, steps_per_epoch: int) -> ConsoleProgress:
    trainer = config.trainer
    samples_per_step = config.data.batch_size * trainer.accumulate_grad_batches * get_world_size()
    return ConsoleProgress(
        steps_per_epoch,
        samples_per_step,
        trainer.max_epochs,
        progress_bar=config.loggers.progress_bar,
    )


def _load_resume_state(
    state: TrainState, checkpoint: Path, run: Run, config: Config, device: torch.device
) -> None:
    """Load `checkpoint` into `state`; only then record config changes in the run folder."""
    try:
        state.load_state_dict(load_checkpoint(checkpoint, map_location=device))
    except (RuntimeError, KeyError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"{checkpoint}: does not fit the model and optimizer of this config "
            f"({first_line[:200]}); resume with the run's own config"
        ) from None
    record_config_changes(run, config)
    log.info("resumed from %s at step %d, epoch %d", checkpoint, state.step, state.epoch + 1)


def _versions() -> dict[str, str]:
    return {"brickwork": __version__, "torch": torch.__version__}


def _describe_error(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (a second Ctrl-C)"
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def _summarize(
    config: Config,
    run: Run,
    state: TrainState,
    checkpointer: ModelCheckpoint,
    metrics: dict[str, float],
    stop: Stop,
    started: float,
) -> dict[str, Any]:
    return {
        "status": stop.kind.status,
        "stop": stop.to_dict(),
        "stop_reason": stop.detail or None,  # kept for readers of summaries before `stop`
        "run_dir": str(run.directory),
        "working_folder": str(Path.cwd()),
        "monitor": config.checkpoint.monitor,
        "mode": config.checkpoint.mode,
        "best": _counted_from_one(checkpointer.best),
        "final": dict(metrics),
        "num_steps": state.step,
        "num_epochs": state.epoch,
        "world_size": get_world_size(),
        "wall_s": round(time.perf_counter() - started, 3),
        "versions": _versions(),
        "format_version": RUN_FORMAT_VERSION,
    }


def _counted_from_one(best: dict[str, Any] | None) -> dict[str, Any] | None:
    """The best checkpoint as `summary.json` reports it: its epoch counted from 1."""
    return None if best is None else {**best, "epoch": best["epoch"] + 1}


def _test_best(
    config: Config,
    run: Run,
    parts: Components,
    autocast: Any,
    training: OutOfMemoryRecovery,
) -> dict[str, float]:
    """Test-split metrics of the best checkpoint (or the final weights if none is best)."""
    if parts.data.test is None:
        return {}
    best = run.checkpoints / "best"
    model = unwrap_model(parts.model)
    if best.exists():
        model.load_state_dict(load_tensors(best / MODEL_FILE, parts.device))
    loader = build_split_loader(config, parts.data, "test")
    # Its own evaluation batch, the run's fault injection (counted over the whole run).
    recovery = OutOfMemoryRecovery(
        loader.batch_size or 1, parts.device, injection=training.injection
    )
    return evaluate_loader(
        model, loader, parts.compute_loss, parts.metrics, parts.device, "test", autocast, recovery
    )
