"""Metrics through torchmetrics, by registry name.

torchmetrics takes seconds to import, so this module is only imported when a run
builds its metrics, never on the CLI's start-up path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from brickwork import registry
from brickwork.registry import register

if TYPE_CHECKING:
    from torchmetrics import Metric, MetricCollection

    from brickwork.config import MetricConfig

# Short names under which built-in metrics are logged (`val/acc`).
_LOG_KEYS = {"accuracy": "acc", "f1_macro": "f1"}


@register("metric", "accuracy")
def accuracy(num_classes: int) -> Metric:
    """Top-1 accuracy over all samples (micro average)."""
    from torchmetrics.classification import MulticlassAccuracy

    return MulticlassAccuracy(num_classes=num_classes, average="micro")


@register("metric", "f1_macro")
def f1_macro(num_classes: int) -> Metric:
    """F1 averaged over classes with equal weight, robust to class imbalance."""
    from torchmetrics.classification import MulticlassF1Score

    return MulticlassF1Score(num_classes=num_classes, average="macro")


@register("metric", "top_k_accuracy")
def top_k_accuracy(num_classes: int, top_k: int = 5) -> Metric:
    """Whether the target is among the `top_k` highest scores."""
    from torchmetrics.classification import MulticlassAccuracy

    return MulticlassAccuracy(num_classes=num_classes, top_k=top_k, average="micro")


def metric_key(config: MetricConfig) -> str:
    """The name a metric is logged under, without the split prefix."""
    if config.name == "top_k_accuracy":
        return f"top{config.kwargs.get('top_k', 5)}_acc"
    return _LOG_KEYS.get(config.name, config.name)


def build_metrics(configs: list[MetricConfig], num_classes: int | None) -> MetricCollection:
    """A MetricCollection keyed by log name; empty when the task has no classes."""
    from torchmetrics import MetricCollection

    metrics: dict[str, Metric | MetricCollection] = {}
    for config in configs:
        metrics[metric_key(config)] = registry.build(
            "metric", config.name, config.kwargs, provided={"num_classes": num_classes}
        )
    return MetricCollection(metrics)


def build_confusion_matrix(num_classes: int) -> Metric:
    """Counts of (true class, predicted class), rows are truth."""
    from torchmetrics.classification import MulticlassConfusionMatrix

    return MulticlassConfusionMatrix(num_classes=num_classes)
