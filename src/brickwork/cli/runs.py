"""`brickwork runs [DIR]`: a table of runs; `brickwork runs diff RUN_A RUN_B`: two runs compared.

The table shows name, id, status, the best monitored value, epochs, duration, start
time, and the config keys whose values differ between the runs shown. Reads only the
run folders (no torch import), so it answers in a blink even over hundreds of runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="DIR | diff RUN_A RUN_B",
        help="the folder to list (default: runs), or `diff` and two run folders",
    )
    parser.add_argument(
        "--sort",
        default="-started",
        help="column to sort by: started, best, status, name, val/acc, optimizer.lr, ...; "
        "descending with a '-' written as --sort=-best (default: newest first)",
    )
    parser.add_argument(
        "--filter",
        nargs="+",
        default=[],
        metavar="KEY OP VALUE",
        help="keep runs matching all, e.g. 'status=completed' 'optimizer.lr<0.01' "
        "(operators = != < <= > >= ~)",
    )
    parser.add_argument("--limit", type=int, help="show at most this many runs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from brickwork.errors import ConfigError

    if args.paths and args.paths[0] == "diff":
        if len(args.paths) != 3:
            raise ConfigError(
                "runs diff: expected two run folders, e.g. runs diff runs/a/1 runs/a/2"
            )
        return _diff(Path(args.paths[1]), Path(args.paths[2]), args.json)
    if len(args.paths) > 1:
        raise ConfigError(
            f"runs: expected one folder, got {len(args.paths)}; pass the folder holding the runs"
        )
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: expected a positive number of runs")
    return _table(Path(args.paths[0]) if args.paths else Path("runs"), args)


def _table(root: Path, args: argparse.Namespace) -> int:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from brickwork.run_catalog import (
        differing_keys,
        filter_runs,
        format_number,
        read_runs,
        sort_runs,
    )

    rows = sort_runs(filter_runs(read_runs(root), args.filter), args.sort)
    rows = rows[: args.limit] if args.limit else rows
    if args.json:
        print(json.dumps([row.to_dict() for row in rows], indent=2, default=str))
        return 0
    console = Console()
    if not rows:
        console.print(f"no runs under {root}" + (" matching the filters" if args.filter else ""))
        return 0
    varying = differing_keys(rows)
    table = Table(title=f"{len(rows)} runs under {root}", title_justify="left", box=box.SIMPLE_HEAD)
    monitors = {row.monitor for row in rows if row.best is not None}
    best = f"best {monitors.pop()}" if len(monitors) == 1 else "best"
    for column in ("name", "id", "status", best, "epochs", "duration", "started"):
        table.add_column(column, overflow="fold", min_width=_MIN_WIDTHS.get(column))
    for key in varying:
        table.add_column(key, overflow="fold")
    for row in rows:
        table.add_row(
            row.name,
            _run_id(row.path, row.name, root),
            _coloured(row.status),
            _best(row, show_monitor=best == "best"),
            format_number(row.epochs),
            _duration(row.duration_s),
            time.strftime("%m-%d %H:%M", time.localtime(row.started)) if row.started else "",
            *[format_number(row.config.get(key)) for key in varying],
        )
    console.print(table)
    return 0


def _diff(first: Path, second: Path, as_json: bool) -> int:
    from rich.console import Console
    from rich.table import Table

    from brickwork.errors import ConfigError
    from brickwork.run_catalog import diff_runs, format_number, is_run_dir, read_run

    for path in (first, second):
        if not is_run_dir(path):
            raise ConfigError(
                f"runs diff: {path} is not a run folder (no config.yaml with a summary or "
                "metrics); pass folders such as runs/<name>/<id>"
            )
    differences = diff_runs(read_run(first), read_run(second))
    if as_json:
        print(json.dumps(differences, indent=2, default=str))
        return 0
    console = Console()
    for section, items in differences.items():
        table = Table(title=section, title_justify="left")
        for column in ("key", str(first), str(second)):
            table.add_column(column, overflow="fold")
        for key, left, right in items:
            style = "bold" if left != right else None
            table.add_row(key, format_number(left), format_number(right), style=style)
        if section == "config" and not items:
            console.print("config: identical")
            continue
        console.print(table)
    return 0


_MIN_WIDTHS = {"name": 8, "id": 8, "status": 9}

_COLOURS = {
    "completed": "green",
    "early_stopped": "green",
    "running": "cyan",
    "preempted": "yellow",
    "stopped": "yellow",
    "pruned": "magenta",
    "failed": "red",
    "crashed": "red",
}


def _coloured(status: str) -> str:
    colour = _COLOURS.get(status)
    return f"[{colour}]{status}[/{colour}]" if colour else status


def _best(row: Any, show_monitor: bool) -> str:
    from brickwork.run_catalog import format_number

    if row.best is None:
        return ""
    return f"{row.monitor} {format_number(row.best)}" if show_monitor else format_number(row.best)


def _run_id(path: Path, name: str, root: Path) -> str:
    """The folder name under `runs/<name>/`, else the path relative to the listed folder."""
    if path.parent.name == name:
        return path.name
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)


def _duration(seconds: Any) -> str:
    if seconds is None:
        return ""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
