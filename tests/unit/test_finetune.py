"""Freezing patterns, learning-rate groups and adding groups under a schedule."""

from __future__ import annotations

import pytest
import torch

from brickwork.config import FinetuneConfig
from brickwork.errors import ConfigError
from brickwork.finetune import (
    add_param_group,
    build_param_groups,
    freeze_parameters,
    match_parameters,
)
from brickwork.models.basic import SmallCNN
from brickwork.optim import Horizon, cosine


def _cnn() -> SmallCNN:
    return SmallCNN(in_channels=1, num_classes=3, channels=(4, 8))


def test_patterns_select_by_module_prefix_or_fnmatch() -> None:
    model = _cnn()
    assert match_parameters(model, ["features.0"], "k") == ["features.0.weight"]
    assert match_parameters(model, ["features.*.bias"], "k") == [
        "features.1.bias",
        "features.5.bias",
    ]
    assert match_parameters(model, ["head"], "k") == ["head.1.weight", "head.1.bias"]


def test_a_pattern_matching_nothing_names_the_key_and_suggests() -> None:
    with pytest.raises(
        ConfigError,
        match=r"finetune.freeze: 'featurs' matches no parameter "
        r"\(did you mean `features`\?\); top-level modules: features, head",
    ):
        freeze_parameters(_cnn(), FinetuneConfig(freeze=["featurs"]))


def test_freezing_everything_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"froze every parameter"):
        freeze_parameters(_cnn(), FinetuneConfig(freeze=["*"]))


def test_lr_mult_backbone_and_first_matching_key_wins() -> None:
    model = _cnn()
    config = FinetuneConfig(lr_mult={"features.0": 0.5, "backbone": 0.1})
    groups = build_param_groups(model, config, lr=1.0)
    assert [(g["lr"], len(g["params"])) for g in groups] == [(0.5, 1), (0.1, 5), (1.0, 2)]


def test_layer_decay_follows_timm_layer_groups() -> None:
    import timm

    model = timm.create_model("test_vit", num_classes=2)
    groups = build_param_groups(model, FinetuneConfig(layer_decay=0.5), lr=1.0)
    lrs = sorted({g["lr"] for g in groups})
    assert lrs[-1] == 1.0 and lrs[-2] == 0.5 and len(lrs) >= 3
    with pytest.raises(ConfigError, match=r"defines no layer groups.*lr_mult"):
        build_param_groups(_cnn(), FinetuneConfig(layer_decay=0.5), lr=1.0)


def test_added_group_follows_the_schedule_reached_so_far() -> None:
    model = _cnn()
    head = [p for n, p in model.named_parameters() if n.startswith("head")]
    optimizer = torch.optim.SGD([{"params": head, "lr": 1.0, "lr_scale": 1.0}], lr=1.0)
    schedule = cosine(optimizer, Horizon(steps_per_epoch=10, total_steps=10))
    for _ in range(5):
        optimizer.step()
        schedule.scheduler.step()
    factor = optimizer.param_groups[0]["lr"]
    new = [p for n, p in model.named_parameters() if n.startswith("features.0")]
    add_param_group(optimizer, schedule, {"params": new, "lr_scale": 0.1}, lr=1.0)
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.1 * factor)
    optimizer.step()
    schedule.scheduler.step()
    ratio = optimizer.param_groups[1]["lr"] / optimizer.param_groups[0]["lr"]
    assert ratio == pytest.approx(0.1)


def test_freeze_backbone_of_a_timm_model_leaves_only_its_classifier() -> None:
    import timm

    model = timm.create_model("test_resnet", num_classes=2)
    frozen = freeze_parameters(model, FinetuneConfig(freeze="backbone"))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"] and len(frozen) > 10
