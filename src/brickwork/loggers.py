"""Loggers: where metrics go for people and tools, behind one small protocol.

A `Logger` is told five things: the run starts (at step 0, or at the step a resume
continues from), here is the config, here are metrics at a step, here is a file worth
keeping, the run is over. The loop calls them at its own lines, on rank 0 only:

    logger.start(step)                  before the first step; drop anything past `step`
    logger.log_config(config)           the resolved config, as plain data
    logger.log_metrics(metrics, step, epoch)   each logging step and each epoch end;
                                        `epoch` counts from 1: the step's epoch is the N-th
    logger.log_artifact(path)           e.g. the best checkpoint, `summary.json`
    logger.close(summary)               always, also after an error

Built in: `MetricsFile` (`metrics.jsonl`, one JSON object per line) and
`TensorBoardLogger` (scalars, plus the model graph, histograms and a labelled image
grid through its callback hooks). A tracker such as W&B or MLflow is one small class
with these five methods. A logger that keeps state across a resume adds
`state_dict()`/`load_state_dict()`, like a callback.

Every logger continues from a resumed step: what the interrupted run logged past the
checkpoint's step is dropped, so nothing is counted twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

from brickwork.batch import call_model, logits_of
from brickwork.files import naming_file, write_atomically
from brickwork.heartbeat import HEARTBEAT_FILE, Heartbeat
from brickwork.models.anatomy import unwrap_model
from brickwork.run_format import run_format_of, upgrade_metrics_lines
from brickwork.version import RUN_FORMAT_VERSION

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from brickwork.config import Config, TensorBoardConfig
    from brickwork.data.bundle import DataBundle
    from brickwork.state import TrainState


@runtime_checkable
class Logger(Protocol):
    """What the loop tells every logger; see the module docstring for when."""

    def start(self, step: int) -> None: ...

    def log_config(self, config: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int, epoch: int) -> None: ...

    def log_artifact(self, path: Path) -> None: ...

    def close(self, summary: Mapping[str, Any]) -> None: ...


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
        # The format of the rows already in the file (read before this run rewrites
        # summary.json); a checkpoint's own record, if it has one, wins (load_state_dict).
        self._format = run_format_of(path.parent)

    def start(self, step: int) -> None:
        if step > 0 and self.path.exists():
            if self._num_bytes is not None:
                _truncate_to(self.path, self._num_bytes)
            else:  # a checkpoint from before the byte count was saved
                _truncate_after_step(self.path, step)
            if self._format < RUN_FORMAT_VERSION:  # an older run folder: one convention
                text = self.path.read_text(encoding="utf-8")
                write_atomically(self.path, upgrade_metrics_lines(text, self._format))
        self._handle = self.path.open("ab")
        self._num_bytes = self._handle.tell()

    def log_config(self, config: Mapping[str, Any]) -> None:
        pass  # the run folder's config.yaml already holds it

    def log_metrics(self, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        row = {"step": step, "epoch": epoch, **_finite_or_none(metrics)}
        try:
            self._handle.write((json.dumps(row) + "\n").encode("utf-8"))
            self._handle.flush()
        except OSError as error:  # a full disk: the message names this file
            raise naming_file(error, self.path) from None
        self._num_bytes = self._handle.tell()

    def log_artifact(self, path: Path) -> None:
        pass  # already in the run folder

    def close(self, summary: Mapping[str, Any]) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):  # a full disk already stopped the run
                self._handle.close()
            self._handle = None

    def state_dict(self) -> dict[str, Any]:
        return {"num_bytes": self._num_bytes, "format_version": RUN_FORMAT_VERSION}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._num_bytes = state.get("num_bytes")
        if "num_bytes" in state:  # the byte count is of a file in the checkpoint's format
            self._format = int(state.get("format_version", 1))


class TensorBoardLogger:
    """TensorBoard events under the run's `tb/` folder.

    Scalars come through the `Logger` methods; the graph, histograms and the image grid
    need the model, so they come through callback hooks (`on_epoch_end`).
    """

    def __init__(
        self,
        log_dir: Path,
        config: TensorBoardConfig,
        model: nn.Module,
        val_dataset: Dataset[Any] | None = None,
        label_names: list[str] | None = None,
        denormalize: Any = None,
    ) -> None:
        self.log_dir, self.config, self.model = log_dir, config, model
        self.val_dataset, self.label_names, self.denormalize = val_dataset, label_names, denormalize
        self.writer: Any = None
        self.hyperparameters: dict[str, Any] = {}

    def start(self, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events an interrupted run wrote after the resumed checkpoint.
        self.writer = SummaryWriter(str(self.log_dir), purge_step=step + 1 if step else None)
        if self.config.graph and step == 0:
            self._add_graph(self.model)

    def log_metrics(self, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        """One event for all of a step's metrics, not one per metric: TensorBoard's writer
        thread reopens the event file for each event it appends (tensorboard's own file
        layer, without TensorFlow), about 0.1 ms of CPU each on this project's VM."""
        from tensorboard.compat.proto.summary_pb2 import Summary
        from torch.utils.tensorboard.summary import scalar

        if metrics:
            values = [scalar(key, value).value[0] for key, value in metrics.items()]
            self.writer.file_writer.add_summary(Summary(value=values), step)

    def log_artifact(self, path: Path) -> None:
        pass

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        epoch = state.epoch_of_step
        every = self.config.histogram_every_n_epochs
        if every and (epoch + 1) % every == 0:
            self._add_histograms(state.model, state.step)
        if self.config.image_grid and any(k.startswith("val/") for k in metrics):
            self._add_image_grid(state.model, state.step)
        self.writer.flush()

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.hyperparameters = hyperparameters_of(config)

    def close(self, summary: Mapping[str, Any]) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):  # a full disk must not hide the real error
                self._add_hparams(summary)
            self.writer.close()
            self.writer = None

    def _add_hparams(self, summary: Mapping[str, Any]) -> None:
        """The run's hyperparameters with its best and final metrics, for the HParams tab.

        Written into the run's own event files (not a sub-run, as `add_hparams` would),
        so TensorBoard shows one row per run beside its scalars.
        """
        from torch.utils.tensorboard.summary import hparams

        results = hparam_metrics(summary)
        if not results or not self.hyperparameters:
            return
        experiment, session_start, session_end = hparams(self.hyperparameters, results)
        for event in (experiment, session_start, session_end):
            self.writer.file_writer.add_summary(event)
        step = int(summary.get("num_steps") or 0)
        for key, value in results.items():
            self.writer.add_scalar(key, value, step)

    def _example_batch(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.val_dataset is None or len(self.val_dataset) == 0:  # type: ignore[arg-type]
            return None
        samples = [
            self.val_dataset[i] for i in grid_indices(self.val_dataset, self.config.num_images)
        ]
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
        library = logging.getLogger("transformers")  # an hf/ model notes its loss when traced
        library_level = library.level
        library.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():  # add_graph traces with torch.jit, deprecated but
                warnings.simplefilter("ignore", FutureWarning)  # still TensorBoard's only way
                warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks (hf/)
                # Not strict: an hf/ model returns an output object (a dict) that the graph
                # may hold; a plain model returns a tensor either way.
                self.writer.add_graph(module, example[0][:1].to(device), use_strict_trace=False)
        except Exception as error:  # tracing fails on data-dependent control flow
            logging.getLogger("brickwork").warning("TensorBoard graph skipped: %s", error)
        finally:
            library.setLevel(library_level)
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
            output = call_model(module, inputs.to(device))  # logits, or an hf/ output object
            predictions = logits_of(output).argmax(dim=1).cpu()
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


# Config sections that say how a run is recorded, not what it trains: left out of HParams.
_NOT_HYPERPARAMETERS = ("loggers.", "checkpoint.", "imports", "callbacks", "trainer.stop_signals")


def hyperparameters_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened config as HParams values (numbers, text, booleans; lists as text)."""
    from brickwork.trackers import flatten_config

    out: dict[str, Any] = {}
    for key, value in flatten_config(config).items():
        if key.startswith(_NOT_HYPERPARAMETERS):
            continue
        out[key] = value if isinstance(value, bool | int | float | str) else str(value)
    return out


def hparam_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """`best/<monitor>` and `final/<metric>` of a summary, the columns HParams compares."""
    results: dict[str, float] = {}
    best = summary.get("best") or {}
    if isinstance(best.get("value"), int | float):
        results[f"best/{summary.get('monitor')}"] = float(best["value"])
    for key, value in (summary.get("final") or {}).items():
        if isinstance(value, int | float) and math.isfinite(value):
            results[f"final/{key}"] = float(value)
    return results


def _label(index: int, label_names: list[str] | None) -> str:
    return label_names[index] if label_names else str(index)


def _finite_or_none(metrics: Mapping[str, float]) -> dict[str, float | None]:
    """JSON has no NaN or Infinity: write them as null so every JSON reader can parse."""
    return {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}


def grid_indices(dataset: Dataset[Any], count: int, seed: int = 0) -> list[int]:
    """Which validation samples the image grid shows: a fixed-seed draw over the whole
    split, not its first `count` (in a class-sorted folder those are all one class).

    Only the drawn samples are read; the same draw every epoch and every run.
    """
    size = len(dataset)  # type: ignore[arg-type]
    if size <= count:
        return list(range(size))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(size, generator=generator)[:count].tolist())


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
    write_atomically(path, "".join(f"{line}\n" for line in kept))


def build_loggers(
    config: Config, run_dir: Path, model: nn.Module, data: DataBundle
) -> list[Logger]:
    """The loggers a config asks for; the metrics file is always one of them."""
    loggers: list[Logger] = [MetricsFile(run_dir / "metrics.jsonl")]
    tensorboard = config.loggers.tensorboard
    if tensorboard.enabled:
        loggers.append(
            TensorBoardLogger(
                run_dir / "tb", tensorboard, model, data.val, data.label_names, data.denormalize
            )
        )
    # Trackers import their package only when chosen (config.py checked it is installed).
    if config.loggers.wandb.enabled:
        from brickwork.trackers.wandb import WandbLogger

        loggers.append(WandbLogger(config.loggers.wandb, run_dir, config.name))
    if config.loggers.mlflow.enabled:
        from brickwork.trackers.mlflow import MlflowLogger

        loggers.append(MlflowLogger(config.loggers.mlflow, run_dir, config.name))
    loggers.append(Heartbeat(run_dir / HEARTBEAT_FILE))
    return loggers
