"""Each `brickwork new` template, generated into a temporary folder, works with no edits.

For each template: components are added with `brickwork add` (model, dataset, callback),
the project's own tests pass under pytest in the project folder (a real subprocess, as
a user runs them), and then, from another working folder, `train` on
`configs/base.yaml`, `evaluate`, `predict` on the template's sample inputs and
`export` all succeed on the run. `train` to `export` go through `brickwork.cli.main`
in-process to save a Python start-up each; one template repeats `train`, `predict` and
`evaluate` in fresh processes, where nothing is imported yet and the run's own
`config.yaml` must find the project's package.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from brickwork.cli import main
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

# One short epoch, no TensorBoard, no progress bar.
TINY = [
    "trainer.max_epochs=1",
    "data.batch_size=128",
    "loggers.progress_bar=false",
    "loggers.tensorboard.enabled=false",
]
PREDICT_INPUT = {
    "image": "data/predict.npy",
    "text": "data/predict.csv",
    "tabular": "data/predict.csv",
}


def _num_inputs(path: Path) -> int:
    if path.suffix == ".npy":
        import numpy as np

        return len(np.load(path, allow_pickle=False))
    with path.open(newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


@pytest.mark.parametrize("template", ["image", "text", "tabular"])
def test_a_new_project_passes_its_tests_and_trains_evaluates_predicts_exports_as_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_registry: None, template: str
) -> None:
    package = f"proj_{template}"
    assert main(["new", package, "--template", template]) == 0
    project = tmp_path / package
    monkeypatch.chdir(project)
    for kind, name in [("model", "net"), ("dataset", "data"), ("callback", "counter")]:
        assert main(["add", kind, f"{template}_{name}"]) == 0  # unique across templates

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = project / "runs" / "first"
    assert (
        main(["train", str(project / "configs" / "base.yaml"), *TINY, "--run-dir", str(run)]) == 0
    )
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"

    assert main(["evaluate", str(run), "--output", "eval.json"]) == 0
    metrics = json.loads(Path("eval.json").read_text())["metrics"]
    assert 0.0 <= metrics["test/acc"] <= 1.0

    inputs = project / PREDICT_INPUT[template]
    assert main(["predict", str(run), "--input", str(inputs), "--output", "out.csv"]) == 0
    with open("out.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = json.loads((run / "data.json").read_text())["label_names"]
    assert len(rows) == _num_inputs(inputs) and {row["label"] for row in rows} <= set(labels)

    assert main(["export", str(run), "--format", "torchscript", "--output", "model.pt"]) == 0
    assert Path("model.pt").stat().st_size > 0


def test_fresh_processes_find_the_project_from_its_parent_and_from_a_run_inside_it(
    tmp_path: Path, own_registry: None
) -> None:
    assert main(["new", "fresh_text", "--template", "text"]) == 0
    project = tmp_path / "fresh_text"
    sample = project / "data" / "predict.csv"
    # From the folder holding the project, with the run outside the project; trained
    # in-process, used below by processes that have imported nothing yet.
    train = ["train", "fresh_text/configs/experiment.yaml", *TINY, "--run-dir", "runs/exp"]
    assert main(train) == 0
    predict = run_cli(["predict", "runs/exp", "--input", str(sample), "--output", "p.csv"])
    assert predict.returncode == 0, predict.stderr[-2000:]
    assert (tmp_path / "p.csv").read_text().count("\n") == 1 + _num_inputs(sample)
    # The run folder moved into the project, used from an unrelated folder.
    shutil.copytree(tmp_path / "runs" / "exp", project / "runs" / "exp")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    evaluate = run_cli(["evaluate", str(project / "runs" / "exp")], cwd=elsewhere)
    assert evaluate.returncode == 0, evaluate.stderr[-2000:]
    assert "test/acc" in evaluate.stdout
