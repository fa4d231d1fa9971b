"""Build a registered model with facts from the data, then initialise it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from brickwork import registry
from brickwork.errors import ConfigError

if TYPE_CHECKING:
    from brickwork.config import LoraConfig, ModelConfig
    from brickwork.data import DataBundle


def build_model(model: ModelConfig, data: DataBundle, lora: LoraConfig | None = None) -> nn.Module:
    """Instantiate `model.name` with its kwargs plus the data facts it asks for.

    `model.pretrained: true` is handed to factories that take `pretrained` (timm/,
    torchvision/, hf/); a path is loaded here, after `init`, into any model. `lora`
    (`finetune.lora`) wraps the result with adapters last, so training, resume, evaluate
    and export all see the same module and the same checkpoint keys.
    """
    facts = {
        "num_classes": data.num_classes,
        "label_names": data.label_names,
        "input_shape": tuple(data.input_shape) if data.input_shape else None,
        "in_channels": data.input_shape[0] if data.input_shape else None,
        "vocab_size": data.extra.get("vocab_size"),
    }
    kwargs = model.kwargs
    if model.pretrained is True:
        accepted, _ = registry.accepted_kwargs(registry.get("model", model.name))
        if "pretrained" not in accepted:
            raise ConfigError(
                f"model.pretrained = true: model '{model.name}' has no hub weights; "
                "set model.pretrained to a local .safetensors/.pth file or checkpoint folder"
            )
        kwargs["pretrained"] = True
    module = registry.build("model", model.name, kwargs, provided=facts)
    if not isinstance(module, nn.Module):
        raise TypeError(f"model '{model.name}' returned {type(module).__name__}, not an nn.Module")
    if model.init is not None:
        initialize_weights(module, model.init)
    if isinstance(model.pretrained, str):
        from brickwork.models.pretrained import load_pretrained

        load_pretrained(module, model.pretrained)
    if lora is not None:
        from brickwork.models.huggingface import apply_lora

        module = apply_lora(module, lora)
    return module


def save_model_files(model: nn.Module, data: DataBundle, run_dir: Path) -> None:
    """Files besides the weights that rebuild the model from the run folder alone.

    A Hugging Face model's `config.json` and tokenizer (or image processor) go to
    `RUN/hf_model/`; other models are rebuilt from `config.yaml` and need none.
    """
    from brickwork.models.huggingface import RUN_MODEL_FOLDER, preprocessor_of, save_run_model_files

    save_run_model_files(model, preprocessor_of(data.extra), run_dir / RUN_MODEL_FOLDER)


def initialize_weights(module: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise every conv and linear layer with `scheme`, biases at zero.

    Uses `module.apply`, which visits each submodule once; normalisation layers
    keep PyTorch's defaults (weight 1, bias 0).
    """
    schemes: dict[str, Callable[..., object]] = {
        "kaiming": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
        "xavier": nn.init.xavier_uniform_,
        "orthogonal": nn.init.orthogonal_,
    }
    if scheme not in schemes:
        raise ConfigError(f"model.init = '{scheme}': expected one of {', '.join(schemes)}")
    init_fn = schemes[scheme]

    def visit(layer: nn.Module) -> None:
        if isinstance(layer, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            init_fn(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    module.apply(visit)
    return module
