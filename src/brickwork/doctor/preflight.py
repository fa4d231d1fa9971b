"""One batch through the whole step before any real training: the mistakes that waste a day.

Loads one training batch (shapes, dtypes, value ranges, NaN, labels within
`num_classes`), runs one forward and backward, and checks what a first step should
show: a finite loss near log(num_classes) for a freshly initialised classifier, a
gradient for every trainable parameter, output and targets that agree in shape.
Each failure is one line with its fix.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from brickwork.batch import move_to_device, split_batch
from brickwork.components import Components, build_components, build_optimization
from brickwork.config import Config
from brickwork.doctor.report import DoctorReport
from brickwork.errors import BrickworkError
from brickwork.models.anatomy import find_head

_CLASSIFIER_LOSSES = ("cross_entropy", "focal", "nll")
_MAX_NAMED = 5


def run_preflight(report: DoctorReport, config: Config, device: torch.device) -> bool:
    """Add the preflight checks; False when a failure makes the later sections pointless."""
    try:
        parts = build_components(config, device)
        build_optimization(config, parts.model, 1)  # applies finetune freezing, as fit does
        batch = next(iter(parts.train_loader))
    except Exception as error:  # the user's dataset or model code: report it, do not crash
        report.add(
            "preflight",
            "build",
            "fail",
            f"building the data and model failed: {_first_line(error)}",
            "fix the config section the message names (brickwork inspect shows the model)",
        )
        return False
    _check_batch(report, parts, batch)
    return _check_step(report, parts, move_to_device(batch, device))


def _check_batch(report: DoctorReport, parts: Components, batch: Any) -> None:
    inputs, targets = split_batch(batch)
    described = ", ".join(_describe(name, t) for name, t in _tensors(inputs, "input"))
    first = _tensors(inputs, "input")
    shape = list(first[0][1].shape) if first else None
    report.add("preflight", "batch", "ok", f"one batch loads: {described}", input_shape=shape)
    for name, tensor in _tensors(inputs, "input"):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            report.add(
                "preflight",
                "inputs_finite",
                "fail",
                f"{name} holds {bad} NaN/Inf value(s) in the first batch",
                "clean the data (missing values?) or fill them in the dataset's transform",
            )
        elif tensor.is_floating_point() and float(tensor.abs().max()) > 100:
            report.add(
                "preflight",
                "inputs_scale",
                "warn",
                f"{name} spans {float(tensor.min()):.4g}..{float(tensor.max()):.4g}: "
                "unnormalised inputs slow or stall training",
                "scale inputs to about mean 0, std 1 (a Normalize transform)",
            )
    num_classes = parts.data.num_classes
    if isinstance(targets, torch.Tensor) and not targets.is_floating_point() and num_classes:
        low, high = int(targets.min()), int(targets.max())
        inside = low >= 0 and high < num_classes
        report.add(
            "preflight",
            "labels",
            "ok" if inside else "fail",
            f"labels in the batch span {low}..{high}, num_classes = {num_classes}",
            None if inside else "fix the labels or the dataset's num_classes",
            low=low,
            high=high,
            num_classes=num_classes,
        )


def _check_step(report: DoctorReport, parts: Components, batch: Any) -> bool:
    model, config = parts.model, parts.config
    model.train()
    try:
        output = parts.compute_loss(model, batch)
    except Exception as error:  # a shape mismatch, or a bug in the user's forward
        report.add(
            "preflight",
            "forward",
            "fail",
            f"the forward pass or the loss failed: {type(error).__name__}: {_first_line(error)}",
            "make the model's output match the loss: (batch, num_classes) logits for "
            "classification, and check model.num_classes against the data",
        )
        return False
    loss = output["loss"]
    _check_shapes(report, output, parts.data.num_classes)
    value = float(loss.detach())
    if not math.isfinite(value):
        report.add(
            "preflight",
            "loss",
            "fail",
            f"the first loss is {value}",
            "check the inputs for NaN and the model's initialisation",
        )
        return False
    _check_initial_loss(report, value, parts.data.num_classes, config.loss.name)
    loss.backward()
    _check_gradients(report, model)
    return True


def _check_shapes(report: DoctorReport, output: dict[str, Any], num_classes: int | None) -> None:
    preds, target = output.get("preds"), output.get("target")
    if not isinstance(preds, torch.Tensor) or not isinstance(target, torch.Tensor):
        return
    problems = []
    if preds.shape[0] != target.shape[0]:
        problems.append(f"{preds.shape[0]} outputs for {target.shape[0]} targets")
    classifier = num_classes and not target.is_floating_point()
    if classifier and (preds.dim() != 2 or preds.shape[1] != num_classes):
        problems.append(f"output shape {tuple(preds.shape)}, expected (B, {num_classes})")
    report.add(
        "preflight",
        "shapes",
        "fail" if problems else "ok",
        f"model output {tuple(preds.shape)} and targets {tuple(target.shape)}"
        + (f": {'; '.join(problems)}" if problems else " agree"),
        "give the model's last layer num_classes outputs and keep the batch dimension first"
        if problems
        else None,
    )


def _check_initial_loss(
    report: DoctorReport, value: float, num_classes: int | None, loss_name: str
) -> None:
    if not num_classes or num_classes < 2 or loss_name not in _CLASSIFIER_LOSSES:
        report.add("preflight", "loss", "ok", f"first loss {value:.4g} is finite")
        return
    expected = math.log(num_classes)
    near = 0.5 * expected <= value <= 1.5 * expected
    report.add(
        "preflight",
        "loss",
        "ok" if near else "warn",
        f"first loss {value:.4g}; a fresh classifier of {num_classes} classes expects about "
        f"log({num_classes}) = {expected:.3g}",
        None
        if near
        else "the initial logits are far from uniform: shrink the last layer's initial "
        "weights (model.init), and pass logits, not probabilities, to the loss",
        value=value,
        expected=expected,
    )


def _check_gradients(report: DoctorReport, model: nn.Module) -> None:
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [name for name, param in trainable if param.grad is None]
    report.add(
        "preflight",
        "gradients",
        "fail" if missing else "ok",
        f"{len(trainable) - len(missing)} of {len(trainable)} trainable parameter tensors got "
        "a gradient"
        + (f"; none for: {', '.join(missing[:_MAX_NAMED])}" if missing else "")
        + (f" and {len(missing) - _MAX_NAMED} more" if len(missing) > _MAX_NAMED else ""),
        "use these parameters in forward (a branch never called?) or freeze them "
        "(requires_grad=False); under DDP they also need trainer.find_unused_parameters=true"
        if missing
        else None,
        missing=missing,
    )
    try:
        head = find_head(model)
    except BrickworkError:
        return
    modules = dict(model.named_modules())
    head_params = [p for name in head for p in modules[name].parameters()]
    if head_params and not any(p.requires_grad for p in head_params):
        report.add(
            "preflight",
            "head",
            "fail",
            f"the classifier head ({', '.join(head)}) is frozen: the model cannot learn "
            "the new classes",
            "remove the head from finetune.freeze (freeze: backbone keeps the head trainable)",
        )


def _tensors(value: Any, name: str) -> list[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        return [(name, value)]
    if isinstance(value, dict):
        return [t for key, item in value.items() for t in _tensors(item, f"{name}.{key}")]
    if isinstance(value, list | tuple):
        return [t for i, item in enumerate(value) for t in _tensors(item, f"{name}[{i}]")]
    return []


def _describe(name: str, tensor: torch.Tensor) -> str:
    text = f"{name} {tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"
    if tensor.is_floating_point() and tensor.numel():
        text += f" in {float(tensor.min()):.3g}..{float(tensor.max()):.3g}"
    return text


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]
