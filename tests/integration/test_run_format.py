"""One epoch convention (counted from 1) in everything a user reads or writes, and run
folders of the older format (epochs from 0) that keep working: evaluated, predicted,
exported, listed and resumed exactly.

`tests/fixtures/run_format_1/` was written by brickwork at commit 0333ee4 (run folder
format 1), unpacked with `git archive 0333ee4 src` into a scratch folder and run as:

    PYTHONPATH=src python -m brickwork train trainer.max_epochs=2 \\
      trainer.test_after_fit=false trainer.log_every_n_steps=5 model.channels=[8,16] \\
      loggers.progress_bar=false loggers.tensorboard.enabled=false scheduler=null \\
      checkpoint.keep_k=1 finetune.freeze=backbone \\
      "finetune.unfreeze=[{at_epoch: 1, modules: [features.4, features.5]},
                          {at_epoch: 3, modules: [features.*]}]" \\
      name=old-finetune --run-dir fx

In that format `at_epoch: 1` meant the second epoch and `at_epoch: 3` the fourth.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from brickwork import fit
from brickwork.export import export_run
from brickwork.inference import evaluate_run, predict_run
from brickwork.run_catalog import read_runs
from tests.conftest import FAST
from tests.resume import assert_same_state, final_state

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_format_1"
STEPS_PER_EPOCH = 20  # 1,257 training digits in batches of 64


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    """A copy of the format-1 run folder (the fixture itself stays untouched)."""
    runs = tmp_path / "runs" / "old-finetune"
    runs.mkdir(parents=True)
    shutil.copytree(FIXTURE, runs / "20260101-000000", symlinks=True)
    return runs / "20260101-000000"


def _rows(run: Path) -> list[dict[str, float]]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _epoch_of(step: int) -> int:
    return -(-step // STEPS_PER_EPOCH)  # the N-th epoch holds steps 20(N-1)+1 .. 20N


def test_a_new_run_counts_epochs_from_one_in_every_file(fast_overrides: list[str]) -> None:
    overrides = [*fast_overrides, "finetune.freeze=backbone"]
    overrides.append("finetune.unfreeze=[{at_epoch: 2, modules: [features.*]}]")
    unfrozen_at: list[int] = []

    class Watch:
        def on_epoch_start(self, state: object) -> None:
            model = state.model  # type: ignore[attr-defined]
            if not unfrozen_at and all(p.requires_grad for p in model.parameters()):
                unfrozen_at.append(state.epoch + 1)  # type: ignore[attr-defined]

    summary = fit(None, overrides=overrides, run_dir="run", callbacks=[Watch()])
    assert unfrozen_at == [2]  # at_epoch: 2 is the second epoch, "epoch 2/2" on the console
    rows = _rows(Path("run"))
    assert rows and all(row["epoch"] == _epoch_of(int(row["step"])) for row in rows)
    assert summary["best"]["epoch"] == _epoch_of(summary["best"]["step"]) == 2
    assert json.loads(Path("run/summary.json").read_text())["format_version"] == 2


def test_at_epoch_zero_is_refused_in_one_line_that_says_epochs_count_from_one() -> None:
    from brickwork.config import load_config
    from brickwork.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_config(None, ["finetune.unfreeze=[{at_epoch: 0, modules: [features.*]}]"])
    assert "at_epoch" in str(caught.value) and "\n" not in str(caught.value)


def test_an_old_run_resumes_exactly_and_unfreezes_at_the_same_real_epoch(
    old_run: Path, tmp_path: Path
) -> None:
    """Two more epochs on the old run equal four uninterrupted epochs of today's code with
    the stages written in today's numbering (the second and the fourth epoch)."""
    today = [
        *[o for o in FAST if not o.startswith(("trainer.max_epochs", "model."))],
        "model.channels=[8,16]",
        "scheduler=null",
        "checkpoint.keep_k=1",
        "finetune.freeze=backbone",
        "finetune.unfreeze=[{at_epoch: 2, modules: [features.4, features.5]},"
        " {at_epoch: 4, modules: [features.*]}]",
        "name=old-finetune",
        "trainer.max_epochs=4",
    ]
    fit(None, overrides=today, run_dir=tmp_path / "whole")
    fit(None, overrides=["trainer.max_epochs=4"], resume=old_run)
    assert_same_state(final_state(tmp_path / "whole"), final_state(old_run))

    rows = _rows(old_run)  # the old rows were rewritten: one convention in one file
    assert [r["step"] for r in rows] == [r["step"] for r in _rows(tmp_path / "whole")]
    assert all(row["epoch"] == _epoch_of(int(row["step"])) for row in rows)
    summary = json.loads((old_run / "summary.json").read_text())
    assert summary["format_version"] == 2
    assert summary["best"]["epoch"] == _epoch_of(summary["best"]["step"])
    stages = yaml.safe_load((old_run / "config.yaml").read_text())["finetune"]["unfreeze"]
    assert [s["at_epoch"] for s in stages] == [2, 4]


def test_an_old_run_evaluates_predicts_exports_and_is_listed(old_run: Path, tmp_path: Path) -> None:
    before = (old_run / "metrics.jsonl").read_bytes()
    metrics = evaluate_run(old_run, split="val")["metrics"]
    recorded = json.loads((old_run / "summary.json").read_text())["final"]["val/acc"]
    assert metrics["val/acc"] == pytest.approx(recorded)
    np.save(tmp_path / "inputs.npy", np.zeros((3, 8, 8), dtype=np.float32))
    assert predict_run(old_run, tmp_path / "inputs.npy", tmp_path / "out.csv") == 3
    exported = export_run(old_run, "safetensors", tmp_path / "export" / "model.safetensors")
    assert exported["max_abs_diff"] == 0.0
    config = yaml.safe_load((tmp_path / "export" / "config.yaml").read_text())
    assert [s["at_epoch"] for s in config["finetune"]["unfreeze"]] == [2, 4]  # today's meaning
    (row,) = read_runs(tmp_path / "runs")
    assert row.status == "completed" and row.epochs == 2
    assert row.config["finetune.unfreeze"][1]["at_epoch"] == 4
    assert (old_run / "metrics.jsonl").read_bytes() == before  # reading changes nothing
