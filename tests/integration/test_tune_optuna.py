"""`brickwork tune` with Optuna on digits: pruning, best.yaml, grids, failures, kill and resume.

Studies run through the CLI's own entry point in this process (as a user's command
does, minus the interpreter start-up), except the kill test, which needs a real
process to SIGKILL.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from brickwork.cli import main as brickwork
from brickwork.loop import fit
from brickwork.tune.optuna_engine import STUDY_NAME
from tests.conftest import FAST_MLP, run_cli

TINY = [
    *[o for o in FAST_MLP if not o.startswith("trainer.max_epochs")],
    "model.hidden_sizes=[16]",
    "data.batch_size=128",
    "early_stopping=null",
    "scheduler=null",
    "checkpoint.keep_k=0",
]


def _space(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _rows(study: Path) -> list[dict[str, str]]:
    with (study / "trials.csv").open() as handle:
        return list(csv.DictReader(handle))


def _study(study: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study / "optuna.journal"))
    )
    return optuna.load_study(study_name=STUDY_NAME, storage=storage)


def test_pruned_study_completes_prunes_and_writes_a_trainable_best_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = _space(tmp_path / "space.yaml", "optimizer.lr: {loguniform: [1.0e-5, 3.0e-2]}\n")
    code = brickwork(
        [
            "tune",
            "--space",
            str(space),
            "--trials",
            "6",
            "--pruner",
            "median",
            "--study-dir",
            "study",
            "trainer.max_epochs=2",
            *TINY,
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    rows = _rows(Path("study"))
    states = [r["state"] for r in rows]
    assert len(rows) == 6 and "pruned" in states and "complete" in states
    assert out.count("| best: #") == 6  # one live line per finished trial
    for row in rows:  # every trial is an ordinary run folder with its own config
        config = (Path(row["run_dir"]) / "config.yaml").read_text()
        assert f"lr: {float(row['optimizer.lr'])}" in config or row["optimizer.lr"] in config
    pruned = next(r for r in rows if r["state"] == "pruned")
    summary = json.loads((Path(pruned["run_dir"]) / "summary.json").read_text())
    assert summary["stop"]["kind"] == "pruned" and int(pruned["epochs"]) < 2
    assert (Path(pruned["run_dir"]) / "checkpoints" / "last").exists()
    best = rows[0]
    assert best["state"] == "complete"
    assert float(best["val/acc"]) == max(
        float(r["val/acc"]) for r in rows if r["state"] == "complete"
    )
    assert (Path("study") / "plots" / "history.png").stat().st_size > 0
    trained = fit("study/best.yaml", run_dir="retrain")  # best.yaml trains as it is
    assert trained["best"]["value"] == pytest.approx(float(best["val/acc"]), abs=1e-6)


def test_grid_enumerates_exactly_the_grid(tmp_path: Path) -> None:
    space = _space(
        tmp_path / "space.yaml",
        "optimizer.lr: [0.01, 0.003]\nmodel.hidden_sizes: [[8], [16, 8]]\n",
    )
    assert (
        brickwork(
            [
                "tune",
                "--space",
                str(space),
                "--study-dir",
                "grid",
                "--pruner",
                "none",
                "trainer.max_epochs=1",
                *TINY,
            ]
        )
        == 0
    )
    points = {(r["optimizer.lr"], r["model.hidden_sizes"]) for r in _rows(Path("grid"))}
    assert len(_rows(Path("grid"))) == 4
    assert points == {(lr, h) for lr in ("0.01", "0.003") for h in ("[8]", "[16, 8]")}


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path: Path) -> None:
    # A learning rate of 1e30 passes every check but sends the loss to Inf: the trial raises.
    space = _space(tmp_path / "space.yaml", "optimizer.lr: [0.01, 1.0e+30, 0.003]\n")
    assert (
        brickwork(
            [
                "tune",
                "--space",
                str(space),
                "--study-dir",
                "s",
                "--pruner",
                "none",
                "trainer.max_epochs=1",
                *TINY,
            ]
        )
        == 0
    )
    rows = {float(r["optimizer.lr"]): r for r in _rows(Path("s"))}
    assert rows[1e30]["state"] == "failed"
    assert "non-finite" in rows[1e30]["reason"] and "\n" not in rows[1e30]["reason"]
    assert rows[0.01]["state"] == rows[0.003]["state"] == "complete"


def test_a_study_where_every_trial_fails_stops_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = _space(tmp_path / "space.yaml", "optimizer.lr: {choice: [1.0e+30, 1.0e+31]}\n")
    code = brickwork(
        [
            "tune",
            "--space",
            str(space),
            "--trials",
            "10",
            "--study-dir",
            "s",
            "trainer.max_epochs=1",
            *TINY,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "no trial completed (3 ran)" in err and "Error" in err and "--resume" in err


def test_bad_space_is_one_line_exit_2_before_any_trial(tmp_path: Path) -> None:
    space = _space(tmp_path / "space.yaml", "trainer.max_epoch: {int: [1, 3]}\n")
    result = run_cli(["tune", "--space", str(space), "--study-dir", "s", *TINY])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "trainer.max_epoch" in result.stderr and "trainer.max_epochs" in result.stderr
    assert not Path("s").exists()


def test_an_existing_study_is_never_overwritten(tmp_path: Path) -> None:
    Path("s").mkdir()
    (Path("s") / "notes.txt").write_text("mine")
    space = _space(tmp_path / "space.yaml", "optimizer.lr: [0.01]\n")
    result = run_cli(["tune", "--space", str(space), "--study-dir", "s", *TINY])
    assert result.returncode == 2 and "not empty" in result.stderr
    assert (Path("s") / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_sigkilled_study_resumes_without_repeating_finished_trials(tmp_path: Path) -> None:
    space = _space(tmp_path / "space.yaml", "optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}\n")
    command = [
        sys.executable,
        "-m",
        "brickwork",
        "tune",
        "--space",
        str(space),
        "--trials",
        "3",
        "--pruner",
        "none",
        "--study-dir",
        "s",
        "trainer.max_epochs=4",
        *TINY,
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # Kill once the second trial has a checkpoint: mid-trial, with state to resume.
    deadline = time.monotonic() + 240
    while not (Path("s/trials/trial-0001/checkpoints/last").exists()):
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = _study(Path("s")).trials
    assert [t.state.name for t in before[:2]] == ["COMPLETE", "RUNNING"]

    result = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    trials = _study(Path("s")).trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3  # the budget, not repeated
    assert sum(t.user_attrs["run_dir"].endswith("trial-0000") for t in trials) == 1
    killed = trials[1]
    assert killed.state.name == "FAIL" and killed.user_attrs["interrupted"]
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == 1)
    assert retry.params == killed.params
    assert retry.user_attrs["run_dir"] == killed.user_attrs["run_dir"]  # same run folder
    log = (Path("s/trials/trial-0001") / "train.log").read_text()
    assert "resumed from" in log  # continued from its checkpoint, not from scratch
    summary = json.loads(Path("s/trials/trial-0001/summary.json").read_text())
    assert summary["status"] == "completed" and summary["num_epochs"] == 4


@pytest.mark.slow
def test_two_process_trials_prune_at_one_agreed_validation(tmp_path: Path) -> None:
    # Trial 1's lr cannot learn: the median pruner (2 startup trials) judges it after epoch 1
    # on rank 0, and both ranks stop there together, with one checkpoint.
    space = _space(tmp_path / "space.yaml", "optimizer.lr: [0.03, 0.01, 1.0e-7]\n")
    code = brickwork(
        [
            "tune",
            "--space",
            str(space),
            "--study-dir",
            "s",
            "--pruner",
            "median",
            "trainer.max_epochs=3",
            "trainer.devices=2",
            "trainer.device=cpu",
            *TINY,
        ]
    )
    assert code == 0
    rows = {r["optimizer.lr"]: r for r in _rows(Path("s"))}
    hopeless = rows["1e-07"]
    assert hopeless["state"] == "pruned", rows
    summary = json.loads((Path(hopeless["run_dir"]) / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["stop"]["kind"] == "pruned"
    assert summary["num_epochs"] < 3
    assert rows["0.03"]["state"] == "complete"
