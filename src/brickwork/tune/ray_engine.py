"""Ray Tune, for studies that outgrow one machine (`pip install 'brickwork[ray]'`).

Imported only with `--engine ray`. Each trial is the same in-process `brickwork.fit`
as with Optuna, inside a Ray worker, with its run folder in the study folder
(`brickwork.tune.ray_trial`: reporting, checkpoint hand-over, pauses and exploits).
Each trial, and each continuation of a paused one, starts a fresh Ray worker process
(Ray's default; with `reuse_actors` a paused trial's thread waits in a cached worker
and the study hung in our tests).

The scheduler tells each trial it pauses or stops why, in a decision file written
before Ray acts on it; a trial the scheduler ends while it is paused (HyperBand cuts
a bracket) is recorded as pruned when the study ends, one still paused when the
study's time budget runs out stays `preempted` (resumable with `brickwork train
--resume`).

A local Ray starts with usage statistics off, the node address 127.0.0.1, no
dashboard, and its temporary and result folders inside the study folder (nothing in
the home folder). Ray still probes cloud metadata addresses at start: run it where the
network allows only what you mean (docs/tune.md, "Ray and the network").
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from brickwork.errors import ConfigError
from brickwork.files import write_atomically
from brickwork.stop import Stop, StopKind
from brickwork.tune.ray_trial import (
    OBJECTIVE,
    PAUSE,
    STOP,
    RayTrainable,
    decisions_dir,
    needs_checkpoints,
)
from brickwork.tune.space import SearchSpace
from brickwork.tune.study import (
    StudyFolder,
    StudySettings,
    TrialRecord,
    TrialState,
    read_num_epochs,
)
from brickwork.tune.trial import describe_failure

# Keys PBT may perturb: a resume may change them without breaking the run's math.
PBT_KEYS = ("optimizer.lr", "optimizer.weight_decay")


def run_ray_study(folder: StudyFolder, settings: StudySettings) -> list[TrialRecord]:
    """Run the study on Ray (local, or the cluster at `--address`); the trials as records."""
    _prepare_environment(settings)  # read by Ray when it is imported
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ConfigError(
            "--engine ray needs Ray Tune: pip install 'brickwork[ray]', or drop --engine ray"
        ) from None
    space = settings.search_space
    check_ray_settings(settings)
    decisions_dir(folder).mkdir(parents=True, exist_ok=True)
    start_ray(folder, settings)
    started = time.monotonic()
    try:
        tuner = tune.Tuner(
            tune.with_resources(RayTrainable(settings, folder), _resources(settings)),
            param_space={p.key: _domain(p, settings.sampler) for p in space.params},
            tune_config=tune.TuneConfig(
                metric=OBJECTIVE,
                mode=settings.mode,
                num_samples=1 if settings.sampler == "grid" else settings.num_trials,
                scheduler=_recording(_scheduler(settings), decisions_dir(folder)),
                search_alg=_search(settings),
                time_budget_s=settings.timeout_s,
            ),
            run_config=tune.RunConfig(
                name="results",
                storage_path=str((folder.directory / "ray").resolve()),
                verbose=0,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=_num_to_keep(settings)),
            ),
        )
        grid: Any = tuner.fit()
        out_of_time = settings.timeout_s is not None and (
            time.monotonic() - started >= settings.timeout_s
        )
        run_dirs = [_run_dir_of(result, folder) for result in grid]
        if not out_of_time:  # the study is over: nothing will resume a paused trial
            for run_dir in run_dirs:
                _settle_paused(run_dir)
        return [
            _record_of(number, result, space, run_dir, settings.mode)
            for number, (result, run_dir) in enumerate(zip(grid, run_dirs, strict=True))
        ]
    finally:
        ray.shutdown()
        _remove_short_temp_dir(folder)


def start_ray(folder: StudyFolder, settings: StudySettings) -> None:
    """Join `--address`, or start a local Ray bound to 127.0.0.1 with its files in the study."""
    import ray

    address = settings.ray.get("address")
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        return
    ray.init(
        num_cpus=max(1, settings.workers),
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=_temp_dir(folder),
        log_to_driver=False,
        configure_logging=False,
    )


def _prepare_environment(settings: StudySettings) -> None:
    """Usage statistics off; for a local Ray, token auth with a token that lives in this
    process's environment only (Ray would otherwise write one to ~/.ray/auth_token)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if not settings.ray.get("address"):
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))


def _temp_dir(folder: StudyFolder) -> str:
    """Inside the study, unless that path is too long for Ray's unix sockets (107 bytes)."""
    inside = (folder.directory / "ray" / "tmp").resolve()
    if len(str(inside)) <= 40:
        inside.mkdir(parents=True, exist_ok=True)
        return str(inside)
    short = Path(tempfile.mkdtemp(prefix="bw-ray-"))
    write_atomically(folder.directory / "ray-temp-dir.txt", f"{short}\n")
    return str(short)


def _remove_short_temp_dir(folder: StudyFolder) -> None:
    """The short folder outside the study (Ray's sockets, its own logs) goes with Ray."""
    named = folder.directory / "ray-temp-dir.txt"
    if named.is_file():
        shutil.rmtree(named.read_text().strip(), ignore_errors=True)
        named.unlink()


def check_ray_settings(settings: StudySettings) -> None:
    """Before the study folder exists: one process per trial; what PBT and BOHB need
    (checkpoints, resumable keys)."""
    config = settings.trial_config([])
    trainer = config.trainer
    if trainer.devices > 1 and trainer.strategy != "dp":
        # A trial is a thread of a Ray worker: launching torchrun ranks from it would
        # leave them outside Ray's resources and its pause/stop (docs/tune.md).
        raise ConfigError(
            f"--engine ray: trainer.devices={trainer.devices} trains each trial as "
            f"{trainer.devices} processes, but a Ray trial is one process; use --engine "
            "optuna (it starts each trial with torchrun), or trainer.devices=1"
        )
    if not needs_checkpoints(settings):
        return
    checkpoint = config.checkpoint
    if not checkpoint.save_last or checkpoint.every_n_epochs != 1:
        chosen = "--sampler bohb" if settings.sampler == "bohb" else f"--pruner {settings.pruner}"
        raise ConfigError(
            f"{chosen} pauses and resumes trials from their checkpoints, but "
            f"checkpoint.save_last={checkpoint.save_last}, checkpoint.every_n_epochs="
            f"{checkpoint.every_n_epochs}; set checkpoint.save_last=true "
            "checkpoint.every_n_epochs=1, or use --pruner asha"
        )
    if settings.pruner != "pbt":
        return
    space = settings.search_space
    moved = [p.key for p in space.params if p.key not in PBT_KEYS]
    if moved:
        raise ConfigError(
            f"--pruner pbt: {', '.join(moved)} cannot change while a trial continues from a "
            f"checkpoint; PBT searches {', '.join(PBT_KEYS)}: move the others to overrides"
        )


def _domain(param: Any, sampler: str) -> Any:
    from ray import tune

    if param.is_categorical and sampler == "grid":  # plain lists and {choice: [...]} alike
        return tune.grid_search(param.labels)
    if param.is_categorical:
        return tune.choice(param.labels)
    if param.kind == "int":
        return tune.randint(int(param.low), int(param.high) + 1)
    if param.kind == "loguniform":
        return tune.loguniform(param.low, param.high)
    return tune.uniform(param.low, param.high)


def _scheduler(settings: StudySettings) -> Any:
    from ray.tune import schedulers

    max_t = _max_epochs(settings)
    if settings.sampler == "bohb":
        return schedulers.HyperBandForBOHB(
            time_attr="epoch", max_t=max_t, reduction_factor=3, stop_last_trials=False
        )
    if settings.pruner in ("asha", "median"):
        return schedulers.ASHAScheduler(time_attr="epoch", max_t=max_t, grace_period=1)
    if settings.pruner == "hyperband":
        return schedulers.HyperBandScheduler(time_attr="epoch", max_t=max_t)
    if settings.pruner == "pbt":
        space = settings.search_space
        return schedulers.PopulationBasedTraining(
            time_attr="step",  # optimizer steps, not seconds: the same on any machine
            perturbation_interval=int(settings.ray.get("perturbation_interval_steps") or 10),
            # A choice is given as its list: PBT moves to a neighbouring choice or
            # resamples (a `tune.choice` domain it would multiply like a number).
            hyperparam_mutations={
                p.key: list(p.labels) if p.is_categorical else _domain(p, "tpe")
                for p in space.params
            },
            custom_explore_fn=KeepInRange(
                {p.key: (p.low, p.high) for p in space.params if not p.is_categorical}
            ),
        )
    return None


class KeepInRange:
    """PBT's explore step multiplies a value by 0.8 or 1.2: keep it inside its range."""

    def __init__(self, bounds: dict[str, tuple[float, float]]) -> None:
        self.bounds = bounds

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for key, (low, high) in self.bounds.items():
            if key in config:
                config[key] = min(max(config[key], low), high)
        return config


def _search(settings: StudySettings) -> Any:
    if settings.sampler == "bohb":
        from ray.tune.search.bohb import TuneBOHB

        return TuneBOHB(seed=settings.seed)
    if settings.sampler == "tpe":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=settings.seed)
    return None


def _recording(scheduler: Any, decisions: Path) -> Any:
    """The scheduler, writing each pause or stop it decides to the trial's decision file.

    The file is written before the decision returns to Ray, so before Ray acts on it:
    the trial reads it once Ray has ended its thread (`brickwork.tune.ray_trial`).
    """
    if scheduler is None:
        return None
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    class Recording(type(scheduler)):  # type: ignore[misc]
        def on_trial_result(self, tune_controller: Any, trial: Any, result: Any) -> Any:
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == TrialScheduler.STOP:
                write_atomically(decisions / trial.trial_id, STOP)
            elif decision == TrialScheduler.PAUSE or trial.status == Trial.PAUSED:
                write_atomically(decisions / trial.trial_id, PAUSE)
            return decision

    Recording.__name__ = Recording.__qualname__ = type(scheduler).__name__
    scheduler.__class__ = Recording
    return scheduler


def _settle_paused(run_dir: str | None) -> None:
    """A trial still paused when the study ends was ended by its scheduler: pruned."""
    if run_dir is None:
        return
    summary_file = Path(run_dir) / "summary.json"
    try:
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if summary.get("status") != StopKind.PREEMPTED.status:
        return
    stop = Stop(
        StopKind.PRUNED,
        f"ended by Ray Tune's scheduler while paused after epoch {summary.get('num_epochs')}",
    )
    summary.update(status=stop.kind.status, stop=stop.to_dict(), stop_reason=stop.detail)
    write_atomically(summary_file, json.dumps(summary, indent=2) + "\n")


def _run_dir_of(result: Any, folder: StudyFolder) -> str | None:
    """The run folder of a Ray result, by the Ray trial folder its `ray.json` names.

    Not by `result.metrics["trial_id"]`: after a PBT exploit a trial's last result may
    be the donor's.
    """
    name = Path(result.path).name if result.path else None
    for record in sorted(folder.trials_dir.glob("*/ray.json")):
        try:
            if json.loads(record.read_text(encoding="utf-8")).get("ray_trial_dir") == name:
                return str(record.parent)
        except (OSError, ValueError):
            continue
    return None


def _num_to_keep(settings: StudySettings) -> int | None:
    """Checkpoints Ray keeps per trial: all of them under PBT, else the last two.

    PBT exploits a donor's checkpoint from the donor's last perturbation, possibly
    several reports later: with a limit, Ray may have deleted it by then, and the
    exploiting trial fails to restore ("does not exist on storage anymore").
    """
    return None if settings.pruner == "pbt" else 2


def _resources(settings: StudySettings) -> dict[str, float]:
    return dict(settings.ray.get("resources") or {"cpu": 1.0})


def _max_epochs(settings: StudySettings) -> int:
    config = settings.trial_config([])
    return int(config.trainer.max_epochs or 1)


def _record_of(
    number: int, result: Any, space: SearchSpace, run_dir: str | None, mode: str
) -> TrialRecord:
    """A Ray result as a table row; stopped early by the scheduler reads as pruned."""
    history = result.metrics_dataframe
    values = [] if history is None or OBJECTIVE not in history else list(history[OBJECTIVE])
    value = (max(values) if mode == "max" else min(values)) if values else None
    status = _status_of(run_dir)
    state: TrialState = "complete" if status == "completed" else "pruned"
    if result.error:
        state = "failed"
    labels = {p.key: result.config[p.key] for p in space.params if p.key in (result.config or {})}
    return TrialRecord(
        number=number,
        state=state,
        params={k: space.find(k).value_of(v) for k, v in labels.items()},
        value=None if value is None else float(value),
        run_dir=run_dir,
        reason=describe_failure(result.error) if result.error else "",
        num_epochs=read_num_epochs(run_dir),
    )


def _status_of(run_dir: str | None) -> str | None:
    if run_dir is None:
        return None
    try:
        return str(json.loads((Path(run_dir) / "summary.json").read_text())["status"])
    except (OSError, ValueError, KeyError):
        return None
