"""Every registered model honours the same contract (timm-style parametrized tests)."""

from __future__ import annotations

import pytest
import torch

from brickwork import registry
from brickwork.config import ModelConfig
from brickwork.data import DataBundle
from brickwork.models import build_model

# Built-in models that need a different input than 1x8x8 images declare it here.
INPUT_SHAPES: dict[str, tuple[int, ...]] = {}


def _bundle(input_shape: tuple[int, ...]) -> DataBundle:
    empty = torch.utils.data.TensorDataset(torch.zeros(0))
    return DataBundle(train=empty, val=empty, num_classes=10, input_shape=input_shape)


@pytest.mark.parametrize("name", registry.available("model"))
def test_model_builds_runs_and_every_trainable_parameter_gets_a_gradient(name: str) -> None:
    if name.startswith("test_"):
        pytest.skip("registered by another test")
    torch.manual_seed(0)
    shape = INPUT_SHAPES.get(name, (1, 8, 8))
    model = build_model(ModelConfig(name=name), _bundle(shape))
    logits = model(torch.randn(4, *shape))
    assert logits.shape == (4, 10)
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(4))
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("scheme", ["kaiming", "xavier", "orthogonal"])
def test_init_schemes_reinitialise_weights_and_zero_biases(scheme: str) -> None:
    torch.manual_seed(0)
    default = build_model(ModelConfig(name="mlp"), _bundle((1, 8, 8)))
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp", init=scheme), _bundle((1, 8, 8)))
    assert not torch.equal(model.head.weight, default.head.weight)
    assert torch.count_nonzero(model.head.bias) == 0
