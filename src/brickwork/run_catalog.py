"""The catalog of runs under a folder: find them, read each as one row, filter, sort, diff.

A run is a folder holding `config.yaml` (and, once it started, `summary.json` and
`metrics.jsonl`). Its status comes from `summary.json` (`completed`, `early_stopped`,
`stopped`, `preempted`, `pruned`, `failed`, `running`); a `running` run whose process
is gone is shown as `crashed` (see `brickwork.heartbeat`). Run folders of any age
work: a missing file leaves its columns empty.

    rows = read_runs(Path("runs"))
    rows = filter_runs(rows, ["status=completed", "optimizer.lr<0.01"])
"""

from __future__ import annotations

import json
import math
import operator
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from brickwork.errors import ConfigError
from brickwork.heartbeat import liveness
from brickwork.run_format import run_format_of, upgrade_config

MAX_DEPTH = 5  # runs/<study>/<trial>/... : deep enough for studies, cheap on big trees


@dataclass
class RunRow:
    """One run, as the table shows it; `config` is flattened to dotted keys."""

    path: Path
    name: str
    status: str
    monitor: str | None = None
    best: float | None = None
    epochs: int | None = None
    steps: int | None = None
    duration_s: float | None = None
    started: float | None = None
    final: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def value(self, key: str) -> Any:
        """A column by name: a field, a final metric (`val/acc`), or a config key."""
        if key in ("path", "id"):
            return str(self.path)
        if key in RunRow.__dataclass_fields__ and key not in ("final", "config"):
            return getattr(self, key)
        if key in self.final:
            return self.final[key]
        return self.config.get(key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.name,
            "status": self.status,
            "monitor": self.monitor,
            "best": self.best,
            "epochs": self.epochs,
            "steps": self.steps,
            "duration_s": self.duration_s,
            "started": self.started,
            "final": self.final,
            "config": self.config,
        }


def find_runs(root: Path) -> list[Path]:
    """Every run folder under `root` (or `root` itself), up to `MAX_DEPTH` levels down."""
    if is_run_dir(root):
        return [root]
    found: list[Path] = []
    frontier = [root]
    for _ in range(MAX_DEPTH):
        children = [c for folder in frontier for c in _subfolders(folder)]
        found += [c for c in children if is_run_dir(c)]
        frontier = [c for c in children if not is_run_dir(c)]
    return sorted(found)


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (
        (path / "summary.json").is_file()
        or (path / "metrics.jsonl").is_file()
        or (path / "checkpoints").is_dir()
    )


def read_runs(root: Path, now: float | None = None) -> list[RunRow]:
    """One row per run folder under `root`; an unreadable folder is skipped, not fatal."""
    if not root.exists():
        raise ConfigError(f"{root}: no such folder; pass the folder holding your runs (runs/)")
    return [read_run(path, now) for path in find_runs(root)]


def read_run(path: Path, now: float | None = None) -> RunRow:
    """What one run folder says about itself."""
    summary = _read_json(path / "summary.json")
    config = upgrade_config(_read_yaml(path / "config.yaml"), run_format_of(path))
    status = str(summary.get("status") or "running")
    if status == "running":
        status = liveness(path, now)
    best = summary.get("best") or {}
    started = _started(path)
    duration = summary.get("wall_s")
    if status == "running" and started is not None:
        duration = (time.time() if now is None else now) - started
    final = {k: v for k, v in (summary.get("final") or {}).items() if isinstance(v, int | float)}
    return RunRow(
        path=path,
        name=str(config.get("name") or path.parent.name),
        status=status,
        monitor=summary.get("monitor") or _nested(config, "checkpoint.monitor"),
        best=best.get("value") if isinstance(best.get("value"), int | float) else None,
        epochs=summary.get("num_epochs"),
        steps=summary.get("num_steps"),
        duration_s=float(duration) if isinstance(duration, int | float) else None,
        started=started,
        final=final,
        config=flatten(config),
    )


def differing_keys(rows: Sequence[RunRow], ignore: Sequence[str] = ("name",)) -> list[str]:
    """Config keys whose values are not the same in every row (what set these runs apart)."""
    keys = sorted({k for row in rows for k in row.config} - set(ignore))
    return [k for k in keys if len({_hashable(row.config.get(k)) for row in rows}) > 1]


_FILTER = re.compile(r"^\s*([^<>=!~]+?)\s*(<=|>=|!=|=|<|>|~)\s*(.*?)\s*$")
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "~": lambda value, wanted: str(wanted) in str(value),
}


def filter_runs(rows: list[RunRow], filters: Sequence[str]) -> list[RunRow]:
    """Keep the rows matching every `key OP value` (OP one of = != < <= > >= ~)."""
    for text in filters:
        match = _FILTER.match(text)
        if match is None:
            raise ConfigError(
                f"--filter '{text}': expected KEY OP VALUE with OP one of = != < <= > >= ~, "
                "e.g. 'status=completed' or 'optimizer.lr<0.01'"
            )
        key, symbol, raw = match.groups()
        wanted = yaml.safe_load(raw) if raw else ""
        rows = [row for row in rows if _matches(row.value(key), _OPERATORS[symbol], wanted)]
    return rows


def sort_runs(rows: list[RunRow], key: str) -> list[RunRow]:
    """Sort by a column; `-key` sorts descending. Rows without the value go last."""
    descending = key.startswith("-")
    name = key.lstrip("-")
    present = [r for r in rows if r.value(name) is not None]
    missing = [r for r in rows if r.value(name) is None]
    try:
        present.sort(key=lambda r: r.value(name), reverse=descending)
    except TypeError:  # mixed types: compare as text
        present.sort(key=lambda r: str(r.value(name)), reverse=descending)
    return present + missing


def diff_runs(first: RunRow, second: RunRow) -> dict[str, list[tuple[str, Any, Any]]]:
    """Config keys and metrics whose values differ between two runs, side by side."""
    keys = sorted(first.config.keys() | second.config.keys())
    config = [
        (k, first.config.get(k), second.config.get(k))
        for k in keys
        if _hashable(first.config.get(k)) != _hashable(second.config.get(k))
    ]
    metric_names = sorted(first.final.keys() | second.final.keys())
    metrics: list[tuple[str, Any, Any]] = [("best", first.best, second.best)]
    metrics += [
        ("status", first.status, second.status),
        ("epochs", first.epochs, second.epochs),
        ("steps", first.steps, second.steps),
    ]
    metrics += [(k, first.final.get(k), second.final.get(k)) for k in metric_names]
    return {"config": config, "metrics": metrics}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value} if prefix else {}
    out: dict[str, Any] = {}
    for key, child in value.items():
        out.update(flatten(child, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _matches(value: Any, compare: Callable[[Any, Any], bool], wanted: Any) -> bool:
    if value is None:
        return False
    try:
        return bool(compare(value, wanted))
    except TypeError:
        return bool(compare(str(value), str(wanted)))


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str)


def _started(path: Path) -> float | None:
    """When the run began: its first `config.yaml` (a resume that changed the config keeps
    the old one renamed, and a rename keeps the time)."""
    times = [p.stat().st_mtime for p in path.glob("config*.yaml")]
    return min(times) if times else None


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [
            c
            for c in folder.iterdir()
            if c.is_dir() and not c.name.startswith(".") and c.name not in _NOT_RUNS
        ]
    except OSError:
        return []


# Folders inside a run that never hold runs: skip them instead of walking checkpoints.
_NOT_RUNS = {"checkpoints", "tb", "wandb", "mlartifacts", "__pycache__"}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _nested(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def format_number(value: Any) -> str:
    """Numbers for a table: 4 significant digits, no noise."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)
