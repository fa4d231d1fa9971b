"""Finding one's way around a model: the user's module inside wrappers, and its classifier head.

Shared by checkpointing (weights saved without `module.`/`_orig_mod.` prefixes),
pretrained loading (the head is not loaded when the class count differs) and
fine-tuning (`freeze: backbone` is everything but the head).
"""

from __future__ import annotations

from torch import nn

from brickwork.errors import ConfigError


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside DDP/DataParallel or torch.compile wrappers.

    Checkpoints store the unwrapped weights, so they carry no `module.` or
    `_orig_mod.` prefixes and load the same in one process or many.
    """
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model


_HEAD_ATTRIBUTES = ("head", "fc", "classifier", "heads")


def find_head(model: nn.Module) -> list[str]:
    """Module names of the classifier head: the timm way, Hugging Face's, then common names.

    Example:
        >>> find_head(torchvision.models.resnet18())
        ['fc']
    """
    model = unwrap_model(model)
    names = {id(module): name for name, module in model.named_modules() if name}
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        if isinstance(head, nn.Module) and id(head) in names and _has_params(head):
            return [names[id(head)]]
    hf_head = _transformer_head(model)
    if hf_head:
        return hf_head
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, dict) and cfg.get("classifier"):
        wanted = [cfg["classifier"]] if isinstance(cfg["classifier"], str) else cfg["classifier"]
        found = [name for name in wanted if name in names.values()]
        if found:
            return found
    modules = dict(model.named_modules())
    for attribute in _HEAD_ATTRIBUTES:
        if attribute in modules and _has_params(modules[attribute]):
            return [attribute]
    linears = [name for name, module in modules.items() if isinstance(module, nn.Linear)]
    if linears:
        return [linears[-1]]
    raise ConfigError(
        f"finetune: cannot find the classifier head of {type(model).__name__}; "
        "name the modules to freeze instead, e.g. finetune.freeze: ['features.*']"
    )


def _transformer_head(model: nn.Module) -> list[str]:
    """A Hugging Face model's head: its children outside the base model (`bert`, ...).

    That is `classifier` for BERT, `pre_classifier` and `classifier` for DistilBERT,
    `score` for GPT-2 and Llama; under PEFT the names carry its `base_model.model.` prefix.
    """
    inner, prefix = model, ""
    get_base_model = getattr(model, "get_base_model", None)
    if callable(get_base_model):  # PEFT
        inner = get_base_model()
        names = {id(m): n for n, m in model.named_modules()}
        prefix = f"{names[id(inner)]}." if names.get(id(inner)) else ""
    base = getattr(inner, "base_model_prefix", None)
    if not isinstance(base, str) or not isinstance(getattr(inner, base, None), nn.Module):
        return []
    return [
        f"{prefix}{name}"
        for name, child in inner.named_children()
        if name != base and _has_params(child)
    ]


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())
