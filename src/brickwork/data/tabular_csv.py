"""`tabular_csv`: feature columns (numeric and categorical) and a target column.

    data:
      name: tabular_csv
      csv: data/train.csv
      target: species              # the label column (strings or integers)
      features: null               # null: every column but the target
      categorical: null            # null: the columns that are not all numbers
      val_fraction: 0.15           # or val_csv / test_csv files of the same columns
      test_fraction: 0.15
      missing: mean                # empty numeric cells: mean | median | error
      na_values: []                # more spellings of "missing", e.g. ["n/a", "?"]
      id_column: null              # predict: the column that names each row

Everything learned from the data is fitted on the training split only: the mean (or
median) and standard deviation of each numeric column and the categories of each
categorical column (one-hot; a category training never saw is all zeros, with a
warning that counts them). That fitted state is kept in `DataBundle.extra["fitted"]`
and written to the run's `data.json`. Pair it with `model.name: mlp`.

Nothing changes silently: a column of numbers with a few other cells (`n/a`) is an
error naming the rows, not a categorical column; an empty label is an error, not a
class; how many empty numeric cells were filled, and with what, is logged.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset, TensorDataset

from brickwork.data.bundle import DataBundle
from brickwork.data.image_csv import label_index, read_csv_columns, sorted_labels
from brickwork.data.split import assemble_splits
from brickwork.errors import DataError
from brickwork.registry import register

Rows = list[dict[str, str]]
Missing = Literal["mean", "median", "error"]

log = logging.getLogger("brickwork")
_SHOWN_ROWS = 5


@register("dataset", "tabular_csv")
def build_tabular_csv(
    csv: str,
    target: str,
    features: list[str] | None = None,
    categorical: list[str] | None = None,
    val_csv: str | None = None,
    test_csv: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    missing: Missing = "mean",
    na_values: list[str] | None = None,
    id_column: str | None = None,
    seed: int = 42,
    fitted: dict[str, Any] | None = None,
) -> DataBundle:
    """Standardised numeric and one-hot categorical features; splits fitted on train only.

    `fitted` is filled by brickwork from a finished run's `data.json` (predict, export):
    then `csv` is not read, and the scaling and categories are those of training.
    """
    if fitted is not None and fitted.get("label_names") and "fitted" in fitted:
        encoder = TabularEncoder.from_state_dict(fitted["fitted"])
        given = {"val": val_csv, "test": test_csv}
        return _fitted_tabular_bundle(fitted, encoder, given, target, na_values or [], id_column)
    rows = read_csv_columns(Path(csv), [target, *(features or [])], "csv")
    rows = _mark_missing(_numbered(rows), na_values or [])
    columns = features or [c for c in rows[0] if c not in (target, _LINE)]
    label_names = sorted_labels([row[target] for row in rows])

    def labelled(rows: Rows, path: Path) -> list[tuple[dict[str, str], int]]:
        return [
            (r, label_index(r[target], label_names, path, i + 2, target))
            for i, r in enumerate(rows)
        ]

    def read_file(split: str, path: Path) -> list[tuple[dict[str, str], int]]:
        read = read_csv_columns(path, [target, *columns], f"{split}_csv")
        return labelled(_mark_missing(_numbered(read), na_values or []), path)

    sources = [("test", test_csv, test_fraction), ("val", val_csv, val_fraction)]
    splits = assemble_splits(labelled(rows, Path(csv)), sources, seed, read_file)
    rows = [row for row, _ in splits["train"]]
    encoder = TabularEncoder.fit(rows, columns, categorical, Path(csv), missing)

    def dataset(split: str, path: Path) -> TensorDataset:
        part = [row for row, _ in splits[split]]
        y = torch.tensor([label for _, label in splits[split]], dtype=torch.long)
        return TensorDataset(encoder.encode(part, path), y)

    load_unlabeled = _unlabeled_loader(encoder, columns, na_values or [], id_column)
    train = dataset("train", Path(csv))
    return DataBundle(
        train=train,
        val=dataset("val", Path(val_csv or csv)),
        test=dataset("test", Path(test_csv or csv)) if splits["test"] else None,
        num_classes=len(label_names),
        input_shape=(encoder.width,),
        label_names=label_names,
        train_targets=train.tensors[1],
        load_unlabeled=load_unlabeled,
        extra={"fitted": encoder.state_dict(), "feature_names": encoder.feature_names()},
    )


def _unlabeled_loader(
    encoder: TabularEncoder, columns: list[str], na_values: list[str], id_column: str | None
) -> Callable[[Path], tuple[Dataset[Any], list[str]]]:
    """`predict`'s reader: the feature columns (and the id column) of an unlabelled CSV."""

    def load_unlabeled(path: Path) -> tuple[Dataset[Any], list[str]]:
        wanted = [*columns, *([id_column] if id_column else [])]
        read = read_csv_columns(Path(path), wanted, "--input")
        new_rows = _mark_missing(_numbered(read), na_values)
        names = [r[id_column] if id_column else f"row {i + 2}" for i, r in enumerate(new_rows)]
        return TensorDataset(encoder.encode(new_rows, Path(path))), names

    return load_unlabeled


def _fitted_tabular_bundle(
    fitted: dict[str, Any],
    encoder: TabularEncoder,
    given: dict[str, str | None],
    target: str,
    na_values: list[str],
    id_column: str | None,
) -> DataBundle:
    """A finished run's bundle from its `data.json`; only splits given as files are read."""
    label_names = list(fitted["label_names"])
    columns = encoder.columns()

    def dataset(split: str) -> TensorDataset:
        path = given.get(split)
        if path is None:
            return TensorDataset(torch.zeros(0, encoder.width), torch.zeros(0, dtype=torch.long))
        read = read_csv_columns(Path(path), [target, *columns], f"{split}_csv")
        rows = _mark_missing(_numbered(read), na_values)
        y = [
            label_index(r[target], label_names, Path(path), i + 2, target)
            for i, r in enumerate(rows)
        ]
        return TensorDataset(encoder.encode(rows, Path(path)), torch.tensor(y, dtype=torch.long))

    return DataBundle(
        train=dataset("train"),
        val=dataset("val"),
        test=dataset("test") if given.get("test") else None,
        num_classes=len(label_names),
        input_shape=(encoder.width,),
        label_names=label_names,
        load_unlabeled=_unlabeled_loader(encoder, columns, na_values, id_column),
        extra={"fitted": encoder.state_dict(), "feature_names": encoder.feature_names()},
        example=(torch.zeros(encoder.width),),
    )


class TabularEncoder:
    """Numeric columns standardised, categorical ones one-hot, as fitted on training rows."""

    def __init__(
        self,
        numeric: dict[str, tuple[float, float]],
        categories: dict[str, list[str]],
        fill: dict[str, float] | None = None,
    ):
        self.numeric, self.categories = numeric, categories
        # The value an empty cell becomes (the training mean or median); absent: an error.
        self.fill = fill if fill is not None else {k: v[0] for k, v in numeric.items()}

    @classmethod
    def fit(
        cls,
        rows: Rows,
        columns: list[str],
        categorical: list[str] | None,
        path: Path,
        missing: Missing = "mean",
    ) -> TabularEncoder:
        """Learn means, standard deviations and categories from `rows` (the training split)."""
        if categorical is not None:
            unknown = [c for c in categorical if c not in columns]
            if unknown:
                raise DataError(
                    f"data.categorical: '{unknown[0]}' is not a feature column of {path}"
                )
        numeric: dict[str, tuple[float, float]] = {}
        categories: dict[str, list[str]] = {}
        fill: dict[str, float] = {}
        for column in columns:
            values = [row[column] for row in rows]
            numbers = [_number(v) for v in values]
            odd = [
                i for i, (n, v) in enumerate(zip(numbers, values, strict=True)) if v and n is None
            ]
            looks_numeric = len(odd) < sum(n is not None for n in numbers)  # mostly numbers
            explicit = categorical is not None and column in categorical
            if explicit or (categorical is None and not looks_numeric):
                categories[column] = sorted(set(values))
                continue
            if odd:  # a numeric column with a few other cells: say which, change nothing
                rows_shown = ", ".join(_line(rows[i], i) for i in odd[:_SHOWN_ROWS])
                raise DataError(
                    f"{path}: column '{column}' is numeric but rows {rows_shown}"
                    f"{' ...' if len(odd) > _SHOWN_ROWS else ''} hold "
                    f"{values[odd[0]]!r}; list such spellings of missing in data.na_values "
                    f"(e.g. na_values: [{values[odd[0]]!r}]), fix the rows, or list the column "
                    "in data.categorical"
                )
            present = [n for n in numbers if n is not None and not math.isnan(n)]
            mean = sum(present) / max(len(present), 1)
            var = sum((n - mean) ** 2 for n in present) / max(len(present), 1)
            numeric[column] = (mean, math.sqrt(var) or 1.0)
            empty = len(values) - len(present)
            if missing != "error":
                fill[column] = (
                    statistics.median(present) if missing == "median" and present else mean
                )
            if empty:
                _report_missing(path, column, empty, missing, fill.get(column), rows)
        return cls(numeric, categories, fill)

    @property
    def width(self) -> int:
        """Features per row after encoding."""
        return len(self.numeric) + sum(len(c) for c in self.categories.values())

    def feature_names(self) -> list[str]:
        """Names of the encoded features, in order (`column=category` for one-hot ones)."""
        names = list(self.numeric)
        for column, values in self.categories.items():
            names += [f"{column}={value}" for value in values]
        return names

    def encode(self, rows: Rows, path: Path) -> torch.Tensor:
        """(N, width) float32 features."""
        out = torch.zeros(len(rows), self.width)
        unseen: dict[str, int] = {}
        for i, row in enumerate(rows):
            for j, (column, (mean, std)) in enumerate(self.numeric.items()):
                value = _number(row[column]) if row[column] != "" else math.nan
                if value is None:
                    raise DataError(
                        f"{path}: row {_line(row, i)}: {column} '{row[column]}' is not a number; "
                        "fix the row, or list that spelling of missing in data.na_values"
                    )
                if math.isnan(value):
                    if column not in self.fill:
                        raise DataError(
                            f"{path}: row {_line(row, i)}: {column} is empty and data.missing is "
                            "'error'; fill the cell, or set data.missing: mean or median"
                        )
                    value = self.fill[column]
                out[i, j] = (value - mean) / std
            offset = len(self.numeric)
            for column, values in self.categories.items():
                if row[column] in values:
                    out[i, offset + values.index(row[column])] = 1.0
                else:
                    unseen[column] = unseen.get(column, 0) + 1
                offset += len(values)
        for column, count in unseen.items():
            log.warning(
                "%s: %d row(s) hold a %s category training never saw; encoded as all zeros",
                path,
                count,
                column,
            )
        return out

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TabularEncoder:
        """The encoder a run fitted, from its `data.json` (`state_dict`'s output)."""
        numeric = {k: (float(v[0]), float(v[1])) for k, v in state["numeric"].items()}
        fill = state.get("fill")
        return cls(numeric, dict(state["categories"]), dict(fill) if fill is not None else None)

    def columns(self) -> list[str]:
        """The feature columns an input CSV must have."""
        return [*self.numeric, *self.categories]

    def state_dict(self) -> dict[str, Any]:
        return {
            "numeric": {k: list(v) for k, v in self.numeric.items()},
            "categories": self.categories,
            "fill": self.fill,
        }


# Each row carries its line in the file, so messages name it after the rows are split.
_LINE = "\0line"


def _numbered(rows: Rows) -> Rows:
    return [{**row, _LINE: str(i + 2)} for i, row in enumerate(rows)]


def _line(row: dict[str, str], index: int) -> str:
    return row.get(_LINE, str(index + 2))


def _mark_missing(rows: Rows, na_values: list[str]) -> Rows:
    """Cells spelled as one of `na_values` become empty: missing, handled by data.missing."""
    if not na_values:
        return rows
    spelled = set(na_values)
    return [{k: ("" if v in spelled else v) for k, v in row.items()} for row in rows]


def _report_missing(
    path: Path, column: str, count: int, missing: Missing, fill: float | None, rows: Rows
) -> None:
    if fill is None:
        first = next(i for i, r in enumerate(rows) if _number(r[column]) is None)
        raise DataError(
            f"{path}: row {_line(rows[first], first)}: {column} is empty ({count} empty "
            "cell(s) in training) and data.missing is 'error'; fill the cells, "
            "or set data.missing: mean or median"
        )
    log.info(
        "tabular_csv: %s: %d empty cell(s) in training filled with the %s, %.4g",
        column,
        count,
        missing,
        fill,
    )


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None
