"""Export a trained run's model for deployment: safetensors, TorchScript, ONNX or a
Hugging Face folder.

Each export rebuilds the model from the run's `config.yaml`, loads the chosen
checkpoint's weights (safetensors, no pickle), writes the file, then loads the file
back and checks it gives the same outputs on a validation sample, so a broken
export fails here rather than in production.

    brickwork export runs/digits-cnn/20260101-120000 --format onnx

`--format hf` (for `hf/` models) writes a folder that plain
`AutoModelForSequenceClassification.from_pretrained` and `AutoTokenizer.from_pretrained`
(for images `AutoModelForImageClassification` and, with `data.normalize: model`,
`AutoImageProcessor`) load without brickwork, LoRA adapters merged into the weights; it
is checked by loading it back through transformers' Auto classes.
"""

from __future__ import annotations

import copy
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from brickwork.batch import logits_of
from brickwork.errors import ConfigError
from brickwork.files import refuse_to_replace

FORMATS = {
    "safetensors": "model.safetensors",
    "torchscript": "model.torchscript.pt",
    "onnx": "model.onnx",
    "hf": "hf",
}
EXPORT_MARKER = "brickwork_export.json"  # marks a folder `--format hf` may replace


def export_run(
    run_dir: Path,
    format: str,
    output: Path | None = None,
    checkpoint: str = "best",
    force: bool = False,
) -> dict[str, Any]:
    """Write the model of `run_dir` in `format`; returns the path and the checked output gap.

    Files outside the run's own `export/` folder are never replaced unless `force`:
    neither `--output` nor the `config.yaml` a safetensors export writes beside it.

    Example:
        >>> export_run(Path("runs/digits-cnn/20260101-120000"), "torchscript")["path"]
    """
    from brickwork.inference import in_working_folder

    if format not in FORMATS:
        raise ConfigError(f"--format {format}: expected one of {', '.join(FORMATS)}")
    run_dir, output = Path(run_dir).absolute(), Path(output).absolute() if output else None
    if checkpoint not in ("best", "last"):
        checkpoint = str(Path(checkpoint).absolute())
    with in_working_folder(run_dir):
        return _export(run_dir, format, output, checkpoint, force)


def _export(
    run_dir: Path, format: str, output: Path | None, checkpoint: str, force: bool
) -> dict[str, Any]:
    from brickwork.inference import load_trained
    from brickwork.models.anatomy import unwrap_model

    path = Path(output) if output is not None else Path(run_dir) / "export" / FORMATS[format]
    owned = path.resolve().parent == (Path(run_dir) / "export").resolve()
    written = [path, path.with_name("config.yaml")] if format == "safetensors" else [path]
    for target in written if format != "hf" else []:  # hf: a folder, checked as one below
        refuse_to_replace(target, "--output", force or owned)
    parts, folder = load_trained(Path(run_dir), checkpoint)
    model = unwrap_model(parts.model).eval()
    if format == "hf":
        gap = _to_hf_folder(model, parts, path, folder)
        return {"path": str(path), "format": format, "checkpoint": str(folder), "max_abs_diff": gap}
    example = _example_input(parts).to(parts.device)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--output {path}: cannot create its folder ({error.strerror})") from None
    exporter = {"safetensors": _to_safetensors, "torchscript": _to_torchscript, "onnx": _to_onnx}
    with torch.no_grad():  # an hf/ model returns an output object: compare its logits
        expected = logits_of(model(example))
        actual = logits_of(exporter[format](model, example, path, Path(run_dir)))
    gap = float((actual.float().cpu() - expected.float().cpu()).abs().max())
    if gap > 1e-4:
        raise RuntimeError(f"exported {format} model differs from the trained one by {gap:.3g}")
    return {"path": str(path), "format": format, "checkpoint": str(folder), "max_abs_diff": gap}


def _example_sample(parts: Any) -> Any:
    """A validation sample, or the data's placeholder when the run was rebuilt from
    `data.json` without its data (the shape is what tracing needs)."""
    if len(parts.data.val):
        return parts.data.val[0]
    if parts.data.example is None:
        raise ConfigError(
            "export: the dataset gives no example input without its data; keep the "
            "training data where the run's config points"
        )
    return parts.data.example


def _example_input(parts: Any) -> torch.Tensor:
    sample = _example_sample(parts)
    inputs = sample[0] if isinstance(sample, tuple | list) else sample
    if not isinstance(inputs, torch.Tensor):
        raise ConfigError(
            "export: this format needs a dataset whose samples are (tensor, target) pairs; "
            "for an hf/ model use --format hf"
        )
    return inputs.unsqueeze(0)  # (1, ...) a batch of one


def _to_safetensors(model: nn.Module, example: torch.Tensor, path: Path, run: Path) -> torch.Tensor:
    """The weights plus a copy of `config.yaml` beside them: enough to rebuild the model."""
    from safetensors.torch import save_file

    from brickwork.checkpoint import load_tensors, unshare_tensors

    save_file(unshare_tensors(model.state_dict()), str(path), metadata={"format": "pt"})
    from brickwork.run import read_run_config  # in today's meaning, whatever its format

    text = yaml.safe_dump(read_run_config(run), sort_keys=False)
    path.with_name("config.yaml").write_text(text, encoding="utf-8")
    reloaded = copy.deepcopy(model)
    reloaded.load_state_dict(load_tensors(path, example.device))
    return reloaded(example)


def _to_torchscript(model: nn.Module, example: torch.Tensor, path: Path, run: Path) -> torch.Tensor:
    with warnings.catch_warnings():  # TorchScript is deprecated upstream but still deploys widely
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, example)
        traced.save(str(path))
        loaded = torch.jit.load(str(path), map_location=example.device)
    return loaded(example)


def _to_onnx(model: nn.Module, example: torch.Tensor, path: Path, run: Path) -> torch.Tensor:
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(
            "--format onnx needs onnx and onnxruntime: pip install 'brickwork[onnx]'"
        ) from None
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (result,) = session.run(None, {"input": example.cpu().numpy()})
    return torch.from_numpy(result)


def _to_hf_folder(model: nn.Module, parts: Any, path: Path, checkpoint: Path) -> float:
    """save_pretrained (LoRA merged) plus the tokenizer or image processor; returns the
    logits' largest gap.

    Written to a temporary folder and renamed, so `path` is never half-written; an
    existing folder is replaced only when an earlier export wrote it.
    """
    import json
    import os

    from brickwork.models.huggingface import (
        merge_lora,
        preprocessor_of,
        quiet_transformers,
        transformer_of,
    )

    if transformer_of(model) is None:
        raise ConfigError(
            f"--format hf: the run's model is {type(model).__name__}, not an hf/ model; "
            "use --format safetensors, torchscript or onnx"
        )
    occupied = path.exists() and (not path.is_dir() or any(path.iterdir()))
    if occupied and not (path / EXPORT_MARKER).is_file():
        raise ConfigError(
            f"--output {path}: exists and was not written by brickwork export; choose a new folder"
        )
    inputs = _example_batch(parts)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        temporary.mkdir(parents=True, exist_ok=True)
        with quiet_transformers():  # no progress bars
            merge_lora(model).save_pretrained(temporary)  # type: ignore[operator]
        preprocessor = preprocessor_of(parts.data.extra)  # tokenizer or image processor
        if preprocessor is not None:
            preprocessor.save_pretrained(temporary)
        with torch.no_grad():
            expected = logits_of(model(**inputs))
            with quiet_transformers():
                reloaded = _load_auto(temporary, model)
            actual = logits_of(reloaded(**inputs))
        gap = float((actual.float().cpu() - expected.float().cpu()).abs().max())
        if gap > 1e-4:
            raise RuntimeError(f"exported hf model differs from the trained one by {gap:.3g}")
        marker = {"checkpoint": str(checkpoint), "max_abs_diff": gap}
        (temporary / EXPORT_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        if path.exists():
            shutil.rmtree(path)
        os.replace(temporary, path)
    except OSError as error:
        raise ConfigError(f"--output {path}: cannot write it ({error.strerror})") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return gap


def _example_batch(parts: Any) -> dict[str, torch.Tensor]:
    """A few validation samples, collated and on the model's device (keyword inputs)."""
    from torch.utils.data import default_collate

    from brickwork.batch import move_to_device, split_batch

    dataset = parts.data.val
    samples = [dataset[i] for i in range(min(4, len(dataset)))] or [_example_sample(parts)]
    inputs, _ = split_batch((parts.data.collate_fn or default_collate)(samples))
    if isinstance(inputs, torch.Tensor):  # images: the Auto image classes take pixel_values
        inputs = {"pixel_values": inputs}
    if not isinstance(inputs, dict):
        raise ConfigError("--format hf: the data give no keyword inputs; use data.tokenizer: model")
    return dict(move_to_device(inputs, parts.device))


def _load_auto(folder: Path, model: nn.Module) -> nn.Module:
    """The exported folder through transformers' Auto class for the task: no brickwork."""
    import transformers

    text = getattr(model, "main_input_name", "input_ids") == "input_ids"
    auto = (
        transformers.AutoModelForSequenceClassification
        if text
        else transformers.AutoModelForImageClassification
    )
    device = next(model.parameters()).device
    return auto.from_pretrained(str(folder)).to(device).eval()
