"""Small built-in models for the embedded datasets and for tests."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field, PositiveInt
from torch import nn

from brickwork.registry import register

# A dropout rate: 1.0 would zero every activation.
Probability = Annotated[float, Field(ge=0, lt=1)]


@register("model", "mlp")
class MLP(nn.Module):
    """Flatten, then Linear-ReLU(-Dropout) blocks, then a linear head.

    Works for images (flattened) and tabular rows alike.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden_sizes: Sequence[PositiveInt] = (128, 64),
        dropout: Probability = 0.1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, num_classes)


@register("model", "cnn")
class SmallCNN(nn.Module):
    """Conv-BN-ReLU stages with one 2x2 pooling each, global average pooling, linear head.

    Sized for small images such as the 8x8 digits; stages are given as channel widths.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: Sequence[PositiveInt] = (32, 64),
        dropout: Probability = 0.2,
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        width = in_channels
        for out in channels:
            stages += [
                nn.Conv2d(width, out, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            width = out
        self.features = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, C, H, W) -> (B, num_classes)
