"""brickwork's splits are scikit-learn's, bit for bit: earlier runs (made when brickwork
called `train_test_split`) keep their val and test sets, and the default dataset reads the
same digits `load_digits` gives."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from brickwork.data.digits import build_digits, load_digit_arrays
from brickwork.data.split import split_indices, train_test_indices
from brickwork.errors import ConfigError


def _label_sets() -> list[np.ndarray]:
    """Balanced, skewed, tied and non-contiguous labels of awkward sizes."""
    rng = np.random.default_rng(0)
    sets = [np.repeat(np.arange(10), 13), np.array([0, 0, 1, 1, 2, 2, 2])]
    for size, classes in ((97, 3), (1257, 10), (61, 7), (200, 2), (43, 5)):
        labels = rng.integers(0, classes, size)
        labels[: 2 * classes] = np.repeat(np.arange(classes), 2)  # 2+ of each class
        sets.append(labels * 3 + 1)  # labels need not be 0..K-1
    sets.append(np.concatenate([np.zeros(90, np.int64), np.ones(7, np.int64), np.full(3, 5)]))
    return sets


@pytest.mark.parametrize("stratified", [True, False])
def test_train_test_indices_equal_sklearns_train_test_split(stratified: bool) -> None:
    compared = 0
    for labels in _label_sets():
        classes = len(np.unique(labels))
        for fraction in (0.1, 0.15, 0.2, 1 / 3, 0.5, 0.7):
            for seed in (0, 1, 42, 12345):
                n_test = int(np.ceil(fraction * len(labels)))
                if stratified and min(n_test, len(labels) - n_test) < classes:
                    continue  # sklearn refuses these; split_indices does not stratify them
                stratify = labels if stratified else None
                expected = train_test_split(
                    np.arange(len(labels)), test_size=fraction, stratify=stratify, random_state=seed
                )
                got = train_test_indices(len(labels), fraction, seed, stratify)
                assert [a.tolist() for a in got] == [a.tolist() for a in expected]
                compared += 1
    assert compared > 150


def test_split_indices_matches_sklearn_where_it_used_to_call_it() -> None:
    labels = [0, 1, 2] * 20 + [3]  # one class of one: a seeded, unstratified split
    kept, split = split_indices(labels, 0.2, seed=7, what="val")
    expected = train_test_split(list(range(len(labels))), test_size=0.2, random_state=7)
    assert (kept, split) == (sorted(expected[0]), sorted(expected[1]))
    with pytest.raises(ConfigError, match=r"data\.val_fraction = 0\.9: with 3 examples"):
        split_indices([0, 1, 1], 0.9, seed=0, what="val")


def test_digits_are_load_digits_and_split_as_before() -> None:
    pixels, labels = load_digit_arrays()
    digits = load_digits()
    assert np.array_equal(pixels, digits.images) and np.array_equal(labels, digits.target)
    bundle = build_digits(seed=42)
    rest, test = train_test_split(
        np.arange(len(labels)), test_size=0.15, stratify=labels, random_state=42
    )
    train, val = train_test_split(
        rest, test_size=0.15 / 0.85, stratify=labels[rest], random_state=42
    )
    assert bundle.train_targets.tolist() == labels[train].tolist()
    assert bundle.val[:][1].tolist() == labels[val].tolist()
    assert bundle.test is not None and bundle.test[:][1].tolist() == labels[test].tolist()
    scaled = digits.images[train].astype(np.float32) / 16
    standardised = (scaled - scaled.mean()) / scaled.std()
    assert np.allclose(bundle.train[:][0].squeeze(1).numpy(), standardised, atol=1e-5)


def test_digits_fall_back_to_load_digits_when_the_file_is_not_where_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import brickwork.data.digits as digits_module

    monkeypatch.setattr(digits_module.importlib.util, "find_spec", lambda name: None)
    pixels, labels = load_digit_arrays()
    digits = load_digits()
    assert np.array_equal(pixels, digits.images) and np.array_equal(labels, digits.target)
