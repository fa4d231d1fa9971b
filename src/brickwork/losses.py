"""Loss functions by registry name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from brickwork import registry
from brickwork.errors import ConfigError
from brickwork.registry import register


@register("loss", "cross_entropy")
def cross_entropy(
    label_smoothing: Annotated[float, Field(ge=0, le=1)] = 0.0,
    class_weights: Sequence[float] | str | None = None,
    train_targets: torch.Tensor | None = None,
    num_classes: int | None = None,
) -> nn.Module:
    """Cross-entropy; `class_weights` is a list, or `balanced` (inverse class frequency
    on the training split, as scikit-learn's `class_weight="balanced"`)."""
    weight = None
    if isinstance(class_weights, str):
        if class_weights != "balanced" or train_targets is None or num_classes is None:
            raise ConfigError(
                f"loss.class_weights = '{class_weights}': expected a list of numbers or 'balanced'"
            )
        counts = torch.bincount(train_targets, minlength=num_classes).float()
        weight = counts.sum() / (num_classes * counts.clamp(min=1))
    elif class_weights is not None:
        weight = torch.tensor(list(class_weights), dtype=torch.float32)
        if num_classes is not None and len(weight) != num_classes:
            raise ConfigError(
                f"loss.class_weights has {len(weight)} values; the data has {num_classes} classes"
            )
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)


@register("loss", "mse")
def mse() -> nn.Module:
    """Mean squared error, for regression targets."""
    return nn.MSELoss()


def build_loss(name: str, kwargs: dict[str, object], data_facts: dict[str, object]) -> nn.Module:
    """Instantiate the loss `name`; it may take `num_classes` and `train_targets`."""
    return registry.build("loss", name, dict(kwargs), provided=data_facts)
