"""The run folder's format version, and reading folders written by older versions.

A run folder records its format in `summary.json` (`format_version`, see
`brickwork.version`). A folder of an older format keeps working: its files are
upgraded as they are read (`upgrade_config`, `upgrade_summary`, `upgrade_metrics_row`),
and a resume rewrites `metrics.jsonl` in today's format before appending to it, so a
file never mixes two conventions. A folder without `format_version` in its
`summary.json` is format 1; one without `summary.json` never started and is today's.

    >>> upgrade_config({"finetune": {"unfreeze": [{"at_epoch": 2, "modules": ["fc"]}]}}, 1)
    {'finetune': {'unfreeze': [{'at_epoch': 3, 'modules': ['fc']}]}}
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from brickwork.version import RUN_FORMAT_VERSION

# Format 1 counted epochs from 0 in the files; format 2 counts from 1.
_EPOCHS_FROM_ONE = 2


def run_format_of(directory: Path) -> int:
    """The format version of the run folder `directory` (today's for a new folder)."""
    try:
        summary = json.loads((Path(directory) / "summary.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return RUN_FORMAT_VERSION
    except (OSError, ValueError):
        return RUN_FORMAT_VERSION  # unreadable: nothing to upgrade from it
    version = summary.get("format_version", 1) if isinstance(summary, dict) else 1
    return version if isinstance(version, int) else 1


def upgrade_config(config: dict[str, Any], version: int) -> dict[str, Any]:
    """A run's `config.yaml` contents in today's meaning (a copy; unchanged if current).

    Format 1's `finetune.unfreeze[].at_epoch: N` started the stage at the (N+1)-th
    epoch; today that epoch is written `N + 1`.
    """
    if version >= _EPOCHS_FROM_ONE:
        return config
    upgraded = copy.deepcopy(config)
    finetune = upgraded.get("finetune")
    stages = finetune.get("unfreeze") if isinstance(finetune, dict) else None
    for stage in stages if isinstance(stages, list) else []:
        if isinstance(stage, dict) and isinstance(stage.get("at_epoch"), int):
            stage["at_epoch"] += 1
    return upgraded


def upgrade_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """A `summary.json` in today's format: `best.epoch` counted from 1."""
    version = summary.get("format_version", 1)
    if not isinstance(version, int) or version >= _EPOCHS_FROM_ONE:
        return summary
    upgraded = copy.deepcopy(summary)
    best = upgraded.get("best")
    if isinstance(best, dict) and isinstance(best.get("epoch"), int):
        best["epoch"] += 1
    upgraded["format_version"] = RUN_FORMAT_VERSION
    return upgraded


def upgrade_metrics_row(row: dict[str, Any], version: int) -> dict[str, Any]:
    """One `metrics.jsonl` row in today's format: `epoch` counted from 1."""
    if version >= _EPOCHS_FROM_ONE or not isinstance(row.get("epoch"), int):
        return row
    return {**row, "epoch": row["epoch"] + 1}


def upgrade_metrics_lines(text: str, version: int) -> str:
    """The text of a `metrics.jsonl` in today's format; lines that are not JSON stay as
    they are (a torn last line of a killed run is cut by the resume, not here)."""
    if version >= _EPOCHS_FROM_ONE:
        return text
    lines = []
    for line in text.splitlines(keepends=True):
        try:
            row = json.loads(line)
        except ValueError:
            lines.append(line)
            continue
        ending = "\n" if line.endswith("\n") else ""
        lines.append(json.dumps(upgrade_metrics_row(row, version)) + ending)
    return "".join(lines)
