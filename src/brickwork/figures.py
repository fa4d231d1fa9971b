"""The report's matplotlib figures: curves, confusion matrix, per-class scores, sample grids.

Each function returns a Figure; `save_figure` writes it as a PNG and hands back the
bytes for embedding. Uses the Agg backend, so it never needs a display.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(width: float = 7.0, height: float = 3.6) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_figure(figure: Figure, path: Path) -> bytes:
    """Write `figure` to `path` as PNG; the same bytes go into the HTML."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    data = buffer.getvalue()
    path.write_bytes(data)
    return data


def plot_curves(
    series: Sequence[tuple[str, dict[str, list[tuple[int, float]]]]],
    keys: Sequence[str],
    title: str,
    log_y: bool = False,
) -> Figure:
    """One line per (run, key): `series` is [(run label, {key: [(step, value)]})]."""
    figure = new_figure()
    axes = figure.add_subplot()
    several = len(series) > 1
    for run_index, (label, curves) in enumerate(series):
        for key_index, key in enumerate(keys):
            points = curves.get(key) or []
            if not points:
                continue
            steps, values = zip(*points, strict=True)
            axes.plot(
                steps,
                values,
                _line_style(key),
                color=f"C{run_index if several else key_index}",
                marker="os^vDP*X"[key_index % 8],  # tells a run's metrics apart
                markevery=max(1, len(points) // 15),
                ms=4,
                label=f"{label} {key}" if several else key,
            )
    axes.set_xlabel("step")
    axes.set_title(title)
    if log_y:
        axes.set_yscale("log")
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(fontsize=7, loc="best")
    return figure


def _line_style(key: str) -> str:
    """Validation solid, per-step training dashed, per-epoch training dotted."""
    if key.startswith("train"):
        return ":" if key.endswith("_epoch") else "--"
    return "-"


def plot_confusion(matrix: Any, labels: Sequence[str]) -> Figure:
    """Counts with row = true class, column = predicted class."""
    size = max(4.0, min(10.0, 0.45 * len(labels) + 2))
    figure = new_figure(size + 1, size)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("confusion matrix (test split)")
    peak = matrix.max() if matrix.size else 0
    if len(labels) <= 20:
        for (row, column), count in _cells(matrix):
            colour = "white" if count > peak / 2 else "black"
            axes.text(column, row, str(count), ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(image, ax=axes, shrink=0.8)
    return figure


def plot_per_class(
    precision: Sequence[float], recall: Sequence[float], labels: Sequence[str]
) -> Figure:
    import numpy as np

    figure = new_figure(max(6.0, 0.5 * len(labels) + 2), 3.4)
    axes = figure.add_subplot()
    positions = np.arange(len(labels))
    axes.bar(positions - 0.2, precision, width=0.4, label="precision")
    axes.bar(positions + 0.2, recall, width=0.4, label="recall")
    axes.set_xticks(positions, labels, rotation=45, ha="right", fontsize=8)
    axes.set_ylim(0, 1.05)
    axes.set_title("per-class precision and recall (test split)")
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    return figure


def plot_image_grid(images: Sequence[Any], captions: Sequence[str], title: str) -> Figure:
    """Images (C, H, W in [0, 1]) in a grid, each with its caption."""
    columns = min(8, max(1, len(images)))
    rows = -(-len(images) // columns)
    figure = new_figure(1.3 * columns, 1.5 * rows + 0.4)
    figure.suptitle(title, fontsize=10)
    for index, (image, caption) in enumerate(zip(images, captions, strict=True)):
        axes = figure.add_subplot(rows, columns, index + 1)
        pixels = image.clamp(0, 1)
        if pixels.shape[0] == 1:
            axes.imshow(pixels[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            axes.imshow(pixels[:3].permute(1, 2, 0).numpy())
        axes.set_title(caption, fontsize=7, color="#b00020")
        axes.axis("off")
    return figure


def plot_trials(values: Sequence[float | None], mode: str, monitor: str) -> Figure:
    """Each trial's best value in start order, with the best so far as a step line."""
    figure = new_figure()
    axes = figure.add_subplot()
    points = [(i, v) for i, v in enumerate(values) if v is not None]
    if points:
        xs, ys = zip(*points, strict=True)
        axes.scatter(xs, ys, s=18, label="trial")
        running: list[Any] = []
        best_so_far = None
        for y in ys:
            better = best_so_far is None or (y < best_so_far if mode == "min" else y > best_so_far)
            best_so_far = y if better else best_so_far
            running.append(best_so_far)
        axes.step(xs, running, where="post", color="C1", label="best so far")
        axes.legend(fontsize=8)
    axes.set_xlabel("trial (in start order)")
    axes.set_ylabel(monitor)
    axes.set_title(f"best {monitor} per trial")
    axes.grid(alpha=0.3)
    return figure


def plot_parameter(
    values: Sequence[Any], scores: Sequence[float | None], name: str, monitor: str
) -> Figure:
    """A trial's parameter value against its best monitored value."""
    figure = new_figure(3.4, 2.8)
    axes = figure.add_subplot()
    pairs = [(v, s) for v, s in zip(values, scores, strict=True) if s is not None and v is not None]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v, _ in pairs)
    if pairs:
        xs = [v if numeric else str(v) for v, _ in pairs]
        axes.scatter(xs, [s for _, s in pairs], s=16)
        positive = numeric and all(float(v) > 0 for v in xs)
        if positive and max(xs) / min(xs) > 50:  # type: ignore[operator]
            axes.set_xscale("log")
    axes.set_xlabel(name, fontsize=8)
    axes.set_ylabel(monitor, fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)
    return figure


def _cells(matrix: Any) -> list[tuple[tuple[int, int], int]]:
    return [
        ((r, c), int(matrix[r, c])) for r in range(matrix.shape[0]) for c in range(matrix.shape[1])
    ]
