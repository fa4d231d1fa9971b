"""The run folder as a user meets it: claimed atomically, never half-made, and never a
dead end after a failed start (the same command, run again, works)."""

from __future__ import annotations

import json
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from brickwork.config import load_config
from brickwork.errors import ConfigError
from brickwork.loop import fit
from brickwork.run import open_run
from tests.conftest import FAST, run_cli, run_cli_in_process
from tests.resume import StopAtStep

SHORT = [*FAST, "trainer.max_steps=2"]

# A dataset whose validation split fails to load while a file `broken` sits beside it,
# as an undecodable image or a bad label in a val CSV would: after the first epoch.
FLAKY_MODULE = """
from pathlib import Path

import torch
from torch.utils.data import Dataset, TensorDataset

from brickwork import register
from brickwork.data import DataBundle


class Val(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        if Path("broken").exists():
            raise ValueError("cannot decode image broken.png")
        return torch.zeros(1, 8, 8), 0


@register("dataset", "flaky_val")
def flaky_val(seed: int = 0) -> DataBundle:
    inputs, labels = torch.randn(32, 1, 8, 8), torch.arange(32) % 10
    return DataBundle(train=TensorDataset(inputs, labels), val=Val(), num_classes=10,
                      input_shape=(1, 8, 8), train_targets=labels)
"""


def test_runs_started_at_the_same_moment_get_different_folders() -> None:
    config = load_config(None, FAST)
    with ThreadPoolExecutor(max_workers=16) as pool:
        runs = list(pool.map(lambda _: open_run(config, None), range(64)))
    for run in runs:
        run.close()
    assert len({run.directory for run in runs}) == 64
    assert all((run.directory / "config.yaml").is_file() for run in runs)


def test_a_mistake_found_in_setup_leaves_no_run_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="class_weights"):
        # Passes the config check (a value of the right type); torch refuses it at build.
        fit(None, overrides=[*FAST, "loss.class_weights=[1, 2]"])
    assert not any(Path("runs").glob("*/*"))
    result = run_cli_in_process(["train", *FAST, "loss.class_weights=[1, 2]", "--run-dir", "mine"])
    assert result.returncode == 2 and "loss.class_weights has 2 values" in result.stderr
    assert not Path("mine").exists()


@pytest.mark.parametrize("retry", ["same-command", "resume"])
def test_a_run_that_failed_before_its_first_checkpoint_can_be_run_again(
    tmp_path: Path, retry: str
) -> None:
    (tmp_path / "flaky.py").write_text(textwrap.dedent(FLAKY_MODULE))
    (tmp_path / "broken").write_text("")
    command = ["train", "data.name=flaky_val", "imports=[flaky]", *SHORT, "--run-dir", "run"]
    failed = run_cli(command)
    assert failed.returncode == 1 and "cannot decode image broken.png" in failed.stderr
    assert json.loads(Path("run/summary.json").read_text())["status"] == "failed"
    (tmp_path / "broken").unlink()  # the user fixes the data
    again = run_cli(command if retry == "same-command" else ["train", "--resume", "run"])
    assert again.returncode == 0, again.stderr
    summary = json.loads(Path("run/summary.json").read_text())
    assert summary["status"] == "completed" and summary["num_steps"] > 0
    log = Path("run/train.log").read_text()
    assert log.count("training digits-cnn") == 2  # the first try's log stays, and continues


def test_a_folder_with_a_users_files_is_never_taken_over(tmp_path: Path) -> None:
    Path("mine").mkdir()
    (Path("mine") / "config.yaml").write_text("name: my own notes\n")
    (Path("mine") / "notes.txt").write_text("precious")
    result = run_cli_in_process(["train", *SHORT, "--run-dir", "mine"])
    assert result.returncode == 2 and "not empty" in result.stderr
    assert (Path("mine") / "notes.txt").read_text() == "precious"
    assert (Path("mine") / "config.yaml").read_text() == "name: my own notes\n"


def test_resume_auto_without_a_config_continues_the_default_configs_run(tmp_path: Path) -> None:
    fit(None, overrides=FAST, callbacks=[StopAtStep(3)])
    (stopped,) = Path("runs").glob("*/*")
    result = run_cli_in_process(["train", *FAST, "--resume", "auto"])
    assert result.returncode == 0, result.stderr
    assert list(Path("runs").glob("*/*")) == [stopped]  # continued, not a new run
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["num_epochs"] == 2
    assert "resumed from" in (stopped / "train.log").read_text()
