"""`timm/<name>` and `torchvision/<name>`: any timm model or torchvision classifier by name.

    model:
      name: timm/resnet18       # or torchvision/resnet18
      pretrained: true          # hub weights through timm's / torchvision's own mechanism

`num_classes` (and, for timm, `in_chans`) come from the data; the classifier head is
replaced when the class count differs from the pretrained one. Other keys under
`model:` go to `timm.create_model` or `torchvision.models.get_model` unchanged
(`drop_rate: 0.2`, `drop_path_rate: 0.1`, ...). Without network access, `pretrained:
true` fails with one line that says how to use a local file instead
(`pretrained: PATH`, loaded by `brickwork.models.pretrained`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from brickwork.errors import ConfigError
from brickwork.models.pretrained import adapt_first_conv
from brickwork.registry import RegistryError, register_prefix, suggest

TIMM_PREFIX = "timm/"
TORCHVISION_PREFIX = "torchvision/"


def build_timm_model(
    name: str,
    num_classes: int | None = None,
    in_channels: int | None = None,
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """`timm.create_model(name, ...)` with the data's class and channel counts.

    Example:
        >>> model = build_timm_model("resnet18", num_classes=3, in_channels=1)
    """
    import timm

    if num_classes is not None:
        kwargs.setdefault("num_classes", num_classes)
    if in_channels is not None:
        kwargs.setdefault("in_chans", in_channels)
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as error:  # hub and network errors differ by version; all mean the same
        if not pretrained:
            raise
        raise _offline_error(f"timm/{name}", error) from None


def build_torchvision_model(
    name: str,
    num_classes: int | None = None,
    in_channels: int | None = None,
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """`torchvision.models.get_model(name, ...)`; with weights, the head is swapped after.

    torchvision's pretrained weights only load into the original 1000-class head, so a
    different `num_classes` builds the original and replaces its last linear layer.
    Data with other than 3 channels (greyscale) get the first convolution adapted to
    them: hub weights summed over RGB (repeated and scaled for more), as timm does.
    """
    from torchvision import models

    if not pretrained:
        if num_classes is not None:
            kwargs.setdefault("num_classes", num_classes)
        model = models.get_model(name, weights=None, **kwargs)
    else:
        try:
            model = models.get_model(name, weights="DEFAULT", **kwargs)
        except Exception as error:  # urllib/OS errors when offline
            raise _offline_error(f"torchvision/{name}", error) from None
        if num_classes is not None:
            replace_head(model, num_classes)
    if in_channels not in (None, 3):
        adapt_first_conv(model, int(in_channels), f"torchvision/{name}", pretrained)
    return model


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the classifier's last linear layer for a fresh one with `num_classes` outputs."""
    from brickwork.models.anatomy import find_head

    head_name = find_head(model)[0]
    head = model.get_submodule(head_name)
    linears = [n for n, m in head.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"cannot replace the head '{head_name}': it has no linear layer")
    last = head.get_submodule(linears[-1]) if linears[-1] else head
    if isinstance(last, nn.Linear) and last.out_features != num_classes:
        fresh = nn.Linear(last.in_features, num_classes, bias=last.bias is not None)
        full = f"{head_name}.{linears[-1]}" if linears[-1] else head_name
        parent_name, _, child = full.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, fresh)
    return model


def _offline_error(model: str, error: Exception) -> ConfigError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ConfigError(
        f"model.pretrained = true: cannot fetch the weights of {model} ({reason[:160]}); "
        "offline? download them elsewhere and set model.pretrained: /path/to/weights.safetensors "
        "(or .pth)"
    )


def _resolve(kind: str, name: str) -> Callable[..., Any]:
    if kind != "model":
        raise RegistryError(f"'{name}': the timm/ and torchvision/ prefixes name models only")
    if name.startswith(TIMM_PREFIX):
        return _timm_factory(name.removeprefix(TIMM_PREFIX))
    return _torchvision_factory(name.removeprefix(TORCHVISION_PREFIX))


def _timm_factory(model_name: str) -> Callable[..., Any]:
    import timm

    if not timm.is_model(model_name):
        raise RegistryError(f"unknown timm model '{model_name}'{_closest(model_name, 'timm')}")

    return _bound_factory(build_timm_model, model_name)


def _torchvision_factory(model_name: str) -> Callable[..., Any]:
    from torchvision import models

    if model_name not in models.list_models(module=models):
        hint = _closest(model_name, "torchvision")
        raise RegistryError(f"unknown torchvision classification model '{model_name}'{hint}")

    return _bound_factory(build_torchvision_model, model_name)


def _bound_factory(build: Callable[..., nn.Module], model_name: str) -> Callable[..., Any]:
    """A registry factory for one zoo model; its signature names the data facts it takes."""

    def factory(
        num_classes: int | None = None,
        in_channels: int | None = None,
        input_shape: tuple[int, ...] | None = None,
        pretrained: bool = False,
        **kwargs: Any,
    ) -> nn.Module:
        return build(model_name, num_classes, in_channels, pretrained, **kwargs)

    return factory


def _closest(name: str, library: str) -> str:
    if library == "timm":
        import timm

        return suggest(name, timm.list_models())
    from torchvision import models

    return suggest(name, models.list_models(module=models))


register_prefix(TIMM_PREFIX, _resolve)
register_prefix(TORCHVISION_PREFIX, _resolve)
