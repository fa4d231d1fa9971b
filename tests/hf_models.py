"""A tiny Hugging Face text model built offline, for tests and the hf_text example.

The tokenizer is a WordPiece vocabulary trained with the `tokenizers` library on text
that ships with Python and its packages: the docstrings of standard-library modules,
and Korean words from the packages installed here (Pygments' Gherkin keywords, rich's
demo sentence). The model is a BERT with hidden size 32 and 2 layers. Both are saved
with `save_pretrained`, exactly as a user's downloaded model folder would be.
"""

from __future__ import annotations

import csv
import importlib
import inspect
import re
from pathlib import Path

# Modules whose docstrings make the corpus; their names are the labels of the task.
TOPICS = ("json", "re", "pathlib", "email", "socket", "argparse")
_HANGUL = re.compile(r"[\uac00-\ud7a3]+(?:[ ,]+[\uac00-\ud7a3]+)*")


def korean_text() -> list[str]:
    """Runs of Korean words found in installed packages' sources (NFC, as written)."""
    sources = []
    for name in ("pygments.lexers.testing", "rich.__main__"):
        try:
            sources.append(inspect.getsource(importlib.import_module(name)))
        except (ImportError, OSError):
            continue
    return sorted({match for text in sources for match in _HANGUL.findall(text)})


def sentences(module_name: str) -> list[str]:
    """The sentences of a standard-library module's docstrings (module, classes, functions)."""
    module = importlib.import_module(module_name)
    docs = [module.__doc__ or ""]
    for _, member in inspect.getmembers(module):
        if (inspect.isfunction(member) or inspect.isclass(member)) and getattr(
            member, "__module__", ""
        ).startswith(module_name):
            docs.append(inspect.getdoc(member) or "")
    text = " ".join(" ".join(doc.split()) for doc in docs)
    found = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text)]
    return [s for s in found if 4 <= len(s.split()) <= 40]


def corpus() -> list[str]:
    """Unlabelled text: every topic's sentences plus the Korean words."""
    return [s for topic in TOPICS for s in sentences(topic)] + korean_text()


def build_tokenizer(folder: Path, texts: list[str], vocab_size: int = 600) -> object:
    """A BERT-style WordPiece tokenizer trained on `texts`, saved into `folder`.

    The normaliser only lowercases (no NFC of its own), so brickwork's NFC step is
    what makes decomposed Korean match the vocabulary.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
    )
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    fast.save_pretrained(folder)
    return fast


def build_tiny_bert(
    folder: Path,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    seed: int = 0,
    masked_lm: bool = False,
) -> Path:
    """Tokenizer and BERT (random weights, seeded) saved into `folder`; returns `folder`."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder, corpus())
    config = BertConfig(
        vocab_size=len(tokenizer),  # type: ignore[arg-type]
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    model = (BertForMaskedLM if masked_lm else BertForSequenceClassification)(config)
    model.save_pretrained(folder)
    return folder


def write_topic_csv(path: Path, per_topic: int = 12, extra_rows: int = 0) -> Path:
    """`text,label` rows: docstring sentences labelled with the module they come from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for topic in TOPICS[:3]:
            for sentence in sentences(topic)[: per_topic + extra_rows]:
                writer.writerow([sentence, topic])
    return path


def save_tiny_vit(folder: Path, num_channels: int) -> Path:
    """A one-layer ViT for 8x8 images (two 4x4 patches a side), saved with save_pretrained."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=num_channels,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    ViTForImageClassification(config).save_pretrained(folder)
    return folder
