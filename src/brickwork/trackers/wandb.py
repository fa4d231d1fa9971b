"""Weights & Biases as a `Logger`: `loggers.wandb.enabled: true`.

Project, entity, group, tags and run name come from the config; the resolved
config goes to the run's config, the summary to its summary, and (with
`log_model: true`) the best checkpoint becomes a `model` artifact. All of W&B's
files (runs, cache, config, artifacts staging) stay under `<run folder>/wandb/`,
never in the home folder. Metrics are plotted against `trainer/step`
(`define_metric`), so W&B's own `_step` only counts rows and never drops a point
as "not increasing". A resumed brickwork run continues the same W&B run (its id
rides in the checkpoint) and skips the (metric, step) pairs that run's files
already hold.
"""

from __future__ import annotations

import logging
import os
import secrets
import string
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brickwork.stop import StopKind
from brickwork.trackers import (
    EPOCH_KEY,
    STEP_KEY,
    best_model_file,
    default_run_name,
    keep_matplotlib_out_of_home,
    rows_up_to,
    summary_numbers,
)
from brickwork.trackers.wandb_files import read_history, run_files

if TYPE_CHECKING:
    from brickwork.config import WandbConfig

log = logging.getLogger("brickwork")

# W&B's folders, all pointed inside the run folder for the logger's lifetime.
_DIR_VARIABLES = ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR")


class WandbLogger:
    """One W&B run per brickwork run, continued across resumes."""

    state_key = "wandb"

    def __init__(self, config: WandbConfig, run_dir: Path, config_name: str) -> None:
        self.config, self.run_dir, self.config_name = config, run_dir.resolve(), config_name
        self.run_id: str | None = None  # set by start(), or by a checkpoint on resume
        self._run: Any = None
        self._logged: set[tuple[str, int]] = set()
        self._saved_environment: dict[str, str | None] = {}

    @property
    def files_dir(self) -> Path:
        return self.run_dir / "wandb"

    def start(self, step: int) -> None:
        keep_matplotlib_out_of_home()
        resumed = self.run_id is not None
        if self.run_id is None:
            self.run_id = _new_run_id()
        self._logged = logged_pairs(self.files_dir, self.run_id) if resumed else set()
        self._point_folders_inside_run()
        # A W&B service token inherited from a parent process (a notebook or a test runner
        # that used W&B) would put this run in the parent's service, which outlives a kill
        # of this process and keeps the run "in use": start this process's own service.
        self._saved_environment["WANDB_SERVICE"] = os.environ.pop("WANDB_SERVICE", None)
        self._run = self._init_run(resumed)
        self._run.define_metric(STEP_KEY)
        self._run.define_metric("*", step_metric=STEP_KEY)
        if resumed:
            for row_step, epoch, metrics in rows_up_to(self.run_dir / "metrics.jsonl", step):
                self.log_metrics(metrics, row_step, epoch)  # what a killed process lost
        log.info("W&B run %s%s", self.run_id, " (resumed)" if resumed else "")

    def _init_run(self, resumed: bool) -> Any:
        """`wandb.init`; on resume, retried for a while: the W&B service of a process killed a
        moment ago may still hold the run ("run ID is in use") until it notices its parent died.
        """
        import wandb

        for wait_s in (1, 2, 4, 8, None):
            try:
                return wandb.init(
                    project=self.config.project or self.config_name,
                    entity=self.config.entity,
                    group=self.config.group,
                    tags=self.config.tags or None,
                    name=self.config.name or default_run_name(self.run_dir, self.config_name),
                    id=self.run_id,
                    resume="allow",
                    dir=str(self.run_dir),
                    mode=self.config.mode or os.environ.get("WANDB_MODE") or "online",  # type: ignore[arg-type]
                    settings=wandb.Settings(console="off", silent=True),
                )
            except Exception:
                if not resumed or wait_s is None:
                    raise
                log.info("W&B run %s still in use; retrying in %d s", self.run_id, wait_s)
                time.sleep(wait_s)
        raise AssertionError("unreachable")

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._run.config.update(dict(config), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        row = {k: v for k, v in metrics.items() if (k, step) not in self._logged}
        if row:
            self._run.log({**row, STEP_KEY: step, EPOCH_KEY: epoch})
            self._logged.update((key, step) for key in row)

    def log_artifact(self, path: Path) -> None:
        self._run.save(str(path), base_path=str(path.parent), policy="now")

    def close(self, summary: Mapping[str, Any]) -> None:
        if self._run is None:
            return
        try:
            self._run.summary.update(summary_numbers(summary))
            best = best_model_file(summary)
            if self.config.log_model and best is not None:
                self._log_model(best)
            kind = StopKind((summary.get("stop") or {}).get("kind", "failed"))
            if kind is StopKind.PREEMPTED:
                self._run.mark_preempting()
            self._run.finish(exit_code=0 if kind.finished else 1)
        finally:
            self._run = None
            self._restore_environment()

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")

    def _log_model(self, model_file: Path) -> None:
        import wandb

        artifact = wandb.Artifact(f"{self.config_name}-model", type="model")
        artifact.add_file(str(model_file), name="model.safetensors")
        config_file = self.run_dir / "config.yaml"
        if config_file.is_file():
            artifact.add_file(str(config_file), name="config.yaml")
        self._run.log_artifact(artifact, aliases=["best"])

    def _point_folders_inside_run(self) -> None:
        """W&B reads these variables lazily: keep them set until `close`.

        A folder the user set explicitly is kept; an unset one (W&B would pick one in
        the home folder) goes inside the run folder.
        """
        folders: dict[str, Path] = {
            name: self.files_dir / name.split("_")[1].lower()
            for name in _DIR_VARIABLES
            if not os.environ.get(name)
        }
        folders["WANDB_DIR"] = self.run_dir  # also where wandb-core writes its debug logs
        for name, folder in folders.items():
            self._saved_environment[name] = os.environ.get(name)
            Path(folder).mkdir(parents=True, exist_ok=True)
            os.environ[name] = str(folder)

    def _restore_environment(self) -> None:
        for name, value in self._saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environment = {}


def logged_pairs(files_dir: Path, run_id: str) -> set[tuple[str, int]]:
    """The (metric, step) pairs earlier attempts of W&B run `run_id` wrote to its files."""
    pairs: set[tuple[str, int]] = set()
    for path in run_files(files_dir, run_id):
        for row in read_history(path):
            step = row.get(STEP_KEY)
            if isinstance(step, int | float):
                pairs.update((key, int(step)) for key in row if not key.startswith("_"))
    return pairs


def _new_run_id() -> str:
    """Eight lowercase letters and digits, the shape of W&B's own run ids."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))
