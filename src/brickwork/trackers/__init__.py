"""Experiment trackers (W&B, MLflow) as `Logger`s, and what they share.

Each tracker is imported only when the config chooses it (`loggers.wandb.enabled`,
`loggers.mlflow.enabled`). Both continue the same tracker run after a resume (its id
rides in the checkpoint as the logger's state) and log every metric at every step
exactly once (`lr`, logged on a logging step and again at the epoch end of the
same step, goes once). On resume a tracker reads back which (metric, step) pairs its
run already holds, then:

- sends the rows of `metrics.jsonl` (already cut back to the checkpoint) that its run
  lacks: W&B buffers its writes and loses the last seconds of a killed process;
- skips the pairs it holds when the resumed run re-trains the steps the interrupted
  run logged after its checkpoint (exact resume makes those values equal).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The x-axis every tracker plots against: brickwork's optimizer step.
STEP_KEY = "trainer/step"
EPOCH_KEY = "trainer/epoch"


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"optimizer": {"lr": 0.1}}` -> `{"optimizer.lr": 0.1}`; lists stay whole."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, dotted))
        else:
            flat[dotted] = value
    return flat


def rows_up_to(metrics_file: Path, step: int) -> list[tuple[int, int, dict[str, float]]]:
    """(step, epoch, metrics) of each `metrics.jsonl` row up to `step`; nulls left out."""
    rows = []
    try:
        lines = metrics_file.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if not isinstance(row, dict) or int(row.get("step", 0)) > step:
            continue
        metrics = {
            k: float(v)
            for k, v in row.items()
            if k not in ("step", "epoch") and isinstance(v, int | float)
        }
        rows.append((int(row["step"]), int(row.get("epoch", 0)), metrics))
    return rows


def default_run_name(run_dir: Path, config_name: str) -> str:
    """`<config name>/<run folder>`: the name a tracker shows for a brickwork run."""
    return f"{config_name}/{run_dir.name}"


def best_model_file(summary: Mapping[str, Any]) -> Path | None:
    """The best checkpoint's `model.safetensors` of a finished run, if there is one."""
    run_dir = summary.get("run_dir")
    if not run_dir:
        return None
    path = Path(run_dir) / "checkpoints" / "best" / "model.safetensors"
    return path.resolve() if path.is_file() else None


def summary_numbers(summary: Mapping[str, Any]) -> dict[str, float | str]:
    """The summary as flat scalars a tracker's run summary can show."""
    out: dict[str, float | str] = {"status": str(summary.get("status"))}
    best = summary.get("best") or {}
    if best.get("value") is not None:
        out[f"best/{summary.get('monitor')}"] = float(best["value"])
        out["best/step"] = float(best["step"])
    for key, value in (summary.get("final") or {}).items():
        if isinstance(value, int | float):
            out[f"final/{key}"] = float(value)
    for key in ("num_steps", "num_epochs", "wall_s"):
        if isinstance(summary.get(key), int | float):
            out[key] = float(summary[key])
    return out


def keep_matplotlib_out_of_home() -> None:
    """Trackers and reports import matplotlib, which caches fonts in ~/.cache unless told.

    An explicit `MPLCONFIGDIR` is kept; otherwise the cache goes to the temp folder.
    """
    user = os.getuid() if hasattr(os, "getuid") else 0
    os.environ.setdefault(
        "MPLCONFIGDIR", str(Path(tempfile.gettempdir()) / f"brickwork-matplotlib-{user}")
    )
