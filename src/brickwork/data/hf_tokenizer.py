"""A Hugging Face tokenizer for `text_csv`: NFC first, truncation, dynamic padding.

`data.tokenizer: model` takes the tokenizer from the `hf/` model's own folder (one
source of truth for vocabulary and special tokens); `hf:<folder or hub id>` names one
directly. Texts are NFC-normalised before tokenising: the same Korean (or accented)
text typed on another system often arrives decomposed (NFD), and a vocabulary learnt
on composed syllables would see only unknown pieces in it.

With `tokenizer: model` each sample keeps the tokenizer's own fields (`input_ids`,
`attention_mask`, `token_type_ids` where the model has them) and `HFPadCollate` pads
each batch to its longest sequence, not to `max_length`; the batch reaches the model
as keyword arguments (`brickwork.batch.ModelKwargs`).
"""

from __future__ import annotations

import os
import shutil
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from brickwork.batch import ModelKwargs
from brickwork.errors import ConfigError

# `data.tokenizer: hf:<name or folder>` is copied here, so the run folder alone predicts.
RUN_TOKENIZER_FOLDER = "hf_tokenizer"
_NO_LIMIT = 1_000_000  # transformers' "no limit" is a huge sentinel such as 1e30


def load_hf_tokenizer(source: str, key: str, hint: str = "") -> Any:
    """`AutoTokenizer.from_pretrained(source)`, with one-line errors naming `key`.

    `hint` replaces the default fix (a folder saved with `tokenizer.save_pretrained`).
    """
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ConfigError(
            f"{key} needs the transformers package: pip install 'brickwork[hf]', "
            "or use data.tokenizer: whitespace"
        ) from None
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        raise ConfigError(
            f"{key}: cannot load a tokenizer from '{source}' ({reason or type(error).__name__}); "
            f"{hint or 'offline, give a folder saved with tokenizer.save_pretrained'}"
        ) from None


def check_max_length(tokenizer: Any, source: str, max_length: int) -> None:
    """A `max_length` beyond the model's positions would fail inside the first forward."""
    from transformers import AutoConfig

    limits = [int(tokenizer.model_max_length)] if tokenizer.model_max_length < _NO_LIMIT else []
    try:
        positions = getattr(AutoConfig.from_pretrained(source), "max_position_embeddings", None)
    except (OSError, ValueError):
        positions = None
    if isinstance(positions, int):
        limits.append(positions)
    if limits and max_length > min(limits):
        raise ConfigError(
            f"data.max_length = {max_length}: the model '{source}' takes at most {min(limits)} "
            f"tokens; set data.max_length: {min(limits)} or less"
        )


def normalize_text(text: str) -> str:
    """NFC: composed characters, as most vocabularies were learnt on."""
    return unicodedata.normalize("NFC", text)


class HFEncoder:
    """text -> the tokenizer's fields as lists, truncated to `max_length`."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, text: str) -> dict[str, list[int]]:
        encoded = self.tokenizer(normalize_text(text), truncation=True, max_length=self.max_length)
        return {name: list(values) for name, values in encoded.items()}


class HFPadCollate:
    """Pad a batch to its longest sequence with the tokenizer's pad token and masks.

    Example:
        >>> inputs, targets = HFPadCollate(tokenizer)([(encoder("a b"), 0), (encoder("a"), 1)])
        >>> inputs["input_ids"].shape
        torch.Size([2, 4])
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, samples: Sequence[Any]) -> tuple[Any, ...]:
        features = [sample[0] for sample in samples]
        padded = self.tokenizer.pad(features, padding="longest", return_tensors="pt")
        inputs = ModelKwargs({name: padded[name] for name in padded})  # (B, T) each
        if len(samples[0]) == 1:
            return (inputs,)
        return inputs, torch.tensor([sample[1] for sample in samples], dtype=torch.long)


def save_run_tokenizer(setting: Any, run_dir: Path) -> None:
    """`data.tokenizer: hf:<name or folder>`: a copy in `RUN/hf_tokenizer/`, written once.

    predict and export then need neither the folder nor the hub: a run folder copied to
    another machine still tokenises. Written to a temporary folder and renamed.
    """
    folder = Path(run_dir) / RUN_TOKENIZER_FOLDER
    if not (isinstance(setting, str) and setting.startswith("hf:")) or folder.exists():
        return
    tokenizer = load_hf_tokenizer(setting.removeprefix("hf:"), f"data.tokenizer = '{setting}'")
    temporary = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    try:
        tokenizer.save_pretrained(temporary)
        os.replace(temporary, folder)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def use_run_tokenizer(data: Any, run_dir: Path) -> None:
    """Point an `hf:` tokenizer at the run's own copy (`RUN/hf_tokenizer/`), if it has one.

    The twin of `models.huggingface.use_run_model_files`, for `data.tokenizer`.
    """
    setting, copy = data.kwargs.get("tokenizer"), Path(run_dir) / RUN_TOKENIZER_FOLDER
    kept = (copy / "tokenizer_config.json").is_file()
    if kept and isinstance(setting, str) and setting.startswith("hf:"):
        # a factory argument: an extra field of the data config, not a typed attribute
        setattr(data, "tokenizer", f"hf:{copy.resolve()}")  # noqa: B010
