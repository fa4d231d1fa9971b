"""Use a finished run: evaluate a checkpoint on a split, or predict new inputs.

Both rebuild the data and model from the run's own `config.yaml` and load only the
model weights (safetensors), in eval mode and under `torch.no_grad()`. Relative data
paths in that config are read from the folder training ran in (`summary.json`'s
`working_folder`), so a run can be used from any folder. Inference-time keys
(`data.*`, `trainer.device`) may be overridden with `key=value`.

    rows = brickwork.predict("runs/digits-cnn/20260101-120000", "new_scans/")
    metrics = brickwork.evaluate("runs/digits-cnn/20260101-120000", split="val")["metrics"]
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from brickwork.batch import call_model, logits_of, move_to_device, split_batch
from brickwork.checkpoint import MODEL_FILE, load_tensors, resolve_checkpoint, verify_checkpoint
from brickwork.components import Components, build_components, build_split_loader, resolve_device
from brickwork.data.bundle import read_data_facts
from brickwork.data.hf_tokenizer import use_run_tokenizer
from brickwork.errors import CheckpointError, ConfigError, DataError
from brickwork.files import refuse_to_replace
from brickwork.loop import evaluate_loader
from brickwork.models.anatomy import unwrap_model
from brickwork.models.huggingface import use_run_model_files
from brickwork.run import load_run_config, run_dir_of

# Keys that change how a trained model is used, not what it is.
INFERENCE_KEYS = ("data.", "trainer.device=")


def load_trained(
    run_dir: Path,
    checkpoint: str = "best",
    overrides: Sequence[str] = (),
    without_training_data: bool = True,
) -> tuple[Components, Path]:
    """The run's components with the chosen checkpoint's weights loaded.

    `without_training_data`: the data come from the run's `data.json` (labels, fitted
    preprocessing, vocabulary), so the run folder works where its training data are
    not; datasets that cannot (a user's without a `fitted` argument) read their data.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(
            f"{run_dir}: not a brickwork run folder (no config.yaml); "
            "pass a run folder such as runs/<name>/<id>"
        )
    _check_inference_overrides(overrides)
    config = load_run_config(run_dir, overrides)
    config.model.pretrained = False  # the checkpoint holds the weights; need no hub or file
    use_run_model_files(config.model, run_dir)  # hf/: the run's copy of config, tokenizer
    use_run_tokenizer(config.data, run_dir)  # hf:<folder>: the run's copy of the tokenizer
    location = Path(checkpoint) if checkpoint not in ("best", "last") else run_dir
    folder = resolve_checkpoint(location, checkpoint if checkpoint in ("best", "last") else "last")
    verify_checkpoint(folder)
    device = resolve_device(config.trainer.device)
    fitted = read_data_facts(run_dir / "data.json") if without_training_data else None
    if fitted is not None and _needs_class_counts(config) and not fitted.get("class_counts"):
        fitted = None  # a run from before data.json kept them: its balanced loss needs the data
    parts = build_components(config, device, fitted=fitted)
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


def _needs_class_counts(config: Any) -> bool:
    return bool(config.loss.kwargs.get("class_weights") == "balanced")


def _check_inference_overrides(overrides: Sequence[str]) -> None:
    for override in overrides:
        if not override.startswith(INFERENCE_KEYS) or override.startswith("data.name="):
            raise ConfigError(
                f"override {override}: predict and evaluate take only inference-time keys "
                "(data.* but data.name, trainer.device); drop it, or train a new run to change "
                "the model"
            )


@contextlib.contextmanager
def in_working_folder(run_dir: Path) -> Iterator[None]:
    """Run the block in the folder training ran in, so the run's relative data paths
    resolve as they did then; an error then says where they were read from.

    Callers make their own paths absolute first.
    """
    working = _working_folder(run_dir)
    moved = working.resolve() != Path.cwd().resolve()
    try:
        with contextlib.chdir(working):
            yield
    except DataError as error:  # a data path that is gone: say where it was looked for
        if not moved:
            raise
        raise type(error)(f"{error} (relative data paths are read from {working})") from None


def _working_folder(run_dir: Path) -> Path:
    """Where training ran (relative data paths start there); this folder if unknown or gone."""
    try:
        recorded = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        folder = Path(recorded["working_folder"])
    except (OSError, ValueError, KeyError, TypeError):
        return Path.cwd()
    return folder if folder.is_dir() else Path.cwd()


def evaluate_run(
    run_dir: Path,
    checkpoint: str = "best",
    split: str = "test",
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Loss, metrics and (for classification) the confusion matrix of a checkpoint on a split.

    Example:
        >>> brickwork.evaluate("runs/digits-cnn/20260101-120000", split="val")["metrics"]
        {'val/loss': 0.11, 'val/acc': 0.97}
    """
    run_dir, checkpoint = Path(run_dir).absolute(), _absolute_checkpoint(checkpoint)
    with in_working_folder(run_dir):
        return _evaluate(run_dir, checkpoint, split, overrides)


def _absolute_checkpoint(checkpoint: str) -> str:
    return checkpoint if checkpoint in ("best", "last") else str(Path(checkpoint).absolute())


def _evaluate(
    run_dir: Path, checkpoint: str, split: str, overrides: Sequence[str]
) -> dict[str, Any]:
    from brickwork.metrics import confusion_matrix

    # The run's own split needs its data; a split given as a file (data.test_csv=...)
    # needs only the run folder.
    explicit = any(o.startswith((f"data.{split}_csv=", f"data.{split}_root=")) for o in overrides)
    parts, folder = load_trained(run_dir, checkpoint, overrides, without_training_data=explicit)
    loader = build_split_loader(parts.config, parts.data, split)
    metrics = evaluate_loader(
        parts.model, loader, parts.compute_loss, parts.metrics, parts.device, split
    )
    results: dict[str, Any] = {"checkpoint": str(folder), "split": split, "metrics": metrics}
    if parts.data.num_classes:
        _, predictions, targets = _predict_loader(parts, loader)
        assert targets is not None  # an evaluated split is labelled
        matrix = confusion_matrix(predictions, targets, parts.data.num_classes)
        results["confusion_matrix"] = matrix.tolist()
        results["label_names"] = parts.data.label_names
    return results


def predict(
    run_dir: str | Path,
    inputs: str | Path,
    checkpoint: str = "best",
    overrides: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One row per input: `input` (its path, text or id), `class_index`, `label`, `probability`.

    Example:
        >>> brickwork.predict("runs/digits-cnn/20260101-120000", "scans/")[0]["label"]
        '7'
    """
    run_dir, inputs = Path(run_dir).absolute(), Path(inputs).absolute()
    with in_working_folder(run_dir):
        return _predict(run_dir, inputs, _absolute_checkpoint(checkpoint), overrides)


def _predict(
    run_dir: Path, inputs: Path, checkpoint: str, overrides: Sequence[str]
) -> list[dict[str, Any]]:
    parts, _ = load_trained(run_dir, checkpoint, overrides)
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
    return [
        {
            "input": name,
            "class_index": index,
            "label": labels[index],
            "probability": float(probs[index]),
        }
        for name, index, probs in zip(names, predictions.tolist(), probabilities, strict=True)
    ]


def evaluate(
    run_dir: str | Path,
    split: str = "test",
    checkpoint: str = "best",
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """`evaluate_run` for notebooks: metrics, confusion matrix and label names of a split."""
    return evaluate_run(Path(run_dir), checkpoint, split, overrides)


def predict_run(
    run_dir: Path,
    inputs: Path,
    output: Path,
    checkpoint: str = "best",
    overrides: Sequence[str] = (),
    force: bool = False,
) -> int:
    """Write `input,class_index,label,probability` rows for each input; returns the row count."""
    refuse_to_replace(output, "--output", force)
    rows = predict(run_dir, inputs, checkpoint, overrides)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["input", "class_index", "label", "probability"])
        for row in rows:
            writer.writerow(
                [row["input"], row["class_index"], row["label"], f"{row['probability']:.6f}"]
            )
    return len(rows)


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
