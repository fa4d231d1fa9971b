"""Seeded, stratified splits, and the one rule every file-based dataset builder uses to
get its val and test splits: a file of their own, or a fraction of the training rows.

The splits are scikit-learn's `train_test_split(..., random_state=seed)`, bit for bit
(a unit test holds them equal), computed here with NumPy's legacy `RandomState`:
importing `sklearn.model_selection` costs 1.5 s in every process that trains, and
reproducing its split keeps every earlier run's val and test sets what they were.
"""

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
    taken = math.ceil(fraction * len(labels))
    if len(labels) - taken <= 0:
        raise ConfigError(
            f"data.{what}_fraction = {fraction}: with {len(labels)} examples "
            "nothing would be left to train on; lower it"
        )
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    num_classes = int((counts > 0).sum())
    # Stratify only with 2+ examples per class and room for each class on both sides.
    can_stratify = counts[counts > 0].min() >= 2 and num_classes <= min(taken, len(labels) - taken)
    kept, split = train_test_indices(
        len(labels), fraction, seed, np.asarray(labels) if can_stratify else None
    )
    return sorted(kept.tolist()), sorted(split.tolist())


def train_test_indices(
    n: int, test_fraction: float, seed: int, stratify: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions in `range(n)`, in the order scikit-learn returns them.

    `test_fraction` of `n`, rounded up, goes to test. With `stratify` (a label per
    position, 2+ of each, as many test and train places as classes) every class keeps
    its share on both sides; without it the split is a seeded shuffle.
    """
    n_test = math.ceil(test_fraction * n)
    n_train = n - n_test
    rng = np.random.RandomState(seed)
    if stratify is None:
        order = rng.permutation(n)
        return order[n_test:], order[:n_test]
    _, label_index, class_counts = np.unique(stratify, return_inverse=True, return_counts=True)
    by_class = np.split(np.argsort(label_index, kind="stable"), np.cumsum(class_counts)[:-1])
    train_counts = _approximate_mode(class_counts, n_train, rng)
    test_counts = _approximate_mode(class_counts - train_counts, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for members, n_i, t_i in zip(by_class, train_counts, test_counts, strict=True):
        shuffled = members.take(rng.permutation(len(members)), mode="clip")
        train.extend(shuffled[:n_i])
        test.extend(shuffled[n_i : n_i + t_i])
    return rng.permutation(train), rng.permutation(test)


def _approximate_mode(
    class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState
) -> np.ndarray:
    """Examples drawn per class: the floor of each class's share, then one more for the
    largest remainders, ties broken by `rng` (scikit-learn's rule, draw for draw)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            add_now = min(len(tied), need_to_add)
            floored[rng.choice(tied, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


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
