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


def test_freezing_the_backbone_under_lora_keeps_the_adapters_trainable(tiny_bert: Path) -> None:
    from brickwork.finetune import freeze_parameters

    model = apply_lora(build_hf_model(str(tiny_bert), num_classes=3), LoraConfig(r=2))
    before = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = freeze_parameters(model, FinetuneConfig(freeze="backbone", lora=LoraConfig(r=2)))
    after = {n for n, p in model.named_parameters() if p.requires_grad}
    assert after == before and any(".lora_A." in n for n in after)
    assert "base_model.model.bert.embeddings.word_embeddings.weight" in frozen
