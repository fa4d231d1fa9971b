"""Loggers: callbacks that record metrics for people and tools.

- `MetricsFile`: `metrics.jsonl`, one JSON object per line (`step`, `epoch`,
  `train/loss`, `val/acc`, `lr`, ...), readable by pandas or any JSON-lines reader.
- `TensorBoardLogger`: scalars, the model graph, weight and gradient histograms, and
  a grid of validation images labelled with prediction and truth.

Both continue from a resumed step: rows and events past the checkpoint's step,
written by the interrupted run, are dropped so nothing is counted twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from brickwork.state import unwrap_model

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from brickwork.config import TensorBoardConfig
    from brickwork.state import TrainState


class MetricsFile:
    """Append-only `metrics.jsonl`; flushed per line so a crash loses at most one row.

    Its length in bytes rides in every checkpoint, so a resume cuts the file back to
    exactly what it held at that checkpoint: rows the interrupted run wrote later
    (including an epoch-end row of the checkpoint's own step) are not repeated.
    """

    state_key = "metrics_file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: Any = None
        self._num_bytes: int | None = None  # the file's length at the last write or resume

    def on_fit_start(self, state: TrainState) -> None:
        if state.step > 0 and self.path.exists():
            if self._num_bytes is not None:
                _truncate_to(self.path, self._num_bytes)
            else:  # a checkpoint from before the byte count was saved
                _truncate_after_step(self.path, state.step)
        self._handle = self.path.open("ab")
        self._num_bytes = self._handle.tell()

    def on_step_end(self, state: TrainState, logs: dict[str, float]) -> None:
        if logs:
            self.write(state, logs)

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        self.write(state, metrics)

    def write(self, state: TrainState, metrics: dict[str, float]) -> None:
        row = {"step": state.step, "epoch": state.epoch_of_step, **_finite_or_none(metrics)}
        self._handle.write((json.dumps(row) + "\n").encode("utf-8"))
        self._handle.flush()
        self._num_bytes = self._handle.tell()

    def on_fit_end(self, state: TrainState, summary: dict[str, Any]) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):  # a full disk already stopped the run
                self._handle.close()
            self._handle = None

    def state_dict(self) -> dict[str, Any]:
        return {"num_bytes": self._num_bytes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._num_bytes = state.get("num_bytes")


class TensorBoardLogger:
    """TensorBoard events under the run's `tb/` folder."""

    def __init__(
        self,
        log_dir: Path,
        config: TensorBoardConfig,
        val_dataset: Dataset[Any] | None = None,
        label_names: list[str] | None = None,
        denormalize: Any = None,
    ) -> None:
        self.log_dir, self.config = log_dir, config
        self.val_dataset, self.label_names, self.denormalize = val_dataset, label_names, denormalize
        self.writer: Any = None

    def on_fit_start(self, state: TrainState) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events an interrupted run wrote after the resumed checkpoint.
        self.writer = SummaryWriter(
            str(self.log_dir), purge_step=state.step + 1 if state.step else None
        )
        if self.config.graph and state.step == 0:
            self._add_graph(state.model)

    def on_step_end(self, state: TrainState, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            self.writer.add_scalar(key, value, state.step)

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, state.step)
        epoch = state.epoch_of_step
        every = self.config.histogram_every_n_epochs
        if every and (epoch + 1) % every == 0:
            self._add_histograms(state.model, state.step)
        if self.config.image_grid and any(k.startswith("val/") for k in metrics):
            self._add_image_grid(state.model, state.step)
        self.writer.flush()

    def on_fit_end(self, state: TrainState, summary: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.close()

    def _example_batch(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.val_dataset is None or len(self.val_dataset) == 0:  # type: ignore[arg-type]
            return None
        count = min(self.config.num_images, len(self.val_dataset))  # type: ignore[arg-type]
        samples = [self.val_dataset[i] for i in range(count)]
        if not isinstance(samples[0], tuple | list) or not isinstance(samples[0][0], torch.Tensor):
            return None
        if len({tuple(s[0].shape) for s in samples}) > 1:  # variable-length (text): no stacking
            return None
        inputs = torch.stack([s[0] for s in samples])
        targets = torch.as_tensor([int(s[1]) for s in samples])
        return inputs, targets

    def _add_graph(self, model: nn.Module) -> None:
        example = self._example_batch()
        if example is None:
            return
        module = unwrap_model(model)
        device = next(module.parameters()).device
        was_training = module.training
        module.eval()  # eval: dropout draws no random numbers, so resume stays exact
        try:
            with warnings.catch_warnings():  # add_graph traces with torch.jit, deprecated but
                warnings.simplefilter("ignore", FutureWarning)  # still TensorBoard's only way
                self.writer.add_graph(module, example[0][:1].to(device))
        except Exception as error:  # tracing fails on data-dependent control flow
            logging.getLogger("brickwork").warning("TensorBoard graph skipped: %s", error)
        finally:
            module.train(was_training)

    def _add_histograms(self, model: nn.Module, step: int) -> None:
        for name, param in unwrap_model(model).named_parameters():
            self.writer.add_histogram(f"weights/{name}", param.detach().cpu(), step)
            if param.grad is not None:
                self.writer.add_histogram(f"grads/{name}", param.grad.detach().cpu(), step)

    @torch.no_grad()
    def _add_image_grid(self, model: nn.Module, step: int) -> None:
        example = self._example_batch()
        if example is None or example[0].dim() != 4:  # only (B, C, H, W) images
            return
        inputs, targets = example
        module = unwrap_model(model)
        was_training = module.training
        module.eval()
        try:
            device = next(module.parameters()).device
            predictions = module(inputs.to(device)).argmax(dim=1).cpu()
        finally:
            module.train(was_training)
        images = self.denormalize(inputs) if self.denormalize else inputs
        grid = labelled_grid(images, predictions, targets, self.label_names)
        self.writer.add_image("val/predictions", grid, step)


def labelled_grid(
    images: torch.Tensor,
    predictions: torch.Tensor,
    targets: torch.Tensor,
    label_names: list[str] | None = None,
    tile_px: int = 64,
) -> torch.Tensor:
    """A `make_grid` of images, each captioned `pred/true`: green when right, red when wrong."""
    import numpy as np
    from PIL import Image, ImageDraw
    from torchvision.utils import make_grid

    tiles = []
    for image, predicted, truth in zip(images, predictions, targets, strict=True):
        grey_or_rgb = image.clamp(0, 1)
        if grey_or_rgb.shape[0] == 1:
            grey_or_rgb = grey_or_rgb.expand(3, -1, -1)
        pixels = (grey_or_rgb[:3].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        tile = Image.fromarray(pixels).resize((tile_px, tile_px), Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(tile)
        colour = (0, 200, 0) if int(predicted) == int(truth) else (230, 0, 0)
        draw.rectangle((0, 0, tile_px, 11), fill=(0, 0, 0))
        draw.text(
            (2, 0),
            f"{_label(int(predicted), label_names)}/{_label(int(truth), label_names)}",
            fill=colour,
        )
        tiles.append(torch.from_numpy(np.array(tile)).permute(2, 0, 1))
    return make_grid(torch.stack(tiles), nrow=8, padding=2)


def _label(index: int, label_names: list[str] | None) -> str:
    return label_names[index] if label_names else str(index)


def _finite_or_none(metrics: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN or Infinity: write them as null so every JSON reader can parse."""
    return {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}


def _truncate_to(path: Path, num_bytes: int) -> None:
    """Cut `path` back to its first `num_bytes` bytes (what a checkpoint recorded)."""
    with path.open("rb+") as handle:
        handle.truncate(min(num_bytes, os.fstat(handle.fileno()).st_size))
        handle.flush()
        os.fsync(handle.fileno())


def _truncate_after_step(path: Path, step: int) -> None:
    """Drop rows an interrupted run wrote after the checkpoint we resume from."""
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the crash
            continue
        if row.get("step", 0) <= step:
            kept.append(line)
    temporary = path.with_suffix(".jsonl.tmp")
    temporary.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
    os.replace(temporary, path)
