"""W&B (offline) and MLflow (a real SQLite store), read back with their own formats and client.

The claim for both: a tracker holds every metric at every step that `metrics.jsonl`
holds, exactly once, in one tracker run per brickwork run, also after kills and resumes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from brickwork.checkpoint import list_checkpoints
from brickwork.errors import ConfigError
from brickwork.loop import fit
from tests.conftest import FAST

wandb = pytest.importorskip("wandb")
mlflow = pytest.importorskip("mlflow")

from brickwork.config import load_config  # noqa: E402
from brickwork.trackers import STEP_KEY  # noqa: E402
from brickwork.trackers.wandb_files import read_history, run_files  # noqa: E402

pytestmark = pytest.mark.slow

TRACKED = [*FAST, "loggers.wandb.enabled=true", "loggers.mlflow.enabled=true"]


def jsonl_pairs(run_dir: Path) -> Counter[tuple[str, int]]:
    """The (metric, step) pairs of `metrics.jsonl`, each counted once.

    The file writes `lr` twice at an epoch's last step (the logging row and the epoch
    row, the same value); a tracker holds it once.
    """
    pairs: set[tuple[str, int]] = set()
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        pairs.update((k, row["step"]) for k in row if k not in ("step", "epoch"))
    return Counter(pairs)


def wandb_pairs(run_dir: Path) -> tuple[set[str], Counter[tuple[str, int]], list[dict[str, Any]]]:
    """Run ids, (metric, step) counts and rows over every attempt's offline `.wandb` file."""
    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    run_ids = {path.stem.removeprefix("run-") for path in files}
    rows = [
        row
        for run_id in run_ids
        for p in run_files(run_dir / "wandb", run_id)
        for row in read_history(p)
    ]
    pairs: Counter[tuple[str, int]] = Counter()
    for row in rows:
        pairs.update((k, int(row[STEP_KEY])) for k in row if not k.startswith(("_", "trainer/")))
    return run_ids, pairs, rows


def _wandb_config_and_summary(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config and summary records of a `.wandb` file (the last value of each key)."""
    from wandb.proto import wandb_internal_pb2

    from brickwork.trackers.wandb_files import iter_record_bytes

    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for raw in iter_record_bytes(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            summary.update({i.key: json.loads(i.value_json) for i in record.summary.update})
    return config, summary


def mlflow_pairs(tracking_uri: str) -> tuple[list[Any], Counter[tuple[str, int]], Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    pairs: Counter[tuple[str, int]] = Counter()
    for run in runs:
        for key in run.data.metrics:
            pairs.update((key, m.step) for m in client.get_metric_history(run.info.run_id, key))
    return runs, pairs, client


def store_uri(cwd: Path) -> str:
    return f"sqlite:///{(cwd / 'runs' / 'mlflow.db').resolve()}"


def test_trackers_hold_config_summary_model_and_every_logged_step_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    run_dir = tmp_path / "run"
    overrides = [*TRACKED, "loggers.wandb.tags=[baseline,cnn]", "loggers.wandb.log_model=true"]
    fit(None, overrides=overrides, run_dir=run_dir)
    expected = jsonl_pairs(run_dir)
    assert max(expected.values()) == 1 and ("val/acc", 40) in expected

    run_ids, got, rows = wandb_pairs(run_dir)
    assert len(run_ids) == 1
    assert got == expected
    train_loss = {int(r[STEP_KEY]): r["train/loss"] for r in rows if "train/loss" in r}
    from_file = {
        json.loads(line)["step"]: json.loads(line)["train/loss"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if "train/loss" in json.loads(line)
    }
    assert train_loss == pytest.approx(from_file)

    config, summary = _wandb_config_and_summary(next(iter(run_files(run_dir / "wandb", *run_ids))))
    assert config["optimizer"]["lr"] == 0.003 and config["model"]["channels"] == [8, 16]
    assert summary["status"] == "completed" and summary["num_steps"] == 40
    assert summary["best/val/acc"] == pytest.approx(summary["final/val/acc"])

    runs, got, client = mlflow_pairs(store_uri(tmp_path))
    assert len(runs) == 1 and got == expected
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer.lr"] == "0.003"  # the digits default
    assert run.data.params["model.channels"] == "[8, 16]"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "summary.json", "model"} <= artifacts
    model = client.list_artifacts(run.info.run_id, "model")
    assert [a.path for a in model] == ["model/model.safetensors"] and model[0].file_size > 1000
    assert _tracker_files_in(home) == []  # neither tracker wrote into the home folder


def _tracker_files_in(home: Path) -> list[Path]:
    """What W&B or MLflow left in a home folder (matplotlib's font cache, written by
    whichever library imports it first, is not theirs)."""
    return [p for p in home.rglob("*") if "wandb" in str(p).lower() or "mlflow" in str(p).lower()]


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "brickwork", "train", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200", "HOME": str(cwd / "home")},
    )


def _kill_after_progress(process: subprocess.Popen[str], run_dir: Path, after: int) -> None:
    while process.poll() is None:
        steps = list_checkpoints(run_dir / "checkpoints")
        if steps and int(steps[-1].name.split("-")[1]) > after:
            time.sleep(0.3)  # let it log steps past the checkpoint: those come back on resume
            process.send_signal(signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.02)
    pytest.fail(f"the run ended before it could be killed: {process.stderr.read()}")  # type: ignore[union-attr]


def test_kill_and_resume_leave_one_tracker_run_with_each_metric_step_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (tmp_path / "home").mkdir()
    args = [
        *TRACKED[:-3],  # keep TensorBoard on: its steps are checked too
        "loggers.wandb.enabled=true",
        "loggers.mlflow.enabled=true",
        "trainer.max_epochs=3",
        "trainer.log_every_n_steps=2",
        "checkpoint.every_n_steps=7",
    ]
    for kill, after in enumerate((8, 25)):
        process = _start(
            ["--run-dir", str(run_dir), *args] if kill == 0 else ["--resume", str(run_dir)],
            tmp_path,
        )
        _kill_after_progress(process, run_dir, after)
    finished = _start(["--resume", str(run_dir)], tmp_path)
    _, stderr = finished.communicate(timeout=300)
    assert finished.returncode == 0, stderr
    assert "step must" not in stderr.lower()

    expected = jsonl_pairs(run_dir)
    assert max(expected.values()) == 1 and ("val/acc", 60) in expected
    run_ids, got, _ = wandb_pairs(run_dir)
    assert len(run_ids) == 1, run_ids  # the same W&B run, continued
    # Every attempt wrote into a folder of that one run (W&B names them by the second the
    # attempt started, so two attempts in one second share a folder).
    folders = list((run_dir / "wandb").glob("offline-run-*"))
    (run_id,) = run_ids
    assert folders and all(folder.name.endswith(f"-{run_id}") for folder in folders)
    assert got == expected
    runs, got, _ = mlflow_pairs(store_uri(tmp_path))
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert got == expected
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == sorted({s for k, s in expected if k == "train/loss"})
    assert _tracker_files_in(tmp_path / "home") == []


def test_a_chosen_tracker_that_is_not_installed_is_one_line_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # what Python does for a missing package
    with pytest.raises(ConfigError) as error:
        load_config(None, ["loggers.wandb.enabled=true"])
    message = str(error.value)
    assert "loggers.wandb.enabled" in message and "pip install 'brickwork[wandb]'" in message
    assert "\n" not in message
    load_config(None, ["loggers.wandb.enabled=false"])  # not chosen: not imported, no error
