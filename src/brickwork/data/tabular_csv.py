"""`tabular_csv`: feature columns (numeric and categorical) and a target column.

    data:
      name: tabular_csv
      csv: data/train.csv
      target: species              # the label column (strings or integers)
      features: null               # null: every column but the target
      categorical: null            # null: the columns that are not all numbers
      val_fraction: 0.15           # or val_csv / test_csv files of the same columns
      test_fraction: 0.15

Everything learned from the data is fitted on the training split only: the mean and
standard deviation of each numeric column (missing values become the mean) and the
categories of each categorical column (one-hot; a category training never saw is all
zeros). That fitted state is kept in `DataBundle.extra["fitted"]` and written to the
run's `data.json`. Pair it with `model.name: mlp`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from brickwork.data.bundle import DataBundle
from brickwork.data.image_csv import label_index, read_csv_columns, sorted_labels
from brickwork.data.split import assemble_splits
from brickwork.errors import DataError
from brickwork.registry import register

Rows = list[dict[str, str]]


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
    seed: int = 42,
) -> DataBundle:
    """Standardised numeric and one-hot categorical features; splits fitted on train only."""
    rows = read_csv_columns(Path(csv), [target, *(features or [])], "csv")
    columns = features or [c for c in rows[0] if c != target]
    label_names = sorted_labels([row[target] for row in rows])

    def labelled(rows: Rows, path: Path) -> list[tuple[dict[str, str], int]]:
        return [
            (r, label_index(r[target], label_names, path, i + 2, target))
            for i, r in enumerate(rows)
        ]

    def read_file(split: str, path: Path) -> list[tuple[dict[str, str], int]]:
        return labelled(read_csv_columns(path, [target, *columns], f"{split}_csv"), path)

    sources = [("test", test_csv, test_fraction), ("val", val_csv, val_fraction)]
    splits = assemble_splits(labelled(rows, Path(csv)), sources, seed, read_file)
    rows = [row for row, _ in splits["train"]]
    encoder = TabularEncoder.fit(rows, columns, categorical, Path(csv))

    def dataset(split: str, path: Path) -> TensorDataset:
        part = [row for row, _ in splits[split]]
        y = torch.tensor([label for _, label in splits[split]], dtype=torch.long)
        return TensorDataset(encoder.encode(part, path), y)

    def load_unlabeled(path: Path) -> tuple[Dataset[Any], list[str]]:
        new_rows = read_csv_columns(Path(path), columns, "--input")
        return TensorDataset(encoder.encode(new_rows, Path(path))), [
            str(i) for i in range(len(new_rows))
        ]

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


class TabularEncoder:
    """Numeric columns standardised, categorical ones one-hot, as fitted on training rows."""

    def __init__(self, numeric: dict[str, tuple[float, float]], categories: dict[str, list[str]]):
        self.numeric, self.categories = numeric, categories

    @classmethod
    def fit(
        cls, rows: Rows, columns: list[str], categorical: list[str] | None, path: Path
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
        for column in columns:
            values = [row[column] for row in rows]
            numbers = [_number(v) for v in values]
            is_numeric = all(n is not None for n, v in zip(numbers, values, strict=True) if v != "")
            if (categorical is None and is_numeric) or (categorical and column not in categorical):
                if not is_numeric:
                    raise DataError(
                        f"{path}: column '{column}' is not numeric; list it in data.categorical"
                    )
                present = [n for n in numbers if n is not None and not math.isnan(n)]
                mean = sum(present) / max(len(present), 1)
                var = sum((n - mean) ** 2 for n in present) / max(len(present), 1)
                numeric[column] = (mean, math.sqrt(var) or 1.0)
            else:
                categories[column] = sorted(set(values))
        return cls(numeric, categories)

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
        for i, row in enumerate(rows):
            for j, (column, (mean, std)) in enumerate(self.numeric.items()):
                value = _number(row[column]) if row[column] != "" else mean
                if value is None:
                    raise DataError(
                        f"{path}: row {i + 2}: {column} '{row[column]}' is not a number"
                    )
                value = mean if math.isnan(value) else value  # missing: the training mean
                out[i, j] = (value - mean) / std
            offset = len(self.numeric)
            for column, values in self.categories.items():
                if row[column] in values:
                    out[i, offset + values.index(row[column])] = 1.0
                offset += len(values)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "numeric": {k: list(v) for k, v in self.numeric.items()},
            "categories": self.categories,
        }


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None
