"""Seeded, stratified splits, and the one rule every file-based dataset builder uses to
get its val and test splits: a file of their own, or a fraction of the training rows."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from brickwork.errors import ConfigError

T = TypeVar("T")


def split_indices(
    labels: Sequence[int], fraction: float, seed: int, what: str
) -> tuple[list[int], list[int]]:
    """(kept, split_off) indices, `fraction` split off, stratified by label when possible.

    Stratifying needs two examples of every class and a split at least as large as the
    number of classes; otherwise the split is only seeded.

    Example:
        >>> train, val = split_indices([0, 0, 1, 1], 0.5, seed=0, what="val")
    """
    indices = list(range(len(labels)))
    if fraction <= 0:
        return indices, []
    if not 0 < fraction < 1:
        raise ConfigError(f"data.{what}_fraction = {fraction}: expected a number in [0, 1)")
    from sklearn.model_selection import train_test_split

    counts = np.bincount(np.asarray(labels, dtype=np.int64)) if len(labels) else np.array([0])
    num_classes, taken = int((counts > 0).sum()), math.ceil(fraction * len(labels))
    # sklearn stratifies only with 2+ examples per class and room for each class on both sides.
    can_stratify = counts[counts > 0].min() >= 2 and num_classes <= min(taken, len(labels) - taken)
    stratify = list(labels) if can_stratify else None
    try:
        kept, split = train_test_split(
            indices, test_size=fraction, stratify=stratify, random_state=seed
        )
    except ValueError as error:
        raise ConfigError(f"data.{what}_fraction = {fraction}: {error}") from None
    return sorted(kept), sorted(split)


Labelled = tuple[T, int]


def assemble_splits(
    train: list[Labelled[T]],
    sources: Sequence[tuple[str, str | None, float]],
    seed: int,
    read_file: Callable[[str, Path], list[Labelled[T]]],
) -> dict[str, list[Labelled[T]]]:
    """Train, val and test items of a file-based dataset, one rule for every builder.

    `sources` lists `(split, file, fraction)` in the order splits are taken (test, then
    val): a split with its own file reads it (`read_file(split, path)`); otherwise a
    seeded, stratified `fraction` of the remaining training items becomes that split.

    Example:
        >>> splits = assemble_splits(items, [("test", None, 0.1), ("val", "val.csv", 0)], 42, read)
    """
    splits: dict[str, list[Labelled[T]]] = {}
    for split, file, fraction in sources:
        if file is not None:
            splits[split] = read_file(split, Path(file))
            continue
        kept, taken = split_indices([label for _, label in train], fraction, seed, split)
        splits[split] = [train[i] for i in taken]
        train = [train[i] for i in kept]
    splits["train"] = train
    return splits
