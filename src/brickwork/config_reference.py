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
    "base": "a YAML config (path relative to this file) whose values this one starts from "
    "and overrides, section by section; the run's `config.yaml` is the merged result",
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
    "`torchvision/<name>`, `hf/<folder or hub id>`, or one you register); its arguments sit "
    "beside it",
    "model.init": "re-initialise conv/linear weights: kaiming, xavier, orthogonal; null keeps",
    "model.pretrained": "true: timm/torchvision hub weights, or the hf/ folder's own; a path: "
    "a local .safetensors, .pth or checkpoint folder",
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
    "finetune.layer_decay": "layer-wise LR decay from the head: timm layer groups, or the "
    "encoder layers of an hf/ Transformer; null: off",
    "finetune.lora": "LoRA adapters through PEFT (`brickwork[hf]`): only adapters and head "
    "train; null: off",
    "finetune.lora.r": "rank of each adapter",
    "finetune.lora.alpha": "scaling: the adapters' update is multiplied by alpha / r",
    "finetune.lora.dropout": "dropout on the adapters' input",
    "finetune.lora.target_modules": "last names of the linear layers that get adapters "
    "(`query`, `value`, ...)",
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
    "loggers.wandb.enabled": "log to Weights & Biases (`pip install 'brickwork[wandb]'`)",
    "loggers.wandb.project": "W&B project; null: the config's name",
    "loggers.wandb.entity": "W&B team or user; null: your W&B default",
    "loggers.wandb.group": "W&B group, e.g. a study's name",
    "loggers.wandb.tags": "W&B tags",
    "loggers.wandb.name": "W&B run name; null: `<name>/<run folder>`",
    "loggers.wandb.mode": "online, offline or disabled; null: WANDB_MODE, else online",
    "loggers.wandb.log_model": "upload the best checkpoint as a `model` artifact",
    "loggers.mlflow.enabled": "log to MLflow (`pip install 'brickwork[mlflow]'`)",
    "loggers.mlflow.tracking_uri": "null: MLFLOW_TRACKING_URI, else `sqlite:///runs/mlflow.db`",
    "loggers.mlflow.experiment": "MLflow experiment; null: the config's name",
    "loggers.mlflow.run_name": "MLflow run name; null: `<name>/<run folder>`",
    "loggers.mlflow.log_model": "log the best `model.safetensors` as an artifact",
    "callbacks": "your registered callbacks: list of names or {name, ...arguments}",
    "tune": "a hyperparameter search over this config for `brickwork tune` (docs/tune.md); "
    "`brickwork train` ignores it",
    "tune.space": "dotted key -> `{loguniform: [lo, hi]}`, `{uniform: [lo, hi]}`, "
    "`{int: [lo, hi]}`, `{choice: [...]}`, or a plain list (a grid)",
    "tune.metric": "the validation metric to optimise; null: `checkpoint.monitor`",
    "tune.mode": "min or max; null: `checkpoint.mode`",
    "tune.num_trials": "trials to run; null: 20, or every point of a grid",
    "tune.timeout_s": "start no new trial after this many seconds",
    "tune.sampler": "tpe, random, grid, cmaes, bohb (Ray); null: grid when every key is a "
    "list, else tpe",
    "tune.pruner": "stop hopeless trials at a validation: none, median, hyperband, asha, pbt (Ray)",
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


# Filled in by brickwork: from the data for models, the run's seed and model for datasets.
_PROVIDED = {"num_classes", "in_channels", "input_shape", "vocab_size", "seed", "model_name"}


def component_markdown() -> str:
    """The arguments of every built-in model and dataset, from their factories' signatures.

    Types and ranges come from the annotations the config check enforces
    (`registry.check_kwarg_types`), so the table says what is accepted. Arguments the
    data fills in (`num_classes`, `input_shape`, ...) are marked as such.
    """
    import inspect

    from brickwork import registry

    lines = ["| component | argument | type | default |", "| --- | --- | --- | --- |"]
    for kind in ("model", "dataset"):
        for name in registry.built_in(kind):
            if name.startswith("test_"):
                continue
            factory = registry.get(kind, name)
            hints = registry._type_hints(factory)
            accepted, _ = registry.accepted_kwargs(factory)
            target = factory.__init__ if inspect.isclass(factory) else factory
            for param in inspect.signature(target).parameters.values():
                if param.name not in accepted or param.name in registry.FROM_RUN:
                    continue
                if param.name in _PROVIDED:
                    field = "model.name" if param.name == "model_name" else "seed"
                    default = "from the data" if kind == "model" else f"the run's `{field}`"
                elif param.default is inspect.Parameter.empty:
                    default = "required"
                else:
                    default = f"`{_show(param.default)}`"
                kind_name = _argument_type(hints.get(param.name, Any))
                lines.append(f"| {kind} `{name}` | `{param.name}` | {kind_name} | {default} |")
    return "\n".join(lines) + "\n"


def _argument_type(annotation: Any) -> str:
    """`Sequence[PositiveInt]` -> 'list of int > 0'; `Field(ge=0)` on a float -> 'float ≥ 0'."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        bounds = []
        for item in args[1:]:
            for check in [item, *getattr(item, "metadata", [])]:
                for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
                    if getattr(check, attr, None) is not None:
                        bounds.append(f"{sign} {getattr(check, attr)}")
        return " ".join([_argument_type(args[0]), *bounds])
    if origin is typing.Union or isinstance(annotation, types.UnionType):
        return " or ".join(_argument_type(arg) for arg in args)
    if origin is typing.Literal:
        return " or ".join(f"'{arg}'" if isinstance(arg, str) else str(arg) for arg in args)
    if origin is not None and args and origin not in (dict,):
        return f"list of {_argument_type(args[0])}"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


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
