"""The default engine: an Optuna study in the study folder, trials trained in this process.

Storage is Optuna's journal file (`optuna.journal`), the storage Optuna documents for
several processes on one machine: appends under a file lock, no "database is locked".
`--workers N` starts N-1 more worker processes (`python -m brickwork.tune.worker`)
on the same journal; each asks for a trial, trains it, tells the result.

A trial that was running when its process died is found by its worker record
(host, pid and the process's start time, written when the trial starts): the journal
storage has no heartbeat thread, and on one machine a dead pid is a sure sign where a
missed heartbeat is a guess. Such a trial is marked failed and re-queued with the same
parameters; the re-run continues the dead trial's run folder from its last checkpoint
(brickwork's exact resume) and replays its reported values to the pruner first.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from brickwork.checkpoint import resolve_checkpoint
from brickwork.cli.launch import should_launch
from brickwork.errors import CheckpointError, ConfigError
from brickwork.stop import StopKind
from brickwork.tune.report import best_trial, format_trial_line, print_trial_line
from brickwork.tune.space import Param, SearchSpace
from brickwork.tune.study import StudyFolder, StudySettings, TrialRecord, read_num_epochs
from brickwork.tune.trial import TrialReporter, describe_failure, run_trial

log = logging.getLogger("brickwork")
STUDY_NAME = "brickwork"
# Stop early when the first trials all fail: the same mistake would fail every trial.
FAILURES_BEFORE_GIVING_UP = 3


class StudyInterrupted(Exception):
    """A signal stopped a trial: the worker stops asking for more."""


def run_worker(folder: StudyFolder, worker: int = 0) -> None:
    """Ask, train, tell until the budget is spent; several of these may share a study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = folder.load()
    study = open_study(folder, settings, worker)
    space = settings.search_space
    deadline = None if settings.timeout_s is None else time.monotonic() + settings.timeout_s
    while True:
        with _ask_lock(folder):
            if settings.sampler == "grid" and not study.get_trials(deepcopy=False):
                queue_grid(study, space)
            requeue_interrupted(study)
            if _budget_spent(study, settings) or _gave_up(study):
                return
            if deadline is not None and time.monotonic() >= deadline:
                log.warning("tune: --timeout reached; no new trial starts")
                return
            trial = study.ask()
            trial.set_user_attr("worker", worker_id())
        record = _run_one(study, trial, settings, folder, space)
        best = best_trial(records_of(study, space), settings.mode)
        print_trial_line(format_trial_line(record, settings.metric, best, settings.num_trials))


def _journal_backend(journal: Path) -> Any:
    """Optuna's journal file, locked by a symlink to its absolute path.

    A process killed while it holds the lock leaves the symlink behind; Optuna frees it
    after `grace_period` seconds by the target's mtime, which needs a link that resolves.
    A relative `--study-dir` made a link relative to the wrong folder (dangling), and a
    resumed study waited on it forever. Such a dangling link can only be stale: removed.
    """
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    path = journal.resolve()
    lock = Path(f"{path}.lock")
    if lock.is_symlink() and not lock.exists():
        lock.unlink(missing_ok=True)
    # Held for one append or read (milliseconds): 10 s unchanged means its holder died.
    return JournalFileBackend(str(path), JournalFileSymlinkLock(str(path), grace_period=10))


def open_study(folder: StudyFolder, settings: StudySettings, worker: int = 0) -> Any:
    import optuna
    from optuna.storages import JournalStorage

    storage = JournalStorage(_journal_backend(folder.journal))
    return optuna.create_study(
        study_name=STUDY_NAME,
        storage=storage,
        direction="minimize" if settings.mode == "min" else "maximize",
        sampler=build_sampler(settings, worker),
        pruner=build_pruner(settings),
        load_if_exists=True,
    )


def build_sampler(settings: StudySettings, worker: int = 0) -> Any:
    """The named Optuna sampler; seeded per worker so workers do not draw the same points."""
    import optuna

    seed = settings.seed + 1000 * worker + int(time.time()) % 1000 * (worker > 0)
    if settings.sampler in ("random", "grid"):  # a grid's points are all queued up front
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "cmaes":  # choices: drawn at random, as check_sampler warned
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed)


def check_sampler(settings: StudySettings) -> None:
    """Before the study folder exists: a sampler that cannot run, or searches less than asked.

    CMA-ES searches ranges only; Optuna draws the other keys at random, one warning per
    study here instead of Optuna's one per trial.
    """
    if settings.sampler != "cmaes":
        return
    try:
        import cmaes  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--sampler cmaes needs the cmaes package: pip install 'brickwork[tune]' "
            "(or pip install cmaes), or use --sampler tpe"
        ) from None
    choices = [p.key for p in settings.search_space.params if p.is_categorical]
    if len(choices) == len(settings.search_space.params):
        log.warning(
            "--sampler cmaes: every key is a choice and CMA-ES searches ranges only, so this "
            "is a random search; use --sampler tpe to search choices"
        )
    elif choices:
        log.warning(
            "--sampler cmaes: %s %s a choice; CMA-ES searches ranges only, so %s drawn at "
            "random (the ranges are searched by CMA-ES); use --sampler tpe to search choices too",
            ", ".join(choices),
            "is" if len(choices) == 1 else "are each",
            "it is" if len(choices) == 1 else "they are",
        )


def queue_grid(study: Any, space: SearchSpace) -> None:
    """Every point of the grid, queued once: the study walks exactly the grid.

    (Optuna's GridSampler stops the study from inside `optimize`, which the ask-and-tell
    loop here, shared by several workers, does not use.)
    """
    ranges = [p.key for p in space.params if not p.is_categorical]
    if ranges:
        raise ConfigError(
            f"--sampler grid: {', '.join(ranges)} is a range; a grid needs a list of "
            "values (or {choice: [...]}) for every key, or use --sampler tpe"
        )
    keys = [p.key for p in space.params]
    for point in itertools.product(*(p.labels for p in space.params)):
        study.enqueue_trial(dict(zip(keys, point, strict=True)))


def build_pruner(settings: StudySettings) -> Any:
    import optuna

    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_epochs_of(settings) or "auto", reduction_factor=3
        )
    if settings.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def max_epochs_of(settings: StudySettings) -> int | None:
    """The most epochs a trial of the study trains: Hyperband's maximum resource.

    Given to Hyperband rather than left to its "auto", which waits for a first complete
    trial (nothing is pruned before it) and, counting steps from 0 where brickwork reports
    finished epochs from 1, sees one epoch more than there is: 8 epochs became 9, a third
    bracket whose only rung (epoch 9) no trial reaches, so 3 trials in 17 (that bracket's share)
    always ran to the end. None when the budget is in steps only.
    """
    searched = next(
        (p for p in settings.search_space.params if p.key == "trainer.max_epochs"), None
    )
    if searched is not None:
        bounds = [int(value) for value in searched.corners() if value is not None]
        return max(bounds) if bounds else None
    return settings.trial_config([]).trainer.max_epochs


def records_of(study: Any, space: SearchSpace) -> list[TrialRecord]:
    """Every trial of the study as the table shows it."""
    return [_record_of(trial, space) for trial in study.get_trials(deepcopy=False)]


def requeue_interrupted(study: Any) -> None:
    """Fail the running trials whose process is gone, and queue each interrupted trial again."""
    from optuna.trial import TrialState

    storage = study._storage
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for trial in trials:
        if trial.state == TrialState.RUNNING and not is_alive(trial.user_attrs.get("worker")):
            storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
            storage.set_trial_user_attr(
                trial._trial_id, "reason", "interrupted: its process died; re-queued"
            )
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        elif not (trial.state == TrialState.FAIL and trial.user_attrs.get("interrupted")):
            continue
        if trial.number in retried:
            continue
        study.enqueue_trial(
            trial.params,
            user_attrs={"retry_of": trial.number, "resume_dir": trial.user_attrs.get("run_dir")},
        )
        log.info("tune: trial %d was interrupted; queued again", trial.number)


def worker_id() -> str:
    """`host:pid:start`: the start time tells a dead pid from a reused one."""
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"


def is_alive(worker: str | None) -> bool:
    """Whether the process that started a trial still runs (another host: assumed alive)."""
    if not worker:
        return False
    host, pid, start = worker.rsplit(":", 2)
    if host != socket.gethostname():
        return True
    return _process_start(int(pid)) == start


def _process_start(pid: int) -> str:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[19]  # starttime, in clock ticks since boot
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except OSError:
            return "gone"
        return "alive"


def _run_one(
    study: Any, trial: Any, settings: StudySettings, folder: StudyFolder, space: SearchSpace
) -> TrialRecord:
    from optuna.trial import TrialState

    started = time.monotonic()
    labels = {p.key: _suggest(trial, p) for p in space.params}
    overrides = space.to_overrides(labels)
    run_dir, resume_from = _trial_folder(study, trial, folder)
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("resume_from", str(resume_from) if resume_from else None)

    def judge(value: float, epoch: int) -> bool:
        trial.report(value, epoch)
        return bool(trial.should_prune())

    reporter = TrialReporter(settings.metric, settings.mode, judge)
    try:
        config = settings.trial_config(overrides)
        if should_launch(config.trainer):
            summary = _run_launched(folder, trial.number, config.trainer.devices, run_dir)
            reporter.best = _best_reported(study.trials[trial.number], settings.mode)
        else:
            summary = run_trial(config, run_dir, resume_from, [reporter])
    except Exception as error:
        trial.set_user_attr("reason", describe_failure(error))
        study.tell(trial, state=TrialState.FAIL)
        return _record_of(study.trials[trial.number], space, time.monotonic() - started)
    kind = StopKind(summary["stop"]["kind"])
    if kind is StopKind.PREEMPTED:
        trial.set_user_attr("interrupted", True)
        trial.set_user_attr("reason", f"interrupted: {summary['stop']['detail']}")
        study.tell(trial, state=TrialState.FAIL)
        raise StudyInterrupted(summary["stop"]["detail"])
    if kind is StopKind.PRUNED:
        trial.set_user_attr("reason", summary["stop"]["detail"])
        study.tell(trial, state=TrialState.PRUNED)
    elif reporter.best is None:
        trial.set_user_attr("reason", f"no validation reported {settings.metric}")
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, reporter.best)
    return _record_of(study.trials[trial.number], space, time.monotonic() - started)


def run_launched_rank(folder: StudyFolder, number: int) -> int:
    """One rank of a trial with `trainer.devices` > 1 (under torchrun, started by a worker).

    Every rank trains; only rank 0 talks to the study (the journal file is safe for that),
    and the loop's stop agreement carries its prune decision to the other ranks.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = folder.load()
    study = open_study(folder, settings)
    frozen = study.trials[number]
    trial = optuna.trial.Trial(study, frozen._trial_id)
    run_dir = Path(frozen.user_attrs["run_dir"])
    resume_from = (
        Path(frozen.user_attrs["resume_from"]) if frozen.user_attrs.get("resume_from") else None
    )

    def judge(value: float, epoch: int) -> bool:
        trial.report(value, epoch)
        return bool(trial.should_prune())

    reporter = TrialReporter(settings.metric, settings.mode, judge if _rank() == 0 else None)
    config = settings.trial_config(settings.search_space.to_overrides(frozen.params))
    summary = run_trial(config, run_dir, resume_from, [reporter])
    return StopKind(summary["stop"]["kind"]).exit_code


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))  # set by torchrun before the process group exists


def _run_launched(folder: StudyFolder, number: int, devices: int, run_dir: Path) -> dict[str, Any]:
    """Train the trial as `devices` torchrun ranks; its summary from the run folder."""
    from brickwork.cli.launch import launch_processes

    launch_processes(
        devices, ["tune", "--study-dir", str(folder.directory), "--run-trial", str(number)]
    )
    try:
        return dict(json.loads((run_dir / "summary.json").read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        raise RuntimeError(f"the trial's ranks left no summary.json in {run_dir}") from error


def _best_reported(trial: Any, mode: str) -> float | None:
    values = list(trial.intermediate_values.values())
    if not values:
        return None
    return float(min(values) if mode == "min" else max(values))


def _trial_folder(study: Any, trial: Any, folder: StudyFolder) -> tuple[Path, Path | None]:
    """A new trial's own folder; a re-queued one continues the interrupted trial's folder."""
    retry_of, resume_dir = trial.user_attrs.get("retry_of"), trial.user_attrs.get("resume_dir")
    if retry_of is None or not resume_dir:
        return folder.trial_dir(trial.number), None
    old = study.trials[retry_of]
    for epoch, value in sorted(old.intermediate_values.items()):
        trial.report(value, epoch)  # the pruner sees the whole curve, not half of it
    try:
        return Path(resume_dir), resolve_checkpoint(Path(resume_dir))
    except CheckpointError:
        log.info("tune: trial %d left no checkpoint; trial %d starts over", retry_of, trial.number)
        return folder.trial_dir(trial.number), None


def _suggest(trial: Any, param: Param) -> Any:
    if param.is_categorical:
        return trial.suggest_categorical(param.key, param.labels)
    if param.kind == "int":
        return trial.suggest_int(param.key, int(param.low), int(param.high))
    return trial.suggest_float(param.key, param.low, param.high, log=param.kind == "loguniform")


def _record_of(trial: Any, space: SearchSpace, duration_s: float | None = None) -> TrialRecord:
    state = trial.state.name.lower()
    state = {"fail": "failed"}.get(state, state)
    value = trial.value
    if value is None and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    if duration_s is None and trial.datetime_start and trial.datetime_complete:
        duration_s = (trial.datetime_complete - trial.datetime_start).total_seconds()
    run_dir = trial.user_attrs.get("run_dir")
    return TrialRecord(
        number=trial.number,
        state=state,
        params={k: space.find(k).value_of(v) for k, v in trial.params.items()},
        value=value,
        duration_s=duration_s,
        run_dir=run_dir,
        reason=str(trial.user_attrs.get("reason", "")),
        num_epochs=read_num_epochs(run_dir),
    )


def _budget_spent(study: Any, settings: StudySettings) -> bool:
    """Trials count once: an interrupted trial and its re-run are one trial of the budget."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return False
    retried = {t.user_attrs.get("retry_of") for t in trials}
    counted = [t for t in trials if t.number not in retried]
    return len(counted) >= settings.num_trials


def _gave_up(study: Any) -> bool:
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("interrupted")]
    states = [t.state for t in trials]
    return len(states) >= FAILURES_BEFORE_GIVING_UP and all(s == TrialState.FAIL for s in states)


@contextmanager
def _ask_lock(folder: StudyFolder) -> Iterator[None]:
    """One worker at a time checks the budget and takes a trial (no overshoot, no double retry)."""
    with (folder.directory / ".ask.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
