"""`text_csv`: text and label columns, a tokenizer, a vocabulary and a padding collate.

    data:
      name: text_csv
      csv: data/reviews.csv
      text_column: text
      label_column: label
      tokenizer: whitespace        # whitespace | characters | model | hf:<name or folder>
      lowercase: true
      max_length: 256              # longer texts are cut
      min_freq: 1                  # rarer tokens become <unk>
    model:
      name: text_rnn               # or text_transformer; vocab_size comes from the data

The vocabulary is built on the training split only (id 0 is padding, 1 is `<unk>`) and
written to the run's `data.json`. `hf:` uses a Hugging Face tokenizer when
`transformers` is installed (offline: a local folder). Batches are
`({"tokens": (B, T), "lengths": (B,), "mask": (B, T)}, targets)`, padded to the
longest sequence in the batch by `pad_collate`.

`tokenizer: model` pairs with `model.name: hf/<folder or hub id>`: the model's own
tokenizer, and batches of its own fields (`input_ids`, `attention_mask`, ...) padded per
batch and passed to the model as keyword arguments (`brickwork.data.hf_tokenizer`).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from brickwork.data.bundle import DataBundle
from brickwork.data.image_csv import label_index, read_csv_columns, sorted_labels
from brickwork.data.split import assemble_splits
from brickwork.errors import ConfigError
from brickwork.registry import register

PAD, UNK = 0, 1
_WORD = re.compile(r"\w+|[^\w\s]")


Labelled = list[tuple[str, int]]


@register("dataset", "text_csv")
def build_text_csv(
    csv: str,
    text_column: str = "text",
    label_column: str = "label",
    tokenizer: str = "whitespace",
    lowercase: bool = True,
    max_length: int = 256,
    min_freq: int = 1,
    max_vocab_size: int | None = None,
    val_csv: str | None = None,
    test_csv: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.0,
    unicode_normalization: Literal["NFC", "NFKC", "NFD", "NFKD"] | None = "NFC",
    seed: int = 42,
    model_name: str | None = None,
    fitted: dict[str, Any] | None = None,
) -> DataBundle:
    """Token-id sequences and labels; vocabulary from the training split.

    Text is Unicode-normalised first (NFC by default), so the same sentence typed on
    another system (Korean or accented letters composed or not) gets the same tokens.
    `model_name` is filled from `model.name`, for `tokenizer: model`. `fitted` is filled
    by brickwork from a finished run's `data.json` (predict, export): then `csv` is not
    read, the vocabulary is the run's (an `hf/` model's tokenizer is in the run folder),
    and only `val_csv`/`test_csv`, if given, are.
    """
    columns = _TextColumns(text_column, label_column, _normalizer(unicode_normalization))
    if fitted is not None and _has_text_facts(fitted, tokenizer):
        label_names = list(fitted["label_names"])
        given = {"val": val_csv, "test": test_csv}
        splits = {s: columns.read(Path(p), label_names, f"{s}_csv") for s, p in given.items() if p}
        vocabulary = fitted.get("fitted", {}).get("vocabulary", [])
        encoding = _fitted_encoding(tokenizer, vocabulary, lowercase, max_length, model_name)
        return _text_bundle(splits, label_names, encoding, columns)
    rows = read_csv_columns(Path(csv), [text_column, label_column], "csv")
    label_names = sorted_labels([row[label_column] for row in rows])

    def read_file(split: str, path: Path) -> Labelled:
        return columns.read(path, label_names, f"{split}_csv")

    sources = [("test", test_csv, test_fraction), ("val", val_csv, val_fraction)]
    labelled = columns.labelled(rows, label_names, Path(csv))
    splits = assemble_splits(labelled, sources, seed, read_file)
    train_texts = [text for text, _ in splits["train"]]
    options = (lowercase, max_length, min_freq, max_vocab_size)
    return _text_bundle(
        splits, label_names, _encoding(tokenizer, train_texts, options, model_name), columns
    )


class _TextColumns:
    """The text and label columns of a CSV, read with the text normalised."""

    def __init__(self, text: str, label: str, normal: Callable[[str], str]) -> None:
        self.text, self.label, self.normal = text, label, normal

    def labelled(self, rows: list[dict[str, str]], label_names: list[str], path: Path) -> Labelled:
        """(normalised text, label index) per row; a bad label names its row."""
        return [
            (
                self.normal(r[self.text]),
                label_index(r[self.label], label_names, path, i + 2, self.label),
            )
            for i, r in enumerate(rows)
        ]

    def read(self, path: Path, label_names: list[str], key: str) -> Labelled:
        rows = read_csv_columns(path, [self.text, self.label], key)
        return self.labelled(rows, label_names, path)

    def unlabelled(self, path: Path) -> tuple[list[str], list[str]]:
        """`predict`'s input: normalised texts, and the texts as typed to name the rows."""
        rows = read_csv_columns(Path(path), [self.text], "--input")
        return [self.normal(r[self.text]) for r in rows], [r[self.text] for r in rows]


@dataclass
class _Encoding:
    """How texts become model inputs: the encoder, the batch collate, facts for data.json."""

    encode: Callable[[str], Any]
    collate: Callable[[Sequence[Any]], Any]
    extra: dict[str, Any]


def _encoding(
    tokenizer: str,
    train_texts: list[str],
    options: tuple[bool, int, int, int | None],
    model_name: str | None,
) -> _Encoding:
    """Training's encoding: the vocabulary is fitted on `train_texts`."""
    lowercase, max_length, min_freq, max_vocab_size = options
    if tokenizer == "model":
        return _Encoding(*_model_encoder(model_name, max_length))
    encode, vocabulary, vocab_size = build_encoder(
        tokenizer, train_texts, lowercase, max_length, min_freq, max_vocab_size
    )
    extra = {"vocab_size": vocab_size, "fitted": {"vocabulary": vocabulary}}
    return _Encoding(encode, pad_collate, extra)


def _has_text_facts(fitted: dict[str, Any], tokenizer: str) -> bool:
    """`data.json` holds the vocabulary (or the tokenizer is the model's, kept beside it)."""
    if not fitted.get("label_names"):
        return False
    if tokenizer == "model" or tokenizer.startswith("hf:"):
        return True
    return bool(fitted.get("fitted", {}).get("vocabulary"))


def _fitted_encoding(
    tokenizer: str,
    vocabulary: list[str],
    lowercase: bool,
    max_length: int,
    model_name: str | None,
) -> _Encoding:
    """A finished run's encoding: its vocabulary, or its `hf/` model's tokenizer."""
    if tokenizer == "model":
        return _Encoding(*_model_encoder(model_name, max_length))
    if tokenizer.startswith("hf:"):
        encode, _, vocab_size = _hf_encoder(tokenizer.removeprefix("hf:"), max_length)
        return _Encoding(encode, pad_collate, {"vocab_size": vocab_size})
    encode = vocabulary_encoder(_splitter(tokenizer), vocabulary, lowercase, max_length)
    extra = {"vocab_size": len(vocabulary), "fitted": {"vocabulary": vocabulary}}
    return _Encoding(encode, pad_collate, extra)


def _text_bundle(
    splits: dict[str, Labelled], label_names: list[str], encoding: _Encoding, columns: _TextColumns
) -> DataBundle:
    """Token sequences of each split, and `predict`'s reader of new texts."""

    def dataset(split: str) -> TokenSequences:
        items = splits.get(split, [])
        return TokenSequences([encoding.encode(t) for t, _ in items], [y for _, y in items])

    def load_unlabeled(path: Path) -> tuple[Dataset[Any], list[str]]:
        texts, names = columns.unlabelled(path)  # the text as typed names its row
        return TokenSequences([encoding.encode(t) for t in texts], None), names

    train = dataset("train")
    return DataBundle(
        train=train,
        val=dataset("val"),
        test=dataset("test") if splits.get("test") else None,
        num_classes=len(label_names),
        label_names=label_names,
        train_targets=torch.tensor(train.targets, dtype=torch.long) if train.targets else None,
        collate_fn=encoding.collate,
        load_unlabeled=load_unlabeled,
        extra=encoding.extra,
        example=(encoding.encode("example"),),
    )


class TokenSequences(Dataset[Any]):
    """Token-id tensors with labels (or without, for `predict`)."""

    def __init__(self, sequences: Sequence[Any], targets: list[int] | None) -> None:
        self.sequences, self.targets = sequences, targets

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> Any:
        if self.targets is None:
            return (self.sequences[index],)
        return self.sequences[index], self.targets[index]


def pad_collate(samples: Sequence[Any]) -> tuple[Any, ...]:
    """Pad variable-length token sequences to the batch's longest, with lengths and mask.

    Example:
        >>> inputs, targets = pad_collate([(torch.tensor([5, 6, 7]), 0), (torch.tensor([8]), 1)])
        >>> inputs["tokens"].tolist(), inputs["lengths"].tolist()
        ([[5, 6, 7], [8, 0, 0]], [3, 1])
    """
    sequences = [sample[0] for sample in samples]
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)  # (B,)
    tokens = torch.full((len(sequences), int(lengths.max())), PAD, dtype=torch.long)  # (B, T)
    for row, sequence in enumerate(sequences):
        tokens[row, : len(sequence)] = sequence
    mask = torch.arange(tokens.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    inputs = {"tokens": tokens, "lengths": lengths, "mask": mask}
    if len(samples[0]) == 1:
        return (inputs,)
    return inputs, torch.tensor([sample[1] for sample in samples], dtype=torch.long)


def build_encoder(
    tokenizer: str,
    train_texts: list[str],
    lowercase: bool,
    max_length: int,
    min_freq: int,
    max_vocab_size: int | None,
) -> tuple[Callable[[str], torch.Tensor], list[str], int]:
    """text -> token ids (at least one id, at most `max_length`), the vocabulary and its size."""
    if tokenizer.startswith("hf:"):
        return _hf_encoder(tokenizer.removeprefix("hf:"), max_length)
    split = _splitter(tokenizer)

    def tokens(text: str) -> list[str]:
        return split(text.lower() if lowercase else text)[:max_length]

    counts = Counter(token for text in train_texts for token in tokens(text))
    kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
    vocabulary = ["<pad>", "<unk>", *kept[:max_vocab_size]]
    return vocabulary_encoder(split, vocabulary, lowercase, max_length), vocabulary, len(vocabulary)


def vocabulary_encoder(
    split: Callable[[str], list[str]], vocabulary: list[str], lowercase: bool, max_length: int
) -> Callable[[str], torch.Tensor]:
    """text -> ids of its tokens in `vocabulary` (unknown ones `<unk>`), at least one id."""
    ids = {token: index for index, token in enumerate(vocabulary)}

    def encode(text: str) -> torch.Tensor:
        tokens = split(text.lower() if lowercase else text)[:max_length]
        encoded = [ids.get(token, UNK) for token in tokens] or [UNK]
        return torch.tensor(encoded, dtype=torch.long)

    return encode


def _normalizer(form: Literal["NFC", "NFKC", "NFD", "NFKD"] | None) -> Callable[[str], str]:
    if form is None:
        return lambda text: text
    return lambda text: unicodedata.normalize(form, text)


def _splitter(tokenizer: str) -> Callable[[str], list[str]]:
    if tokenizer == "whitespace":
        return lambda text: _WORD.findall(text)
    if tokenizer == "characters":
        return list
    raise ConfigError(
        f"data.tokenizer = '{tokenizer}': expected whitespace, characters or hf:<name or folder>"
    )


def _hf_encoder(name: str, max_length: int) -> tuple[Callable[[str], torch.Tensor], list[str], int]:
    from brickwork.data.hf_tokenizer import load_hf_tokenizer, normalize_text

    hf = load_hf_tokenizer(name, f"data.tokenizer = 'hf:{name}'")

    def encode(text: str) -> torch.Tensor:
        ids = hf(normalize_text(text), truncation=True, max_length=max_length)["input_ids"]
        return torch.tensor(ids or [UNK], dtype=torch.long)

    return encode, [], len(hf)


def _model_encoder(
    model_name: str | None, max_length: int
) -> tuple[Callable[[str], Any], Callable[[Sequence[Any]], Any], dict[str, Any]]:
    """The `hf/` model's own tokenizer: an encoder, a padding collate, and the tokenizer."""
    from brickwork.data.hf_tokenizer import (
        HFEncoder,
        HFPadCollate,
        check_max_length,
        load_hf_tokenizer,
    )

    if model_name is None or not model_name.startswith("hf/"):
        raise ConfigError(
            f"data.tokenizer = 'model' takes the tokenizer of an hf/ model, and model.name is "
            f"'{model_name}'; set model.name: hf/<folder or hub id>, or data.tokenizer: whitespace"
        )
    from brickwork.models.huggingface import offline_hint

    source = model_name.removeprefix("hf/")
    key = f"data.tokenizer = 'model' (model.name = {model_name})"
    hint = "" if Path(source).is_dir() else offline_hint(source)
    tokenizer = load_hf_tokenizer(source, key, hint)
    check_max_length(tokenizer, source, max_length)
    return HFEncoder(tokenizer, max_length), HFPadCollate(tokenizer), {"tokenizer": tokenizer}
