"""The run folder: where one training run keeps everything it writes.

    runs/<name>/<run_id>/
        config.yaml      the resolved config, overrides applied
        metrics.jsonl    one JSON object per logged step or epoch
        summary.json     status, best monitored value, final metrics, timing, versions
        data.json        label names and preprocessing fitted on the training split
        tb/              TensorBoard events
        checkpoints/     step-N folders, with `last` and `best` links
        train.log        the human-readable log

A new run never writes into an existing folder, so an earlier run cannot be damaged
by a typo in `--run-dir`. Resuming reopens the folder it continues.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from brickwork.checkpoint import resolve_checkpoint
from brickwork.config import Config, load_config
from brickwork.data.hf_tokenizer import RUN_TOKENIZER_FOLDER
from brickwork.distributed import broadcast_object, get_world_size, is_distributed, is_main_process
from brickwork.errors import BrickworkError, CheckpointError, ConfigError
from brickwork.files import write_atomically
from brickwork.models.huggingface import RUN_MODEL_FOLDER
from brickwork.run_format import run_format_of, upgrade_config
from brickwork.stop import FINISHED_STATUSES
from brickwork.version import RUN_FORMAT_VERSION

log = logging.getLogger("brickwork")


@dataclass
class Run:
    """Paths of one run folder, and the checkpoint it resumes from (if any)."""

    directory: Path
    resume_from: Path | None = None
    config_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    created: bool = False  # made by this call: removed again if setup fails before step 1
    started: bool = False  # the loop began: from here on the folder records the attempt
    format_version: int = RUN_FORMAT_VERSION  # of the files already in the folder
    _handler: logging.Handler | None = field(default=None, repr=False)

    @property
    def checkpoints(self) -> Path:
        return self.directory / "checkpoints"

    @property
    def metrics_file(self) -> Path:
        return self.directory / "metrics.jsonl"

    @property
    def summary_file(self) -> Path:
        return self.directory / "summary.json"

    @property
    def config_file(self) -> Path:
        return self.directory / "config.yaml"

    @property
    def tensorboard_dir(self) -> Path:
        return self.directory / "tb"

    def close(self) -> None:
        """Detach `train.log`."""
        if self._handler is not None:
            log.removeHandler(self._handler)
            self._handler.close()
            self._handler = None


@dataclass(frozen=True)
class TrainingPlan:
    """What a `train` call will do: the validated config, and the checkpoint it resumes."""

    config: Config
    resume_from: Path | None = None
    restart_in: Path | None = None  # a run that failed before its first checkpoint: redo it


def resolve_training(
    config: Config | str | Path | None,
    overrides: Sequence[str] = (),
    resume: str | Path | None = None,
) -> TrainingPlan:
    """The one way from what a user typed to a validated config and a resume point.

    `config` is a `Config`, a YAML path, or None: the run's own config when resuming,
    else the digits default. `resume` is a run folder, a checkpoint folder, or `"auto"`
    (the newest unfinished run of the config's name, or a fresh run when there is
    none). The CLI and `brickwork.fit` both come through here, so they cannot drift
    apart; a `Config` with no overrides is used as it is, not validated again.
    """
    if str(resume) == "auto":
        resolved = _validated(config, overrides)
        return TrainingPlan(resolved, _find_auto_resume(resolved.name))
    if resume is not None and is_restartable_run(Path(resume)):
        # Nothing to continue: the run failed before its first checkpoint. Retrying the
        # same command starts it over in its own folder instead of a dead end.
        folder = Path(resume)
        log.warning(
            "--resume %s: the run stopped before its first checkpoint; "
            "starting it again from step 0 in the same folder",
            folder,
        )
        if config is None:
            config = folder / "config.yaml"
        return TrainingPlan(_validated(config, overrides), None, restart_in=folder)
    resume_from = resolve_checkpoint(Path(resume)) if resume is not None else None
    if config is None and resume_from is not None:
        config = run_dir_of(resume_from) / "config.yaml"
    return TrainingPlan(_validated(config, overrides), resume_from)


def _validated(config: Config | str | Path | None, overrides: Sequence[str]) -> Config:
    if isinstance(config, Config):
        return load_config(config.to_dict(), overrides) if overrides else config
    if isinstance(config, str | Path) and _is_run_config(Path(config)):
        return load_run_config(Path(config).parent, overrides)
    return load_config(config, overrides)


def _is_run_config(path: Path) -> bool:
    """A run folder's own `config.yaml` (read in today's meaning whatever its format)."""
    return path.name == "config.yaml" and (path.parent / "summary.json").is_file()


def _find_auto_resume(name: str) -> Path | None:
    """`--resume auto`: the last checkpoint of the newest unfinished run named `name`."""
    found = find_unfinished_run(name)
    if found is None:
        log.info("--resume auto: no unfinished run of %s; starting a new run", name)
        return None
    try:
        return resolve_checkpoint(found)
    except CheckpointError:
        log.warning("--resume auto: %s has no complete checkpoint; starting a new run", found)
        return None


def open_shared_run(
    config: Config,
    run_dir: Path | str | None,
    resume_from: Path | None,
    resume_force: bool = False,
) -> Run:
    """Rank 0 creates (or reopens) the run folder; every other rank gets the same paths.

    A collective under DDP: rank 0 broadcasts the folder (or its error) to the others.
    """
    if not is_distributed():
        return open_run(config, run_dir, resume_from, resume_force)
    run: Run | None = None
    message: tuple[str, str, str | None] | tuple[str, str]
    if is_main_process():
        try:
            run = open_run(config, run_dir, resume_from, resume_force)
            resumed = str(run.resume_from) if run.resume_from else None
            message = ("ok", str(run.directory), resumed)
        except BrickworkError as error:
            message = ("error", str(error))
    else:
        message = ("", "")
    message = broadcast_object(message)
    if message[0] == "error":
        raise ConfigError(message[1])
    if run is not None:
        return run
    directory, resumed = message[1], message[2]  # type: ignore[misc]
    return Run(directory=Path(directory), resume_from=Path(resumed) if resumed else None)


def open_run(
    config: Config,
    run_dir: Path | str | None,
    resume_from: Path | None = None,
    resume_force: bool = False,
) -> Run:
    """Create a fresh run folder (or reopen the one being resumed), write `config.yaml`
    and attach `train.log`.

    A resume whose config changes the math is refused (see `MATH_NEUTRAL_KEYS`) unless
    `resume_force`; nothing in the folder is written until the checkpoint has loaded
    (`record_config_changes`), so a refused resume leaves the run as it was.
    """
    if resume_from is not None:
        directory = run_dir_of(resume_from)
        changes = compare_configs(
            _per_step_batch(read_run_config(directory), _saved_world_size(directory)),
            _per_step_batch(config.to_dict(), get_world_size()),
        )
        refused = sorted(k for k in changes if not is_math_neutral(k))
        if refused and not resume_force:
            shown = ", ".join(f"{k} ({changes[k][0]!r} -> {changes[k][1]!r})" for k in refused)
            raise ConfigError(
                f"--resume {directory}: the new config changes the math of the run: {shown}; "
                "drop those overrides to continue it, start a new run, or pass --resume-force"
            )
        run = Run(
            directory=directory,
            resume_from=resume_from,
            config_changes=changes,
            format_version=run_format_of(directory),
        )
        run._handler = _attach_log_file(directory / "train.log")
        return run
    try:
        directory, created = _claim_run_dir(config.name, run_dir)
    except OSError as error:
        raise ConfigError(
            f"{run_dir or Path('runs') / config.name}: cannot write the run folder "
            f"({error.strerror}); choose a writable --run-dir"
        ) from None
    try:
        write_atomically(
            directory / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False)
        )
    except OSError as error:
        if created:
            shutil.rmtree(directory, ignore_errors=True)
        raise ConfigError(
            f"{directory}: cannot write the run folder ({error.strerror}); "
            "choose a writable --run-dir"
        ) from None
    run = Run(directory=directory, resume_from=resume_from, created=created)
    run._handler = _attach_log_file(directory / "train.log")
    return run


# Keys a resume may change without changing what the next optimizer step computes.
# Everything else (data, model, optimizer, loss, scheduler, seed, batch size,
# accumulation, precision, clipping, ...) is refused without --resume-force.
MATH_NEUTRAL_KEYS = (
    "name",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.log_every_n_steps",
    "trainer.test_after_fit",
    "trainer.device",
    "trainer.devices",  # the process count: the samples per step are compared instead
    "trainer.stop_signals",
    "trainer.on_nonfinite",
    "trainer.max_nonfinite_steps",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "data.prefetch_factor",
    "data.eval_batch_size",
    "checkpoint.keep_k",
    "checkpoint.save_last",
    "checkpoint.every_n_epochs",
    "checkpoint.every_n_steps",
    "checkpoint.every_n_minutes",
    "early_stopping",
    "loggers",
    "tune",
)


def is_math_neutral(key: str) -> bool:
    """Whether changing `key` on resume leaves the training math as it was."""
    return any(key == k or key.startswith(k + ".") for k in MATH_NEUTRAL_KEYS)


def compare_configs(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ, mapped to (old, new); lists compare whole."""
    old_flat, new_flat = _flatten(old), _flatten(new)
    return {
        key: (old_flat.get(key), new_flat.get(key))
        for key in sorted(old_flat.keys() | new_flat.keys())
        if old_flat.get(key, _ABSENT) != new_flat.get(key, _ABSENT)
    }


def _per_step_batch(config: dict[str, Any], world_size: int) -> dict[str, Any]:
    """Compare samples per optimizer step over all processes: 1 x 32, 2 x 16 and
    1 x 16 accumulated twice train the same, so the process count may change freely.

    With `data.global_batch_size` set, that is the step's batch and `data.batch_size`
    only caps memory (the accumulation follows from it).
    """
    data = dict(config.get("data") or {})
    trainer = dict(config.get("trainer") or {})
    per_process = data.pop("batch_size", 0)
    accumulate = trainer.pop("accumulate_grad_batches", 1)
    global_batch = data.pop("global_batch_size", None)
    if global_batch is None:
        global_batch = per_process * accumulate * world_size
    data["samples per step (all processes)"] = global_batch
    return {**config, "data": data, "trainer": trainer}


def _saved_world_size(directory: Path) -> int:
    try:
        return int(json.loads((directory / "summary.json").read_text()).get("world_size", 1))
    except (OSError, ValueError, AttributeError):
        return 1


def read_run_config(directory: Path) -> dict[str, Any]:
    """A run's saved config, with today's defaults filled in for keys it predates."""
    return load_run_config(directory, check_components=False).to_dict()


def load_run_config(
    directory: Path, overrides: Sequence[str] = (), check_components: bool = True
) -> Config:
    """A run folder's `config.yaml` in today's meaning, whatever format wrote it."""
    version = run_format_of(directory)
    return load_config(
        Path(directory) / "config.yaml",
        overrides,
        check_components,
        upgrade=lambda raw: upgrade_config(raw, version),
    )


def record_config_changes(run: Run, config: Config) -> None:
    """After a resume loaded: keep the old `config.yaml` beside the new one, log the changes.

    A folder of an older format gets its `config.yaml` in today's meaning (right before
    `summary.json` records today's format), so the two never disagree for long.
    """
    if not run.config_changes:
        if run.format_version < RUN_FORMAT_VERSION:
            write_atomically(run.config_file, yaml.safe_dump(config.to_dict(), sort_keys=False))
        return
    backup = run.directory / f"config.{time.strftime('%Y%m%d-%H%M%S')}.yaml"
    if not backup.exists():
        os.replace(run.config_file, backup)
    write_atomically(run.config_file, yaml.safe_dump(config.to_dict(), sort_keys=False))
    for key, (before, after) in run.config_changes.items():
        log.info(
            "config changed on resume: %s: %r -> %r (previous config in %s)",
            key,
            before,
            after,
            backup.name,
        )


def find_unfinished_run(name: str, root: Path = Path("runs")) -> Path | None:
    """The newest run folder of config `name` under `root` that did not finish.

    Finished means `summary.json` holds a status of a chosen end (see `StopKind.finished`);
    a run without a summary (killed) or with another status (preempted, failed, running)
    is unfinished.
    """
    folder = root / name
    if not folder.is_dir():
        return None
    runs = [p for p in folder.iterdir() if (p / "config.yaml").is_file()]
    for candidate in sorted(runs, key=lambda p: (p / "config.yaml").stat().st_mtime, reverse=True):
        try:
            status = json.loads((candidate / "summary.json").read_text(encoding="utf-8"))["status"]
        except (OSError, ValueError, KeyError, TypeError):
            status = None
        return None if status in FINISHED_STATUSES else candidate
    return None


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder that holds a checkpoint folder (`<run>/checkpoints/step-N`)."""
    for parent in [checkpoint, *checkpoint.parents]:
        if (parent / "config.yaml").is_file() and (parent / "checkpoints").is_dir():
            return parent
    raise CheckpointError(f"{checkpoint}: not inside a brickwork run folder (no config.yaml)")


def write_summary(run: Run, summary: dict[str, Any]) -> None:
    """Write `summary.json` atomically; NaN and Infinity become null for strict JSON readers."""
    write_atomically(run.summary_file, json.dumps(_json_safe(summary), indent=2) + "\n")


_ABSENT = object()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, child in value.items():
        out.update(_flatten(child, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _claim_run_dir(name: str, run_dir: Path | str | None) -> tuple[Path, bool]:
    """The folder a new run writes to, and whether this call created it.

    `mkdir` without `exist_ok` is the claim: of two processes starting at the same
    moment exactly one creates a given folder, and the other moves on to the next
    name (or, for an explicit `--run-dir`, is refused). A folder left by a run that
    failed before its first checkpoint is taken over, so the same command can retry.
    """
    if run_dir is None:
        base = Path("runs") / name / time.strftime("%Y%m%d-%H%M%S")
        base.parent.mkdir(parents=True, exist_ok=True)
        candidate, suffix = base, 1
        while True:
            try:
                candidate.mkdir()
                return candidate, True
            except FileExistsError:
                suffix += 1
                candidate = base.with_name(f"{base.name}-{suffix}")
    directory = Path(run_dir)
    if directory.is_dir() and not any(directory.iterdir()):
        return directory, False
    if is_restartable_run(directory) and _status_of(directory) != "running":
        log.warning("%s: taking over a run that stopped before its first checkpoint", directory)
        _clear_restartable_run(directory)
        return directory, False
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir()
    except FileExistsError:
        raise ConfigError(
            f"--run-dir {directory}: folder exists and is not empty; choose a new folder, "
            f"or continue that run with --resume {directory}"
        ) from None
    return directory, True


# What brickwork writes into a run folder; a folder holding anything else is not taken over.
_RUN_FILES = (
    "config.yaml",
    "train.log",
    "summary.json",
    "metrics.jsonl",
    "data.json",
    "heartbeat.json",
    "nonfinite.jsonl",
    "oom_report.txt",
)
_RUN_FOLDERS = ("tb", "checkpoints", "wandb", RUN_MODEL_FOLDER, RUN_TOKENIZER_FOLDER)


def is_restartable_run(directory: Path) -> bool:
    """A run folder with no checkpoint at all: it failed (or was killed) before its first
    save, so there is nothing to resume and nothing to lose by starting it over."""
    if not (directory / "config.yaml").is_file():
        return False
    checkpoints = directory / "checkpoints"
    if checkpoints.is_dir() and any(p.name != ".lock" for p in checkpoints.iterdir()):
        return False
    return all(_is_run_entry(entry) for entry in directory.iterdir())


def _is_run_entry(entry: Path) -> bool:
    if entry.is_dir() and not entry.is_symlink():
        return entry.name in _RUN_FOLDERS
    return entry.name in _RUN_FILES or (
        entry.name.startswith("config.") and entry.suffix == ".yaml"
    )


def _clear_restartable_run(directory: Path) -> None:
    """Remove what the failed attempt wrote; its `train.log` stays, and continues."""
    for entry in directory.iterdir():
        if entry.name == "train.log":
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def remove_unstarted_run(run: Run) -> None:
    """Setup failed before the first step: leave no half-made folder behind.

    Only a folder this call created, holding only what brickwork writes, is removed.
    """
    if not run.created or not is_restartable_run(run.directory):
        return
    run.close()
    shutil.rmtree(run.directory, ignore_errors=True)
    if run.directory.parent.parent == Path("runs"):  # runs/<name>/ made for this run alone
        with contextlib.suppress(OSError):
            run.directory.parent.rmdir()  # only if empty


def _status_of(directory: Path) -> str | None:
    try:
        status = json.loads((directory / "summary.json").read_text(encoding="utf-8"))["status"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(status)


class _LogFileHandler(logging.FileHandler):
    """`train.log`: a write that fails (full disk) is dropped instead of printing a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def _attach_log_file(path: Path) -> logging.Handler:
    handler = _LogFileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
