"""Ray Tune, for studies that outgrow one machine (`pip install 'brickwork[ray]'`).

Imported only with `--engine ray`. Each trial is the same in-process `brickwork.fit`
as with Optuna, inside a Ray worker, with its run folder in the study folder. The
trial reports the metric after each validation, once the epoch's checkpoint is on
disk, and (for the schedulers that pause and exploit: BOHB's HyperBand and PBT) hands
Ray that brickwork checkpoint, hard-linked, with its SHA-256:

- a paused trial (BOHB) resumes from its own checkpoint with brickwork's exact resume;
- an exploiting trial (PBT) copies the donor's checkpoint into its own run folder,
  checks the hash, records donor, step and hash in `exploits.jsonl`, and resumes from
  it under its new (perturbed) learning rate or weight decay.

A local Ray starts with usage statistics off, the node address 127.0.0.1, no
dashboard, and its temporary and result folders inside the study folder (nothing in
the home folder). Ray still probes cloud metadata addresses at start: run it where the
network allows only what you mean (docs/tune.md, "Ray and the network").
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from brickwork.errors import ConfigError
from brickwork.files import write_atomically
from brickwork.stop import StopKind
from brickwork.tune.space import SearchSpace
from brickwork.tune.study import (
    StudyFolder,
    StudySettings,
    TrialRecord,
    TrialState,
    read_num_epochs,
)
from brickwork.tune.trial import TrialReporter, describe_failure

OBJECTIVE = "objective"  # the key trials report; Ray flattens keys with "/" in them
POINTER = "brickwork.json"
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
    start_ray(folder, settings)
    try:
        tuner = tune.Tuner(
            tune.with_resources(_Trainable(settings, folder), _resources(settings)),
            param_space={p.key: _domain(p, settings.sampler) for p in space.params},
            tune_config=tune.TuneConfig(
                metric=OBJECTIVE,
                mode=settings.mode,
                num_samples=1
                if space.is_grid and settings.sampler == "grid"
                else settings.num_trials,
                scheduler=_scheduler(settings),
                search_alg=_search(settings),
                time_budget_s=settings.timeout_s,
            ),
            run_config=tune.RunConfig(
                name="results",
                storage_path=str((folder.directory / "ray").resolve()),
                verbose=0,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            ),
        )
        grid: Any = tuner.fit()
        return [
            _record_of(number, result, space, folder, settings.mode)
            for number, result in enumerate(grid)
        ]
    finally:
        ray.shutdown()


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


class _Trainable:
    """The function Ray runs per trial (a class so Ray can pickle the settings it carries)."""

    def __init__(self, settings: StudySettings, folder: StudyFolder) -> None:
        self.settings, self.study_dir = asdict(settings), str(folder.directory.resolve())

    def __call__(self, ray_config: dict[str, Any]) -> None:
        from ray import tune

        settings = StudySettings(**self.settings)
        folder = StudyFolder(Path(self.study_dir))
        space = settings.search_space
        overrides = space.to_overrides({p.key: ray_config[p.key] for p in space.params})
        run_dir = folder.trials_dir / f"trial-{tune.get_context().get_trial_id()}"
        config = settings.trial_config(overrides)
        resume_from, exploited = _restore(tune.get_checkpoint(), run_dir, config)
        reporter = _RayReporter(settings, run_dir, with_checkpoints=_needs_checkpoints(settings))
        from brickwork.tune.trial import run_trial

        if resume_from is None:
            run_trial(config, run_dir, None, [reporter])
            return
        from brickwork.loop import fit

        fit(config, resume=resume_from, resume_force=exploited, callbacks=[reporter])


class _RayReporter(TrialReporter):
    """Report after each epoch's checkpoint is written (at the next epoch's start, or the end)."""

    def __init__(self, settings: StudySettings, run_dir: Path, with_checkpoints: bool) -> None:
        super().__init__(settings.metric, settings.mode)
        self.run_dir, self.with_checkpoints = run_dir, with_checkpoints
        self.pending: dict[str, Any] | None = None

    def on_validation_end(self, state: Any, metrics: dict[str, float]) -> None:
        super().on_validation_end(state, metrics)
        self.pending = {OBJECTIVE: self.last, "epoch": state.epoch + 1, "step": state.step}

    def on_epoch_start(self, state: Any) -> None:
        self._send()

    def on_fit_end(self, state: Any, summary: dict[str, Any]) -> None:
        if StopKind(summary["stop"]["kind"]).finished:
            self._send()

    def _send(self) -> None:
        from ray import tune

        if self.pending is None:
            return
        metrics, self.pending = self.pending, None
        if not self.with_checkpoints:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as scratch:
            _link_checkpoint(self.run_dir, Path(scratch))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(scratch))


def _link_checkpoint(run_dir: Path, into: Path) -> None:
    """The run's last checkpoint, hard-linked (no copy), and a pointer naming run and hash."""
    from brickwork.checkpoint import resolve_checkpoint

    source = resolve_checkpoint(run_dir)
    target = into / source.name
    target.mkdir()
    for file in sorted(source.iterdir()):
        try:
            os.link(file, target / file.name)
        except OSError:
            shutil.copy2(file, target / file.name)
    pointer = {"run_dir": str(run_dir), "checkpoint": source.name, "sha256": hash_folder(source)}
    (into / POINTER).write_text(json.dumps(pointer))


def _restore(checkpoint: Any, run_dir: Path, config: Any) -> tuple[Path | None, bool]:
    """Where to resume: None (fresh), own checkpoint (paused), or a donor's (exploited)."""
    if checkpoint is None:
        return None, False
    with checkpoint.as_directory() as folder:
        pointer = json.loads((Path(folder) / POINTER).read_text())
        source = Path(folder) / pointer["checkpoint"]
        digest = hash_folder(source)
        if digest != pointer["sha256"]:
            raise ConfigError(f"{source}: checkpoint hash {digest} != {pointer['sha256']}")
        own = pointer["run_dir"] == str(run_dir)
        target = run_dir / "checkpoints" / pointer["checkpoint"]
        if not own:  # exploit: the donor's weights replace this trial's
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        if not target.exists():
            shutil.copytree(source, target)
    if not own:
        record = {**pointer, "donor_run_dir": pointer["run_dir"], "copied_to": str(target)}
        with (run_dir / "exploits.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    return target, not own


def hash_folder(folder: Path) -> str:
    """SHA-256 over a checkpoint folder's files (names and bytes, in name order)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _needs_checkpoints(settings: StudySettings) -> bool:
    return settings.pruner in ("pbt", "hyperband") or settings.sampler == "bohb"


def check_ray_settings(settings: StudySettings) -> None:
    """Before the study folder exists: what PBT and BOHB need (checkpoints, resumable keys)."""
    if not _needs_checkpoints(settings):
        return
    checkpoint = settings.trial_config([]).checkpoint
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

    if param.kind == "grid" and sampler == "grid":
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
            hyperparam_mutations={p.key: _domain(p, "tpe") for p in space.params},
        )
    return None


def _search(settings: StudySettings) -> Any:
    if settings.sampler == "bohb":
        from ray.tune.search.bohb import TuneBOHB

        return TuneBOHB(seed=settings.seed)
    if settings.sampler == "tpe":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=settings.seed)
    return None


def _resources(settings: StudySettings) -> dict[str, float]:
    return dict(settings.ray.get("resources") or {"cpu": 1.0})


def _max_epochs(settings: StudySettings) -> int:
    config = settings.trial_config([])
    return int(config.trainer.max_epochs or 1)


def _record_of(
    number: int, result: Any, space: SearchSpace, folder: StudyFolder, mode: str
) -> TrialRecord:
    """A Ray result as a table row; stopped early by the scheduler reads as pruned."""
    trial_id = (result.metrics or {}).get("trial_id")
    run_dir = str(folder.trials_dir / f"trial-{trial_id}") if trial_id else None
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
