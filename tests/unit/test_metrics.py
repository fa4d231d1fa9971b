"""The built-in metrics give torchmetrics' values, batch by batch, from counts alone."""

from __future__ import annotations

import pytest
import torch

from brickwork.errors import ConfigError
from brickwork.metrics import Accuracy, F1Macro, confusion_matrix, top_k_accuracy

torchmetrics = pytest.importorskip("torchmetrics")


def _batches(num_classes: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Uneven batches; one class never appears, in targets or predictions."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for size in (7, 32, 1, 19):
        scores = torch.randn(size, num_classes, generator=generator)
        scores[:, -1] = -1e9  # never predicted
        target = torch.randint(0, num_classes - 1, (size,), generator=generator)  # nor a target
        batches.append((scores, target))
    return batches


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy_top_k_and_macro_f1_equal_torchmetrics_over_uneven_batches(seed: int) -> None:
    from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

    classes = 6
    ours = {"acc": Accuracy(), "top3": Accuracy(top_k=3), "f1": F1Macro(classes)}
    theirs = {
        "acc": MulticlassAccuracy(num_classes=classes, average="micro"),
        "top3": MulticlassAccuracy(num_classes=classes, top_k=3, average="micro"),
        "f1": MulticlassF1Score(num_classes=classes, average="macro"),
    }
    for scores, target in _batches(classes, seed):
        for name in ours:
            ours[name].update(scores, target)
            theirs[name].update(scores, target)
    for name in ours:
        assert ours[name].compute().item() == theirs[name].compute().item(), name
        ours[name].reset()
        assert ours[name].counts.sum() == 0


def test_confusion_matrix_equals_torchmetrics() -> None:
    from torchmetrics.classification import MulticlassConfusionMatrix

    scores, target = _batches(5, 3)[1]
    expected = MulticlassConfusionMatrix(num_classes=5)(scores, target)
    assert torch.equal(confusion_matrix(scores.argmax(dim=1), target, 5), expected)


def test_top_k_larger_than_the_classes_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="top_k = 5"):
        top_k_accuracy(num_classes=3, top_k=5)
