"""`brickwork tune --engine ray` refuses what cannot work before it starts Ray or makes a folder.

The command runs in this process (its own entry point), so each case costs no start-up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from brickwork.cli import main as brickwork
from brickwork.cli.tune import parse_resources

TINY = ["model.name=mlp", "trainer.test_after_fit=false"]
RAY = ["--engine", "ray", "--sampler", "random", "--pruner", "asha"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--resources-per-trial", "cpu=two"], "--resources-per-trial cpu=two: expected cpu=N"),
        (["--resources-per-trial", "tpu=1"], "--resources-per-trial tpu=1: expected cpu=N"),
        (["--resources-per-trial", "cpu=-1"], "--resources-per-trial cpu=-1: expected cpu=N"),
        (["trainer.devices=2"], "trainer.devices=2 trains each trial as 2 processes"),
    ],
)
def test_ray_choices_that_cannot_work_exit_2_with_the_fix_and_no_study_folder(
    tmp_path: Path, args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}\n")
    code = brickwork(["tune", "--space", str(space), "--study-dir", "s", *RAY, *args, *TINY])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err and err.count("\n") == 1
    assert not Path("s").exists()


def test_resources_per_trial_parse_to_what_ray_reserves_per_trial() -> None:
    assert parse_resources("cpu=2,gpu=0.5") == {"cpu": 2.0, "gpu": 0.5}
    assert parse_resources("gpu=1") == {"gpu": 1.0, "cpu": 1.0}  # a trial always holds a CPU
    assert parse_resources(None) == {"cpu": 1.0}
