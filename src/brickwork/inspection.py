"""`brickwork.inspect_model`: the model a config builds, module by module, before training.

Builds the data and the model exactly as `fit` would (with `finetune.freeze` applied),
runs one real training batch through it with forward hooks, and reports each module's
parameter count, whether it is trainable or frozen, and its output shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from brickwork.batch import split_batch
from brickwork.components import build_split_loader
from brickwork.config import Config
from brickwork.data import build_data
from brickwork.models import build_model
from brickwork.models.summary import (
    ModuleRow,
    describe_shape,
    format_summary,
    parameter_totals,
    summarize_model,
)
from brickwork.rng import seed_everything
from brickwork.run import resolve_training


@dataclass
class ModelInspection:
    """What `inspect_model` found; `str()` gives the table `brickwork inspect` prints."""

    title: str
    rows: list[ModuleRow]
    totals: dict[str, int]
    notes: list[str] = field(default_factory=list)  # e.g. the LoRA adapters

    def __str__(self) -> str:
        notes = "".join(f"\n{note}" for note in self.notes)
        return f"{self.title}\n{format_summary(self.rows, self.totals)}{notes}"


def inspect_model(
    config: Config | str | Path | None = None, overrides: Sequence[str] = (), depth: int = 2
) -> ModelInspection:
    """Build a config's data and model and describe the model after one real batch.

    Example:
        >>> print(brickwork.inspect_model("configs/digits.yaml", ["model.name=mlp"], depth=1))
    """
    from brickwork.finetune import freeze_parameters
    from brickwork.models.huggingface import describe_adapters

    resolved = resolve_training(config, overrides).config
    seed_everything(resolved.seed)
    data = build_data(resolved)
    model = build_model(resolved.model, data, resolved.finetune.lora)
    freeze_parameters(model, resolved.finetune)
    loader = build_split_loader(resolved, data, "train")
    inputs, _ = split_batch(next(iter(loader)))
    rows = summarize_model(model, inputs, depth=depth)
    title = f"{resolved.model.name} on {resolved.data.name}: one batch of {describe_shape(inputs)}"
    adapters = describe_adapters(model)
    return ModelInspection(title, rows, parameter_totals(model), [adapters] if adapters else [])
