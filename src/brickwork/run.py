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

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from brickwork.checkpoint import resolve_checkpoint
from brickwork.config import Config, load_config
from brickwork.distributed import broadcast_object, get_world_size, is_distributed, is_main_process
from brickwork.errors import BrickworkError, CheckpointError, ConfigError
from brickwork.files import write_atomically
from brickwork.stop import FINISHED_STATUSES

log = logging.getLogger("brickwork")


@dataclass
class Run:
    """Paths of one run folder, and the checkpoint it resumes from (if any)."""

    directory: Path
    resume_from: Path | None = None
    config_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
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
    resume_from = resolve_checkpoint(Path(resume)) if resume is not None else None
    if config is None and resume_from is not None:
        config = run_dir_of(resume_from) / "config.yaml"
    return TrainingPlan(_validated(config, overrides), resume_from)


def _validated(config: Config | str | Path | None, overrides: Sequence[str]) -> Config:
    if isinstance(config, Config):
        return load_config(config.to_dict(), overrides) if overrides else config
    return load_config(config, overrides)


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
        run = Run(directory=directory, resume_from=resume_from, config_changes=changes)
        run._handler = _attach_log_file(directory / "train.log")
        return run
    directory = Path(run_dir) if run_dir is not None else _new_run_dir(config.name)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ConfigError(
            f"--run-dir {directory}: folder exists and is not empty; choose a new folder, "
            f"or continue that run with --resume {directory}"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_atomically(
            directory / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False)
        )
    except OSError as error:
        raise ConfigError(
            f"{directory}: cannot write the run folder ({error.strerror}); "
            "choose a writable --run-dir"
        ) from None
    run = Run(directory=directory, resume_from=resume_from)
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
    """Compare batch sizes over all processes: 1 x 32 and 2 x 16 train the same.

    With `data.global_batch_size` set, `batch_size` only caps memory: the global batch
    alone decides the math, whatever the number of processes (3 x 10-11 is 1 x 32).
    """
    data = dict(config.get("data") or {})
    per_process = data.pop("batch_size", 0)
    if data.get("global_batch_size") is None:
        data["batch_size (all processes)"] = per_process * world_size
    return {**config, "data": data}


def _saved_world_size(directory: Path) -> int:
    try:
        return int(json.loads((directory / "summary.json").read_text()).get("world_size", 1))
    except (OSError, ValueError, AttributeError):
        return 1


def read_run_config(directory: Path) -> dict[str, Any]:
    """A run's saved config, with today's defaults filled in for keys it predates."""
    return load_config(directory / "config.yaml", check_components=False).to_dict()


def record_config_changes(run: Run, config: Config) -> None:
    """After a resume loaded: keep the old `config.yaml` beside the new one, log the changes."""
    if not run.config_changes:
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


def _new_run_dir(name: str) -> Path:
    base = Path("runs") / name / time.strftime("%Y%m%d-%H%M%S")
    candidate, suffix = base, 1
    while candidate.exists():
        suffix += 1
        candidate = base.with_name(f"{base.name}-{suffix}")
    return candidate


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
