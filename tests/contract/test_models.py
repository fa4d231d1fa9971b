"""Every registered model, and a few timm/ and torchvision/ ones, obeys the same contract
(timm-style parametrized tests): it builds from data facts, runs forward and backward on a
batch, gives a finite loss, and every trainable parameter receives a gradient."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from brickwork import registry
from brickwork.config import ModelConfig
from brickwork.data.bundle import DataBundle
from brickwork.data.text_csv import pad_collate
from brickwork.models import build_model

NUM_CLASSES = 3
ZOO = [
    "timm/test_resnet",
    "timm/test_vit",
    "torchvision/resnet18",
    "torchvision/mobilenet_v3_small",
]
# Settings that keep a model small enough for a CPU test (the defaults are for real data).
SMALL: dict[str, dict[str, Any]] = {
    "cnn": {"channels": [4, 8]},
    "mlp": {"hidden_sizes": [16]},
    "timm/test_vit": {"img_size": 32},
}
TEXT_MODELS = {"text_rnn", "text_transformer"}


def _image_case() -> tuple[DataBundle, Any]:
    images = torch.randn(4, 3, 32, 32)
    facts = DataBundle(train=[], val=[], num_classes=NUM_CLASSES, input_shape=(3, 32, 32))
    return facts, images


def _text_case() -> tuple[DataBundle, Any]:
    sequences = [torch.randint(2, 50, (length,)) for length in (7, 3, 5, 1)]
    (inputs,) = pad_collate([(s,) for s in sequences])
    facts = DataBundle(train=[], val=[], num_classes=NUM_CLASSES, extra={"vocab_size": 50})
    return facts, inputs


@pytest.mark.parametrize("name", [*registry.available("model"), *ZOO])
def test_model_builds_trains_one_step_and_every_trainable_param_gets_a_gradient(
    name: str,
) -> None:
    if name.startswith("test_"):
        pytest.skip("registered by another test")
    torch.manual_seed(0)
    facts, inputs = _text_case() if name in TEXT_MODELS else _image_case()
    model = build_model(ModelConfig(name=name, **SMALL.get(name, {})), facts)
    assert isinstance(model, nn.Module)
    model.train()
    logits = model(inputs)
    assert logits.shape == (4, NUM_CLASSES)
    loss = nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0]))
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"


def test_every_registered_model_has_a_contract_case() -> None:
    known = {"cnn", "mlp"} | TEXT_MODELS
    builtins = {n for n in registry.available("model") if not n.startswith("test_")}
    assert builtins <= known, "add the new model's input to this contract test"


@pytest.mark.parametrize("name", sorted(TEXT_MODELS))
def test_text_models_take_a_plain_padded_id_tensor_too(name: str) -> None:
    facts, inputs = _text_case()
    model = build_model(ModelConfig(name=name), facts).eval()
    with torch.no_grad():
        assert torch.allclose(model(inputs), model(inputs["tokens"]), atol=1e-5)


@pytest.mark.parametrize("scheme", ["kaiming", "xavier", "orthogonal"])
def test_init_schemes_reinitialise_weights_and_zero_biases(scheme: str) -> None:
    facts = DataBundle(train=[], val=[], num_classes=10, input_shape=(1, 8, 8))
    torch.manual_seed(0)
    default = build_model(ModelConfig(name="mlp"), facts)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp", init=scheme), facts)
    assert not torch.equal(model.head.weight, default.head.weight)
    assert torch.count_nonzero(model.head.bias) == 0
