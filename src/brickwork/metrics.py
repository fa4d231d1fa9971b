"""Classification metrics by registry name, kept as counts on the device.

The built-in metrics are counts (correct predictions; per-class true positives,
predictions and targets), updated on the device with no host read and summed over ranks
when read: `compute` is a collective, at the same line of every rank's evaluation pass.
They match torchmetrics' definitions (`MulticlassAccuracy(average="micro")`,
`MulticlassF1Score(average="macro")`), without importing it: torchmetrics imports
torchvision, transformers and matplotlib, seconds in every process a run starts.

A metric a user registers may be any object with `update(preds, target)`, `compute()`
and `reset()`, a torchmetrics `Metric` included (those sync their own states).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.distributed as dist

from brickwork import registry
from brickwork.distributed import is_distributed
from brickwork.errors import ConfigError
from brickwork.registry import register

if TYPE_CHECKING:
    from brickwork.config import MetricConfig

# Short names under which built-in metrics are logged (`val/acc`).
_LOG_KEYS = {"accuracy": "acc", "f1_macro": "f1"}


class Metric(Protocol):
    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None: ...
    def compute(self) -> torch.Tensor: ...
    def reset(self) -> None: ...


class _Counts:
    """Integer counts on the device; `summed` adds them over ranks (a collective)."""

    def __init__(self, size: int) -> None:
        self.counts = torch.zeros(size, dtype=torch.long)

    def to(self, device: torch.device | str) -> _Counts:
        self.counts = self.counts.to(device)
        return self

    def reset(self) -> None:
        self.counts.zero_()

    def summed(self) -> torch.Tensor:
        counts = self.counts.clone()
        if is_distributed():
            dist.all_reduce(counts)
        return counts


def _predicted_class(preds: torch.Tensor) -> torch.Tensor:
    """Class indices from scores (N, C), or the indices themselves (N,)."""
    return preds.argmax(dim=1) if preds.ndim == 2 else preds.long()


class Accuracy(_Counts):
    """The fraction of samples whose target is among the `top_k` highest scores."""

    def __init__(self, top_k: int = 1) -> None:
        super().__init__(2)  # correct, total
        self.top_k = top_k

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if self.top_k == 1:
            hits = _predicted_class(preds) == target
        else:
            hits = (preds.topk(self.top_k, dim=1).indices == target[:, None]).any(dim=1)
        self.counts[0] += hits.sum()
        self.counts[1] += target.numel()

    def compute(self) -> torch.Tensor:
        correct, total = self.summed().float()
        return correct / total if total > 0 else torch.zeros((), device=correct.device)


class F1Macro(_Counts):
    """Per-class F1, averaged over the classes seen in the targets or the predictions."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(3 * num_classes)  # true positives, predictions, targets per class
        self.num_classes = num_classes

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        predicted, n = _predicted_class(preds), self.num_classes
        self.counts[:n] += torch.bincount(target[predicted == target], minlength=n)
        self.counts[n : 2 * n] += torch.bincount(predicted, minlength=n)
        self.counts[2 * n :] += torch.bincount(target, minlength=n)

    def compute(self) -> torch.Tensor:
        true_pos, predicted, actual = self.summed().float().view(3, self.num_classes)
        false_pos, false_neg = predicted - true_pos, actual - true_pos
        denominator = 2 * true_pos + false_neg + false_pos
        f1 = torch.where(denominator > 0, 2 * true_pos / denominator.clamp(min=1), 0.0)
        # A class absent from both targets and predictions does not count (torchmetrics).
        weights = (true_pos + false_pos + false_neg > 0).float()
        if weights.sum() == 0:
            return torch.zeros((), device=f1.device)
        return (weights * f1 / weights.sum()).sum()


class MetricCollection:
    """Metrics by log name, updated and read together (the loop's `parts.metrics`)."""

    def __init__(self, metrics: dict[str, Any]) -> None:
        self.metrics = metrics

    def to(self, device: torch.device | str) -> MetricCollection:
        for metric in self.metrics.values():
            if hasattr(metric, "to"):
                metric.to(device)
        return self

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        for metric in self.metrics.values():
            metric.update(preds, target)

    def compute(self) -> dict[str, torch.Tensor]:
        return {name: metric.compute() for name, metric in self.metrics.items()}

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()

    def __len__(self) -> int:
        return len(self.metrics)


@register("metric", "accuracy")
def accuracy(num_classes: int) -> Metric:
    """Top-1 accuracy over all samples (micro average)."""
    return Accuracy(top_k=1)


@register("metric", "f1_macro")
def f1_macro(num_classes: int) -> Metric:
    """F1 averaged over classes with equal weight, robust to class imbalance."""
    return F1Macro(num_classes)


@register("metric", "top_k_accuracy")
def top_k_accuracy(num_classes: int, top_k: int = 5) -> Metric:
    """Whether the target is among the `top_k` highest scores."""
    if not 1 <= top_k <= num_classes:
        raise ConfigError(
            f"metrics: top_k_accuracy top_k = {top_k}: expected 1 to the {num_classes} "
            "classes; set a smaller top_k"
        )
    return Accuracy(top_k=top_k)


def metric_key(config: MetricConfig) -> str:
    """The name a metric is logged under, without the split prefix."""
    if config.name == "top_k_accuracy":
        return f"top{config.kwargs.get('top_k', 5)}_acc"
    return _LOG_KEYS.get(config.name, config.name)


def build_metrics(configs: list[MetricConfig], num_classes: int | None) -> MetricCollection:
    """The run's metrics keyed by log name; empty when the task has no classes."""
    metrics: dict[str, Any] = {}
    for config in configs:
        metrics[metric_key(config)] = registry.build(
            "metric", config.name, config.kwargs, provided={"num_classes": num_classes}
        )
    return MetricCollection(metrics)


def confusion_matrix(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts of (true class, predicted class), rows are truth."""
    predicted = _predicted_class(preds)
    pairs = target * num_classes + predicted
    return torch.bincount(pairs, minlength=num_classes**2).view(num_classes, num_classes)
