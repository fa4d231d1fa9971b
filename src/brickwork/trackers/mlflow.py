"""MLflow as a `Logger`: `loggers.mlflow.enabled: true`.

The tracking URI comes from `loggers.mlflow.tracking_uri`, else `MLFLOW_TRACKING_URI`,
else a SQLite store `runs/mlflow.db` (artifacts beside it in `runs/mlartifacts/`).
Params are the flattened config; metrics are logged per step; the config, `summary.json`
and the best `model.safetensors` are artifacts. A resumed brickwork run continues the
same MLflow run (its id rides in the checkpoint) and skips the (metric, step) pairs the
run already holds, read back with `MlflowClient.get_metric_history`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brickwork.stop import StopKind
from brickwork.trackers import (
    best_model_file,
    default_run_name,
    flatten_config,
    keep_matplotlib_out_of_home,
    rows_up_to,
)

if TYPE_CHECKING:
    from brickwork.config import MlflowConfig

log = logging.getLogger("brickwork")

DEFAULT_STORE = Path("runs") / "mlflow.db"
_MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value's length


def resolve_tracking_uri(configured: str | None) -> tuple[str, Path | None]:
    """The URI to use, and the artifact folder to create experiments with (default store only)."""
    if configured:
        return configured, None
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"], None
    store = DEFAULT_STORE.resolve()
    store.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store}", store.parent / "mlartifacts"


class MlflowLogger:
    """One MLflow run per brickwork run, continued across resumes."""

    state_key = "mlflow"

    def __init__(self, config: MlflowConfig, run_dir: Path, config_name: str) -> None:
        self.config, self.run_dir, self.config_name = config, run_dir.resolve(), config_name
        self.run_id: str | None = None
        self.tracking_uri: str | None = None
        self._client: Any = None
        self._logged: set[tuple[str, int]] = set()

    def start(self, step: int) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        keep_matplotlib_out_of_home()
        from mlflow import MlflowClient

        self.tracking_uri, artifacts = resolve_tracking_uri(self.config.tracking_uri)
        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        if self.run_id is None:
            experiment_id = self._experiment_id(artifacts)
            run = self._client.create_run(
                experiment_id,
                run_name=self.config.run_name or default_run_name(self.run_dir, self.config_name),
                tags={"brickwork.run_dir": str(self.run_dir)},
            )
            self.run_id = run.info.run_id
            self._logged = set()
        else:
            self._client.update_run(self.run_id, status="RUNNING")
            self._logged = logged_pairs(self._client, self.run_id)
            for row_step, epoch, metrics in rows_up_to(self.run_dir / "metrics.jsonl", step):
                self.log_metrics(metrics, row_step, epoch)  # only what the run lacks
        log.info("MLflow run %s at %s", self.run_id, self.tracking_uri)

    def log_config(self, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self._client.get_run(self.run_id).data.params
        # MLflow refuses to change a param: a resume that changed e.g. max_epochs keeps the
        # first value as the param and the new config in the config.yaml artifact.
        params = [
            Param(key, str(value)[:_MAX_PARAM_CHARS])
            for key, value in flatten_config(config).items()
            if key not in existing
        ]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self._client.log_batch(self.run_id, params=params[start : start + 100])
        self._client.log_dict(self.run_id, dict(config), "config.yaml")

    def log_metrics(self, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [
            Metric(key, float(value), now, step)
            for key, value in metrics.items()
            if (key, step) not in self._logged and math.isfinite(value)
        ]
        if rows:
            self._client.log_batch(self.run_id, metrics=rows)
            self._logged.update((row.key, step) for row in rows)

    def log_artifact(self, path: Path) -> None:
        self._client.log_artifact(self.run_id, str(path))

    def close(self, summary: Mapping[str, Any]) -> None:
        if self._client is None or self.run_id is None:
            return
        try:
            summary_file = self.run_dir / "summary.json"
            if summary_file.is_file():
                self._client.log_artifact(self.run_id, str(summary_file))
            best = best_model_file(summary)
            if self.config.log_model and best is not None:
                self._client.log_artifact(self.run_id, str(best), artifact_path="model")
            kind = StopKind((summary.get("stop") or {}).get("kind", "failed"))
            status = "FINISHED" if kind.finished else "KILLED"
            self._client.set_terminated(
                self.run_id, status="FAILED" if kind is StopKind.FAILED else status
            )
        finally:
            self._client = None

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")

    def _experiment_id(self, artifacts: Path | None) -> str:
        name = self.config.experiment or self.config_name
        experiment = self._client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        location = artifacts.as_uri() if artifacts is not None else None
        try:
            return str(self._client.create_experiment(name, artifact_location=location))
        except Exception:  # another process (a parallel trial) created it first
            experiment = self._client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return str(experiment.experiment_id)


def logged_pairs(client: Any, run_id: str) -> set[tuple[str, int]]:
    """The (metric, step) pairs MLflow run `run_id` already holds."""
    pairs: set[tuple[str, int]] = set()
    for key in client.get_run(run_id).data.metrics:
        pairs.update((key, m.step) for m in client.get_metric_history(run_id, key))
    return pairs
