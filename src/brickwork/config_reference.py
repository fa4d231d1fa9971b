"""The config reference in the README, generated from the schema so it cannot drift.

`python -m brickwork.config_reference` prints the Markdown table; a test fails when
the README's copy differs or a schema key has no description here.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from brickwork.config import COMPONENT_SECTIONS, Component, Config

DESCRIPTIONS: dict[str, str] = {
    "name": "run name; runs are written to `runs/<name>/<run_id>/`",
    "seed": "seeds Python, NumPy, torch, the sampler's shuffles and loader workers",
    "imports": "project modules or `.py` files to import so their `@register`ed parts exist",
    "data.name": "dataset builder (`digits`, `image_folder`, `image_csv`, `tabular_csv`, "
    "`text_csv`, or one you register); its arguments sit beside it (docs/transfer.md)",
    "data.batch_size": "samples per batch (per process)",
    "data.global_batch_size": "samples per optimizer step over all processes; null: unused. "
    "Derives `batch_size` (at most the one set) and `trainer.accumulate_grad_batches`",
    "data.eval_batch_size": "batch size for validation and test; null: `batch_size`",
    "data.num_workers": "DataLoader worker processes; 0 loads in the training process",
    "data.pin_memory": "page-locked host memory for faster GPU copies; null: on with CUDA",
    "data.persistent_workers": "keep workers alive between epochs",
    "data.prefetch_factor": "batches each worker loads ahead; null: PyTorch's default",
    "data.shuffle": "reshuffle training data each epoch (seeded by seed and epoch)",
    "data.drop_last": "drop the last incomplete training batch",
    "data.sampler": "default, or weighted: seeded class-balanced draws with replacement",
    "model.name": "model (`cnn`, `mlp`, `text_rnn`, `text_transformer`, `timm/<name>`, "
    "`torchvision/<name>`, or one you register); its arguments sit beside it",
    "model.init": "re-initialise conv/linear weights: kaiming, xavier, orthogonal; null keeps",
    "model.pretrained": "true: timm/torchvision hub weights; a path: a local .safetensors, "
    ".pth or checkpoint folder",
    "optimizer.name": "sgd, adam, adamw (or one you register); other keys go to it",
    "optimizer.lr": "learning rate",
    "scheduler": "null for a constant LR",
    "scheduler.name": "step (per epoch), cosine (warmup_steps, min_lr_ratio), onecycle, "
    "reduce_on_plateau (monitor, mode, factor, patience)",
    "loss.name": "cross_entropy (label_smoothing, class_weights: list or balanced), mse",
    "finetune.freeze": "backbone (all but the classifier head) or parameter-name patterns",
    "finetune.frozen_bn_eval": "keep BatchNorm layers whose parameters are all frozen in eval mode",
    "finetune.unfreeze": "list of {at_epoch, modules}: patterns that become trainable then",
    "finetune.lr_mult": "{pattern, backbone or head: multiplier of optimizer.lr}; first match wins",
    "finetune.layer_decay": "timm layer-wise LR decay per layer group from the head; null: off",
    "metrics": "list of names or {name, ...arguments}: accuracy, f1_macro, top_k_accuracy (top_k)",
    "trainer.max_epochs": "stop after this many epochs",
    "trainer.max_steps": "stop after this many optimizer steps (whichever comes first)",
    "trainer.accumulate_grad_batches": "batches per optimizer step (gradient accumulation)",
    "trainer.gradient_clip_val": "clip gradients to this norm or value; null: no clipping",
    "trainer.gradient_clip_algorithm": "norm or value",
    "trainer.precision": "32, bf16 (autocast) or 16 (autocast + GradScaler)",
    "trainer.device": "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps",
    "trainer.log_every_n_steps": "write `train/loss` and `lr` every N optimizer steps",
    "trainer.val_every_n_epochs": "validate every N epochs",
    "trainer.test_after_fit": "evaluate the best checkpoint on the test split at the end",
    "trainer.devices": "processes `brickwork train` launches here via torchrun (one per GPU); "
    "ignored under torchrun or srun, which decide the number",
    "trainer.strategy": "auto (DDP with several processes), ddp, or dp (legacy DataParallel, "
    "CUDA only)",
    "trainer.sync_batchnorm": "BatchNorm statistics over all processes (SyncBatchNorm, CUDA only)",
    "trainer.find_unused_parameters": "let DDP handle parameters without a gradient in a step",
    "trainer.dist_timeout_s": "a collective waiting longer fails with an error naming the rank",
    "trainer.channels_last": "NHWC memory format for the model and 4-D inputs",
    "trainer.stop_signals": "signals that finish the step, save a checkpoint and exit 75",
    "trainer.on_nonfinite": "stop (name the step, module and samples) or skip a NaN/Inf loss step",
    "trainer.max_nonfinite_steps": "with skip: stop once more steps than this were skipped",
    "trainer.compile.enabled": "torch.compile the training model (`trainer.compile=true`, or "
    "any option below, turns it on); a failure says `trainer.compile=false`",
    "trainer.compile.mode": "default, reduce-overhead (CUDA graphs), max-autotune, "
    "max-autotune-no-cudagraphs",
    "trainer.compile.dynamic": "true: shapes may vary without recompiling; null: PyTorch decides",
    "trainer.compile.backend": "inductor (the default), or eager / aot_eager to find a failure",
    "checkpoint.monitor": "metric that picks the `best` checkpoint",
    "checkpoint.mode": "min or max: which direction of `monitor` is better",
    "checkpoint.save_last": "save `last` every `every_n_epochs`",
    "checkpoint.keep_k": "keep this many newest checkpoints besides `best` and `last`",
    "checkpoint.every_n_epochs": "epochs between periodic checkpoints",
    "checkpoint.every_n_steps": "also save every N optimizer steps, mid-epoch; null: off",
    "checkpoint.every_n_minutes": "also save when this many minutes passed since the last save",
    "early_stopping": "null turns early stopping off",
    "early_stopping.monitor": "metric to watch",
    "early_stopping.mode": "min or max",
    "early_stopping.patience": "validations without improvement before stopping",
    "early_stopping.min_delta": "smallest change that counts as an improvement",
    "loggers.progress_bar": "rich progress bar on a terminal (plain lines otherwise)",
    "loggers.tensorboard.enabled": "write TensorBoard events to `tb/`",
    "loggers.tensorboard.graph": "the model graph, traced once on a validation sample",
    "loggers.tensorboard.histogram_every_n_epochs": "weight and gradient histograms; 0 = off",
    "loggers.tensorboard.image_grid": "validation images captioned prediction/truth",
    "loggers.tensorboard.num_images": "images in that grid",
    "callbacks": "your registered callbacks: list of names or {name, ...arguments}",
}


def reference_rows() -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) for every key of the schema."""
    rows: list[tuple[str, str, str, str]] = []
    _walk(Config, "", Config(), rows)
    return rows


def reference_markdown() -> str:
    """The reference as a Markdown table."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, kind, default, meaning in reference_rows():
        lines.append(f"| `{key}` | {kind} | `{default}` | {meaning} |")
    return "\n".join(lines) + "\n"


def _walk(model: type[BaseModel], prefix: str, value: Any, rows: list[Any]) -> None:
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        default = getattr(value, name, None) if value is not None else field.default
        section = _section(field.annotation)
        if section is not None and not _is_list(field.annotation):
            if _is_optional(field.annotation):
                rows.append((key, "section or null", _show(default), DESCRIPTIONS.get(key, "")))
            _walk(section, f"{key}.", default, rows)
            if issubclass(section, Component) and name in COMPONENT_SECTIONS:
                kind = COMPONENT_SECTIONS[name]
                rows.append((f"{key}.*", "any", "-", f"keyword arguments of the chosen {kind}"))
            continue
        if section is not None:  # a list of components
            rows.append((key, "list", _show(default), DESCRIPTIONS.get(key, "")))
            continue
        rows.append((key, _type_name(field.annotation), _show(default), DESCRIPTIONS.get(key, "")))


def _section(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section(arg)
        if found is not None:
            return found
    return None


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list


def _is_optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(str(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if annotation is type(None):
        return "null"
    metadata = getattr(annotation, "__metadata__", None)
    if metadata:
        return _type_name(annotation.__origin__)
    return getattr(annotation, "__name__", str(annotation))


def _show(value: Any) -> str:
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "{...}"
    if isinstance(value, list):
        return "[" + ", ".join(getattr(v, "name", str(v)) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


if __name__ == "__main__":
    print(reference_markdown(), end="")
