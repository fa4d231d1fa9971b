"""`brickwork train` end to end on the real digits data, through a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from brickwork.models.basic import SmallCNN
from tests.conftest import FAST, run_cli, run_cli_in_process


@pytest.mark.slow
def test_default_config_reaches_97_percent_test_accuracy(tmp_path: Path) -> None:
    result = run_cli(["train", "--run-dir", "run", "loggers.tensorboard.enabled=false"])
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["test"]["test/acc"] >= 0.97
    assert "status" in result.stdout and "best val/acc" in result.stdout  # the summary table


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One short CLI run shared by the read-only tests below: (run folder, stdout)."""
    root = tmp_path_factory.mktemp("trained")
    # FAST minus its last two entries: progress bar and TensorBoard on.
    result = run_cli(["train", "--run-dir", "run", *FAST[:-2]], cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "run", result.stdout


def test_run_folder_holds_what_the_contract_promises(trained: tuple[Path, str]) -> None:
    run, _ = trained
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "train.log"):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir())
    assert (run / "checkpoints" / "last").is_symlink()
    assert (run / "checkpoints" / "best").is_symlink()

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["trainer"]["max_epochs"] == 2 and config["model"]["channels"] == [8, 16]

    rows = pd.read_json(run / "metrics.jsonl", lines=True)
    assert {"step", "epoch", "train/loss", "val/loss", "val/acc", "lr"} <= set(rows.columns)
    assert rows["step"].is_monotonic_increasing

    summary = json.loads((run / "summary.json").read_text())
    assert summary["best"]["value"] == pytest.approx(rows["val/acc"].max())
    assert summary["num_steps"] == int(rows["step"].max())
    assert {"brickwork", "torch"} <= set(summary["versions"])
    assert summary["wall_s"] > 0
    assert "epoch 2/2" in (run / "train.log").read_text()


def test_plain_lines_when_stdout_is_not_a_terminal(trained: tuple[Path, str]) -> None:
    _, stdout = trained
    lines = [line for line in stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    assert "\x1b[" not in stdout  # no terminal control codes in a CI log


def test_checkpoint_weights_load_into_the_module_with_plain_pytorch(
    trained: tuple[Path, str],
) -> None:
    weights = load_file(trained[0] / "checkpoints" / "best" / "model.safetensors")
    model = SmallCNN(in_channels=1, num_classes=10, channels=(8, 16))
    model.load_state_dict(weights)  # strict: every key matches, no prefixes
    model.eval()
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_evaluate_and_predict_a_trained_run(trained: tuple[Path, str], tmp_path: Path) -> None:
    run = trained[0]
    result = run_cli(["evaluate", str(run), "--split", "test", "--output", "eval.json"])
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((tmp_path / "eval.json").read_text())
    assert 0.0 <= evaluation["metrics"]["test/acc"] <= 1.0
    matrix = np.array(evaluation["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 270  # 15% of 1,797 digits

    from sklearn.datasets import load_digits

    np.save(tmp_path / "new.npy", load_digits().images[:7])
    result = run_cli(["predict", str(run), "--input", "new.npy", "--output", "out.csv"])
    assert result.returncode == 0, result.stderr
    predictions = pd.read_csv(tmp_path / "out.csv")
    assert list(predictions.columns) == ["input", "class_index", "label", "probability"]
    assert len(predictions) == 7 and predictions["probability"].between(0, 1).all()


def test_predict_reads_a_folder_of_images(trained: tuple[Path, str], tmp_path: Path) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    folder = tmp_path / "scans"
    folder.mkdir()
    for index, image in enumerate(load_digits().images[:3]):
        ink_on_paper = 255 - (image * 255 / 16).astype(np.uint8)  # dark ink, white paper
        Image.fromarray(ink_on_paper).resize((32, 32)).save(folder / f"digit{index}.png")
    result = run_cli(["predict", str(trained[0]), "--input", "scans", "--output", "out.csv"])
    assert result.returncode == 0, result.stderr
    assert list(pd.read_csv(tmp_path / "out.csv")["input"]) == [f"digit{i}.png" for i in range(3)]


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from brickwork.cli import main\n"
        "for argv in (['--help'], ['train', '--help']):\n"
        "    try: main(argv)\n"
        "    except SystemExit: pass\n"
        "assert 'torch' not in sys.modules, 'torch imported by --help'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--resume" in result.stdout and "key=value" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["missing.yaml"], "missing.yaml: config file not found"),
        (["optimizer.lrr=0.1"], "did you mean `optimizer.lr`"),
        (["--resume", "nowhere"], "--resume nowhere: no such run folder"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(args: list[str], fragment: str) -> None:
    result = run_cli_in_process(["train", *args])
    assert result.returncode == 2
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_an_existing_run_folder_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("precious")
    result = run_cli_in_process(["train", "--run-dir", "run", *FAST])
    assert result.returncode == 2 and "--resume run" in result.stderr
    assert (tmp_path / "run" / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["keep.txt"]
