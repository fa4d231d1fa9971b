"""What a study shows and leaves behind: the live line per trial, the table, best.yaml, plots.

Everything here reads `TrialRecord`s, so Optuna and Ray studies print, rank and plot
the same way. Plots go through Optuna's matplotlib plots on an in-memory copy of the
trials (Optuna ships with brickwork), so both engines draw the same three figures.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from brickwork.errors import BrickworkError
from brickwork.files import write_atomically
from brickwork.tune.space import label_of, optuna_distribution, to_override
from brickwork.tune.study import StudyFolder, StudySettings, TrialRecord

log = logging.getLogger("brickwork")


def best_trial(records: Sequence[TrialRecord], mode: str) -> TrialRecord | None:
    """The completed trial with the best value (pruned trials never win)."""
    done = [r for r in records if r.state == "complete" and r.value is not None]
    if not done:
        return None
    pick = min if mode == "min" else max
    return pick(done, key=lambda r: r.value)  # type: ignore[arg-type, return-value]


def format_trial_line(
    record: TrialRecord, metric: str, best: TrialRecord | None, total: int | None = None
) -> str:
    """`trial 3/20 complete val/acc=0.9412 12.3s optimizer.lr=0.002 | best: #1 0.9531`."""
    of = f"/{total}" if total else ""
    value = "-" if record.value is None else f"{record.value:.4f}"
    params = " ".join(f"{k}={_short(v)}" for k, v in record.params.items())
    duration = "" if record.duration_s is None else f" {record.duration_s:.1f}s"
    reason = f" ({record.reason})" if record.reason and record.state == "failed" else ""
    shown_best = "-" if best is None else f"#{best.number} {best.value:.4f}"
    return (
        f"trial {record.number}{of} {record.state} {metric}={value}{duration} {params}{reason}"
        f" | best: {shown_best}"
    )


def _short(value: Any) -> Any:
    return f"{value:.4g}" if isinstance(value, float) else label_of(value)


def print_trial_line(line: str) -> None:
    print(line, file=sys.stdout, flush=True)


def sort_records(records: Sequence[TrialRecord], mode: str) -> list[TrialRecord]:
    """Completed trials best first, then pruned (best first), then the rest by number."""
    order = {"complete": 0, "pruned": 1}

    def key(record: TrialRecord) -> tuple[int, float, int]:
        value = record.value if record.value is not None else float("inf")
        if record.value is not None and mode == "max":
            value = -value
        return (order.get(record.state, 2), value, record.number)

    return sorted(records, key=key)


def write_table(folder: StudyFolder, records: Sequence[TrialRecord], metric: str, mode: str) -> str:
    """`trials.csv`, best first; returns the same table as aligned text for the terminal."""
    ranked = sort_records(records, mode)
    keys = sorted({k for r in records for k in r.params})
    header = ["number", "state", metric, "epochs", "duration_s", *keys, "run_dir", "reason"]
    rows = [
        [
            r.number,
            r.state,
            "" if r.value is None else f"{r.value:.6g}",
            "" if r.num_epochs is None else r.num_epochs,
            "" if r.duration_s is None else f"{r.duration_s:.1f}",
            *[label_of(r.params.get(k, "")) for k in keys],
            r.run_dir or "",
            r.reason,
        ]
        for r in ranked
    ]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    write_atomically(folder.directory / "trials.csv", buffer.getvalue())
    return _aligned([header[:-2], *[row[:-2] for row in rows]])


def write_best_config(folder: StudyFolder, settings: StudySettings, best: TrialRecord) -> Path:
    """`best.yaml`: the base config with the best trial's overrides, runnable as it is."""
    overrides = [to_override(k, v) for k, v in best.params.items()]
    config = portable_config(settings.trial_config(overrides).to_dict(), settings)
    header = (
        f"# The best trial (#{best.number}, {settings.metric}={best.value:.6g}) of the study in "
        f"{folder.directory}.\n"
        f"# Train it with:   brickwork train {folder.directory / 'best.yaml'}\n"
        f"# Its overrides: {' '.join(overrides)}\n"
    )
    path = folder.directory / "best.yaml"
    write_atomically(path, header + yaml.safe_dump(config, sort_keys=False))
    return path


def portable_config(config: dict[str, Any], settings: StudySettings) -> dict[str, Any]:
    """The config with what it found relative to the study's folders made absolute.

    `best.yaml` sits in the study folder and may be trained from any working folder, while
    the base config found its `imports:` from its own folder and its data files from the
    folder the study ran in. So: a `.py` import becomes an absolute path; a module imported
    by name from a single file of the project does too (a package stays a name: brickwork
    finds it in the folders above the study, or installed); a relative data path that
    exists here becomes absolute. Nothing else changes: `brickwork train best.yaml` trains
    the best trial.
    """
    base_dir = Path(settings.config).parent if settings.config else Path.cwd()
    config["imports"] = [_portable_import(entry, base_dir) for entry in config.get("imports", [])]
    data = config.get("data") or {}
    for key, value in data.items():
        if key != "name" and isinstance(value, str) and _is_local_path(value):
            data[key] = str(Path(value).resolve())
    return config


def _portable_import(entry: str, base_dir: Path) -> str:
    if entry.endswith(".py"):
        return entry if Path(entry).is_absolute() else str((base_dir / entry).resolve())
    origin = getattr(sys.modules.get(entry), "__file__", None)
    if "." in entry or origin is None or Path(origin).name == "__init__.py":
        return entry
    project = {Path.cwd().resolve(), base_dir.resolve(), *base_dir.resolve().parents}
    found = Path(origin).resolve()
    return str(found) if found.parent in project else entry  # not an installed module


def _is_local_path(value: str) -> bool:
    """A relative path to something that exists in this working folder."""
    if not value or "://" in value or Path(value).is_absolute():
        return False
    try:
        return Path(value).exists()
    except OSError:  # a value too long or odd to be a file name
        return False


def finish_study(
    folder: StudyFolder, settings: StudySettings, records: Sequence[TrialRecord]
) -> TrialRecord:
    """Table, best.yaml and plots at the end; a study with no completed trial is an error."""
    table = write_table(folder, records, settings.metric, settings.mode)
    print_trial_line(table)
    best = best_trial(records, settings.mode)
    if best is None:
        failed = [r for r in records if r.state == "failed" and r.reason]
        reason = failed[-1].reason if failed else "no trial completed"
        raise BrickworkError(
            f"{folder.directory}: no trial completed ({len(records)} ran); the last failure: "
            f"{reason}; fix it, then run the same command with --resume"
        )
    path = write_best_config(folder, settings, best)
    write_plots(folder, settings, records)
    print_trial_line(
        f"best: trial {best.number} {settings.metric}={best.value:.4f} -> {path} "
        f"(train it with: brickwork train {path})"
    )
    return best


def write_plots(
    folder: StudyFolder, settings: StudySettings, records: Sequence[TrialRecord]
) -> None:
    """history.png, importance.png (2+ keys, 2+ completed trials) and parallel.png."""
    os.environ.setdefault("MPLCONFIGDIR", str((folder.directory / ".matplotlib").resolve()))
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _in_memory_study(settings, records)
    out = folder.directory / "plots"
    out.mkdir(exist_ok=True)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    figures: dict[str, Any] = {"history": optuna_plots.plot_optimization_history}
    if len(done) >= 2:
        figures["parallel"] = optuna_plots.plot_parallel_coordinate
        if len(settings.space) >= 2:
            figures["importance"] = optuna_plots.plot_param_importances
    for name, plot in figures.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = plot(study)
        except (ValueError, RuntimeError) as error:  # e.g. importances of a constant metric
            log.warning("plot %s skipped: %s", name, error)
            continue
        figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
        figure.savefig(out / f"{name}.png", dpi=100, bbox_inches="tight")
        plt.close(figure)


def _in_memory_study(settings: StudySettings, records: Sequence[TrialRecord]) -> Any:
    import optuna

    space = settings.search_space
    study = optuna.create_study(direction="minimize" if settings.mode == "min" else "maximize")
    for record in records:
        if record.state not in ("complete", "pruned") or record.value is None:
            continue
        labels = {k: label_of(v) for k, v in record.params.items()}
        distributions = {p.key: optuna_distribution(p) for p in space.params if p.key in labels}
        state = optuna.trial.TrialState[record.state.upper()]
        study.add_trial(
            optuna.trial.create_trial(
                params={k: labels[k] for k in distributions},
                distributions=distributions,
                value=record.value if state == optuna.trial.TrialState.COMPLETE else None,
                intermediate_values={0: record.value},
                state=state,
            )
        )
    return study


def _aligned(rows: list[list[Any]]) -> str:
    text = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in text) for i in range(len(text[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in text
    )
