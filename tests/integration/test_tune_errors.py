"""`brickwork tune` refuses what cannot work before it creates a study folder (no Ray started).

The command runs in this process (its own entry point), so each case costs no start-up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from brickwork.cli import main as brickwork

TINY = ["model.name=mlp", "trainer.test_after_fit=false"]
RAY_BOHB = ["--engine", "ray", "--sampler", "bohb", "--pruner", "hyperband"]
RAY_PBT = ["--engine", "ray", "--sampler", "random", "--pruner", "pbt"]


@pytest.mark.parametrize(
    ("space_text", "args", "expected"),
    [
        ("model.dropout: {uniform: [0.0, 0.5]}", RAY_PBT, "model.dropout cannot change"),
        ("optimizer.lr: [0.01]", [*RAY_BOHB, "checkpoint.save_last=false"], "save_last=true"),
        ("optimizer.lr: [0.01]", [*RAY_PBT, "checkpoint.every_n_epochs=2"], "every_n_epochs=1"),
        ("optimizer.lr: [0.01]", ["--pruner", "pbt"], "--engine ray"),
        ("optimizer.lr: {uniform: [0.1, 0.2]}", ["--sampler", "grid"], "is a range"),
        ("optimizer.lr: [0.01]", ["--timeout", "soon"], "expected a duration"),
    ],
)
def test_choices_that_cannot_work_exit_2_with_the_fix_and_no_study_folder(
    tmp_path: Path,
    space_text: str,
    args: list[str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(space_text + "\n")
    code = brickwork(["tune", "--space", str(space), "--study-dir", "s", *args, *TINY])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err and err.count("\n") == 1
    assert not Path("s").exists()
