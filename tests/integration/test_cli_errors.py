"""Bad configs through the real CLI entry point: exit code 2, one line, the fix.

These call `brickwork.cli.main` in-process (the same argparse, validation and error
handling the console script runs) so the whole table costs a second; the subprocess
path is covered in test_train_cli.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from brickwork.cli import main

BAD_CONFIGS = [
    # (YAML text, override, fragments the one-line message must contain)
    ("model: [", None, ["line 1", "fix the YAML syntax"]),
    ("- just\n- a list\n", None, ["expected a mapping of sections"]),
    ("optimizer:\n  lrr: 0.1\n", None, ["optimizer.lrr", "did you mean `optimizer.lr`"]),
    ("trainer:\n  max_epoch: 3\n", None, ["trainer.max_epoch", "`trainer.max_epochs`"]),
    ("trainer:\n  max_epochs: -3\n", None, ["trainer.max_epochs = -3", "greater than 0"]),
    ("data:\n  batch_size: many\n", None, ["data.batch_size = 'many'", "integer"]),
    ("model:\n  name: resnet9000\n", None, ["model.name = 'resnet9000'", "available:"]),
    ("model:\n  name: cnn\n  chanels: [8]\n", None, ["model.chanels", "`model.channels`"]),
    ("loss:\n  name: cross_entropy\n  smoothing: 0.1\n", None, ["loss.smoothing", "it takes:"]),
    ("checkpoint:\n  mode: biggest\n", None, ["checkpoint.mode = 'biggest'", "'min' or 'max'"]),
    ("name: ''\n", None, ["name = ''", "at least 1 character"]),
    ("imports: [missing_module_xyz]\n", None, ["imports:", "missing_module_xyz"]),
    ("{}\n", "trainer.device=tpu", ["trainer.device = 'tpu'", "auto, cpu, cuda"]),
    ("{}\n", "trainer.precision=8", ["trainer.precision = 8", "'32', 'bf16' or '16'"]),
    ("{}\n", "optimizer.lr", ["override 'optimizer.lr'", "expected key=value"]),
]


@pytest.mark.parametrize(("yaml_text", "override", "fragments"), BAD_CONFIGS)
def test_bad_config_exits_2_with_one_fix_it_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    yaml_text: str,
    override: str | None,
    fragments: list[str],
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    code = main(["train", str(config), *([override] if override else [])])
    stderr = capsys.readouterr().err
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stderr
    if override is None:
        assert "bad.yaml" in stderr  # names the file
    else:  # a value typed on the command line: named as that, not as the file
        assert f"override {override}" in stderr or f"override '{override}'" in stderr
        assert "bad.yaml" not in stderr
    for fragment in fragments:
        assert fragment in stderr
    assert not (tmp_path / "runs").exists()  # stopped before any work


def test_evaluate_of_a_folder_that_is_not_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", str(tmp_path / "empty")]) == 2
    assert "not a brickwork run folder" in capsys.readouterr().err
