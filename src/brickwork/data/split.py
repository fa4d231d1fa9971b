"""Seeded, stratified splits of row indices, shared by the file-based dataset builders."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from brickwork.errors import ConfigError


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
