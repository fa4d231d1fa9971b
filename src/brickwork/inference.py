"""Use a finished run: evaluate a checkpoint on a split, or predict new inputs.

Both rebuild the data and model from the run's own `config.yaml` and load only the
model weights (safetensors), in eval mode and under `torch.no_grad()`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from brickwork.batch import call_model, logits_of, move_to_device, split_batch
from brickwork.checkpoint import MODEL_FILE, load_tensors, resolve_checkpoint, verify_checkpoint
from brickwork.components import Components, build_components, build_split_loader, resolve_device
from brickwork.config import load_config
from brickwork.errors import CheckpointError, DataError
from brickwork.loop import evaluate_loader
from brickwork.models.anatomy import unwrap_model
from brickwork.models.huggingface import use_run_model_files
from brickwork.run import run_dir_of


def load_trained(run_dir: Path, checkpoint: str = "best") -> tuple[Components, Path]:
    """The run's components with the chosen checkpoint's weights loaded."""
    if not (Path(run_dir) / "config.yaml").is_file():
        raise CheckpointError(
            f"{run_dir}: not a brickwork run folder (no config.yaml); "
            "pass a run folder such as runs/<name>/<id>"
        )
    config = load_config(Path(run_dir) / "config.yaml")
    config.model.pretrained = False  # the checkpoint holds the weights; need no hub or file
    use_run_model_files(config.model, Path(run_dir))  # hf/: the run's copy of config, tokenizer
    location = Path(checkpoint) if checkpoint not in ("best", "last") else Path(run_dir)
    folder = resolve_checkpoint(location, checkpoint if checkpoint in ("best", "last") else "last")
    verify_checkpoint(folder)
    device = resolve_device(config.trainer.device)
    parts = build_components(config, device)
    weights = load_tensors(folder / MODEL_FILE, device)
    try:
        unwrap_model(parts.model).load_state_dict(weights)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"{folder}: weights do not fit the model in {run_dir_of(folder)}/config.yaml "
            f"({first_line})"
        ) from None
    parts.model.eval()
    return parts, folder


def evaluate_run(run_dir: Path, checkpoint: str = "best", split: str = "test") -> dict[str, Any]:
    """Loss, metrics and (for classification) the confusion matrix of a checkpoint on a split."""
    from brickwork.metrics import build_confusion_matrix

    parts, folder = load_trained(run_dir, checkpoint)
    loader = build_split_loader(parts.config, parts.data, split)
    metrics = evaluate_loader(
        parts.model, loader, parts.compute_loss, parts.metrics, parts.device, split
    )
    results: dict[str, Any] = {"checkpoint": str(folder), "split": split, "metrics": metrics}
    if parts.data.num_classes:
        matrix = build_confusion_matrix(parts.data.num_classes).to(parts.device)
        _, predictions, targets = _predict_loader(parts, loader)
        results["confusion_matrix"] = matrix(predictions, targets).tolist()
        results["label_names"] = parts.data.label_names
    return results


def predict_run(run_dir: Path, inputs: Path, output: Path, checkpoint: str = "best") -> int:
    """Write `name,class_index,label,probability` rows for each input; returns the row count."""
    parts, _ = load_trained(run_dir, checkpoint)
    if parts.data.load_unlabeled is None:
        raise DataError(f"dataset of {run_dir} does not support predict on new inputs")
    if not inputs.exists():
        raise DataError(
            f"--input {inputs}: no such file or folder; pass an existing file or folder"
        )
    dataset, names = parts.data.load_unlabeled(inputs)
    loader: DataLoader[Any] = DataLoader(dataset, batch_size=256, collate_fn=parts.data.collate_fn)
    probabilities, predictions, _ = _predict_loader(parts, loader)
    labels = parts.data.label_names or [str(i) for i in range(probabilities.shape[1])]
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["input", "class_index", "label", "probability"])
        for name, index, probs in zip(names, predictions.tolist(), probabilities, strict=True):
            writer.writerow([name, index, labels[index], f"{float(probs[index]):.6f}"])
    return len(names)


@torch.no_grad()
def _predict_loader(
    parts: Components, loader: DataLoader[Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Softmax probabilities, argmax classes and (if labelled) targets over a loader."""
    parts.model.eval()
    probabilities, targets = [], []
    for batch in loader:
        inputs, target = split_batch(move_to_device(batch, parts.device))
        logits = logits_of(call_model(parts.model, inputs))
        probabilities.append(torch.softmax(logits.float(), dim=1))
        if target is not None:
            targets.append(target)
    probs = torch.cat(probabilities)
    return probs, probs.argmax(dim=1), torch.cat(targets) if targets else None
