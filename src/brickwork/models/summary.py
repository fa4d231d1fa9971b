"""A table of a model's modules: parameter counts (trainable, frozen), status, output shapes.

Output shapes come from one real forward pass with forward hooks, so they are what the
data actually produces, not what a signature promises. `brickwork inspect` prints it.

For a Hugging Face Transformer the rows also list each encoder layer whatever the
depth, and under PEFT the names drop the wrapper's `base_model.model.` prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from brickwork.batch import call_model


@dataclass
class ModuleRow:
    """One line of the summary."""

    name: str
    kind: str
    num_params: int
    num_trainable: int
    status: str  # trainable | frozen | partly frozen | - (no parameters)
    output_shape: str


def summarize_model(model: nn.Module, inputs: Any, depth: int = 2) -> list[ModuleRow]:
    """Rows for the model and its submodules down to `depth` dots, after one forward pass.

    Example:
        >>> rows = summarize_model(model, torch.randn(1, 3, 32, 32), depth=1)
    """
    from brickwork.models.huggingface import encoder_layer_index, transformer_of

    found = transformer_of(model)
    prefix = found[0] if found is not None else ""

    def shown(name: str) -> bool:
        if prefix.startswith(name + "."):
            return False  # PEFT's wrappers around the Transformer
        name = name.removeprefix(prefix)
        index = encoder_layer_index(name) if found is not None else None
        return name.count(".") < depth or (index is not None and name.endswith(f".{index}"))

    modules = [(n, m) for n, m in model.named_modules() if not n or shown(n)]
    shapes: dict[str, str] = {}

    def hook_for(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            shapes.setdefault(name, describe_shape(output))

        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in modules]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            call_model(model, inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return [
        _row(name.removeprefix(prefix) or "(model)", module, shapes.get(name, "-"))
        for name, module in modules
    ]


def parameter_totals(model: nn.Module) -> dict[str, int]:
    """Parameter counts (total, trainable, frozen) and their memory in bytes."""
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    return {
        "total": total,
        "trainable": trainable,
        "frozen": total - trainable,
        "param_bytes": sum(p.numel() * p.element_size() for p in params),
        "buffer_bytes": sum(b.numel() * b.element_size() for b in model.buffers()),
    }


def format_summary(rows: list[ModuleRow], totals: dict[str, int]) -> str:
    """The rows as an aligned text table, with the totals below."""
    header = ("module", "type", "params", "trainable", "frozen", "status", "output shape")
    cells = [header] + [
        (
            r.name,
            r.kind,
            f"{r.num_params:,}",
            f"{r.num_trainable:,}",
            f"{r.num_params - r.num_trainable:,}",
            r.status,
            r.output_shape,
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [
        "",
        f"parameters: {totals['total']:,} total, {totals['trainable']:,} trainable, "
        f"{totals['frozen']:,} frozen",
        f"parameter memory: {_megabytes(totals['param_bytes'])} "
        f"(+ {_megabytes(totals['buffer_bytes'])} buffers)",
    ]
    return "\n".join(lines)


def _row(name: str, module: nn.Module, shape: str) -> ModuleRow:
    params = list(module.parameters())
    flags = {p.requires_grad for p in params}
    status = "-" if not flags else "trainable" if flags == {True} else "frozen"
    if len(flags) == 2:
        status = "partly frozen"
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    return ModuleRow(name, type(module).__name__, total, trainable, status, shape)


def describe_shape(output: Any) -> str:
    """The shape of a tensor, or of the first tensor in a tuple, list or dict."""
    if isinstance(output, torch.Tensor):
        return str(tuple(output.shape))
    if isinstance(output, list | tuple) and output:
        return describe_shape(output[0])
    if isinstance(output, dict) and output:
        return describe_shape(next(iter(output.values())))
    return "-"


def _megabytes(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.2f} MiB"
