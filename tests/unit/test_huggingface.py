"""`hf/` models: the head found for freezing, layer decay by encoder layer, LoRA's errors."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")

from brickwork.config import FinetuneConfig, LoraConfig
from brickwork.errors import ConfigError
from brickwork.finetune import lr_scales
from brickwork.models.anatomy import find_head
from brickwork.models.huggingface import apply_lora, build_hf_model


def test_find_head_is_everything_outside_the_base_model() -> None:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32)
    assert find_head(DistilBertForSequenceClassification(config)) == [
        "pre_classifier",
        "classifier",
    ]


def test_find_head_sees_through_peft(tiny_bert: Path) -> None:
    model = build_hf_model(str(tiny_bert), num_classes=3)
    assert find_head(model) == ["classifier"]
    wrapped = apply_lora(model, LoraConfig(r=2))
    assert find_head(wrapped) == ["base_model.model.classifier"]


def test_layer_decay_follows_the_encoder_layer_indices(tiny_bert: Path) -> None:
    model = build_hf_model(str(tiny_bert), num_classes=3)
    scales = lr_scales(model, FinetuneConfig(layer_decay=0.5))
    assert scales["bert.embeddings.word_embeddings.weight"] == 0.5**3
    assert scales["bert.encoder.layer.0.attention.self.query.weight"] == 0.5**2
    assert scales["bert.encoder.layer.1.output.dense.weight"] == 0.5
    assert scales["bert.pooler.dense.weight"] == 1.0
    assert scales["classifier.weight"] == 1.0


def test_lora_on_a_missing_layer_lists_the_linear_layers(tiny_bert: Path) -> None:
    model = build_hf_model(str(tiny_bert), num_classes=3)
    with pytest.raises(ConfigError) as raised:
        apply_lora(model, LoraConfig(target_modules=["qeury"]))
    message = str(raised.value)
    assert "finetune.lora.target_modules = [qeury]" in message and "\n" not in message
    assert "did you mean `query`?" in message and "value" in message


def test_lora_with_a_frozen_backbone_is_refused_in_the_config() -> None:
    from brickwork.config import load_config

    with pytest.raises(ConfigError, match=r"drop finetune\.freeze"):
        load_config(None, ["finetune.freeze=backbone", "finetune.lora={r: 4}"])
