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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from brickwork.config import Config
from brickwork.errors import CheckpointError, ConfigError

log = logging.getLogger("brickwork")


@dataclass
class Run:
    """Paths of one run folder, and the checkpoint it resumes from (if any)."""

    directory: Path
    resume_from: Path | None = None
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


def open_run(config: Config, run_dir: Path | str | None, resume_from: Path | None = None) -> Run:
    """Create a fresh run folder (or reopen the one being resumed), write `config.yaml`
    and attach `train.log`."""
    if resume_from is not None:
        directory = run_dir_of(resume_from)
    else:
        directory = Path(run_dir) if run_dir is not None else _new_run_dir(config.name)
        if directory.exists() and any(directory.iterdir()):
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
        raise ConfigError(f"{directory}: cannot write the run folder ({error.strerror})") from None
    run = Run(directory=directory, resume_from=resume_from)
    run._handler = _attach_log_file(directory / "train.log")
    return run


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder that holds a checkpoint folder (`<run>/checkpoints/step-N`)."""
    for parent in [checkpoint, *checkpoint.parents]:
        if (parent / "config.yaml").is_file() and (parent / "checkpoints").is_dir():
            return parent
    raise CheckpointError(f"{checkpoint}: not inside a brickwork run folder (no config.yaml)")


def write_summary(run: Run, summary: dict[str, Any]) -> None:
    """Write `summary.json` atomically; NaN and Infinity become null for strict JSON readers."""
    write_atomically(run.summary_file, json.dumps(_json_safe(summary), indent=2) + "\n")


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so readers see the old or the new file, never half of one."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _new_run_dir(name: str) -> Path:
    base = Path("runs") / name / time.strftime("%Y%m%d-%H%M%S")
    candidate, suffix = base, 1
    while candidate.exists():
        suffix += 1
        candidate = base.with_name(f"{base.name}-{suffix}")
    return candidate


def _attach_log_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
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
