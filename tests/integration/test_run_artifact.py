"""A finished run folder used as a user would: from another folder, from Python, with
inference-time overrides, and never writing over a file brickwork did not create."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

import brickwork
from brickwork.errors import ConfigError
from tests.conftest import run_cli, run_cli_in_process

TABLE = [
    "data.name=tabular_csv",
    "data.csv=data/train.csv",  # relative: read from the folder training ran in
    "data.target=kind",
    "data.id_column=sample",
    "model.name=mlp",
    "model.hidden_sizes=[16]",
    "trainer.max_epochs=2",
    "trainer.test_after_fit=false",
    "loggers.progress_bar=false",
    "loggers.tensorboard.enabled=false",
]


def _write_table(path: Path, rows: int, labelled: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample", "width", "colour", *(["kind"] if labelled else [])])
        for i in range(rows):
            kind = ["small", "big"][i % 2]
            row = [f"s{i:03d}", (i % 2) * 10 + i % 3, ["red", "blue"][i % 3 == 0]]
            writer.writerow([*row, *([kind] if labelled else [])])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("project")
    _write_table(project / "data" / "train.csv", 60)
    before = Path.cwd()
    os.chdir(project)
    try:
        brickwork.fit(None, overrides=TABLE, run_dir=project / "run")
    finally:
        os.chdir(before)
    return project / "run"


def test_predict_and_evaluate_from_python_in_another_folder(trained: Path, tmp_path: Path) -> None:
    _write_table(tmp_path / "new.csv", 4, labelled=False)
    rows = brickwork.predict(trained, "new.csv")  # relative to this folder, not the project
    assert [row["input"] for row in rows] == ["s000", "s001", "s002", "s003"]  # the id column
    assert {row["label"] for row in rows} <= {"big", "small"}
    assert all(0 < row["probability"] <= 1 for row in rows)
    results = brickwork.evaluate(trained, split="val")
    assert set(results["metrics"]) >= {"val/loss", "val/acc"}
    assert Path.cwd() == tmp_path  # the working folder was only borrowed


def test_predict_takes_inference_overrides_and_refuses_others(
    trained: Path, tmp_path: Path
) -> None:
    _write_table(tmp_path / "new.csv", 3, labelled=False)
    ok = run_cli(
        [
            "predict",
            str(trained),
            "data.id_column=colour",
            "--input",
            "new.csv",
            "--output",
            "out.csv",
        ]
    )
    assert ok.returncode == 0, ok.stderr
    assert Path("out.csv").read_text().splitlines()[1].startswith("blue,")
    refused = run_cli(
        [
            "predict",
            str(trained),
            "model.hidden_sizes=[8]",
            "--input",
            "new.csv",
            "--output",
            "other.csv",
        ]
    )
    assert refused.returncode == 2 and "inference-time keys" in refused.stderr
    with pytest.raises(ConfigError, match="inference-time keys"):
        brickwork.evaluate(trained, overrides=["optimizer.lr=1"])


def test_outputs_never_replace_a_users_file_without_force(trained: Path, tmp_path: Path) -> None:
    _write_table(tmp_path / "new.csv", 2, labelled=False)
    mine = tmp_path / "deploy"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own config\n")
    (tmp_path / "results.csv").write_text("mine\n")
    export = ["export", str(trained), "--output", str(mine / "model.safetensors")]
    refused = run_cli_in_process(export)
    assert refused.returncode == 2 and f"{mine / 'config.yaml'}" in refused.stderr
    assert "--force" in refused.stderr and not (mine / "model.safetensors").exists()
    assert (mine / "config.yaml").read_text() == "my own config\n"
    predict = ["predict", str(trained), "--input", "new.csv", "--output", "results.csv"]
    assert run_cli_in_process(predict).returncode == 2
    assert (tmp_path / "results.csv").read_text() == "mine\n"
    assert run_cli_in_process([*predict, "--force"]).returncode == 0
    assert run_cli_in_process([*export, "--force"]).returncode == 0
    assert (mine / "config.yaml").read_text() != "my own config\n"
