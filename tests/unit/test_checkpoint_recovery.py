"""Checkpoint files: atomic saves, verification, fallback to the last good one."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from brickwork.checkpoint import (
    MODEL_FILE,
    list_checkpoints,
    load_checkpoint,
    point_alias,
    resolve_checkpoint,
    save_checkpoint,
)
from brickwork.errors import CheckpointError
from brickwork.run import compare_configs, is_math_neutral


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((4,), value)}, "counters": {"step": int(value)}}


def test_corrupt_last_checkpoint_falls_back_to_the_previous_good_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for step in (1, 2):
        point_alias(tmp_path, "last", save_checkpoint(_state(step), tmp_path, step))
    newest = tmp_path / "step-00000002" / MODEL_FILE
    newest.write_bytes(newest.read_bytes()[:-3])  # a partial write
    with caplog.at_level(logging.WARNING, logger="brickwork"):
        chosen = resolve_checkpoint(tmp_path.parent / tmp_path.name)
    assert chosen.name == "step-00000001"
    assert "truncated" in caplog.text and "using step-00000001 instead" in caplog.text
    assert torch.equal(load_checkpoint(chosen)["model"]["w"], torch.full((4,), 1.0))


def test_saving_a_step_again_replaces_it_whole(tmp_path: Path) -> None:
    save_checkpoint(_state(3), tmp_path, 3)
    assert save_checkpoint(_state(4), tmp_path, 3).name == "step-00000003"  # kept
    save_checkpoint(_state(5), tmp_path, 3, replace=True)
    assert load_checkpoint(tmp_path / "step-00000003")["counters"]["step"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000003"]  # no leftovers


def test_a_non_checkpoint_folder_is_reported_with_a_fix(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="pass a brickwork run folder"):
        resolve_checkpoint(tmp_path)
    assert list_checkpoints(tmp_path / "missing") == []


def test_config_comparison_separates_math_from_bookkeeping() -> None:
    old = {"data": {"batch_size": 64}, "trainer": {"max_epochs": 2, "precision": "32"}}
    new = {"data": {"batch_size": 32}, "trainer": {"max_epochs": 5, "precision": "32"}}
    changes = compare_configs(old, new)
    assert changes == {"data.batch_size": (64, 32), "trainer.max_epochs": (2, 5)}
    assert not is_math_neutral("data.batch_size") and is_math_neutral("trainer.max_epochs")
    assert is_math_neutral("loggers.tensorboard.enabled")
    assert not is_math_neutral("trainer.accumulate_grad_batches")


def test_every_n_minutes_saves_mid_epoch(tmp_path: Path, fast_overrides: list[str]) -> None:
    from brickwork.loop import fit

    overrides = ["checkpoint.every_n_minutes=1e-9", "checkpoint.keep_k=9", "trainer.max_steps=3"]
    fit(overrides=[*fast_overrides, *overrides], run_dir=tmp_path / "run")
    saved = [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")]
    assert saved == ["step-00000001", "step-00000002", "step-00000003"]
