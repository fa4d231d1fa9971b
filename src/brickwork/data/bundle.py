"""What a dataset builder hands to the rest of brickwork."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from brickwork import registry
from brickwork.errors import ConfigError, DataError

if TYPE_CHECKING:
    from brickwork.config import Config


@dataclass
class DataBundle:
    """The splits of one dataset and the facts models, losses and reports need.

    Attributes:
        train, val, test: datasets yielding `(input, target)` pairs; `test` may be None.
        num_classes: for classification; injected into model factories that take it.
        input_shape: one sample's shape without the batch dimension, e.g. (1, 8, 8).
        label_names: human-readable class names, saved with the run for `predict`.
        train_targets: training labels, for class weights and balanced sampling.
        collate_fn: how to stack samples into a batch (None: PyTorch's default).
        load_unlabeled: turns a user's file or folder into a dataset of inputs for `predict`,
            with one name per input for the output rows.
        denormalize: maps a normalised input batch back to [0, 1] for image grids.
        example: one sample `(input,)` shaped like the data, for `export` to trace when
            the bundle was rebuilt from a run's `data.json` without its splits.
    """

    train: Dataset[Any]
    val: Dataset[Any]
    test: Dataset[Any] | None = None
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
    label_names: list[str] | None = None
    train_targets: torch.Tensor | None = None
    collate_fn: Callable[[list[Any]], Any] | None = None
    load_unlabeled: Callable[[Path], tuple[Dataset[Any], list[str]]] | None = None
    denormalize: Callable[[torch.Tensor], torch.Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    example: Any = None

    def split(self, name: str) -> Dataset[Any]:
        """A split by name; a clear error if the dataset has no such split."""
        dataset = {"train": self.train, "val": self.val, "test": self.test}.get(name)
        if dataset is None:
            raise ConfigError(f"split '{name}' is not available for this dataset; use train or val")
        return dataset


def save_data_facts(bundle: DataBundle, path: Path) -> None:
    """Write what the run learned about its data (label names, fitted preprocessing) as JSON.

    `predict` and `evaluate` rebuild the data from the run's config and print these
    label names; the file keeps them readable without brickwork.
    """
    import json

    from brickwork.files import write_atomically

    facts = {
        "label_names": bundle.label_names,
        "num_classes": bundle.num_classes,
        "input_shape": list(bundle.input_shape) if bundle.input_shape else None,
        "class_counts": _class_counts(bundle),
        **{k: v for k, v in bundle.extra.items() if _is_json(v)},
    }
    write_atomically(path, json.dumps(facts, indent=1) + "\n")


def _class_counts(bundle: DataBundle) -> list[int] | None:
    """Training samples per class: all a balanced loss needs, kept for a rebuilt bundle."""
    targets = bundle.train_targets
    if bundle.num_classes is None or targets is None or targets.is_floating_point():
        return None
    return [int(n) for n in torch.bincount(targets.flatten(), minlength=bundle.num_classes)]


def _targets_of_counts(counts: list[int]) -> torch.Tensor:
    """Labels in the proportions of `counts` (the training split's, from `data.json`)."""
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))


def _is_json(value: Any) -> bool:
    import json

    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def read_data_facts(path: Path) -> dict[str, Any] | None:
    """A run's `data.json` (what `save_data_facts` wrote), or None if absent or unreadable."""
    import json

    try:
        facts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return facts if isinstance(facts, dict) else None


def build_data(config: Config, fitted: dict[str, Any] | None = None) -> DataBundle:
    """Build the dataset named by `config.data.name` with its keyword arguments.

    `fitted` (a finished run's `data.json`) goes to a builder that declares a `fitted`
    argument: it rebuilds labels and preprocessing from it without reading the training
    data, so a run folder predicts and exports on a machine without them. Builders
    without one (and `**kwargs` ones: they did not ask for it) build as in training.
    """
    facts: dict[str, Any] = {"seed": config.seed, "model_name": config.model.name}
    factory = registry.get("dataset", config.data.name)
    target = factory.__init__ if inspect.isclass(factory) else factory
    if fitted is not None and "fitted" in inspect.signature(target).parameters:
        facts["fitted"] = fitted
    bundle = registry.build("dataset", config.data.name, config.data.kwargs, provided=facts)
    if not isinstance(bundle, DataBundle):
        raise TypeError(
            f"dataset '{config.data.name}' returned {type(bundle).__name__}; "
            "a dataset factory must return a brickwork.data.DataBundle"
        )
    if fitted is not None and "fitted" in facts and bundle.train_targets is None:
        counts = fitted.get("class_counts")
        bundle.train_targets = _targets_of_counts(counts) if counts else None
    _check_labels(bundle, config.data.name)
    return bundle


def _check_labels(bundle: DataBundle, name: str) -> None:
    """A label outside 0..num_classes-1 would crash deep in the loss: say so up front."""
    targets = bundle.train_targets
    if bundle.num_classes is None or targets is None or targets.numel() == 0:
        return
    if targets.is_floating_point():
        return  # soft or regression targets: nothing to range-check
    low, high = int(targets.min()), int(targets.max())
    if low < 0 or high >= bundle.num_classes:
        bad = low if low < 0 else high
        raise DataError(
            f"dataset '{name}': label {bad} is outside 0..{bundle.num_classes - 1} "
            f"(num_classes={bundle.num_classes}); fix the labels or num_classes"
        )
