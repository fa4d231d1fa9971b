"""The loop's behaviour a user relies on: hook order, accumulation, clipping, precision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from brickwork.checkpoint import load_checkpoint
from brickwork.loop import fit
from tests.conftest import FAST, FAST_MLP


class Recorder:
    """Records every hook call, as Lightning's hook-order test does."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_fit_start(self, state: Any) -> None:
        self.calls.append("fit_start")

    def on_epoch_start(self, state: Any) -> None:
        self.calls.append(f"epoch_start:{state.epoch}")

    def on_step_end(self, state: Any, logs: dict[str, float]) -> None:
        if not torch.is_grad_enabled():
            raise AssertionError("training steps must build graphs")
        self.calls.append("step")

    def on_validation_end(self, state: Any, metrics: dict[str, float]) -> None:
        self.calls.append(f"validation_end:{sorted(metrics)}")

    def on_epoch_end(self, state: Any, metrics: dict[str, float]) -> None:
        self.calls.append(f"epoch_end:{state.epoch}")

    def on_exception(self, state: Any, error: BaseException) -> None:
        self.calls.append(f"exception:{type(error).__name__}")

    def on_fit_end(self, state: Any, summary: dict[str, Any]) -> None:
        self.calls.append(f"fit_end:{summary['status']}")


def test_hooks_fire_in_documented_order(tmp_path: Path) -> None:
    recorder = Recorder()
    fit(
        None, overrides=[*FAST, "trainer.max_steps=3"], run_dir=tmp_path / "r", callbacks=[recorder]
    )
    assert recorder.calls == [
        "fit_start",
        "epoch_start:0",
        "step",
        "step",
        "step",
        "validation_end:['val/acc', 'val/f1', 'val/loss']",
        "epoch_end:0",
        "fit_end:completed",
    ]


def test_an_error_in_user_code_reaches_on_exception_and_is_not_hidden(tmp_path: Path) -> None:
    recorder = Recorder()

    def broken_loss(model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        raise RuntimeError("bug in my loss")

    with pytest.raises(RuntimeError, match="bug in my loss"):
        fit(
            None,
            overrides=FAST,
            run_dir=tmp_path / "r",
            callbacks=[recorder],
            compute_loss=broken_loss,
        )
    assert recorder.calls[-2:] == ["exception:RuntimeError", "fit_end:failed"]
    assert '"status": "failed"' in (tmp_path / "r" / "summary.json").read_text()


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last")["model"]


def test_accumulating_two_batches_of_16_equals_one_batch_of_32(tmp_path: Path) -> None:
    common = [
        *FAST_MLP,
        "model.dropout=0",
        "trainer.max_steps=12",
        "optimizer.name=sgd",
        "optimizer.lr=0.1",
        "data.shuffle=false",
    ]
    fit(None, overrides=[*common, "data.batch_size=32"], run_dir=tmp_path / "big")
    fit(
        None,
        overrides=[*common, "data.batch_size=16", "trainer.accumulate_grad_batches=2"],
        run_dir=tmp_path / "accumulated",
    )
    big, accumulated = _weights(tmp_path / "big"), _weights(tmp_path / "accumulated")
    for key in big:
        torch.testing.assert_close(accumulated[key], big[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("clip", ["norm", "value"])
def test_gradient_clipping_keeps_training_stable_at_a_huge_lr(tmp_path: Path, clip: str) -> None:
    overrides = [
        *FAST_MLP,
        "optimizer.name=sgd",
        "optimizer.lr=5.0",
        "scheduler=null",
        "trainer.gradient_clip_val=0.01",
        f"trainer.gradient_clip_algorithm={clip}",
    ]
    summary = fit(None, overrides=overrides, run_dir=tmp_path / "r")
    assert torch.isfinite(torch.tensor(summary["final"]["val/loss"]))


def test_bf16_autocast_trains_on_cpu(tmp_path: Path) -> None:
    summary = fit(None, overrides=[*FAST, "trainer.precision=bf16"], run_dir=tmp_path / "r")
    assert summary["status"] == "completed"
    assert summary["final"]["val/acc"] > 0.5  # two epochs of a tiny CNN in bf16 still learn


def test_early_stopping_ends_the_run_and_says_why(tmp_path: Path) -> None:
    overrides = [
        *FAST,
        "trainer.max_epochs=30",
        "early_stopping.patience=1",
        "early_stopping.min_delta=10",
        "checkpoint.monitor=val/loss",
        "checkpoint.mode=min",
    ]
    summary = fit(None, overrides=overrides, run_dir=tmp_path / "r")
    assert summary["status"] == "early_stopped"
    assert summary["num_epochs"] == 2  # first validation sets the best, the second fails to beat it
    assert "val/loss did not improve" in summary["stop_reason"]


def test_a_misspelled_monitor_names_the_metrics_that_exist(tmp_path: Path) -> None:
    from brickwork.errors import ConfigError

    with pytest.raises(ConfigError, match=r"checkpoint.monitor = 'val/accuracy'.*val/acc"):
        fit(None, overrides=[*FAST, "checkpoint.monitor=val/accuracy"], run_dir=tmp_path / "r")


@pytest.mark.parametrize("name", ["step", "cosine", "onecycle", "reduce_on_plateau"])
def test_every_scheduler_changes_the_learning_rate(tmp_path: Path, name: str) -> None:
    import json

    extra = {
        "step": ["scheduler.step_size=1"],
        "reduce_on_plateau": [
            "scheduler.patience=0",
            "scheduler.monitor=val/acc",
            "scheduler.mode=min",
        ],
    }.get(name, [])
    overrides = [*FAST, "trainer.max_epochs=3", f"scheduler.name={name}", *extra]
    fit(None, overrides=overrides, run_dir=tmp_path / "r")
    rows = [
        json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len({row["lr"] for row in rows}) > 1
