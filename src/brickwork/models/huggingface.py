"""`hf/<folder or hub id>`: a Hugging Face Transformer with a classification head, and LoRA.

    model:
      name: hf/models/tiny-bert     # a folder saved with save_pretrained, or a hub id
      pretrained: true              # its weights; false: the same architecture, fresh weights
    finetune:
      lora: {r: 8, alpha: 16, dropout: 0.05, target_modules: [query, value]}

Text data build `AutoModelForSequenceClassification`, image data (an `input_shape`)
`AutoModelForImageClassification`, with `num_labels`, `id2label` and `label2id` from the
data. Loading goes through transformers' own `from_pretrained`; a head whose size
differs (or that the folder lacks) starts freshly initialised and is reported as such.
Offline, a hub id that is not in the local cache fails in one line saying how to use a
folder instead. transformers and peft are imported only when an `hf/` model is built
(`pip install 'brickwork[hf]'`).

A run keeps what rebuilding the model needs besides its weights (`config.json` and the
tokenizer or image processor) in `RUN/hf_model/`, so `predict`, `evaluate` and `export`
work after the original folder is gone (`use_run_model_files`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from brickwork.errors import ConfigError
from brickwork.registry import RegistryError, register_prefix, suggest

if TYPE_CHECKING:
    from brickwork.config import LoraConfig, ModelConfig

HF_PREFIX = "hf/"
RUN_MODEL_FOLDER = "hf_model"
# What a dataset hands over (`DataBundle.extra`) that is saved with an hf/ model.
PREPROCESSOR_KEYS = ("tokenizer", "image_processor")
log = logging.getLogger("brickwork")


def build_hf_model(
    source: str,
    num_classes: int | None = None,
    label_names: list[str] | None = None,
    image: bool = False,
    pretrained: bool = False,
    input_shape: tuple[int, ...] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A classifier from a local folder or hub id: its weights if `pretrained`, else fresh.

    Extra `kwargs` override the model's config (`hidden_dropout_prob: 0.2`, ...). An image
    model whose config fixes the input (a ViT's `image_size`, `num_channels`) is checked
    against the data's `input_shape` here, not deep inside the first forward pass.

    Example:
        >>> model = build_hf_model("models/tiny-bert", num_classes=2, pretrained=True)
    """
    import torch
    import transformers

    auto = (
        transformers.AutoModelForImageClassification
        if image
        else transformers.AutoModelForSequenceClassification
    )
    labels = label_names or [str(i) for i in range(num_classes or 2)]
    with quiet_transformers(), _as_config_error(source, image):
        config = transformers.AutoConfig.from_pretrained(
            source,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            **kwargs,
        )
        if image and input_shape is not None:
            _check_image_input(config, input_shape, source)
        if not pretrained:
            return auto.from_config(config, dtype=torch.float32)
        model, info = auto.from_pretrained(
            source,
            config=config,
            dtype=torch.float32,  # train in fp32 whatever the folder was saved in
            ignore_mismatched_sizes=True,  # a new class count: the head starts fresh
            output_loading_info=True,
        )
    _log_loading(model, info, source)
    return model


def apply_lora(model: nn.Module, lora: LoraConfig) -> nn.Module:
    """Wrap `model` with PEFT LoRA adapters; only the adapters and the head stay trainable.

    The head is found as `freeze: backbone` finds it and trained in full (PEFT's
    `modules_to_save`), so a new class count learns its classifier.
    """
    try:
        import peft
    except ImportError:
        raise ConfigError(
            "finetune.lora needs the peft package: pip install 'brickwork[hf]'"
        ) from None
    from brickwork.models.anatomy import find_head

    is_hf = hasattr(model, "base_model_prefix")
    settings = peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        modules_to_save=find_head(model),
        task_type=peft.TaskType.SEQ_CLS if is_hf and _is_text(model) else None,
    )
    try:
        with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
            return peft.get_peft_model(model, settings)
    except ValueError as error:
        linears = sorted(
            {n.rpartition(".")[2] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        )
        wanted = ", ".join(lora.target_modules)
        hint = suggest(lora.target_modules[0], linears)
        raise ConfigError(
            f"finetune.lora.target_modules = [{wanted}]: not layers of {type(model).__name__} "
            f"({str(error).splitlines()[0][:120]}){hint}; its linear layers: {', '.join(linears)}"
        ) from None


def merge_lora(model: nn.Module) -> nn.Module:
    """A copy of `model` with LoRA adapters merged into the weights (the model if none)."""
    import copy

    if not callable(getattr(model, "merge_and_unload", None)):
        return model
    merged: nn.Module = copy.deepcopy(model).merge_and_unload()  # type: ignore[operator]
    return merged


def transformer_of(model: nn.Module) -> tuple[str, nn.Module] | None:
    """(name prefix, the Hugging Face model) inside `model`, also under PEFT; else None."""
    get_base_model = getattr(model, "get_base_model", None)
    if callable(get_base_model):
        inner = get_base_model()
        names = {id(m): n for n, m in model.named_modules()}
        prefix = names.get(id(inner), "")
        return (f"{prefix}." if prefix else ""), inner
    if isinstance(getattr(model, "base_model_prefix", None), str) and hasattr(model, "config"):
        return "", model
    return None


_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)(?:\.|$)")


def encoder_layer_index(name: str) -> int | None:
    """The index of the Transformer layer a module or parameter name lies in, or None.

    Example:
        >>> encoder_layer_index("bert.encoder.layer.1.attention.self.query.weight")
        1
    """
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def describe_adapters(model: nn.Module) -> str | None:
    """`LoRA adapters: r=8 on query, value in 4 layers, 2,048 parameters (trainable)`, or None."""
    config = getattr(model, "peft_config", {}).get("default")
    adapted = [n for n, m in model.named_modules() if hasattr(m, "lora_A") and m.lora_A]
    if config is None or not adapted:
        return None
    params = [p for n, p in model.named_parameters() if ".lora_" in n]
    count = sum(p.numel() for p in params)
    status = "trainable" if all(p.requires_grad for p in params) else "partly frozen"
    targets = ", ".join(sorted({n.rpartition(".")[2] for n in adapted}))
    return (
        f"LoRA adapters: r={config.r}, alpha={config.lora_alpha:g} on {targets} in "
        f"{len(adapted)} layers, {count:,} parameters ({status})"
    )


def preprocessor_of(extra: dict[str, Any]) -> Any:
    """The tokenizer or image processor a dataset built from the model's folder, or None."""
    return next((extra[key] for key in PREPROCESSOR_KEYS if extra.get(key) is not None), None)


def save_run_model_files(model: nn.Module, preprocessor: Any, folder: Path) -> None:
    """Write the model's `config.json` (and the tokenizer or image processor) into `folder`, once.

    Written to a temporary folder first and renamed, so a crash leaves no half folder.
    """
    found = transformer_of(model)
    if found is None or folder.exists():
        return
    temporary = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        found[1].config.save_pretrained(temporary)  # type: ignore[operator, union-attr]
        if preprocessor is not None:
            preprocessor.save_pretrained(temporary)
        os.replace(temporary, folder)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def use_run_model_files(model: ModelConfig, run_dir: Path) -> None:
    """Point an `hf/` model at the run's own copy of its config and tokenizer, if it has one.

    The checkpoint holds every weight, so the original folder or hub id is not needed.
    """
    copy = Path(run_dir) / RUN_MODEL_FOLDER
    if model.name.startswith(HF_PREFIX) and (copy / "config.json").is_file():
        model.name = f"{HF_PREFIX}{copy}"


def load_run_tokenizer(run_dir: Path) -> Any:
    """The tokenizer saved in `RUN/hf_model/`, or None."""
    copy = Path(run_dir) / RUN_MODEL_FOLDER
    if not (copy / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(copy))


def offline_hint(source: str, image: bool = False) -> str:
    """The one-line fix for a hub id that cannot be fetched."""
    local = f"models/{source.rpartition('/')[2]}"
    task, preprocessor = (
        ("ImageClassification", "AutoImageProcessor")
        if image
        else ("SequenceClassification", "AutoTokenizer")
    )
    return (
        f"offline? on a machine with network run AutoModelFor{task}"
        f".from_pretrained('{source}').save_pretrained('{local}') (and the same with "
        f"{preprocessor}), copy the folder here and set model.name: hf/{local}"
    )


@contextlib.contextmanager
def _as_config_error(source: str, image: bool = False) -> Iterator[None]:
    try:
        yield
    except ConfigError:
        raise  # already one line naming the key and the fix
    except (OSError, ValueError, KeyError) as error:
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        reason = reason or type(error).__name__
        if Path(source).expanduser().is_dir():
            raise ConfigError(
                f"model.name = 'hf/{source}': cannot load the folder ({reason}); "
                "it needs the config.json (and weights) written by save_pretrained"
            ) from None
        raise ConfigError(
            f"model.name = 'hf/{source}': no such folder, and not loadable as a hub id "
            f"({reason}); {offline_hint(source, image)}"
        ) from None


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers prints progress bars and its own load table; brickwork reports in one log."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars_off = hf_logging.is_progress_bar_enabled() is False
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if not bars_off:
            hf_logging.enable_progress_bar()


def _log_loading(model: nn.Module, info: dict[str, Any], source: str) -> None:
    """Loaded, re-initialised (the head), missing and unexpected keys, as for timm models.

    All of it reaches the console (not only `train.log`): which weights were not loaded
    is what a user checks first when a fine-tune goes wrong.
    """
    from brickwork.models.anatomy import find_head
    from brickwork.models.pretrained import shorten_keys

    shown = {"console": True}
    head = find_head(model)
    in_head = lambda key: any(key == h or key.startswith(h + ".") for h in head)  # noqa: E731
    mismatched = sorted(str(entry[0]) for entry in info.get("mismatched_keys", ()))
    missing = sorted(str(key) for key in info.get("missing_keys", ()))
    fresh = [k for k in [*mismatched, *missing] if in_head(k)]
    count = sum(1 for _ in model.state_dict()) - len(mismatched) - len(missing)
    log.info("pretrained: loaded %d tensors from %s", count, source, extra=shown)
    if fresh:
        log.info(
            "pretrained: new classifier head, freshly initialised (%s)",
            shorten_keys(fresh),
            extra=shown,
        )
    others = [k for k in [*mismatched, *missing] if not in_head(k)]
    if others:
        log.warning(
            "pretrained: %d tensors outside the head are not in %s (or differ in shape) and were "
            "initialised freshly: %s",
            len(others),
            source,
            shorten_keys(others),
        )
    unexpected = sorted(str(key) for key in info.get("unexpected_keys", ()))
    if unexpected:
        log.info(
            "pretrained: %d tensors in %s are not used by this model (e.g. a pretraining head): %s",
            len(unexpected),
            source,
            shorten_keys(unexpected),
            extra=shown,
        )


# Vision Transformers whose patch embeddings refuse any other input size than the config's
# (ConvNeXt, Swin, ResNet, ... keep an `image_size` in their config but take any size).
_FIXED_SIZE = {"vit", "deit", "vit_msn"}


def _check_image_input(config: Any, input_shape: tuple[int, ...], source: str) -> None:
    """The data's (C, H, W) against the channels and size the model's config fixes."""
    channels, size = getattr(config, "num_channels", None), getattr(config, "image_size", None)
    if getattr(config, "model_type", None) not in _FIXED_SIZE:
        size = None
    if isinstance(channels, int) and channels != input_shape[0]:
        mode = "RGB" if channels == 3 else "L"
        raise ConfigError(
            f"model.name = 'hf/{source}': the model takes {channels}-channel images and the data "
            f"give {input_shape[0]}; set data.mode: {mode}"
        )
    wanted = [size, size] if isinstance(size, int) else list(size or [])
    if len(wanted) == 2 and wanted != list(input_shape[1:]):
        raise ConfigError(
            f"model.name = 'hf/{source}': the model takes {wanted[0]}x{wanted[1]} images (its "
            f"config's image_size) and the data give {input_shape[1]}x{input_shape[2]}; set "
            f"data.image_size: {wanted[0] if wanted[0] == wanted[1] else wanted}"
        )


def _is_text(model: nn.Module) -> bool:
    return getattr(model, "main_input_name", "input_ids") == "input_ids"


def _resolve(kind: str, name: str) -> Callable[..., Any]:
    """The registry factory for `hf/<source>`; touches no file, so a config checks fast."""
    if kind != "model":
        raise RegistryError(f"'{name}': the hf/ prefix names models only")
    source = name.removeprefix(HF_PREFIX)
    if not source:
        raise RegistryError("'hf/': name a folder or hub id after it, e.g. hf/models/tiny-bert")

    def factory(
        num_classes: int | None = None,
        label_names: list[str] | None = None,
        input_shape: tuple[int, ...] | None = None,
        pretrained: bool = False,
        **kwargs: Any,
    ) -> nn.Module:
        image = input_shape is not None and len(input_shape) == 3
        return build_hf_model(
            source, num_classes, label_names, image, pretrained, input_shape, **kwargs
        )

    return factory


register_prefix(HF_PREFIX, _resolve)
