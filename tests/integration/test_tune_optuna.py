"""`brickwork tune` with Optuna on digits: pruning, best.yaml, grids, workers, samplers,
failures, kill and resume.

Studies run through the CLI's own entry point in this process (as a user's command
does, minus the interpreter start-up), except where a real process is the point: the
kill test (SIGKILL), the second worker of `--workers 2`, and training `best.yaml` in a
fresh process from another folder (nothing imported by the study may help it there).
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
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


def tune_args(space: Path, study: Path | str, *flags: str, epochs: int = 1) -> list[str]:
    """`brickwork tune` of a tiny digits MLP: the space, the study folder, flags, overrides.

    A config file goes last in `flags`: the words after the flags are the config, then
    `key=value` overrides.
    """
    return [
        "tune",
        "--space",
        str(space),
        "--study-dir",
        str(study),
        *flags,
        f"trainer.max_epochs={epochs}",
        *TINY,
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


# A project's own module, beside its config: a callback that holds a trial until a
# trial of another process has started too, so two workers must train at once (a
# timeout fails the trial, and the study's table shows it).
PROJECT_MODULE = '''"""tune_project_parts: a project's callback (for tests of tune --workers)."""
import os
import time
from pathlib import Path
from typing import Any

from brickwork.registry import register


@register("callback", "meet_another_trial")
class MeetAnotherTrial:
    """Train only once a trial of another process has started too (or fail)."""

    def __init__(self, folder: str, timeout_s: float = 300.0) -> None:
        self.folder, self.timeout_s = Path(folder), timeout_s

    def on_fit_start(self, state: Any) -> None:
        self.folder.mkdir(exist_ok=True)
        (self.folder / str(os.getpid())).touch()
        deadline = time.monotonic() + self.timeout_s
        while len(list(self.folder.iterdir())) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("no trial of another process started")
            time.sleep(0.05)
'''


def _write_project(root: Path) -> Path:
    """A project folder: configs/base.yaml importing its module, a CSV at a relative path."""
    (root / "configs").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "configs" / "tune_project_parts.py").write_text(PROJECT_MODULE)
    draw = random.Random(0)
    lines = ["x1,x2,x3,label"]
    for _ in range(240):
        x = [draw.gauss(0, 1) for _ in range(3)]
        lines.append(",".join(f"{v:.4f}" for v in x) + f",{'ab'[x[0] + x[1] > 0]}")
    (root / "data" / "points.csv").write_text("\n".join(lines) + "\n")
    config = root / "configs" / "base.yaml"
    config.write_text(
        "name: points\n"
        "imports: [tune_project_parts]\n"
        "data: {name: tabular_csv, csv: data/points.csv, target: label}\n"
        "model: {name: mlp}\n"
        f"callbacks: [{{name: meet_another_trial, folder: {root / 'meet'}}}]\n"
    )
    return config


@contextlib.contextmanager
def _stderr_of_every_process(path: Path) -> Iterator[None]:
    """What this process and the processes it starts write to stderr, into `path`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("w") as handle:
        os.dup2(handle.fileno(), 2)
        try:
            with contextlib.redirect_stderr(handle):
                yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


@pytest.fixture(scope="module")
def project_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, str]]:
    """A grid study of a project config run from the project folder with `--workers 2`.

    Yields the project folder, the study folder and what the workers wrote to stderr.
    """
    root = tmp_path_factory.mktemp("project")
    config = _write_project(root)
    space = _space(
        root / "space.yaml", "optimizer.lr: [0.01, 0.003]\nmodel.hidden_sizes: [[8], [16, 8]]\n"
    )
    cwd = Path.cwd()
    os.chdir(root)  # the project's data path is relative to it, as a user's would be
    try:
        with _stderr_of_every_process(root / "stderr.txt"):
            code = brickwork(
                tune_args(
                    space, "studies/points", "--workers", "2", "--pruner", "none", str(config)
                )
            )
    finally:
        os.chdir(cwd)
    err = (root / "stderr.txt").read_text()
    assert code == 0, err
    yield root, root / "studies" / "points", err


def test_grid_enumerates_exactly_the_grid(project_study: tuple[Path, Path, str]) -> None:
    _, study, _ = project_study
    rows = _rows(study)
    points = [(r["optimizer.lr"], r["model.hidden_sizes"]) for r in rows]
    assert sorted(points) == sorted((lr, h) for lr in ("0.01", "0.003") for h in ("[8]", "[16, 8]"))
    assert {r["state"] for r in rows} == {"complete"}


def test_two_workers_train_trials_at_once_without_lock_errors_or_duplicates(
    project_study: tuple[Path, Path, str],
) -> None:
    _, study, err = project_study
    trials = _study(study).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4  # none failed, none repeated
    assert len({t.user_attrs["run_dir"] for t in trials}) == 4
    workers = {t.user_attrs["worker"].split(":")[1] for t in trials}
    assert len(workers) == 2  # both processes trained trials
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))
    assert "lock" not in err.lower() and "Traceback" not in err


def test_best_yaml_trains_in_a_fresh_process_from_another_folder(
    project_study: tuple[Path, Path, str], tmp_path: Path
) -> None:
    # The project's module sits beside its config and its CSV path is relative to the
    # project folder: neither is beside best.yaml, nor under the folder it is trained from.
    root, study, _ = project_study
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli(["train", str(study / "best.yaml"), "--run-dir", "retrain"], cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    best = _rows(study)[0]
    summary = json.loads((elsewhere / "retrain" / "summary.json").read_text())
    assert summary["best"]["value"] == pytest.approx(float(best["val/loss"]), rel=1e-5)
    assert not (elsewhere / "data").exists() and (root / "data" / "points.csv").is_file()


def test_pruned_study_completes_prunes_and_writes_a_trainable_best_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = _space(tmp_path / "space.yaml", "optimizer.lr: {loguniform: [1.0e-5, 3.0e-2]}\n")
    code = brickwork(tune_args(space, "study", "--trials", "6", "--pruner", "median", epochs=2))
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


def test_cmaes_sampler_searches_the_ranges_and_warns_that_choices_are_random(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("cmaes", reason="--sampler cmaes needs pip install 'brickwork[tune]'")
    space = _space(
        tmp_path / "space.yaml",
        "optimizer.lr: {loguniform: [1.0e-3, 3.0e-2]}\nmodel.dropout: {uniform: [0.0, 0.3]}\n"
        "model.hidden_sizes: {choice: [[8], [16]]}\n",
    )
    code = brickwork(
        tune_args(space, "s", "--sampler", "cmaes", "--trials", "3", "--pruner", "none")
    )
    warned = [r.getMessage() for r in caplog.records if "--sampler cmaes" in r.getMessage()]
    assert code == 0
    assert len(warned) == 1 and "model.hidden_sizes is a choice" in warned[0]
    assert "drawn at random" in warned[0] and "--sampler tpe" in warned[0]
    trials = _study(Path("s")).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    # After its one random start-up trial, CMA-ES itself drew the ranges of each trial.
    assert all("cma:generation" in t.system_attrs for t in trials[1:])
    assert len({(t.params["optimizer.lr"], t.params["model.dropout"]) for t in trials}) == 3


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path: Path) -> None:
    # A learning rate of 1e30 passes every check but sends the loss to Inf: the trial raises.
    space = _space(tmp_path / "space.yaml", "optimizer.lr: [0.01, 1.0e+30, 0.003]\n")
    assert brickwork(tune_args(space, "s", "--pruner", "none")) == 0
    rows = {float(r["optimizer.lr"]): r for r in _rows(Path("s"))}
    assert rows[1e30]["state"] == "failed"
    assert "non-finite" in rows[1e30]["reason"] and "\n" not in rows[1e30]["reason"]
    assert rows[0.01]["state"] == rows[0.003]["state"] == "complete"


def test_a_study_where_every_trial_fails_stops_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = _space(tmp_path / "space.yaml", "optimizer.lr: {choice: [1.0e+30, 1.0e+31]}\n")
    code = brickwork(tune_args(space, "s", "--trials", "10"))
    err = capsys.readouterr().err
    assert code == 2
    assert "no trial completed (3 ran)" in err and "Error" in err and "--resume" in err


def test_bad_space_is_one_line_exit_2_before_any_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = _space(tmp_path / "space.yaml", "trainer.max_epoch: {int: [1, 3]}\n")
    code = brickwork(tune_args(space, "s"))
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "trainer.max_epoch" in err and "trainer.max_epochs" in err
    assert not Path("s").exists()


def test_an_existing_study_is_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("s").mkdir()
    (Path("s") / "notes.txt").write_text("mine")
    space = _space(tmp_path / "space.yaml", "optimizer.lr: [0.01]\n")
    code = brickwork(tune_args(space, "s"))
    assert code == 2 and "not empty" in capsys.readouterr().err
    assert (Path("s") / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in Path("s").iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_sigkilled_study_resumes_without_repeating_finished_trials(tmp_path: Path) -> None:
    space = _space(tmp_path / "space.yaml", "optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}\n")
    args = tune_args(space, "s", "--trials", "2", "--pruner", "none", epochs=3)
    command = [sys.executable, "-m", "brickwork", *args]
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
    assert len(complete) == 2  # the budget, not repeated
    assert sum(t.user_attrs["run_dir"].endswith("trial-0000") for t in trials) == 1
    killed = trials[1]
    assert killed.state.name == "FAIL" and killed.user_attrs["interrupted"]
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == 1)
    assert retry.params == killed.params
    assert retry.user_attrs["run_dir"] == killed.user_attrs["run_dir"]  # same run folder
    log = (Path("s/trials/trial-0001") / "train.log").read_text()
    assert "resumed from" in log  # continued from its checkpoint, not from scratch
    summary = json.loads(Path("s/trials/trial-0001/summary.json").read_text())
    assert summary["status"] == "completed" and summary["num_epochs"] == 3


@pytest.mark.slow
def test_two_process_trials_prune_at_one_agreed_validation(tmp_path: Path) -> None:
    # Successive halving promotes the first trial at epoch 1 and, of two, only the better:
    # the second trial's lr cannot learn, rank 0 is told to prune it after epoch 1, and
    # both ranks stop there together, with one checkpoint.
    space = _space(tmp_path / "space.yaml", "optimizer.lr: [0.03, 1.0e-7]\n")
    flags = ["--pruner", "asha", "trainer.devices=2", "trainer.device=cpu"]
    assert brickwork(tune_args(space, "s", *flags, epochs=2)) == 0
    rows = {r["optimizer.lr"]: r for r in _rows(Path("s"))}
    hopeless = rows["1e-07"]
    assert hopeless["state"] == "pruned", rows
    summary = json.loads((Path(hopeless["run_dir"]) / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["stop"]["kind"] == "pruned"
    assert summary["num_epochs"] == 1
    assert rows["0.03"]["state"] == "complete"
    assert (
        json.loads((Path(rows["0.03"]["run_dir"]) / "summary.json").read_text())["num_epochs"] == 2
    )
