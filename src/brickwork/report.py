"""`brickwork report`: one self-contained HTML file about runs or a study, to look at.

For each run: learning curves (training and validation loss and metrics against step,
several runs overlaid), the learning rate, the test split's confusion matrix with label
names, per-class precision and recall, the most confidently wrong test samples (an image
grid for images, the text for text), the config and the summary. For a study folder
(run folders of trials under one folder): the trials table, each trial's best value,
each varying parameter against it, and all trials' validation curves; the best trial
gets the per-run sections. Everything is read from run folders alone.

Images are embedded as base64 data URIs (no network, one file to mail around); the
same figures are written as PNG into `<report>-figures/` beside the HTML.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brickwork.errors import BrickworkError, ConfigError
from brickwork.run_catalog import (
    RunRow,
    differing_keys,
    find_runs,
    format_number,
    is_run_dir,
    read_run,
)

GENERATOR = "brickwork report"
NUM_WRONG = 24


@dataclass
class Section:
    """A titled part of the page: HTML text and figures."""

    title: str
    parts: list[str] = field(default_factory=list)


class ReportWriter:
    """Collects sections and figures, then writes the HTML and the PNGs."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.figures_dir = output.with_name(f"{output.stem}-figures")
        self.sections: list[Section] = []
        self._names: set[str] = set()

    def add_figure(self, section: Section, figure: Any, name: str, caption: str = "") -> None:
        from brickwork.figures import save_figure

        name = self._unique(name)
        data = save_figure(figure, self.figures_dir / f"{name}.png")
        encoded = base64.b64encode(data).decode("ascii")
        section.parts.append(
            f'<figure><img alt="{html.escape(caption or name)}" '
            f'src="data:image/png;base64,{encoded}"><figcaption>{html.escape(caption)}'
            "</figcaption></figure>"
        )

    def write(self, title: str) -> None:
        body = "\n".join(
            f"<section><h2>{html.escape(s.title)}</h2>{''.join(s.parts)}</section>"
            for s in self.sections
        )
        stamp = time.strftime("%Y-%m-%d %H:%M")
        self.output.write_text(
            _PAGE.format(generator=GENERATOR, title=html.escape(title), stamp=stamp, body=body),
            encoding="utf-8",
        )

    def _unique(self, name: str) -> str:
        stem, count = "".join(c if c.isalnum() or c in "-_" else "-" for c in name), 1
        candidate = stem
        while candidate in self._names:
            count += 1
            candidate = f"{stem}-{count}"
        self._names.add(candidate)
        return candidate


def write_report(paths: Sequence[Path], output: Path) -> Path:
    """Write the report for run folders or one study folder; returns the HTML path."""
    from brickwork.trackers import keep_matplotlib_out_of_home

    keep_matplotlib_out_of_home()
    runs, study = _resolve(paths)
    _check_output(output)
    writer = ReportWriter(output)
    writer.figures_dir.mkdir(parents=True, exist_ok=True)
    (writer.figures_dir / ".brickwork-report").touch()
    rows = [read_run(path) for path in runs]
    if study is not None:
        _study_sections(writer, study, rows)
        best = _best_row(rows)
        detailed = [best] if best is not None else []
    else:
        detailed = rows
    _curve_sections(writer, rows if study is None else detailed)
    for row in detailed:
        _run_sections(writer, row, prefix=f"{_label(row)}: " if len(detailed) > 1 else "")
    title = f"study {study}" if study is not None else ", ".join(_label(r) for r in rows)
    writer.write(title)
    return output


def _resolve(paths: Sequence[Path]) -> tuple[list[Path], Path | None]:
    """Run folders to show, and the study folder when one folder of several runs was given."""
    runs: list[Path] = []
    for path in paths:
        if not path.exists():
            raise ConfigError(
                f"{path}: no such folder; pass a run folder (runs/<name>/<id>) or a study folder"
            )
        if is_run_dir(path):
            runs.append(path)
            continue
        found = find_runs(path)
        if not found:
            raise ConfigError(
                f"{path}: holds no brickwork runs (no config.yaml with metrics or a summary); "
                "pass a run folder or a study folder"
            )
        if len(paths) == 1:
            return found, path
        runs += found
    return runs, None


def _check_output(output: Path) -> None:
    """Never overwrite what brickwork did not write."""
    if (
        output.exists()
        and GENERATOR not in output.read_text(encoding="utf-8", errors="replace")[:2000]
    ):
        raise ConfigError(
            f"--output {output}: the file exists and was not written by brickwork report; "
            "choose another --output"
        )
    figures = output.with_name(f"{output.stem}-figures")
    if figures.exists() and not (figures / ".brickwork-report").exists():
        raise ConfigError(
            f"--output {output}: the folder {figures} exists and was not written by brickwork "
            "report; choose another --output"
        )
    output.parent.mkdir(parents=True, exist_ok=True)


def _label(row: RunRow) -> str:
    return f"{row.name}/{row.path.name}"


def _best_row(rows: list[RunRow]) -> RunRow | None:
    scored = [r for r in rows if r.best is not None]
    if not scored:
        return None
    mode = str(scored[0].config.get("checkpoint.mode", "min"))
    return (min if mode == "min" else max)(scored, key=lambda r: float(r.best))  # type: ignore[arg-type]


def read_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Each metric's (step, value) points from `metrics.jsonl`, one per step."""
    curves: dict[str, dict[int, float]] = {}
    try:
        lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        for key, value in row.items():
            if key not in ("step", "epoch") and isinstance(value, int | float):
                curves.setdefault(key, {})[int(row["step"])] = float(value)
    return {k: sorted(v.items()) for k, v in curves.items()}


def _curve_sections(writer: ReportWriter, rows: list[RunRow]) -> None:
    from brickwork.figures import plot_curves

    series = [(_label(r), read_curves(r.path)) for r in rows]
    keys = sorted({k for _, curves in series for k in curves})
    section = Section("learning curves")
    losses = [k for k in keys if k.endswith("loss") or k.endswith("loss_epoch")]
    if losses:
        writer.add_figure(
            section, plot_curves(series, losses, "loss"), "loss", "training and validation loss"
        )
    metrics = [k for k in keys if k.startswith("val/") and k not in losses]
    if metrics:
        writer.add_figure(
            section,
            plot_curves(series, metrics, "validation metrics"),
            "val-metrics",
            "validation metrics",
        )
    if "lr" in keys:
        writer.add_figure(
            section, plot_curves(series, ["lr"], "learning rate"), "lr", "learning rate"
        )
    if not section.parts:
        section.parts.append("<p>no metrics logged yet (metrics.jsonl is empty or missing)</p>")
    writer.sections.append(section)


def _run_sections(writer: ReportWriter, row: RunRow, prefix: str) -> None:
    section = Section(f"{prefix}test split")
    try:
        _test_split(writer, section, row)
    except BrickworkError as error:
        section.parts.append(f"<p class=note>not evaluated: {html.escape(str(error))}</p>")
    writer.sections.append(section)
    summary, config = _run_files_today(row.path)
    details = Section(f"{prefix}summary and config")
    details.parts.append(_summary_table(row))
    details.parts.append(
        f"<details open><summary>summary.json</summary><pre>{html.escape(summary)}</pre></details>"
    )
    details.parts.append(
        f"<details><summary>config.yaml</summary><pre>{html.escape(config)}</pre></details>"
    )
    writer.sections.append(details)


def _run_files_today(run_dir: Path) -> tuple[str, str]:
    """`summary.json` and `config.yaml` as written, or in today's format for an older run
    folder (epochs counted from 1), so a report never shows two conventions side by side."""
    import yaml

    from brickwork.run_format import run_format_of, upgrade_config, upgrade_summary
    from brickwork.version import RUN_FORMAT_VERSION

    summary = _read_text(run_dir / "summary.json")
    config = _read_text(run_dir / "config.yaml")
    version = run_format_of(run_dir)
    if version >= RUN_FORMAT_VERSION:
        return summary, config
    try:
        summary = json.dumps(upgrade_summary(json.loads(summary)), indent=2)
        raw = yaml.safe_load(config)
        config = yaml.safe_dump(upgrade_config(raw, version), sort_keys=False)
    except (ValueError, yaml.YAMLError, AttributeError):
        pass  # unreadable: shown as it is
    return summary, config


def _test_split(writer: ReportWriter, section: Section, row: RunRow) -> None:
    """Confusion matrix, per-class precision/recall and the most confidently wrong samples."""
    import torch

    from brickwork.figures import plot_confusion, plot_per_class

    probabilities, targets, parts = _predict_test(row.path)
    labels = parts.data.label_names or [str(i) for i in range(probabilities.shape[1])]
    predictions = probabilities.argmax(dim=1)
    count = len(labels)
    matrix = torch.bincount(targets * count + predictions, minlength=count * count).reshape(
        count, count
    )
    true_positive = matrix.diag().float()
    precision = (true_positive / matrix.sum(dim=0).clamp(min=1)).tolist()
    recall = (true_positive / matrix.sum(dim=1).clamp(min=1)).tolist()
    accuracy = float(true_positive.sum() / max(1, len(targets)))
    section.parts.append(
        f"<p>{len(targets)} test samples, accuracy {accuracy:.4f} (best checkpoint)</p>"
    )
    writer.add_figure(
        section, plot_confusion(matrix.numpy(), labels), "confusion", "confusion matrix"
    )
    writer.add_figure(
        section,
        plot_per_class(precision, recall, labels),
        "per-class",
        "per-class precision and recall",
    )
    section.parts.append(_per_class_table(labels, precision, recall, matrix.sum(dim=1).tolist()))
    _wrong_samples(writer, section, parts, probabilities, targets, labels)


def _predict_test(run_dir: Path) -> tuple[Any, Any, Any]:
    import torch
    from torch.utils.data import DataLoader

    from brickwork.batch import call_model, logits_of, move_to_device, split_batch
    from brickwork.inference import load_trained

    parts, _ = load_trained(run_dir, "best")
    if parts.data.test is None or not parts.data.num_classes:
        raise ConfigError(f"{run_dir}: the dataset has no labelled test split")
    loader: DataLoader[Any] = DataLoader(
        parts.data.test, batch_size=256, collate_fn=parts.data.collate_fn
    )
    probabilities, targets = [], []
    with torch.no_grad():
        for batch in loader:
            inputs, target = split_batch(move_to_device(batch, parts.device))
            logits = logits_of(call_model(parts.model, inputs))  # hf/ models: an output object
            probabilities.append(torch.softmax(logits.float(), dim=1).cpu())
            targets.append(target.cpu())
    return torch.cat(probabilities), torch.cat(targets).long(), parts


def _wrong_samples(
    writer: ReportWriter,
    section: Section,
    parts: Any,
    probabilities: Any,
    targets: Any,
    labels: list[str],
) -> None:
    from brickwork.figures import plot_image_grid

    confidence, predictions = probabilities.max(dim=1)
    wrong = (predictions != targets).nonzero().flatten()
    order = wrong[confidence[wrong].argsort(descending=True)][:NUM_WRONG].tolist()
    title = "most confidently wrong test samples"
    if not order:
        section.parts.append(f"<p>{title}: none, every test sample is right</p>")
        return
    captions = [
        f"{labels[int(predictions[i])]} {float(confidence[i]):.2f} / {labels[int(targets[i])]}"
        for i in order
    ]
    first = parts.data.test[order[0]][0]
    if hasattr(first, "dim") and first.dim() == 3:
        images = [parts.data.test[i][0] for i in order]
        if parts.data.denormalize is not None:
            images = [parts.data.denormalize(image.unsqueeze(0))[0] for image in images]
        figure = plot_image_grid(images, captions, f"{title}: predicted (confidence) / true")
        writer.add_figure(section, figure, "wrong", title)
        return
    vocabulary = (parts.data.extra.get("fitted") or {}).get("vocabulary")
    lines = []
    for index, caption in zip(order, captions, strict=True):
        sample = parts.data.test[index][0]
        if vocabulary and hasattr(sample, "tolist"):
            text = " ".join(vocabulary[t] for t in sample.tolist() if 0 < t < len(vocabulary))
        else:
            text = str(sample.tolist() if hasattr(sample, "tolist") else sample)[:300]
        lines.append(
            f"<tr><td>{index}</td><td>{html.escape(caption)}</td><td>{html.escape(text)}</td></tr>"
        )
    section.parts.append(
        f"<h3>{title}</h3><table><tr><th>sample</th><th>predicted (confidence) / true</th>"
        f"<th>input</th></tr>{''.join(lines)}</table>"
    )


def _study_sections(writer: ReportWriter, study: Path, rows: list[RunRow]) -> None:
    from brickwork.figures import plot_curves, plot_parameter, plot_trials

    ordered = sorted(rows, key=lambda r: r.started or 0)
    monitor = next((r.monitor for r in ordered if r.monitor), "best")
    mode = str(ordered[0].config.get("checkpoint.mode", "min")) if ordered else "min"
    varying = differing_keys(ordered, ignore=("name", "trainer.max_epochs"))
    section = Section(f"study {study.name}: {len(rows)} trials")
    section.parts.append(_trials_table(ordered, varying, study))
    writer.add_figure(
        section,
        plot_trials([r.best for r in ordered], mode, str(monitor)),
        "trials",
        "best value per trial",
    )
    for key in varying[:8]:
        figure = plot_parameter(
            [r.config.get(key) for r in ordered], [r.best for r in ordered], key, str(monitor)
        )
        writer.add_figure(section, figure, f"param-{key}", key)
    series = [(r.path.name, read_curves(r.path)) for r in ordered]
    if any(str(monitor) in curves for _, curves in series):
        writer.add_figure(
            section,
            plot_curves(series, [str(monitor)], f"{monitor} of every trial"),
            "trial-curves",
            "every trial's validation curve",
        )
    writer.sections.append(section)


def _trials_table(rows: list[RunRow], varying: list[str], root: Path) -> str:
    head = "".join(
        f"<th>{html.escape(h)}</th>" for h in ["trial", "status", "best", "epochs", *varying]
    )
    body = []
    for row in rows:
        cells = [
            str(row.path.relative_to(root)),
            row.status,
            format_number(row.best),
            format_number(row.epochs),
        ]
        cells += [format_number(row.config.get(k)) for k in varying]
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _summary_table(row: RunRow) -> str:
    items = [
        ("status", row.status),
        (f"best {row.monitor}", format_number(row.best)),
        ("epochs", format_number(row.epochs)),
        ("steps", format_number(row.steps)),
        ("wall time (s)", format_number(row.duration_s)),
    ]
    items += [(k, format_number(v)) for k, v in sorted(row.final.items())]
    cells = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in items
    )
    return f"<table class=narrow>{cells}</table>"


def _per_class_table(
    labels: list[str], precision: list[float], recall: list[float], support: list[int]
) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(label)}</td><td>{p:.3f}</td><td>{r:.3f}</td><td>{s}</td></tr>"
        for label, p, r, s in zip(labels, precision, recall, support, strict=True)
    )
    head = "<tr><th>class</th><th>precision</th><th>recall</th><th>support</th></tr>"
    return f"<table class=narrow>{head}{rows}</table>"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return "(missing)"


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="{generator}">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #222; }}
h1 {{ font-size: 22px; margin-bottom: 2px; }}
h2 {{ font-size: 18px; border-bottom: 1px solid #ddd; }}
.stamp {{ color: #777; font-size: 13px; }}
figure {{ display: inline-block; margin: 6px; vertical-align: top; }}
figure img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ font-size: 12px; color: #555; text-align: center; }}
table {{ border-collapse: collapse; font-size: 13px; margin: 8px 0; }}
td, th {{ border: 1px solid #ddd; padding: 3px 8px; text-align: left; }}
table.narrow {{ display: inline-table; margin-right: 16px; vertical-align: top; }}
pre {{ background: #f6f6f6; padding: 8px; font-size: 12px; overflow-x: auto; }}
.note {{ color: #a05a00; }} #broken {{ color: #b00020; font-weight: bold; }}
</style></head>
<body data-images-loaded="pending">
<h1>{title}</h1><div class="stamp">written by brickwork report, {stamp}</div>
<p id="broken" hidden></p>
{body}
<script>
window.addEventListener("load", function () {{
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) {{ return !i.complete || i.naturalWidth === 0; }});
  document.body.dataset.imagesLoaded = (images.length - broken.length) + "/" + images.length;
  if (broken.length) {{
    var note = document.getElementById("broken");
    note.hidden = false;
    note.textContent = broken.length + " image(s) failed to load";
  }}
}});
</script>
</body></html>
"""
