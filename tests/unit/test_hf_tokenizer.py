"""The Hugging Face tokenizer path of `text_csv`: NFC first, truncation, dynamic padding."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from brickwork.batch import ModelKwargs
from brickwork.data.hf_tokenizer import HFEncoder, HFPadCollate
from brickwork.errors import ConfigError
from tests.hf_models import korean_text, write_topic_csv


def _tokenizer(folder: Path) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def test_korean_text_is_tokenised_after_nfc_normalisation(tiny_bert: Path) -> None:
    tokenizer = _tokenizer(tiny_bert)
    composed = " ".join(korean_text()[:3])  # as the packages ship it: NFC syllables
    decomposed = unicodedata.normalize("NFD", composed)  # as another system may type it
    assert decomposed != composed
    encoder = HFEncoder(tokenizer, max_length=48)
    assert encoder(decomposed) == encoder(composed)
    unk = tokenizer.unk_token_id  # type: ignore[attr-defined]
    assert unk not in encoder(composed)["input_ids"]
    # Without NFC the vocabulary (learnt on syllables) sees only unknown pieces.
    assert unk in tokenizer(decomposed)["input_ids"]  # type: ignore[operator]


def test_batches_are_padded_to_their_longest_sequence_not_to_max_length(
    tiny_bert: Path,
) -> None:
    tokenizer = _tokenizer(tiny_bert)
    encoder, collate = HFEncoder(tokenizer, max_length=48), HFPadCollate(tokenizer)
    short, long = encoder("Decode JSON."), encoder("Parse " * 100)
    assert len(long["input_ids"]) == 48  # truncated to max_length
    longer = encoder("Decode a JSON document now, then parse it again.")
    inputs, targets = collate([(short, 0), (longer, 1)])
    assert isinstance(inputs, ModelKwargs)
    assert set(inputs) == {"input_ids", "token_type_ids", "attention_mask"}
    width = len(longer["input_ids"])
    assert len(short["input_ids"]) < width < 48
    assert inputs["input_ids"].shape == (2, width)  # the longer of the two, not max_length
    padding = width - len(short["input_ids"])
    assert inputs["attention_mask"][0].tolist() == [1] * len(short["input_ids"]) + [0] * padding
    assert inputs["input_ids"][0, -padding:].tolist() == [tokenizer.pad_token_id] * padding
    assert targets.tolist() == [0, 1]


def test_a_sentence_gets_the_same_logits_alone_or_batched_with_a_long_one(
    tiny_bert: Path,
) -> None:
    from transformers import AutoModelForSequenceClassification

    tokenizer = _tokenizer(tiny_bert)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert).eval()
    encoder, collate = HFEncoder(tokenizer, max_length=48), HFPadCollate(tokenizer)
    sentence = encoder("Serialize obj as a JSON formatted stream.")
    long = encoder(" ".join(["Return the list of all matches of the pattern."] * 5))
    (alone,) = collate([(sentence,)])
    (batched,) = collate([(sentence,), (long,)])
    assert batched["input_ids"].shape[1] > alone["input_ids"].shape[1]  # padding was added
    with torch.no_grad():
        by_itself = model(**alone).logits[0]
        beside_long = model(**batched).logits[0]
    assert torch.allclose(by_itself, beside_long, atol=1e-5)


def test_tokenizer_model_without_an_hf_model_names_the_fix() -> None:
    from brickwork.data.text_csv import build_text_csv

    csv_path = write_topic_csv(Path("topics.csv"), per_topic=4)
    with pytest.raises(ConfigError, match=r"set model\.name: hf/<folder or hub id>"):
        build_text_csv(str(csv_path), tokenizer="model", model_name="text_rnn")


def test_max_length_beyond_the_models_positions_names_the_limit(tiny_bert: Path) -> None:
    from brickwork.data.text_csv import build_text_csv

    csv_path = write_topic_csv(Path("topics.csv"), per_topic=4)
    with pytest.raises(ConfigError, match=r"data.max_length = 100: .* at most 64 tokens"):
        build_text_csv(
            str(csv_path), tokenizer="model", max_length=100, model_name=f"hf/{tiny_bert}"
        )
