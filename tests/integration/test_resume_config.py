"""Resume safety: `--resume auto`, and the check that a resume keeps the run's math."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from brickwork.errors import ConfigError
from brickwork.loop import fit
from tests.integration.test_resume_exact import StopAtStep


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (symlink targets included) by content hash."""
    digest = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            digest[key] = "-> " + str(path.readlink())
        elif path.is_file():
            digest[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


@pytest.fixture
def stopped_run(tmp_path: Path, fast_overrides: list[str]) -> Path:
    run_dir = tmp_path / "stopped"
    summary = fit(overrides=fast_overrides, run_dir=run_dir, callbacks=[StopAtStep(5)])
    assert summary["status"] == "preempted"
    return run_dir


def test_resume_refuses_a_config_that_changes_the_math(stopped_run: Path) -> None:
    before = tree_digest(stopped_run)
    with pytest.raises(ConfigError) as error:
        fit(resume=stopped_run, overrides=["data.batch_size=32", "optimizer.lr=0.1"])
    message = str(error.value)
    assert (
        "data.samples per step (all processes) (64 -> 32)" in message and "optimizer.lr" in message
    )
    assert "--resume-force" in message
    assert tree_digest(stopped_run) == before


def test_resume_records_a_harmless_change(stopped_run: Path) -> None:
    summary = fit(resume=stopped_run, overrides=["trainer.max_epochs=3"])
    assert summary["status"] == "completed" and summary["num_epochs"] == 3
    backups = list(stopped_run.glob("config.*.yaml"))
    assert len(backups) == 1 and "max_epochs: 2" in backups[0].read_text()
    assert "max_epochs: 3" in (stopped_run / "config.yaml").read_text()
    assert (
        "config changed on resume: trainer.max_epochs: 2 -> 3"
        in (stopped_run / "train.log").read_text()
    )


def test_resume_force_accepts_a_math_change(stopped_run: Path) -> None:
    summary = fit(resume=stopped_run, overrides=["optimizer.lr=0.001"], resume_force=True)
    assert summary["status"] == "completed"


def test_resume_auto_continues_the_unfinished_run_else_starts_fresh(
    fast_overrides: list[str],
) -> None:
    overrides = [*fast_overrides, "name=auto-test"]
    first = fit(overrides=overrides, resume="auto", callbacks=[StopAtStep(4)])
    assert first["status"] == "preempted"
    second = fit(overrides=overrides, resume="auto")
    same = Path(second["run_dir"]).resolve() == Path(first["run_dir"]).resolve()
    assert same and second["status"] == "completed"
    third = fit(overrides=[*overrides, "trainer.max_steps=2"], resume="auto")
    assert Path(third["run_dir"]).resolve() != Path(first["run_dir"]).resolve()
    assert third["num_steps"] == 2
