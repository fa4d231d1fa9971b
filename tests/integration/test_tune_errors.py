"""`brickwork tune` refuses what cannot work before it creates a study folder (no Ray started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli

TINY = ["model.name=mlp", "trainer.test_after_fit=false"]


def test_pbt_over_a_key_that_cannot_change_on_resume_is_refused_before_the_study(
    tmp_path: Path,
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("model.dropout: {uniform: [0.0, 0.5]}\n")
    result = run_cli(
        [
            "tune",
            "--engine",
            "ray",
            "--space",
            str(space),
            "--sampler",
            "random",
            "--pruner",
            "pbt",
            "--study-dir",
            "s",
            *TINY,
        ]
    )
    assert result.returncode == 2 and "model.dropout cannot change" in result.stderr
    assert not Path("s").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            [
                "--engine",
                "ray",
                "--sampler",
                "bohb",
                "--pruner",
                "hyperband",
                "checkpoint.save_last=false",
            ],
            "checkpoint.save_last=true",
        ),
        (
            [
                "--engine",
                "ray",
                "--sampler",
                "random",
                "--pruner",
                "pbt",
                "checkpoint.every_n_epochs=2",
            ],
            "checkpoint.every_n_epochs=1",
        ),
        (["--pruner", "pbt"], "--engine ray"),
        (["--sampler", "grid"], "is a range"),
        (["--timeout", "soon"], "expected a duration"),
    ],
)
def test_engine_choices_that_cannot_work_exit_2_with_the_fix(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}\n")
    result = run_cli(["tune", "--space", str(space), "--study-dir", "s", *args, *TINY])
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and result.stderr.count("\n") == 1
    assert not Path("s").exists()
