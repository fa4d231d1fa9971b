"""`image_csv`: a CSV of image paths and labels, the layout of Kaggle-style competitions.

    data:
      name: image_csv
      csv: data/train.csv          # columns: image,label   (label: strings or integers)
      root: data/images            # paths in the CSV are relative to it (default: the CSV's folder)
      path_column: image
      label_column: label
      val_csv: null                # or a seeded stratified split (val_fraction)
      test_csv: null               # labelled, for the test split

`brickwork predict RUN --input FILE.csv` reads the same `path_column` from an unlabelled
CSV (or takes an image folder). Label names are the training labels sorted (numerically
when all are integers). A label in the val or test CSV that training never saw is an
error naming the file and row.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from brickwork.data.bundle import DataBundle
from brickwork.data.image import (
    ImageFiles,
    ImageOptions,
    Item,
    build_fitted_image_bundle,
    build_image_bundle,
    has_image_facts,
    keep_decodable,
    unlabeled_images,
)
from brickwork.data.split import assemble_splits
from brickwork.data.transforms import TransformSpec
from brickwork.errors import DataError
from brickwork.registry import register

log = logging.getLogger("brickwork")


@register("dataset", "image_csv")
def build_image_csv(
    csv: str,
    root: str | None = None,
    path_column: str = "image",
    label_column: str = "label",
    val_csv: str | None = None,
    test_csv: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.0,
    image_size: int | list[int] | None = 224,
    mode: str = "RGB",
    train_transforms: list[TransformSpec] | None = None,
    eval_transforms: list[TransformSpec] | None = None,
    normalize: str = "imagenet",
    on_bad_image: str = "error",
    seed: int = 42,
    model_name: str | None = None,
    fitted: dict[str, Any] | None = None,
) -> DataBundle:
    """Splits from CSV files of (path, label) rows.

    `model_name` is filled from `model.name`, for `normalize: model`. `fitted` is filled
    by brickwork from a finished run's `data.json` (predict, export): then `csv` is not
    read, and only `val_csv`/`test_csv`, if given, are.
    """
    options = ImageOptions(
        image_size, mode, train_transforms, eval_transforms, normalize, on_bad_image, model_name
    )
    options.check()
    base = Path(root) if root is not None else Path(csv).parent
    from_run = fitted is not None and has_image_facts(fitted)
    if root is not None and not base.is_dir() and not from_run:
        raise DataError(f"data.root = '{root}': no such folder; the CSV's paths are relative to it")

    def read_file(split: str, path: Path) -> list[Item]:
        other = read_csv_columns(path, [path_column, label_column], f"{split}_csv")
        items = _items(other, base, label_names, path, path_column, label_column)
        return check_files_exist(items, path, on_bad_image == "skip")

    def load_unlabeled(path: Path) -> tuple[Dataset[Any], list[str]]:
        skip = options.on_bad_image == "skip"
        if Path(path).suffix.lower() != ".csv":
            return unlabeled_images(path, eval_transform, options.mode, options.draft_size, skip)
        rows = read_csv_columns(Path(path), [path_column], "--input")
        files = [_resolve_input(base, row[path_column], Path(path)) for row in rows]
        names = [row[path_column] for row in rows]
        if skip:
            files, names = keep_decodable(files, names, options.mode, Path(path))
        return ImageFiles(files, eval_transform, options.mode, options.draft_size), names

    if fitted is not None and from_run:
        label_names = list(fitted["label_names"])
        given = {"val": val_csv, "test": test_csv}
        explicit = {s: read_file(s, Path(p)) for s, p in given.items() if p is not None}
        bundle, eval_transform = build_fitted_image_bundle(
            fitted, explicit, options, load_unlabeled
        )
        return bundle
    rows = read_csv_columns(Path(csv), [path_column, label_column], "csv")
    label_names = sorted_labels([row[label_column] for row in rows])
    train = _items(rows, base, label_names, Path(csv), path_column, label_column)
    train = check_files_exist(train, Path(csv), on_bad_image == "skip")
    sources = [("test", test_csv, test_fraction), ("val", val_csv, val_fraction)]
    splits = assemble_splits(train, sources, seed, read_file)
    bundle, eval_transform = build_image_bundle(splits, label_names, options, load_unlabeled, seed)
    return bundle


def read_csv_columns(path: Path, columns: list[str], key: str) -> list[dict[str, str]]:
    """Rows of a CSV as dicts; a missing file or column is a DataError naming both."""
    if not path.is_file():
        raise DataError(f"data.{key} = '{path}': no such file")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        for column in columns:
            if column not in header:
                from brickwork.registry import suggest

                raise DataError(
                    f"{path}: no column '{column}'{suggest(column, header)}; "
                    f"its columns: {', '.join(header) or '(none)'}"
                )
        rows = list(reader)
    if not rows:
        raise DataError(f"{path}: the CSV has a header but no rows")
    return rows


def sorted_labels(values: list[str]) -> list[str]:
    """Distinct labels, numerically sorted when all are integers, else alphabetically."""
    distinct = set(values)
    if all(_is_int(v) for v in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def label_index(value: str, label_names: list[str], path: Path, row: int, column: str) -> int:
    """The index of `value`; an unseen or empty label is a DataError naming file, row and column."""
    if not value.strip():
        raise DataError(
            f"{path}: row {row}: {column} is empty; fill in the label or remove the row "
            "(an empty cell is not a class)"
        )
    try:
        return label_names.index(value)
    except ValueError:
        shown = ", ".join(label_names[:10]) + (" ..." if len(label_names) > 10 else "")
        raise DataError(
            f"{path}: row {row}: {column} '{value}' never occurs in the training data "
            f"(known: {shown}); fix the row or add examples of it to training"
        ) from None


def _items(
    rows: list[dict[str, str]],
    base: Path,
    label_names: list[str],
    path: Path,
    path_column: str,
    label_column: str,
) -> list[Item]:
    return [
        (
            _resolve(base, row[path_column], path),
            label_index(row[label_column], label_names, path, number, label_column),
        )
        for number, row in enumerate(rows, start=2)  # row 1 is the header
    ]


def check_files_exist(items: list[Item], csv_path: Path, skip: bool) -> list[Item]:
    """Stat every listed file before training (images decode lazily, later): a missing
    file in a val or test CSV must not surface after a full training epoch.

    With `on_bad_image: skip` the missing ones are dropped with a warning that counts them.
    """
    present = [item for item in items if item[0].is_file()]
    if len(present) == len(items):
        return items
    missing = [(row, item[0]) for row, item in enumerate(items, start=2) if not item[0].is_file()]
    if skip:
        log.warning("%s: skipped %d rows whose image file is missing", csv_path, len(missing))
        return present
    rows = ", ".join(str(row) for row, _ in missing[:5]) + (" ..." if len(missing) > 5 else "")
    raise DataError(
        f"{csv_path}: {len(missing)} listed image file(s) do not exist (rows {rows}; "
        f"e.g. {missing[0][1]}); fix the paths or data.root, or set data.on_bad_image: skip"
    )


def _resolve(base: Path, value: str, csv_path: Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path


def _resolve_input(base: Path, value: str, csv_path: Path) -> Path:
    """A path in `predict`'s input CSV: under data.root (or the training CSV's folder) as
    in training, else beside the input CSV (a run used where its training data are not)."""
    trained = _resolve(base, value, csv_path)
    beside = _resolve(csv_path.parent, value, csv_path)
    return beside if not trained.is_file() and beside.is_file() else trained


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True
