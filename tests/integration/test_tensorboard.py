"""TensorBoard events, read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from brickwork.loop import fit
from tests.conftest import FAST


def test_scalars_graph_histograms_and_image_grid_are_written(tmp_path: Path) -> None:
    overrides = [*FAST[:-1], "loggers.tensorboard.histogram_every_n_epochs=1"]
    fit(None, overrides=overrides, run_dir=tmp_path / "run")
    events = EventAccumulator(
        str(tmp_path / "run" / "tb"), size_guidance={"images": 0, "histograms": 0, "scalars": 0}
    )
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "val/loss", "val/acc", "lr", "train/loss_epoch"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("val/acc")] == [20, 40]
    assert tags["graph"] is True
    assert "weights/head.1.weight" in tags["histograms"]
    assert "grads/head.1.weight" in tags["histograms"]
    grid = events.Images("val/predictions")[-1]
    assert grid.width > 64 and grid.height > 64  # a grid of upscaled, captioned digits


def test_image_grid_samples_across_a_class_sorted_split_with_a_fixed_seed() -> None:
    from torch.utils.data import TensorDataset

    from brickwork.loggers import grid_indices

    labels = torch.arange(10).repeat_interleave(50)  # class-sorted, as an image folder reads
    dataset = TensorDataset(torch.zeros(500, 1), labels)
    indices = grid_indices(dataset, 32)
    assert len(set(indices)) == 32 and indices == grid_indices(dataset, 32)
    assert len({int(labels[i]) for i in indices}) >= 6  # the first 32 would be one class
    assert grid_indices(TensorDataset(torch.zeros(5, 1)), 32) == [0, 1, 2, 3, 4]
