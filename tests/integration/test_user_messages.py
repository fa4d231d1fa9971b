"""What a user reads: test metrics where the other metrics are, the messages they need
on the console, and a typo in a late unfreeze found before the first step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from brickwork.errors import ConfigError
from brickwork.inspection import inspect_model
from brickwork.loop import fit
from tests.conftest import FAST, run_cli

TESTED = [o for o in FAST if not o.startswith(("trainer.test_after_fit", "loggers.tensorboard"))]


def test_test_metrics_reach_metrics_jsonl_and_tensorboard(tmp_path: Path) -> None:
    quick = [
        "trainer.max_steps=3",
        "loggers.tensorboard.graph=false",
        "loggers.tensorboard.image_grid=false",
    ]
    summary = fit(None, overrides=[*TESTED, *quick], run_dir="run")
    rows = [json.loads(line) for line in Path("run/metrics.jsonl").read_text().splitlines()]
    (test_row,) = [row for row in rows if "test/loss" in row]
    assert test_row["test/loss"] == pytest.approx(summary["test"]["test/loss"])
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    assert "test/loss" in events.Tags()["scalars"]


def test_an_unfreeze_pattern_that_matches_nothing_stops_before_the_first_step() -> None:
    late = ["finetune.freeze=backbone", "finetune.unfreeze=[{at_epoch: 50, modules: [featurs.*]}]"]
    with pytest.raises(ConfigError, match=r"finetune.unfreeze\[0\].modules: 'featurs.\*' matches"):
        fit(None, overrides=[*FAST, *late])
    assert not any(Path("runs").glob("*/*"))  # and no half-made run folder
    with pytest.raises(ConfigError, match="matches no parameter"):
        inspect_model(None, [*FAST, *late])


def test_pretrained_loading_and_unfreezing_are_shown_on_the_console() -> None:
    fit(None, overrides=[*FAST, "trainer.max_steps=2"], run_dir="source")
    result = run_cli(
        [
            "train",
            *FAST,
            "trainer.max_steps=22",
            "model.pretrained=source/checkpoints/last",
            "finetune.freeze=backbone",
            "finetune.unfreeze=[{at_epoch: 2, modules: [features.*]}]",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert "brickwork: pretrained: loaded" in result.stderr
    assert "brickwork: unfroze" in result.stderr
    assert "INFO" not in result.stderr
