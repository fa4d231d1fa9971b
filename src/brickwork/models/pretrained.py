"""Load local pretrained weights (`model.pretrained: PATH`) into any model, loudly.

Accepts a `.safetensors` file, a `.pth`/`.pt`/`.bin` file (read with
`torch.load(weights_only=True)`, which cannot run code), or a brickwork checkpoint
folder (its `model.safetensors`). Common wrappings are undone: a `state_dict` or `model`
entry, and `module.` / `_orig_mod.` prefixes from DDP and torch.compile.

Tensors whose shape differs from the model's are not loaded. In the classifier head
that is expected (a new class count) and reported as such; anywhere else it is a
warning, as are missing and unexpected keys. Nothing matching at all is an error.
"""

from __future__ import annotations

import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from brickwork.errors import ConfigError

log = logging.getLogger("brickwork")

_TORCH_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt"}
_SHOWN = 5


@dataclass
class LoadReport:
    """What `load_pretrained` did with each key of the file."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    head_mismatch: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)  # first convs fitted to the input channels


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain `{name: tensor}` state_dict from a weights file or checkpoint folder."""
    path = Path(path).expanduser()
    if path.is_dir() and (path / "model.safetensors").is_file():
        path = path / "model.safetensors"
    if not path.is_file():
        raise ConfigError(
            f"model.pretrained = '{path}': no such file; give a .safetensors or .pth file "
            "(or a brickwork checkpoint folder)"
        )
    if path.suffix == ".safetensors":
        from brickwork.checkpoint import load_tensors
        from brickwork.errors import CheckpointError

        try:  # refuses a pickle under a .safetensors name unread
            return load_tensors(path)
        except CheckpointError as error:
            raise ConfigError(f"model.pretrained = '{path}': {_after_path(error, path)}") from None
    if path.suffix not in _TORCH_SUFFIXES:
        raise ConfigError(
            f"model.pretrained = '{path}': unknown weights format '{path.suffix}'; "
            "expected .safetensors, .pth, .pt or .bin"
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own text goes on to explain how to load it unsafely: not quoted here.
        raise ConfigError(
            f"model.pretrained = '{path}': it holds Python objects besides tensors, which "
            "brickwork refuses to unpickle (that could run code); save model.state_dict() "
            "from code you trust, or convert the weights to .safetensors"
        ) from None
    except Exception as error:  # a truncated or corrupt file
        raise ConfigError(
            f"model.pretrained = '{path}': not a readable weights file "
            f"({_plain(str(error))[:160]}); save a plain state_dict, or use .safetensors"
        ) from None
    return _unwrap(loaded, path)


def load_pretrained(model: nn.Module, path: str | Path) -> LoadReport:
    """Copy the weights in `path` into `model` where names and shapes agree, and report.

    Example:
        >>> report = load_pretrained(model, "resnet18.safetensors")
        >>> report.head_mismatch
        ['fc.weight', 'fc.bias']
    """
    from brickwork.models.anatomy import find_head

    weights = read_weights(path)
    own = model.state_dict()
    head = _head_prefixes(model, find_head)
    report = LoadReport()
    usable: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        if key in own and own[key].shape != tensor.shape:
            tensor = _adapt_input_conv(key, tensor, own[key].shape, report)
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != tensor.shape:
            in_head = any(key == h or key.startswith(h + ".") for h in head)
            (report.head_mismatch if in_head else report.shape_mismatch).append(key)
        else:
            usable[key] = tensor
    if not usable:
        raise ConfigError(
            f"model.pretrained = '{path}': none of its {len(weights)} tensors fit the model "
            f"(e.g. '{next(iter(weights), '')}' vs '{next(iter(own), '')}'); "
            "are these weights for a different architecture?"
        )
    model.load_state_dict(usable, strict=False)
    report.loaded = sorted(usable)
    report.missing = [k for k in own if k not in usable and k not in report.head_mismatch]
    _log_report(report, path)
    return report


def _adapt_input_conv(
    key: str, weight: torch.Tensor, wanted: torch.Size, report: LoadReport
) -> torch.Tensor:
    """A first convolution trained on RGB, for a model with other input channels: as timm's
    `adapt_input_conv`, sum the filters over RGB for one channel, or repeat them (scaled
    to keep the activation size) for more. Anything else is returned unchanged."""
    if weight.ndim != 4 or len(wanted) != 4 or weight.shape[0] != wanted[0]:
        return weight
    if weight.shape[2:] != wanted[2:] or weight.shape[1] != 3 or wanted[1] == 3:
        return weight
    channels = wanted[1]
    if channels == 1:
        adapted = weight.sum(dim=1, keepdim=True)
    else:
        repeats = -(-channels // 3)
        adapted = weight.repeat(1, repeats, 1, 1)[:, :channels] * (3 / channels)
    report.adapted.append(key)
    return adapted


def adapt_first_conv(model: nn.Module, channels: int, name: str, pretrained: bool) -> str:
    """Replace the first 3-channel `Conv2d` of `model` by one taking `channels` inputs.

    Its weights are the RGB filters adapted as `_adapt_input_conv` does (pretrained
    filters stay useful on greyscale); says so on the console. Returns the layer's name.
    """
    found = next(
        (
            (n, m)
            for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.in_channels == 3
        ),
        None,
    )
    if found is None:
        raise ConfigError(
            f"model {name}: no 3-channel first convolution to fit to the data's {channels} "
            "channels; set data.mode: RGB"
        )
    layer_name, conv = found
    fresh = nn.Conv2d(
        channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        conv.stride,  # type: ignore[arg-type]
        conv.padding,  # type: ignore[arg-type]
        conv.dilation,  # type: ignore[arg-type]
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
    )
    report = LoadReport()
    with torch.no_grad():
        wanted = fresh.weight.shape
        fresh.weight.copy_(_adapt_input_conv(f"{layer_name}.weight", conv.weight, wanted, report))
        if conv.bias is not None:
            fresh.bias.copy_(conv.bias)  # type: ignore[union-attr]
    parent_name, _, child = layer_name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, fresh)
    if pretrained:
        log.info(
            "pretrained: %s.weight adapted from 3 (RGB) input channels to the data's %d "
            "(summed for 1, repeated and scaled for more), as timm does",
            layer_name,
            channels,
            extra={"console": True},
        )
    return layer_name


def _after_path(error: Exception, path: Path) -> str:
    return str(error).removeprefix(f"{path}: ")


def _plain(text: str) -> str:
    """The first line of a library's message, without terminal colour codes."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", first).split(". ")[0]


def _head_prefixes(model: nn.Module, find_head: object) -> list[str]:
    try:
        return list(find_head(model))  # type: ignore[operator]
    except ConfigError:
        return []


def _unwrap(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise ConfigError(
            f"model.pretrained = '{path}': expected a state_dict of tensors, got "
            f"{type(loaded).__name__}; save model.state_dict()"
        )
    out = {}
    for key, tensor in loaded.items():
        for prefix in ("module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        out[key] = tensor
    return out


def _log_report(report: LoadReport, path: str | Path) -> None:
    shown = {"console": True}  # the user needs these on the console, not only in train.log
    log.info("pretrained: loaded %d tensors from %s", len(report.loaded), path, extra=shown)
    if report.head_mismatch:
        log.info(
            "pretrained: classifier head not loaded, its shape differs as expected for a new "
            "class count (%s); it starts freshly initialised",
            shorten_keys(report.head_mismatch),
            extra=shown,
        )
    if report.adapted:
        log.info(
            "pretrained: %s adapted from 3 (RGB) input channels to the data's channels "
            "(summed for 1, repeated and scaled for more), as timm does",
            shorten_keys(report.adapted),
            extra=shown,
        )
    if report.shape_mismatch:
        log.warning(
            "pretrained: %d tensors outside the head have other shapes and were skipped: %s",
            len(report.shape_mismatch),
            shorten_keys(report.shape_mismatch),
        )
    missing = [k for k in report.missing if not k.endswith("num_batches_tracked")]
    if missing:
        log.warning(
            "pretrained: %d model tensors are not in the file and keep their initial values: %s",
            len(missing),
            shorten_keys(missing),
        )
    if report.unexpected:
        log.warning(
            "pretrained: %d tensors in the file match no model key and were ignored: %s",
            len(report.unexpected),
            shorten_keys(report.unexpected),
        )


def shorten_keys(keys: list[str]) -> str:
    """The first few keys, and how many more."""
    more = f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more
